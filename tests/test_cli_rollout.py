"""``guardrails rollout status|advance|pause|resume|abort``: the rollout as the ledger and the
shared store record it, driven without the model, with the documented exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

import guardrails as gr
from guardrails._cli import main
from guardrails.testing import DictClient

STATE = {"answers": {"a": "1"}, "rev": 0}
CONFIG = """
[canaries]
files = ["cases.jsonl"]

[rollout]
steps = [5, 50, 100]
min_samples = 1000
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["rollout", *args], catch_exceptions=False)


def _start(project: Path) -> tuple[gr.GuardedClient, gr.Decision]:
    guarded = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    decision = guarded.propose({"parent": guarded.version,
                                "patch": [{"op": "replace", "path": "/rev", "value": 1}]})
    assert decision.accepted
    return guarded, decision


def test_status_without_a_rollout_says_so_and_creates_nothing(project: Path) -> None:
    """A ledger that never rolled out: exit 0, 'no rollout recorded', no store file written."""
    gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    result = run("status")
    assert result.exit_code == 0 and "no rollout recorded" in result.output
    assert not (project / ".guardrails" / "ledger.db-rollout").exists()


def test_status_tells_the_same_story_as_the_ledger(project: Path) -> None:
    """Phase, weight and the attempt's ledger entries, in text and JSON."""
    _, decision = _start(project)
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "step 0" in result.output and "5 % of traffic" in result.output
    data = json.loads(run("status", "--json").output)
    assert data["candidate"] == decision.candidate and data["phase"] == "step"
    assert [s["action"] for s in data["ledger"]] == ["start"]


def test_operators_pause_resume_advance_and_abort(project: Path) -> None:
    """Each action is ledgered; advancing a paused rollout exits 1; no rollout exits 4."""
    _start(project)
    assert run("pause", "--reason", "looking").exit_code == 0
    refused = run("advance")
    assert refused.exit_code == 1 and "paused" in refused.output
    assert run("resume").exit_code == 0
    assert "step 1" in run("advance").output
    assert "aborted" in run("abort", "--reason", "bad feedback").output
    assert run("abort").exit_code == 4
    data = json.loads(run("status", "--json").output)
    assert [s["action"] for s in data["ledger"]] == ["start", "pause", "resume", "advance",
                                                     "abort"]
    assert data["ledger"][-1]["reason"] == "bad feedback"


def test_advancing_past_the_last_step_promotes_in_the_ledger(project: Path) -> None:
    """The CLI's promotion is the ledger's: the served version is the candidate afterwards,
    and a replica follows it."""
    guarded, decision = _start(project)
    run("advance")
    assert "promoted" in run("advance").output
    ledger = gr.SQLiteLedger(project / ".guardrails" / "ledger.db")
    assert ledger.served_version() == decision.candidate
    guarded.sync()
    assert guarded.version == decision.candidate and guarded._rollout is None


def test_an_action_without_a_rollout_section_is_a_configuration_error(project: Path) -> None:
    """Exit 3 naming the missing [rollout]."""
    (project / "guardrails.toml").write_text('[canaries]\nfiles = ["cases.jsonl"]\n')
    gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    result = run("abort")
    assert result.exit_code == 3 and "[rollout]" in result.output
