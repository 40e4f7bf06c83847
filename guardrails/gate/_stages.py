"""The stages of the update path, in the order ``UPDATE_STAGES`` runs them.

validate -> static_checks -> sandbox -> canary -> decision (with the control check) -> [approval] ->
promotion. Each is ``stage(review) -> Decision | None`` (see ``_review``):
it reads what earlier stages put on the review, adds its own part, and
either lets the review go on or ends it with a decision. None of them
records anything: ``propose`` records every decision the list returns.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from .._canonical import state_version
from .._decision import Decision, Finding, Verdict
from .._errors import ConfigError
from .._telemetry import (
    ATTR_CASE_ID,
    ATTR_OUTCOME,
    ATTR_SIDE,
    GENAI_EVALUATION_EVENT,
    GENAI_EVALUATION_LABEL,
    GENAI_EVALUATION_NAME,
)
from .._threads import CallTimeout, call_with_timeout, run_sync
from ..canary import CanaryEvidence, run_canaries_async
from ..sandbox import SandboxError, isolation_finding, sandbox_finding
from ._approval import expire_pending, request_approval
from ._checks import ReviewContext, run_update_checks
from ._control import control_check, rule_lock, unpaired_finding
from ._findings import (
    blob_findings,
    cascade_findings,
    checker_finding,
    limit_finding,
    run_finding,
)
from ._proposal import ProposalTooLarge, UpdateProposal
from ._review import Review, Stage


def validate(review: Review) -> Decision | None:
    """The proposal is well formed, the guard intact, the parent served and the patch applies."""
    settings, target = review.settings, review.target
    if not isinstance(review.proposal, UpdateProposal):
        try:
            review.proposal = UpdateProposal.model_validate(review.proposal)
        except ValidationError as exc:
            return Decision.reject([_malformed(exc)], parent=target.version)
    proposal = review.valid_proposal
    review.ids = {"proposal_id": proposal.id, "kind": proposal.kind, "source": proposal.source,
                  "rationale": proposal.rationale, "parent": proposal.parent}
    if not settings.ledger.has_state(proposal.parent):
        # verify() requires every version the ledger names to be stored; an unknown
        # parent stays in the recorded proposal, never in the decision.
        review.ids["parent"] = None
    problem = settings.integrity_problem()
    if problem is not None:
        return review.error("guard_integrity", problem)
    target.sync()
    expire_pending(settings.ledger)
    modified = target.check_integrity()
    if modified is not None and target.blocked:
        return review.error("silent_modification", modified.message)
    review.parent_version, review.parent_client = target.version, target.client
    if proposal.parent != review.parent_version:
        return review.reject(Finding(
            check="stale_parent", passed=False,
            message=f"the proposal targets {proposal.parent[:12]} but "
                    f"{review.parent_version[:12]} is served; propose against the served version",
            evidence={"served": review.parent_version, "proposed_parent": proposal.parent}))
    return _apply_patch(review)


def _malformed(exc: ValidationError) -> Finding:
    where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'proposal'}: {e['msg']}"
                      for e in exc.errors())
    return Finding(check="invalid_proposal", passed=False,
                   message=f"the proposal is malformed ({where}); send parent, patch (RFC 6902 "
                           "operations) and optional kind, rationale, source")


def _apply_patch(review: Review) -> Decision | None:
    settings = review.settings
    review.parent_state = settings.ledger.get_state(review.parent_version)
    try:
        review.candidate_state = review.valid_proposal.apply(review.parent_state,
                                                             settings.proposal_limits)
        review.candidate = state_version(review.candidate_state)
    except ProposalTooLarge as exc:
        return review.reject(limit_finding(exc))
    except (ValueError, ConfigError) as exc:
        return review.reject(Finding(check="invalid_patch", passed=False,
                                     message=f"the patch does not apply to the served state: {exc}"))
    review.ids["candidate"] = review.candidate
    return None


def static_checks(review: Review) -> Decision | None:
    """Frozen pointers, scope, invariants, drift, blobs and plugin checks: no candidate is built
    unless every one passes. The candidate state is stored either way, so the ledger can name it.
    """
    settings = review.settings
    parent, candidate = review.parent_state, review.candidate_state
    constraints = settings.constraints
    review.findings += [*constraints.check_frozen(parent, candidate),
                        *constraints.check_scope(parent, candidate),
                        *constraints.check_invariants(candidate)]
    drift = constraints.drift_check()
    if drift is not None:
        anchor = settings.ledger.anchor_version()
        review.findings += drift.measure(
            None if anchor is None else settings.ledger.get_state(anchor), candidate,
            settings.blob_store)
    if settings.blob_store is not None:
        try:
            review.findings += blob_findings(settings.blob_store, parent, candidate)
        except Exception as exc:
            settings.ledger.put_state(candidate)
            return review.error("blob_store", f"the blob store could not be read "
                                f"({type(exc).__name__}: {exc}); a candidate whose blobs cannot "
                                "be checked is never promoted")
    if settings.checks:
        context = ReviewContext(review.valid_proposal, copy.deepcopy(parent),
                                copy.deepcopy(candidate), review.candidate, settings.ledger,
                                settings.blob_store)
        review.findings += run_update_checks(settings.checks, context)
    if review.candidate == review.parent_version:
        review.findings.append(Finding(check="no_change", passed=False,
                                       message="the patch leaves the state unchanged"))
    settings.ledger.put_state(candidate)
    if any(not f.passed for f in review.findings):
        return review.reject()
    return None


def sandbox(review: Review) -> Decision | None:
    """Build the candidate from its state, never touching the incumbent: in process under the
    case timeout, or in the process sandbox. It must report the very state it was built from."""
    settings = review.settings
    if settings.process_sandbox is not None:
        try:
            client: Any = settings.process_sandbox.start(review.parent_client,
                                                         review.candidate_state)
        except ConfigError as exc:
            return review.error("sandbox", str(exc))
        except SandboxError as exc:
            return review.reject(sandbox_finding(exc))
        review.sandboxed = client
        review.cleanups.append(client.close)
        review.findings.append(isolation_finding(client.isolation))  # in every later decision
        try:
            built = state_version(client.snapshot())
        except ConfigError as exc:
            return review.error("sandbox", str(exc))
        except SandboxError as exc:
            return review.reject(sandbox_finding(exc))
    else:
        try:
            client = call_with_timeout(
                lambda: review.parent_client.with_state(review.candidate_state),
                settings.case_timeout)
            built = state_version(call_with_timeout(client.snapshot, settings.case_timeout))
        except CallTimeout as exc:
            return review.reject(Finding(
                check="sandbox", passed=False,
                message=f"building the candidate hung ({exc}); case_timeout is "
                        f"{settings.case_timeout:g} s"))
        except Exception as exc:
            return review.reject(Finding(
                check="sandbox", passed=False,
                message=f"building the candidate raised {type(exc).__name__}: {exc}"))
    if built != review.candidate:
        return review.reject(Finding(
            check="sandbox", passed=False,
            message=f"the candidate built from {review.candidate[:12]} reports state "
                    f"{built[:12]}; the evaluated state must be the promoted one"))
    review.candidate_client = client
    return None


def canary(review: Review) -> Decision | None:
    """Candidate and incumbent answer the same sampled cases (see ``run_canaries_async``)."""
    settings = review.settings
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**32)
    case_timeout = settings.case_timeout
    if settings.process_sandbox is not None:
        # Let the sandbox's own wall-time limit fire first, so the finding names it.
        case_timeout = max(case_timeout, settings.process_sandbox.limits.wall_time + 1.0)
    review.evidence = run_sync(run_canaries_async(
        review.candidate_client, review.parent_client, settings.canaries,
        case_timeout=case_timeout, settings=settings.canary_run, seed=seed,
        interim=getattr(settings.decision_rule, "interim", None), progress=review.progress))
    _report_canaries(review, review.evidence)
    return None


def _report_canaries(review: Review, evidence: CanaryEvidence) -> None:
    """One ``gen_ai.evaluation.result`` event and one metric point per canary call (ids only)."""
    telemetry = review.settings.telemetry
    span = trace.get_current_span()
    recording = span.is_recording()
    for outcome in evidence.outcomes:
        sides = [("candidate", outcome.candidate_passed, outcome.candidate_error)]
        if outcome.incumbent_passed is not None:
            sides.append(("incumbent", outcome.incumbent_passed, outcome.incumbent_error))
        for side, passed, error in sides:
            label = "pass" if passed else ("error" if error else "fail")
            telemetry.count(telemetry.canary_calls, {ATTR_SIDE: side, ATTR_OUTCOME: label})
            if recording:
                try:
                    span.add_event(GENAI_EVALUATION_EVENT, {
                        GENAI_EVALUATION_NAME: "guardrails.canary",
                        GENAI_EVALUATION_LABEL: label, ATTR_CASE_ID: outcome.case_id,
                        ATTR_SIDE: side})
                except Exception:
                    recording = False  # telemetry never breaks a review


def decision(review: Review) -> Decision | None:
    """The decision rule's verdict, overruled by what the rule cannot see: a sandbox limit, a
    broken checker, the cascade, a guard or incumbent changed meanwhile, a candidate that moved.
    """
    settings = review.settings
    evidence = review.evidence
    if evidence is None:
        return review.error("canary", "no canary evidence reached the decision")
    verdict, found = settings.decision_rule(evidence)
    sandboxed = review.sandboxed
    if sandboxed is not None and sandboxed.failure is not None:
        # The runner saw only "client raised ..."; this names the limit hit.
        found, verdict = [sandbox_finding(sandboxed.failure), *found], Verdict.REJECTED
    unjudged = checker_finding(evidence)
    if unjudged is not None:
        # The evaluator failed on the reference: the gate cannot finish.
        found, verdict = [unjudged, *found], Verdict.ERROR
    review.findings += [run_finding(evidence, settings.canaries),
                        *cascade_findings(evidence, settings.canary_run), *found]
    if verdict in (Verdict.ACCEPTED, Verdict.INCONCLUSIVE) and any(
            f.check in ("smoke", "gaming") and not f.passed for f in review.findings):
        verdict = Verdict.REJECTED
    control = control_check(settings.ledger, evidence,
                            rule_lock(settings.canaries, settings.decision_rule),
                            review.parent_version)
    review.findings.append(control)
    if not control.passed and verdict in (Verdict.ACCEPTED, Verdict.INCONCLUSIVE):
        verdict = Verdict.ERROR  # the baseline is void, so is any judgement against it
    unpaired = unpaired_finding(evidence) if verdict is Verdict.ACCEPTED else None
    if unpaired is not None:
        # Whatever the rule says: no case answered by both sides is no evidence at all.
        review.findings.append(unpaired)
        verdict = Verdict.ERROR
    problem = settings.integrity_problem()
    if problem is not None:
        return review.error("guard_integrity", f"during the review, {problem}")
    if review.target.check_integrity() is not None:
        return review.error("silent_modification", "the incumbent changed its own state "
                            "during the review; the review is void")
    if verdict in (Verdict.ACCEPTED, Verdict.INCONCLUSIVE):
        moved = _candidate_moved(review)
        if moved is not None:
            return review.reject(moved)
    review.verdict = verdict
    if verdict in (Verdict.REJECTED, Verdict.ERROR):
        return Decision(verdict=verdict, findings=tuple(review.findings), **review.ids)
    return None


def _candidate_moved(review: Review) -> Finding | None:
    """A finding when the evaluated candidate no longer reports the state it was built from:
    it changed itself during evaluation, so the evidence is not about the promoted state."""
    try:
        found = state_version(call_with_timeout(review.candidate_client.snapshot,
                                                review.settings.case_timeout))
    except Exception as exc:
        found = f"unreadable ({type(exc).__name__})"
    if found == review.candidate:
        return None
    return Finding(
        check="silent_modification", passed=False,
        message=f"the candidate changed its own state during evaluation (built as "
                f"{review.candidate[:12]}, found {found[:12]} afterwards); the state that is "
                "promoted must be the state that was evaluated",
        evidence={"side": "candidate", "expected": review.candidate, "found": found})


def approval(review: Review) -> Decision | None:
    """Waits for a human when the approval policy asks; an inconclusive review that no human
    is asked to decide ends here, not accepted."""
    policy = review.settings.approval
    reached = _reached(review)
    if policy is not None and policy.requires_approval(reached):
        waiting, review.pending = request_approval(
            reached, review.valid_proposal.model_dump(mode="json"), policy)
        return waiting
    return None if review.verdict is Verdict.ACCEPTED else reached


def _reached(review: Review) -> Decision:
    """What the gate reached, as a decision (accepted ones carry their timings: an accepted
    decision is recorded exactly as returned)."""
    if review.verdict is not Verdict.ACCEPTED:
        return Decision(verdict=review.verdict or Verdict.ERROR, findings=tuple(review.findings),
                        **review.ids)
    return Decision.accept(review.findings, timings={
        **review.timings, "total": sum(review.timings.values())}, **review.ids)


def promotion(review: Review) -> Decision | None:
    """Compare-and-swap in the ledger, then the client swaps in the evaluated state.

    A sandboxed candidate lives in a child process: an in-process build of the
    very state that was evaluated is served.
    """
    if review.verdict is not Verdict.ACCEPTED:
        return _reached(review)  # nothing below the decision may promote a non-acceptance
    accepted = _reached(review)
    client = (review.candidate_client if review.sandboxed is None
              else review.target.rebuild(review.candidate))
    # Issue 17: with a rollout configured, the accepted candidate enters it instead.
    begin_rollout = getattr(review.target, "begin_rollout", None)
    if begin_rollout is not None and getattr(review.settings, "rollout", None) is not None:
        return begin_rollout(accepted, client, review.evidence,  # type: ignore[no-any-return]
                             review.valid_proposal.model_dump(mode="json"))
    try:
        recorded = review.settings.ledger.promote(accepted, review.parent_version,
                                                  review.valid_proposal.model_dump(mode="json"))
    except Exception as exc:
        return review.error("ledger_write", f"recording the acceptance failed "
                            f"({type(exc).__name__}: {exc}); nothing was promoted")
    if recorded is None:
        return review.reject(Finding(check="stale_parent", passed=False,
                                     message="another update was accepted first; this one is stale"))
    review.target.swap(client, review.candidate, recorded)
    return recorded


def update_stages(with_approval: bool) -> tuple[Stage, ...]:
    """The update path as a list; ``approval`` sits in it only when a policy is configured."""
    return (validate, static_checks, sandbox, canary, decision,
            *((approval,) if with_approval else ()), promotion)
