"""Every built-in adapter passes the shared conformance suite (guardrails.conformance)."""

from __future__ import annotations

import adapter_cases
import pytest

from guardrails.conformance import AdapterCase, ConformanceSuite, run_conformance

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
