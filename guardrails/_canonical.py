"""Canonical JSON and the content digests built on it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._errors import ConfigError


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes.

    Keys sorted, no insignificant whitespace, UTF-8, no NaN or infinity. Two
    equal JSON values always give the same bytes, so the bytes can be hashed.
    """
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"value is not plain JSON ({exc}); states, proposals and ledger entries may hold "
            "only dicts with string keys, lists, strings, finite numbers, booleans and null"
        ) from exc
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def state_version(state: Any) -> str:
    """The version id of a model state: the SHA-256 (hex) of its canonical JSON."""
    return sha256_hex(canonical_json(state))
