"""A third-party plugin, pip-installed from examples/plugin_example, works like a built-in one.

The session fixture installs the example package into the running
environment (not in editable mode: an editable install's .pth file is only
read when an interpreter starts) and uninstalls it afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_helpers import Model, run

import guardrails as gr
from guardrails.testing import DictClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_example"
DISTRIBUTION = "guardrails-example-word-limit"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True,
                   text=True, timeout=300)


@pytest.fixture(scope="session", autouse=True)
def example_installed() -> Iterator[None]:
    # Without the build backend in this environment, let pip fetch it in isolation.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    try:
        _pip("install", "-q", "--no-deps", *isolation, str(EXAMPLE))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"installing {EXAMPLE} failed:\n{exc.stdout}\n{exc.stderr}")
    importlib.invalidate_caches()
    yield
    _pip("uninstall", "-y", "-q", DISTRIBUTION)
    importlib.invalidate_caches()


def test_discovered_next_to_the_built_ins() -> None:
    """installed_plugins lists the example with its distribution, like any built-in."""
    infos = gr.installed_plugins()
    info = infos["word_limit"]
    assert info.loaded
    assert info.distribution == DISTRIBUTION
    assert info.provides == ("checks", "middleware")
    assert {"pii", "invariants"} <= set(infos)


def test_configured_from_toml_and_run_as_middleware() -> None:
    """Settings parsed from a TOML table build a middleware that blocks like a built-in."""
    table = tomllib.loads('[[policies]]\nname = "word_limit"\n'
                          'settings = { max_output_words = 3 }\n')["policies"][0]
    parts = gr.load_plugin(table["name"]).build(table["settings"])
    assert run(parts.middleware, "q", Model("one two three")).output == "one two three"
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(parts.middleware, "q", Model("one two three four"))
    assert caught.value.policy == "word_limit"


def test_settings_errors_read_like_a_built_ins() -> None:
    """A typo gets the same PluginError, naming plugin, key and suggestion."""
    with pytest.raises(gr.PluginError) as caught:
        gr.load_plugin("word_limit").build({"max_output_word": 3})
    assert str(caught.value).startswith(
        "plugin 'word_limit': setting 'max_output_word': unknown setting; did you mean "
        "'max_output_words'?")


def test_its_update_check_gates_a_real_guard(make_guard: Callable[..., gr.Guard],
                                             client: DictClient) -> None:
    """The example's check rejects a proposal that grows the prompt past the limit."""
    parts = gr.load_plugin("word_limit").build({"max_prompt_words": 5})
    guarded = make_guard(checks=parts.checks).wrap(client)
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/system_prompt",
         "value": "You are a careful, kind and very thorough assistant."}]))
    assert not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "word_limit"


def test_its_middleware_follows_on_error_like_a_built_in(
        make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """Plugin.build wraps third-party middleware in the same on_error boundary."""
    parts = gr.load_plugin("word_limit").build({"max_output_words": 50, "on_error": "allow"})
    assert parts.middleware[0].on_error == "allow"
    guarded = make_guard(middleware=parts.middleware).wrap(client)
    assert guarded.invoke("2+2").output == "4"
