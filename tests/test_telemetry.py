"""Telemetry: review and invoke spans, metrics, log correlation, and failures that never
break a call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from structlog.testing import capture_logs

import guardrails as gr
from guardrails._telemetry import (
    ATTR_BLOCKED_BY,
    ATTR_CANDIDATE,
    ATTR_CASES_USED,
    ATTR_DECIDING_CHECK,
    ATTR_ENTRY_INDEX,
    ATTR_LEDGER_ROOT,
    ATTR_LEDGER_SIZE,
    ATTR_PARENT,
    ATTR_PROPOSAL_ID,
    ATTR_PROPOSAL_KIND,
    ATTR_PROPOSAL_SOURCE,
    ATTR_VERDICT,
    ATTR_VERSION,
    METRIC_DECISIONS,
    SPAN_INVOKE,
    SPAN_REVIEW,
    SPAN_STAGE_PREFIX,
)
from guardrails.testing import DictClient

MakeGuard = Callable[..., gr.Guard]
Telemetry = tuple[Any, Any, Any, Any]

GOOD = {"op": "replace", "path": "/system_prompt", "value": "You are a concise assistant."}
FROZEN = {"op": "replace", "path": "/params/threshold", "value": 0.1}


@pytest.fixture
def traced(make_guard: MakeGuard, client: DictClient, telemetry: Telemetry) -> gr.GuardedClient:
    tracer_provider, _, meter_provider, _ = telemetry
    return make_guard(tracer_provider=tracer_provider, meter_provider=meter_provider).wrap(client)


def spans(telemetry: Telemetry, name: str) -> list[ReadableSpan]:
    return [s for s in telemetry[1].get_finished_spans() if s.name == name]


def propose(guarded: gr.GuardedClient, *ops: dict[str, Any]) -> gr.Decision:
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=ops))


# -- review spans ---------------------------------------------------------------------------


def test_accepted_review_span(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """An accepted review produces one guardrails.review span with the decision attributes."""
    parent = traced.version
    decision = propose(traced, GOOD)
    assert decision.accepted
    (span,) = spans(telemetry, SPAN_REVIEW)
    attributes = dict(span.attributes or {})
    assert attributes == {
        ATTR_PROPOSAL_ID: decision.proposal_id,
        ATTR_PROPOSAL_KIND: "state",
        ATTR_PROPOSAL_SOURCE: "model",
        ATTR_PARENT: parent,
        ATTR_CANDIDATE: decision.candidate,
        ATTR_VERDICT: "accepted",
        ATTR_ENTRY_INDEX: decision.entry_index,
        ATTR_CASES_USED: 3,
        ATTR_LEDGER_SIZE: len(traced.ledger),
        ATTR_LEDGER_ROOT: traced.ledger.root()[1].hex(),
    }
    assert span.status.status_code is trace.StatusCode.UNSET


def test_rejected_review_span(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """A rejected review's span names the verdict, the deciding check and the ledger entry."""
    decision = propose(traced, FROZEN)
    assert not decision.accepted
    (span,) = spans(telemetry, SPAN_REVIEW)
    attributes = dict(span.attributes or {})
    assert attributes[ATTR_VERDICT] == "rejected"
    assert attributes[ATTR_DECIDING_CHECK] == "frozen_pointer"
    assert attributes[ATTR_ENTRY_INDEX] == decision.entry_index
    assert attributes[ATTR_CANDIDATE] == decision.candidate
    assert ATTR_CASES_USED not in attributes  # no canary ran
    assert span.status.status_code is trace.StatusCode.UNSET


def test_error_review_span_is_an_error(make_guard: MakeGuard, client: DictClient,
                                       telemetry: Telemetry) -> None:
    """A review ending in the error verdict marks its span as an error."""
    def broken(evidence: gr.CanaryEvidence) -> tuple[gr.Verdict, list[gr.Finding]]:
        raise RuntimeError("rule failed")

    guarded = make_guard(decision_rule=broken, tracer_provider=telemetry[0]).wrap(client)
    assert propose(guarded, GOOD).verdict is gr.Verdict.ERROR
    (span,) = spans(telemetry, SPAN_REVIEW)
    assert span.attributes is not None and span.attributes[ATTR_VERDICT] == "error"
    assert span.status.status_code is trace.StatusCode.ERROR


