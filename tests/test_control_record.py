"""The control check against the incumbent's own record: the ledger remembers how the incumbent
did on the same suite, and a review in which it suddenly does much worse is void."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails._messages import Request
from guardrails.gate import fisher_less
from guardrails.testing import DictClient

CASES = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(10)]

OUTAGE: dict[str, Any] = {}
"""What the incumbent's endpoint does wrong right now: case input -> 'wrong', 'same', 'empty',
'error'. Outside the state, as a provider's outage is: the incumbent's version does not move."""


def _responder(state: dict[str, Any], request: Request) -> Any:
    text = str(request.input)
    if state["prompt"] == "bad":
        return "nonsense"
    if state["prompt"] == "v1":
        trouble = OUTAGE.get(text)
        if trouble == "error":
            raise RuntimeError("HTTP 200 with no choices")
        if trouble in ("wrong", "same", "empty"):
            return {"wrong": "a?", "same": "the same answer", "empty": ""}[trouble]
    return "a" + text[1:]


@pytest.fixture(autouse=True)
def _no_outage() -> Iterator[None]:
    OUTAGE.clear()
    yield
    OUTAGE.clear()


def _guarded(ledger: gr.Ledger, cases: list[gr.CanaryCase] | None = None,
             margin: float = 0.0) -> gr.GuardedClient:
    client = DictClient({"prompt": "v1"}, _responder)
    return gr.Guard(canaries=cases or CASES, ledger=ledger, margin=margin, seed=1).wrap(client)


def _propose(guarded: gr.GuardedClient, prompt: str) -> gr.Decision:
    return guarded.propose(gr.UpdateProposal(
        parent=guarded.version, patch=[{"op": "replace", "path": "/prompt", "value": prompt}]))


def _control(decision: gr.Decision) -> gr.Finding:
    return next(f for f in decision.findings if f.check == "control")


def _build_record(guarded: gr.GuardedClient, reviews: int = 3) -> None:
    """Earlier reviews in which the incumbent passed every case (their candidates failed)."""
    for _ in range(reviews):
        assert _propose(guarded, "bad").verdict is gr.Verdict.REJECTED


def test_an_incumbent_far_below_its_record_voids_the_review(store_factory: Any) -> None:
    """It passed 30 of 30 before and 4 of 10 now: Fisher's exact test voids the review, and
    the finding names the statistic, the record and the newly failing cases."""
    guarded = _guarded(store_factory())
    _build_record(guarded)
    OUTAGE.update({f"q{i}": "wrong" for i in range(6)})
    decision = _propose(guarded, "v2")
    control = _control(decision)
    assert decision.verdict is gr.Verdict.ERROR
    assert not control.passed
    assert control.evidence["statistic"] == "fisher_exact_one_sided"
    assert control.evidence["record"]["reviews"] == 3
    assert control.evidence["record"]["trials"] == 30
    assert sorted(control.evidence["regressed"]) == [f"c{i}" for i in range(6)]
    assert "p = " in control.message and "'c0'" in control.message


def test_once_the_incumbent_recovers_the_same_change_is_accepted(tmp_path: Path) -> None:
    """The void review did not enter the record: a healthy incumbent passes its control again."""
    guarded = _guarded(gr.SQLiteLedger(tmp_path / "ledger.sqlite"))
    _build_record(guarded)
    OUTAGE.update({f"q{i}": "wrong" for i in range(6)})
    assert _propose(guarded, "v2").verdict is gr.Verdict.ERROR
    OUTAGE.clear()
    decision = _propose(guarded, "v2")
    assert decision.accepted
    assert _control(decision).evidence["record"]["reviews"] == 3


def test_one_new_failure_is_within_the_record_and_is_named(tmp_path: Path) -> None:
    """9 of 10 against 30 of 30 is no evidence of a broken baseline, but the case is named."""
    guarded = _guarded(gr.SQLiteLedger(tmp_path / "ledger.sqlite"), margin=0.2)
    _build_record(guarded)
    OUTAGE["q3"] = "wrong"
    control = _control(_propose(guarded, "v2"))
    assert control.passed
    assert control.evidence["regressed"] == ["c3"]
    assert "newly failing: 'c3'" in control.message


def test_identical_outputs_where_the_record_varied_void_the_review(tmp_path: Path) -> None:
    """Every answer the same string, though the incumbent's answers always differed."""
    guarded = _guarded(gr.SQLiteLedger(tmp_path / "ledger.sqlite"))
    _build_record(guarded)
    OUTAGE.update({f"q{i}": "same" for i in range(10)})
    decision = _propose(guarded, "v2")
    assert decision.verdict is gr.Verdict.ERROR
    assert _control(decision).evidence["statistic"] == "incumbent_identical_outputs"


