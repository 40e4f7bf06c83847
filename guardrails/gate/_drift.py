"""Distance of a state from the anchor state a human last approved, and the drift budget.

NumPy is imported only when blobs are compared by L2 distance.
"""

from __future__ import annotations

import copy
import functools
import io
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import jsonpointer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._canonical import state_version
from .._decision import Finding
from .._errors import ConfigError
from ..blobs import BLOB_KEY, BlobStore

if TYPE_CHECKING:
    from ._checks import ReviewContext

_NPY_MAGIC = b"\x93NUMPY"


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


class DriftSettings(BaseModel):
    """What ``DriftBudget`` bounds (give ``budget``, ``pointers`` or both)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: float | None = Field(default=None, ge=0.0, le=1.0)
    """Largest distance from the anchor of everything not under a listed pointer."""
    pointers: dict[str, float] = Field(default_factory=dict)
    """Per-pointer budgets in [0, 1], e.g. ``{"/system_prompt": 0.2}``."""
    blobs: Literal["l2", "digest"] = "digest"
    """How weight blobs are compared: relative L2 distance (needs NumPy) or digest only."""
    raw_dtype: Literal["float64", "float32"] = "float64"
    """How to read a blob that is not an ``.npy`` file: raw little-endian floats."""

    @field_validator("pointers")
    @classmethod
    def _pointers(cls, pointers: dict[str, float]) -> dict[str, float]:
        for pointer, budget in pointers.items():
            if pointer == "":
                raise ValueError("pointer '' is the whole state; use 'budget' for it")
            check_pointer(pointer)
            if not 0.0 <= budget <= 1.0:
                raise ValueError(f"the budget of {pointer!r} is {budget!r}; give a number in "
                                 "[0, 1]")
        return pointers

    @model_validator(mode="after")
    def _some_budget(self) -> DriftSettings:
        if self.budget is None and not self.pointers:
            raise ValueError("set 'budget', 'pointers' or both")
        return self


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()
"""Sentinel for a pointer that resolves to nothing."""


def check_pointer(pointer: str) -> str:
    """``pointer`` if it is a JSON Pointer, else ``ValueError`` saying how to write one."""
    try:
        jsonpointer.JsonPointer(pointer)
    except jsonpointer.JsonPointerException as exc:
        raise ValueError(f"{pointer!r} is not a JSON Pointer (RFC 6901): {exc}; write '/key/0', "
                         "escaping '~' as '~0' and '/' as '~1'") from None
    return pointer


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``document``, or ``MISSING``."""
    return jsonpointer.resolve_pointer(document, pointer, MISSING)


class BlobUnreadable(Exception):
    """A blob needed for a distance could not be found or decoded."""


def split_blobs(anchor: Any, candidate: Any,
                pairs: list[tuple[str, str]]) -> tuple[Any, Any]:
    """Copies of both values with every blob found at the same place in both replaced by
    ``None`` (so ``drift_distance`` sees no change there); the digest pairs go to ``pairs``."""
    if _is_blob(anchor) and _is_blob(candidate):
        pairs.append((anchor[BLOB_KEY], candidate[BLOB_KEY]))
        return None, None
    if isinstance(anchor, dict) and isinstance(candidate, dict):
        new_anchor, new_candidate = dict(anchor), dict(candidate)
        for key in anchor.keys() & candidate.keys():
            new_anchor[key], new_candidate[key] = split_blobs(anchor[key], candidate[key], pairs)
        return new_anchor, new_candidate
    if isinstance(anchor, list) and isinstance(candidate, list) and len(anchor) == len(candidate):
        split = [split_blobs(a, c, pairs) for a, c in zip(anchor, candidate, strict=True)]
        return [a for a, _ in split], [c for _, c in split]
    return anchor, candidate


def decode_weights(data: bytes, raw_dtype: str = "float64") -> Any:
    """A float64 NumPy array from ``.npy`` bytes or raw little-endian floats."""
    import numpy as np

    if data.startswith(_NPY_MAGIC):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise BlobUnreadable(f"not a readable .npy file ({exc})") from None
        if array.dtype.kind not in "fiu":
            raise BlobUnreadable(f"holds {array.dtype} values, not numbers")
        return array.astype(np.float64)
    dtype = np.dtype("<f8" if raw_dtype == "float64" else "<f4")
    if len(data) % dtype.itemsize:
        raise BlobUnreadable(f"has {len(data)} bytes, not a whole number of {raw_dtype} values")
    return np.frombuffer(data, dtype=dtype).astype(np.float64)


def relative_l2(anchor: Any, candidate: Any) -> float:
    """``||candidate - anchor|| / ||anchor||`` in [0, 1]; 1 for other shapes or non-finite values."""
    import numpy as np

    if anchor.shape != candidate.shape:
        return 1.0
    if not (np.isfinite(anchor).all() and np.isfinite(candidate).all()):
        return 1.0
    change = float(np.linalg.norm(candidate - anchor))
    scale = float(np.linalg.norm(anchor))
    if scale == 0.0:
        return 0.0 if change == 0.0 else 1.0
    return min(1.0, change / scale)


