"""The guard: wraps a self-updating client, runs the runtime chain and the update gate."""

from __future__ import annotations

import asyncio
import copy
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from opentelemetry import metrics, trace
from pydantic import ValidationError

from .._canonical import canonical_json, sha256_hex, state_version
from .._decision import Decision, Finding, Verdict
from .._errors import ConfigError, GuardrailViolation, LedgerIntegrityError
from .._messages import (
    DISCLOSURE_LAST_CHANGE,
    DISCLOSURE_SELF_IMPROVING,
    DISCLOSURE_VERSION,
    Request,
    Response,
)
from .._telemetry import (
    ATTR_BLOCKED_BY,
    ATTR_CANDIDATE,
    ATTR_CASE_ID,
    ATTR_CASES_USED,
    ATTR_DECIDING_CHECK,
    ATTR_ENTRY_INDEX,
    ATTR_LEDGER_CHECKPOINT,
    ATTR_LEDGER_ROOT,
    ATTR_LEDGER_SIZE,
    ATTR_OUTCOME,
    ATTR_PARENT,
    ATTR_PROPOSAL_ID,
    ATTR_PROPOSAL_KIND,
    ATTR_PROPOSAL_SOURCE,
    ATTR_SIDE,
    ATTR_VERDICT,
    BLOCKED,
    ERROR,
    ERROR_TYPE,
    GENAI_DETAILS_EVENT,
    GENAI_EVALUATION_EVENT,
    GENAI_EVALUATION_LABEL,
    GENAI_EVALUATION_NAME,
    GENAI_INPUT_MESSAGES,
    GENAI_OPERATION,
    GENAI_OUTPUT_MESSAGES,
    GENAI_REQUEST_MODEL,
    OK,
    SPAN_REVIEW,
    SPAN_STAGE_PREFIX,
    Telemetry,
    as_text,
    attach_span,
    bound_log,
    end_span,
    record_failure,
    set_attributes,
)
from .._threads import CallTimeout, call_with_timeout, run_sync
from ..blobs import BlobStore, blob_digest, iter_blob_refs
from ..canary import (
    SMOKE_STOP,
    CanaryEvidence,
    CanarySuite,
    Progress,
    RunSettings,
    gaming_p_value,
    run_canaries_async,
)
from ..chain import build_async_chain, build_chain, validate_middlewares
from ..gate import (
    ApprovalPolicy,
    DecisionRule,
    FrozenConstraints,
    MarginRule,
    ProposalLimits,
    ProposalTooLarge,
    ReviewContext,
    UpdateCheck,
    UpdateProposal,
    approve_pending,
    drift_distance,
    expire_pending,
    reject_pending,
    request_approval,
    run_update_checks,
)
from ..ledger import Ledger, MemoryLedger, PendingApproval
from ..plugin import fitting_adapters
from ..sandbox import ProcessSandbox, SandboxError, SandboxLimits, isolation_finding, sandbox_finding

SilentModificationAction = Literal["restore", "block"]


