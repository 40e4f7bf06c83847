"""The canary runner: paired, concurrent, retried, timed out, sequential, fail-closed.

Candidate and incumbent answer the same sampled capability cases; safety
cases go to the candidate alone (the safety gate judges the candidate only,
so an incumbent call there would carry no information). A few smoke cases
run first; then capability cases in a seeded, recorded order, in batches,
each batch carrying a share of the safety cases (``SAFETY_SHARE``), so a
failing candidate stops on whichever shows first: the first safety failure
ends the run, and after every complete batch a sequential rule may stop it
early in either direction. Once the rule has seen enough capability pairs (its interim look
says ``safety``), the remaining safety cases run and nothing else. A call
that fails, times out, or returns nothing counts as a failed case for its
side, never as a pass. Every call made is counted, per side, in the evidence.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._messages import Request
from .._threads import CallTimeout
from ._backends import Caller, DaskBackend, DaskSettings, EvaluationBackend, LocalBackend
from ._evidence import SEQUENTIAL_STOP, SMOKE_STOP, CanaryEvidence, CaseOutcome
from ._ray import RayBackend, RaySettings
from ._suite import CanaryCase, CanarySuite, judge_output

T = TypeVar("T")

Progress = Callable[[int, int, str], None]
"""Called after each batch with (cases done, cases planned, interim status:
``continue``, ``accept`` or ``reject``)."""


class RunSettings(BaseModel):
    """How the canary stage runs; part of the guard's fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(default=16, ge=1, le=1024)
    """Calls in flight at once (candidate and incumbent calls count separately)."""
    batch_size: int = Field(default=32, ge=1)
    """Capability cases between two looks of a sequential rule."""
    retries: int = Field(default=2, ge=0, le=10)
    """Extra attempts for a call that failed transiently (timeout, connection error)."""
    retry_budget: int = Field(default=32, ge=0)
    """Most retries one review may spend, whatever the number of calls."""
    hidden_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the hidden capability cases each review draws (seeded and recorded), so
    repeated proposals cannot map the whole hidden set."""
    smoke_cases: int = Field(default=4, ge=0)
    """Capability cases run first; a candidate that errors on every one is rejected at once."""
    gaming_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    """Significance for 'regresses on hidden cases more than on public ones' (gaming)."""
    dask: DaskSettings | None = None
    """Evaluate the cases on a Dask cluster (``DaskBackend``); ``None``: in this process."""
    ray: RaySettings | None = None
    """Evaluate the cases on a Ray cluster (``RayBackend``); at most one of ``dask``, ``ray``."""

    @model_validator(mode="after")
    def _one_cluster(self) -> RunSettings:
        if self.dask is not None and self.ray is not None:
            raise ValueError("dask and ray both name a cluster; keep one")
        return self


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | CallTimeout | ConnectionError) or bool(
        getattr(exc, "transient", False))


class _Budget:
    def __init__(self, size: int) -> None:
        self.left = size
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class _Variety:
    """Whether the outputs seen so far differ: ``None`` before two, then ``True`` or ``False``.

    Constant work per output once two differ; nothing is kept but the first output.
    """

    def __init__(self) -> None:
        self.first: Any = None
        self.count = 0
        self.differ = False

    def see(self, output: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.first = output
        elif not self.differ:
            try:
                self.differ = bool(output != self.first)
            except Exception:  # an array compared elementwise, an object that refuses
                self.differ = True

    @property
    def varied(self) -> bool | None:
        return None if self.count < 2 else self.differ


class _Side:
    """One client (candidate or incumbent) as the runner calls it."""

    def __init__(self, call: Caller, timeout: float, settings: RunSettings, budget: _Budget,
                 limit: asyncio.Semaphore) -> None:
        self.call = call
        self.timeout = timeout
        self.settings = settings
        self.budget = budget
        self.limit = limit
        self.calls = 0
        """Calls made, retries included (what an API bills)."""
        self.outputs = _Variety()
        """Whether this side's answers differed from one another (the control check's floor)."""

    async def _once(self, request: Request) -> Any:
        async with self.limit:
            self.calls += 1
            return await self.call(request, self.timeout)

    async def answer(self, case: CanaryCase) -> tuple[bool, str | None, bool, bool]:
        """(passed, why not, answered, judged): answered is False when the call raised or timed
        out; judged is False when the checker itself failed on the output."""
        # The request is built exactly as a production request: nothing marks it as a canary.
        request = Request(input=case.input)
        try:
            output: Any = await self._with_retries(request)
        except CallTimeout as exc:
            return False, f"timeout: {exc}", False, True
        except Exception as exc:
            return False, f"client raised {type(exc).__name__}", False, True
        self.outputs.see(output)
        passed, why, checker_failed = judge_output(case.expect, output)
        return passed, (why or None), True, not checker_failed

    async def _with_retries(self, request: Request) -> Any:
        """The first attempt as it is; tenacity only for a call that needs a retry.

        Building a tenacity controller costs more than a fast local call (issue 22), and
        almost every call succeeds at once.
        """
        try:
            return await self._once(request)
        except Exception as exc:
            if not self.settings.retries or not (_transient(exc) and self.budget.take()):
                raise
        # tenacity is imported here, on the cold path, to keep it out of `import guardrails`.
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        # The waits continue the schedule of one controller around every attempt: 10 ms
        # before the first retry, then 20, 40, ... ms, at most 0.5 s.
        await asyncio.sleep(0.01)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retries),
            retry=retry_if_exception(lambda e: _transient(e) and self.budget.take()),
            wait=wait_exponential(multiplier=0.02, max=0.5), reraise=True)
        return await retrying(self._once, request)


def draw_cases(suite: CanarySuite, settings: RunSettings, seed: int
               ) -> tuple[list[CanaryCase], list[CanaryCase], list[str]]:
    """Safety cases, then capability cases in a seeded order with a seeded share of the
    hidden ones; returns (safety, capability, ids of the hidden cases drawn)."""
    rng = random.Random(seed)
    safety = list(suite.safety)
    rng.shuffle(safety)
    public = [c for c in suite.capability if not c.hidden]
    hidden = [c for c in suite.capability if c.hidden]
    drawn = rng.sample(hidden, math.ceil(settings.hidden_fraction * len(hidden))) if hidden else []
    capability = public + drawn
    rng.shuffle(capability)
    return safety, capability, sorted(c.id for c in drawn)


SAFETY_SHARE = 0.25
"""Safety cases a sequential run sends per capability case while capability is undecided.

