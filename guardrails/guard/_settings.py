"""``Guard``'s arguments as one validated pydantic model, like the rest of the configuration."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .._errors import ConfigError
from ..canary import CanarySuite, RunSettings
from ..chain import validate_middlewares
from ..gate import ApprovalPolicy, FrozenConstraints, MarginRule, ProposalLimits, UpdateCheck
from ..ledger import Ledger, MemoryLedger
from ..rollout import RolloutPolicy
from ..sandbox import SandboxLimits

SilentModificationAction = Literal["restore", "block"]


class GuardSettings(BaseModel):
    """Everything a ``Guard`` is built from, checked once; see ``Guard`` for each meaning.

    ``GuardSettings.build(**kwargs)`` raises ``ConfigError`` naming the setting
    and the fix, never a bare ``ValidationError``.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    constraints: Any = None
    canaries: Any = None
    middleware: tuple[Any, ...] = ()
    ledger: Any = None
    blob_store: Any = None
    margin: float = 0.0
    decision_rule: Any = None
    checks: tuple[Any, ...] = ()
    approval: ApprovalPolicy | None = None
    canary_run: RunSettings | None = None
    seed: int | None = None
    sandbox: str = "inline"
    sandbox_limits: SandboxLimits | None = None
    case_timeout: float = 10.0
    integrity_check_every: int = 1000
    on_silent_modification: str = "restore"
    proposal_limits: Any = None
    rollout: RolloutPolicy | None = None
    stream_max_held: int = 1_048_576

    @classmethod
    def build(cls, **kwargs: Any) -> GuardSettings:
        """Validate ``Guard``'s keyword arguments; ``ConfigError`` says what to fix."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "settings"
            raise ConfigError(f"guard setting {where!r}: "
                              f"{str(first['msg']).removeprefix('Value error, ')}") from None

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: Any) -> FrozenConstraints:
        if value is None:
            return FrozenConstraints()
        if not isinstance(value, FrozenConstraints):
            raise ValueError(f"constraints must be FrozenConstraints, got {type(value).__name__}")
        return value

    @field_validator("canaries")
    @classmethod
    def _canaries(cls, value: CanarySuite | Iterable[Any] | None) -> CanarySuite:
        if value is None:
            raise ValueError("a Guard needs canaries: pass a CanarySuite with at least one "
                             "capability case (CanarySuite.from_jsonl(path) or a list of cases)")
        suite = value if isinstance(value, CanarySuite) else CanarySuite(value)
        if not suite.capability:
            raise ValueError("the canary suite has only safety cases; add capability cases so "
                             "the gate has evidence that an update is not worse")
        return suite

    @field_validator("middleware", mode="before")
    @classmethod
    def _middleware(cls, value: Sequence[Any]) -> tuple[Any, ...]:
        return validate_middlewares(value)

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, value: Ledger | None) -> Ledger:
        return MemoryLedger() if value is None else value

    @field_validator("margin")
    @classmethod
    def _margin(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"margin {value!r} is out of range; give a fraction in [0, 1]")
        return value

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Sequence[UpdateCheck]) -> tuple[Any, ...]:
        for check in value:
            if not callable(check):
                raise ValueError(f"update check {check!r} is not callable; an update check is "
                                 "callable(context) -> findings with a 'name'")
        return tuple(value)

    @field_validator("sandbox")
    @classmethod
    def _sandbox(cls, value: str) -> str:
        if value not in ("inline", "process"):
            raise ValueError(f"sandbox {value!r}: use 'inline' or 'process'")
        return value

    @field_validator("case_timeout")
    @classmethod
    def _case_timeout(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"case_timeout {value:g} must be a positive number of seconds")
        return float(value)

    @field_validator("integrity_check_every")
    @classmethod
    def _integrity_every(cls, value: int) -> int:
        if value < 0:
            raise ValueError("integrity_check_every must be >= 0 (0 checks only before reviews)")
        return value

    @field_validator("on_silent_modification")
    @classmethod
    def _on_silent(cls, value: str) -> str:
        if value not in ("restore", "block"):
            raise ValueError(f"on_silent_modification {value!r}: use 'restore' or 'block'")
        return value

    @field_validator("stream_max_held")
    @classmethod
    def _stream_max_held(cls, value: int) -> int:
        if value < 0:
            raise ValueError("stream_max_held must be >= 0 bytes (0: no cap)")
        return value

    @field_validator("proposal_limits")
    @classmethod
    def _limits(cls, value: Any) -> ProposalLimits:
        if value is None:
            return ProposalLimits()
        if not isinstance(value, ProposalLimits):
            raise ValueError(f"proposal_limits must be ProposalLimits, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> GuardSettings:
        # Defaults that depend on other settings, filled in once validation passed.
        if self.decision_rule is None:
            object.__setattr__(self, "decision_rule", MarginRule(margin=self.margin))
        if self.canary_run is None:
            object.__setattr__(self, "canary_run", RunSettings())
        return self
