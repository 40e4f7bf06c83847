"""The exceptions a caller may catch."""

from __future__ import annotations

from typing import Any


class GuardrailsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(GuardrailsError, ValueError):
    """A configuration, case file, constraint or state is malformed.

    The message says what was wrong, where, and how to fix it.
    """


class GuardrailViolation(GuardrailsError):
    """A runtime policy blocked a call.

    ``policy`` names the middleware or check that blocked it; ``findings``
    carries the evidence (never hidden canary content).
    """

    def __init__(self, message: str, *, policy: str, findings: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.policy = policy
        self.findings = findings


class LedgerIntegrityError(GuardrailsError):
    """The ledger failed verification; ``index`` is the first bad entry, if known."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