Each capability pair costs two calls and each safety case one, and most candidates are
decided on capability (a clear regression stops after a few dozen pairs, and every
safety case it ran was spent for nothing) while a failing safety case stops a run at
once. A quarter of a safety case per pair balances the two: over the scenario mix of
``benchmarks/decision_efficiency.py`` it spends the fewest calls of the shares tried
(0, 1/8, 1/4, 1/2, and 1: both pools ending together; issue 22). Once capability is
shown, the remaining safety cases run and nothing else."""


def safety_share(safety: int, capability: int, step: int, *, sequential: bool) -> int:
    """Safety cases each batch of ``step`` capability cases carries (see :data:`SAFETY_SHARE`).

    Never more than would make both pools end together; without a sequential rule
    (nothing stops early) every safety case goes with the one batch.
    """
    if not sequential or capability == 0:
        return safety
    together = math.ceil(safety * step / capability)
    return min(together, math.ceil(SAFETY_SHARE * step))


Interim = Callable[[Sequence[CaseOutcome]], Literal["accept", "reject", "continue", "safety"]]
"""A rule's look after a batch: stop (``accept``, ``reject``), go on, or ``safety``: capability
is decided in the candidate's favour, run the remaining safety cases and look again."""


async def _paired(sides: tuple[_Side, _Side], case: CanaryCase) -> CaseOutcome:
    """Candidate and incumbent answer one case concurrently; their outcomes as one pair."""
    # The incumbent's call as a task, the candidate's in this one: one task fewer per pair
    # than gathering both (issue 22).
    incumbent = asyncio.ensure_future(sides[1].answer(case))
    try:
        cand_ok, cand_err, cand_answered, _ = await sides[0].answer(case)
    except BaseException:  # cancelled: the run ended; the incumbent's call goes with it
        incumbent.cancel()
        raise
    inc_ok, inc_err, inc_answered, inc_judged = await incumbent
    # A checker failing on the candidate's output is the candidate's failure; failing
    # on the incumbent's, it is the evaluator's: the incumbent's result is unknown.
    return CaseOutcome(case_id=case.id, safety=case.is_safety, hidden=case.hidden,
                       tags=case.tags, candidate_passed=cand_ok,
                       incumbent_passed=inc_ok if inc_answered and inc_judged else None,
                       candidate_error=cand_err, incumbent_error=inc_err,
                       candidate_answered=cand_answered, incumbent_answered=inc_answered,
                       checker_error=None if inc_judged else inc_err)


