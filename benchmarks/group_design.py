"""Calibrate and check the group-sequential boundary table (``guardrails/stats/_group.py``) exactly.

For each tabulated threshold and alpha, the chance that a candidate exactly
at the threshold (the null's boundary) is accepted at *any* look up to the
design's last pair count, looking after every pair, is computed by dynamic
programming over the paired counts (regressions, fixes): the probability of
every path that has not yet entered the acceptance region, one pair at a
time, with the mass that enters it added up. That is repeated over a grid of
discordance rates (the nuisance parameter) and the largest value is the
design's size, which must be at most alpha.

``--calibrate`` finds each constant (bisection on a coarse grid of
discordance rates, then raised in steps of 0.001 until the fine grid agrees)
and prints the table to paste into ``_CONSTANTS``. Without it the script
checks the shipped table with the library's own acceptance function (each
column of the region found by bisection on ``GroupBoundary.accepts``), and
exits 1 if any size exceeds alpha. ``GUARDRAILS_BENCH_N`` (short mode, e.g.
12) sets the number of discordance rates per check. Needs numpy (the dev
install has it); the library itself never does.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from guardrails.stats import PairCounts, e_value_against_worse
from guardrails.stats._group import _CONSTANTS, GroupBoundary, design_for

TABLE = [(0.05, 0.05), (0.05, 0.025), (0.05, 0.01), (0.1, 0.05), (0.1, 0.025), (0.1, 0.01)]


def discordance_grid(threshold: float, points: int) -> list[float]:
    """Smaller-rate values x (pi_fix = x, pi_regress = x + threshold), even and dense near 0."""
    top = (1.0 - threshold) / 2.0
    half = max(2, points // 2)
    even = [top * k / (half - 1) for k in range(half)]
    dense = [top * (k / (points - half)) ** 2 for k in range(1, points - half + 1)]
    return sorted(set(even + dense))


def _edges(n: int, ok: Callable[[int, int], bool]) -> np.ndarray:
    """For each fix count c, the largest regression count b with ``ok(b, c)`` (-1: none).

    Every region here only grows when a regression becomes a fix (the score
    falls, the e-value rises), so each column is ``b <= edge``: bisection.
    """
    edges = np.full(n + 1, -1, dtype=np.int64)
    for c in range(n + 1):
        if not ok(0, c):
            continue
        lo, hi = 0, n - c
        if ok(hi, c):
            edges[c] = hi
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid, c) else (lo, mid)
        edges[c] = lo
    return edges


def accept_edges(design: GroupBoundary, n: int) -> np.ndarray:
    """The acceptance region after n pairs, from the library's own ``accepts``."""
    def ok(b: int, c: int) -> bool:
        counts = PairCounts(n=n, regressions=b, fixes=c)
        return design.accepts(counts, e_value_against_worse(counts, design.threshold))
    return _edges(n, ok)


def e_edges(design: GroupBoundary, n: int) -> np.ndarray:
    """The e-value part of the region (it does not depend on the constant)."""
    level = -math.log(design.e_alpha)

    def ok(b: int, c: int) -> bool:
        counts = PairCounts(n=n, regressions=b, fixes=c)
        return e_value_against_worse(counts, design.threshold) >= level
    return _edges(n, ok)


def fast_edges(design: GroupBoundary, n: int, e_part: np.ndarray) -> np.ndarray:
    """The whole region from a vectorized score and the e-value part (used while
    calibrating; the check uses :func:`accept_edges` on the library itself)."""
    critical = design.critical(n)
    if critical is None:
        return e_part
    t = design.threshold
    b = np.arange(n + 1, dtype=float)[:, None]
    c = np.arange(n + 1, dtype=float)[None, :]
    a = n - b - c
    big = b * (1.0 - t) + c * (1.0 - 3.0 * t) - 2.0 * a * t
    x = (big + np.sqrt(np.maximum(big * big + 8.0 * n * c * t * (1.0 - t), 0.0))) / (4.0 * n)
    variance = 2.0 * np.clip(x, 0.0, (1.0 - t) / 2.0) + t - t * t
    region = ((b - c - n * t) <= -critical * np.sqrt(n * variance)) & (a >= 0)
    has = region.any(axis=0)
    last = n - np.argmax(region[::-1, :], axis=0)
    return np.maximum(e_part, np.where(has, last, -1))


def size_at(design: GroupBoundary, edges: list[np.ndarray], x: float) -> float:
    """P(the region is entered at some n <= max_pairs) for pi_fix = x, pi_regress = x + t."""
    pb, pc = x + design.threshold, x
    pa = 1.0 - pb - pc
    size = design.max_pairs + 2
    mass = np.zeros((size, size))
    mass[0, 0] = 1.0
    rows = np.arange(size)[:, None]
    entered = 0.0
    for n in range(1, design.max_pairs + 1):
        nxt = pa * mass
        nxt[1:, :] += pb * mass[:-1, :]
        nxt[:, 1:] += pc * mass[:, :-1]
        mass = nxt
        edge = edges[n - 1]
        inside = rows[: n + 1] <= edge[None, :]
        block = mass[: n + 1, : n + 1]
        entered += float(block[inside].sum())
        block[inside] = 0.0
    return entered


def worst_size(design: GroupBoundary, edges: list[np.ndarray],
               xs: list[float]) -> tuple[float, float]:
    sizes = [(size_at(design, edges, x), x) for x in xs]
    return max(sizes)


def calibrate(threshold: float, alpha: float, points: int) -> float:
    probe = design_for(threshold, alpha, 1.0)
    e_parts = [e_edges(probe, n) for n in range(1, probe.max_pairs + 1)]

    def size(constant: float, xs: list[float]) -> float:
        design = design_for(threshold, alpha, constant)
        edges = [fast_edges(design, n, e_parts[n - 1]) for n in range(1, design.max_pairs + 1)]
        return worst_size(design, edges, xs)[0]

    coarse = discordance_grid(threshold, 10)
    lo, hi = 1.0, 4.0
    while hi - lo > 0.0005:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if size(mid, coarse) > alpha else (lo, mid)
    constant = math.ceil(hi * 1000) / 1000
    fine = discordance_grid(threshold, points)
    while size(constant, fine) > alpha:
        constant = round(constant + 0.001, 3)
    return constant


def check(threshold: float, alpha: float, constant: float, points: int) -> tuple[float, float]:
    design = design_for(threshold, alpha, constant)
    edges = [accept_edges(design, n) for n in range(1, design.max_pairs + 1)]
    return worst_size(design, edges, discordance_grid(threshold, points))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate", action="store_true", help="recompute the constants")
    args = parser.parse_args()
    points = int(os.environ.get("GUARDRAILS_BENCH_N", "60"))
    table = TABLE if args.calibrate or points >= 60 else TABLE[3:4]
    failed = False
    for threshold, alpha in table:
        started = time.perf_counter()
        if args.calibrate:
            constant = calibrate(threshold, alpha, points)
            print(f"    ({threshold}, {alpha}): {constant},")
            continue
        constant = _CONSTANTS[(threshold, alpha)]
        worst, at = check(threshold, alpha, constant, points)
        design = design_for(threshold, alpha, constant)
        failed |= worst > alpha
        print(f"threshold {threshold:g}, alpha {alpha:g}: constant {constant}, "
              f"{design.max_pairs} pairs, largest size {worst:.5f} at pi_fix {at:.4f} "
              f"over {points} discordance rates ({time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
