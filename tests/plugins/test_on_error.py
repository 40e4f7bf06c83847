"""apply_on_error: a runtime policy's own crash follows on_error; nothing else is swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

import guardrails as gr
from guardrails.testing import DictClient

Handler = Callable[[gr.Request], gr.Response]
AsyncHandler = Callable[[gr.Request], Awaitable[gr.Response]]
Register = Callable[[str, str], None]


class ModelDown(Exception):
    pass


def answer(request: gr.Request) -> gr.Response:
    return gr.Response(output=f"echo {request.input}", version="v")


def failing_model(request: gr.Request) -> gr.Response:
    raise ModelDown("model unavailable")


def crash_before(request: gr.Request, call_next: Handler) -> gr.Response:
    raise ValueError("bug before the model")


class Counting:
    """A model stand-in that counts how often it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: gr.Request) -> gr.Response:
        self.calls += 1
        return answer(request)


def crash_after(request: gr.Request, call_next: Handler) -> gr.Response:
    call_next(request)
    raise ValueError("bug after the model")


def passes_model_error_on(request: gr.Request, call_next: Handler) -> gr.Response:
    return call_next(request)


def blocks_on_purpose(request: gr.Request, call_next: Handler) -> gr.Response:
    raise gr.GuardrailViolation("no", policy="probe")


def test_block_turns_a_crash_into_a_violation_naming_the_plugin() -> None:
    """on_error='block': the crash becomes a GuardrailViolation for the plugin, chained."""
    wrapped = gr.apply_on_error(crash_before, policy="probe", on_error="block")
    with pytest.raises(gr.GuardrailViolation) as caught:
        wrapped(gr.Request(input="x"), answer)
    assert caught.value.policy == "probe"
    assert "policy plugin 'probe' failed (ValueError: bug before the model)" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    assert caught.value.findings[0].check == "probe"


def test_block_is_the_default() -> None:
    """Without an explicit on_error, a crash blocks."""
    with pytest.raises(gr.GuardrailViolation):
        gr.apply_on_error(crash_before, policy="probe")(gr.Request(input="x"), answer)


def test_block_logs_an_error() -> None:
    """A blocked call is logged as guardrails.plugin_failed with the plugin's name."""
    with capture_logs() as logs, pytest.raises(gr.GuardrailViolation):
        gr.apply_on_error(crash_before, policy="probe")(gr.Request(input="x"), answer)
    assert logs[0]["event"] == "guardrails.plugin_failed"
    assert logs[0]["log_level"] == "error"
    assert logs[0]["plugin"] == "probe"


def test_allow_passes_the_call_through_and_warns() -> None:
    """on_error='allow': a crash before the model lets the call through with a warning."""
    wrapped = gr.apply_on_error(crash_before, policy="probe", on_error="allow")
    with capture_logs() as logs:
        response = wrapped(gr.Request(input="x"), answer)
    assert response.output == "echo x"
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["on_error"] == "allow"


def test_allow_after_the_model_answered_does_not_call_it_again() -> None:
    """A crash after call_next returns the response already given; the model runs once."""
    model = Counting()
    wrapped = gr.apply_on_error(crash_after, policy="probe", on_error="allow")
    response = wrapped(gr.Request(input="x"), model)
    assert response.output == "echo x"
    assert model.calls == 1


@pytest.mark.parametrize("on_error", ["block", "allow"])
def test_model_errors_are_never_swallowed(on_error: Any) -> None:
    """An error from the rest of the chain propagates unchanged, whatever on_error says."""
    wrapped = gr.apply_on_error(passes_model_error_on, policy="probe", on_error=on_error)
    with pytest.raises(ModelDown):
        wrapped(gr.Request(input="x"), failing_model)


def test_allow_still_raises_the_model_error_when_the_policy_also_failed() -> None:
    """A policy that crashes while handling a model error cannot hide the model's error."""
    def crashes_on_error(request: gr.Request, call_next: Handler) -> gr.Response:
        try:
            return call_next(request)
        except ModelDown:
            raise ValueError("bug in the error handler") from None

    wrapped = gr.apply_on_error(crashes_on_error, policy="probe", on_error="allow")
    with pytest.raises(ModelDown):
        wrapped(gr.Request(input="x"), failing_model)


