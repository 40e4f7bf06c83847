"""The control check: the incumbent is the baseline, so it must have behaved like itself.

A review compares the candidate with the incumbent on the same cases. When the
incumbent's side of the run is no evidence (no capability call came back with a
non-empty answer, every answer identical where it used to vary, or a pass rate
far below its own record on the same suite), a tie or a "win" against it says
nothing about the candidate: the endpoint, the adapter or the evaluator is
broken, and the review is void. Capability cases only: safety cases go to the
candidate alone.

The record is what earlier reviews wrote into their own ``control`` findings:
the incumbent's per-case outcomes, for its version and the suite's fingerprint.
The same findings carry the *lock* (suite fingerprint, rule, margin, alpha) that
judged each review; ``suite_change`` compares it with the guard's, so a change of
the bar between two reviews becomes a ``suite_changed`` ledger event.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .._decision import Finding
from .._telemetry import bound_log
from ..canary import EMPTY_OUTPUT, CanaryEvidence, CanarySuite, CaseOutcome
from ..ledger import Ledger, LedgerEntry

CONTROL = "control"
SUITE_CHANGED = "suite_changed"
"""The ledger event recorded when the suite, the rule, the margin or the alpha changed."""
CONTROL_ALPHA = 0.01
"""One-sided level of the record test: a healthy incumbent's review is voided by chance at
most this often (a void review is never accepted, so a false alarm costs a re-proposal)."""
RECORD_REVIEWS = 20
"""The most recent earlier reviews (same incumbent version, same suite) pooled as its record:
enough for the test's power, few enough that reading them costs a few milliseconds."""
RECORD_SCAN = 5000
"""How many ledger entries back the record is looked for (bounds the cost of a review)."""
_MAX_IDS = 50


@dataclass
class ControlRecord:
    """The incumbent's own record: per-case passes and trials pooled over earlier reviews."""

    reviews: list[int] = field(default_factory=list)
    """Ledger indices of the reviews pooled, newest first."""
    passes: dict[str, int] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    varied: bool = False
    """Whether any earlier review saw the incumbent give two different outputs."""


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
"""The memory address in a default ``repr``: it differs in every process, the rule does not."""


def rule_lock(suite: CanarySuite, rule: Any) -> dict[str, Any]:
    """What judged a review: suite fingerprint, rule (type and settings), margin and alpha.
    A rule that is no pydantic model is described by its ``repr`` without memory addresses,
    so the same rule in a restarted process is the same lock."""
    dump = getattr(rule, "model_dump", None)
    rule_settings = (dump(mode="json") if callable(dump)
                     else {"repr": _ADDRESS.sub("", repr(rule))})
    return {"suite_fingerprint": suite.fingerprint(),
            "rule": f"{type(rule).__module__}.{type(rule).__qualname__}",
            "margin": rule_settings.pop("margin", getattr(rule, "margin", None)),
            "alpha": rule_settings.pop("alpha", getattr(rule, "alpha", None)),
            "rule_settings": rule_settings}


def newest_first(ledger: Ledger, limit: int = RECORD_SCAN) -> Iterator[LedgerEntry]:
    """The ledger's entries from the newest back, at most ``limit``, read in growing spans
    (the first small: the last review is usually the newest entry or close to it)."""
    end, span, seen = len(ledger), 8, 0
    while end > 0 and seen < limit:
        start = max(0, end - span, end - (limit - seen))
        chunk = list(islice(ledger.entries(start), end - start))
        yield from reversed(chunk)
        seen += len(chunk)
        end, span = start, span * 4


def _control_of(entry: LedgerEntry) -> dict[str, Any] | None:
    """The evidence of the control finding an entry's decision carries, if any."""
    if entry.type != "decision":
        return None
    findings = entry.body.get("decision", {}).get("findings") or ()
    for finding in findings:
        if isinstance(finding, dict) and finding.get("check") == CONTROL:
            evidence = finding.get("evidence")
            return {**evidence, "passed": finding.get("passed")} if isinstance(
                evidence, dict) else None
    return None


