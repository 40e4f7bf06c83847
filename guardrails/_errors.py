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


class UnusableResponseError(GuardrailsError):
    """A model answered, but with nothing a caller can use; raised instead of returning it.

    Adapters raise it for a response with no choices, of the wrong schema,
    with empty content where text was asked for, a refusal where text was
    expected, or a NaN, wrong-shape or wrong-type prediction (docs/adapters.md
    lists what each adapter checks). At run time the caller gets this error
    rather than ``''`` or ``None``; in a review the call counts as an error for
    its side, never as an answer.

    ``adapter`` names the adapter; ``reason`` is a short stable code
    (``wrong_schema``, ``no_choices``, ``empty_content``, ``refusal``,
    ``no_answer``, ``missing_field``, ``empty_field``, ``nan``, ``wrong_shape``,
    ``wrong_type``, ``too_large``). The message says what was wrong with the response's
    structure, never its content (it may be a hidden canary's answer).
    """

    transient = False
    """Not retried by the canary runner: the same model on the same input answers the same."""

    def __init__(self, message: str, *, adapter: str, reason: str) -> None:
        super().__init__(message)
        self.adapter = adapter
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: the default reduce would rebuild it without them, so an error
        # raised on a Dask worker or in a child process would not unpickle.
        return (_rebuild_unusable, (str(self), self.adapter, self.reason))


def _rebuild_unusable(message: str, adapter: str, reason: str) -> UnusableResponseError:
    return UnusableResponseError(message, adapter=adapter, reason=reason)
