"""The group-sequential boundary of the sequential non-inferiority test (stdlib ``math`` only).

The anytime-valid e-process of ``_exact`` keeps its guarantee over an
unbounded horizon, and pays for it: a candidate in or near the indifference
zone runs the whole budget, and an equal candidate is accepted late. A
review has a horizon, so this design truncates at ``max_pairs`` pairs and
spends the error there instead (a Wang-Tsiatis boundary on the score
statistic, calibrated by exact computation):

* **Accept** at a look after ``n <= max_pairs`` pairs when the score
  statistic of ``H0: drop >= threshold`` (``_exact._score``, Nam 1997) is at
  most ``-constant * (n / max_pairs) ** (shape - 0.5)`` (from ``min_pairs``
  on), or when the accept-side e-value reaches ``1 / e_alpha`` (which keeps
  an all-agreeing candidate's early acceptance).
* **Guarantee.** ``constant`` is the smallest value (to three decimals,
  rounded up) for which the chance of that acceptance region being entered
  at *any* pair count up to ``max_pairs``, looking after every single pair,
  is at most ``alpha`` at every point of the null's boundary (drop equal to
  the threshold; the discordance rate from 0 to its largest value on a grid
  of 60 points), computed exactly by dynamic programming over the paired
  counts (``benchmarks/group_design.py``, checked again by
  ``tests/test_group_design.py``). Looking after every pair covers every
  schedule of looks: the runner's batches look at a subset of those pair
  counts, which can only enter the region less often, wherever the batch
  boundaries fall and whatever stops the run. No acceptance after
  ``max_pairs``.
* **Futility** (stop and reject): the mirror-image e-value of ``_exact`` as
  before, or, from ``futility_from`` pairs on, a conditional power below
  ``futility_power``: the chance, under a normal approximation, that the
  candidate still crosses the final boundary if from here on it is exactly
  as good as the incumbent. Stopping for futility never accepts, so it
  cannot raise the false-accept rate; it only costs power, which the
  simulation measures. At ``max_pairs`` without acceptance: futile.

Only the thresholds and alphas calibrated in :data:`_CONSTANTS` have a
boundary (:func:`group_boundary` returns ``None`` otherwise, and the caller
keeps the anytime-valid design).
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict

from ._exact import PairCounts, _score

__all__ = ["GroupBoundary", "group_boundary"]

SHAPE = 0.3
"""Wang-Tsiatis shape: 0.5 is Pocock's flat boundary, 0 O'Brien-Fleming's; 0.3 spends
enough early to stop a better candidate soon and keeps most of alpha for the last looks."""
FUTILITY_POWER = 0.4
"""Stop once an equal-from-here candidate would cross with less than this chance."""

# (threshold, alpha) -> constant, by `python benchmarks/group_design.py --calibrate`.
_CONSTANTS: dict[tuple[float, float], float] = {
    (0.05, 0.05): 2.2,
    (0.05, 0.025): 2.469,
    (0.05, 0.01): 2.78,
    (0.1, 0.05): 2.153,
    (0.1, 0.025): 2.416,
    (0.1, 0.01): 2.738,
}

_NORMAL = NormalDist()


class GroupBoundary(BaseModel):
    """The calibrated boundary for one threshold and alpha (see the module doc)."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    alpha: float
    constant: float
    max_pairs: int
    min_pairs: int
    e_alpha: float
    futility_from: int
    shape: float = SHAPE
    futility_power: float = FUTILITY_POWER

    def critical(self, n: int) -> float | None:
        """The score statistic must be at most minus this after ``n`` pairs (None: no look)."""
        if n < self.min_pairs or n > self.max_pairs:
            return None
        return float(self.constant * (n / self.max_pairs) ** (self.shape - 0.5))

    def score(self, counts: PairCounts) -> float:
        return _score(counts.regressions, counts.fixes, counts.n, self.threshold)

    def accepts(self, counts: PairCounts, log_e_accept: float) -> bool:
        """Whether ``counts`` (with the accept-side log e-value) lie in the acceptance region."""
        if counts.n == 0 or counts.n > self.max_pairs:
            return False
        if log_e_accept >= -math.log(self.e_alpha):
            return True
        critical = self.critical(counts.n)
        return critical is not None and self.score(counts) <= -critical

    def conditional_power(self, counts: PairCounts) -> float:
        """Chance of crossing at ``max_pairs`` if every further pair is as good as the incumbent's."""
        n, left = counts.n, self.max_pairs - counts.n
        if left <= 0:
            return 0.0
        if n == 0:
            return 1.0
        estimate = counts.difference
        discordance = (counts.regressions + counts.fixes) / n
        # Variance of one paired difference around the null, floored so an all-agreeing
        # start does not make the future look certain.
        variance = max(discordance - estimate * estimate + self.threshold ** 2, 1e-3)
        surplus = n * self.threshold - (counts.regressions - counts.fixes)
        expected = surplus + left * self.threshold
        needed = self.constant * math.sqrt(self.max_pairs * variance)
        return _NORMAL.cdf((expected - needed) / math.sqrt(left * variance))

    def futile(self, counts: PairCounts) -> bool:
        """Stop and reject: past the last look, or too little chance of crossing it."""
        if counts.n >= self.max_pairs:
            return True
        return (counts.n >= self.futility_from
                and self.conditional_power(counts) < self.futility_power)

    def describe(self) -> dict[str, float | int | str]:
        """The boundary as recorded in a decision's evidence."""
        # threshold and alpha are recorded beside it, in the finding's own evidence.
        return {"kind": "group-sequential (Wang-Tsiatis on the score statistic)",
                **self.model_dump(exclude={"threshold", "alpha"})}


def design_for(threshold: float, alpha: float, constant: float) -> GroupBoundary:
    """The boundary's layout for a threshold and alpha, with a given constant."""
    return GroupBoundary(
        threshold=threshold, alpha=alpha, constant=constant,
        max_pairs=math.ceil(1.2 / threshold ** 2), min_pairs=math.ceil(1.0 / threshold),
        e_alpha=alpha / 4.0, futility_from=math.ceil(0.24 / threshold ** 2))


def group_boundary(threshold: float, alpha: float) -> GroupBoundary | None:
    """The calibrated boundary for this threshold and alpha, or None when none is tabulated."""
    constant = _CONSTANTS.get((round(threshold, 9), round(alpha, 9)))
    if constant is None:
        return None
    return design_for(threshold, alpha, constant)
