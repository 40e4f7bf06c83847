"""Telemetry names (one place for every ``guardrails.*`` attribute) and safe span helpers.

Only the OpenTelemetry API is used here; the application picks the SDK.
A failing tracer or meter never breaks a call or a review.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import structlog
from opentelemetry import context, metrics, trace
from opentelemetry.util.types import AttributeValue

SPAN_INVOKE = "guardrails.invoke"
SPAN_REVIEW = "guardrails.review"
SPAN_STAGE_PREFIX = "guardrails.review."

ATTR_VERSION = "guardrails.version"
ATTR_PROPOSAL_ID = "guardrails.proposal.id"
ATTR_PROPOSAL_KIND = "guardrails.proposal.kind"
ATTR_PROPOSAL_SOURCE = "guardrails.proposal.source"
ATTR_PARENT = "guardrails.parent_version"
ATTR_CANDIDATE = "guardrails.candidate_version"
ATTR_VERDICT = "guardrails.verdict"
ATTR_DECIDING_CHECK = "guardrails.deciding_check"
ATTR_CASES_USED = "guardrails.canary.cases_used"
ATTR_ENTRY_INDEX = "guardrails.ledger.entry_index"
ATTR_LEDGER_SIZE = "guardrails.ledger.size"
ATTR_LEDGER_ROOT = "guardrails.ledger.root"
ATTR_LEDGER_CHECKPOINT = "guardrails.ledger.checkpoint"
ATTR_BLOCKED_BY = "guardrails.blocked_by"
ATTR_OUTCOME = "guardrails.outcome"
ATTR_CASE_ID = "guardrails.canary.case_id"
ATTR_SIDE = "guardrails.canary.side"
ATTR_SANDBOX_ISOLATION = "guardrails.sandbox.isolation"
ATTR_SANDBOX_LAYERS = "guardrails.sandbox.layers"
ATTR_SANDBOX_MISSING = "guardrails.sandbox.missing_layers"
ATTR_STREAM_FIRST_RELEASE = "guardrails.stream.time_to_first_release"
"""Seconds from the start of a streamed call to the first text released to the caller."""
ATTR_STREAM_MAX_HELD = "guardrails.stream.max_held_bytes"
ATTR_STREAM_CHUNKS = "guardrails.stream.chunks"
"""Items the client's stream yielded."""
ATTR_STREAM_ABORT = "guardrails.stream.abort_reason"
"""``blocked``, ``overflow`` (``stream_max_held``), ``error`` (the client failed) or
``closed`` (the caller stopped reading); absent when the stream completed."""
EVENT_STREAM_ABORTED = "guardrails.stream.aborted"

METRIC_INVOCATIONS = "guardrails.invocations"
METRIC_BLOCKED = "guardrails.blocked_calls"
METRIC_DECISIONS = "guardrails.updates"
METRIC_REVIEW_DURATION = "guardrails.review.duration"
METRIC_CANARY_CALLS = "guardrails.canary.calls"
METRIC_SILENT_MODIFICATIONS = "guardrails.silent_modifications"

# OpenTelemetry GenAI semantic conventions (names only; no semconv package needed).
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_INPUT_MESSAGES = "gen_ai.input.messages"
GENAI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GENAI_DURATION = "gen_ai.client.operation.duration"
GENAI_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
GENAI_EVALUATION_EVENT = "gen_ai.evaluation.result"
GENAI_EVALUATION_NAME = "gen_ai.evaluation.name"
GENAI_EVALUATION_LABEL = "gen_ai.evaluation.score.label"
ERROR_TYPE = "error.type"

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_MODES = {
    "": (False, False), "false": (False, False), "no_content": (False, False),
    "true": (True, False), "span_only": (True, False),
    "event_only": (False, True), "span_and_event": (True, True),
}

OK = {ATTR_OUTCOME: "ok"}
BLOCKED = {ATTR_OUTCOME: "blocked"}
ERROR = {ATTR_OUTCOME: "error"}

_log = structlog.get_logger("guardrails.telemetry")


