"""Run the self-training digits demo with its traces exported over OTLP/HTTP.

The library itself depends on the OpenTelemetry API only; this script is the
application, so it picks the SDK and the OTLP/HTTP exporter (the ``tracing``
and ``demo`` extras: ``pip install -e '.[demo,tracing]'``). Point it at any
OTLP/HTTP receiver, for example a local MLflow or Phoenix (see README.md here)::

    python examples/tracing/demo_with_otlp.py \\
        --endpoint http://127.0.0.1:5000/v1/traces --header x-mlflow-experiment-id=1

By default only the reviews are exported (one ``guardrails.review`` trace per
proposal, with its stages and canary events); ``--with-invokes`` also exports
one ``guardrails.invoke`` trace per served call, several thousand for the demo.
The spans are flushed before the script exits, and it prints the trace id of
every review. It exits with status 1 when the receiver refused or could not
be reached for any batch of spans.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from guardrails_plugins.demos.digits import DEFAULT_SEED, run_demo
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)

OTLP_TRACES_PATH = "/v1/traces"
# Span and attribute names, as documented in docs/telemetry.md.
SPAN_INVOKE, SPAN_REVIEW = "guardrails.invoke", "guardrails.review"
ATTR_PROPOSAL_KIND = "guardrails.proposal.kind"
ATTR_VERDICT = "guardrails.verdict"
ATTR_DECIDING_CHECK = "guardrails.deciding_check"


class DropInvokes(Sampler):
    """Samples every root span except ``guardrails.invoke`` (per-call traces)."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None
                      ) -> SamplingResult:
        if name == SPAN_INVOKE:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                       trace_state)

    def get_description(self) -> str:
        return "DropInvokes"


@dataclass(frozen=True)
class Review:
    trace_id: str
    kind: str
    verdict: str
    deciding_check: str


class ReviewRecorder(SpanProcessor):
    """Remembers the trace id and decision of every finished ``guardrails.review`` span."""

    def __init__(self) -> None:
        self.reviews: list[Review] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name != SPAN_REVIEW or span.context is None:
            return
        attributes = dict(span.attributes or {})
        review = Review(format(span.context.trace_id, "032x"),
                        str(attributes.get(ATTR_PROPOSAL_KIND, "-")),
                        str(attributes.get(ATTR_VERDICT, "-")),
                        str(attributes.get(ATTR_DECIDING_CHECK, "-")))
        with self._lock:
            self.reviews.append(review)


class CountingExporter(SpanExporter):
    """Wraps an exporter and counts the spans it delivered and the batches it failed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed_batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed_batches += 1
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def traces_url(endpoint: str) -> str:
    """The OTLP traces URL: ``endpoint`` as given, or with ``/v1/traces`` if it has no path."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {endpoint!r}")
    return endpoint.rstrip("/") + OTLP_TRACES_PATH if parts.path in ("", "/") else endpoint


def header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", type=traces_url, required=True,
                        help="OTLP/HTTP traces URL, e.g. http://127.0.0.1:5000/v1/traces "
                             "(a URL without a path gets /v1/traces)")
    parser.add_argument("--header", type=header, action="append", default=[], metavar="KEY=VALUE",
                        help="an HTTP header for every export, e.g. x-mlflow-experiment-id=1 "
                             "(repeatable)")
    parser.add_argument("--service-name", default="guardrails-demo",
                        help="the service.name resource attribute")
    parser.add_argument("--project", help="Phoenix project: the resource attribute "
                                          "openinference.project.name (without it Phoenix "
                                          "files the spans under 'default')")
    parser.add_argument("--with-invokes", action="store_true",
                        help="also export one trace per served call (thousands)")
    parser.add_argument("--workdir", default=".guardrails", help="where the demo leaves its ledger")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for each export request")
    parser.add_argument("--quiet", action="store_true", help="print only the review trace ids")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # An application configures logging; the demo only wants warnings from the library.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    resource_attributes = {"service.name": args.service_name}
    if args.project:
        resource_attributes["openinference.project.name"] = args.project
    sampler = ALWAYS_ON if args.with_invokes else ParentBased(DropInvokes())
    provider = TracerProvider(resource=Resource.create(resource_attributes), sampler=sampler)
    exporter = CountingExporter(OTLPSpanExporter(endpoint=args.endpoint, headers=dict(args.header),
                                                 timeout=args.timeout))
    recorder = ReviewRecorder()
    provider.add_span_processor(recorder)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # The demo builds its Guard without a tracer_provider, so the guard uses the global one.
    trace.set_tracer_provider(provider)

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run_demo(args.workdir, rounds=args.rounds, seed=args.seed,
             echo=(lambda _line: None) if args.quiet else print)
    flushed = provider.force_flush(int(args.timeout * 1000) * 3)
    provider.shutdown()

    if not args.quiet:
        print(f"\ndone in {time.perf_counter() - started:.1f} s; exported {exporter.exported} spans "
              f"to {args.endpoint}")
        print(f"{'trace id':<32}  {'kind':<8} {'verdict':<12} deciding check")
    for review in recorder.reviews:
        if args.quiet:
            print(review.trace_id)
        else:
            print(f"{review.trace_id:<32}  {review.kind:<8} {review.verdict:<12} "
                  f"{review.deciding_check}")
    if exporter.failed_batches or not flushed:
        print(f"export failed: {exporter.failed_batches} batch(es) not delivered"
              f"{'' if flushed else ', flush timed out'}; is the receiver running at "
              f"{args.endpoint}?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
