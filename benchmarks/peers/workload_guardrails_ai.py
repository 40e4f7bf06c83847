"""The shared workload against Guardrails AI: a custom validator on a ``Guard``.

Runs in its own venv (Guardrails AI's package is also called
``guardrails``). The model is a custom LLM callable answering ``"ok"`` at
once; the check is a ``Validator`` subclass registered with
``register_validator`` and used with ``on_fail=exception``, the way its
documentation writes a custom validator. Sync: ``Guard``; async:
``AsyncGuard`` with an async callable. Hub metrics and remote inference are
off through ``~/.guardrailsrc`` (the orchestrator points ``HOME`` at a
directory of its own); litellm reads its bundled model cost map.

    python workload_guardrails_ai.py percall | concurrency
"""

# ruff: noqa: I001
from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from typing import Any

import _bench

# "guardrails" below is Guardrails AI's package (its venv has no other): not first-party here.
import guardrails
from guardrails import AsyncGuard, Guard, OnFailAction
from guardrails.validators import FailResult, PassResult, Validator, register_validator

if "site-packages" not in (guardrails.__file__ or ""):
    raise SystemExit(f"imported {guardrails.__file__}, not Guardrails AI's package")

DENY = re.compile(_bench.DENY_PATTERN)
MESSAGES = [{"role": "user", "content": _bench.USER_TEXT}]


@register_validator(name="bench/no-ssn", data_type="string")
class NoSSN(Validator):
    """Fails when the value contains an SSN-like number."""

    def validate(self, value: Any, metadata: dict[str, Any]) -> PassResult | FailResult:
        if DENY.search(value):
            return FailResult(error_message="the output contains an SSN-like number")
        return PassResult()


def llm(*, messages: Any = None, **kwargs: Any) -> str:
    return _bench.FIXED_OUTPUT


def make_async_llm(latency: float) -> Any:
    async def allm(*, messages: Any = None, **kwargs: Any) -> str:
        if latency:
            await asyncio.sleep(latency)
        return _bench.FIXED_OUTPUT

    return allm


def _check(outcome: Any) -> None:
    if not outcome.validation_passed or outcome.validated_output != _bench.FIXED_OUTPUT:
        raise SystemExit(f"the guarded call did not pass: {outcome!r}")


def percall() -> dict[str, Any]:
    guard = Guard().use(NoSSN(on_fail=OnFailAction.EXCEPTION))
    _check(guard(llm, messages=MESSAGES))
    sync = _bench.compare(lambda: llm(messages=MESSAGES),
                          lambda: guard(llm, messages=MESSAGES))
    aguard = AsyncGuard().use(NoSSN(on_fail=OnFailAction.EXCEPTION))
    allm = make_async_llm(0)

    async def run_async() -> dict[str, Any]:
        _check(await aguard(allm, messages=MESSAGES))
        return await _bench.acompare(lambda: allm(messages=MESSAGES),
                                     lambda: aguard(allm, messages=MESSAGES))

    return {"rows": [{"setting": "", "mode": "sync", **sync},
                     {"setting": "", "mode": "async", **asyncio.run(run_async())}]}


def concurrency() -> dict[str, Any]:
    aguard = AsyncGuard().use(NoSSN(on_fail=OnFailAction.EXCEPTION))
    allm = make_async_llm(_bench.LATENCY)
    result = asyncio.run(_bench.concurrency(lambda: allm(messages=MESSAGES),
                                            lambda: aguard(allm, messages=MESSAGES)))
    return {"rows": [{"setting": "", **result}]}


if __name__ == "__main__":
    chosen = _bench.mode()
    result = percall() if chosen == "percall" else concurrency()
    _bench.emit({"framework": "Guardrails AI", "version": version("guardrails-ai"), **result})
