"""Ids as the tools print them: a unique prefix of a version or proposal id names it.

The command line, the demo and ``status`` show 12 characters of a 64-character
version id; every command that takes an id resolves such a prefix here first,
so an unknown or ambiguous prefix is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import GuardrailsError
from ._ledger import Ledger

_SHOWN = 12
"""How many characters of an id the tools print, and of each candidate an error lists."""


class IdPrefixError(GuardrailsError, LookupError):
    """No id, or more than one, starts with the prefix given.

    ``matches`` holds the ids that matched (empty when none did); the
    message names the prefix, what was searched and how to fix it.
    """

    def __init__(self, message: str, *, prefix: str, matches: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.matches = matches


def _resolve(prefix: str, ids: Iterable[str], what: str, listing: str) -> str:
    wanted = prefix.strip()
    if not wanted:
        raise IdPrefixError(f"an empty {what} id names nothing; {listing}", prefix=prefix)
    known = set(ids)
    if wanted in known:
        return wanted
    matches = tuple(sorted(i for i in known if i.startswith(wanted.lower())
                           or i.startswith(wanted)))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise IdPrefixError(f"no {what} starts with {wanted!r}; {listing}", prefix=prefix)
    shown = ", ".join(m[: max(_SHOWN, len(wanted) + 4)] for m in matches[:5])
    more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
    raise IdPrefixError(f"{wanted!r} is ambiguous: {len(matches)} {what}s start with it ({shown}"
                        f"{more}); give more characters", prefix=prefix, matches=matches)


def resolve_version(ledger: Ledger, prefix: str, *, accepted_only: bool = False) -> str:
    """The full version id that ``prefix`` starts, among the versions the ledger names.

    Searches every entry's parent and candidate (with ``accepted_only``, only
    the candidates of accepted decisions: the versions a rollback may serve).
    A full id is returned as soon as it is known; raises ``IdPrefixError``
    when no version, or more than one, starts with ``prefix``. Reads only.
    """
    versions: set[str] = set()
    for entry in ledger.entries():
        decision = entry.decision
        if decision is None:
            continue
        if decision.candidate and (decision.accepted or not accepted_only):
            versions.add(decision.candidate)
        if decision.parent and not accepted_only:
            versions.add(decision.parent)
    what = "accepted version" if accepted_only else "version"
    return _resolve(prefix, versions, what, "list them with 'guardrails ledger show'")


def resolve_proposal(ledger: Ledger, prefix: str, *, pending_only: bool = False) -> str:
    """The full proposal id that ``prefix`` starts, among the proposals the ledger records.

    With ``pending_only``, only approvals still waiting for a human. Raises
    ``IdPrefixError`` when no proposal, or more than one, starts with
    ``prefix``. Reads only.
    """
    ids = {p.id for p in ledger.pending(include_resolved=not pending_only)
           if not pending_only or p.status == "pending"}
    if not pending_only:
        ids |= {d.proposal_id for d in (e.decision for e in ledger.entries())
                if d is not None and d.proposal_id}
    what = "pending approval" if pending_only else "proposal"
    return _resolve(prefix, ids, what, "list them with 'guardrails pending'")
