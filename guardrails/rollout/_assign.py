"""Sticky assignment: a salted hash of the request key against the step's weight.

Every replica computes the same bucket for the same key and salt, and the
buckets a step sends to the candidate contain those of every smaller step, so
a user never flips back to the incumbent as the weight grows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

BUCKETS = 10_000
"""Assignment resolution: a weight is honoured to 0.01 %."""


_from_bytes = int.from_bytes  # one global lookup on the hot path, not a global and an attribute


class Assigner:
    """``arm(metadata) -> True`` when the candidate answers this call (stateless, thread-safe)."""

    __slots__ = ("_cache", "_copy", "_keys", "_threshold")

    CACHE_SIZE = 16_384
    """Keys whose arm is remembered (per step): a repeat caller costs one dict lookup. Small on
    purpose: inserting into a table that fits the CPU cache costs a new key ~0.1 us less than
    one of 100,000 (benchmarks/overhead.py), and a key that fell out only costs a rehash."""

    def __init__(self, salt: str, weight: float, keys: tuple[str, ...]) -> None:
        # The salted hasher is built once; each key hashes a copy of it (copying a keyed
        # BLAKE2b state is cheaper than keying a new one).
        self._copy = hashlib.blake2b(digest_size=8, key=bytes.fromhex(salt)[:64]).copy
        self._threshold = round(weight * BUCKETS / 100.0)
        self._keys = keys
        self._cache: dict[str, bool] = {}

    def bucket(self, key: str) -> int:
        """The key's bucket in ``[0, BUCKETS)``; the same on every replica for the same salt."""
        h = self._copy()
        h.update(key.encode())
        return _from_bytes(h.digest(), "big") % BUCKETS

    def to_candidate(self, metadata: Mapping[str, Any]) -> bool:
        """Whether the candidate answers a call with this request metadata.

        The first of the configured keys present decides; a call without any
        gets a random key (sticky only to itself).
        """
        for name in self._keys:
            value = metadata.get(name)
            if value is not None:
                key = value if type(value) is str else str(value)
                cache = self._cache
                arm = cache.get(key)
                if arm is None:
                    # bucket(), inlined: a method call is a measurable share of the 1 us budget.
                    h = self._copy()
                    h.update(key.encode())
                    arm = _from_bytes(h.digest(), "big") % BUCKETS < self._threshold
                    if len(cache) >= self.CACHE_SIZE:
                        cache.clear()  # cheaper than an LRU; a miss only rehashes
                    cache[key] = arm
                return arm
        # Not a secret: a call without a key only needs its own coin flip.
        return random.random() * BUCKETS < self._threshold
