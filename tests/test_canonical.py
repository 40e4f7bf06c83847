"""Canonical JSON and state versions."""

from __future__ import annotations

import hashlib
import math

import pytest

import guardrails as gr


def test_keys_are_sorted_without_whitespace() -> None:
    """Canonical JSON sorts keys at every level and drops insignificant whitespace."""
    assert gr.canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}}) == (
        b'{"a":{"c":null,"d":[1,2]},"b":1}'
    )


def test_non_ascii_is_utf8_not_escaped() -> None:
    """Non-ASCII text is written as UTF-8 bytes, not as \\u escapes."""
    assert gr.canonical_json({"k": "café"}) == '{"k":"café"}'.encode()


def test_equal_values_give_equal_bytes() -> None:
    """Two equal JSON values built in a different key order give the same bytes."""
    first = {"x": 1, "y": [True, None], "z": {"p": "q", "a": 2}}
    second = {"z": {"a": 2, "p": "q"}, "y": [True, None], "x": 1}
    assert gr.canonical_json(first) == gr.canonical_json(second)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    """NaN and infinities are not JSON and raise ConfigError."""
    with pytest.raises(gr.ConfigError, match="not plain JSON"):
        gr.canonical_json({"x": value})


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes"])
def test_non_json_objects_are_rejected(value: object) -> None:
    """Values JSON cannot represent raise ConfigError saying what a state may hold."""
    with pytest.raises(gr.ConfigError, match="only dicts with string keys"):
        gr.canonical_json({"x": value})


def test_state_version_is_sha256_of_canonical_json() -> None:
    """state_version is the hex SHA-256 of the canonical JSON bytes."""
    state = {"prompt": "hi", "n": 3}
    assert gr.state_version(state) == hashlib.sha256(gr.canonical_json(state)).hexdigest()


@pytest.mark.parametrize(("a", "b"), [(1, True), (1, 1.0), (0, False), (None, False), ("1", 1)])
def test_state_version_distinguishes_json_types(a: object, b: object) -> None:
    """Values Python calls equal but JSON does not (1, True, 1.0) get different versions."""
    assert gr.state_version({"v": a}) != gr.state_version({"v": b})
