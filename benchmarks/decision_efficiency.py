"""How many model calls the sequential gate needs, against a fixed-n design of the same alpha and power.

Simulates candidates with known true pass rates against an incumbent and
runs each through the gate's statistics (``guardrails.stats._exact``):

* sequential: cases in the runner's order (``--order``, default the
  runner's: a quarter of a safety case per capability pair until capability
  is decided, then the rest of the safety cases); the
  anytime-valid paired non-inferiority test (``SequentialNonInferiority``)
  looks after every batch; the first safety failure rejects; accepting
  needs every safety case to have run;
* fixed-n: every safety case and ``n_fixed`` capability pairs, then the exact
  unconditional paired test (``paired_noninferiority``), with ``n_fixed`` the
  smallest size whose power on the design alternative (a candidate as good
  as the incumbent) matches the sequential design's measured power there.

Calls are counted as the runner makes them, both sides: a capability case
costs two calls (candidate and incumbent), a safety case one (only the
candidate is asked: the safety gate judges the candidate alone). The runner
before issue 22 also sent every safety case to the incumbent and ran all
safety cases first; ``--order safety-first --safety-calls 2`` reproduces it
(the BEFORE figures of docs/canaries.md); ``--order even`` the runner of the
first part of issue 22 (both pools ending together). The fixed-n design is always
counted at one call per safety case.

Run: ``python benchmarks/decision_efficiency.py``. ``GUARDRAILS_BENCH_N``
sets the number of simulated candidates (default 10,000); a small value
(e.g. 400) is the short mode the test suite runs. Figures are printed, never
asserted: the guarantees are asserted in ``tests/test_stats.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass

from guardrails.canary._runner import safety_share
from guardrails.stats._exact import (
    PairCounts,
    SequentialNonInferiority,
    clopper_pearson_upper,
    min_cases_for_failure_bound,
    min_cases_to_accept,
    paired_noninferiority,
)

ALPHA = 0.05
MARGIN = 0.05
INCUMBENT_PASS_RATE = 0.80
CHURN = 0.03
"""Fraction of cases the candidate breaks and, separately, fixes, on top of its net change:
real candidates change answers both ways."""
MAX_SAFETY_FAILURE_RATE = 0.005
MAX_CAPABILITY_CASES = 600
BATCH = 8
"""Capability pairs per look (think: the runner's concurrency)."""
SEED = 20240611


@dataclass(frozen=True)
class Scenario:
    name: str
    drop: float
    """True p_incumbent - p_candidate on capability cases (negative: the candidate is better)."""
    safety_failure_rate: float = 0.0

    @property
    def regress_rate(self) -> float:
        return CHURN + max(self.drop, 0.0)

    @property
    def fix_rate(self) -> float:
        return CHURN + max(-self.drop, 0.0)


SCENARIOS = (
    Scenario("better by 5", -0.05),
    Scenario("equal", 0.0),
    Scenario("worse by 2", 0.02),
    Scenario("worse by 5", 0.05),
    Scenario("worse by 10", 0.10),
    Scenario("worse by 20", 0.20),
    Scenario("safety 0.5 %", 0.0, 0.005),
    Scenario("safety 2 %", 0.0, 0.02),
)


BOUNDARY = "group"
"""``--boundary``: ``group`` (the rule's default: group-sequential where calibrated) or
``anytime`` (the e-process alone, the design before the group-sequential boundary)."""

SAFETY_CALLS = 1
"""Calls per safety case (``--safety-calls``): 1 now, 2 before the incumbent stopped being asked."""


@dataclass
class Run:
    verdict: str
    capability: int
    safety: int

    @property
    def calls(self) -> int:
        return 2 * self.capability + SAFETY_CALLS * self.safety

    @property
    def incumbent_calls(self) -> int:
        return self.capability + (SAFETY_CALLS - 1) * self.safety

    @property
    def cases(self) -> int:
        return self.capability + self.safety


def _first_safety_failure(rate: float, rng: random.Random) -> int | None:
    """1-based position of the first failing safety case (geometric), None if it never fails."""
    if rate <= 0.0:
        return None
    return 1 + int(math.log(1.0 - rng.random()) / math.log1p(-rate))


def _batch(size: int, scenario: Scenario, rng: random.Random) -> PairCounts:
    b = c = 0
    for _ in range(size):
        u = rng.random()
        if u < scenario.regress_rate:
            b += 1
        elif u < scenario.regress_rate + scenario.fix_rate:
            c += 1
    return PairCounts(n=size, regressions=b, fixes=c)


def run_sequential(scenario: Scenario, safety_cases: int, rng: random.Random,
                   order: str = "interleaved", share_ratio: float | None = None) -> Run:
    """One candidate through the runner's order of cases (``guardrails/canary/_runner.py``).

    ``safety-first``: every safety case before the first capability pair (the runner
    before issue 22); ``even``: each capability batch carries its share of the safety
    cases, so both pools would end together (the runner of the first part of issue 22);
    ``interleaved``: each batch carries ``SAFETY_SHARE`` safety cases per capability case
    (``guardrails/canary/_runner.py``: the runner now; ``--safety-share`` overrides the
    ratio); ``capability-first``: safety cases only once capability is shown. In every
    order, once capability is shown the remaining safety cases run at once.
    """
    test = SequentialNonInferiority(margin=MARGIN, alpha=ALPHA, max_cases=MAX_CAPABILITY_CASES,
                                    boundary=BOUNDARY)
    fails_at = _first_safety_failure(scenario.safety_failure_rate, rng)
    share = {"safety-first": safety_cases,
             "interleaved": safety_share(safety_cases, MAX_CAPABILITY_CASES, BATCH,
                                         sequential=True),
             "even": math.ceil(safety_cases * BATCH / MAX_CAPABILITY_CASES),
             "capability-first": 0}[order]
    if share_ratio is not None:
        share = min(math.ceil(safety_cases * BATCH / MAX_CAPABILITY_CASES),
                    math.ceil(share_ratio * BATCH))
    safety_done = 0
    while True:
        # Safety cases of this round go out first (with safety-first: all of them), then the
        # round's capability batch; once capability is shown, only safety stands in the way,
        # once it is rejected or out of budget no further case can change the verdict.
        step = {"continue": share, "accept": safety_cases}.get(test.verdict, 0)
        step = min(step, safety_cases - safety_done)
        if fails_at is not None and fails_at <= safety_done + step:
            return Run("reject", test.counts.n, fails_at)
        safety_done += step
        if test.verdict in ("reject", "inconclusive"):
            return Run(test.verdict, test.counts.n, safety_done)
        if test.verdict == "accept" and safety_done == safety_cases:
            return Run("accept", test.counts.n, safety_done)
        if test.verdict == "continue":
            test.add(_batch(min(BATCH, MAX_CAPABILITY_CASES - test.counts.n), scenario, rng))


def _fixed_power(n: int, scenario: Scenario, mass: float = 1e-5) -> float:
    """Exact power of the fixed-n test: sum over the likely (regressions, fixes) outcomes."""
    pb, pc = scenario.regress_rate, scenario.fix_rate
    log_n = math.lgamma(n + 1)
    outcomes = []
    for b in range(n + 1):
        for c in range(n - b + 1):
            a = n - b - c
            lp = (log_n - math.lgamma(b + 1) - math.lgamma(c + 1) - math.lgamma(a + 1)
                  + b * math.log(pb) + c * math.log(pc) + a * math.log1p(-pb - pc))
            if lp > math.log(mass) - 8:
                outcomes.append((math.exp(lp), b, c))
    outcomes.sort(reverse=True)
    power = covered = 0.0
    for p, b, c in outcomes:
        if covered > 1.0 - mass:
            break
        covered += p
        counts = PairCounts(n=n, regressions=b, fixes=c)
        if paired_noninferiority(counts, margin=MARGIN, alpha=ALPHA).accepted:
            power += p
    return power


def _normal_sample_size(scenario: Scenario, power: float) -> int:
    """Large-sample size of the paired score test (Nam 1997), a floor for any fixed-n test."""
    z_a = statistics.NormalDist().inv_cdf(1 - ALPHA)
    z_b = statistics.NormalDist().inv_cdf(power)
    pb, pc, t = scenario.regress_rate, scenario.fix_rate, MARGIN
    var1 = pb + pc - (pb - pc) ** 2
    var0 = var1 + t * t  # variance on the null boundary with the same discordance, roughly
    return math.ceil((z_a * math.sqrt(var0) + z_b * math.sqrt(var1)) ** 2 / (t - (pb - pc)) ** 2)


def fixed_n_for_power(target: float, exact: bool) -> tuple[int, float]:
    """Smallest capability n whose fixed-n test reaches ``target`` power on 'equal'."""
    equal = SCENARIOS[1]
    n = _normal_sample_size(equal, target)
    if not exact:
        return n, float("nan")
    lo_n, hi_n = n // 2, n
    while _fixed_power(hi_n, equal) < target:
        lo_n, hi_n = hi_n, math.ceil(hi_n * 1.15)
    while hi_n - lo_n > max(2, hi_n // 100):
        mid = (lo_n + hi_n) // 2
        if _fixed_power(mid, equal) >= target:
            hi_n = mid
        else:
            lo_n = mid
    return hi_n, _fixed_power(hi_n, equal)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", choices=("interleaved", "even", "safety-first",
                                            "capability-first"),
                        default="interleaved", help="order of safety and capability cases")
    parser.add_argument("--safety-share", type=float, default=None,
                        help="safety cases per capability case while capability is undecided")
    parser.add_argument("--boundary", choices=("group", "anytime"), default="group",
                        help="the sequential test's boundary")
    parser.add_argument("--safety-calls", type=int, choices=(1, 2), default=1,
                        help="calls per safety case (2: the incumbent is asked too)")
    return parser.parse_args()


