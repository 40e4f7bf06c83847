"""Guard(sandbox="process"): misbehaving candidates are stopped and rejected, the incumbent serves."""

from __future__ import annotations

from typing import Any

import pytest
from sandbox_clients import ScriptedClient

import guardrails as gr

STATE: dict[str, Any] = {"answers": {"a": "1", "b": "2"}, "default": "?"}
CASES = [gr.CanaryCase(id="a", input="a", expect="1"), gr.CanaryCase(id="b", input="b", expect="2")]


def guarded(wall_time: float = 1.5, cpu_time: float = 2) -> gr.GuardedClient:
    limits = gr.SandboxLimits(wall_time=wall_time, cpu_time=cpu_time, memory=400 * 1024 * 1024,
                              startup=30)
    guard = gr.Guard(gr.FrozenConstraints(), CASES, sandbox="process", sandbox_limits=limits,
        canary_run=gr.RunSettings(smoke_cases=0, retries=0))
    return guard.wrap(ScriptedClient(STATE))


@pytest.mark.parametrize(("mode", "limit", "wall_time"), [
    ("hang", "wall_time", 1.5), ("exit", "exited with code 3", 1.5),
    ("allocate", "memory", 5), ("burn", "cpu_time", 8)])
def test_a_misbehaving_candidate_is_rejected_naming_the_limit(mode: str, limit: str,
                                                             wall_time: float) -> None:
    """Hanging, crashing, memory-hungry and CPU-burning candidates are each rejected by the
    sandbox finding naming what they hit, and the incumbent keeps answering."""
    client = guarded(wall_time=wall_time, cpu_time=1)
    before = client.version
    decision = client.propose(gr.UpdateProposal(parent=before, patch=[
        {"op": "add", "path": "/mode", "value": mode}]))
    assert decision.verdict is gr.Verdict.REJECTED
    finding = decision.deciding_finding
    assert finding is not None and finding.check == "sandbox"
    assert limit in finding.message or limit in str(finding.evidence), finding
    assert client.version == before
    assert client.invoke("a").output == "1"


def test_a_good_candidate_is_evaluated_in_the_sandbox_and_served_in_process() -> None:
    """An honest candidate passes in the child process; the served client is an in-process build."""
    client = guarded()
    decision = client.propose(gr.UpdateProposal(parent=client.version, patch=[
        {"op": "replace", "path": "/default", "value": "??"}]))
    assert decision.accepted, decision.reasons
    assert isinstance(client.client, ScriptedClient)
    assert client.invoke("zzz").output == "??"


def test_a_candidate_that_hangs_while_building_is_rejected() -> None:
    """with_state that never returns inside the sandbox is stopped and rejected."""
    client = guarded()
    decision = client.propose(gr.UpdateProposal(parent=client.version, patch=[
        {"op": "add", "path": "/build", "value": "hang"}]))
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None and decision.deciding_finding.check == "sandbox"


def test_an_unpicklable_client_is_refused_at_wrap_time() -> None:
    """sandbox="process" with a client that cannot be pickled is a ConfigError naming the fix."""
    guard = gr.Guard(gr.FrozenConstraints(), CASES, sandbox="process")

    class Local(ScriptedClient):
        pass

    with pytest.raises(gr.ConfigError, match="inline"):
        guard.wrap(Local(STATE))
