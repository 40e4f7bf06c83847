"""The gate's statistics: agreement with SciPy, exact size, sequential error rates."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails._errors import ConfigError
from guardrails.stats._exact import (
    _ACCEPT_GRID,
    _FUTILITY_GRID,
    PairCounts,
    SequentialNonInferiority,
    _log_wealth,
    _region_edges,
    _score,
    binom_cdf,
    binom_logcdf,
    binom_logpmf,
    binom_logsf,
    binom_pmf,
    binom_sf,
    clopper_pearson_lower,
    clopper_pearson_upper,
    e_value_against_better,
    e_value_against_worse,
    exact_paired_p_value,
    exact_paired_upper_bound,
    min_cases_for_failure_bound,
    min_cases_to_accept,
    paired_noninferiority,
    sequential_lower_bound,
    sequential_upper_bound,
    slices_noninferior,
)


@pytest.fixture(scope="module")
def scipy_stats() -> Any:
    """SciPy is a dev-only dependency: only the agreement tests need it."""
    return pytest.importorskip("scipy.stats")


RTOL = 1e-9


def close(mine: float, ref: float, rtol: float = RTOL) -> bool:
    return abs(mine - ref) <= rtol * abs(ref) + 1e-300


def _grid() -> list[tuple[int, int, float]]:
    points = []
    for n in (1, 2, 7, 30, 101, 1000, 20_000, 100_000):
        for p in (1e-7, 1e-3, 0.02, 0.3, 0.5, 0.81, 0.999, 1 - 1e-7):
            sd = math.sqrt(n * p * (1 - p))
            ks = {0, 1, n // 2, n - 1, n, int(n * p), int(n * p) + 1,
                  int(n * p - 4 * sd), int(n * p + 4 * sd)}
            points += [(k, n, p) for k in sorted(ks) if 0 <= k <= n]
    return points


GRID = _grid()


def test_binomial_pmf_cdf_sf_agree_with_scipy(scipy_stats: Any) -> None:
    checked = 0
    for k, n, p in GRID:
        for mine, ref in ((binom_pmf(k, n, p), scipy_stats.binom.pmf(k, n, p)),
                          (binom_cdf(k, n, p), scipy_stats.binom.cdf(k, n, p)),
                          (binom_sf(k, n, p), scipy_stats.binom.sf(k, n, p))):
            if ref > 1e-280:  # below that SciPy itself is in subnormal range
                assert close(mine, float(ref)), (k, n, p, mine, ref)
                checked += 1
    assert checked > 400


def test_binomial_logs_stay_finite_far_in_the_tail(scipy_stats: Any) -> None:
    # P(X = 0) for n = 1e5, p = 0.5 is 2^-100000: far below the smallest float.
    assert binom_logpmf(0, 100_000, 0.5) == pytest.approx(100_000 * math.log(0.5), rel=1e-12)
    assert binom_logcdf(0, 100_000, 0.5) == pytest.approx(100_000 * math.log(0.5), rel=1e-12)
    assert binom_logsf(99_999, 100_000, 0.5) == pytest.approx(100_000 * math.log(0.5), rel=1e-12)
    # Compared in log space with SciPy where it is still representable.
    for k, n, p in ((10, 10_000, 0.3), (9000, 10_000, 0.5), (50, 100_000, 0.01)):
        assert close(binom_logcdf(k, n, p), float(scipy_stats.binom.logcdf(k, n, p)))
        assert close(binom_logsf(k, n, p), float(scipy_stats.binom.logsf(k, n, p)))


def test_binomial_edges_and_bad_arguments() -> None:
    assert binom_cdf(-1, 5, 0.5) == 0.0 and binom_cdf(5, 5, 0.5) == 1.0
    assert binom_sf(5, 5, 0.5) == 0.0 and binom_sf(-1, 5, 0.5) == 1.0
    assert binom_pmf(0, 5, 0.0) == 1.0 and binom_pmf(5, 5, 1.0) == 1.0
    assert binom_cdf(0, 0, 0.3) == 1.0
    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError):
            binom_cdf(1, 5, bad)
    with pytest.raises(ValueError):
        binom_cdf(1, -2, 0.5)
    with pytest.raises(ValueError):
        binom_pmf(True, 5, 0.5)


def test_clopper_pearson_agrees_with_scipy_beta_quantiles(scipy_stats: Any) -> None:
    for n in (1, 2, 5, 10, 59, 200, 1000, 10_000, 100_000):
        for k in sorted({0, 1, 2, 3, n // 10, n // 2, n - 1, n}):
            if k > n:
                continue
            for alpha in (1e-4, 0.01, 0.025, 0.05, 0.2):
                upper = clopper_pearson_upper(k, n, alpha)
                lower = clopper_pearson_lower(k, n, alpha)
                ref_upper = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - alpha, k + 1, n - k))
                ref_lower = 0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha, k, n - k + 1))
                assert close(upper, ref_upper), (k, n, alpha, upper, ref_upper)
                assert close(lower, ref_lower), (k, n, alpha, lower, ref_lower)


def test_zero_failures_bound_is_the_rule_of_three() -> None:
    for n in (1, 10, 300, 5000):
        assert clopper_pearson_upper(0, n, 0.05) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)
    assert clopper_pearson_upper(0, 300, 0.05) == pytest.approx(3 / 300, rel=0.01)
    n = min_cases_for_failure_bound(0.01, 0.05)
    assert clopper_pearson_upper(0, n, 0.05) <= 0.01 < clopper_pearson_upper(0, n - 1, 0.05)
    assert n == 299  # about 3 / 0.01
    with pytest.raises(ConfigError):
        min_cases_for_failure_bound(0.0, 0.05)
    with pytest.raises(ConfigError):
        clopper_pearson_upper(1, 10, math.nan)


def test_score_statistic_is_monotone_so_the_region_is_well_defined() -> None:
    # Rises with regressions, falls with fixes: the exactness argument rests on it.
    for n in (1, 4, 17, 60):
        for t in (-0.3, -0.05, 0.0, 0.02, 0.1, 0.4):
            for c in range(n + 1):
                zs = [_score(b, c, n, t) for b in range(n - c + 1)]
                assert all(x <= y + 1e-12 for x, y in itertools.pairwise(zs))
            for b in range(n + 1):
                zs = [_score(b, c, n, t) for c in range(n - b + 1)]
                assert all(x >= y - 1e-12 for x, y in itertools.pairwise(zs))
    # The observed point always lies in its own region.
    for b, c in ((0, 0), (3, 1), (1, 7), (10, 10)):
        edges = _region_edges(40, 0.05, _score(b, c, 40, 0.05))
        assert b <= edges[c]


def _trinomial_size(n: int, accepted: list[tuple[int, int]], pb: float, pc: float) -> float:
    log_n = math.lgamma(n + 1)
    total = 0.0
    for b, c in accepted:
        a = n - b - c
        if (b and pb == 0) or (c and pc == 0) or (a and pb + pc >= 1):
            continue
        total += math.exp(log_n - math.lgamma(b + 1) - math.lgamma(c + 1) - math.lgamma(a + 1)
                          + (b * math.log(pb) if b else 0.0) + (c * math.log(pc) if c else 0.0)
                          + (a * math.log1p(-pb - pc) if a else 0.0))
    return total


@pytest.mark.parametrize(("n", "margin", "improvement"), [(16, 0.1, 0.0), (18, 0.05, 0.1)])
def test_fixed_n_test_is_exact_over_the_whole_null(n: int, margin: float,
                                                   improvement: float) -> None:
    """Enumerate every outcome; the chance of accepting is <= alpha at every null point."""
    t = -improvement if improvement else margin
    accepted = [(b, c) for b in range(n + 1) for c in range(n - b + 1)
                if paired_noninferiority(PairCounts(n=n, regressions=b, fixes=c), margin=margin,
                                         required_improvement=improvement).accepted]
    assert accepted  # the test has some power
    worst = 0.0
    steps = 30
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            pb, pc = i / steps, j / steps
            if pb - pc >= t - 1e-12:
                worst = max(worst, _trinomial_size(n, accepted, pb, pc))
    for k in range(200):  # the boundary, finely
        pc = k / 200
        pb = pc + t
        if pb >= 0 and pb + pc <= 1:
            worst = max(worst, _trinomial_size(n, accepted, pb, pc))
    assert worst <= 0.05


def test_all_agreeing_candidate_is_accepted_at_about_three_over_margin() -> None:
    for margin in (0.02, 0.05, 0.1):
        floor = math.ceil(math.log(0.05) / math.log1p(-margin))  # no valid test does better
        fixed = min_cases_to_accept(margin, 0.05, sequential=False)
        sequential = min_cases_to_accept(margin, 0.05, group=False)
        assert fixed is not None and sequential is not None
        assert floor <= fixed <= 3.1 / margin
        assert floor <= sequential <= 3.7 / margin
        assert paired_noninferiority(PairCounts(n=fixed), margin=margin).accepted
        assert not paired_noninferiority(PairCounts(n=fixed - 1), margin=margin).accepted
        assert e_value_against_worse(PairCounts(n=sequential), margin) >= math.log(20)
        assert e_value_against_worse(PairCounts(n=sequential - 1), margin) < math.log(20)
    assert min_cases_to_accept(0.05, group=False) == 71
    # The group-sequential boundary (margins 0.05 and 0.1) pays for its truncation here:
    # about 5/margin cases; where none is calibrated the anytime figure stands.
    assert min_cases_to_accept(0.05) == 100
    assert min_cases_to_accept(0.1) <= 5.0 / 0.1
    assert min_cases_to_accept(0.02) == min_cases_to_accept(0.02, group=False)


def test_required_improvement_variant() -> None:
    # Agreeing everywhere never shows a gain.
    assert min_cases_to_accept(0.05, required_improvement=0.05, gain=0.0) is None
    everything = min_cases_to_accept(0.05, required_improvement=0.05)
    some = min_cases_to_accept(0.05, required_improvement=0.05, gain=0.2)
    assert everything is not None and some is not None and everything < some
    better = PairCounts(n=400, regressions=4, fixes=60)
    assert paired_noninferiority(better, margin=0.05, required_improvement=0.05).accepted
    same = PairCounts(n=400, regressions=10, fixes=10)
    assert not paired_noninferiority(same, margin=0.05, required_improvement=0.05).accepted
    assert paired_noninferiority(same, margin=0.05).accepted


def test_fixed_n_result_and_bound() -> None:
    counts = PairCounts(n=300, regressions=20, fixes=5)
    result = paired_noninferiority(counts, margin=0.05)
    assert not result.accepted and result.p_value > 0.05
    assert result.difference == pytest.approx(15 / 300)
    bound = exact_paired_upper_bound(counts, 0.05)
    assert bound > 0.05  # consistent with not accepting at margin 0.05
    assert exact_paired_p_value(counts, bound + 1e-3, 0.001) <= 0.05
    assert paired_noninferiority(PairCounts(), margin=0.05).p_value == 1.0


def test_e_values_and_anytime_bounds_are_consistent() -> None:
    counts = PairCounts(n=250, regressions=9, fixes=7)
    upper = sequential_upper_bound(counts, 0.05)
    lower = sequential_lower_bound(counts, 0.05)
    assert lower < counts.difference < upper
    # The upper bound is exactly where the accept-side e-value crosses 1/alpha.
    assert e_value_against_worse(counts, upper + 1e-6) >= math.log(20)
    assert e_value_against_worse(counts, upper - 1e-4) < math.log(20)
    # Wealth grows with the threshold it bets against.
    values = [e_value_against_worse(counts, t / 100) for t in range(-20, 30)]
    assert values == sorted(values)
    # The futility side is the mirror image (regressions and fixes swapped) with its own
    # grid of bets, and the lower bound is exactly where it crosses 1/alpha.
    mirrored = PairCounts(n=250, regressions=7, fixes=9)
    assert e_value_against_better(counts, 0.01) == pytest.approx(_log_wealth(
        mirrored.regressions, mirrored.fixes, mirrored.agreements, -0.01, _FUTILITY_GRID))
    assert e_value_against_better(counts, lower - 1e-6) >= math.log(20)
    assert e_value_against_better(counts, lower + 1e-4) < math.log(20)
    # Order-free: the e-value depends on the counts only.
    assert e_value_against_worse(PairCounts.from_pairs([(True, False), (True, True)] * 5), 0.1) \
        == e_value_against_worse(PairCounts(n=10, regressions=5), 0.1)


def _simulate(test: SequentialNonInferiority, pb: float, pc: float, rng: random.Random,
              batch: int = 10) -> str:
    while test.verdict == "continue":
        b = c = 0
        for _ in range(batch):
            u = rng.random()
            if u < pb:
                b += 1
            elif u < pb + pc:
                c += 1
        test.add(PairCounts(n=batch, regressions=b, fixes=c))
    return test.verdict


def test_sequential_false_accept_rate_is_below_alpha() -> None:
    """Candidates exactly at the margin (the hardest null case), three churn levels."""
    rng = random.Random(20240611)
    runs = accepted = 0
    for pb, pc in ((0.05, 0.0), (0.08, 0.03), (0.2, 0.15)):
        for _ in range(400):
            test = SequentialNonInferiority(margin=0.05, alpha=0.05, max_cases=400)
            accepted += _simulate(test, pb, pc, rng) == "accept"
            runs += 1
    rate = accepted / runs
    # Consistent with <= alpha: even the optimistic end of its 99 % interval is below.
    assert clopper_pearson_lower(accepted, runs, 0.01) <= 0.05
    assert rate <= 0.05


@pytest.mark.parametrize("drop", [0.05, 0.10, 0.20])
def test_sequential_false_accept_rate_is_below_alpha_in_every_row_beyond_the_margin(
        drop: float) -> None:
    """Each scenario of benchmarks/decision_efficiency.py at or beyond the margin, on its own
    (not pooled): churn of 3 % each way on top of the drop, batches of 8, budget 600."""
    rng = random.Random(int(drop * 1000))
    runs = 600
    accepted = sum(
        _simulate(SequentialNonInferiority(margin=0.05, alpha=0.05, max_cases=600),
                  0.03 + drop, 0.03, rng, batch=8) == "accept" for _ in range(runs))
    # Consistent with <= alpha: the optimistic end of its 99 % interval is below it (at the
    # margin itself the rate is near alpha by design; beyond it, far below).
    assert clopper_pearson_lower(accepted, runs, 0.01) <= 0.05
    if drop > 0.05:
        assert accepted / runs <= 0.01


def test_sequential_power_on_a_five_point_improvement_is_at_least_95_percent() -> None:
    """A candidate better by 5 points (3 % churn each way) is accepted in at least 95 % of runs."""
    rng = random.Random(5)
    runs = 200
    accepted = sum(
        _simulate(SequentialNonInferiority(margin=0.05, alpha=0.05, max_cases=600),
                  0.03, 0.08, rng, batch=8) == "accept" for _ in range(runs))
    assert accepted / runs >= 0.95


def test_sequential_stops_early_both_ways_and_runs_out_of_budget() -> None:
    rng = random.Random(7)
    good = SequentialNonInferiority(margin=0.05, max_cases=1000)
    assert _simulate(good, 0.01, 0.05, rng) == "accept"
    assert good.counts.n < 200
    state = good.state
    assert state.verdict == "accept" and state.upper_bound < 0.05
    bad = SequentialNonInferiority(margin=0.05, max_cases=1000)
    assert _simulate(bad, 0.3, 0.02, rng) == "reject"
    assert bad.counts.n < 100 and bad.state.lower_bound > 0
    # Verdicts are final: a later batch of agreement does not undo the rejection.
    bad.add(PairCounts(n=500))
    assert bad.verdict == "reject"
    # In the indifference zone with a small budget: inconclusive.
    middle = SequentialNonInferiority(margin=0.05, max_cases=60)
    assert _simulate(middle, 0.1, 0.075, rng) == "inconclusive"
    assert middle.counts.n == 60


def test_sequential_design_validates_its_settings() -> None:
    with pytest.raises(ConfigError):
        SequentialNonInferiority(margin=0.0)
    with pytest.raises(ConfigError):
        SequentialNonInferiority(margin=1.2)
    with pytest.raises(ConfigError):
        SequentialNonInferiority(margin=0.05, alpha=math.nan)
    with pytest.raises(ConfigError):
        SequentialNonInferiority(margin=0.05, max_cases=0)
    with pytest.raises(ConfigError):
        SequentialNonInferiority(margin=0.05, futility_threshold=0.2)
    improving = SequentialNonInferiority(margin=0.0, required_improvement=0.05)
    assert improving.threshold == -0.05
    assert improving.update([(False, True)] * 40) == "accept"
    with pytest.raises(ValueError):
        PairCounts(n=3, regressions=2, fixes=2)


def test_intersection_union_over_slices() -> None:
    assert slices_noninferior({}) == (True, [])
    assert slices_noninferior({"a": True, "b": True}) == (True, [])
    assert slices_noninferior({"b": False, "a": True, "c": False}) == (False, ["b", "c"])


# -- issue 22: the invariants of the sequential rule, as properties ------------------------------


def _log_sum(*values: float) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


@settings(max_examples=300, deadline=None)
@given(b=st.integers(0, 40), c=st.integers(0, 40), a=st.integers(0, 400),
       threshold=st.floats(-0.5, 0.5), gap=st.floats(0.0, 0.4), churn=st.floats(0.0, 1.0),
       grid=st.sampled_from([_ACCEPT_GRID, _FUTILITY_GRID]))
def test_the_wealth_is_a_supermartingale_at_every_null_point(
        b: int, c: int, a: int, threshold: float, gap: float, churn: float,
        grid: Any) -> None:
    """Wherever the run stands, the expected wealth after one more pair is at most the wealth
    now, at every point of H0 (drop >= threshold), for the accept side's grid of bets and
    the futility side's: computed exactly, not sampled."""
    drop = min(threshold + gap, 1.0)
    # Every (pi_b, pi_c) with pi_b - pi_c = drop: churn picks the discordance rate.
    lo, hi = abs(drop), 1.0
    s = lo + churn * (hi - lo)
    pi_b, pi_c = (s + drop) / 2, (s - drop) / 2
    now = _log_wealth(b, c, a, threshold, grid)
    terms = [math.log(p) + _log_wealth(b + db, c + dc, a + da, threshold, grid)
             for p, (db, dc, da) in ((pi_b, (1, 0, 0)), (pi_c, (0, 1, 0)),
                                     (1 - pi_b - pi_c, (0, 0, 1)))
             if p > 0 and _log_wealth(b + db, c + dc, a + da, threshold, grid) > -math.inf]
    if now == -math.inf:
        assert not terms  # a lost wealth stays lost
        return
    assert not terms or _log_sum(*terms) <= now + 1e-9


def test_the_wealth_under_the_null_averages_at_most_one_in_simulation() -> None:
    """Sampled paths at the margin (the hardest null point): the mean wealth after 50, 100 and
    200 pairs stays at most its start, 1, within four standard errors."""
    rng = random.Random(22)
    for pb, pc in ((0.05, 0.0), (0.08, 0.03), (0.2, 0.15)):
        for n in (50, 100, 200):
            values = []
            for _ in range(3000):
                b = c = 0
                for _ in range(n):
                    u = rng.random()
                    b += u < pb
                    c += pb <= u < pb + pc
                values.append(math.exp(_log_wealth(b, c, n - b - c, 0.05)))
            mean = sum(values) / len(values)
            spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            assert mean <= 1.0 + 4 * spread / math.sqrt(len(values))
