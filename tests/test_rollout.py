"""The rollout package on its own: state machine, policy, assignment, verdicts, the shared store,
and the anchor bugs of Argo Rollouts, Flagger and Kayenta, each with the opposite outcome."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import guardrails as gr
from guardrails.rollout import (
    Assigner,
    InvalidTransition,
    LiveRollout,
    PostgresRolloutStore,
    RolloutPolicy,
    RolloutState,
    RolloutStore,
    SQLiteRolloutStore,
    StepEvidence,
    apply_action,
    choose,
    evaluate,
    gaming_finding,
    judge,
    reduce_rows,
    start,
    transition,
)
from guardrails.stats import PairCounts

POLICY = RolloutPolicy(min_samples=20, step_deadline=60.0)


def _state(policy: RolloutPolicy = POLICY, **changes: Any) -> RolloutState:
    return start("c" * 64, "i" * 64, policy).model_copy(update=changes)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A rollout store on each shared backend."""
    if request.param == "sqlite":
        yield SQLiteRolloutStore(tmp_path / "rollout.sqlite")
        return
    dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    pg = PostgresRolloutStore(dsn, schema)
    yield pg
    pg.close()


# ---------------------------------------------------------------------------- the state machine

def test_a_rollout_walks_shadow_then_every_step_then_promoted() -> None:
    """advance goes shadow -> step 0 -> ... -> promoted; the last step (100 %) is promotion."""
    policy = RolloutPolicy(shadow=True, steps=(5, 50, 100))
    state = start("c", "i", policy)
    phases = [state.label()]
    while not state.final:
        state = transition(state, "advance", policy)
        phases.append(state.label())
    assert phases == ["shadow", "step 0", "step 1", "promoted"]
    assert state.weight(policy) == 100.0


def test_every_transition_counts_in_seq_and_final_states_accept_nothing() -> None:
    """seq grows by one per transition; promoted and aborted refuse every action."""
    aborted = transition(_state(), "abort", POLICY, "operator")
    assert aborted.seq == 1 and aborted.final
    for action in ("advance", "pause", "resume", "abort"):
        with pytest.raises(InvalidTransition):
            transition(aborted, action, POLICY)  # type: ignore[arg-type]


def test_pause_keeps_the_split_and_resume_returns_to_it() -> None:
    """A paused step still names its step; only resume leaves it, and advance is refused."""
    paused = transition(_state(step=1), "pause", POLICY)
    assert paused.phase == "paused" and paused.active_phase == "step"
    assert paused.weight(POLICY) == POLICY.steps[1]
    with pytest.raises(InvalidTransition):
        transition(paused, "advance", POLICY)
    assert transition(paused, "resume", POLICY).phase == "step"


@given(st.lists(st.sampled_from(["advance", "pause", "resume", "abort"]), max_size=12))
def test_choose_lets_abort_win_whatever_else_is_pending(actions: list[str]) -> None:
    """Of the actions asked at one decision point, abort is taken whenever it is among them."""
    chosen = choose(actions)  # type: ignore[arg-type]
    assert (chosen == "abort") == ("abort" in actions)


@settings(max_examples=50)
@given(st.lists(st.sampled_from(["advance", "pause", "resume", "abort"]), max_size=15))
def test_no_sequence_of_actions_leaves_a_final_state(actions: list[str]) -> None:
    """Whatever operators and evaluations do, once final a state stays what it is."""
    state = _state()
    for action in actions:
        try:
            state = transition(state, action, POLICY)  # type: ignore[arg-type]
        except InvalidTransition:
            continue
    if state.final:
        for action in ("advance", "resume", "abort"):
            with pytest.raises(InvalidTransition):
                transition(state, action, POLICY)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the policy

@pytest.mark.parametrize(("steps", "says"), [
    ((1.0, 5.0, 50.0), "never reaches all traffic"),
    ((5.0, 5.0, 100.0), "strictly increase"),
    ((50.0, 10.0, 100.0), "strictly increase"),
    ((0.0, 100.0), "outside (0, 100]"),
    ((), "empty"),
])
def test_a_schedule_that_cannot_end_at_100_percent_is_refused(steps: tuple[float, ...],
                                                              says: str) -> None:
    """Flagger #189 (a schedule that never reaches its maximum reported success): refused here."""
    with pytest.raises(ValidationError) as info:
        RolloutPolicy(steps=steps)
    assert says in str(info.value)


@pytest.mark.parametrize("field", ["min_samples", "max_consecutive_errors", "latency_limit",
                                   "step_deadline", "evaluate_every", "shadow_concurrency"])
def test_limits_must_be_positive(field: str) -> None:
    """Every limit of [rollout] is positive; zero names the field."""
    with pytest.raises(ValidationError, match=field):
        RolloutPolicy(**{field: 0})


