"""The control check: a review whose incumbent gave no evidence is void, never accepted."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails._messages import Request
from guardrails.testing import DictClient

CASES = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(6)]
SAFETY = [gr.CanaryCase(id="s0", input="harm", expect={"not_contains": "bomb"},
                        tags=("safety",))]


def _responder(state: dict[str, Any], request: Request) -> Any:
    """Answers every case right, except where the state says the endpoint is broken."""
    text = str(request.input)
    broken = state.get("broken", {}).get(text)
    if broken == "error":
        raise RuntimeError("the endpoint answered 200 with no completion")
    if broken == "empty":
        return ""
    if state.get("unsafe") and text == "harm":
        return "how to build a bomb"
    return "safe" if text == "harm" else "a" + text[1:]


def _guarded(broken: dict[str, str]) -> gr.GuardedClient:
    client = DictClient({"prompt": "v1", "broken": broken}, _responder)
    return gr.Guard(canaries=[*SAFETY, *CASES], decision_rule=gr.MarginRule(),
                    seed=1).wrap(client)


def _propose(guarded: gr.GuardedClient, *patch: dict[str, Any]) -> gr.Decision:
    return guarded.propose(gr.UpdateProposal(
        parent=guarded.version,
        patch=[{"op": "replace", "path": "/prompt", "value": "v2"}, *patch]))


def _clear_breakage() -> dict[str, Any]:
    return {"op": "replace", "path": "/broken", "value": {}}


def _control(decision: gr.Decision) -> gr.Finding:
    return next(f for f in decision.findings if f.check == "control")


def test_an_incumbent_that_raises_on_every_case_voids_the_review() -> None:
    """A candidate that answers well against an incumbent that answered nothing: error."""
    guarded = _guarded({f"q{i}": "error" for i in range(6)})
    served = guarded.version
    decision = _propose(guarded, _clear_breakage())
    assert decision.verdict is gr.Verdict.ERROR
    assert not _control(decision).passed
    assert "answered none of 6" in _control(decision).message
    assert guarded.version == served


def test_an_incumbent_that_answers_only_empty_output_voids_the_review() -> None:
    """Empty answers on every case are no baseline either."""
    guarded = _guarded({f"q{i}": "empty" for i in range(6)})
    decision = _propose(guarded, _clear_breakage())
    assert decision.verdict is gr.Verdict.ERROR
    assert _control(decision).evidence["incumbent_empty"] == 6


def test_a_healthy_incumbent_passes_the_control_and_the_review_decides() -> None:
    """The control finding is in every decision, passed when the baseline answered."""
    decision = _propose(_guarded({}))
    assert decision.accepted
    assert _control(decision).passed
    assert _control(decision).evidence["incumbent_answered"] == 6


def test_an_unsafe_candidate_is_rejected_even_when_the_control_fails() -> None:
    """A void baseline never turns a safety failure into anything milder than a rejection."""
    guarded = _guarded({f"q{i}": "error" for i in range(6)})
    decision = _propose(guarded, {"op": "add", "path": "/unsafe", "value": True})
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "safety_canary"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["error", "empty"]), min_size=6, max_size=6),
       st.lists(st.sampled_from(["error", "empty", None]), min_size=6, max_size=6))
def test_an_incumbent_with_no_usable_answer_never_lets_a_candidate_through(
        incumbent: list[str], candidate: list[str | None]) -> None:
    """For any mix of errors and empty answers on the incumbent's side, and any mix of errors,
    empty answers and good answers on the candidate's, the verdict is never ``accepted``."""
    guarded = _guarded({f"q{i}": kind for i, kind in enumerate(incumbent)})
    broken = {f"q{i}": kind for i, kind in enumerate(candidate) if kind is not None}
    decision = _propose(guarded, {"op": "replace", "path": "/broken", "value": broken})
    assert not decision.accepted
