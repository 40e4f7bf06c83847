"""What flows through the runtime chain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DISCLOSURE_VERSION = "guardrails.served_version"
DISCLOSURE_SELF_IMPROVING = "guardrails.self_improving"
DISCLOSURE_LAST_CHANGE = "guardrails.last_change"


class Request(BaseModel):
    """One call to a guarded model.

    Canary requests are built exactly like production ones: nothing in a
    request tells the client that it is being evaluated.
    """

    model_config = ConfigDict(frozen=True)

    input: Any
    """What the model is asked: text, messages, features, whatever the client takes."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Per-call parameters the client may honour (sampling settings, for example)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Application data for middlewares (user id, rate-limit key); never sent to the model."""


class Response(BaseModel):
    """What a guarded call returns.

    ``metadata`` always holds the disclosure keys: ``guardrails.served_version``
    (the version that answered), ``guardrails.self_improving`` (``True``) and
    ``guardrails.last_change`` (ISO 8601 time of the last accepted change).
    """

    model_config = ConfigDict(frozen=True)

    output: Any
    """The client's answer, as the client returned it (after output middlewares)."""
    version: str
    """The served version id that produced ``output``."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Disclosure metadata plus anything middlewares added."""
