"""Plugins that misbehave on purpose, registered by tests through fake entry points.

Not a test module: ``tests/plugins/conftest.py`` registers these targets
under ``guardrails.plugins`` for the tests that ask for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import guardrails as gr


class Settings(gr.RuntimePolicySettings):
    limit: int = 1


class CheckSettings(gr.PluginSettings):
    pass


def _echo(request: gr.Request, call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
    return call_next(request)


def _build_echo(settings: Settings) -> gr.PluginParts:
    return gr.PluginParts(middleware=[_echo])


good = gr.Plugin(name="fault_good", settings=Settings, factory=_build_echo,
                 provides={"middleware"}, description="a well-formed plugin")


def make_good() -> gr.Plugin[Any]:
    """A zero-argument factory returning a plugin."""
    return gr.Plugin(name="fault_factory", settings=Settings, factory=_build_echo,
                     provides={"middleware"})


def factory_raises() -> gr.Plugin[Any]:
    raise RuntimeError("factory exploded")


not_a_plugin = 42

wrong_name = gr.Plugin(name="some_other_name", settings=Settings, factory=_build_echo,
                       provides={"middleware"})


def _build_raises(settings: Settings) -> gr.PluginParts:
    raise RuntimeError("cannot build")


build_raises = gr.Plugin(name="fault_build", settings=Settings, factory=_build_raises,
                         provides={"middleware"})


class Explodes:
    """A runtime policy whose own code crashes on every call, sync and async."""

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        raise ValueError("policy bug")

    async def acall(self, request: gr.Request, call_next: Any) -> gr.Response:
        raise ValueError("policy bug")


def _build_explodes(settings: Settings) -> gr.PluginParts:
    return gr.PluginParts(middleware=[Explodes()])


runtime_raises = gr.Plugin(name="fault_runtime", settings=Settings, factory=_build_explodes,
                           provides={"middleware"})


class CrashingCheck:
    name = "crashing_check"

    def __call__(self, context: gr.ReviewContext) -> list[gr.Finding]:
        raise KeyError("no such field")


def _build_crashing_check(settings: CheckSettings) -> gr.PluginParts:
    return gr.PluginParts(checks=[CrashingCheck()])


check_raises = gr.Plugin(name="fault_check", settings=CheckSettings,
                         factory=_build_crashing_check, provides={"checks"})