@pytest.mark.parametrize("on_error", ["block", "allow"])
def test_an_intentional_violation_passes_unchanged(on_error: Any) -> None:
    """A GuardrailViolation raised on purpose is a decision, not a failure."""
    wrapped = gr.apply_on_error(blocks_on_purpose, policy="outer", on_error=on_error)
    with pytest.raises(gr.GuardrailViolation) as caught:
        wrapped(gr.Request(input="x"), answer)
    assert caught.value.policy == "probe"


def test_invalid_on_error_is_a_config_error() -> None:
    """on_error must be block or allow."""
    with pytest.raises(gr.ConfigError, match="use 'block' or 'allow'"):
        gr.apply_on_error(crash_before, policy="probe", on_error="ignore")  # type: ignore[arg-type]


def test_wrapper_keeps_a_sync_only_middleware_sync_only() -> None:
    """A sync-only middleware stays without acall (the async chain runs it in a thread)."""
    wrapped = gr.apply_on_error(crash_before, policy="probe")
    assert not hasattr(wrapped, "acall")


def test_wrapper_uses_acall_in_the_async_chain() -> None:
    """A middleware with acall keeps it, and acall's crash follows on_error too."""
    class Dual:
        def __call__(self, request: gr.Request, call_next: Handler) -> gr.Response:
            return call_next(request)

        async def acall(self, request: gr.Request, call_next: AsyncHandler) -> gr.Response:
            raise ValueError("async bug")

    async def endpoint(request: gr.Request) -> gr.Response:
        return answer(request)

    wrapped = gr.apply_on_error(Dual(), policy="probe", on_error="allow")
    response = asyncio.run(wrapped.acall(gr.Request(input="x"), endpoint))
    assert response.output == "echo x"


def test_wrapper_keeps_an_async_only_middleware_async() -> None:
    """An async-only middleware is wrapped by an async callable and blocks on a crash."""
    async def crashes(request: gr.Request, call_next: AsyncHandler) -> gr.Response:
        raise ValueError("async bug")

    async def endpoint(request: gr.Request) -> gr.Response:
        return answer(request)

    wrapped = gr.apply_on_error(crashes, policy="probe")
    with pytest.raises(gr.GuardrailViolation, match="async bug"):
        asyncio.run(wrapped(gr.Request(input="x"), endpoint))


# -- through a real guard -----------------------------------------------------------------


def test_plugin_crashing_at_run_time_blocks_the_guarded_call(
        register: Register, make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """A built plugin whose middleware crashes blocks invoke() with the plugin named."""
    register("fault_runtime", "plugin_faults:runtime_raises")
    parts = gr.load_plugin("fault_runtime").build({})
    guarded = make_guard(middleware=parts.middleware).wrap(client)
    with pytest.raises(gr.GuardrailViolation) as caught:
        guarded.invoke("2+2")
    assert caught.value.policy == "fault_runtime"
    assert client.calls == []


def test_plugin_crashing_at_run_time_with_allow_serves_the_call(
        register: Register, make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """With on_error='allow' the same crash lets the call through, sync and async."""
    register("fault_runtime", "plugin_faults:runtime_raises")
    parts = gr.load_plugin("fault_runtime").build({"on_error": "allow"})
    guarded = make_guard(middleware=parts.middleware).wrap(client)
    assert guarded.invoke("2+2").output == "4"
    assert asyncio.run(guarded.ainvoke("2+2")).output == "4"


def test_plugin_check_crashing_rejects_the_update_naming_the_plugin(
        register: Register, make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """An update check that raises rejects the proposal; the finding names the plugin."""
    register("fault_check", "plugin_faults:check_raises")
    parts = gr.load_plugin("fault_check").build({})
    guarded = make_guard(checks=parts.checks).wrap(client)
    decision = guarded.propose(gr.UpdateProposal(
        parent=guarded.version, patch=[{"op": "replace", "path": "/params/temperature",
                                        "value": 0.3}]))
    assert not decision.accepted
    finding = decision.deciding_finding
    assert finding is not None and finding.check == "crashing_check"
    assert "plugin 'fault_check'" in finding.message


def test_sync_only_policy_crash_in_the_async_chain_follows_on_error(
        make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """A sync-only policy bridged into ainvoke() still passes through under 'allow'."""
    wrapped = gr.apply_on_error(crash_after, policy="probe", on_error="allow")
    guarded = make_guard(middleware=[wrapped]).wrap(client)
    assert asyncio.run(guarded.ainvoke("2+2")).output == "4"
