"""Distance of a state from the anchor state a human last approved."""

from __future__ import annotations

import math
from typing import Any

from ..blobs import BLOB_KEY


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, giving up (returning ``limit + 1``) once it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and BLOB_KEY in value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def drift_distance(anchor: Any, candidate: Any, limit: float = 1.0) -> float:
    """How far ``candidate`` is from ``anchor``, in [0, 1]: the largest change of any field.

    Text: edit distance over the longer length. Numbers: relative change.
    Lists of scalars: share of items not in both (Jaccard distance). Blobs,
    type changes, added or removed keys: 1. Taking the maximum means no field
    may move farther from the anchor than the budget, however many small
    steps led there. ``limit`` lets long texts stop early once past it.
    """
    if isinstance(anchor, bool) or isinstance(candidate, bool):
        return 0.0 if anchor is candidate else 1.0
    if _is_blob(anchor) or _is_blob(candidate):
        return 0.0 if anchor == candidate else 1.0
    if isinstance(anchor, dict) and isinstance(candidate, dict):
        worst = 0.0
        for key in anchor.keys() | candidate.keys():
            if key not in anchor or key not in candidate:
                return 1.0
            worst = max(worst, drift_distance(anchor[key], candidate[key], limit))
        return worst
    if isinstance(anchor, list) and isinstance(candidate, list):
        if all(map(_scalar, anchor)) and all(map(_scalar, candidate)):
            a, b = set(map(repr, anchor)), set(map(repr, candidate))
            union = a | b
            return len(a ^ b) / len(union) if union else 0.0
        if len(anchor) != len(candidate):
            return 1.0
        return max((drift_distance(x, y, limit) for x, y in zip(anchor, candidate, strict=True)),
                   default=0.0)
    if isinstance(anchor, str) and isinstance(candidate, str):
        longest = max(len(anchor), len(candidate))
        if longest == 0:
            return 0.0
        return min(1.0, _edit_distance(anchor, candidate, math.ceil(limit * longest)) / longest)
    if isinstance(anchor, int | float) and isinstance(candidate, int | float):
        scale = max(abs(anchor), abs(candidate))
        return 0.0 if scale == 0 else min(1.0, abs(anchor - candidate) / scale)
    return 0.0 if anchor == candidate and type(anchor) is type(candidate) else 1.0