def test_review_stages_are_child_spans(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """Each gate stage of a review is a child span of the review span, in order."""
    propose(traced, GOOD)
    (review,) = spans(telemetry, SPAN_REVIEW)
    assert review.context is not None
    stages = [s for s in telemetry[1].get_finished_spans()
              if s.name.startswith(SPAN_STAGE_PREFIX)]
    assert [s.name.removeprefix(SPAN_STAGE_PREFIX) for s in stages] == [
        "validate", "static_checks", "sandbox", "canary", "decision", "promotion"]
    assert all(s.parent is not None and s.parent.span_id == review.context.span_id
               for s in stages)


def test_canary_events_carry_ids_only(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """Each canary call is a gen_ai.evaluation.result event naming the case id, never its
    content."""
    propose(traced, GOOD)
    (canary,) = spans(telemetry, SPAN_STAGE_PREFIX + "canary")
    events = [e for e in canary.events if e.name == "gen_ai.evaluation.result"]
    assert len(events) == 7  # three capability cases on both sides, the safety case on one
    assert {e.attributes["guardrails.canary.case_id"] for e in events  # type: ignore[index]
            } == {"sum", "capital", "sky", "weapon"}
    text = repr([dict(e.attributes or {}) for e in events])
    assert "colour of the sky" not in text and "blue" not in text


def test_rollback_has_a_review_span(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """A rollback is a review too: its span records kind rollback and the verdict."""
    genesis = traced.version
    propose(traced, GOOD)
    assert traced.rollback(genesis).accepted
    last = spans(telemetry, SPAN_REVIEW)[-1]
    assert last.attributes is not None
    assert (last.attributes[ATTR_PROPOSAL_KIND], last.attributes[ATTR_VERDICT]) == (
        "rollback", "accepted")


# -- invoke spans -----------------------------------------------------------------------------


def test_invoke_span(traced: gr.GuardedClient, telemetry: Telemetry) -> None:
    """Each call produces a guardrails.invoke span naming the served version."""
    traced.invoke("2+2")
    asyncio.run(traced.ainvoke("2+2"))
    invokes = spans(telemetry, SPAN_INVOKE)
    assert len(invokes) == 2
    assert all(s.attributes is not None and s.attributes[ATTR_VERSION] == traced.version
               for s in invokes)


def test_blocked_call_span_names_the_policy(make_guard: MakeGuard, client: DictClient,
                                            telemetry: Telemetry) -> None:
    """A call a middleware blocks has an error span naming the blocking policy."""
    def deny(request: gr.Request, call_next: Any) -> gr.Response:
        raise gr.GuardrailViolation("no", policy="deny_all")

    guarded = make_guard(middleware=[deny], tracer_provider=telemetry[0]).wrap(client)
    with pytest.raises(gr.GuardrailViolation):
        guarded.invoke("2+2")
    (span,) = spans(telemetry, SPAN_INVOKE)
    assert span.attributes is not None and span.attributes[ATTR_BLOCKED_BY] == "deny_all"
    assert span.status.status_code is trace.StatusCode.ERROR


def test_middleware_runs_inside_the_invoke_span(make_guard: MakeGuard, client: DictClient,
                                                telemetry: Telemetry) -> None:
    """Middlewares see the invoke span as the current span, so their own spans nest in it."""
    seen: list[int] = []

    def peek(request: gr.Request, call_next: Any) -> gr.Response:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return call_next(request)  # type: ignore[no-any-return]

    guarded = make_guard(middleware=[peek], tracer_provider=telemetry[0]).wrap(client)
    guarded.invoke("2+2")
    (span,) = spans(telemetry, SPAN_INVOKE)
    assert span.context is not None and seen == [span.context.span_id]


# -- metrics and logs ------------------------------------------------------------------------


def test_decisions_are_counted_by_verdict(traced: gr.GuardedClient,
                                          telemetry: Telemetry) -> None:
    """Each decision adds one to guardrails.updates, labelled with verdict and deciding check."""
    propose(traced, GOOD)
    propose(traced, FROZEN)
    data = telemetry[3].get_metrics_data()
    points = [
        (dict(p.attributes), p.value)
        for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == METRIC_DECISIONS for p in m.data.data_points
    ]
    assert sorted((a["guardrails.verdict"], a["guardrails.deciding_check"], v)
                  for a, v in points) == [("accepted", "none", 1),
                                          ("rejected", "frozen_pointer", 1)]


def test_decision_log_is_bound_to_the_review_span(traced: gr.GuardedClient,
                                                  telemetry: Telemetry) -> None:
    """The structlog decision event carries the review span's trace and span ids."""
    with capture_logs() as logs:
        decision = propose(traced, FROZEN)
    (event,) = [e for e in logs if e["event"] == "guardrails.decision"]
    (span,) = spans(telemetry, SPAN_REVIEW)
    assert span.context is not None
    assert event["trace_id"] == format(span.context.trace_id, "032x")
    assert event["span_id"] == format(span.context.span_id, "016x")
    assert (event["verdict"], event["check"], event["proposal_id"]) == (
        "rejected", "frozen_pointer", decision.proposal_id)


# -- telemetry that fails ---------------------------------------------------------------------


class RaisingTracer(trace.Tracer):
    """A tracer whose every span start raises (a broken SDK or exporter)."""

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("tracer exploded")

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        raise RuntimeError("tracer exploded")
        yield  # pragma: no cover


class RaisingSpan(trace.NonRecordingSpan):
    """A span that says it records and raises from every other method."""

    def __init__(self) -> None:
        super().__init__(trace.SpanContext(trace_id=1, span_id=1, is_remote=False))

    def is_recording(self) -> bool:
        return True

    def _boom(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("span exploded")

    set_attribute = set_attributes = add_event = set_status = end = _boom
    update_name = record_exception = _boom


class RaisingSpanTracer(trace.Tracer):
    """A tracer handing out spans whose methods raise."""

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return RaisingSpan()

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        span = RaisingSpan()
        with trace.use_span(span, end_on_exit=False):
            yield span


class Provider(trace.TracerProvider):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self.tracer


class RaisingProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        raise RuntimeError("provider exploded")


@pytest.mark.parametrize("provider", [Provider(RaisingTracer()), Provider(RaisingSpanTracer()),
                                      RaisingProvider()],
                         ids=["raising-tracer", "raising-spans", "raising-provider"])
def test_broken_tracing_never_breaks_invoke_or_propose(
    make_guard: MakeGuard, client: DictClient, provider: trace.TracerProvider
) -> None:
    """A tracer that raises changes no answer and no decision: invoke, ainvoke, propose and
    rollback behave as without telemetry."""
    with capture_logs() as logs:
        guarded = make_guard(tracer_provider=provider).wrap(client)
        genesis = guarded.version
        assert guarded.invoke("2+2").output == "4"
        assert asyncio.run(guarded.ainvoke("2+2")).output == "4"
        accepted = propose(guarded, GOOD)
        rejected = propose(guarded, FROZEN)
        rolled_back = guarded.rollback(genesis)
    assert accepted.accepted, accepted.reasons
    assert rejected.deciding_finding is not None
    assert rejected.deciding_finding.check == "frozen_pointer"
    assert rolled_back.accepted
    assert any(e["event"] == "guardrails.telemetry_failed" for e in logs)


def test_broken_metrics_never_break_invoke_or_propose(make_guard: MakeGuard,
                                                      client: DictClient) -> None:
    """A meter whose instruments raise changes no answer and no decision."""
    from opentelemetry import metrics

    class RaisingCounter:
        name = "broken"

        def add(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("counter exploded")

        record = add

    class RaisingMeter(metrics.NoOpMeter):
        def create_counter(self, *args: Any, **kwargs: Any) -> Any:
            return RaisingCounter()

        def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
            return RaisingCounter()

    class MeterProvider(metrics.NoOpMeterProvider):
        def get_meter(self, *args: Any, **kwargs: Any) -> metrics.Meter:
            return RaisingMeter("broken")

    guarded = make_guard(meter_provider=MeterProvider(), integrity_check_every=1).wrap(client)
    assert guarded.invoke("2+2").output == "4"
    assert propose(guarded, GOOD).accepted
    client_now = guarded.client
    client_now.mutate_silently("default", "changed")
    assert guarded.invoke("unknown").output == "I don't know"


def test_broken_meter_provider_never_stops_the_guard(make_guard: MakeGuard,
                                                     client: DictClient) -> None:
    """A meter provider that raises leaves the guard working, without metrics."""
    from opentelemetry import metrics

    class RaisingMeterProvider(metrics.NoOpMeterProvider):
        def get_meter(self, *args: Any, **kwargs: Any) -> metrics.Meter:
            raise RuntimeError("meter provider exploded")

    guarded = make_guard(meter_provider=RaisingMeterProvider()).wrap(client)
    assert guarded.invoke("2+2").output == "4"
    assert propose(guarded, GOOD).accepted
