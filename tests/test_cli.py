"""The command line, through click's runner: every command, including failure exit codes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

import guardrails as gr
from guardrails._cli import main
from guardrails.testing import DictClient

STATE: dict[str, Any] = {"prompt": "be kind", "answers": {"a": "1", "b": "2"}, "default": "?"}

CONFIG = """
[constraints]
frozen = ["/prompt"]

[canaries]
files = ["cases.jsonl"]

[approval]
kinds = ["memory"]

[client]
factory = "guardrails.testing:DictClient"
args = {state = {prompt = "be kind", answers = {a = "1", b = "2"}, default = "?"}}
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; undo that for the tests that follow."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cases.jsonl").write_text(
        '{"id": "a", "input": "a", "expect": "1"}\n{"id": "b", "input": "b", "expect": "2"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def guarded(project: Path) -> gr.GuardedClient:
    return gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))


def proposal_file(project: Path, parent: str, *ops: dict[str, Any], kind: str = "state") -> str:
    path = project / "proposal.json"
    path.write_text(json.dumps({"parent": parent, "patch": list(ops), "kind": kind}))
    return str(path)


def test_help_lists_every_command() -> None:
    """--help names every command and the exit codes."""
    result = run("--help")
    for command in ("demo", "check", "config", "status", "pending", "approve", "reject",
                    "review", "rollback", "ledger"):
        assert command in result.output
    assert "configuration error" in result.output


def test_check_accepts_a_valid_configuration(project: Path) -> None:
    """check exits 0 and reports the canary count."""
    result = run("check")
    assert result.exit_code == 0 and "2 canary cases" in result.output


def test_check_fails_with_exit_3_on_a_broken_configuration(project: Path) -> None:
    """check exits 3 and prints the did-you-mean message."""
    (project / "guardrails.toml").write_text(CONFIG.replace("frozen", "frozn"))
    result = run("check")
    assert result.exit_code == 3
    assert "did you mean 'frozen'?" in result.output


def test_check_json_output_is_machine_readable(project: Path) -> None:
    """check --json prints a JSON summary."""
    data = json.loads(run("check", "--json").stdout)
    assert data["cases"] == 2 and data["frozen"] == ["/prompt"]


def test_config_schema_is_json_schema() -> None:
    """config schema prints the JSON schema of the configuration."""
    schema = json.loads(run("config", "schema").stdout)
    assert "canaries" in schema["properties"] and "canaries" in schema["required"]


def test_review_of_a_good_proposal_exits_0(project: Path) -> None:
    """review prints the accepted decision as a table and exits 0."""
    parent = guarded(project).version
    path = proposal_file(project, parent, {"op": "replace", "path": "/default", "value": "??"})
    result = run("review", path)
    assert result.exit_code == 0, result.output
    assert "verdict     accepted" in result.output


def test_review_of_a_frozen_change_exits_1_and_names_the_finding(project: Path) -> None:
    """review of a change to a frozen pointer exits 1 with the frozen_pointer finding."""
    parent = guarded(project).version
    path = proposal_file(project, parent, {"op": "replace", "path": "/prompt", "value": "x"})
    result = run("review", path, "--json")
    assert result.exit_code == 1
    decision = json.loads(result.stdout)
    assert decision["verdict"] == "rejected"
    assert decision["findings"][0]["check"] == "frozen_pointer"


def test_review_of_invalid_json_exits_3(project: Path) -> None:
    """A proposal file that is not JSON is a configuration error."""
    (project / "bad.json").write_text("{nope")
    assert run("review", "bad.json").exit_code == 3


def test_review_without_a_client_section_exits_3(project: Path) -> None:
    """review needs [client]; without it the message says what to add."""
    (project / "guardrails.toml").write_text(CONFIG.split("[client]")[0])
    (project / "p.json").write_text("{}")
    result = run("review", "p.json")
    assert result.exit_code == 3 and "[client]" in result.output


