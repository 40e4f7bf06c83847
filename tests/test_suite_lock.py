"""The suite is locked per decision: each review's ledger entry names the suite, the rule, the
margin and the alpha that judged it, and a change of any of them is a ``suite_changed`` event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

import guardrails as gr
from guardrails._cli import main
from guardrails.testing import DictClient

STATE: dict[str, Any] = {"prompt": "be kind", "answers": {"a": "1", "b": "2"}, "default": "?"}
CASES = [gr.CanaryCase(id="a", input="a", expect="1"), gr.CanaryCase(id="b", input="b", expect="2")]
CONFIG = """
[canaries]
files = ["cases.jsonl"]
"""


def _review(ledger: gr.Ledger, **guard: Any) -> gr.Decision:
    guarded = gr.Guard(**{"canaries": CASES, **guard}, ledger=ledger).wrap(DictClient(STATE))
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/prompt", "value": "be brief"}]))


def _events(ledger: gr.Ledger) -> list[gr.LedgerEntry]:
    return [e for e in ledger.entries() if e.body.get("event") == "suite_changed"]


def test_each_judged_review_names_its_suite_rule_margin_and_alpha(tmp_path: Path) -> None:
    """The control finding of the ledger entry carries the lock that judged it."""
    decision = _review(gr.SQLiteLedger(tmp_path / "l.db"), margin=0.1)
    lock = next(f for f in decision.findings if f.check == "control").evidence["lock"]
    assert lock["suite_fingerprint"] == gr.CanarySuite(CASES).fingerprint()
    assert lock["margin"] == 0.1 and lock["rule"].endswith("MarginRule")


def test_a_loosened_margin_between_two_reviews_is_its_own_event(tmp_path: Path) -> None:
    """Old and new margin in the event, the fingerprints unchanged, the record kept."""
    path = tmp_path / "l.db"
    _review(gr.SQLiteLedger(path), margin=0.0)
    _review(gr.SQLiteLedger(path), margin=0.2)
    [event] = _events(gr.SQLiteLedger(path))
    assert event.body["changed"] == {"margin": {"old": 0.0, "new": 0.2}}
    assert event.body["old_fingerprint"] == event.body["new_fingerprint"]
    assert event.body["record_restarts"] is False


def test_a_changed_suite_names_old_and_new_fingerprints(tmp_path: Path) -> None:
    """A case added: the event carries both fingerprints and says the record restarts."""
    path = tmp_path / "l.db"
    _review(gr.SQLiteLedger(path))
    more = [*CASES, gr.CanaryCase(id="c", input="c", expect="?")]
    _review(gr.SQLiteLedger(path), canaries=more)
    [event] = _events(gr.SQLiteLedger(path))
    assert event.body["old_fingerprint"] == gr.CanarySuite(CASES).fingerprint()
    assert event.body["new_fingerprint"] == gr.CanarySuite(more).fingerprint()
    assert event.body["record_restarts"] is True


def test_reviews_under_the_same_bar_record_no_event(tmp_path: Path) -> None:
    """Three reviews, one configuration: no suite_changed at all."""
    path = tmp_path / "l.db"
    for _ in range(3):
        _review(gr.SQLiteLedger(path))
    assert _events(gr.SQLiteLedger(path)) == []


class _PlainRule:
    """A custom decision rule that is no pydantic model and has the default repr (its memory
    address, different in every process)."""

    margin = 0.1

    def __call__(self, evidence: Any) -> Any:
        return gr.MarginRule(margin=self.margin)(evidence)


def test_a_custom_rule_with_a_default_repr_is_the_same_lock_after_a_restart(
        tmp_path: Path) -> None:
    """Two instances (as in two processes) of the same plain rule record no suite_changed."""
    path = tmp_path / "l.db"
    first, second = _PlainRule(), _PlainRule()
    assert repr(first) != repr(second)
    _review(gr.SQLiteLedger(path), decision_rule=first)
    _review(gr.SQLiteLedger(path), decision_rule=second)
    assert _events(gr.SQLiteLedger(path)) == []


@pytest.mark.filterwarnings("ignore:guardrails")  # two cases are too few for the rule: no matter
def test_a_change_of_rule_is_recorded_with_the_new_rule(tmp_path: Path) -> None:
    """From the margin rule to the sequential one: rule, margin and alpha all change."""
    path = tmp_path / "l.db"
    _review(gr.SQLiteLedger(path))
    _review(gr.SQLiteLedger(path), decision_rule=gr.SequentialRule(margin=0.3))
    [event] = _events(gr.SQLiteLedger(path))
    assert event.body["changed"]["rule"]["new"].endswith("SequentialRule")
    assert event.body["changed"]["alpha"] == {"old": None, "new": 0.05}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "cases.jsonl").write_text(
        '{"id": "a", "input": "a", "expect": "1"}\n{"id": "b", "input": "b", "expect": "2"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    structlog.reset_defaults()


def _review_from_config(project: Path) -> None:
    guarded = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/default", "value": "!"}]))


def _edit_suite(project: Path) -> None:
    with (project / "cases.jsonl").open("a") as cases:
        cases.write('{"id": "c", "input": "zzz", "expect": {"contains": "!"}}\n')


def test_ledger_show_lists_the_suite_change(project: Path) -> None:
    """`guardrails ledger show` prints the event with what changed, old -> new."""
    _review_from_config(project)
    _edit_suite(project)
    _review_from_config(project)
    out = CliRunner().invoke(main, ["ledger", "show", ".guardrails/ledger.db"]).output
    line = next(row for row in out.splitlines() if "suite_changed" in row)
    assert "suite_fingerprint" in line and "->" in line


def test_status_shows_the_last_suite_change(project: Path) -> None:
    """`guardrails status --json` names the entry and what changed; the text says it too."""
    _review_from_config(project)
    _edit_suite(project)
    _review_from_config(project)
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    [change] = data["suite_changed"]
    assert "suite_fingerprint" in change["changed"]
    text = CliRunner().invoke(main, ["status"]).output
    assert f"changed at entry #{change['entry']}" in text
