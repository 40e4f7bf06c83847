"""Every built-in adapter passes the shared conformance suite (guardrails.conformance)."""

from __future__ import annotations

import adapter_cases
import pytest

import guardrails as gr
from guardrails.conformance import (
    AdapterCase,
    ConformanceError,
    ConformanceSuite,
    check_broken_streams_raise,
    check_stream_close_releases_upstream,
    check_stream_yields_chunks,
    check_unusable_responses_raise,
    run_conformance,
)

ADAPTERS = ["openai", "langchain", "dspy", "sklearn", "river"]


@pytest.fixture(params=ADAPTERS)
def adapter_case(request: pytest.FixtureRequest) -> AdapterCase:
    if request.param == "openai":
        return adapter_cases.openai_case(request.getfixturevalue("openai_server"))
    case: AdapterCase = getattr(adapter_cases, f"{request.param}_case")()
    return case


class TestBuiltInAdapters(ConformanceSuite):
    """Each check of the suite, once per adapter."""


def test_run_conformance_reports_nothing_for_a_conformant_adapter() -> None:
    """The all-at-once runner agrees with the per-check tests."""
    assert run_conformance(adapter_cases.sklearn_case()) == []


def _swallowing_case(**options: object) -> AdapterCase:
    """An adapter that turns an unusable answer into '' (the bug the check exists for)."""
    from guardrails.testing import DictClient

    def make() -> DictClient:
        return DictClient({"default": ""})

    return AdapterCase(name="swallower", make_client=make, requests=["q"], **options)  # type: ignore[arg-type]


def test_an_adapter_returning_empty_text_for_an_unusable_answer_fails_the_suite() -> None:
    """The unusable-response check names the call and what it returned instead of raising."""
    case = _swallowing_case(unusable={"empty text": _swallowing_case().make_client})
    with pytest.raises(ConformanceError, match=r"\[empty text\] invoke\('q'\) returned str ''"):
        check_unusable_responses_raise(case)


def test_an_adapter_raising_an_untyped_error_fails_the_suite() -> None:
    """Raising something else (a ValueError) is named: the typed error is the contract."""
    from guardrails.testing import DictClient

    def broken(state: dict[str, object], request: object) -> object:
        raise ValueError("empty completion")

    case = _swallowing_case(unusable={"no choices": lambda: DictClient({}, broken)})
    with pytest.raises(ConformanceError, match=r"raised ValueError, not guardrails\.Unusable"):
        check_unusable_responses_raise(case)


def test_a_case_without_unusable_clients_fails_the_suite() -> None:
    """A third-party case that gives no unusable clients is told how to give them."""
    with pytest.raises(ConformanceError, match="AdapterCase\\(unusable="):
        check_unusable_responses_raise(_swallowing_case())


# -- the streaming checks -------------------------------------------------------------------


class _Streaming:
    """A DictClient that streams its answer word by word, or however ``items`` says."""

    def __init__(self, answer: str = "four is the answer", items: object = None,
                 as_list: bool = False) -> None:
        from guardrails.testing import DictClient

        self.inner = DictClient({"default": answer})
        self.answer, self.items, self.as_list = answer, items, as_list

    def invoke(self, request: object) -> object:
        return self.inner.invoke(request)  # type: ignore[arg-type]

    def snapshot(self) -> dict[str, object]:
        return self.inner.snapshot()

    def stream(self, request: object) -> object:
        items = self.items if self.items is not None else [
            gr.StreamChunk(text=word) for word in self.answer.split(" ")]
        if self.as_list:
            return list(items)  # type: ignore[call-overload]
        return (item for item in items)  # type: ignore[union-attr]


def _streaming_case(**options: object) -> AdapterCase:
    make = options.pop("make", _Streaming)
    return AdapterCase(name="streamer", make_client=make, requests=["q"], **options)  # type: ignore[arg-type]


def test_a_stream_that_does_not_join_to_the_answer_fails_the_suite() -> None:
    """Dropping the spaces between words is caught: the stream is not invoke's answer."""
    with pytest.raises(ConformanceError, match=r"stream\('q'\) joins to 'fouristheanswer'"):
        check_stream_yields_chunks(_streaming_case())


def test_a_stream_of_other_objects_fails_the_suite() -> None:
    """An item that is neither StreamChunk nor str is named."""
    case = _streaming_case(make=lambda: _Streaming(items=[{"text": "four"}]))
    with pytest.raises(ConformanceError, match=r"yielded a dict; yield guardrails\.StreamChunk"):
        check_stream_yields_chunks(case)


def test_a_stream_the_guard_cannot_close_fails_the_suite() -> None:
    """A list iterator has no close(): the guard could not stop the upstream on a block."""
    case = _streaming_case(make=lambda: _Streaming(as_list=True))
    with pytest.raises(ConformanceError, match="without close\\(\\)"):
        check_stream_close_releases_upstream(case)


def test_a_stream_that_does_not_release_its_upstream_fails_the_suite() -> None:
    """The case's predicate says the upstream is still held after close: the suite says so."""
    case = _streaming_case(stream_release=lambda: (_Streaming(), lambda: False))
    with pytest.raises(ConformanceError, match="did not release the upstream"):
        check_stream_close_releases_upstream(case)


def test_a_broken_stream_that_ends_quietly_fails_the_suite() -> None:
    """A cut-off upstream streamed as a shorter answer (no error) is the bug the check exists
    for."""
    case = _streaming_case(broken_streams={"cut off": lambda: _Streaming(answer="four is")})
    with pytest.raises(ConformanceError, match=r"\[cut off\] stream\('q'\) returned list"):
        check_broken_streams_raise(case)


def test_an_adapter_without_stream_passes_the_streaming_checks_trivially() -> None:
    """The streaming checks apply only to adapters that stream."""
    case = adapter_cases.sklearn_case()
    for check in (check_stream_yields_chunks, check_stream_close_releases_upstream,
                  check_broken_streams_raise):
        check(case)
