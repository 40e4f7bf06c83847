"""Rollback as a stage list: an operator serves an earlier accepted version again.

The target must be a version the ledger accepted, not the one served, and
within today's frozen constraints and invariants; it is rebuilt in process
and promoted by compare-and-swap, like any accepted proposal.
"""

from __future__ import annotations

from .._decision import Decision, Finding
from .._telemetry import (
    ATTR_CANDIDATE,
    ATTR_PARENT,
    ATTR_PROPOSAL_KIND,
    ATTR_VERDICT,
    SPAN_REVIEW,
    set_attributes,
)
from ._outcome import finish
from ._review import GateSettings, Review, ReviewTarget, Stage, run_stages


def target_version(review: Review) -> Decision | None:
    """The requested version was accepted once and is not the one served."""
    version = review.candidate
    ledger = review.settings.ledger
    accepted = {e.decision.candidate for e in ledger.entries()
                if e.decision is not None and e.decision.accepted}
    if version not in accepted:
        if not ledger.has_state(version):
            review.ids["candidate"] = None  # the ledger names only versions it stores
        return review.reject(Finding(
            check="unknown_version", passed=False,
            message=f"{version[:12]} was never an accepted version of this model; see the "
                    "ledger for versions to roll back to",
            evidence={"requested": version}))
    if version == review.parent_version:
        return review.reject(Finding(check="no_change", passed=False,
                                     message=f"{version[:12]} is already served"))
    return None


def constraints(review: Review) -> Decision | None:
    """Today's frozen pointers and invariants hold for the earlier state."""
    ledger, rules = review.settings.ledger, review.settings.constraints
    review.candidate_state = ledger.get_state(review.candidate)
    review.parent_state = ledger.get_state(review.parent_version)
    review.findings += [*rules.check_frozen(review.parent_state, review.candidate_state),
                        *rules.check_invariants(review.candidate_state)]
    if any(not f.passed for f in review.findings):
        return review.reject()
    return None


def rebuild(review: Review) -> Decision | None:
    """The earlier state is rebuilt in process from the ledger."""
    try:
        review.candidate_client = review.target.rebuild(review.candidate)
    except Exception as exc:
        return review.reject(Finding(check="sandbox", passed=False,
                                     message=f"rebuilding {review.candidate[:12]} failed: {exc}"))
    return None


def promotion(review: Review) -> Decision | None:
    """Compare-and-swap in the ledger, then the client serves the earlier version."""
    accepted = Decision.accept(review.findings, **review.ids)
    try:
        recorded = review.settings.ledger.promote(accepted, review.parent_version,
                                                  review.proposal)
    except Exception as exc:
        return review.error("ledger_write", f"recording the rollback failed: {exc}")
    if recorded is None:
        return review.reject(Finding(check="stale_parent", passed=False,
                                     message="another update was accepted first"))
    review.target.swap(review.candidate_client, review.candidate, recorded)
    return recorded


ROLLBACK_STAGES: tuple[Stage, ...] = (target_version, constraints, rebuild, promotion)


def review_rollback(settings: GateSettings, target: ReviewTarget, version: str) -> Decision:
    """Run the rollback stages for ``version`` and record the outcome; never raises for it."""
    with settings.telemetry.span(SPAN_REVIEW) as span:
        served = target.version
        proposal_id = f"rollback-{version[:12]}"
        review = Review(settings, target, {"id": proposal_id, "kind": "rollback",
                                           "source": "operator", "parent": served,
                                           "target": version})
        review.ids = {"parent": served, "candidate": version, "kind": "rollback",
                      "source": "operator", "proposal_id": proposal_id}
        review.parent_version, review.candidate = served, version
        decision = finish(settings, run_stages(ROLLBACK_STAGES, review), None)
        set_attributes(span, {ATTR_VERDICT: decision.verdict.value, ATTR_PARENT: served,
                              ATTR_CANDIDATE: version, ATTR_PROPOSAL_KIND: "rollback"})
        return decision