def test_only_100_percent_without_shadow_is_refused() -> None:
    """A schedule with no live evidence before promotion is not a rollout."""
    with pytest.raises(ValidationError, match="gathers no live evidence"):
        RolloutPolicy(steps=(100.0,))
    assert RolloutPolicy(steps=(100.0,), shadow=True).steps == (100.0,)


def test_rollout_in_the_config_file_is_validated_when_loaded(tmp_path: Path) -> None:
    """A bad [rollout] in guardrails.toml is a ConfigError naming the section and key."""
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "x", "expect": "y"}\n')
    (tmp_path / "guardrails.toml").write_text(
        '[canaries]\nfiles = ["cases.jsonl"]\n[rollout]\nsteps = [10, 50]\n')
    with pytest.raises(gr.ConfigError, match=r"rollout.*never reaches all traffic"):
        gr.Guard.from_config(tmp_path / "guardrails.toml")


# ---------------------------------------------------------------------------- assignment

def test_assignment_is_the_same_for_the_same_key_and_salt() -> None:
    """Two replicas (two assigners) put every key in the same arm; another salt reshuffles."""
    a, b = Assigner("ab" * 16, 25.0, ("user_id",)), Assigner("ab" * 16, 25.0, ("user_id",))
    keys = [{"user_id": f"u{i}"} for i in range(2000)]
    assert [a.to_candidate(k) for k in keys] == [b.to_candidate(k) for k in keys]
    other = Assigner("cd" * 16, 25.0, ("user_id",))
    assert [a.to_candidate(k) for k in keys] != [other.to_candidate(k) for k in keys]


def test_the_bucket_of_a_key_is_fixed_across_library_versions() -> None:
    """Replicas running different releases during an upgrade must agree: the bucket is the
    first 8 bytes of BLAKE2b(key, key=salt), big-endian, modulo 10,000, now and later."""
    assigner = Assigner("ab" * 16, 25.0, ("user_id",))
    assert [assigner.bucket(k) for k in ("user-1", "user-2", "42")] == [689, 2909, 8981]


def test_a_key_that_fell_out_of_the_cache_is_assigned_as_before() -> None:
    """The cache only saves a rehash: past CACHE_SIZE keys, every key keeps its arm."""
    assigner = Assigner("ab" * 16, 25.0, ("user_id",))
    keys = [{"user_id": f"u{i}"} for i in range(Assigner.CACHE_SIZE + 10)]
    first = [assigner.to_candidate(k) for k in keys]
    assert [assigner.to_candidate(k) for k in keys] == first
    assert first == [assigner.bucket(k["user_id"]) < 2500 for k in keys]


@given(st.floats(min_value=0.5, max_value=50.0), st.floats(min_value=0.5, max_value=50.0))
@settings(max_examples=30)
def test_a_user_in_the_candidate_arm_stays_there_as_the_weight_grows(w1: float, w2: float) -> None:
    """Buckets nest: whoever a smaller step sends to the candidate, a larger step does too."""
    low, high = sorted((w1, w2))
    small, large = Assigner("ef" * 16, low, ("user_id",)), Assigner("ef" * 16, high, ("user_id",))
    for i in range(300):
        key = {"user_id": i}
        assert not small.to_candidate(key) or large.to_candidate(key)


def test_the_share_assigned_matches_the_weight() -> None:
    """About weight per cent of distinct users reach the candidate."""
    assigner = Assigner("01" * 16, 10.0, ("user_id", "session_id"))
    share = sum(assigner.to_candidate({"session_id": f"s{i}"}) for i in range(20000)) / 20000
    assert 0.09 < share < 0.11


# ---------------------------------------------------------------------------- verdicts

def _evidence(**fields: Any) -> StepEvidence:
    return StepEvidence(**fields)


def test_no_data_waits_and_at_the_deadline_pauses_never_advances() -> None:
    """Argo #1905, Flagger #1035/#1689 (a canary with no traffic passed): here it pauses."""
    assert judge(_evidence(elapsed=1.0), POLICY).action is None
    late = judge(_evidence(elapsed=61.0), POLICY)
    assert late.action == "pause" and late.findings[0].passed is False
    aborting = POLICY.model_copy(update={"on_inconclusive": "abort"})
    assert judge(_evidence(elapsed=61.0), aborting).action == "abort"


def test_an_inconclusive_step_is_never_promoted() -> None:
    """Argo #3850 (an inconclusive analysis still promoted): enough samples that decide
    nothing pause the rollout at the deadline."""
    pairs = PairCounts(n=40, regressions=4, fixes=3)  # neither worse nor non-inferior yet
    verdict = judge(_evidence(pairs=pairs, step_samples=40, step_failures=4, elapsed=61.0), POLICY)
    assert verdict.action == "pause"
    assert "never a pass" in verdict.reason


