"""Fixtures for the adapter tests: the local OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adapter_cases import quiz_responder
from guardrails_plugins.adapters.openai_testing import FakeOpenAIServer


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAIServer]:
    """One fake OpenAI-compatible server on 127.0.0.1 for the session (the quiz model)."""
    with FakeOpenAIServer(quiz_responder) as server:
        yield server


@pytest.fixture
def fresh_server() -> Iterator[FakeOpenAIServer]:
    """A server of its own, for tests that inject faults or read the requests."""
    with FakeOpenAIServer(quiz_responder) as server:
        yield server