class Guard:
    """Frozen constraints, canaries, middleware and a ledger: everything that judges a model.

    Everything here is validated at construction (``ConfigError`` says what
    to fix) and fingerprinted; the fingerprint is re-checked before every
    decision, so a guard changed at run time stops accepting updates.

    ``checks``: extra static update checks (plugins), run after the frozen
    constraints and before any candidate is built.
    ``approval``: which proposals wait for a human (see ``ApprovalPolicy``).
    ``canary_run``: concurrency, batches, retries, hidden-case sampling and the
    smoke stage of the canary runner (see ``RunSettings``).
    ``sandbox``: ``"inline"`` builds candidates in this process (timeouts only,
    for trusted clients); ``"process"`` evaluates each candidate in a child
    process under ``sandbox_limits`` (wall time, CPU time, memory).
    ``seed``: fixes the case order and the hidden cases drawn (default: a fresh
    seed per review, recorded in the decision).
    ``margin``: how far the candidate's capability pass rate may fall below
    the incumbent's (ignored when ``decision_rule`` is given).
    ``case_timeout``: seconds a candidate gets to build and to answer a case.
    ``integrity_check_every``: every N-th call snapshots the served client to
    catch silent self-modification (0: only before reviews).
    ``capture_content``: record message content on GenAI spans/events
    (values as ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, which is
    read here when ``None``); canary content is never captured.
    ``on_silent_modification``: ``"restore"`` rebuilds the served client from
    the ledger's state; ``"block"`` refuses calls until ``restore()``.
    ``proposal_limits``: the largest proposal (operations, bytes, nesting) and
    candidate state a review accepts to evaluate (see ``ProposalLimits``).

    The ledger, the blob store and the telemetry settings are pinned too: a
    guard whose ledger or blob store was replaced, or whose content-capture
    setting changed, after construction returns ``error`` decisions.
    """

    def __init__(
        self,
        constraints: FrozenConstraints | None = None,
        canaries: CanarySuite | Iterable[Any] | None = None,
        middleware: Sequence[Any] = (),
        ledger: Ledger | None = None,
        blob_store: BlobStore | None = None,
        *,
        margin: float = 0.0,
        decision_rule: DecisionRule | None = None,
        checks: Sequence[UpdateCheck] = (),
        approval: ApprovalPolicy | None = None,
        canary_run: RunSettings | None = None,
        seed: int | None = None,
        sandbox: Literal["inline", "process"] = "inline",
        sandbox_limits: SandboxLimits | None = None,
        case_timeout: float = 10.0,
        integrity_check_every: int = 1000,
        on_silent_modification: SilentModificationAction = "restore",
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: str | None = None,
        proposal_limits: ProposalLimits | None = None,
    ) -> None:
        if constraints is None:
            constraints = FrozenConstraints()
        if not isinstance(constraints, FrozenConstraints):
            raise ConfigError(f"constraints must be FrozenConstraints, got {type(constraints).__name__}")
        if canaries is None:
            raise ConfigError("a Guard needs canaries: pass a CanarySuite with at least one "
                              "capability case (CanarySuite.from_jsonl(path) or a list of cases)")
        suite = canaries if isinstance(canaries, CanarySuite) else CanarySuite(canaries)
        if not suite.capability:
            raise ConfigError("the canary suite has only safety cases; add capability cases so "
                              "the gate has evidence that an update is not worse")
        if not 0.0 <= margin <= 1.0:
            raise ConfigError(f"margin {margin!r} is out of range; give a fraction in [0, 1]")
        if not case_timeout > 0:
            raise ConfigError(f"case_timeout {case_timeout!r} must be a positive number of seconds")
        if integrity_check_every < 0:
            raise ConfigError("integrity_check_every must be >= 0 (0 checks only before reviews)")
        if on_silent_modification not in ("restore", "block"):
            raise ConfigError(f"on_silent_modification {on_silent_modification!r}: "
                              "use 'restore' or 'block'")
        self.constraints = constraints
        self.canaries = suite
        self.middleware = validate_middlewares(middleware)
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.blob_store = blob_store
        self.decision_rule: DecisionRule = decision_rule or MarginRule(margin=margin)
        for check in checks:
            if not callable(check):
                raise ConfigError(f"update check {check!r} is not callable; an update check is "
                                  "callable(context) -> findings with a 'name'")
        self.checks = tuple(checks)
        self.approval = approval
        self.canary_run = canary_run or RunSettings()
        self.seed = seed
        if sandbox not in ("inline", "process"):
            raise ConfigError(f"sandbox {sandbox!r}: use 'inline' or 'process'")
        self.sandbox = sandbox
        self.process_sandbox = (ProcessSandbox(sandbox_limits or SandboxLimits(
            wall_time=case_timeout)) if sandbox == "process" else None)
        self.suite_warnings = self._suite_warnings()
        self.case_timeout = float(case_timeout)
        self.integrity_check_every = int(integrity_check_every)
        self.on_silent_modification = on_silent_modification
        if proposal_limits is not None and not isinstance(proposal_limits, ProposalLimits):
            raise ConfigError(f"proposal_limits must be ProposalLimits, got "
                              f"{type(proposal_limits).__name__}")
        self.proposal_limits = proposal_limits or ProposalLimits()
        self.telemetry = Telemetry(tracer_provider, meter_provider, capture_content)
        self._fingerprint = self.fingerprint()
        self._wiring = self._wiring_now()
        self._wrapped = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], *,
                    tracer_provider: trace.TracerProvider | None = None,
                    meter_provider: metrics.MeterProvider | None = None) -> Guard:
        """Build a guard from ``guardrails.toml``; ``ConfigError`` names the file, key and fix."""
        from .._config import guard_kwargs, load_config

        config, root = load_config(path)
        return cls(**guard_kwargs(config, root, str(path)), tracer_provider=tracer_provider,
                   meter_provider=meter_provider)

    def _suite_warnings(self) -> list[str]:
        """Why this suite can never lead to an acceptance under the decision rule (warned once)."""
        check_suite = getattr(self.decision_rule, "check_suite", None)
        problems: list[str] = list(check_suite(self.canaries)) if callable(check_suite) else []
        for problem in problems:
            warnings.warn(f"guardrails: {problem}", UserWarning, stacklevel=3)
            bound_log().warning("guardrails.suite_too_small", problem=problem)
        return problems

    def fingerprint(self) -> str:
        """SHA-256 over the constraints, canaries, decision rule and limits."""
        return sha256_hex(canonical_json([
            self.constraints.fingerprint(), self.canaries.fingerprint(),
            repr(self.decision_rule), [repr(c) for c in self.checks],
            None if self.approval is None else self.approval.model_dump(),
            self.canary_run.model_dump(), self.seed, self.sandbox,
            None if self.process_sandbox is None else self.process_sandbox.limits.model_dump(),
            self.case_timeout,
            self.integrity_check_every, self.on_silent_modification,
            self.proposal_limits.model_dump(),
        ]))

    def _wiring_now(self) -> tuple[Any, ...]:
        # Identities, not a digest: what matters is that these are the very objects the
        # guard was built with (the ledger it verified, the store it checks blobs in).
        return (id(self.ledger), id(self.blob_store), id(self.telemetry),
                self.telemetry.capture_spans, self.telemetry.capture_events)

    def integrity_problem(self) -> str | None:
        """Why this guard may no longer decide (its configuration or wiring changed), or ``None``."""
        if self.fingerprint() != self._fingerprint:
            return ("the guard's constraints, canaries or limits changed after start; restart "
                    "with a reviewed configuration")
        if self._wiring_now() != self._wiring:
            return ("the guard's ledger, blob store or telemetry settings were replaced after "
                    "start; restart with a reviewed configuration")
        return None

    def wrap(self, client: Any) -> GuardedClient:
        """Guard ``client``. Served from the ledger's version when the ledger already has one.

        Raises ``LedgerIntegrityError`` when the ledger does not verify.
        """
        if self._wrapped:
            raise ConfigError("this Guard already guards a client; a guard and its ledger "
                              "belong to one model: build another Guard with its own ledger")
        missing = [m for m in ("invoke", "snapshot", "propose_update", "with_state")
                   if not callable(getattr(client, m, None))]
        if missing:
            fitting = fitting_adapters(client)
            hint = (f"the installed adapter {fitting[0]!r} fits it: wrap "
                    f"load_plugin({fitting[0]!r}).build().adapters[{fitting[0]!r}](client)"
                    if fitting else "implement them, or use an adapter (docs/adapters.md)")
            raise ConfigError(f"{type(client).__name__} is not a SelfUpdatingClient: it lacks "
                              f"{', '.join(missing)}; {hint}")
        if self.process_sandbox is not None:
            self.process_sandbox.check_client(client)
        guarded = GuardedClient(self, client)
        self._wrapped = True
        return guarded


class _Served(NamedTuple):
    client: Any
    version: str
    disclosure: dict[str, Any]
    genai: dict[str, Any] | None
    """The client's GenAI identity (``gen_ai.*`` attributes), if it declares one."""
    genai_span_name: str


def _serve(client: Any, version: str, last_change: datetime | None) -> _Served:
    """What one served version needs on the hot path, computed once per promotion.

    A client may declare ``genai_attributes() -> dict`` with at least
    ``gen_ai.operation.name`` and ``gen_ai.request.model``; its calls then get
    a GenAI client span and the ``gen_ai.client.operation.duration`` metric.
    """
    declare = getattr(client, "genai_attributes", None)
    genai = dict(declare()) if callable(declare) else None
    name = ""
    if genai:
        name = f"{genai.get(GENAI_OPERATION, 'invoke')} {genai.get(GENAI_REQUEST_MODEL, '')}".strip()
    return _Served(client, version, _disclosure(version, last_change), genai or None, name)


def _disclosure(version: str, last_change: datetime | None) -> dict[str, Any]:
    return {
        DISCLOSURE_VERSION: version,
        DISCLOSURE_SELF_IMPROVING: True,
        DISCLOSURE_LAST_CHANGE: last_change.isoformat() if last_change else None,
    }