def test_every_review_records_the_incumbents_outcome_per_case(tmp_path: Path) -> None:
    """The control finding in the ledger entry holds the outcomes the next review reads."""
    ledger = gr.SQLiteLedger(tmp_path / "ledger.sqlite")
    guarded = _guarded(ledger)
    OUTAGE["q2"] = "error"
    _propose(guarded, "bad")
    entry = list(ledger.entries())[-1]
    assert entry.decision is not None
    evidence = _control(entry.decision).evidence
    assert evidence["outcomes"]["failed"] == ["c2"]
    assert sorted(evidence["outcomes"]["passed"]) == sorted(f"c{i}" for i in range(10) if i != 2)
    assert evidence["incumbent"] == guarded.version
    assert evidence["suite_fingerprint"] == gr.CanarySuite(CASES).fingerprint()


def test_a_first_review_has_no_record_and_says_so(tmp_path: Path) -> None:
    """With no earlier review of this incumbent on this suite the floor is the control."""
    decision = _propose(_guarded(gr.SQLiteLedger(tmp_path / "ledger.sqlite")), "v2")
    assert decision.accepted
    assert _control(decision).evidence["record"] is None
    assert "smoke stage" in _control(decision).message


def test_the_record_restarts_when_the_suite_changes(tmp_path: Path) -> None:
    """The record is per suite fingerprint: a new suite has none, whatever the old one held."""
    path = tmp_path / "ledger.sqlite"
    _build_record(_guarded(gr.SQLiteLedger(path)))
    more = [*CASES, gr.CanaryCase(id="c10", input="q10", expect="a10")]
    decision = _propose(_guarded(gr.SQLiteLedger(path), cases=more), "v2")
    assert _control(decision).evidence["record"] is None


class _FlakyLedger(gr.SQLiteLedger):
    """A real SQLite ledger whose reads can be made to fail, as a locked or lost disk does."""

    fail_reads = False

    def entries(self, start: int = 0) -> Iterator[gr.LedgerEntry]:
        if self.fail_reads:
            raise sqlite3.OperationalError("disk I/O error")
        return super().entries(start)


def test_a_ledger_that_fails_while_the_record_is_read_voids_the_review(tmp_path: Path) -> None:
    """The read fails after the review started (during the canary run): error, reason kept."""
    ledger = _FlakyLedger(tmp_path / "ledger.sqlite")

    def breaking(state: dict[str, Any], request: Request) -> Any:
        ledger.fail_reads = True  # the next ledger read is the control's record
        return _responder(state, request)

    guarded = gr.Guard(canaries=CASES, ledger=ledger, seed=1).wrap(
        DictClient({"prompt": "v1"}, breaking))
    decision = _propose(guarded, "v2")
    ledger.fail_reads = False
    control = _control(decision)
    assert decision.verdict is gr.Verdict.ERROR
    assert control.evidence["statistic"] == "record_unreadable"
    assert "disk I/O error" in control.message
    assert list(ledger.entries())[-1].decision == decision.model_copy(
        update={"inclusion_proof": None})


def _fabricated_record(ledger: gr.Ledger, incumbent: str, passes: list[int]) -> None:
    """Earlier reviews as the ledger would hold them: ``passes[i]`` of them passed case i."""
    fingerprint = gr.CanarySuite(CASES).fingerprint()
    for review in range(max(passes, default=0)):
        outcomes = {"passed": [f"c{i}" for i, n in enumerate(passes) if n > review],
                    "failed": [f"c{i}" for i, n in enumerate(passes) if n <= review]}
        ledger.record(gr.Decision.reject([gr.Finding(
            check="control", passed=True, message="earlier review",
            evidence={"incumbent": incumbent, "suite_fingerprint": fingerprint,
                      "outcomes": outcomes, "incumbent_varied": True})], parent=incumbent))


_TROUBLE = st.sampled_from([None, "wrong", "same", "empty", "error"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 4), min_size=10, max_size=10),
       st.lists(_TROUBLE, min_size=10, max_size=10), st.sampled_from(["v2", "bad"]))
