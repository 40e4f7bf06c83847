"""``word_limit``: an example third-party guardrails plugin.

It shows the three things every plugin has: a settings model (here
subclassing ``RuntimePolicySettings`` because it contributes middleware, so
operators get ``on_error`` for free), a factory turning validated settings
into ``PluginParts``, and a module-level ``Plugin`` that the entry point
names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import Field, model_validator

import guardrails as gr


class WordLimitSettings(gr.RuntimePolicySettings):
    """Settings of ``word_limit`` (give at least one limit)."""

    max_output_words: int | None = Field(default=None, ge=1)
    """Answers with more words than this are blocked."""
    max_prompt_words: int | None = Field(default=None, ge=1)
    """Proposals may not make the system prompt longer than this."""
    prompt_key: str = "system_prompt"
    """The top-level state key holding the system prompt."""

    @model_validator(mode="after")
    def _some_limit(self) -> WordLimitSettings:
        if self.max_output_words is None and self.max_prompt_words is None:
            raise ValueError("set max_output_words, max_prompt_words or both")
        return self


def count_words(value: Any) -> int:
    """Whitespace-separated words in a text; 0 for anything else."""
    return len(value.split()) if isinstance(value, str) else 0


class OutputWordLimit:
    """Runtime middleware: block answers over the limit. Stateless."""

    name = "word_limit"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __repr__(self) -> str:
        return f"OutputWordLimit({self.limit})"

    def _check(self, response: gr.Response) -> gr.Response:
        words = count_words(response.output)
        if words > self.limit:
            message = f"the answer has {words} words, over the limit of {self.limit}"
            finding = gr.Finding(check=self.name, passed=False, message=message,
                                 evidence={"words": words, "limit": self.limit})
            raise gr.GuardrailViolation(message, policy=self.name, findings=(finding,))
        return response

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        return self._check(call_next(request))

    async def acall(self, request: gr.Request,
                    call_next: Callable[[gr.Request], Awaitable[gr.Response]]) -> gr.Response:
        return self._check(await call_next(request))


class PromptWordLimit:
    """Update check: the candidate's system prompt stays within the limit."""

    name = "word_limit"

    def __init__(self, limit: int, key: str) -> None:
        self.limit = limit
        self.key = key

    def __repr__(self) -> str:
        return f"PromptWordLimit({self.limit}, {self.key!r})"

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        words = count_words(context.candidate_state.get(self.key))
        ok = words <= self.limit
        return [gr.Finding(check=self.name, passed=ok,
                           message=f"the system prompt has {words} words "
                                   f"({'within' if ok else 'over'} the limit of {self.limit})",
                           evidence={"words": words, "limit": self.limit})]


def build(settings: WordLimitSettings) -> gr.PluginParts:
    middleware = [] if settings.max_output_words is None else [
        OutputWordLimit(settings.max_output_words)]
    checks = [] if settings.max_prompt_words is None else [
        PromptWordLimit(settings.max_prompt_words, settings.prompt_key)]
    return gr.PluginParts(middleware=middleware, checks=checks)


plugin = gr.Plugin(
    name="word_limit", settings=WordLimitSettings, factory=build,
    provides={"middleware", "checks"},
    description="Block answers over N words; reject prompts growing over M words.")
