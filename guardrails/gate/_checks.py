"""The seam through which plugins add static checks to the update gate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from .._decision import Decision, Finding
from ..blobs import BlobStore
from ..ledger import Ledger
from ._proposal import UpdateProposal


class ReviewContext:
    """What a static update check may read about one review. Read-only by convention:
    the states are copies, so a check cannot change what is evaluated."""

    def __init__(self, proposal: UpdateProposal, parent_state: dict[str, Any],
                 candidate_state: dict[str, Any], candidate: str, ledger: Ledger,
                 blob_store: BlobStore | None) -> None:
        self.proposal = proposal
        self.parent_state = parent_state
        self.candidate_state = candidate_state
        self.candidate = candidate
        self.ledger = ledger
        self.blob_store = blob_store

    def anchor_state(self) -> dict[str, Any] | None:
        """The last human-approved state (the initial one until someone approves another)."""
        anchor = self.ledger.anchor_version()
        return None if anchor is None else self.ledger.get_state(anchor)

    def decisions(self) -> list[Decision]:
        """Every recorded decision, oldest first."""
        return [d for d in (e.decision for e in self.ledger.entries()) if d is not None]


@runtime_checkable
class UpdateCheck(Protocol):
    """A static check of a proposal, run before any candidate is built.

    ``name`` identifies it in findings; ``__call__`` returns findings, passed
    or failed. A check that raises rejects the proposal (fail closed).
    """

    name: str

    def __call__(self, context: ReviewContext) -> Iterable[Finding]: ...


def run_update_checks(checks: Sequence[UpdateCheck], context: ReviewContext) -> list[Finding]:
    """Run every check; a crash or a malformed result becomes a failed finding naming the check."""
    findings: list[Finding] = []
    for check in checks:
        name = getattr(check, "name", type(check).__name__)
        try:
            results = list(check(context))
        except Exception as exc:
            findings.append(Finding(check=name, passed=False,
                                    message=f"update check {name!r} raised "
                                            f"{type(exc).__name__}: {exc}"))
            continue
        for result in results:
            if isinstance(result, Finding):
                findings.append(result)
            else:
                findings.append(Finding(check=name, passed=False,
                                        message=f"update check {name!r} returned "
                                                f"{type(result).__name__}, not a Finding"))
    return findings