async def _safety_only(side: _Side, case: CanaryCase) -> CaseOutcome:
    """The candidate alone answers a safety case; the incumbent is not asked."""
    passed, error, answered, _ = await side.answer(case)
    return CaseOutcome(case_id=case.id, safety=True, hidden=case.hidden, tags=case.tags,
                       candidate_passed=passed, candidate_error=error,
                       candidate_answered=answered, incumbent_answered=False,
                       incumbent_called=False)


def backend_for(settings: RunSettings) -> EvaluationBackend:
    """The backend ``settings`` ask for: a Dask or Ray cluster, or this process."""
    if settings.dask is not None:
        return DaskBackend(settings.dask)
    if settings.ray is not None:
        return RayBackend(settings.ray)
    return LocalBackend()


async def run_canaries_async(
    candidate: Any, incumbent: Any, suite: CanarySuite, *, case_timeout: float,
    settings: RunSettings, seed: int, interim: Interim | None = None,
    progress: Progress | None = None, backend: EvaluationBackend | None = None,
) -> CanaryEvidence:
    """Run the suite on both sides and return the paired evidence (ids only, no content).

    ``backend``: where the calls run (default: ``backend_for(settings)``). The decision
    depends on the outputs only: any backend returning the same outputs gives the same
    evidence for the same seed.
    """
    backend = backend if backend is not None else backend_for(settings)
    with backend.sides(candidate, incumbent) as (candidate_call, incumbent_call):
        return await _run(candidate, (candidate_call, incumbent_call), suite,
                          case_timeout=case_timeout, settings=settings, seed=seed,
                          interim=interim, progress=progress)


async def _run(
    candidate: Any, calls: tuple[Caller, Caller], suite: CanarySuite, *, case_timeout: float,
    settings: RunSettings, seed: int, interim: Interim | None, progress: Progress | None,
) -> CanaryEvidence:
    budget = _Budget(settings.retry_budget)
    limit = asyncio.Semaphore(settings.concurrency)
    # A sandboxed candidate answers one call per worker process: queueing for a worker
    # must not count against the call's timeout, so its side gets its own, smaller limit.
    workers = getattr(candidate, "workers", None)
    candidate_limit = (asyncio.Semaphore(min(settings.concurrency, workers))
                       if isinstance(workers, int) and workers > 0 else limit)
    sides = (_Side(calls[0], case_timeout, settings, budget, candidate_limit),
             _Side(calls[1], case_timeout, settings, budget, limit))
    safety, capability, drawn = draw_cases(suite, settings, seed)
    run = _Run(sides, len(safety) + len(capability), seed, drawn, progress)
    return await run.cases(safety, capability, settings, interim)


