"""Every built-in adapter passes the shared conformance suite (guardrails.conformance)."""

from __future__ import annotations

import adapter_cases
import pytest

from guardrails.conformance import (
    AdapterCase,
    ConformanceError,
    ConformanceSuite,
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
