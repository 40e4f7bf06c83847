"""The jail's policy and its failure paths: strict fails closed, best_effort records, off is off.

A kernel that refuses a layer is made real, not mocked: ``jail_worker.py``
runs in a process whose seccomp filter makes ``unshare`` fail, as a
container's default profile would, and every process it starts inherits it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_clients import ScriptedClient

import guardrails as gr
from guardrails._config import guard_kwargs, load_config
from guardrails.sandbox import LAYERS, ProcessSandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the jail is Linux")

MiB = 1024 * 1024
STATE = {"answers": {"2+2": "4"}, "default": "?"}
WORKER = Path(__file__).with_name("jail_worker.py")


def run_worker(mode: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(WORKER), mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start(policy: gr.JailPolicy, state: dict[str, Any] | None = None) -> Any:
    sandbox = ProcessSandbox(gr.SandboxLimits(memory=1024 * MiB, jail=policy))
    return sandbox, sandbox.start(ScriptedClient(STATE), state or STATE)


def test_a_strict_jail_refuses_when_the_kernel_refuses_a_layer() -> None:
    """With unshare refused, strict raises SandboxUnavailable naming the layer and the fix,
    and a guard's review of it is an error decision saying the same."""
    result = run_worker("strict")
    assert result["refused"]["layer"] == "namespaces"
    assert "user namespaces" in result["refused"]["message"]
    assert "best_effort" in result["refused"]["message"]
    assert result["verdict"] == "error"
    assert any(f["check"] == "sandbox" and "namespaces layer" in f["message"]
               for f in result["findings"])


def test_best_effort_reviews_with_what_the_kernel_allows_and_records_the_rest() -> None:
    """Under best_effort the candidate runs; the decision names the missing layers."""
    result = run_worker("best_effort")
    assert result["answer"] == "4"
    assert result["isolation"]["missing"] == ["namespaces", "proc"]
    isolation = next(f for f in result["findings"] if f["check"] == "isolation")
    assert isolation["evidence"]["missing"] == ["namespaces", "proc"]


def test_isolation_off_is_the_resource_jail_only() -> None:
    """``off`` sets up no namespace, Landlock or seccomp layer, and says so."""
    sandbox, proxy = start(gr.JailPolicy(isolation="off"))
    with proxy:
        assert proxy.isolation["layers"] == ["clean_env"]
        assert "landlock_fs" in proxy.isolation["missing"]
        assert proxy.invoke(gr.Request(input="2+2")) == "4"
    sandbox.close()