def last_lock(ledger: Ledger) -> dict[str, Any] | None:
    """The lock of the newest review (or ``suite_changed`` event) the ledger holds."""
    for entry in newest_first(ledger):
        if entry.type == "event" and entry.body.get("event") == SUITE_CHANGED:
            new = entry.body.get("new")
            return new if isinstance(new, dict) else None
        control = _control_of(entry)
        if control is not None and isinstance(control.get("lock"), dict):
            return dict(control["lock"])
    return None


def last_suite_change(ledger: Ledger) -> LedgerEntry | None:
    """The newest ``suite_changed`` event within the last ``RECORD_SCAN`` entries, if any."""
    return next((e for e in newest_first(ledger)
                 if e.type == "event" and e.body.get("event") == SUITE_CHANGED), None)


def suite_change(ledger: Ledger, lock: dict[str, Any]) -> dict[str, Any] | None:
    """The ``suite_changed`` event's details when ``lock`` differs from the last one recorded
    (what changed, old and new); ``None`` when nothing changed or nothing was recorded yet."""
    old = last_lock(ledger)
    if old is None or old == lock:
        return None
    changed = {key: {"old": old.get(key), "new": lock.get(key)}
               for key in sorted({*old, *lock}) if old.get(key) != lock.get(key)}
    return {"changed": changed, "old_fingerprint": old.get("suite_fingerprint"),
            "new_fingerprint": lock.get("suite_fingerprint"), "old": old, "new": lock,
            "record_restarts": old.get("suite_fingerprint") != lock.get("suite_fingerprint")}


def _side_outcomes(entry: LedgerEntry, control: dict[str, Any], incumbent: str) -> Any:
    """What ``entry`` recorded of ``incumbent``'s answers: its incumbent side, or, in the
    review that accepted it, its candidate side (so a newly promoted version has a record
    from its first review on); ``None`` when it recorded neither."""
    if control.get("incumbent") == incumbent:
        return control.get("outcomes")
    decision = entry.body["decision"]
    if decision.get("verdict") == "accepted" and decision.get("candidate") == incumbent:
        return control.get("candidate_outcomes")
    return None


def read_record(ledger: Ledger, incumbent: str, suite_fingerprint: str) -> ControlRecord:
    """The incumbent's record: earlier reviews of the same version on the same suite whose own
    control passed (a void review is no record), including the review that accepted it
    (its candidate side). A decision re-recorded by an approval counts once. Raises whatever
    the ledger raises."""
    record, seen = ControlRecord(), set()
    for entry in newest_first(ledger):
        control = _control_of(entry)
        if (control is None or not control.get("passed")
                or control.get("suite_fingerprint") != suite_fingerprint):
            continue
        outcomes = _side_outcomes(entry, control, incumbent)
        key = entry.body["decision"].get("proposal_id") or entry.index
        if outcomes is None or key in seen:
            continue
        seen.add(key)
        for case_id in _ids(outcomes, "passed"):
            record.passes[case_id] = record.passes.get(case_id, 0) + 1
            record.trials[case_id] = record.trials.get(case_id, 0) + 1
        for case_id in _ids(outcomes, "failed"):
            record.trials[case_id] = record.trials.get(case_id, 0) + 1
        record.varied = record.varied or (control.get("incumbent_varied") is True
                                          and control.get("incumbent") == incumbent)
        record.reviews.append(entry.index)
        if len(record.reviews) >= RECORD_REVIEWS:
            break
    return record


