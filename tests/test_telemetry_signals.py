"""Metrics, GenAI client spans, evaluation events and opt-in content capture."""

from __future__ import annotations

from typing import Any

import pytest

import guardrails as gr
from guardrails.testing import DictClient, capture_telemetry

STATE: dict[str, Any] = {"prompt": "p", "answers": {"a": "1", "secret": "s3cret"}, "default": "?"}


class ChatClient(DictClient):
    """A DictClient that declares a GenAI identity."""

    def genai_attributes(self) -> dict[str, str]:
        return {"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny-1"}

    def with_state(self, state: dict[str, Any]) -> ChatClient:
        return ChatClient(state, self.responder)


def blocker(request: gr.Request, call_next: Any) -> gr.Response:
    if request.input == "blocked":
        raise gr.GuardrailViolation("no", policy="deny_list")
    return call_next(request)


def build(capture: str | None = "false", client: Any = None) -> tuple[gr.GuardedClient, Any, Any]:
    tracer_provider, spans, meter_provider, reader = capture_telemetry()
    cases = [gr.CanaryCase(id="a", input="a", expect="1"),
             gr.CanaryCase(id="hidden-secret", input="secret", expect="s3cret", hidden=True)]
    guard = gr.Guard(gr.FrozenConstraints(), cases, middleware=[blocker],
                     tracer_provider=tracer_provider, meter_provider=meter_provider,
                     capture_content=capture)
    return guard.wrap(client or ChatClient(STATE)), spans, reader


def points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in m.data.data_points]


def test_invocations_are_counted_by_outcome() -> None:
    """ok and blocked calls land in guardrails.invocations with their outcome."""
    guarded, _, reader = build()
    guarded.invoke("a")
    with pytest.raises(gr.GuardrailViolation):
        guarded.invoke("blocked")
    counts = {p.attributes["guardrails.outcome"]: p.value
              for p in points(reader, "guardrails.invocations")}
    assert counts == {"ok": 1, "blocked": 1}
    blocked = points(reader, "guardrails.blocked_calls")
    assert [(p.attributes["guardrails.blocked_by"], p.value) for p in blocked] == [("deny_list", 1)]


def test_a_blocked_call_marks_its_span() -> None:
    """The guard span of a blocked call names the blocking policy and has status ERROR."""
    guarded, spans, _ = build()
    with pytest.raises(gr.GuardrailViolation):
        guarded.invoke("blocked")
    (span,) = [s for s in spans.get_finished_spans() if s.name == "guardrails.invoke"]
    assert span.attributes["guardrails.blocked_by"] == "deny_list"
    assert span.status.status_code.name == "ERROR"


def test_a_genai_client_gets_a_client_span_under_the_guard_span() -> None:
    """A client declaring gen_ai attributes gets a 'chat tiny-1' CLIENT span, child of the guard."""
    guarded, spans, reader = build()
    guarded.invoke("a")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    model, guard = by_name["chat tiny-1"], by_name["guardrails.invoke"]
    assert model.kind.name == "CLIENT"
    assert model.parent is not None and model.parent.span_id == guard.context.span_id
    assert model.attributes["gen_ai.request.model"] == "tiny-1"
    assert [p.count for p in points(reader, "gen_ai.client.operation.duration")] == [1]


def test_no_content_is_recorded_by_default() -> None:
    """Without opting in, no span attribute or event holds the input or the output."""
    guarded, spans, _ = build(capture="false")
    guarded.invoke("a")
    for span in spans.get_finished_spans():
        assert "gen_ai.input.messages" not in (span.attributes or {})
        assert not span.events


@pytest.mark.parametrize(("mode", "on_span", "in_event"), [
    ("true", True, False), ("SPAN_ONLY", True, False), ("EVENT_ONLY", False, True),
    ("SPAN_AND_EVENT", True, True), ("NO_CONTENT", False, False)])
def test_content_capture_follows_the_setting(mode: str, on_span: bool, in_event: bool) -> None:
    """Each capture mode records content on the span, in events, both or neither."""
    guarded, spans, _ = build(capture=mode)
    guarded.invoke("a")
    (model,) = [s for s in spans.get_finished_spans() if s.name == "chat tiny-1"]
    assert ("gen_ai.input.messages" in model.attributes) is on_span
    assert any(e.name == "gen_ai.client.inference.operation.details" for e in model.events) is in_event


def test_the_capture_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is read when the guard is built."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    guarded, spans, _ = build(capture=None)
    guarded.invoke("a")
    (model,) = [s for s in spans.get_finished_spans() if s.name == "chat tiny-1"]
    assert model.attributes["gen_ai.output.messages"] == '"1"'


def test_hidden_canary_content_never_reaches_telemetry() -> None:
    """Even with full capture, a review's spans and events carry case ids, never case content."""
    guarded, spans, _ = build(capture="SPAN_AND_EVENT")
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/prompt", "value": "q"}]))
    events = [e for s in spans.get_finished_spans() for e in s.events]
    assert {e.attributes["guardrails.canary.case_id"] for e in events
            if e.name == "gen_ai.evaluation.result"} == {"a", "hidden-secret"}
    dump = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans.get_finished_spans()])
    assert "s3cret" not in dump and "'secret'" not in dump


def test_reviews_are_measured_and_canary_calls_counted() -> None:
    """A review records its duration by verdict and one canary-call point per side and outcome."""
    guarded, _, reader = build()
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/prompt", "value": "q"}]))
    (duration,) = points(reader, "guardrails.review.duration")
    assert duration.attributes["guardrails.verdict"] == "accepted" and duration.count == 1
    calls = {(p.attributes["guardrails.canary.side"], p.attributes["guardrails.outcome"]): p.value
             for p in points(reader, "guardrails.canary.calls")}
    assert calls == {("candidate", "pass"): 2, ("incumbent", "pass"): 2}


def test_a_meter_that_raises_never_breaks_a_call() -> None:
    """Counters that raise are logged and ignored; the call still answers."""
    guarded, _, _ = build()

    class Broken:
        def add(self, *_: Any) -> None:
            raise RuntimeError("meter down")

    guarded.guard.telemetry.invocations = Broken()
    assert guarded.invoke("a").output == "1"
