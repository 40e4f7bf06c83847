"""Exact and anytime-valid statistics for the update gate (stdlib ``math`` only).

Everything here is pure Python so the gate has no numeric dependency at run
time; ``tests/test_stats.py`` checks the distribution functions against SciPy.

Notation used throughout. Candidate and incumbent answer the same ``n``
cases (paired outcomes). ``b`` counts the cases the incumbent passes and the
candidate fails (regressions), ``c`` the cases the candidate passes and the
incumbent fails (fixes); the other ``n - b - c`` agree. The population
quantity judged is the pass-rate drop ``delta = p_incumbent - p_candidate =
pi_b - pi_c``, estimated by ``(b - c) / n``: it is judged on *all* paired
cases, so a candidate that agrees everywhere is accepted once ``n`` is large
enough to exclude the margin.

Methods, and why:

* **Binomial distribution**: Loader's saddle-point form of the probability
  mass (Stirling-error and deviance terms instead of differences of large
  ``lgamma`` values, so the relative error stays near 1e-14 for n up to
  1e5 and beyond), summed from the requested point outward in log space, so
  tails far below the smallest float are still returned as logarithms.
* **Clopper-Pearson**: the exact one-sided bound, found by bisection on the
  binomial CDF (monotone in p, so bisection always converges; no incomplete
  beta continued fraction to fail at extreme parameters). For zero failures
  it is ``1 - alpha ** (1 / n)``, the "rule of three" (about 3/n at 95 %).
* **Fixed-n paired non-inferiority** (:func:`paired_noninferiority`): an
  exact unconditional test of ``H0: delta >= threshold``. The statistic is
  the score statistic with the variance at the restricted maximum-likelihood
  estimate (Nam 1997; Tango 1998). Its p-value is the supremum of the null
  probability of a statistic at least as extreme over the nuisance parameter
  (the discordance rate ``s = pi_b + pi_c``), restricted to a ``1 - gamma``
  Clopper-Pearson interval for ``s`` with ``gamma`` added back (Berger and
  Boos 1994). The restriction is what lets a candidate that agrees on every
  case pass at about 3/margin cases (59 at margin 0.05, alpha 0.05, where no
  valid test can do it in fewer than 59): without it the supremum sits at
  discordance rates the data already rule out. Because the
  rejection region only grows when a regression is turned into a fix, at
  each discordance rate the null probability is largest at the smallest
  drop the null allows, so the supremum over the whole two-dimensional null
  is a one-dimensional supremum (taken on a grid refined by golden-section
  search). That is what makes the test exact rather than approximate; the
  tests check its size by enumerating every outcome for small n. Valid only
  for a sample size fixed in advance.
* **Sequential design** (:class:`SequentialNonInferiority`): an anytime-valid
  test, chosen over a group-sequential alpha-spending design because the
  runner's looks are not known in advance (batches end when the concurrent
  calls come back; a run may be cut short) and because it needs no normal
  approximation. Each paired difference ``D`` in {-1, 0, 1} is a bet: the
  wealth ``prod(1 + lam * (threshold - D))`` is a non-negative
  supermartingale whenever the true drop is at least ``threshold``, so by
  Ville's inequality the probability that it *ever* reaches ``1 / alpha`` is
  at most ``alpha``, however often it is looked at and whenever the run
  stops. The bet size is not tuned to one alternative: the wealth is a
  mixture over a fixed grid of bet sizes (a discrete-prior mixture
  likelihood ratio, as in Robbins' mixture SPRT), 40 % of its prior mass on
  the largest admissible bet, which is the bet that wins fastest when the
  candidate agrees with the incumbent everywhere. A mixture of
  supermartingales is a supermartingale, and the mixture depends on the
  counts only, so the verdict does not depend on the order of the cases.
  Looks must be taken where every case sent so far has an outcome (a batch
  boundary, timeouts included), never on whichever answers came back first:
  a slow failure must not be missing from an early look.
  The mirror-image wealth against ``delta <= futility threshold`` (a grid of
  its own: agreeing cases cannot grow the all-in bet there, so it gets a small share)
  stops early for rejection; the two thresholds bound an indifference zone in which
  either verdict is allowed, as in Wald's SPRT. The price of anytime
  validity: an all-agreeing candidate needs about 3.5/margin cases (71 at
  margin 0.05) instead of the fixed-n test's 59. In exchange, on the
  scenario mix of ``benchmarks/decision_efficiency.py`` it uses about a
  third fewer capability pairs than the fixed-n exact test of the same
  alpha and power, because clear regressions stop after a few dozen cases.
* **Sampling assumption** (both designs): the cases run are an independent
  random sample of the population the pass rates describe; for the
  sequential design they must also be run in random order (a seeded
  shuffle), or an early look sees a biased part of the suite.
* **Slices**: intersection-union, every slice must pass its own level-alpha
  test, which needs no multiplicity adjustment (Berger 1982).

A caller may rely on: every function validates its arguments and raises
``ValueError`` (``ConfigError`` for design parameters) rather than returning
NaN; probabilities are in [0, 1]; bounds are conservative (never narrower
than the exact bound, up to floating-point rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .._errors import ConfigError

__all__ = [
    "PairCounts",
    "PairedTestResult",
    "SequentialNonInferiority",
    "SequentialState",
    "SequentialVerdict",
    "binom_cdf",
    "binom_logcdf",
    "binom_logpmf",
    "binom_logsf",
    "binom_pmf",
    "binom_sf",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "e_value_against_better",
    "e_value_against_worse",
    "exact_paired_p_value",
    "exact_paired_upper_bound",
    "min_cases_for_failure_bound",
    "min_cases_to_accept",
    "paired_noninferiority",
    "sequential_lower_bound",
    "sequential_upper_bound",
    "slices_noninferior",
]

_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LN_2PI = math.log(2.0 * math.pi)
# Relative size below which a further term cannot change a double-precision sum.
_NEGLIGIBLE = 1e-17


# --------------------------------------------------------------------------------------------
# argument checks


def _check_count(name: str, value: int) -> int:
    # bool is an int subclass; True as a count is always a caller's bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _check_alpha(value: float, name: str = "alpha") -> float:
    value = float(value)
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
    return value


def _check_threshold(value: float) -> float:
    value = float(value)
    if not -1.0 < value < 1.0:
        raise ConfigError(f"the pass-rate threshold must be in (-1, 1), got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# binomial distribution


def _stirlerr(n: int) -> float:
    """log(n!) - log(sqrt(2 pi n) (n/e)^n) for an integer n >= 1."""
    if n <= 15:
        # Small enough that lgamma's absolute error (~1e-15) is harmless.
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _LN_SQRT_2PI
    nn = float(n) * n
    # Asymptotic series; at n = 16 the first omitted term is below 1e-16.
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - (1 / 1188) / nn) / nn) / nn) / nn) / n


def _bd0(x: float, m: float) -> float:
    """x log(x/m) + m - x, computed without cancellation when x is close to m."""
    if abs(x - m) < 0.1 * (x + m):
        # Series in v = (x - m)/(x + m): x log((1+v)/(1-v)) = 2 x (v + v^3/3 + ...).
        v = (x - m) / (x + m)
        total = (x - m) * v
        term = 2.0 * x * v
        v2 = v * v
        j = 1
        while True:
            term *= v2
            updated = total + term / (2 * j + 1)
            if updated == total:
                return updated
            total = updated
            j += 1
    return x * math.log(x / m) + m - x


def binom_logpmf(k: int, n: int, p: float) -> float:
    """log P(X = k) for X ~ Binomial(n, p); ``-inf`` outside the support.

    Relative accuracy about 1e-14 of the probability (absolute in the log),
    for any n a Python int can hold.
    """
    _check_count("n", n)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    p = _check_probability("p", p)
    if k < 0 or k > n:
        return -math.inf
    if p == 0.0:
        return 0.0 if k == 0 else -math.inf
    if p == 1.0:
        return 0.0 if k == n else -math.inf
    if k == 0:
        return n * math.log1p(-p)
    if k == n:
        return n * math.log(p)
    q = 1.0 - p
    # Loader (2000): saddle-point expansion with Stirling errors and deviances.
    lc = (_stirlerr(n) - _stirlerr(k) - _stirlerr(n - k)
          - _bd0(float(k), n * p) - _bd0(float(n - k), n * q))
    lf = _LN_2PI + math.log(k) + math.log1p(-k / n)
    return lc - 0.5 * lf


def binom_pmf(k: int, n: int, p: float) -> float:
    """P(X = k) for X ~ Binomial(n, p)."""
    return math.exp(binom_logpmf(k, n, p))


def _log_sum_down(k: int, n: int, p: float) -> float:
    """log P(X <= k), for k below the mean (terms shrink as they go down)."""
    ratio_scale = (1.0 - p) / p
    total = 1.0
    term = 1.0
    i = k
    while i > 0:
        ratio = i / (n - i + 1) * ratio_scale  # pmf(i-1) / pmf(i)
        term *= ratio
        total += term
        # Ratios only shrink further down, so the tail is below a geometric series.
        if ratio < 1.0 and term * ratio / (1.0 - ratio) <= _NEGLIGIBLE * total:
            break
        i -= 1
    return binom_logpmf(k, n, p) + math.log(total)


def _log_sum_up(j: int, n: int, p: float) -> float:
    """log P(X >= j), for j above the mean (terms shrink as they go up)."""
    ratio_scale = p / (1.0 - p)
    total = 1.0
    term = 1.0
    i = j
    while i < n:
        ratio = (n - i) / (i + 1) * ratio_scale  # pmf(i+1) / pmf(i)
        term *= ratio
        total += term
        if ratio < 1.0 and term * ratio / (1.0 - ratio) <= _NEGLIGIBLE * total:
            break
        i += 1
    return binom_logpmf(j, n, p) + math.log(total)


def binom_logcdf(k: int, n: int, p: float) -> float:
    """log P(X <= k) for X ~ Binomial(n, p).

    Exact up to rounding (relative error ~1e-13); finite even when the
    probability underflows a float (e.g. -5000.0). Cost: O(sqrt(n) + k)
    terms at worst, a few thousand for n = 1e5.
    """
    _check_count("n", n)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    p = _check_probability("p", p)
    if k < 0:
        return -math.inf
    if k >= n or p == 0.0:
        return 0.0
    if p == 1.0:
        return -math.inf
    if k < n * p:
        return _log_sum_down(k, n, p)
    # Upper tail is the small side: 1 - P(X >= k+1), no cancellation since it is < ~0.6.
    return math.log1p(-math.exp(_log_sum_up(k + 1, n, p)))


def binom_logsf(k: int, n: int, p: float) -> float:
    """log P(X > k) for X ~ Binomial(n, p); same accuracy as :func:`binom_logcdf`."""
    _check_count("n", n)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    p = _check_probability("p", p)
    if k < 0:
        return 0.0
    if k >= n or p == 0.0:
        return -math.inf
    if p == 1.0:
        return 0.0
    if k + 1 > n * p:
        return _log_sum_up(k + 1, n, p)
    return math.log1p(-math.exp(_log_sum_down(k, n, p)))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p) (0.0 when it underflows)."""
    return math.exp(binom_logcdf(k, n, p))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X > k) for X ~ Binomial(n, p) (0.0 when it underflows)."""
    return math.exp(binom_logsf(k, n, p))


# --------------------------------------------------------------------------------------------
# Clopper-Pearson


def _bisect_decreasing(fn: Callable[[float], float], lo: float, hi: float) -> tuple[float, float]:
    """Bracket of the root of a decreasing function, narrowed to adjacent doubles.

    On return ``fn(lo) > 0 >= fn(hi)`` (for the bracket's interior points), so a
    caller can take the side that keeps its bound conservative.
    """
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if fn(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return lo, hi


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """Exact one-sided upper ``1 - alpha`` confidence bound on a rate after k events in n trials.

    The p with P(X <= k | p) = alpha (equal to ``scipy.stats.beta.ppf(1 - alpha, k + 1,
    n - k)``); ``1 - alpha ** (1/n)`` when k == 0 (about 3/n at alpha 0.05), 1.0
    when k == n or n == 0 (no evidence bounds nothing). Accurate to ~1e-13 relative.
    """
    _check_count("k", k)
    _check_count("n", n)
    alpha = _check_alpha(alpha)
    if k > n:
        raise ValueError(f"k ({k}) cannot exceed n ({n})")
    if k == n:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(alpha) / n)
    log_alpha = math.log(alpha)
    return _bisect_decreasing(lambda p: binom_logcdf(k, n, p) - log_alpha, 0.0, 1.0)[1]


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """Exact one-sided lower ``1 - alpha`` confidence bound on a rate after k events in n trials.

    The p with P(X >= k | p) = alpha (``scipy.stats.beta.ppf(alpha, k, n - k + 1)``);
    0.0 when k == 0, ``alpha ** (1/n)`` when k == n.
    """
    _check_count("k", k)
    _check_count("n", n)
    alpha = _check_alpha(alpha)
    if k > n:
        raise ValueError(f"k ({k}) cannot exceed n ({n})")
    if k == 0:
        return 0.0
    if k == n:
        return math.exp(math.log(alpha) / n)
    log_alpha = math.log(alpha)
    # P(X >= k | p) increases in p; bisect its negation.
    return _bisect_decreasing(lambda p: log_alpha - binom_logsf(k - 1, n, p), 0.0, 1.0)[0]


def min_cases_for_failure_bound(max_rate: float, alpha: float) -> int:
    """Fewest cases whose zero-failure Clopper-Pearson bound is at most ``max_rate``.

    ``ceil(log(alpha) / log(1 - max_rate))``: about 3/max_rate at alpha 0.05.
    With fewer cases even a flawless candidate cannot show its failure rate
    is below ``max_rate``.
    """
    max_rate = float(max_rate)
    if not 0.0 < max_rate < 1.0:
        raise ConfigError(f"the maximum failure rate must be in (0, 1), got {max_rate!r}")
    alpha = _check_alpha(alpha)
    n = max(1, math.ceil(math.log(alpha) / math.log1p(-max_rate)))
    # Guard against the ceiling landing one off through rounding.
    while n > 1 and clopper_pearson_upper(0, n - 1, alpha) <= max_rate:
        n -= 1
    while clopper_pearson_upper(0, n, alpha) > max_rate:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# paired counts


class PairCounts(BaseModel):
    """Paired pass/fail outcomes reduced to what the tests use.

    ``regressions`` (b): incumbent passed, candidate failed; ``fixes`` (c):
    candidate passed, incumbent failed; ``n``: all paired cases.
    """

    model_config = ConfigDict(frozen=True)

    n: int = Field(default=0, ge=0)
    regressions: int = Field(default=0, ge=0)
    fixes: int = Field(default=0, ge=0)

    def model_post_init(self, __context: object) -> None:
        if self.regressions + self.fixes > self.n:
            raise ValueError(
                f"{self.regressions} regressions + {self.fixes} fixes exceed {self.n} cases")

    @property
    def agreements(self) -> int:
        return self.n - self.regressions - self.fixes

    @property
    def difference(self) -> float:
        """Observed pass-rate drop (b - c)/n; NaN-free: 0.0 when n == 0."""
        return (self.regressions - self.fixes) / self.n if self.n else 0.0

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[bool, bool]]) -> PairCounts:
        """Count ``(incumbent_passed, candidate_passed)`` pairs."""
        n = b = c = 0
        for incumbent, candidate in pairs:
            n += 1
            if incumbent and not candidate:
                b += 1
            elif candidate and not incumbent:
                c += 1
        return cls(n=n, regressions=b, fixes=c)

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts(n=self.n + other.n, regressions=self.regressions + other.regressions,
                          fixes=self.fixes + other.fixes)


# --------------------------------------------------------------------------------------------
# fixed-n exact unconditional test


def _restricted_variance(b: int, c: int, n: int, t: float) -> float:
    """Var(D) at the maximum-likelihood (pi_b, pi_c) constrained to pi_b - pi_c = t."""
    if t < 0.0:
        # Mirror image: regressions and fixes swap roles when the drop is negative.
        b, c, t = c, b, -t
    a = n - b - c
    # Score equation of the smaller rate x = pi_c (pi_b = x + t) is the quadratic
    # 2n x^2 - B x - c t (1 - t) = 0 with B below; its non-negative root is the MLE.
    big_b = b * (1.0 - t) + c * (1.0 - 3.0 * t) - 2.0 * a * t
    x = (big_b + math.sqrt(big_b * big_b + 8.0 * n * c * t * (1.0 - t))) / (4.0 * n)
    x = min(max(x, 0.0), (1.0 - t) / 2.0)
    return 2.0 * x + t - t * t


def _score(b: int, c: int, n: int, t: float) -> float:
    """Score statistic for H0: delta = t; small values are evidence that delta < t."""
    variance = _restricted_variance(b, c, n, t)
    numerator = b - c - n * t
    if variance <= 0.0:
        # Only at t == 0 with b == c == 0: no discordance, no evidence either way.
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(n * variance)


def _region_edges(n: int, t: float, z_obs: float) -> list[int]:
    """For each fix count c, the largest regression count b with score <= z_obs (-1: none).

    The score rises with b and falls with c (checked exhaustively for n <= 150
    in the tests), so each edge is found by bisection and the edges never
    decrease in c: the region is a lower set in b and an upper set in c.
    """
    edges: list[int] = []
    previous = -1
    for c in range(n + 1):
        lo, hi = previous, n - c  # b <= previous is inside the region (monotone in c)
        if lo > hi:
            lo = hi
        if lo < 0 and _score(0, c, n, t) > z_obs:
            edges.append(-1)
            continue
        lo = max(lo, 0)
        if _score(hi, c, n, t) <= z_obs:
            lo = hi
        else:
            while hi - lo > 1:  # invariant: score(lo) <= z_obs < score(hi)
                mid = (lo + hi) // 2
                if _score(mid, c, n, t) <= z_obs:
                    lo = mid
                else:
                    hi = mid
        edges.append(lo)
        previous = lo
    return edges


def _mass_window(n: int, pi_c: float) -> tuple[int, int, float]:
    """The window ``[c_lo, c_hi]`` of c holding all but ~e-35 of Binomial(n, pi_c)'s mass,
    found from the mode outward, and the log pmf at ``c_lo``."""
    mode = min(n, max(0, int((n + 1) * pi_c)))
    log_mode = binom_logpmf(mode, n, pi_c)
    log_ratio = math.log(pi_c) - math.log1p(-pi_c)
    c_lo, log_w = mode, log_mode
    while c_lo > 0 and log_w - log_mode > -35.0:
        log_w -= math.log((n - c_lo + 1) / c_lo) + log_ratio
        c_lo -= 1
    c_hi, log_hi = mode, log_mode
    while c_hi < n and log_hi - log_mode > -35.0:
        log_hi += math.log((n - c_hi) / (c_hi + 1)) + log_ratio
        c_hi += 1
    return c_lo, c_hi, log_w


def _region_probability(edges: list[int], n: int, pi_b: float, pi_c: float) -> float:
    """P((B, C) in the region given by ``edges``) for regression and fix rates pi_b, pi_c."""
    pi_b = min(max(pi_b, 0.0), 1.0)
    pi_c = min(max(pi_c, 0.0), 1.0 - pi_b)
    # C ~ Binomial(n, pi_c); given C = c, B ~ Binomial(n - c, q) with q = pi_b / (1 - pi_c).
    q = min(max(pi_b / (1.0 - pi_c), 0.0), 1.0) if pi_c < 1.0 else 0.0
    if pi_c == 0.0:
        return binom_cdf(edges[0], n, q) if edges[0] >= 0 else 0.0
    c_lo, c_hi, log_w = _mass_window(n, pi_c)
    log_ratio = math.log(pi_c) - math.log1p(-pi_c)
    if q in (0.0, 1.0):
        return min(1.0, sum(math.exp(binom_logpmf(c, n, pi_c) + binom_logcdf(edges[c], n - c, q))
                            for c in range(c_lo, c_hi + 1) if edges[c] >= 0))
    # Sweep c upwards carrying F = P(B <= edge | C = c) and log P(B = edge | C = c): the
    # edge never decreases and the number of trials drops by one per step, so each step
    # only adds non-negative terms (no cancellation); the pmf is carried as a logarithm so
    # a far tail cannot underflow to zero and stay there.
    log_q_odds = math.log(q) - math.log1p(-q)
    log_1mq = math.log1p(-q)
    total = 0.0
    cdf = 0.0
    log_pmf = -math.inf
    k = -1
    trials = n - c_lo
    for c in range(c_lo, c_hi + 1):
        if c > c_lo:
            log_w += math.log((n - c + 1) / c) + log_ratio
        edge = edges[c]
        if edge < 0:
            continue
        if k < 0:
            trials = n - c
            k = edge
            if k >= trials:
                cdf, log_pmf = 1.0, -math.inf
            else:
                cdf = binom_cdf(k, trials, q)
                log_pmf = binom_logpmf(k, trials, q)
        else:
            while trials > n - c:  # one trial fewer: F_{N-1}(k) = F_N(k) + q pmf_{N-1}(k)
                if k >= trials - 1:
                    cdf, log_pmf = 1.0, -math.inf
                else:
                    log_pmf += math.log((trials - k) / trials) - log_1mq
                    cdf += q * math.exp(log_pmf)
                trials -= 1
            while k < edge:  # F(k + 1) = F(k) + pmf(k + 1)
                if k + 1 >= trials:
                    cdf, log_pmf = 1.0, -math.inf
                    k = edge
                    break
                if log_pmf == -math.inf:
                    log_pmf = binom_logpmf(k + 1, trials, q)
                else:
                    log_pmf += math.log((trials - k) / (k + 1)) + log_q_odds
                cdf += math.exp(log_pmf)
                k += 1
        total += math.exp(log_w) * min(cdf, 1.0)
    return min(total, 1.0)


def _supremum(f: Callable[[float], float], lo: float, hi: float, grid: int = 24) -> float:
    """Largest value of a smooth function on [lo, hi]: a grid, then golden-section refinement."""
    if hi <= lo:
        return float(f(lo))
    xs = [lo + (hi - lo) * i / grid for i in range(grid + 1)]
    values = [float(f(x)) for x in xs]
    best = max(range(len(xs)), key=values.__getitem__)
    a = xs[max(best - 1, 0)]
    d = xs[min(best + 1, grid)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    b_ = d - golden * (d - a)
    c_ = a + golden * (d - a)
    fb, fc = float(f(b_)), float(f(c_))
    top = max(values)
    for _ in range(40):
        if fb >= fc:
            d, c_, fc = c_, b_, fb
            b_ = d - golden * (d - a)
            fb = float(f(b_))
        else:
            a, b_, fb = b_, c_, fc
            c_ = a + golden * (d - a)
            fc = float(f(c_))
        top = max(top, fb, fc)
        if d - a < 1e-9:
            break
    return top


class PairedTestResult(BaseModel):
    """Outcome of the fixed-n exact paired non-inferiority test."""

    model_config = ConfigDict(frozen=True)

    statistic: Literal["exact_unconditional_score"] = "exact_unconditional_score"
    n: int
    regressions: int
    fixes: int
    difference: float
    """Observed pass-rate drop (b - c)/n."""
    threshold: float
    """The drop the test must exclude: the margin, or minus the required improvement."""
    score: float
    p_value: float
    """Exact (conservative) p-value of H0: drop >= threshold."""
    alpha: float
    accepted: bool
    """True when p_value <= alpha: the drop is shown to be below the threshold."""


def exact_paired_p_value(counts: PairCounts, threshold: float, gamma: float) -> float:
    """Exact p-value of H0: drop >= threshold (any threshold in (-1, 1)).

    The Berger-Boos p-value of the score statistic (see the module docstring),
    with ``gamma`` spent on the interval for the discordance rate, so the
    result is never below ``gamma``. 1.0 when ``counts.n == 0``. Under every
    H0 point, P(p-value <= x) <= x for every x.
    """
    t = _check_threshold(threshold)
    gamma = float(gamma)
    if not 0.0 < gamma < 1.0:
        raise ConfigError(f"gamma must be in (0, 1), got {gamma!r}")
    n, b, c = counts.n, counts.regressions, counts.fixes
    if n == 0:
        return 1.0
    z_obs = _score(b, c, n, t)
    m = b + c
    # 1 - gamma two-sided interval for the discordance rate s = pi_b + pi_c.
    s_lo = clopper_pearson_lower(m, n, gamma / 2.0)
    s_hi = clopper_pearson_upper(m, n, gamma / 2.0)
    edges = _region_edges(n, t, z_obs)
    # The region only grows when a regression turns into a fix, so at a fixed
    # discordance rate s the null probability is largest at the smallest drop the
    # null allows: the boundary drop t where s >= |t|, and (only possible when t < 0)
    # drop -s, i.e. no regressions at all, where s < |t|.
    size = 0.0
    if t < 0.0 and s_lo < -t:
        size = _supremum(lambda s: _region_probability(edges, n, 0.0, s), s_lo, min(s_hi, -t))
    if max(s_lo, abs(t)) <= s_hi:
        size = max(size, _supremum(
            lambda s: _region_probability(edges, n, (s + t) / 2.0, (s - t) / 2.0),
            max(s_lo, abs(t)), s_hi))
    # size == 0 when the interval excludes every discordance rate that could hide the drop.
    return min(1.0, size + gamma)


def paired_noninferiority(
    counts: PairCounts,
    *,
    margin: float,
    alpha: float = 0.05,
    required_improvement: float = 0.0,
    gamma: float | None = None,
) -> PairedTestResult:
    """Exact one-sided paired test that the candidate's pass rate is not worse by ``margin``.

    Tests H0: ``p_incumbent - p_candidate >= threshold`` with ``threshold =
    margin``, or ``-required_improvement`` when that is positive (the
    candidate must then be shown better by at least that much). Rejecting H0
    (``accepted``) has probability at most ``alpha`` under every H0 point;
    the tests enumerate every outcome for small n to check it.

    ``gamma`` (default ``alpha / 50``) is the part of alpha spent on the
    confidence interval for the discordance rate (Berger-Boos). A candidate
    that agrees on every case is accepted once ``n`` reaches
    :func:`min_cases_to_accept` with ``sequential=False`` (about 3/margin).
    Valid only for a sample size fixed in advance: looking at it after every
    batch and stopping when it accepts inflates the error; use
    :class:`SequentialNonInferiority` for that. Cost: a few ms at n = 300.
    """
    alpha = _check_alpha(alpha)
    t = _threshold(margin, required_improvement)
    gamma = alpha / 50.0 if gamma is None else float(gamma)
    if not 0.0 < gamma < alpha:
        raise ConfigError(f"gamma must be in (0, alpha), got {gamma!r}")
    p_value = exact_paired_p_value(counts, t, gamma)
    score = _score(counts.regressions, counts.fixes, counts.n, t) if counts.n else 0.0
    return PairedTestResult(n=counts.n, regressions=counts.regressions, fixes=counts.fixes,
                            difference=counts.difference, threshold=t, score=score,
                            p_value=p_value, alpha=alpha, accepted=p_value <= alpha)


def exact_paired_upper_bound(counts: PairCounts, alpha: float, gamma: float | None = None) -> float:
    """Upper ``1 - alpha`` bound on the pass-rate drop from the fixed-n exact test.

    The smallest threshold (to 1e-6) that :func:`exact_paired_p_value` rejects at
    level alpha, found by bisection; 1.0 when none is. For reporting: the
    accept/reject decision is the test itself. About 30 tests' cost.
    """
    alpha = _check_alpha(alpha)
    gamma = alpha / 50.0 if gamma is None else float(gamma)
    if not 0.0 < gamma < alpha:
        raise ConfigError(f"gamma must be in (0, alpha), got {gamma!r}")
    lo, hi = -1.0 + 1e-9, 1.0 - 1e-9
    if counts.n == 0 or exact_paired_p_value(counts, hi, gamma) > alpha:
        return 1.0
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if exact_paired_p_value(counts, mid, gamma) <= alpha:
            hi = mid
        else:
            lo = mid
    return hi


def _threshold(margin: float, required_improvement: float) -> float:
    margin = float(margin)
    required_improvement = float(required_improvement)
    if not 0.0 <= required_improvement < 1.0:
        raise ConfigError(
            f"required_improvement must be in [0, 1), got {required_improvement!r}")
    if required_improvement > 0.0:
        return _check_threshold(-required_improvement)
    if not 0.0 < margin < 1.0:
        raise ConfigError(
            f"margin must be in (0, 1) (a zero margin can never accept a candidate that only "
            f"matches the incumbent; ask for a required improvement instead), got {margin!r}")
    return margin


# --------------------------------------------------------------------------------------------
# anytime-valid e-values

# Bet sizes as fractions of the largest admissible bet 1/(1 - threshold), and their
# prior weights. The all-in bet (fraction 1) multiplies the wealth by 1/(1 - threshold)
# per agreeing case and is lost at the first regression: it is what lets a candidate
# that agrees everywhere pass after about 3.5/margin cases (no valid test can do it in
# fewer than log(1/alpha)/-log(1 - margin), about 3/margin). The smaller bets serve
# candidates that change answers both ways; a few well-spread bets beat a fine grid,
# because each component's share of the prior is paid as log(1/weight) extra evidence
# (tuned on benchmarks/decision_efficiency.py: a 20-point grid needed ~15 % more cases).
# The weight sits where the Kelly-optimal bets of typical candidates are: for 3 % churn
# each way at margin 0.05, 0.56 of the largest bet for an equal candidate, 0.69 for one
# 5 points better (issue 22: ~7 % more capability pairs saved than with the grid
# 1.0, 0.8, ..., 0.05, and the same 71 cases for an all-agreeing candidate).
_BET_FRACTIONS: tuple[float, ...] = (1.0, 0.65, 0.5, 0.35, 0.2, 0.1)
_BET_LOG_WEIGHTS: tuple[float, ...] = tuple(
    math.log(w) for w in (0.44, 0.2, 0.16, 0.1, 0.06, 0.04))
_ACCEPT_GRID = (_BET_FRACTIONS, _BET_LOG_WEIGHTS)

# The futility side (against "drop <= futility threshold", usually "no worse than the
# incumbent") has a grid of its own. There an agreeing case moves no wealth at all (the
# threshold is 0), so the all-in bet cannot win on agreement, and it is lost at the first
# fix, which every candidate that changes answers both ways has: with the accept grid's
# 44 % on it, that share of the prior was wasted. The Kelly-optimal fractions of the
# regressions the gate must stop sit at 0.45 (worse by 5 points with 3 % churn each way),
# 0.63 (by 10) and 0.77 (by 20). Issue 22, on benchmarks/decision_efficiency.py: about
# 4 % fewer capability pairs, and fewer equal candidates rejected (0.021 instead of 0.025),
# which raises the power on them; any fixed prior keeps the guarantee.
_FUTILITY_BET_FRACTIONS: tuple[float, ...] = (1.0, 0.75, 0.55, 0.4, 0.25)
_FUTILITY_BET_LOG_WEIGHTS: tuple[float, ...] = tuple(
    math.log(w) for w in (0.1, 0.2, 0.3, 0.25, 0.15))
_FUTILITY_GRID = (_FUTILITY_BET_FRACTIONS, _FUTILITY_BET_LOG_WEIGHTS)

_Grid = tuple[tuple[float, ...], tuple[float, ...]]


def _log_wealth(against: int, toward: int, agree: int, t: float,
                grid: _Grid = _ACCEPT_GRID) -> float:
    """log of the mixture wealth betting that the mean of D is below t.

    ``against``: cases with D = +1, ``toward``: D = -1, ``agree``: D = 0; ``grid``: the
    bet fractions and their log prior weights (which sum to 0).
    """
    scale = 1.0 / (1.0 - t)  # the largest bet keeping every factor >= 0
    terms: list[float] = []
    for u, log_w in zip(*grid, strict=True):
        lam = u * scale
        if against and u >= 1.0:
            continue  # the all-in bet is lost at the first D = +1
        value = log_w
        if against:
            value += against * math.log1p(-u)
        if toward:
            value += toward * math.log1p(lam * (1.0 + t))
        if agree:
            value += agree * math.log1p(lam * t)
        terms.append(value)
    if not terms:
        return -math.inf
    top = max(terms)
    return top + math.log(sum(math.exp(v - top) for v in terms))


def e_value_against_worse(counts: PairCounts, threshold: float) -> float:
    """Anytime-valid e-value against H0: drop >= threshold (large = candidate is better).

    Under any H0 point, P(this ever reaches 1/alpha) <= alpha, whatever the
    stopping rule. Returned in log space (natural log) so it cannot overflow.
    """
    t = _check_threshold(threshold)
    return _log_wealth(counts.regressions, counts.fixes, counts.agreements, t)


def e_value_against_better(counts: PairCounts, threshold: float) -> float:
    """Anytime-valid log e-value against H0: drop <= threshold (large = candidate is worse)."""
    t = _check_threshold(threshold)
    # The mirror image: negate D, swapping regressions and fixes; the futility grid.
    return _log_wealth(counts.fixes, counts.regressions, counts.agreements, -t, _FUTILITY_GRID)


def sequential_upper_bound(counts: PairCounts, alpha: float) -> float:
    """Anytime-valid ``1 - alpha`` upper confidence bound on the pass-rate drop.

    The smallest threshold that :func:`e_value_against_worse` rejects at level
    alpha (the wealth grows with the threshold, so this is a bisection).
    1.0 when no threshold is rejected.
    """
    return _upper_bound(counts, _check_alpha(alpha), _ACCEPT_GRID)


def _upper_bound(counts: PairCounts, alpha: float, grid: _Grid) -> float:
    target = -math.log(alpha)
    lo, hi = -1.0 + 1e-12, 1.0 - 1e-12
    b, c, a = counts.regressions, counts.fixes, counts.agreements
    if _log_wealth(b, c, a, hi, grid) < target:
        return 1.0
    if _log_wealth(b, c, a, lo, grid) >= target:
        return -1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _log_wealth(b, c, a, mid, grid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def sequential_lower_bound(counts: PairCounts, alpha: float) -> float:
    """Anytime-valid ``1 - alpha`` lower confidence bound on the pass-rate drop.

    The largest threshold that :func:`e_value_against_better` rejects at level alpha, so
    it is above the futility threshold exactly when the futility side rejects.
    """
    mirrored = PairCounts(n=counts.n, regressions=counts.fixes, fixes=counts.regressions)
    return -_upper_bound(mirrored, _check_alpha(alpha), _FUTILITY_GRID)


# --------------------------------------------------------------------------------------------
# sample size


def min_cases_to_accept(
    margin: float,
    alpha: float = 0.05,
    *,
    required_improvement: float = 0.0,
    gain: float | None = None,
    sequential: bool = True,
    group: bool = True,
    limit: int = 1_000_000,
) -> int | None:
    """Fewest paired cases at which the most favourable plausible outcome is accepted.

    Without a required improvement that outcome is a candidate that agrees with
    the incumbent on every case (``gain = 0``); with one, a candidate that breaks
    nothing and fixes a fraction ``gain`` of the cases (default 1.0: every case,
    the floor below which *no* outcome can be accepted). ``sequential`` picks
    the sequential design (:class:`SequentialNonInferiority`; with ``group``
    its group-sequential boundary where one is calibrated, about 5/margin
    cases, else the anytime-valid e-process, about 3.5/margin) or the fixed-n
    exact test (:func:`paired_noninferiority`). Returns ``None`` when even
    ``limit`` cases are not enough (e.g. ``gain`` at or below the required
    improvement). A suite with fewer capability cases (or a slice with fewer
    cases) can never be accepted: warn about it at construction.
    """
    from ._group import group_boundary  # _group builds on this module's score statistic

    alpha = _check_alpha(alpha)
    t = _threshold(margin, required_improvement)
    if gain is None:
        gain = 1.0 if required_improvement > 0.0 else 0.0
    gain = _check_probability("gain", gain)
    if -gain >= t:
        return None

    boundary = group_boundary(t, alpha) if sequential and group else None
    if boundary is not None:
        limit = min(limit, boundary.max_pairs)

    def accepts(n: int) -> bool:
        counts = PairCounts(n=n, fixes=round(gain * n))
        if boundary is not None:
            return boundary.accepts(counts, e_value_against_worse(counts, t))
        if sequential:
            return e_value_against_worse(counts, t) >= -math.log(alpha)
        return paired_noninferiority(counts, margin=margin, alpha=alpha,
                                     required_improvement=required_improvement).accepted

    return _first_accepted(accepts, limit)


def _first_accepted(accepts: Callable[[int], bool], limit: int) -> int | None:
    """Smallest n <= limit with ``accepts(n)``, for an ``accepts`` monotone in n."""
    # Exponential search, then bisection.
    hi = 1
    while not accepts(hi):
        if hi >= limit:
            return None
        hi = min(limit, hi * 2)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if accepts(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------------------------
# sequential design


SequentialVerdict = Literal["accept", "reject", "continue", "inconclusive"]


class SequentialState(BaseModel):
    """Where a sequential non-inferiority analysis stands after the latest look."""

    model_config = ConfigDict(frozen=True)

    verdict: SequentialVerdict
    """``accept``: the drop is shown below the threshold (error <= alpha);
    ``reject``: shown above the futility threshold (error <= futility_alpha);
    ``inconclusive``: the budget is spent without either; ``continue``: keep going."""
    counts: PairCounts
    threshold: float
    futility_threshold: float
    alpha: float
    futility_alpha: float
    upper_bound: float
    """Anytime-valid 1 - alpha upper bound on the pass-rate drop."""
    lower_bound: float
    """Anytime-valid 1 - futility_alpha lower bound on the pass-rate drop."""
    log_e_accept: float
    """Natural log of the e-value against "worse by the threshold or more"."""
    log_e_reject: float
    """Natural log of the e-value against "at most the futility threshold worse"."""
    looks: int


class SequentialNonInferiority:
    """Stateful anytime-valid non-inferiority test: feed paired outcomes, read the verdict.

    ``accept`` is reached with probability at most ``alpha`` when the true
    pass-rate drop is at least the threshold (``margin``, or minus the
    ``required_improvement``), however the batches are sized and however
    often the verdict is read. ``reject`` is reached with probability at
    most ``futility_alpha`` when the drop is at most ``futility_threshold``
    (default: the threshold minus the margin, i.e. "no worse than the
    incumbent" for plain non-inferiority). Between the two thresholds either
    verdict is allowed. Once ``accept`` or ``reject`` is reached it is final
    (further batches are counted but do not change it); ``inconclusive`` once
    ``max_cases`` pairs were seen without a decision.

    ``boundary="group"`` (the default) uses the group-sequential boundary of
    ``_group`` where one is calibrated for this threshold and alpha (``group``
    is then set): the same guarantee on ``accept`` for looks up to its
    ``max_pairs``, fewer pairs on average, and ``reject`` also when the
    candidate can no longer reach the boundary. Elsewhere, and with
    ``"anytime"``, the e-process alone decides.
    """

    def __init__(
        self,
        *,
        margin: float,
        alpha: float = 0.05,
        required_improvement: float = 0.0,
        futility_alpha: float | None = None,
        futility_threshold: float | None = None,
        max_cases: int | None = None,
        boundary: Literal["group", "anytime"] = "group",
    ) -> None:
        from ._group import group_boundary  # _group builds on this module's score statistic

        self.alpha = _check_alpha(alpha)
        self.threshold = _threshold(margin, required_improvement)
        self.margin = float(margin)
        self.required_improvement = float(required_improvement)
        self.futility_alpha = _check_alpha(
            self.alpha if futility_alpha is None else futility_alpha, "futility_alpha")
        if futility_threshold is None:
            futility_threshold = max(self.threshold - self.margin, -1.0 + 1e-9)
        futility_threshold = float(futility_threshold)
        if not -1.0 < futility_threshold <= self.threshold:
            raise ConfigError(
                f"futility_threshold must be in (-1, {self.threshold}], got {futility_threshold!r}")
        self.futility_threshold = futility_threshold
        if max_cases is not None and (
                isinstance(max_cases, bool) or not isinstance(max_cases, int) or max_cases < 1):
            raise ConfigError(f"max_cases must be a positive int, got {max_cases!r}")
        self.max_cases = max_cases
        if boundary not in ("group", "anytime"):
            raise ConfigError(f"boundary must be 'group' or 'anytime', got {boundary!r}")
        self.group = group_boundary(self.threshold, self.alpha) if boundary == "group" else None
        self._accept_level = -math.log(self.alpha)
        self._reject_level = -math.log(self.futility_alpha)
        self._counts = PairCounts()
        self._looks = 0
        self._final: SequentialVerdict | None = None
        self._log_acc = 0.0
        self._log_rej = 0.0
        self._verdict: SequentialVerdict = "continue"
        self._state: SequentialState | None = None
        self._look()

    @property
    def counts(self) -> PairCounts:
        return self._counts

    @property
    def verdict(self) -> SequentialVerdict:
        """The verdict at the latest look (cheap: no confidence bounds computed)."""
        return self._verdict

    @property
    def state(self) -> SequentialState:
        """The full state at the latest look, with both anytime-valid bounds."""
        if self._state is None:
            self._state = SequentialState(
                verdict=self._verdict, counts=self._counts, threshold=self.threshold,
                futility_threshold=self.futility_threshold, alpha=self.alpha,
                futility_alpha=self.futility_alpha,
                upper_bound=sequential_upper_bound(self._counts, self.alpha),
                lower_bound=sequential_lower_bound(self._counts, self.futility_alpha),
                log_e_accept=self._log_acc, log_e_reject=self._log_rej, looks=self._looks)
        return self._state

    @property
    def upper_bound(self) -> float:
        """Anytime-valid 1 - alpha upper bound on the pass-rate drop, at the latest look."""
        return self.state.upper_bound

    def update(self, pairs: Iterable[tuple[bool, bool]]) -> SequentialVerdict:
        """Add one batch of ``(incumbent_passed, candidate_passed)`` pairs; look once."""
        return self.add(PairCounts.from_pairs(pairs))

    def add(self, batch: PairCounts) -> SequentialVerdict:
        """Add one batch given as counts; look once; return the verdict."""
        self._counts = self._counts + batch
        self._looks += 1
        self._look()
        return self._verdict

    def _look(self) -> None:
        counts = self._counts
        self._state = None
        self._log_acc = e_value_against_worse(counts, self.threshold)
        self._log_rej = e_value_against_better(counts, self.futility_threshold)
        verdict: SequentialVerdict
        if self._final is not None:
            verdict = self._final
        elif (self._log_acc >= self._accept_level if self.group is None
              else self.group.accepts(counts, self._log_acc)):
            # Both can hold only inside the indifference zone, where accepting is allowed.
            verdict = "accept"
        elif self._log_rej >= self._reject_level or (
                self.group is not None and self.group.futile(counts)):
            verdict = "reject"
        elif self.max_cases is not None and counts.n >= self.max_cases:
            verdict = "inconclusive"
        else:
            verdict = "continue"
        if self._final is None and verdict in ("accept", "reject"):
            self._final = verdict
        self._verdict = verdict


# --------------------------------------------------------------------------------------------
# slices


def slices_noninferior(accepted: dict[str, bool]) -> tuple[bool, list[str]]:
    """Intersection-union over slices: non-inferior only if every slice is.

    Each slice's own test at level alpha suffices (no multiplicity
    adjustment): accepting wrongly requires that some slice in its null was
    wrongly accepted, which has probability at most alpha. An empty mapping is
    vacuously true. Returns the verdict and the failing slice names, sorted.
    """
    failing = sorted(name for name, ok in accepted.items() if not ok)
    return not failing, failing