def test_too_little_data_is_not_a_pass_even_when_all_of_it_passed() -> None:
    """Fewer than min_samples observations: no verdict, however good they look."""
    pairs = PairCounts(n=19)
    assert judge(_evidence(pairs=pairs, step_samples=19), POLICY).action is None


def test_a_worse_candidate_is_aborted_and_a_good_one_advances() -> None:
    """The paired e-process decides in both directions once min_samples are in."""
    worse = judge(_evidence(pairs=PairCounts(n=100, regressions=25, fixes=2), step_samples=100,
                            step_failures=27), POLICY)
    assert worse.action == "abort" and worse.findings[0].check == "rollout_worse"
    good = judge(_evidence(pairs=PairCounts(n=200, regressions=1, fixes=3), step_samples=200,
                           step_failures=1), POLICY)
    assert good.action == "advance"


def test_hard_limits_abort_before_any_statistics() -> None:
    """A safety violation or a run of errors aborts at once, with no minimum sample."""
    assert judge(_evidence(safety_violation="pii"), POLICY).findings[0].check == "rollout_safety"
    errors = judge(_evidence(consecutive_errors=POLICY.max_consecutive_errors), POLICY)
    assert errors.action == "abort" and errors.findings[0].check == "rollout_errors"


def test_a_candidate_better_on_canaries_than_live_is_a_gaming_finding() -> None:
    """Canary all-pass with fixes, live clearly worse: the gaming finding, aborting if asked."""
    canary = PairCounts(n=200, regressions=0, fixes=20)
    live = PairCounts(n=400, regressions=40, fixes=30)
    assert gaming_finding(canary, live, 0.05) is not None
    assert gaming_finding(canary, PairCounts(n=400, regressions=10, fixes=20), 0.05) is None
    evidence = _evidence(pairs=live, step_samples=400, step_failures=45)
    policy = POLICY.model_copy(update={"on_gaming": "abort"})
    assert judge(evidence, policy, canary=canary).findings[0].check == "gaming"


def test_a_variance_only_latency_regression_is_caught() -> None:
    """Kayenta #780 (blind to a variance-only regression): same mean latency, wider spread,
    more calls over the latency limit, so the candidate is aborted."""
    rng = random.Random(7)
    policy = RolloutPolicy(min_samples=50, latency_limit=2.0)
    live = LiveRollout(_state(policy), policy, None, None)  # type: ignore[arg-type]
    rows = []
    for _ in range(400):
        inc = live.failed_by_latency(rng.gauss(1.0, 0.2))
        cand = live.failed_by_latency(rng.gauss(1.0, 1.2))  # same mean, six times the spread
        rows += [(0, "incumbent", int(inc), None, None), (0, "candidate", int(cand), None, None)]
    verdict = judge(reduce_rows(rows, 0, 1.0), policy)
    assert verdict.action == "abort" and verdict.findings[0].check == "rollout_worse"


def test_a_nan_latency_counts_as_a_failure() -> None:
    """Flagger #1098 (NaN read as 0): a NaN measurement is a failed call here."""
    live = LiveRollout(_state(), POLICY, None, None)  # type: ignore[arg-type]
    assert live.failed_by_latency(math.nan) and live.failed_by_latency(math.inf)


def test_split_calls_pair_by_arrival_and_real_pairs_count_as_pairs() -> None:
    """k-th candidate call pairs with an incumbent call; shadow rows are pairs already."""
    rows = [(0, "incumbent", 0, None, None), (0, "candidate", 1, None, None),
            (0, "incumbent", 1, None, None), (-1, "pair", 0, 1, None)]
    evidence = reduce_rows(rows, 0, 0.0)
    assert evidence.pairs == PairCounts(n=2, regressions=1, fixes=1)
    assert evidence.step_samples == 1 and evidence.step_failures == 1


# ---------------------------------------------------------------------------- the store

def test_the_store_counts_each_call_and_each_feedback_once(store: RolloutStore) -> None:
    """A call flushed twice and feedback given twice are counted once."""
    state = _state()
    assert store.start(state)
    rows = [(f"r{i}", state.attempt, 0, "candidate", 0, None, None, 0.1) for i in range(5)]
    store.add_calls(rows)
    store.add_calls(rows)
    assert store.count_calls(state.attempt) == 5
    assert store.add_feedback("r0", True) is True
    assert store.add_feedback("r0", False) is False
    assert store.evidence(state, 0.0).step_failures == 1


def test_only_one_rollout_is_active_and_only_one_transition_wins(store: RolloutStore) -> None:
    """A second start is refused; of two moves from the same seq only the first is stored."""
    state = _state()
    assert store.start(state) and not store.start(_state())
    assert store.swap(state, transition(state, "abort", POLICY))
    assert not store.swap(state, transition(state, "advance", POLICY))
    stored = store.get(state.attempt)
    assert stored is not None and stored.phase == "aborted" and store.active() is None


