"""``drift_budget``: how far a candidate may move from the last human-approved anchor state.

The distance is measured from the anchor (``ReviewContext.anchor_state()``),
never from the parent, so many small accepted steps cannot add up past the
budget: every accepted state lies within it. Distances are in [0, 1] and a
scope's distance is the largest change of any field in it
(``guardrails.drift_distance``): normalised edit distance for text, relative
change for numbers, Jaccard distance for lists of scalars; added, removed or
retyped fields count 1.

Weight blobs (``{"$blob": digest}`` at the same place in both states) are
read from the guard's blob store and compared by relative L2 distance,
``||candidate - anchor|| / ||anchor||`` capped at 1 (a zero anchor: 0 if
unchanged, else 1). A blob may be a NumPy ``.npy`` file (any numeric dtype,
read without pickle) or raw little-endian floats (``raw_dtype``, float64 by
default). Different shapes, non-finite values, a missing blob store or
blob, or unreadable bytes fail the check. ``blobs = "digest"`` compares
digests only (any change counts 1) and does not need NumPy.

``budget`` bounds the whole state except the subtrees listed in
``pointers``, each of which is bounded by its own budget (a listed pointer
nested under another is bounded by both).
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

import guardrails as gr

from ._pointers import MISSING, check_pointer, resolve

_BLOB_KEY = next(iter(gr.blob_ref("")))
_NPY_MAGIC = b"\x93NUMPY"


class DriftBudgetSettings(gr.PluginSettings):
    """Settings of the ``drift_budget`` plugin (give ``budget``, ``pointers`` or both)."""

    budget: float | None = Field(default=None, ge=0.0, le=1.0)
    """Largest distance from the anchor of everything not under a listed pointer."""
    pointers: dict[str, float] = Field(default_factory=dict)
    """Per-pointer budgets in [0, 1], e.g. ``{"/system_prompt" = 0.2}``."""
    blobs: Literal["l2", "digest"] = "l2"
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
    def _some_budget(self) -> DriftBudgetSettings:
        if self.budget is None and not self.pointers:
            raise ValueError("set 'budget', 'pointers' or both")
        return self


class BlobUnreadable(Exception):
    """A blob needed for a distance could not be found or decoded."""


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_BLOB_KEY), str)


def split_blobs(anchor: Any, candidate: Any,
                pairs: list[tuple[str, str]]) -> tuple[Any, Any]:
    """Copies of both values with every blob found at the same place in both replaced by
    ``None`` (so ``drift_distance`` sees no change there); the digest pairs go to ``pairs``."""
    if _is_blob(anchor) and _is_blob(candidate):
        pairs.append((anchor[_BLOB_KEY], candidate[_BLOB_KEY]))
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
    """The ``drift_budget`` update check: one finding per measured scope."""

    name = "drift_budget"

    def __init__(self, settings: DriftBudgetSettings) -> None:
        self.settings = settings
        if settings.blobs == "l2":
            try:
                import numpy  # noqa: F401
            except ImportError:
                raise gr.ConfigError("blobs = 'l2' needs NumPy (pip install numpy); or set "
                                     "blobs = 'digest' to count any change of a blob as 1") from None
        # Blobs are content-addressed, so a pair of digests always has the same distance.
        self._blob_distance = functools.lru_cache(maxsize=256)(self._measure_blobs)

    def __repr__(self) -> str:
        return f"DriftBudget({self.settings!r})"

    def _measure_blobs(self, store: gr.BlobStore | None, anchor: str, candidate: str) -> float:
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
                 blob_store: gr.BlobStore | None = None) -> float:
        """Distance in [0, 1] between two values (blob-aware as configured).

        ``limit`` lets long texts stop early once past it; raises
        ``BlobUnreadable`` when a blob it needs cannot be read.
        """
        if anchor is MISSING and candidate is MISSING:
            return 0.0
        if anchor is MISSING or candidate is MISSING:
            return 1.0
        if self.settings.blobs == "digest":
            return gr.drift_distance(anchor, candidate, limit)
        pairs: list[tuple[str, str]] = []
        anchor, candidate = split_blobs(anchor, candidate, pairs)
        worst = gr.drift_distance(anchor, candidate, limit)
        for a, c in pairs:
            if worst >= 1.0:
                break
            if a != c:
                worst = max(worst, self._blob_distance(blob_store, a, c))
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

    def _finding(self, scope: str, distance: float, budget: float, anchor: str) -> gr.Finding:
        ok = distance <= budget
        where = f"{scope}: " if scope else ""
        return gr.Finding(
            check=self.name, passed=ok,
            message=f"{where}distance from the anchor {distance:.3f} "
                    f"{'within' if ok else 'exceeds'} the drift budget {budget:.3f}",
            evidence={"statistic": "max_field_distance", "pointer": scope,
                      "value": round(distance, 6), "budget": budget, "anchor": anchor})

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        anchor = context.anchor_state()
        if anchor is None:
            return [gr.Finding(check=self.name, passed=False,
                               message="the ledger names no anchor state to measure drift from")]
        version = gr.state_version(anchor)
        candidate = context.candidate_state
        scopes: list[tuple[str, Any, Any, float]] = [
            (pointer, resolve(anchor, pointer), resolve(candidate, pointer), budget)
            for pointer, budget in sorted(self.settings.pointers.items())]
        if self.settings.budget is not None:
            scopes.append(("", self._rest(anchor), self._rest(candidate), self.settings.budget))
        findings = []
        for scope, a, c, budget in scopes:
            try:
                distance = self.distance(a, c, budget, context.blob_store)
            except BlobUnreadable as exc:
                findings.append(gr.Finding(
                    check=self.name, passed=False,
                    message=f"{scope or 'state'}: cannot measure drift: {exc}",
                    evidence={"pointer": scope, "anchor": version}))
                continue
            findings.append(self._finding(scope, distance, budget, version))
        return findings


def build(settings: DriftBudgetSettings) -> gr.PluginParts:
    return gr.PluginParts(checks=[DriftBudget(settings)])


plugin = gr.Plugin(
    name="drift_budget", settings=DriftBudgetSettings, factory=build, provides={"checks"},
    description="Bound the distance of every candidate from the last human-approved anchor, "
                "with per-pointer budgets and relative L2 distance for weight blobs.")