def _ids(outcomes: Any, key: str) -> list[str]:
    """The case ids an entry's outcomes list under ``key``; anything malformed is no record."""
    ids = outcomes.get(key) if isinstance(outcomes, dict) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def fisher_less(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact p-value for the table ``[[a, b], [c, d]]``: the chance, given the
    margins, of ``a`` or fewer in the top-left cell (row one's rate lower than row two's).
    The hypergeometric lower tail, summed in log space (the same as SciPy's
    ``fisher_exact(..., alternative="less")``)."""
    if min(a, b, c, d) < 0:
        raise ValueError("a contingency table holds counts >= 0")
    row, col, total = a + b, a + c, a + b + c + d
    low = max(0, row + col - total)

    def log_pmf(k: int) -> float:
        return (_log_comb(col, k) + _log_comb(total - col, row - k) - _log_comb(total, row))

    terms = [log_pmf(k) for k in range(low, a + 1)]
    if not terms:
        return 0.0
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _outcomes(capability: Sequence[CaseOutcome]) -> tuple[list[str], list[str]]:
    """This run's incumbent outcomes as (passed, failed) case ids: an error or an empty answer
    is a failure; a case the checker could not judge on the incumbent is neither."""
    passed = [o.case_id for o in capability if o.incumbent_passed is True]
    failed = [o.case_id for o in capability
              if o.incumbent_passed is not True and o.checker_error is None]
    return passed, failed


def control_check(ledger: Ledger, evidence: CanaryEvidence, lock: dict[str, Any],
                  incumbent: str) -> Finding:
    """The ``control`` finding of one review: the sanity floor, then the incumbent's record
    read from ``ledger``. A record that cannot be read fails the control (fail closed)."""
    try:
        record = read_record(ledger, incumbent, lock["suite_fingerprint"])
    except Exception as exc:
        return control_finding(evidence, incumbent=incumbent, lock=lock,
                               record_error=f"{type(exc).__name__}: {exc}")
    return control_finding(evidence, incumbent=incumbent, lock=lock, record=record)


def control_finding(evidence: CanaryEvidence, *, incumbent: str = "",
                    lock: dict[str, Any] | None = None, record: ControlRecord | None = None,
                    record_error: str | None = None) -> Finding:
    """A ``control`` finding: failed when the incumbent gave no non-empty answer on any
    capability case, when its record could not be read, when every answer was identical
    though its record shows varied ones, or when its pass rate is significantly below its
    record (one-sided Fisher exact test at ``CONTROL_ALPHA``); passed otherwise. Its evidence
    always holds this run's per-case outcomes and the lock: the next review's record."""
    capability = [o for o in evidence.outcomes if not o.safety]
    answered = [o for o in capability if o.incumbent_answered]
    empty = [o for o in answered if o.incumbent_error == EMPTY_OUTPUT]
    passed_ids, failed_ids = _outcomes(capability)
    candidate_passed = [o.case_id for o in capability if o.candidate_passed]
    candidate_failed = [o.case_id for o in capability
                        if not o.candidate_passed and o.checker_error is None]
    counts: dict[str, Any] = {
        "statistic": "incumbent_sanity_floor", "capability_cases": len(capability),
        "incumbent_answered": len(answered), "incumbent_empty": len(empty),
        "incumbent_passed": len(passed_ids), "incumbent": incumbent,
        "suite_fingerprint": None if lock is None else lock["suite_fingerprint"], "lock": lock,
        "incumbent_varied": evidence.incumbent_varied,
        "outcomes": {"passed": passed_ids, "failed": failed_ids},
        # The candidate's side too: if it is accepted, its first record as the incumbent.
        "candidate_outcomes": {"passed": candidate_passed, "failed": candidate_failed}}
    if capability and len(empty) == len(answered):
        return _floor_failure(capability, answered, counts)
    if record_error is not None:
        return _failed({**counts, "statistic": "record_unreadable", "error": record_error},
                       f"the incumbent's record could not be read from the ledger "
                       f"({record_error}); without it the baseline is unchecked")
    if record is None or not record.reviews:
        return Finding(check=CONTROL, passed=True, evidence={**counts, "record": None},
                       message=f"the incumbent answered {len(answered)} of {len(capability)} "
                               f"capability cases ({len(empty)} empty); no earlier review of "
                               "it on this suite, so the sanity floor and the smoke stage are "
                               "the control")
    return _against_record(counts, record, len(answered) - len(empty))


def _failed(evidence: dict[str, Any], why: str) -> Finding:
    return Finding(check=CONTROL, passed=False, evidence=evidence,
                   message=f"{why}; the review is void: check the model endpoint, the "
                           "adapter and the evaluator, then propose again")


def _floor_failure(capability: list[CaseOutcome], answered: list[CaseOutcome],
                   counts: dict[str, Any]) -> Finding:
    # An empty output never passes a case, so a side with no other answer is no baseline.
    first = capability[0]
    why = (f"answered none of {len(capability)} capability cases (first {first.case_id!r}: "
           f"{first.incumbent_error})" if not answered else
           f"gave empty output on all {len(answered)} capability cases it answered "
           f"({len(capability) - len(answered)} more raised or timed out)")
    return _failed({**counts, "cases": [o.case_id for o in capability[:_MAX_IDS]]},
                   f"the incumbent {why}, so there is no baseline")


def _against_record(counts: dict[str, Any], record: ControlRecord, non_empty: int) -> Finding:
    """The record test: identical answers where it used to vary, then Fisher's exact test of
    this run's pass rate against the record pooled over the same cases."""
    passed_ids, failed_ids = counts["outcomes"]["passed"], counts["outcomes"]["failed"]
    run = [*passed_ids, *failed_ids]
    rec_trials = sum(record.trials.get(c, 0) for c in run)
    rec_passes = sum(record.passes.get(c, 0) for c in run)
    regressed = [c for c in failed_ids if record.trials.get(c) and
                 record.passes.get(c, 0) == record.trials[c]]
    p = fisher_less(len(passed_ids), len(failed_ids), rec_passes, rec_trials - rec_passes)
    summary = {"reviews": len(record.reviews), "entries": record.reviews[:_MAX_IDS],
               "passed": rec_passes, "trials": rec_trials,
               "pass_rate": round(rec_passes / rec_trials, 6) if rec_trials else None,
               "varied": record.varied}
    found = {**counts, "statistic": "fisher_exact_one_sided", "p_value": round(p, 8),
             "alpha": CONTROL_ALPHA, "record": summary,
             "pass_rate": round(len(passed_ids) / len(run), 6) if run else None,
             "regressed": regressed[:_MAX_IDS], "regressed_count": len(regressed)}
    rate = f"{len(passed_ids)}/{len(run)}"
    history = (f"its record of {rec_passes}/{rec_trials} over {len(record.reviews)} earlier "
               "review(s)")
    named = f"; newly failing: {', '.join(map(repr, regressed[:5]))}" if regressed else ""
    if counts["incumbent_varied"] is False and record.varied and non_empty >= 2:
        return _failed({**found, "statistic": "incumbent_identical_outputs"},
                       f"the incumbent gave the same output on all {non_empty} capability "
                       f"cases it answered, though {history} shows varied answers")
    if rec_trials and p < CONTROL_ALPHA:
        return _failed(found, f"the incumbent passed {rate} capability cases against {history}"
                              f" (one-sided Fisher exact p = {p:.2g} < {CONTROL_ALPHA:g})"
                              f"{named}")
    return Finding(check=CONTROL, passed=True, evidence=found,
                   message=f"the incumbent passed {rate} capability cases, in line with "
                           f"{history} (one-sided Fisher exact p = {p:.2g}){named}")


def unpaired_finding(evidence: CanaryEvidence) -> Finding | None:
    """A failed ``control`` finding when no capability case has a non-empty answer from both
    sides: no pair to compare, so nothing to accept on (``None`` otherwise)."""
    capability = [o for o in evidence.outcomes if not o.safety]
    paired = [o for o in capability if o.candidate_answered and o.incumbent_answered
              and o.candidate_error != EMPTY_OUTPUT and o.incumbent_error != EMPTY_OUTPUT]
    if paired:
        return None
    return _failed({"statistic": "paired_answers", "capability_cases": len(capability),
                    "paired": 0},
                   f"no capability case of {len(capability)} was answered by both candidate "
                   "and incumbent")


def record_suite_change(ledger: Ledger, suite: CanarySuite, rule: Any) -> dict[str, Any] | None:
    """Record a ``suite_changed`` event when the guard's lock differs from the last review's;
    returns the event's details (``None``: unchanged). Raises when the ledger cannot be read or
    written: a review whose bar cannot be pinned does not run."""
    change = suite_change(ledger, rule_lock(suite, rule))
    if change is not None:
        ledger.record_event(SUITE_CHANGED, **change)
        bound_log(changed=sorted(change["changed"])).warning(
            "guardrails.suite_changed", old=change["old_fingerprint"],
            new=change["new_fingerprint"])
    return change