def test_pending_approve_and_reject_round_trip(project: Path) -> None:
    """A waiting proposal is listed, approved once (exit 0), and a second approval exits 4."""
    client = guarded(project)
    waiting = client.propose(gr.UpdateProposal(parent=client.version, kind="memory", patch=[
        {"op": "add", "path": "/answers/c", "value": "3"}]))
    listed = json.loads(run("pending", "--json").stdout)
    assert [p["id"] for p in listed] == [waiting.proposal_id]
    result = run("approve", str(waiting.proposal_id), "--approver", "alice")
    assert result.exit_code == 0 and "approved by alice" in result.output
    assert run("approve", str(waiting.proposal_id)).exit_code == 4
    assert run("pending").output.strip() == "no pending approvals"


def test_reject_records_the_reason(project: Path) -> None:
    """reject --reason records a rejected decision; an unknown id exits 4."""
    client = guarded(project)
    waiting = client.propose(gr.UpdateProposal(parent=client.version, kind="memory", patch=[
        {"op": "add", "path": "/answers/c", "value": "3"}]))
    result = run("reject", str(waiting.proposal_id), "--reason", "not now")
    assert result.exit_code == 0 and "not now" in result.output
    assert run("reject", "unknown", "--reason", "x").exit_code == 4


def test_rollback_serves_an_earlier_version(project: Path) -> None:
    """rollback to the initial version exits 0; to an unknown version is a usage error (2)."""
    client = guarded(project)
    initial = client.version
    client.propose(gr.UpdateProposal(parent=initial, patch=[
        {"op": "replace", "path": "/default", "value": "??"}]))
    client.guard.ledger.close()  # type: ignore[attr-defined]
    assert run("rollback", initial).exit_code == 0
    assert json.loads(run("status", "--json").stdout)["served"] == initial
    assert run("rollback", "f" * 64).exit_code == 2


def test_status_reports_served_version_and_recent_decisions(project: Path) -> None:
    """status --json names the served version, the anchor and the last decisions."""
    client = guarded(project)
    data = json.loads(run("status", "--json").stdout)
    assert data["served"] == client.version == data["anchor"]
    assert data["recent"][0]["verdict"] == "accepted"


def test_ledger_show_filters_by_verdict(project: Path) -> None:
    """ledger show --verdict rejected lists only rejected entries."""
    client = guarded(project)
    client.propose(gr.UpdateProposal(parent=client.version, patch=[
        {"op": "replace", "path": "/prompt", "value": "x"}]))
    out = run("ledger", "show", ".guardrails/ledger.db", "--verdict", "rejected").output
    assert "frozen_pointer" in out and "genesis" not in out


def test_ledger_verify_fails_with_exit_1_on_a_tampered_ledger(project: Path) -> None:
    """verify exits 0 on an intact ledger and 1, naming the entry, after a byte changed."""
    guarded(project)
    assert run("ledger", "verify", ".guardrails/ledger.db").exit_code == 0
    with sqlite3.connect(project / ".guardrails" / "ledger.db") as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, 'genesis', 'genesiz')")
    result = run("ledger", "verify", ".guardrails/ledger.db")
    assert result.exit_code == 1 and "entry 0" in result.output


def test_demo_with_an_unknown_name_is_a_usage_error() -> None:
    """An unknown demo name exits 2 and lists the installed demos."""
    result = CliRunner().invoke(main, ["demo", "nope"])
    assert result.exit_code == 2 and "installed demos" in result.output


def test_plugins_lists_the_built_in_plugins_with_their_settings() -> None:
    """plugins --json lists each built-in plugin with what it provides and its settings schema."""
    data = json.loads(run("plugins", "--json").stdout)
    assert {"pii", "deny_list", "drift_budget", "provenance"} <= set(data)
    assert data["pii"]["provides"] == ["middleware"]
    assert "action" in data["pii"]["settings_schema"]["properties"]


def test_check_warns_when_the_suite_can_never_accept(project: Path) -> None:
    """check reports a suite too small for the sequential rule as a warning (exit 0)."""
    (project / "guardrails.toml").write_text(CONFIG + '\n[decision]\nrule = "sequential"\n')
    result = run("check")
    assert result.exit_code == 0
    assert "warning: 2 capability cases can never be accepted" in result.output