class Telemetry:
    """The tracer and instruments of one guard, from the given providers or the global ones."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: str | None = None,
    ) -> None:
        try:
            self.tracer = trace.get_tracer("guardrails", tracer_provider=tracer_provider)
        except Exception:  # a broken provider must not stop the guard: trace nothing
            _log.warning("guardrails.telemetry_failed", provider="tracer", exc_info=True)
            self.tracer = trace.NoOpTracer()
        try:
            meter = metrics.get_meter("guardrails", meter_provider=meter_provider)
        except Exception:
            _log.warning("guardrails.telemetry_failed", provider="meter", exc_info=True)
            meter = metrics.NoOpMeter("guardrails")
        self.meter = meter
        """The guard's meter, for instruments other packages own (``rollout``)."""
        self.invocations = meter.create_counter(
            METRIC_INVOCATIONS, unit="{call}", description="Guarded calls by outcome")
        self.blocked = meter.create_counter(
            METRIC_BLOCKED, unit="{call}", description="Calls a runtime policy blocked, by policy")
        self.decisions = meter.create_counter(
            METRIC_DECISIONS, unit="{update}", description="Update decisions by verdict")
        self.review_duration = meter.create_histogram(
            METRIC_REVIEW_DURATION, unit="s", description="Time to decide one proposal")
        self.canary_calls = meter.create_counter(
            METRIC_CANARY_CALLS, unit="{call}", description="Canary calls by side and outcome")
        self.silent_modifications = meter.create_counter(
            METRIC_SILENT_MODIFICATIONS, unit="{event}",
            description="Times the served client's state changed without a proposal")
        self.genai_duration = meter.create_histogram(
            GENAI_DURATION, unit="s", description="GenAI operation duration")
        self.capture_spans, self.capture_events = capture_mode(capture_content)

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None
             ) -> Iterator[trace.Span]:
        """A current span that never raises from telemetry itself."""
        try:
            manager = self.tracer.start_as_current_span(name, attributes=attributes)
            span = manager.__enter__()
        except Exception:
            _log.warning("guardrails.telemetry_failed", span=name, exc_info=True)
            yield trace.INVALID_SPAN
            return
        try:
            yield span
        except BaseException as exc:
            _safe_exit(manager, type(exc), exc, exc.__traceback__)
            raise
        _safe_exit(manager, None, None, None)

    def start_invoke_span(self, version: str) -> trace.Span | None:
        """The per-call span, or ``None`` when it would not record (the no-op fast path).

        The hot path avoids ``start_as_current_span``: a non-recording span
        is never made current, which keeps the API-only cost near a microsecond.
        """
        try:
            span = self.tracer.start_span(SPAN_INVOKE)
            if not span.is_recording():
                return None
            span.set_attribute(ATTR_VERSION, version)
            return span
        except Exception:
            _log.warning("guardrails.telemetry_failed", span=SPAN_INVOKE, exc_info=True)
            return None

    def count(self, counter: Any, attributes: Mapping[str, AttributeValue]) -> None:
        try:
            counter.add(1, attributes)
        except Exception:
            _log.warning("guardrails.telemetry_failed", metric=getattr(counter, "name", "?"),
                         exc_info=True)

    def record(self, histogram: Any, value: float, attributes: Mapping[str, AttributeValue]
               ) -> None:
        try:
            histogram.record(value, attributes)
        except Exception:
            _log.warning("guardrails.telemetry_failed", metric=getattr(histogram, "name", "?"),
                         exc_info=True)


def capture_mode(value: str | None) -> tuple[bool, bool]:
    """(capture on spans, capture in events) from the GenAI content-capture setting.

    ``None`` reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
    Accepts ``true``/``false`` (``true`` means span attributes) and
    ``NO_CONTENT``, ``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``, in any
    case; anything else captures nothing and logs a warning.
    """
    raw = os.environ.get(CAPTURE_ENV, "") if value is None else value
    mode = _CAPTURE_MODES.get(raw.strip().lower())
    if mode is None:
        _log.warning("guardrails.bad_capture_setting", value=raw,
                     allowed="true, false, NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT")
        return False, False
    return mode


def as_text(value: Any) -> str:
    """JSON text of a value for a content attribute (``str`` of it if not JSON)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _safe_exit(manager: Any, *exc_info: Any) -> None:
    try:
        manager.__exit__(*exc_info)
    except Exception:
        _log.warning("guardrails.telemetry_failed", exc_info=True)


def set_attributes(span: trace.Span, attributes: Mapping[str, AttributeValue | None]) -> None:
    """Set the non-``None`` attributes on a recording span; never raises."""
    try:
        if span.is_recording():
            span.set_attributes({k: v for k, v in attributes.items() if v is not None})
    except Exception:
        _log.warning("guardrails.telemetry_failed", exc_info=True)


def bound_log(**fields: Any) -> Any:
    """A structlog logger bound to the current trace and span ids (when recording)."""
    logger = structlog.get_logger("guardrails")
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        fields["trace_id"] = format(context.trace_id, "032x")
        fields["span_id"] = format(context.span_id, "016x")
    return logger.bind(**fields)



def attach_span(span: trace.Span) -> object | None:
    """Make ``span`` current; returns the token for ``end_span``. Never raises."""
    try:
        return context.attach(trace.set_span_in_context(span))
    except Exception:
        _log.warning("guardrails.telemetry_failed", exc_info=True)
        return None


def end_span(span: trace.Span, token: object | None) -> None:
    """Detach and end a span started by ``start_invoke_span``. Never raises."""
    try:
        if token is not None:
            context.detach(token)  # type: ignore[arg-type]
        span.end()
    except Exception:
        _log.warning("guardrails.telemetry_failed", exc_info=True)


def record_failure(span: trace.Span, exc: BaseException) -> None:
    """Mark a span as failed with the exception type (no message: it may hold content)."""
    try:
        span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
        span.set_attribute("error.type", type(exc).__qualname__)
    except Exception:
        _log.warning("guardrails.telemetry_failed", exc_info=True)