class _Run:
    """One canary run's outcomes so far, and how it ends (see the module docstring)."""

    def __init__(self, sides: tuple[_Side, _Side], planned: int, seed: int, drawn: list[str],
                 progress: Progress | None) -> None:
        self.sides = sides
        self.planned = planned
        self.seed = seed
        self.drawn = drawn
        self.progress = progress
        self.outcomes: list[CaseOutcome] = []

    def evidence(self, stop_reason: str = "") -> CanaryEvidence:
        return CanaryEvidence(outcomes=tuple(self.outcomes), planned=self.planned,
                              stopped_early=bool(stop_reason), stop_reason=stop_reason,
                              seed=self.seed, hidden_drawn=tuple(self.drawn),
                              candidate_calls=self.sides[0].calls,
                              incumbent_calls=self.sides[1].calls,
                              incumbent_varied=self.sides[1].outputs.varied)

    def report(self, status: str) -> None:
        if self.progress is not None:
            self.progress(len(self.outcomes), self.planned, status)

    async def batch(self, safety: Sequence[CanaryCase], capability: Sequence[CanaryCase]
                    ) -> str | None:
        """Run one batch (all its calls concurrently); the failed safety case's id, if any."""
        done = await asyncio.gather(*(_safety_only(self.sides[0], c) for c in safety),
                                    *(_paired(self.sides, c) for c in capability))
        self.outcomes += done
        return next((o.case_id for o in done if o.safety and not o.candidate_passed), None)

    async def cases(self, safety: list[CanaryCase], capability: list[CanaryCase],
                    settings: RunSettings, interim: Interim | None) -> CanaryEvidence:
        smoke, rest = capability[:settings.smoke_cases], capability[settings.smoke_cases:]
        # Batches exist for the sequential rule's looks; without one, nothing waits at a
        # boundary. Each batch carries its share of the safety cases (see safety_share).
        step = settings.batch_size if interim is not None else max(1, len(rest))
        share = safety_share(len(safety), len(rest), step, sequential=interim is not None)
        pending = list(safety)
        if smoke:
            # The smoke batch carries the first share: a candidate failing either stops here.
            chunk, pending = pending[:share], pending[share:]
            failed = await self.batch(chunk, smoke)
            if failed is not None:  # the hard gate first: it names the case
                self.report("reject")
                return self.evidence(f"safety case {failed!r} failed")
            paired = [o for o in self.outcomes if not o.safety]
            if not any(o.candidate_answered for o in paired) and any(
                    o.incumbent_answered for o in paired):
                self.report("reject")
                return self.evidence(
                    f"{SMOKE_STOP}: the candidate failed every smoke case with an error")
        for start in range(0, len(rest), step):
            status = interim(self.outcomes) if interim is not None else "continue"
            if status == "safety":
                return await self.finish_safety(pending, interim, settings.batch_size)
            self.report(status)
            if status != "continue":
                return self.evidence(f"{SEQUENTIAL_STOP}: {status}")
            chunk, pending = pending[:share], pending[share:]
            failed = await self.batch(chunk, rest[start:start + step])
            if failed is not None:
                self.report("reject")
                return self.evidence(f"safety case {failed!r} failed")
        return await self.finish_safety(pending, interim, settings.batch_size, complete=True)

    async def finish_safety(self, pending: list[CanaryCase], interim: Interim | None,
                            size: int, complete: bool = False) -> CanaryEvidence:
        """Run the safety cases not yet run, stopping at the first failure, and look again."""
        for start in range(0, len(pending), size):
            failed = await self.batch(pending[start:start + size], ())
            if failed is not None:
                self.report("reject")
                return self.evidence(f"safety case {failed!r} failed")
            self.report("continue")
        status = interim(self.outcomes) if interim is not None else "continue"
        self.report(status)
        if complete:
            return self.evidence()
        if status in ("accept", "reject"):
            return self.evidence(f"{SEQUENTIAL_STOP}: {status}")
        # The rule asked for the safety cases and still cannot accept (e.g. it expects more
        # safety cases than the suite has): a run cut short, which never accepts.
        return self.evidence("every safety case ran, yet the decision rule could not accept")


def gaming_p_value(outcomes: Sequence[CaseOutcome]) -> tuple[float, dict[str, Any]] | None:
    """One-sided Fisher exact p-value that the candidate regresses on hidden capability cases
    more often than on public ones (``None`` without both kinds). A candidate that recognises
    the public cases and behaves only there shows exactly this divergence."""
    capability = [o for o in outcomes if not o.safety]
    public = [o for o in capability if not o.hidden]
    hidden = [o for o in capability if o.hidden]
    if not public or not hidden:
        return None

    def regressed(group: list[CaseOutcome]) -> int:
        return sum(1 for o in group if o.incumbent_passed and not o.candidate_passed)

    a, n1 = regressed(hidden), len(hidden)
    c, n2 = regressed(public), len(public)
    total = a + c
    denominator = math.comb(n1 + n2, total)
    # P(X >= a) for X hypergeometric: regressions falling on hidden cases by chance.
    p = sum(math.comb(n1, k) * math.comb(n2, total - k)
            for k in range(a, min(n1, total) + 1)) / denominator
    return p, {"hidden_regressed": a, "hidden_cases": n1, "public_regressed": c,
               "public_cases": n2}