def test_a_review_whose_control_fails_is_never_accepted(
        passes: list[int], trouble: list[str | None], candidate: str) -> None:
    """Whatever the incumbent's record and whatever its endpoint does in this run, a review
    whose control finding failed is never accepted (and is void unless rejected outright)."""
    OUTAGE.clear()
    ledger = gr.MemoryLedger()
    guarded = _guarded(ledger, margin=0.3)
    _fabricated_record(ledger, guarded.version, passes)
    OUTAGE.update({f"q{i}": t for i, t in enumerate(trouble) if t is not None})
    decision = _propose(guarded, candidate)
    if not _control(decision).passed:
        assert decision.verdict in (gr.Verdict.ERROR, gr.Verdict.REJECTED)
    assert not (decision.accepted and not all(f.passed for f in decision.findings
                                              if f.check == "control"))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 200), st.integers(0, 200))
def test_the_exact_test_agrees_with_scipy(a: int, b: int, c: int, d: int) -> None:
    """The stdlib Fisher exact test gives SciPy's one-sided p-value."""
    stats = pytest.importorskip("scipy.stats")
    expected = stats.fisher_exact([[a, b], [c, d]], alternative="less").pvalue
    assert math.isclose(fisher_less(a, b, c, d), expected, rel_tol=1e-7, abs_tol=1e-12)


def _accept_everything(evidence: gr.CanaryEvidence) -> tuple[gr.Verdict, list[gr.Finding]]:
    """A custom decision rule that says yes to anything: the gate must not."""
    return gr.Verdict.ACCEPTED, []


def test_no_case_answered_by_both_sides_never_accepts_whatever_the_rule_says() -> None:
    """A rule that accepts anything, a healthy incumbent, a candidate whose every answer is
    empty: no case has an answer from both sides, so the review is void (paired_answers)."""
    def responder(state: dict[str, Any], request: Request) -> Any:
        return "" if state["prompt"] == "mute" else _responder(state, request)

    guarded = gr.Guard(canaries=CASES, decision_rule=_accept_everything, seed=1).wrap(
        DictClient({"prompt": "v1"}, responder))
    decision = _propose(guarded, "mute")
    assert decision.verdict is gr.Verdict.ERROR
    paired = [f for f in decision.findings if f.evidence.get("statistic") == "paired_answers"]
    assert paired and not paired[0].passed


def test_a_malformed_record_entry_is_no_record() -> None:
    """Hostile input: a control finding in the ledger whose outcomes are not id lists."""
    ledger = gr.MemoryLedger()
    guarded = _guarded(ledger)
    ledger.record(gr.Decision.reject([gr.Finding(
        check="control", passed=True, message="forged",
        evidence={"incumbent": guarded.version,
                  "suite_fingerprint": gr.CanarySuite(CASES).fingerprint(),
                  "outcomes": {"passed": "c0", "failed": [1, None, {"x": 1}]}})],
        parent=guarded.version))
    control = _control(_propose(guarded, "v2"))
    assert control.passed
    assert control.evidence["record"]["trials"] == 0


def test_a_newly_promoted_version_has_the_record_of_the_review_that_accepted_it(
        tmp_path: Path) -> None:
    """v2 passed every case as the candidate of its own review; in the next review, as the
    incumbent, it fails six of ten: that review is void, with the accepting review as the
    record, although v2 was never the incumbent of a review before."""
    broken: set[str] = set()

    def responder(state: dict[str, Any], request: Request) -> Any:
        text = str(request.input)
        if state["prompt"] == "v1":
            return "a?"  # v1 fails everything: v2 is better and is accepted
        if state["prompt"] == "v2" and text in broken:
            return "a?"
        return "a" + text[1:]

    client = DictClient({"prompt": "v1"}, responder)
    guarded = gr.Guard(canaries=CASES, ledger=gr.SQLiteLedger(tmp_path / "l.db"), seed=1).wrap(
        client)
    accepted = _propose(guarded, "v2")
    assert accepted.accepted
    broken.update(f"q{i}" for i in range(6))
    decision = _propose(guarded, "v3")
    control = _control(decision)
    assert decision.verdict is gr.Verdict.ERROR and not control.passed
    assert control.evidence["statistic"] == "fisher_exact_one_sided"
    assert control.evidence["record"]["reviews"] == 1
