"""Fixtures for plugin tests: fake entry points for fault injection."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Register extra ``guardrails.plugins`` entry points (name, "module:attr") for one test."""
    extra: list[importlib.metadata.EntryPoint] = []
    original = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        found = list(original(**params))
        if params.get("group") == "guardrails.plugins":
            found.extend(extra)
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    def add(name: str, value: str) -> None:
        extra.append(importlib.metadata.EntryPoint(name=name, value=value,
                                                   group="guardrails.plugins"))

    yield add