def test_only_the_variables_the_policy_names_reach_the_candidate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed variable passes through; an API key that is not listed does not."""
    monkeypatch.setenv("GUARDRAILS_TEST_LISTED", "visible")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    sandbox, proxy = start(gr.JailPolicy(env=("GUARDRAILS_TEST_LISTED",)))
    with proxy:
        environment = proxy.invoke(gr.Request(input="environ"))
    sandbox.close()
    assert environment["GUARDRAILS_TEST_LISTED"] == "visible"
    assert "OPENAI_API_KEY" not in environment
    assert environment["TMPDIR"] == environment["HOME"] and "guardrails-jail-" in environment["HOME"]


def test_read_paths_grant_reading_and_nothing_more(tmp_path: Path) -> None:
    """A folder in read_paths is readable; its sibling is not; neither is writable."""
    granted, other = tmp_path / "weights", tmp_path / "other"
    for folder in (granted, other):
        folder.mkdir()
        (folder / "data.txt").write_text("weights")
    sandbox, proxy = start(gr.JailPolicy(read_paths=(str(granted),)))
    with proxy:
        seen = proxy.invoke(gr.Request(input=f"read:{granted / 'data.txt'}"))
        hidden = proxy.invoke(gr.Request(input=f"read:{other / 'data.txt'}"))
        written = proxy.invoke(gr.Request(input=f"write:{granted / 'new.txt'}"))
    sandbox.close()
    assert seen == "weights"
    assert hidden.startswith("PermissionError")
    assert written.startswith("PermissionError")


def test_no_state_passes_from_one_candidate_to_the_next() -> None:
    """Each candidate is a fresh fork: what one left in memory or in its scratch, the next
    does not see."""
    sandbox = ProcessSandbox(gr.SandboxLimits(memory=1024 * MiB))
    with sandbox.start(ScriptedClient(STATE), STATE) as first:
        first.invoke(gr.Request(input="leave"))
        assert first.invoke(gr.Request(input="find")) == {"memory": True, "scratch": True}
    with sandbox.start(ScriptedClient(STATE), STATE) as second:
        assert second.invoke(gr.Request(input="find")) == {"memory": False, "scratch": False}
    sandbox.close()


def test_a_warm_start_is_faster_than_a_cold_one() -> None:
    """Forking from the template beats starting an interpreter (the benchmark has the ratio)."""
    def median_start(policy: gr.JailPolicy) -> float:
        sandbox = ProcessSandbox(gr.SandboxLimits(memory=1024 * MiB, jail=policy))
        sandbox.check_client(ScriptedClient(STATE))
        times = []
        for _ in range(3):
            started = time.perf_counter()
            sandbox.start(ScriptedClient(STATE), STATE).close()
            times.append(time.perf_counter() - started)
        sandbox.close()
        return statistics.median(times)

    assert median_start(gr.JailPolicy()) < median_start(gr.JailPolicy(warm=False))


def test_the_jail_policy_is_part_of_the_guard_fingerprint() -> None:
    """A guard whose jail is weakened is a different policy."""
    cases = [gr.CanaryCase(id="sum", input="2+2", expect="4")]
    strict = gr.Guard(canaries=cases, sandbox="process")
    weak = gr.Guard(canaries=cases, sandbox="process",
                    sandbox_limits=gr.SandboxLimits(jail=gr.JailPolicy(isolation="off")))
    assert strict.fingerprint() != weak.fingerprint()
    assert strict.process_sandbox is not None and weak.process_sandbox is not None
    assert strict.process_sandbox.limits.jail.isolation == "strict"


def test_the_sandbox_keys_of_the_config_file_build_the_jail(tmp_path: Path) -> None:
    """``[sandbox]`` isolation, max_processes, read_paths (from the file's folder), env, warm."""
    (tmp_path / "canaries.jsonl").write_text('{"id": "sum", "input": "2+2", "expect": "4"}\n')
    (tmp_path / "guardrails.toml").write_text(
        '[canaries]\nfiles = ["canaries.jsonl"]\n'
        '[sandbox]\nmode = "process"\nisolation = "best_effort"\nmax_processes = 16\n'
        'read_paths = ["models"]\nenv = ["LANG"]\nnetwork = ["api.openai.com:443"]\n'
        'warm = false\n')
    config, root = load_config(tmp_path / "guardrails.toml")
    jail = guard_kwargs(config, root, "guardrails.toml")["sandbox_limits"].jail
    assert jail == gr.JailPolicy(isolation="best_effort", max_processes=16,
                                 read_paths=(str(tmp_path / "models"),), env=("LANG",),
                                 network=("api.openai.com:443",), warm=False)


def test_an_unknown_isolation_is_a_config_error(tmp_path: Path) -> None:
    """A typo in isolation is caught when the file loads, with the allowed values."""
    (tmp_path / "guardrails.toml").write_text('[sandbox]\nisolation = "strcit"\n')
    with pytest.raises(gr.ConfigError, match="isolation"):
        load_config(tmp_path / "guardrails.toml")


def test_a_malformed_network_endpoint_is_refused_at_construction() -> None:
    """An endpoint without a port is a ValidationError with an example of the right form."""
    with pytest.raises(ValueError, match="host:port"):
        gr.JailPolicy(network=("api.openai.com",))


def test_every_layer_is_known_to_the_report() -> None:
    """LAYERS lists the layers a full jail has, each once."""
    assert len(set(LAYERS)) == len(LAYERS) == 10
    assert os.path.exists(WORKER)


def test_a_child_holds_no_descriptor_of_the_candidate_before_it() -> None:
    """The template forks each supervisor after closing the previous child's pipes: the second
    child holds only its own two pipe ends and the standard streams."""
    sandbox = ProcessSandbox(gr.SandboxLimits(memory=1024 * MiB))
    with sandbox.start(ScriptedClient(STATE), STATE) as first:
        with sandbox.start(ScriptedClient(STATE), STATE) as second:
            fds = second.invoke(gr.Request(input="fds"))
        assert first.invoke(gr.Request(input="2+2")) == "4"
    sandbox.close()
    # stdin, stdout, stderr, the two pipe ends, and the descriptor listdir itself used.
    assert len(fds) <= 6, fds


def test_guardrails_check_prints_the_jail_this_machine_gives(tmp_path: Path) -> None:
    """``guardrails check`` on a process-sandbox config says how many layers a jail gets here."""
    from click.testing import CliRunner

    from guardrails._cli import main

    (tmp_path / "canaries.jsonl").write_text('{"id": "sum", "input": "2+2", "expect": "4"}\n')
    (tmp_path / "guardrails.toml").write_text(
        '[canaries]\nfiles = ["canaries.jsonl"]\n[sandbox]\nmode = "process"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "guardrails.toml")])
    assert result.exit_code == 0, result.output
    assert "jail: strict, 10 layers on this machine; none missing" in result.output


def test_the_sandbox_span_records_the_jail() -> None:
    """The review's sandbox span carries the isolation mode and the layers in force."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = gr.Guard(canaries=[gr.CanaryCase(id="sum", input="2+2", expect="4")],
                     sandbox="process", tracer_provider=provider,
                     canary_run=gr.RunSettings(smoke_cases=0), seed=1)
    guarded = guard.wrap(ScriptedClient(STATE))
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/default", "value": "!"}]))
    assert guard.process_sandbox is not None
    guard.process_sandbox.close()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "guardrails.review.sandbox"]
    assert span.attributes is not None
    assert span.attributes["guardrails.sandbox.isolation"] == "strict"
    assert tuple(span.attributes["guardrails.sandbox.layers"]) == LAYERS
    assert tuple(span.attributes["guardrails.sandbox.missing_layers"]) == ()
