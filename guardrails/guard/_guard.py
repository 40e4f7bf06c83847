"""``Guard``: the frozen constraints, canaries, middleware and ledger that judge one model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from opentelemetry import metrics, trace

from .._canonical import canonical_json, sha256_hex
from .._errors import ConfigError
from .._telemetry import Telemetry, bound_log
from ..blobs import BlobStore
from ..canary import CanarySuite, RunSettings
from ..chain import StreamPolicy, stream_policies
from ..gate import (
    ApprovalPolicy,
    DecisionRule,
    FrozenConstraints,
    ProposalLimits,
    Stage,
    UpdateCheck,
    update_stages,
)
from ..ledger import Ledger
from ..plugin import fitting_adapters
from ..rollout import RolloutPolicy
from ..sandbox import ProcessSandbox, SandboxLimits
from ._guarded import GuardedClient
from ._settings import GuardSettings, SilentModificationAction


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
    ``rollout``: stage every accepted candidate on live traffic (shadow, weighted
    steps, promotion or rollback on live evidence; see ``RolloutPolicy`` and
    docs/rollout.md); ``None`` serves it at once.
    ``stream_max_held``: the most bytes ``stream``/``astream`` may hold back
    waiting for the output policies (default 1 MiB); past it the stream fails
    closed with ``GuardrailViolation(policy="stream_max_held")``; ``0`` opts out
    of the cap (docs/streaming.md). ``stream_policies`` holds each middleware's
    ``StreamPolicy`` (``None`` when one has no streaming side).

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
        rollout: RolloutPolicy | dict[str, Any] | None = None,
        stream_max_held: int = 1_048_576,
    ) -> None:
        settings = GuardSettings.build(
            constraints=constraints, canaries=canaries, middleware=middleware, ledger=ledger,
            blob_store=blob_store, margin=margin, decision_rule=decision_rule, checks=checks,
            approval=approval, canary_run=canary_run, seed=seed, sandbox=sandbox,
            sandbox_limits=sandbox_limits, case_timeout=case_timeout,
            integrity_check_every=integrity_check_every,
            on_silent_modification=on_silent_modification, proposal_limits=proposal_limits,
            rollout=rollout, stream_max_held=stream_max_held)
        self.settings = settings
        self.constraints: FrozenConstraints = settings.constraints
        self.canaries: CanarySuite = settings.canaries
        self.middleware = settings.middleware
        self.ledger: Ledger = settings.ledger
        self.blob_store: BlobStore | None = settings.blob_store
        self.decision_rule: DecisionRule = settings.decision_rule
        self.checks: tuple[UpdateCheck, ...] = settings.checks
        self.approval = settings.approval
        self.canary_run: RunSettings = settings.canary_run or RunSettings()
        self.seed, self.sandbox = settings.seed, settings.sandbox
        self.process_sandbox = (ProcessSandbox(settings.sandbox_limits or SandboxLimits(
            wall_time=settings.case_timeout)) if settings.sandbox == "process" else None)
        self.case_timeout, self.integrity_check_every = settings.case_timeout, settings.integrity_check_every
        self.on_silent_modification = settings.on_silent_modification
        self.proposal_limits: ProposalLimits = settings.proposal_limits
        self.rollout: RolloutPolicy | None = settings.rollout
        """The staged rollout an accepted candidate enters (``None``: promoted at once)."""
        self.stream_max_held, self.stream_policies = _streaming(settings)
        self.suite_warnings = self._suite_warnings()
        self.telemetry = Telemetry(tracer_provider, meter_provider, capture_content)
        self.stages: tuple[Stage, ...] = update_stages(with_approval=self.approval is not None)
        """The update path, in order: every proposal passes these stages (see ``gate``)."""
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
        """SHA-256 over the constraints, canaries, decision rule, limits and rollout policy."""
        return sha256_hex(canonical_json([
            self.constraints.fingerprint(), self.canaries.fingerprint(),
            repr(self.decision_rule), [repr(c) for c in self.checks],
            None if self.approval is None else self.approval.model_dump(),
            self.canary_run.model_dump(), self.seed, self.sandbox,
            None if self.process_sandbox is None else self.process_sandbox.limits.model_dump(),
            self.case_timeout,
            self.integrity_check_every, self.on_silent_modification,
            self.proposal_limits.model_dump(),
            # Only with a rollout, so a guard without one keeps its fingerprint.
            *([] if self.rollout is None else [self.rollout.model_dump(mode="json")]),
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

        ``client`` is a ``SelfUpdatingClient``, or a stream-only one
        (``SelfUpdatingStreamClient``: ``stream``/``astream`` and no ``invoke``),
        whose ``invoke``, ``ainvoke`` and canary answers are its stream consumed
        whole (docs/streaming.md). Raises ``LedgerIntegrityError`` when the
        ledger does not verify.
        """
        if self._wrapped:
            raise ConfigError("this Guard already guards a client; a guard and its ledger "
                              "belong to one model: build another Guard with its own ledger")
        missing = [m for m in ("snapshot", "propose_update", "with_state")
                   if not callable(getattr(client, m, None))]
        if not any(callable(getattr(client, m, None)) for m in ("invoke", "stream", "astream")):
            # A stream-only client answers invoke and canaries with its stream consumed whole.
            missing.insert(0, "invoke (or stream/astream)")
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


def _streaming(settings: GuardSettings) -> tuple[int, tuple[StreamPolicy, ...] | None]:
    """``stream_max_held`` and each middleware's streaming side (``None`` when one has none:
    streams then answer through ``invoke``, as one chunk). ``ConfigError`` names a policy
    that declares a malformed one, when the guard is built."""
    return settings.stream_max_held, stream_policies(settings.middleware)
