"""Findings the update path writes about its own evidence: the run, the cascade, blobs, drift."""

from __future__ import annotations

from typing import Any

from .._decision import Finding
from ..blobs import BlobStore, blob_digest, iter_blob_refs
from ..canary import SMOKE_STOP, CanaryEvidence, CanarySuite, RunSettings, gaming_p_value
from ._proposal import ProposalTooLarge


def run_finding(evidence: CanaryEvidence, suite: CanarySuite) -> Finding:
    """How the canary run went and what lets anyone replay it: the seed, the hidden cases
    drawn, the suite's fingerprint and each public case's checker spec (hidden ones: name)."""
    ran = {o.case_id for o in evidence.outcomes}
    specs = {c.id: ({"name": c.expect.name, "hidden": True} if c.hidden else c.expect.spec())
             for c in suite if c.id in ran}
    return Finding(
        check="canary_run", passed=True,
        message=f"{len(evidence.outcomes)} of {evidence.planned} planned cases ran"
                + (f"; stopped: {evidence.stop_reason}" if evidence.stop_reason else ""),
        evidence={"seed": evidence.seed, "hidden_drawn": list(evidence.hidden_drawn),
                  "suite_fingerprint": suite.fingerprint(), "checkers": specs,
                  "cases_run": len(evidence.outcomes), "planned": evidence.planned,
                  "stop_reason": evidence.stop_reason,
                  # What each side was billed, retries included, as the runner made the calls.
                  "candidate_calls": evidence.candidate_calls,
                  "incumbent_calls": evidence.incumbent_calls})


def cascade_findings(evidence: CanaryEvidence, settings: RunSettings) -> list[Finding]:
    """Findings of the cheap smoke stage and of the public-versus-hidden divergence test."""
    findings = []
    if evidence.stop_reason.startswith(SMOKE_STOP):
        findings.append(Finding(
            check="smoke", passed=False,
            message=f"the candidate errored on all {settings.smoke_cases} smoke cases; it was "
                    "rejected before the statistical canary",
            evidence={"cases": [o.case_id for o in evidence.outcomes if not o.safety]}))
    gaming = gaming_p_value(evidence.outcomes)
    if gaming is not None:
        p, counts = gaming
        diverges = p < settings.gaming_alpha
        findings.append(Finding(
            check="gaming", passed=not diverges,
            message=(f"the candidate regresses on {counts['hidden_regressed']} of "
                     f"{counts['hidden_cases']} hidden cases but {counts['public_regressed']} of "
                     f"{counts['public_cases']} public ones (one-sided Fisher p={p:.2g} < "
                     f"{settings.gaming_alpha:g}): it behaves differently when it may be "
                     "recognising evaluation" if diverges else
                     f"public and hidden results agree (Fisher p={p:.2g})"),
            evidence={"statistic": "fisher_exact_one_sided", "p_value": p,
                      "alpha": settings.gaming_alpha, **counts}))
    return findings


def checker_finding(evidence: CanaryEvidence) -> Finding | None:
    """A failed finding when a checker could not judge the incumbent's output (it raised, or
    returned nothing or NaN): the pair is no evidence, and a broken evaluator must never let
    a candidate through on a tie (ids only)."""
    unjudged = [o for o in evidence.outcomes if o.checker_error]
    if not unjudged:
        return None
    return Finding(
        check="checker_error", passed=False,
        message=f"the checker could not judge the incumbent's output on {len(unjudged)} "
                f"case(s), first {unjudged[0].case_id!r} ({unjudged[0].checker_error}); the "
                "evidence is void: fix the checker (it must return True or False)",
        evidence={"cases": [o.case_id for o in unjudged[:50]], "count": len(unjudged)})


def blob_findings(store: BlobStore, parent: dict[str, Any], candidate: dict[str, Any]
                  ) -> list[Finding]:
    """A failed finding per blob the candidate adds that the store lacks or holds altered.

    Blobs the parent already references were checked when it was accepted. A promoted state
    whose blob is missing would make the ledger fail verification, and the guard refuse to
    start. Store errors other than ``KeyError`` propagate (the caller records ``error``).
    """
    known = set(iter_blob_refs(parent))
    findings = []
    for digest in sorted(set(iter_blob_refs(candidate)) - known):
        try:
            data = store.get(digest)
        except KeyError:
            findings.append(Finding(
                check="blob_store", passed=False,
                message=f"the candidate references blob {digest}, which the blob store does "
                        "not hold; store the artifact before proposing the state",
                evidence={"digest": digest, "problem": "missing"}))
            continue
        if blob_digest(data) != digest:
            findings.append(Finding(
                check="blob_store", passed=False,
                message=f"blob {digest} in the blob store does not match its digest",
                evidence={"digest": digest, "problem": "altered"}))
    return findings


def limit_finding(exc: ProposalTooLarge) -> Finding:
    """The finding of a proposal or candidate state over the configured limits."""
    return Finding(check="proposal_limits", passed=False, message=str(exc),
                   evidence={"limit": exc.limit, "configured": exc.configured})
