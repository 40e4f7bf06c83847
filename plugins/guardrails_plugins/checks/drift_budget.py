"""``drift_budget`` (deprecated since 0.2, removed in 0.3): the core's drift budget as a plugin.

The drift budget is a frozen constraint: configure it as ``[constraints]
drift_budget``, ``drift_pointers`` and ``drift_blobs`` (or
``gr.FrozenConstraints(drift_budget=..., drift_pointers=..., drift_blobs=...)``).
This plugin still works and builds the same check (``gr.DriftBudget``), with a
``DeprecationWarning`` naming that replacement. What it measures:

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

import warnings
from typing import Literal

import structlog
from pydantic import Field, field_validator, model_validator

import guardrails as gr

from ._pointers import check_pointer

REPLACEMENT = ("the drift_budget plugin is deprecated and goes away in 0.3: set [constraints] "
               "drift_budget (and drift_pointers, drift_blobs = \"l2\") instead")


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


DriftBudget = gr.DriftBudget


def build(settings: DriftBudgetSettings) -> gr.PluginParts:
    warnings.warn(REPLACEMENT, DeprecationWarning, stacklevel=2)
    structlog.get_logger(__name__).warning("guardrails.deprecated", plugin="drift_budget",
                                           replacement=REPLACEMENT)
    return gr.PluginParts(checks=[gr.DriftBudget(gr.DriftSettings(**settings.model_dump()))])


plugin = gr.Plugin(
    name="drift_budget", settings=DriftBudgetSettings, factory=build, provides={"checks"},
    description="(deprecated: use [constraints] drift_budget) Bound the distance of every "
                "candidate from the last human-approved anchor, "
                "with per-pointer budgets and relative L2 distance for weight blobs.")