class GuardedClient:
    """A self-updating client behind the guard. Built by ``Guard.wrap``.

    ``invoke``/``ainvoke`` pass the runtime chain; ``propose``,
    ``self_improve`` and ``rollback`` pass the update gate and always return a
    recorded ``Decision`` (they do not raise for bad proposals).
    """

    def __init__(self, guard: Guard, client: Any) -> None:
        self.guard = guard
        self._telemetry = guard.telemetry
        self._review_lock = threading.RLock()
        self._blocked: Finding | None = None
        self._calls = 0
        self._served = self._open(client)
        try:
            self._chain = build_chain(guard.middleware, self._endpoint)
        except ConfigError as exc:
            # An async-only middleware: the guard still serves ainvoke; invoke says why not.
            self._chain = _refuse_sync(exc)
        self._achain = build_async_chain(guard.middleware, self._aendpoint)
        # A ledger that announces promotions (PostgresLedger) is followed off the hot path.
        subscribe = getattr(guard.ledger, "subscribe", None)
        self._following = callable(subscribe)
        if callable(subscribe):
            subscribe(self._follow)

    # -- opening -----------------------------------------------------------------

    def _open(self, client: Any) -> _Served:
        ledger = self.guard.ledger
        report = ledger.verify(self.guard.blob_store)
        if not report.ok:
            raise LedgerIntegrityError(
                f"refusing to serve from a ledger that does not verify: {report.problem}",
                index=report.index)
        state = client.snapshot()
        version = state_version(state)
        if report.size == 0:
            failed = [f for f in self.guard.constraints.check_invariants(state) if not f.passed]
            if failed:
                raise ConfigError(f"the initial state breaks the constraints: {failed[0].message}")
            ledger.put_state(state)
            genesis = Decision.accept(
                [Finding(check="genesis", passed=True,
                         message="initial state recorded as the first anchor")],
                candidate=version, kind="genesis", source="operator", anchor=True)
            if ledger.promote(genesis, None) is not None:
                bound_log(version=version).info("guardrails.ledger_initialised")
                return _serve(client, version, genesis.decided_at)
            # Another replica initialised the ledger first: serve what it recorded.
        served = ledger.served_version()
        assert served is not None  # a verified non-empty ledger has a genesis entry
        if version != served:
            client = self._rebuild(client, served)
            bound_log(served=served, found=version).warning(
                "guardrails.restored_from_ledger",
                reason="the client's state differs from the ledger's served version")
        return _serve(client, served, self._last_change())

    def _last_change(self) -> datetime | None:
        # Read back from the end in growing spans: the last acceptance is usually among the
        # last entries, and a replica following a long ledger must not re-read all of it.
        ledger = self.guard.ledger
        end, span = len(ledger), 64
        while end > 0:
            start, last = max(0, end - span), None
            for entry in ledger.entries(start):
                if entry.index >= end:
                    break
                decision = entry.decision
                if decision is not None and decision.accepted:
                    last = decision.decided_at
            if last is not None:
                return last
            end, span = start, span * 4
        return None

    def _rebuild(self, client: Any, version: str) -> Any:
        state = self.guard.ledger.get_state(version)
        rebuilt = client.with_state(state)
        found = state_version(rebuilt.snapshot())
        if found != version:
            raise LedgerIntegrityError(
                f"the client rebuilt from state {version[:12]} reports state {found[:12]}; "
                "its with_state/snapshot do not round-trip")
        return rebuilt

    # -- runtime path -------------------------------------------------------------

    @property
    def version(self) -> str:
        """The served version id: always the candidate of the last accepted ledger entry."""
        return self._served.version

    @property
    def client(self) -> Any:
        """The client object now serving (replaced, never mutated, by promotions)."""
        return self._served.client

    @property
    def ledger(self) -> Ledger:
        return self.guard.ledger

    def state(self) -> dict[str, Any]:
        """A copy of the served state, as recorded in the ledger."""
        return self.guard.ledger.get_state(self._served.version)

    def _endpoint(self, request: Request) -> Response:
        served = self._served
        if served.genai is None:
            output = served.client.invoke(request)
        else:
            call = self._genai_start(served, request)
            try:
                output = served.client.invoke(request)
            except BaseException as exc:
                self._genai_end(served, call, None, exc)
                raise
            self._genai_end(served, call, output, None)
        return Response(output=output, version=served.version, metadata=dict(served.disclosure))

    async def _aendpoint(self, request: Request) -> Response:
        served = self._served
        ainvoke = getattr(served.client, "ainvoke", None)
        call = None if served.genai is None else self._genai_start(served, request)
        try:
            if ainvoke is not None:
                output = await ainvoke(request)
            else:
                output = await asyncio.to_thread(served.client.invoke, request)
        except BaseException as exc:
            if call is not None:
                self._genai_end(served, call, None, exc)
            raise
        if call is not None:
            self._genai_end(served, call, output, None)
        return Response(output=output, version=served.version, metadata=dict(served.disclosure))

    def _genai_start(self, served: _Served, request: Request) -> tuple[Any, Any, float]:
        """Open the GenAI client span (only under a recording guard span) and start the clock."""
        span = token = None
        if trace.get_current_span().is_recording():
            try:
                span = self._telemetry.tracer.start_span(
                    served.genai_span_name, kind=trace.SpanKind.CLIENT, attributes=served.genai)
                if self._telemetry.capture_spans:
                    span.set_attribute(GENAI_INPUT_MESSAGES, as_text(request.input))
                if self._telemetry.capture_events:
                    span.add_event(GENAI_DETAILS_EVENT, {GENAI_INPUT_MESSAGES: as_text(request.input)})
            except Exception:
                span = None
            token = None if span is None else attach_span(span)
        return span, token, time.perf_counter()

    def _genai_end(self, served: _Served, call: tuple[Any, Any, float], output: Any,
                   exc: BaseException | None) -> None:
        span, token, started = call
        attributes = dict(served.genai or {})
        if exc is not None:
            attributes[ERROR_TYPE] = type(exc).__qualname__
        self._telemetry.record(self._telemetry.genai_duration, time.perf_counter() - started,
                               attributes)
        if span is None:
            return
        if exc is not None:
            record_failure(span, exc)
        else:
            try:
                if self._telemetry.capture_spans:
                    span.set_attribute(GENAI_OUTPUT_MESSAGES, as_text(output))
                if self._telemetry.capture_events:
                    span.add_event(GENAI_DETAILS_EVENT, {GENAI_OUTPUT_MESSAGES: as_text(output)})
            except Exception:
                pass  # telemetry never breaks a call
        end_span(span, token)

    def _before_call(self) -> None:
        if self._blocked is not None:
            raise GuardrailViolation(self._blocked.message, policy="silent_modification",
                                     findings=(self._blocked,))
        self._calls += 1
        every = self.guard.integrity_check_every
        if every and self._calls % every == 0:
            if not self._following:
                self._follow(wait=False)
            self.check_integrity()
            if self._blocked is not None:
                self._before_call()

    def _failed_call(self, span: Any, exc: BaseException) -> None:
        telemetry = self._telemetry
        if isinstance(exc, GuardrailViolation):
            telemetry.count(telemetry.invocations, BLOCKED)
            telemetry.count(telemetry.blocked, {ATTR_BLOCKED_BY: exc.policy})
            if span is not None:
                set_attributes(span, {ATTR_BLOCKED_BY: exc.policy, ATTR_OUTCOME: "blocked"})
        else:
            telemetry.count(telemetry.invocations, ERROR)
        if span is not None:
            record_failure(span, exc)

    def invoke(self, request: Request | Any) -> Response:
        """Answer through the runtime chain; ``request`` may be a ``Request`` or a bare input.

        Raises ``GuardrailViolation`` when a policy blocks the call; the
        client's own exceptions propagate unchanged.
        """
        if type(request) is not Request:
            request = Request(input=request)
        telemetry = self._telemetry
        span = telemetry.start_invoke_span(self._served.version)
        token = None if span is None else attach_span(span)
        try:
            self._before_call()
            response = self._chain(request)
        except BaseException as exc:
            self._failed_call(span, exc)
            raise
        finally:
            if span is not None:
                end_span(span, token)
        telemetry.count(telemetry.invocations, OK)
        return response

    async def ainvoke(self, request: Request | Any) -> Response:
        """The async twin of ``invoke``."""
        if type(request) is not Request:
            request = Request(input=request)
        telemetry = self._telemetry
        span = telemetry.start_invoke_span(self._served.version)
        token = None if span is None else attach_span(span)
        try:
            self._before_call()
            response = await self._achain(request)
        except BaseException as exc:
            self._failed_call(span, exc)
            raise
        finally:
            if span is not None:
                end_span(span, token)
        telemetry.count(telemetry.invocations, OK)
        return response

    # -- silent self-modification -------------------------------------------------

    def check_integrity(self) -> Finding | None:
        """Snapshot the served client now; on a silent change, restore or block.

        Returns the finding describing the change, or ``None`` when the state
        is the recorded one. Every detection is logged and recorded.
        """
        served = self._served
        try:
            found = state_version(served.client.snapshot())
        except Exception as exc:
            found = f"unreadable ({type(exc).__name__})"
        if found == served.version:
            return None
        finding = Finding(
            check="silent_modification", passed=False,
            message=f"the served client changed its own state without a proposal "
                    f"(expected {served.version[:12]}, found {found[:12]})",
            evidence={"expected": served.version, "found": found,
                      "action": self.guard.on_silent_modification})
        self._telemetry.count(self._telemetry.silent_modifications,
                              {"guardrails.action": self.guard.on_silent_modification})
        bound_log(expected=served.version, found=found,
                  action=self.guard.on_silent_modification).warning(
                      "guardrails.silent_modification")
        try:
            self.guard.ledger.record_event("silent_modification", expected=served.version,
                                           found=found, action=self.guard.on_silent_modification)
        except Exception:
            bound_log().exception("guardrails.ledger_write_failed", event="silent_modification")
        if self.guard.on_silent_modification == "restore":
            try:
                restored = served._replace(client=self._rebuild(served.client, served.version))
                if self._served is served:  # a promotion meanwhile replaced the changed client
                    self._served = restored
            except Exception as exc:
                self._blocked = finding.model_copy(update={
                    "message": finding.message + f"; restoring failed ({exc}), calls blocked"})
        else:
            self._blocked = finding
        return finding

    def restore(self) -> None:
        """Rebuild the served client from the ledger's served state and unblock calls."""
        with self._review_lock:
            served = self._served
            self._served = served._replace(client=self._rebuild(served.client, served.version))
            self._blocked = None

    # -- update path ----------------------------------------------------------------

    def self_improve(self) -> Decision | None:
        """Ask the served model for its own update and review it; ``None`` if it has none."""
        try:
            proposal = self._served.client.propose_update()
        except Exception as exc:
            return self._finish(Decision.error(
                "propose_update", f"the model's propose_update raised {type(exc).__name__}: {exc}",
                parent=self._served.version), None, {})
        if proposal is None:
            return None
        return self.propose(proposal)

    def propose(self, proposal: UpdateProposal | dict[str, Any], *,
                progress: Progress | None = None) -> Decision:
        """Review a proposal and promote it if, and only if, the gate accepts it.

        Never raises for a bad proposal or a failing candidate: the outcome is
        a recorded ``Decision`` whose findings say what decided it.
        ``progress(done, planned)`` is called after each canary case.
        """
        with self._review_lock, self._telemetry.span(SPAN_REVIEW) as span:
            timings: dict[str, float] = {}
            started = time.perf_counter()
            raw: Any
            try:
                # Before anything walks the proposal: its size and depth are the model's choice.
                self.guard.proposal_limits.check(proposal)
            except ProposalTooLarge as exc:
                raw = _summary(proposal, exc)
                decision = Decision.reject([_limit_finding(exc)], parent=self._served.version,
                                           proposal_id=raw.get("id"))
            else:
                raw = _raw_proposal(proposal)
                try:
                    decision = self._review(proposal, timings, progress)
                except Exception as exc:  # the gate itself failed: never accept
                    bound_log().exception("guardrails.gate_error")
                    decision = Decision.error("gate", f"the gate failed: {type(exc).__name__}: "
                                              f"{exc}", parent=self._served.version)
            timings["total"] = time.perf_counter() - started
            self._telemetry.record(self._telemetry.review_duration, timings["total"],
                                   {ATTR_VERDICT: decision.verdict.value})
            pending = None
            approval = self.guard.approval
            if (approval is not None and decision.entry_index is None
                    and approval.requires_approval(decision)):
                decision, pending = request_approval(decision, _jsonable(raw), approval)
            decision = self._finish(decision, raw, timings, pending)
            deciding = decision.deciding_finding
            set_attributes(span, {
                ATTR_PROPOSAL_ID: decision.proposal_id, ATTR_PROPOSAL_KIND: decision.kind,
                ATTR_PROPOSAL_SOURCE: decision.source, ATTR_PARENT: decision.parent,
                ATTR_CANDIDATE: decision.candidate, ATTR_VERDICT: decision.verdict.value,
                ATTR_DECIDING_CHECK: deciding.check if deciding else None,
                ATTR_ENTRY_INDEX: decision.entry_index,
                **self._checkpoint_attributes(),
                ATTR_CASES_USED: next((int(f.evidence.get("cases", 0)) for f in decision.findings
                                       if f.check == "capability"), None),
            })
            if not decision.accepted:
                try:
                    span.set_status(trace.StatusCode.ERROR if decision.verdict is Verdict.ERROR
                                    else trace.StatusCode.UNSET)
                except Exception:  # telemetry never breaks a review
                    bound_log().warning("guardrails.telemetry_failed", exc_info=True)
            return decision

    def _checkpoint_attributes(self) -> dict[str, Any]:
        """The ledger's current tree head (and signed checkpoint) for the review span, so the
        tracing backend keeps an independent copy that makes rewriting the ledger detectable."""
        try:
            size, root = self.guard.ledger.root()
            return {ATTR_LEDGER_SIZE: size, ATTR_LEDGER_ROOT: root.hex(),
                    ATTR_LEDGER_CHECKPOINT: self.guard.ledger.latest_checkpoint()}
        except Exception:
            bound_log().warning("guardrails.telemetry_failed", exc_info=True)
            return {}

    def _stage(self, name: str) -> Any:
        return self._telemetry.span(SPAN_STAGE_PREFIX + name)

    def _review(self, proposal: UpdateProposal | dict[str, Any], timings: dict[str, float],
                progress: Progress | None = None) -> Decision:
        guard = self.guard
        served = self._served
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        with self._stage("validate"):
            if not isinstance(proposal, UpdateProposal):
                try:
                    proposal = UpdateProposal.model_validate(proposal)
                except ValidationError as exc:
                    where = "; ".join(
                        f"{'.'.join(map(str, e['loc'])) or 'proposal'}: {e['msg']}"
                        for e in exc.errors())
                    return Decision.reject(
                        [Finding(check="invalid_proposal", passed=False,
                                 message=f"the proposal is malformed ({where}); send parent, "
                                         "patch (RFC 6902 operations) and optional kind, "
                                         "rationale, source")],
                        parent=served.version)
            ids: dict[str, Any] = {
                "proposal_id": proposal.id, "kind": proposal.kind, "source": proposal.source,
                "rationale": proposal.rationale, "parent": proposal.parent}
            if not guard.ledger.has_state(proposal.parent):
                # verify() requires every version the ledger names to be stored; an unknown
                # parent stays in the recorded proposal, never in the decision.
                ids["parent"] = None
            problem = guard.integrity_problem()
            if problem is not None:
                return Decision.error("guard_integrity", problem, **ids)
            self.sync()
            expire_pending(guard.ledger)
            modified = self.check_integrity()
            if modified is not None and self._blocked is not None:
                return Decision.error("silent_modification", modified.message, **ids)
            served = self._served
            if proposal.parent != served.version:
                return Decision.reject(
                    [Finding(check="stale_parent", passed=False,
                             message=f"the proposal targets {proposal.parent[:12]} but "
                                     f"{served.version[:12]} is served; propose against the "
                                     "served version",
                             evidence={"served": served.version,
                                       "proposed_parent": proposal.parent})],
                    **ids)
            incumbent_state = guard.ledger.get_state(served.version)
            try:
                candidate_state = proposal.apply(incumbent_state, guard.proposal_limits)
                candidate = state_version(candidate_state)
            except ProposalTooLarge as exc:
                return Decision.reject([_limit_finding(exc)], **ids)
            except (ValueError, ConfigError) as exc:
                return Decision.reject(
                    [Finding(check="invalid_patch", passed=False, message=f"the patch does not "
                             f"apply to the served state: {exc}")], **ids)
            ids["candidate"] = candidate
            lap("validate")

        with self._stage("static_checks"):
            constraints = guard.constraints
            findings = [
                *constraints.check_frozen(incumbent_state, candidate_state),
                *constraints.check_scope(incumbent_state, candidate_state),
                *constraints.check_invariants(candidate_state),
            ]
            if constraints.drift_budget is not None:
                findings.append(self._drift_finding(candidate_state, constraints.drift_budget))
            if guard.blob_store is not None:
                try:
                    findings.extend(_blob_findings(guard.blob_store, incumbent_state,
                                                   candidate_state))
                except Exception as exc:
                    guard.ledger.put_state(candidate_state)
                    return Decision.error(
                        "blob_store", f"the blob store could not be read ({type(exc).__name__}: "
                        f"{exc}); a candidate whose blobs cannot be checked is never promoted",
                        findings=findings, **ids)
            if guard.checks:
                context = ReviewContext(proposal, copy.deepcopy(incumbent_state),
                                        copy.deepcopy(candidate_state), candidate, guard.ledger,
                                        guard.blob_store)
                findings.extend(run_update_checks(guard.checks, context))
            lap("static_checks")
            if candidate == served.version:
                findings.append(Finding(check="no_change", passed=False,
                                        message="the patch leaves the state unchanged"))
            if any(not f.passed for f in findings):
                guard.ledger.put_state(candidate_state)
                return Decision.reject(sorted(findings, key=lambda f: f.passed), **ids)

        sandboxed: Any = None
        try:
            with self._stage("sandbox"):
                guard.ledger.put_state(candidate_state)
                built = self._build_candidate(served, candidate_state, candidate, findings, ids)
                if isinstance(built, Decision):
                    return built
                candidate_client = built
                sandboxed = candidate_client if guard.process_sandbox is not None else None
                lap("sandbox")

            with self._stage("canary") as span:
                seed = guard.seed if guard.seed is not None else random.SystemRandom().randrange(2**32)
                case_timeout = guard.case_timeout
                if guard.process_sandbox is not None:
                    # Let the sandbox's own wall-time limit fire first, so the finding names it.
                    case_timeout = max(case_timeout, guard.process_sandbox.limits.wall_time + 1.0)
                evidence = run_sync(run_canaries_async(
                    candidate_client, served.client, guard.canaries, case_timeout=case_timeout,
                    settings=guard.canary_run, seed=seed,
                    interim=getattr(guard.decision_rule, "interim", None), progress=progress))
                self._report_canaries(span, evidence)
                lap("canary")

            with self._stage("decision"):
                verdict, canary_findings = guard.decision_rule(evidence)
                if sandboxed is not None and sandboxed.failure is not None:
                    # The runner saw only "client raised ..."; this names the limit hit.
                    canary_findings = [sandbox_finding(sandboxed.failure), *canary_findings]
                    verdict = Verdict.REJECTED
                unjudged = _checker_finding(evidence)
                if unjudged is not None:
                    # The evaluator failed on the reference: the gate cannot finish.
                    canary_findings = [unjudged, *canary_findings]
                    verdict = Verdict.ERROR
                findings = [*findings, _run_finding(evidence, guard.canaries),
                            *_cascade_findings(evidence, guard.canary_run), *canary_findings]
                if verdict in (Verdict.ACCEPTED, Verdict.INCONCLUSIVE) and any(
                        f.check in ("smoke", "gaming") and not f.passed for f in findings):
                    verdict = Verdict.REJECTED
                problem = guard.integrity_problem()
                if problem is not None:
                    return Decision.error("guard_integrity", f"during the review, {problem}",
                                          findings=findings, **ids)
                if self.check_integrity() is not None:
                    return Decision.error("silent_modification", "the incumbent changed its own "
                                          "state during the review; the review is void",
                                          findings=findings, **ids)
                if verdict in (Verdict.ACCEPTED, Verdict.INCONCLUSIVE):
                    moved = self._candidate_moved(candidate_client, candidate)
                    if moved is not None:
                        return Decision.reject([*findings, moved], **ids)
                lap("decision")
            if verdict is not Verdict.ACCEPTED:
                return Decision(verdict=verdict, findings=tuple(findings), **ids)
            # An accepted decision is recorded exactly as returned, so its timings go in now.
            accepted = Decision.accept(
                findings, timings={**timings, "total": sum(timings.values())}, **ids)
            if guard.approval is not None and guard.approval.requires_approval(accepted):
                return accepted  # not promoted: propose() turns it into a pending approval
            with self._stage("promotion"):
                # A sandboxed candidate lives in a child process: serve an in-process build
                # of the very state that was evaluated.
                served_client = (candidate_client if sandboxed is None
                                 else self._rebuild(served.client, candidate))
                return self._promote(accepted, served_client, proposal)
        finally:
            if sandboxed is not None:
                sandboxed.close()

    def _build_candidate(self, served: _Served, state: dict[str, Any], candidate: str,
                         findings: list[Finding], ids: dict[str, Any]) -> Any:
        """The candidate client built from ``state`` (inline or in the process sandbox), or the
        rejecting decision when it cannot be built or does not report the state it was given."""
        guard = self.guard
        if guard.process_sandbox is not None:
            try:
                client: Any = guard.process_sandbox.start(served.client, state)
                findings.append(isolation_finding(client.isolation))  # in every later decision
                built = state_version(client.snapshot())
            except ConfigError as exc:
                return Decision.error("sandbox", str(exc), findings=findings, **ids)
            except SandboxError as exc:
                return Decision.reject([*findings, sandbox_finding(exc)], **ids)
        else:
            try:
                client = call_with_timeout(lambda: served.client.with_state(state),
                                           guard.case_timeout)
                built = state_version(call_with_timeout(client.snapshot, guard.case_timeout))
            except CallTimeout as exc:
                return Decision.reject([*findings, Finding(
                    check="sandbox", passed=False,
                    message=f"building the candidate hung ({exc}); case_timeout is "
                            f"{guard.case_timeout:g} s")], **ids)
            except Exception as exc:
                return Decision.reject([*findings, Finding(
                    check="sandbox", passed=False,
                    message=f"building the candidate raised {type(exc).__name__}: {exc}")], **ids)
        if built != candidate:
            if guard.process_sandbox is not None:
                client.close()
            return Decision.reject([*findings, Finding(
                check="sandbox", passed=False,
                message=f"the candidate built from {candidate[:12]} reports state "
                        f"{built[:12]}; the evaluated state must be the promoted one")], **ids)
        return client

    def _candidate_moved(self, client: Any, candidate: str) -> Finding | None:
        """A finding when the evaluated candidate no longer reports the state it was built from:
        it changed itself during evaluation, so the evidence is not about the promoted state."""
        try:
            found = state_version(call_with_timeout(client.snapshot, self.guard.case_timeout))
        except Exception as exc:
            found = f"unreadable ({type(exc).__name__})"
        if found == candidate:
            return None
        return Finding(
            check="silent_modification", passed=False,
            message=f"the candidate changed its own state during evaluation (built as "
                    f"{candidate[:12]}, found {found[:12]} afterwards); the state that is "
                    "promoted must be the state that was evaluated",
            evidence={"side": "candidate", "expected": candidate, "found": found})

    def _report_canaries(self, span: trace.Span, evidence: CanaryEvidence) -> None:
        """One ``gen_ai.evaluation.result`` event and one metric point per canary call (ids only)."""
        telemetry = self._telemetry
        recording = span.is_recording()
        for outcome in evidence.outcomes:
            sides = [("candidate", outcome.candidate_passed, outcome.candidate_error)]
            if outcome.incumbent_passed is not None:
                sides.append(("incumbent", outcome.incumbent_passed, outcome.incumbent_error))
            for side, passed, error in sides:
                label = "pass" if passed else ("error" if error else "fail")
                telemetry.count(telemetry.canary_calls, {ATTR_SIDE: side, ATTR_OUTCOME: label})
                if recording:
                    try:
                        span.add_event(GENAI_EVALUATION_EVENT, {
                            GENAI_EVALUATION_NAME: "guardrails.canary",
                            GENAI_EVALUATION_LABEL: label, ATTR_CASE_ID: outcome.case_id,
                            ATTR_SIDE: side})
                    except Exception:
                        recording = False  # telemetry never breaks a review

    def _drift_finding(self, candidate_state: dict[str, Any], budget: float) -> Finding:
        anchor = self.guard.ledger.anchor_version()
        if anchor is None:
            return Finding(check="drift_budget", passed=False,
                           message="the ledger names no anchor state to measure drift from")
        distance = drift_distance(self.guard.ledger.get_state(anchor), candidate_state, budget)
        ok = distance <= budget
        return Finding(
            check="drift_budget", passed=ok,
            message=f"distance from the anchor {distance:.3f} "
                    f"{'within' if ok else 'exceeds'} the drift budget {budget:.3f}",
            evidence={"statistic": "max_field_distance", "value": round(distance, 6),
                      "budget": budget, "anchor": anchor})

    def _promote(self, decision: Decision, client: Any, proposal: UpdateProposal) -> Decision:
        """Compare-and-swap in the ledger, then swap the served client in one assignment."""
        raw = proposal.model_dump(mode="json")
        try:
            recorded = self.guard.ledger.promote(decision, decision.parent, raw)
        except Exception as exc:
            return Decision.error("ledger_write", f"recording the acceptance failed "
                                  f"({type(exc).__name__}: {exc}); nothing was promoted",
                                  **_ids(decision))
        if recorded is None:
            return Decision.reject([Finding(
                check="stale_parent", passed=False,
                message="another update was accepted first; this one is stale")],
                **_ids(decision))
        assert recorded.candidate is not None
        self._served = _serve(client, recorded.candidate, recorded.decided_at)
        return recorded

    def _finish(self, decision: Decision, raw: Any, timings: dict[str, float],
                pending: PendingApproval | None = None) -> Decision:
        """Record a non-accepted decision, count and log every decision."""
        if not decision.accepted:  # an accepted one is already recorded, exactly as returned
            decision = decision.model_copy(update={"timings": {**decision.timings, **timings}})
            try:
                decision = self.guard.ledger.record(decision, _jsonable(raw), pending=pending)
            except Exception as exc:
                bound_log(proposal_id=decision.proposal_id).error(
                    "guardrails.ledger_write_failed", error=f"{type(exc).__name__}: {exc}")
        return self._log_decision(decision)

    def _with_proof(self, decision: Decision) -> Decision:
        """Attach the Merkle inclusion proof of the decision's ledger entry (when recorded)."""
        if decision.entry_index is None:
            return decision
        try:
            proof = self.guard.ledger.prove(decision.entry_index)
        except Exception:
            bound_log(entry=decision.entry_index).warning("guardrails.proof_failed", exc_info=True)
            return decision
        return decision.model_copy(update={"inclusion_proof": proof.model_dump(mode="json")})

    def _log_decision(self, decision: Decision) -> Decision:
        decision = self._with_proof(decision)
        deciding = decision.deciding_finding
        self._telemetry.count(self._telemetry.decisions, {
            "guardrails.verdict": decision.verdict.value,
            "guardrails.deciding_check": deciding.check if deciding else "none"})
        bound_log(
            proposal_id=decision.proposal_id, kind=decision.kind, source=decision.source,
            parent=decision.parent, candidate=decision.candidate, entry=decision.entry_index,
        ).info("guardrails.decision", verdict=decision.verdict.value,
               check=deciding.check if deciding else None,
               reason=deciding.message if deciding else None)
        return decision

    def sync(self) -> bool:
        """Follow the ledger: serve its version if another process promoted one.

        Returns whether the served client changed. Runs on the integrity
        schedule and before every review; call it to follow at once.
        """
        with self._review_lock:
            served = self._served
            version = self.guard.ledger.served_version()
            if version is None or version == served.version:
                return False
            client = self._rebuild(served.client, version)
            self._served = _serve(client, version, self._last_change())
            bound_log(previous=served.version, served=version).info("guardrails.followed_ledger")
            return True

    def _follow(self, version: str | None = None, *, wait: bool = True) -> None:
        """``sync()`` unless ``version`` is already served; logs instead of raising.

        Called on the integrity schedule and by the ledger's watcher thread
        (``subscribe``): a store that cannot be read leaves the current
        version serving. ``wait=False`` (the runtime path) skips the sync while
        a review or approval holds the review lock: a call never waits for a
        review, which syncs before it decides anyway.
        """
        if version is not None and version == self._served.version:
            return
        if not self._review_lock.acquire(blocking=wait):
            return
        try:
            self.sync()
        except Exception as exc:
            bound_log(served=self._served.version).warning(
                "guardrails.follow_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._review_lock.release()

    def pending(self) -> list[PendingApproval]:
        """Proposals waiting for a human (expired ones are rejected first)."""
        expire_pending(self.guard.ledger)
        return self.guard.ledger.pending()

    def approve(self, proposal_id: str, *, approver: str = "api") -> Decision:
        """Approve a waiting proposal: promoted as the new anchor if its parent is still served.

        Raises ``KeyError`` (unknown id) or ``ValueError`` (already resolved).
        """
        with self._review_lock:
            decision = approve_pending(self.guard.ledger, proposal_id, approver=approver)
            self.sync()
        return self._log_decision(decision)

    def reject(self, proposal_id: str, *, reason: str, approver: str = "api") -> Decision:
        """Reject a waiting proposal; same errors as ``approve``."""
        with self._review_lock:
            decision = reject_pending(self.guard.ledger, proposal_id, reason=reason,
                                      approver=approver)
        return self._log_decision(decision)

    def rollback(self, version: str) -> Decision:
        """Serve an earlier accepted version again, recorded as an operator decision.

        Rejected (never raised) when ``version`` was never accepted, is
        already served, or breaks today's constraints.
        """
        with self._review_lock, self._telemetry.span(SPAN_REVIEW) as span:
            served = self._served
            ids: dict[str, Any] = {
                "parent": served.version, "candidate": version, "kind": "rollback",
                "source": "operator", "proposal_id": f"rollback-{version[:12]}"}
            accepted = {e.decision.candidate for e in self.guard.ledger.entries()
                        if e.decision is not None and e.decision.accepted}
            decision: Decision
            if version not in accepted:
                if not self.guard.ledger.has_state(version):
                    ids["candidate"] = None  # the ledger names only versions it stores
                decision = Decision.reject([Finding(
                    check="unknown_version", passed=False,
                    message=f"{version[:12]} was never an accepted version of this model; "
                            "see the ledger for versions to roll back to",
                    evidence={"requested": version})], **ids)
            elif version == served.version:
                decision = Decision.reject([Finding(
                    check="no_change", passed=False, message=f"{version[:12]} is already served")],
                    **ids)
            else:
                decision = self._review_rollback(served, version, ids)
            decision = self._finish(decision, None, {})
            set_attributes(span, {ATTR_VERDICT: decision.verdict.value, ATTR_PARENT: served.version,
                                  ATTR_CANDIDATE: version, ATTR_PROPOSAL_KIND: "rollback"})
            return decision

    def _review_rollback(self, served: _Served, version: str, ids: dict[str, Any]) -> Decision:
        target = self.guard.ledger.get_state(version)
        current = self.guard.ledger.get_state(served.version)
        constraints = self.guard.constraints
        findings = [*constraints.check_frozen(current, target),
                    *constraints.check_invariants(target)]
        if any(not f.passed for f in findings):
            return Decision.reject(sorted(findings, key=lambda f: f.passed), **ids)
        try:
            client = self._rebuild(served.client, version)
        except Exception as exc:
            return Decision.reject([Finding(check="sandbox", passed=False,
                                            message=f"rebuilding {version[:12]} failed: {exc}")],
                                   **ids)
        accepted = Decision.accept(findings, **ids)
        try:
            recorded = self.guard.ledger.promote(accepted, served.version, {
                "id": ids["proposal_id"], "kind": "rollback", "source": "operator",
                "parent": served.version, "target": version})
        except Exception as exc:
            return Decision.error("ledger_write", f"recording the rollback failed: {exc}", **ids)
        if recorded is None:
            return Decision.reject([Finding(check="stale_parent", passed=False,
                                            message="another update was accepted first")], **ids)
        self._served = _serve(client, version, recorded.decided_at)
        return recorded


def _refuse_sync(error: ConfigError) -> Callable[[Request], Response]:
    def refuse(request: Request) -> Response:
        raise ConfigError(str(error))

    return refuse


def _run_finding(evidence: CanaryEvidence, suite: CanarySuite) -> Finding:
    """How the canary run went and what lets anyone replay it: the seed, the hidden cases
    drawn, the suite's fingerprint and each public case's checker spec (hidden ones: name)."""
    ran = {o.case_id for o in evidence.outcomes}
    specs = {c.id: ({"name": c.expect.name, "hidden": True} if c.hidden else c.expect.spec())
             for c in suite if c.id in ran}
    return Finding(
        check="canary_run", passed=True,
        message=f"{len(evidence.outcomes)} of {evidence.planned} planned cases ran"
                + (f"; stopped: {evidence.stop_reason}" if evidence.stop_reason else ""),
        evidence={"seed": evidence.seed, "hidden_drawn": list(evidence.hidden_drawn),
                  "suite_fingerprint": suite.fingerprint(), "checkers": specs,
                  "cases_run": len(evidence.outcomes), "planned": evidence.planned,
                  "stop_reason": evidence.stop_reason})


def _cascade_findings(evidence: CanaryEvidence, settings: RunSettings) -> list[Finding]:
    """Findings of the cheap smoke stage and of the public-versus-hidden divergence test."""
    findings = []
    if evidence.stop_reason.startswith(SMOKE_STOP):
        findings.append(Finding(
            check="smoke", passed=False,
            message=f"the candidate errored on all {settings.smoke_cases} smoke cases; it was "
                    "rejected before the statistical canary",
            evidence={"cases": [o.case_id for o in evidence.outcomes if not o.safety]}))
    gaming = gaming_p_value(evidence.outcomes)
    if gaming is not None:
        p, counts = gaming
        diverges = p < settings.gaming_alpha
        findings.append(Finding(
            check="gaming", passed=not diverges,
            message=(f"the candidate regresses on {counts['hidden_regressed']} of "
                     f"{counts['hidden_cases']} hidden cases but {counts['public_regressed']} of "
                     f"{counts['public_cases']} public ones (one-sided Fisher p={p:.2g} < "
                     f"{settings.gaming_alpha:g}): it behaves differently when it may be "
                     "recognising evaluation" if diverges else
                     f"public and hidden results agree (Fisher p={p:.2g})"),
            evidence={"statistic": "fisher_exact_one_sided", "p_value": p,
                      "alpha": settings.gaming_alpha, **counts}))
    return findings


def _checker_finding(evidence: CanaryEvidence) -> Finding | None:
    """A failed finding when a checker could not judge the incumbent's output (it raised, or
    returned nothing or NaN): the pair is no evidence, and a broken evaluator must never let
    a candidate through on a tie (ids only)."""
    unjudged = [o for o in evidence.outcomes if o.checker_error]
    if not unjudged:
        return None
    return Finding(
        check="checker_error", passed=False,
        message=f"the checker could not judge the incumbent's output on {len(unjudged)} "
                f"case(s), first {unjudged[0].case_id!r} ({unjudged[0].checker_error}); the "
                "evidence is void: fix the checker (it must return True or False)",
        evidence={"cases": [o.case_id for o in unjudged[:50]], "count": len(unjudged)})


def _blob_findings(store: BlobStore, parent: dict[str, Any], candidate: dict[str, Any]
                   ) -> list[Finding]:
    """A failed finding per blob the candidate adds that the store lacks or holds altered.

    Blobs the parent already references were checked when it was accepted. A promoted state
    whose blob is missing would make the ledger fail verification, and the guard refuse to
    start. Store errors other than ``KeyError`` propagate (the caller records ``error``).
    """
    known = set(iter_blob_refs(parent))
    findings = []
    for digest in sorted(set(iter_blob_refs(candidate)) - known):
        try:
            data = store.get(digest)
        except KeyError:
            findings.append(Finding(
                check="blob_store", passed=False,
                message=f"the candidate references blob {digest}, which the blob store does "
                        "not hold; store the artifact before proposing the state",
                evidence={"digest": digest, "problem": "missing"}))
            continue
        if blob_digest(data) != digest:
            findings.append(Finding(
                check="blob_store", passed=False,
                message=f"blob {digest} in the blob store does not match its digest",
                evidence={"digest": digest, "problem": "altered"}))
    return findings


def _limit_finding(exc: ProposalTooLarge) -> Finding:
    return Finding(check="proposal_limits", passed=False, message=str(exc),
                   evidence={"limit": exc.limit, "configured": exc.configured})


def _raw_proposal(proposal: UpdateProposal | Any) -> Any:
    """The proposal as recorded: its JSON, or a note when it has none (never raises)."""
    if not isinstance(proposal, UpdateProposal):
        return proposal
    try:
        return proposal.model_dump(mode="json")
    except Exception as exc:
        return {"id": proposal.id, "parent": proposal.parent,
                "unserialisable": f"{type(exc).__name__}: {str(exc)[:500]}"}


def _summary(proposal: Any, exc: ProposalTooLarge) -> dict[str, Any]:
    """What the ledger records of a proposal over the limits: its id and parent, never its body."""
    summary = {}
    for key in ("id", "parent"):
        value = (getattr(proposal, key) if isinstance(proposal, UpdateProposal)
                 else proposal.get(key) if isinstance(proposal, dict) else None)
        if isinstance(value, str) and len(value) <= 128:
            summary[key] = value
    return {**summary, "omitted": f"over the {exc.limit} limit ({exc.configured})"}


def _ids(decision: Decision) -> dict[str, Any]:
    return decision.model_dump(include={"proposal_id", "kind", "source", "rationale", "parent",
                                        "candidate"})


def _jsonable(raw: Any) -> Any:
    try:
        canonical_json(raw)
        return raw
    except ConfigError:
        return {"unserialisable": repr(raw)[:2000]}