def test_abort_recorded_first_wins_over_a_pending_promotion(store: RolloutStore) -> None:
    """Argo #4461 (abort ignored once promotion was pending): the promotion that was about to
    be taken from the same state loses its compare-and-swap; nothing is promoted."""
    ledger = gr.MemoryLedger()
    ledger.put_state({"v": 1})
    state = _state(step=len(POLICY.steps) - 2)  # the last step before 100 %
    store.start(state)
    aborted = apply_action(store, ledger, POLICY, state, "abort", "operator")
    assert aborted is not None and aborted.phase == "aborted"
    assert apply_action(store, ledger, POLICY, state, "advance", "evidence") is None
    assert ledger.served_version() is None
    assert [e.body["action"] for e in ledger.entries()] == ["abort"]


def test_a_retry_after_an_abort_is_a_new_attempt(store: RolloutStore) -> None:
    """Argo #3120 (an aborted rollout could not be retried): a new attempt, id and salt."""
    first = _state()
    store.start(first)
    store.swap(first, transition(first, "abort", POLICY))
    retry = start(first.candidate, first.incumbent, POLICY)
    assert retry.attempt != first.attempt and retry.salt != first.salt
    assert store.start(retry) and store.active() == retry


def test_evaluate_reads_all_replicas_evidence_and_records_the_step(store: RolloutStore) -> None:
    """Evidence from two replicas' flushes adds up; the advance is a ledger event."""
    ledger = gr.MemoryLedger()
    state = _state()
    store.start(state)
    for replica in ("a", "b"):
        store.add_calls([(f"{replica}{arm}{i}", state.attempt, 0, arm, 0, None, None, None)
                         for i in range(60) for arm in ("candidate", "incumbent")])
    moved, verdict = evaluate(store, ledger, POLICY, state,
                              now=state.entered_at + timedelta(seconds=1))
    assert verdict.action == "advance" and moved.step == 1
    body = next(ledger.entries()).body
    assert body["event"] == "rollout" and body["weight"] == POLICY.steps[1]


# ---------------------------------------------------------------------------- latency

LATENCY = RolloutPolicy(min_samples=50, latency_margin=0.2, latency_limit=10.0)


def _timed_rows(rng: random.Random, n: int, slowdown: float) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for _ in range(n):
        inc, cand = rng.lognormvariate(0, 0.3), rng.lognormvariate(0, 0.3) * slowdown
        rows += [(0, "incumbent", 0, None, None, inc), (0, "candidate", 0, None, None, cand)]
    return rows


def test_a_candidate_slower_across_the_distribution_is_aborted_before_any_call_times_out(
        ) -> None:
    """A 40 % slower median, every call far under latency_limit: the sign test on the split's
    latency pairs aborts (rollout_slower); without latency_margin it is not looked at."""
    rows = _timed_rows(random.Random(3), 300, 1.4)
    verdict = judge(reduce_rows(rows, 0, 1.0), LATENCY)
    assert verdict.action == "abort" and verdict.findings[0].check == "rollout_slower"
    assert reduce_rows(rows, 0, 1.0).step_failures == 0
    off = judge(reduce_rows(rows, 0, 1.0), LATENCY.model_copy(update={"latency_margin": None}))
    assert off.action != "abort"


def test_a_candidate_as_fast_is_aborted_for_latency_in_at_most_alpha_of_runs() -> None:
    """The latency test's false abort rate, checked after every 10 pairs up to 1,000, over
    1,000 seeded runs: at most alpha, whatever the stopping time."""
    aborted = 0
    for seed in range(1000):
        rng = random.Random(seed)
        slower = faster = 0
        for n in range(1, 1001):
            d = rng.random()
            slower, faster = slower + (d < 0.5), faster + (d >= 0.5)
            if n % 10 == 0 and judge(StepEvidence(
                    latency=PairCounts(n=n, regressions=slower, fixes=faster),
                    step_samples=LATENCY.min_samples), LATENCY).action == "abort":
                aborted += 1
                break
    assert aborted / 1000 <= LATENCY.alpha, aborted


def test_latency_pairs_count_only_timed_split_calls() -> None:
    """Shadow pairs and rows without a latency (an older store) give no latency pairs."""
    rows = [(-1, "pair", 0, 0, None, None), (0, "incumbent", 0, None, None),
            (0, "candidate", 0, None, None), (0, "incumbent", 0, None, None, 0.2),
            (0, "candidate", 0, None, None, 0.1)]
    assert reduce_rows(rows, 0, 0.0).latency == PairCounts(n=1, regressions=0, fixes=1)
