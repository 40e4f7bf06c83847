"""Decisions of the update gate and the findings behind them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Verdict(StrEnum):
    """The four outcomes of a review. Only ``accepted`` promotes."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"
    """The evidence does not decide; never promoted without a human."""
    ERROR = "error"
    """The gate itself could not finish; treated as rejected."""


class Finding(BaseModel):
    """One check's result, with the evidence behind it (ids, never hidden content)."""

    model_config = ConfigDict(frozen=True)

    check: str
    """Which check: ``frozen_pointer``, ``invariant``, ``safety_canary``, ``capability`` ..."""
    passed: bool
    message: str
    """A sentence a human can act on."""
    evidence: dict[str, Any] = Field(default_factory=dict)
    """Statistic, bound, margin, case ids: whatever decided the check."""


def _now() -> datetime:
    return datetime.now(UTC)


class Decision(BaseModel):
    """What the gate decided about one proposal; recorded in the ledger as is."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    findings: tuple[Finding, ...] = ()
    parent: str | None = None
    """The version the proposal was made against."""
    candidate: str | None = None
    """The version the proposal would produce (``None`` if the patch did not apply)."""
    proposal_id: str | None = None
    kind: str = "state"
    source: str = "model"
    rationale: str = ""
    """The proposer's own account, recorded but never used as evidence."""
    anchor: bool = False
    """Whether a human approved this state as the new drift anchor."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds spent per gate stage."""
    decided_at: datetime = Field(default_factory=_now)
    entry_index: int | None = None
    """Position of this decision in the ledger, once recorded."""
    entry_hash: str | None = None
    """Hash of the ledger entry that records this decision, once recorded."""
    inclusion_proof: dict[str, Any] | None = None
    """RFC 6962 proof that the entry is in the ledger's Merkle tree (``InclusionProof``
    as JSON: leaf index, tree size, hashes, root), attached when recorded."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accepted(self) -> bool:
        """True only for the ``accepted`` verdict."""
        return self.verdict is Verdict.ACCEPTED

    @property
    def reasons(self) -> list[str]:
        """The messages of the failed findings, in order; empty when accepted."""
        return [f.message for f in self.findings if not f.passed]

    @property
    def deciding_finding(self) -> Finding | None:
        """The first failed finding, which decided a non-accepted verdict."""
        return next((f for f in self.findings if not f.passed), None)

    @classmethod
    def accept(cls, findings: tuple[Finding, ...] | list[Finding] = (), **fields: Any) -> Decision:
        return cls(verdict=Verdict.ACCEPTED, findings=tuple(findings), **fields)

    @classmethod
    def reject(cls, findings: tuple[Finding, ...] | list[Finding], **fields: Any) -> Decision:
        return cls(verdict=Verdict.REJECTED, findings=tuple(findings), **fields)

    @classmethod
    def error(cls, check: str, message: str, **fields: Any) -> Decision:
        """The gate could not finish: a single failed finding names why."""
        extra = tuple(fields.pop("findings", ()))
        finding = Finding(check=check, passed=False, message=message)
        return cls(verdict=Verdict.ERROR, findings=(*extra, finding), **fields)