class DriftBudget:
    """How far a candidate may move from the last human-approved anchor: one finding per scope.

    The one drift budget of the gate, configured as ``FrozenConstraints(drift_budget=...,
    drift_pointers=..., drift_blobs=...)`` (``[constraints]`` in ``guardrails.toml``).
    The distance is measured from the anchor, never from the parent, so many small
    accepted steps cannot add up past the budget. A scope's distance is the largest
    change of any field in it (``drift_distance``). Weight blobs at the same place in
    both states are compared by relative L2 distance when ``blobs="l2"`` (needs NumPy;
    ``.npy`` files never unpickled, or raw little-endian floats of ``raw_dtype``), by
    digest otherwise. ``budget`` bounds the state except the ``pointers`` subtrees, each
    bounded by its own budget (a listed pointer under another is bounded by both).
    """

    name = "drift_budget"

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        if settings.blobs == "l2":
            try:
                import numpy  # noqa: F401
            except ImportError:
                raise ConfigError("blobs = 'l2' needs NumPy (pip install numpy); or set "
                                     "blobs = 'digest' to count any change of a blob as 1") from None
        # Blobs are content-addressed, so a pair of digests always has the same distance.
        self._blob_distance = functools.lru_cache(maxsize=256)(self._measure_blobs)

    def __repr__(self) -> str:
        return f"DriftBudget({self.settings!r})"

    def _measure_blobs(self, store: BlobStore | None, anchor: str, candidate: str) -> float:
        if store is None:
            raise BlobUnreadable("the guard has no blob store to read weight blobs from")
        arrays = []
        for digest in (anchor, candidate):
            try:
                data = store.get(digest)
            except KeyError:
                raise BlobUnreadable(f"blob {digest} is not in the blob store") from None
            try:
                arrays.append(decode_weights(data, self.settings.raw_dtype))
            except BlobUnreadable as exc:
                raise BlobUnreadable(f"blob {digest} {exc}") from None
        return relative_l2(arrays[0], arrays[1])

    def distance(self, anchor: Any, candidate: Any, limit: float = 1.0,
                 blob_store: BlobStore | None = None) -> float:
        """Distance in [0, 1] between two values (blob-aware as configured).

        ``limit`` lets long texts stop early once past it; raises
        ``BlobUnreadable`` when a blob it needs cannot be read.
        """
        if anchor is MISSING and candidate is MISSING:
            return 0.0
        if anchor is MISSING or candidate is MISSING:
            return 1.0
        if self.settings.blobs == "digest":
            return drift_distance(anchor, candidate, limit)
        pairs: list[tuple[str, str]] = []
        anchor, candidate = split_blobs(anchor, candidate, pairs)
        worst = drift_distance(anchor, candidate, limit)
        for a, c in pairs:
            if worst >= 1.0:
                break
            if a != c:
                worst = max(worst, self._blob_distance(blob_store, a, c))  # type: ignore[arg-type]
        return worst

    def _rest(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` without the subtrees that have their own budget."""
        rest = copy.deepcopy(state)
        # Deepest first, so removing a parent never hides a child still to remove.
        for pointer in sorted(self.settings.pointers, key=lambda p: p.count("/"), reverse=True):
            head, _, last = pointer.rpartition("/")
            parent = resolve(rest, head)
            key = last.replace("~1", "/").replace("~0", "~")
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
                parent[int(key)] = None  # keep the other items' positions
        return rest

    def _finding(self, scope: str, distance: float, budget: float, anchor: str) -> Finding:
        ok = distance <= budget
        where = f"{scope}: " if scope else ""
        return Finding(
            check=self.name, passed=ok,
            message=f"{where}distance from the anchor {distance:.3f} "
                    f"{'within' if ok else 'exceeds'} the drift budget {budget:.3f}",
            evidence={"statistic": "max_field_distance", "pointer": scope,
                      "value": round(distance, 6), "budget": budget, "anchor": anchor})

    def __call__(self, context: ReviewContext) -> Iterable[Finding]:
        """The update-check form: measure ``context``'s candidate against its anchor."""
        return self.measure(context.anchor_state(), context.candidate_state, context.blob_store)

    def measure(self, anchor: dict[str, Any] | None, candidate: dict[str, Any],
                blob_store: BlobStore | None) -> list[Finding]:
        """One finding per scope; a failed one when there is no anchor or a blob is unreadable."""
        if anchor is None:
            return [Finding(check=self.name, passed=False,
                            message="the ledger names no anchor state to measure drift from")]
        version = state_version(anchor)
        scopes: list[tuple[str, Any, Any, float]] = [
            (pointer, resolve(anchor, pointer), resolve(candidate, pointer), budget)
            for pointer, budget in sorted(self.settings.pointers.items())]
        if self.settings.budget is not None:
            scopes.append(("", self._rest(anchor), self._rest(candidate), self.settings.budget))
        findings = []
        for scope, a, c, budget in scopes:
            try:
                distance = self.distance(a, c, budget, blob_store)
            except BlobUnreadable as exc:
                findings.append(Finding(
                    check=self.name, passed=False,
                    message=f"{scope or 'state'}: cannot measure drift: {exc}",
                    evidence={"pointer": scope, "anchor": version}))
                continue
            findings.append(self._finding(scope, distance, budget, version))
        return findings
