"""A review from end to end: run the stage list, then ledger, metrics, log and span for the outcome.

``review_proposal`` is what ``GuardedClient.propose`` calls; ``finish``
records and reports any decision, accepted or not, so every outcome of the
update path (a review, a rollback, a failed ``propose_update``) leaves the
same trace.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

from .._canonical import canonical_json
from .._decision import Decision, Verdict
from .._errors import ConfigError
from .._telemetry import (
    ATTR_CANDIDATE,
    ATTR_CASES_USED,
    ATTR_DECIDING_CHECK,
    ATTR_ENTRY_INDEX,
    ATTR_LEDGER_CHECKPOINT,
    ATTR_LEDGER_ROOT,
    ATTR_LEDGER_SIZE,
    ATTR_PARENT,
    ATTR_PROPOSAL_ID,
    ATTR_PROPOSAL_KIND,
    ATTR_PROPOSAL_SOURCE,
    ATTR_VERDICT,
    SPAN_REVIEW,
    bound_log,
    set_attributes,
)
from ..canary import Progress
from ..ledger import PendingApproval
from ._control import record_suite_change
from ._findings import limit_finding
from ._proposal import ProposalTooLarge, UpdateProposal
from ._review import GateSettings, Review, ReviewTarget, Stage, run_stages


def review_proposal(settings: GateSettings, target: ReviewTarget, proposal: Any,
                    stages: Sequence[Stage], progress: Progress | None = None) -> Decision:
    """Review ``proposal`` through ``stages`` and record the outcome; never raises for it."""
    with settings.telemetry.span(SPAN_REVIEW) as span:
        started = time.perf_counter()
        review = Review(settings, target, proposal, progress)
        try:
            # Before anything walks the proposal: its size and depth are the model's choice.
            settings.proposal_limits.check(proposal)
        except ProposalTooLarge as exc:
            raw: Any = _summary(proposal, exc)
            decision = Decision.reject([limit_finding(exc)], parent=target.version,
                                       proposal_id=raw.get("id"))
        else:
            raw = _raw_proposal(proposal)
            decision = _run(stages, review)
        review.timings["total"] = time.perf_counter() - started
        settings.telemetry.record(settings.telemetry.review_duration, review.timings["total"],
                                  {ATTR_VERDICT: decision.verdict.value})
        decision = finish(settings, decision, raw, review.timings, review.pending)
        set_attributes(span, _span_attributes(settings, decision))
        _set_status(span, decision)
        return decision


def _run(stages: Sequence[Stage], review: Review) -> Decision:
    try:
        # A change of the suite or the rule since the last review is recorded before this one.
        record_suite_change(review.settings.ledger, review.settings.canaries,
                            review.settings.decision_rule)
        return run_stages(stages, review)
    except Exception as exc:  # the gate itself failed: never accept
        bound_log().exception("guardrails.gate_error")
        return Decision.error("gate", f"the gate failed: {type(exc).__name__}: {exc}",
                              parent=review.target.version)


def finish(settings: GateSettings, decision: Decision, raw: Any,
           timings: dict[str, float] | None = None,
           pending: PendingApproval | None = None) -> Decision:
    """Record a non-accepted decision (an accepted one is recorded by its promotion, exactly as
    returned), attach its inclusion proof, count and log it."""
    if not decision.accepted:
        decision = decision.model_copy(update={"timings": {**decision.timings,
                                                           **(timings or {})}})
        try:
            decision = settings.ledger.record(decision, _jsonable(raw), pending=pending)
        except Exception as exc:
            bound_log(proposal_id=decision.proposal_id).error(
                "guardrails.ledger_write_failed", error=f"{type(exc).__name__}: {exc}")
    return report(settings, decision)


def report(settings: GateSettings, decision: Decision) -> Decision:
    """Attach the inclusion proof, count the decision and log it (one structured line)."""
    decision = _with_proof(settings, decision)
    deciding = decision.deciding_finding
    telemetry = settings.telemetry
    telemetry.count(telemetry.decisions, {
        "guardrails.verdict": decision.verdict.value,
        "guardrails.deciding_check": deciding.check if deciding else "none"})
    bound_log(
        proposal_id=decision.proposal_id, kind=decision.kind, source=decision.source,
        parent=decision.parent, candidate=decision.candidate, entry=decision.entry_index,
    ).info("guardrails.decision", verdict=decision.verdict.value,
           check=deciding.check if deciding else None,
           reason=deciding.message if deciding else None)
    return decision


def _with_proof(settings: GateSettings, decision: Decision) -> Decision:
    if decision.entry_index is None:
        return decision
    try:
        proof = settings.ledger.prove(decision.entry_index)
    except Exception:
        bound_log(entry=decision.entry_index).warning("guardrails.proof_failed", exc_info=True)
        return decision
    return decision.model_copy(update={"inclusion_proof": proof.model_dump(mode="json")})


def _span_attributes(settings: GateSettings, decision: Decision) -> dict[str, Any]:
    deciding = decision.deciding_finding
    return {
        ATTR_PROPOSAL_ID: decision.proposal_id, ATTR_PROPOSAL_KIND: decision.kind,
        ATTR_PROPOSAL_SOURCE: decision.source, ATTR_PARENT: decision.parent,
        ATTR_CANDIDATE: decision.candidate, ATTR_VERDICT: decision.verdict.value,
        ATTR_DECIDING_CHECK: deciding.check if deciding else None,
        ATTR_ENTRY_INDEX: decision.entry_index,
        **checkpoint_attributes(settings),
        ATTR_CASES_USED: next((int(f.evidence.get("cases", 0)) for f in decision.findings
                               if f.check == "capability"), None),
    }


def _set_status(span: trace.Span, decision: Decision) -> None:
    if decision.accepted:
        return
    try:
        span.set_status(trace.StatusCode.ERROR if decision.verdict is Verdict.ERROR
                        else trace.StatusCode.UNSET)
    except Exception:  # telemetry never breaks a review
        bound_log().warning("guardrails.telemetry_failed", exc_info=True)


def checkpoint_attributes(settings: GateSettings) -> dict[str, Any]:
    """The ledger's current tree head (and signed checkpoint) for the review span, so the
    tracing backend keeps an independent copy that makes rewriting the ledger detectable."""
    try:
        size, root = settings.ledger.root()
        return {ATTR_LEDGER_SIZE: size, ATTR_LEDGER_ROOT: root.hex(),
                ATTR_LEDGER_CHECKPOINT: settings.ledger.latest_checkpoint()}
    except Exception:
        bound_log().warning("guardrails.telemetry_failed", exc_info=True)
        return {}


def _raw_proposal(proposal: UpdateProposal | Any) -> Any:
    """The proposal as recorded: its JSON, or a note when it has none (never raises)."""
    if not isinstance(proposal, UpdateProposal):
        return proposal
    try:
        return proposal.model_dump(mode="json")
    except Exception as exc:
        return {"id": proposal.id, "parent": proposal.parent,
                "unserialisable": f"{type(exc).__name__}: {str(exc)[:500]}"}


def _summary(proposal: Any, exc: ProposalTooLarge) -> dict[str, Any]:
    """What the ledger records of a proposal over the limits: its id and parent, never its body."""
    summary = {}
    for key in ("id", "parent"):
        value = (getattr(proposal, key) if isinstance(proposal, UpdateProposal)
                 else proposal.get(key) if isinstance(proposal, dict) else None)
        if isinstance(value, str) and len(value) <= 128:
            summary[key] = value
    return {**summary, "omitted": f"over the {exc.limit} limit ({exc.configured})"}


def _jsonable(raw: Any) -> Any:
    try:
        canonical_json(raw)
        return raw
    except ConfigError:
        return {"unserialisable": repr(raw)[:2000]}
