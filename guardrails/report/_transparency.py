"""The transparency statement: what an application may tell its users about the served model."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from ._view import ReportData


class LastChange(BaseModel):
    """The accepted decision that put the served version in place."""

    model_config = ConfigDict(frozen=True)

    entry: int
    at: datetime
    kind: str
    source: str
    approver: str | None
    evidence: tuple[str, ...]
    """The passing checks' own sentences: what the change was accepted on."""


class Transparency(BaseModel):
    """A statement about the served model, built from a verified ledger (and the configuration).

    ``verified`` False means the ledger did not verify: nothing else here may
    be relied on, and an application should say so rather than show it.
    ``frozen``/``mutable`` are ``None`` when no configuration was given (the
    ledger records decisions, not the constraints' full text).
    """

    model_config = ConfigDict(frozen=True)

    verified: bool
    problem: str | None = None
    served_version: str | None
    self_improving: bool
    """True when the ledger records updates the model proposed itself."""
    frozen: tuple[str, ...] | None = None
    mutable: tuple[str, ...] | None = None
    drift_budget: float | None = None
    drift_from_anchor: float | None = None
    anchor_version: str | None = None
    changes_accepted: int = 0
    changes_not_accepted: int = 0
    last_change: LastChange | None = None

    def sentences(self) -> list[str]:
        """The statement in plain sentences, for a page or a reply's footer."""
        if not self.verified:
            return [f"The record of this model's changes does not verify ({self.problem}); "
                    "nothing about its history can be vouched for."]
        out = [f"This model {'improves itself' if self.self_improving else 'does not change itself'}"
               f"; the version served now is {(self.served_version or 'unknown')[:12]}."]
        if self.frozen is None:
            out.append("What is frozen and what may change is set in the guard's configuration, "
                       "which was not given to this statement.")
        else:
            out.append("Never changed by an update: " + (", ".join(self.frozen) or "nothing is frozen") + ".")
        if self.mutable is not None:
            out.append("An update may change only: " + (", ".join(self.mutable) or "nothing") + ".")
        if self.drift_budget is not None:
            used = "" if self.drift_from_anchor is None else f" (now {self.drift_from_anchor:.3f})"
            out.append(f"It may drift at most {self.drift_budget:g} from the state a human last "
                       f"approved{used}.")
        out.append(f"{self.changes_accepted} changes accepted and {self.changes_not_accepted} "
                   "refused, each on recorded evidence.")
        if self.last_change is not None:
            who = f", approved by {self.last_change.approver}" if self.last_change.approver else ""
            out.append(f"Last changed {self.last_change.at:%Y-%m-%d %H:%M} UTC "
                       f"({self.last_change.kind}, from {self.last_change.source}{who}).")
        return out


def transparency(data: ReportData, *, frozen: list[str] | None = None,
                 mutable: list[str] | None = None) -> Transparency:
    """The statement for the model ``data`` shows; ``frozen``/``mutable`` from its configuration."""
    accepted = [d for d in data.timeline if d.verdict == "accepted"]
    served = next((d for d in reversed(accepted) if d.candidate == data.served), None)
    last = None
    if served is not None and served.kind != "genesis":
        full = next((d for d in data.details if d.index == served.index), served)
        last = LastChange(entry=full.index, at=full.decided_at, kind=full.kind, source=full.source,
                          approver=full.approver,
                          evidence=tuple(f.message for f in full.findings if f.passed))
    drift = data.drift[-1].distance if data.drift else None
    return Transparency(
        verified=data.verified, problem=data.problem, served_version=data.served,
        self_improving=any(d.source == "model" for d in data.timeline),
        frozen=None if frozen is None else tuple(frozen),
        mutable=None if mutable is None else tuple(mutable),
        drift_budget=data.drift_budget, drift_from_anchor=drift, anchor_version=data.anchor,
        changes_accepted=sum(1 for d in accepted if d.kind != "genesis"),
        changes_not_accepted=sum(n for v, n in data.counts.items() if v != "accepted"),
        last_change=last)