def main() -> int:
    global SAFETY_CALLS, BOUNDARY
    args = _args()
    SAFETY_CALLS = args.safety_calls
    BOUNDARY = args.boundary
    total = int(os.environ.get("GUARDRAILS_BENCH_N", "10000"))
    short = total < 2000
    per = max(1, total // len(SCENARIOS))
    rng = random.Random(SEED)
    safety_cases = min_cases_for_failure_bound(MAX_SAFETY_FAILURE_RATE, ALPHA)
    started = time.perf_counter()
    runs = {s.name: [run_sequential(s, safety_cases, rng, args.order, args.safety_share)
                     for _ in range(per)] for s in SCENARIOS}
    seq_seconds = time.perf_counter() - started
    power_equal = sum(r.verdict == "accept" for r in runs["equal"]) / len(runs["equal"])
    n_fixed, exact_power = fixed_n_for_power(power_equal, exact=not short)
    fixed_calls = 2 * n_fixed + safety_cases

    print(f"decision efficiency: {per * len(SCENARIOS)} simulated candidates, seed {SEED}, "
          f"alpha {ALPHA}, margin {MARGIN}, incumbent pass rate {INCUMBENT_PASS_RATE}, "
          f"churn {CHURN} each way, batch {BATCH}; {BOUNDARY} boundary, order {args.order}"
          f"{'' if args.safety_share is None else f' (safety share {args.safety_share:g})'}, "
          f"{SAFETY_CALLS} call(s) per safety case")
    print(f"safety cases: {safety_cases} (zero failures; bound <= {MAX_SAFETY_FAILURE_RATE}); "
          f"capability budget {MAX_CAPABILITY_CASES}")
    print(f"all-agreeing candidate accepted after {min_cases_to_accept(MARGIN, ALPHA)} cases "
          f"(sequential), {min_cases_to_accept(MARGIN, ALPHA, sequential=False)} (fixed-n exact); "
          f"floor for any valid test {math.ceil(math.log(ALPHA) / math.log1p(-MARGIN))}")
    how = ("exact power by enumeration" if not short
           else "large-sample size (short mode skips the exact power search)")
    print(f"fixed-n design: {n_fixed} capability pairs + {safety_cases} safety = "
          f"{fixed_calls} calls per candidate ({how}; power on 'equal' "
          f"{exact_power if not short else power_equal:.3f} vs sequential {power_equal:.3f})")
    print()
    _table(runs, fixed_calls)
    _summary(runs, n_fixed, fixed_calls, safety_cases)
    print(f"simulation time {seq_seconds:.1f} s")
    return 0


def _rate(rs: list[Run], verdict: str) -> float:
    return sum(r.verdict == verdict for r in rs) / len(rs)


def _table(runs: dict[str, list[Run]], fixed_calls: int) -> None:
    header = (f"{'scenario':<14}{'accept':>8}{'reject':>8}{'inconcl':>8}{'pairs':>8}"
              f"{'mean cases':>11}{'mean calls':>11}{'incumb.':>9}{'max calls':>10}"
              f"{'fixed':>7}{'saving':>8}")
    print(header)
    print("-" * len(header))
    for s in SCENARIOS:
        rs = runs[s.name]
        calls = [r.calls for r in rs]
        print(f"{s.name:<14}{_rate(rs, 'accept'):>8.3f}{_rate(rs, 'reject'):>8.3f}"
              f"{_rate(rs, 'inconclusive'):>8.3f}"
              f"{statistics.mean(r.capability for r in rs):>8.1f}"
              f"{statistics.mean(r.cases for r in rs):>11.1f}"
              f"{statistics.mean(calls):>11.1f}"
              f"{statistics.mean(r.incumbent_calls for r in rs):>9.1f}"
              f"{max(calls):>10d}{fixed_calls:>7d}"
              f"{1 - statistics.mean(calls) / fixed_calls:>8.1%}")
    print("-" * len(header))


def _summary(runs: dict[str, list[Run]], n_fixed: int, fixed_calls: int,
             safety_cases: int) -> None:
    for s in SCENARIOS:
        if s.drop >= MARGIN:
            rs = runs[s.name]
            rate = _rate(rs, "accept")
            upper = clopper_pearson_upper(sum(r.verdict == "accept" for r in rs), len(rs), ALPHA)
            print(f"false-accept rate, {s.name} (at or beyond the margin): {rate:.4f} "
                  f"(95 % upper bound {upper:.4f}; alpha {ALPHA})")
    for s in SCENARIOS:
        if s.safety_failure_rate:
            observed = _rate(runs[s.name], "accept")
            spread = 1.96 * math.sqrt(max(observed * (1 - observed), 1e-12) / len(runs[s.name]))
            print(f"false-accept rate, {s.name} safety failures: {observed:.4f} "
                  f"(95 % CI +-{spread:.4f}; exact chance of no failure in {safety_cases} "
                  f"cases: {(1 - s.safety_failure_rate) ** safety_cases:.4f})")
    print(f"power on true improvements (better by 5): {_rate(runs['better by 5'], 'accept'):.3f}")
    cap_seq = statistics.mean(
        r.capability for s in SCENARIOS if not s.safety_failure_rate for r in runs[s.name])
    print(f"capability pairs per candidate (capability scenarios): sequential mean {cap_seq:.1f}, "
          f"fixed {n_fixed} ({1 - cap_seq / n_fixed:.1%} fewer; target >= 50 %)")
    all_calls = [r.calls for rs in runs.values() for r in rs]
    print(f"model calls per candidate, both sides: sequential mean "
          f"{statistics.mean(all_calls):.1f} (incumbent "
          f"{statistics.mean(r.incumbent_calls for rs in runs.values() for r in rs):.1f}), "
          f"median {statistics.median(all_calls):.0f}; fixed-n {fixed_calls}; "
          f"saving {1 - statistics.mean(all_calls) / fixed_calls:.1%} (target >= 55 %)")
    worst = max(statistics.mean(r.calls for r in rs) for rs in runs.values())
    print(f"costliest scenario: mean {worst:.1f} calls, {worst / fixed_calls:.2f}x fixed-n "
          f"(target <= 1.00x)")


if __name__ == "__main__":
    sys.exit(main())
