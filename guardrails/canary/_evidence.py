"""What a canary run hands the decision rule: paired outcomes, ids only, and how the run ended."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SMOKE_STOP = "smoke"
"""``stop_reason`` prefix of a run the smoke stage ended (the candidate errored on every case)."""
SEQUENTIAL_STOP = "sequential"
"""``stop_reason`` prefix of a run the decision rule's interim look ended early; such a run is
complete evidence for the rule that stopped it, not an aborted run."""


class CaseOutcome(BaseModel):
    """How candidate and incumbent did on one case (no content, ids only)."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    safety: bool
    hidden: bool
    tags: tuple[str, ...] = ()
    candidate_passed: bool
    incumbent_passed: bool | None = None
    candidate_error: str | None = None
    """Why the candidate's case failed (a checker's reason, or the error it raised)."""
    incumbent_error: str | None = None
    checker_error: str | None = None
    """Set when the checker could not judge the incumbent's output (it raised, or returned
    ``None`` or NaN): the pair is no evidence, and the guard never accepts such a review."""
    candidate_answered: bool = True
    """False when the candidate raised or timed out instead of answering."""
    incumbent_answered: bool = True
    """False when the incumbent raised, timed out or was not asked; its result is then
    unknown (``None``)."""
    incumbent_called: bool = True
    """False for a safety case: the safety gate judges the candidate alone, so the runner does
    not ask the incumbent (its own safety record is in the ledger)."""


class CanaryEvidence(BaseModel):
    """Everything the decision rule sees: paired outcomes and whether the run finished."""

    model_config = ConfigDict(frozen=True)

    outcomes: tuple[CaseOutcome, ...] = ()
    planned: int = 0
    stopped_early: bool = False
    stop_reason: str = ""
    seed: int | None = None
    """Seed of the case order and of the hidden cases drawn, so the run can be replayed."""
    hidden_drawn: tuple[str, ...] = ()
    """Ids of the hidden cases this review drew."""
    candidate_calls: int = 0
    """Calls the runner made to the candidate, retries included (what an API bills)."""
    incumbent_calls: int = 0
    """Calls the runner made to the incumbent, retries included: capability cases only."""
    incumbent_varied: bool | None = None
    """Whether the incumbent's answers differed from one another (``None``: fewer than two
    answers, or a runner that does not tell); the control check's "all identical" floor."""

    @property
    def complete(self) -> bool:
        return not self.stopped_early and len(self.outcomes) == self.planned
