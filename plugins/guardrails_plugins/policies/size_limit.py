"""``size_limit``: refuse inputs or outputs longer than a number of characters.

A text's size is its length in characters (code points). A structured
input or output (messages, dicts, lists) counts the characters of every
string in it, dict keys included; numbers and other values count nothing.
An oversized input never reaches the model; an oversized output is withheld.
On a stream each channel (text, reasoning, each tool call's arguments) is
counted on its own, and the stream is stopped at the first character over
the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field, model_validator

import guardrails as gr

from ._text import iter_strings, violation


class SizeLimitSettings(gr.RuntimePolicySettings):
    """Settings of the ``size_limit`` plugin (give at least one limit)."""

    max_input_chars: int | None = Field(default=None, ge=1)
    max_output_chars: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some_limit(self) -> SizeLimitSettings:
        if self.max_input_chars is None and self.max_output_chars is None:
            raise ValueError("set max_input_chars, max_output_chars or both")
        return self


def size_of(value: Any) -> int:
    """Characters in ``value``: its length for a string, else the total over its strings."""
    if isinstance(value, str):
        return len(value)
    return sum(len(text) for text in iter_strings(value, keys=True))


class SizeLimit:
    """The ``size_limit`` middleware. Stateless."""

    name = "size_limit"

    def __init__(self, settings: SizeLimitSettings) -> None:
        self.max_input = settings.max_input_chars
        self.max_output = settings.max_output_chars

    def __repr__(self) -> str:
        return f"SizeLimit(max_input_chars={self.max_input}, max_output_chars={self.max_output})"

    def _check(self, value: Any, limit: int | None, where: str) -> None:
        if limit is None:
            return
        size = size_of(value)
        if size > limit:
            raise violation(self.name, f"the {where} has {size} characters, over the limit of "
                            f"{limit}", where=where, chars=size, limit=limit)

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        self._check(request.input, self.max_input, "input")
        response = call_next(request)
        self._check(response.output, self.max_output, "output")
        return response

    async def acall(self, request: gr.Request,
                    call_next: Callable[[gr.Request], Awaitable[gr.Response]]) -> gr.Response:
        self._check(request.input, self.max_input, "input")
        response = await call_next(request)
        self._check(response.output, self.max_output, "output")
        return response

    def streaming(self) -> gr.StreamPolicy:
        """The stream side: the input checked before the stream opens, each channel counted."""
        checks = () if self.max_output is None else (_StreamLimit(self.max_output),)
        return gr.StreamPolicy(self.name, checks=checks, before=self._stream_before)

    def _stream_before(self, request: gr.Request) -> gr.Request:
        self._check(request.input, self.max_input, "input")
        return request


class _StreamLimit:
    """The output limit on a stream: a hit at the first character past it."""

    max_span = 1
    channels = frozenset({"text", "reasoning", "tool_arguments"})

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
        if offset + len(text) <= self.limit:
            return []
        start = max(pos, self.limit - offset)
        end = max(start, min(start + 1, len(text)))
        return [gr.StreamHit(start, end, None, f"more than {self.limit} characters")]


def build(settings: SizeLimitSettings) -> gr.PluginParts:
    return gr.PluginParts(middleware=[SizeLimit(settings)])


plugin = gr.Plugin(
    name="size_limit", settings=SizeLimitSettings, factory=build, provides={"middleware"},
    description="Refuse inputs or outputs longer than a number of characters.")
