"""``guardrails report`` and ``guardrails transparency``: what the file shows, and what it never shows."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

import guardrails as gr
from guardrails.report import read_report
from guardrails.testing import DictClient

from .conftest import run_cli
from .ledgers import HIDDEN_MARKER, HOSTILE, PUBLIC_MARKER, build_ledger, grow_ledger


@pytest.fixture(scope="module")
def report_html(ledger_paths: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    ledger, blobs = ledger_paths
    out = tmp_path_factory.mktemp("out") / "report.html"
    done = run_cli("report", "--ledger", str(ledger), "--blobs", str(blobs), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8")


def test_every_decision_is_in_the_timeline_with_its_verdict(report_html: str) -> None:
    """Each ledger entry has a timeline row naming its verdict, and a section of its own."""
    for index, verdict in ((1, "accepted"), (2, "rejected"), (3, "rejected"), (4, "inconclusive")):
        assert f'id="entry-{index}"' in report_html
        assert f'href="#entry-{index}"' in report_html
        assert f'class="verdict v-{verdict}"' in report_html


def test_hidden_case_content_never_reaches_the_report(report_html: str) -> None:
    """A hidden case is named by id only; its input is nowhere in the file."""
    assert HIDDEN_MARKER not in report_html
    # Which hidden safety cases ran depends on the seeded interleaving; at least one did.
    assert re.search(r'<code>h\d</code> <span class="muted">\(hidden: id only\)</span>',
                     report_html)


def test_public_inputs_are_left_out_unless_asked_for(report_html: str) -> None:
    """Without --public-inputs, case inputs stay out of the report (the state diff aside)."""
    assert f"{PUBLIC_MARKER} 0</code>" not in report_html


def test_model_authored_text_is_escaped(report_html: str) -> None:
    """A rationale carrying markup is shown as text: no script, no image element from it."""
    assert HOSTILE not in report_html
    assert "&lt;script&gt;document.title=" in report_html
    assert "<script" not in report_html


def test_the_report_loads_nothing_from_the_network(report_html: str) -> None:
    """No external script, font, stylesheet or image, and a policy that forbids every load."""
    assert "default-src 'none'" in report_html
    for needle in ("<link", "src=\"http", "@import", "url(http"):
        assert needle not in report_html


def test_sequential_path_is_redrawn_from_the_ledger(ledger_paths: tuple[Path, Path]) -> None:
    """The path's last point is the e-value the gate recorded for the same test."""
    ledger = gr.SQLiteLedger(ledger_paths[0])
    try:
        data = read_report(ledger, source="t")
        entry = next(e for e in ledger.entries() if e.index == 1)
    finally:
        ledger.close()
    recorded = next(f for f in entry.decision.findings if f.check == "capability").evidence
    test = next(t for t in next(d for d in data.details if d.index == 1).tests
                if t.name == "capability")
    assert test.path[-1][0] == recorded["cases"]
    assert test.path[-1][1] == pytest.approx(__import__("math").log(recorded["e_value_accept"]),
                                             rel=1e-6)
    assert test.candidate is not None and test.candidate.passes == recorded["candidate_passes"]


def test_a_ledger_that_does_not_verify_is_reported_in_red(tmp_path: Path) -> None:
    """A tampered entry: the report is written, says so at the top, and the command exits 1."""
    ledger, _ = build_ledger(tmp_path, pending=False)
    with sqlite3.connect(ledger) as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, 'rejected', 'accepted') "
                     "WHERE idx = 2")
    out = tmp_path / "report.html"
    done = run_cli("report", "--ledger", str(ledger), "-o", str(out))
    assert done.returncode == 1
    assert "does not verify" in done.stderr
    html = out.read_text(encoding="utf-8")
    head = html[: html.index("<main")]
    assert "banner bad" in head and "LEDGER DOES NOT VERIFY" in head
    assert "UNVERIFIED: the ledger does not verify" in html


def test_a_missing_ledger_is_a_configuration_error_and_nothing_is_created(tmp_path: Path) -> None:
    """Reading never creates: a ledger path that does not exist is exit 3, and stays absent."""
    missing = tmp_path / "nowhere" / "ledger.db"
    done = run_cli("report", "--ledger", str(missing), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 3
    assert "no ledger there" in done.stderr and "Traceback" not in done.stderr
    assert not missing.parent.exists()


def test_transparency_json_states_what_an_application_may_tell_users(
        ledger_paths: tuple[Path, Path]) -> None:
    """Self-improving, served version, last change and its evidence, as JSON."""
    done = run_cli("transparency", "--ledger", str(ledger_paths[0]), "--json")
    assert done.returncode == 0, done.stderr
    statement = json.loads(done.stdout)
    assert statement["verified"] is True and statement["self_improving"] is True
    assert statement["changes_accepted"] == 1 and statement["changes_not_accepted"] == 3
    assert statement["last_change"]["kind"] == "params"
    assert any("safety cases pass" in line for line in statement["last_change"]["evidence"])


@pytest.mark.slow
def test_demo_then_report_in_the_same_folder(tmp_path: Path) -> None:
    """`guardrails demo && guardrails report` works in the demo's folder with no configuration."""
    assert run_cli("demo", cwd=tmp_path, timeout=300).returncode == 0
    done = run_cli("report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Ledger verified" in html and html.count("<svg") >= 2
    assert "frozen_pointer" in html


@pytest.mark.slow
def test_a_ten_thousand_entry_ledger_reports_in_under_five_megabytes(tmp_path: Path) -> None:
    """Old decisions are summarised, so the file stays small (its time: benchmarks/report.py)."""
    path, blobs = build_ledger(tmp_path, pending=False)
    grow_ledger(path, 10_000)
    out = tmp_path / "big.html"
    done = run_cli("report", "--ledger", str(path), "--blobs", str(blobs), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size < 5 * 1024 * 1024


CONFIG = """
[guard]
capture_content = "{capture}"

[constraints]
frozen = ["/prompt"]
mutable = ["/answers", "/temperature"]
drift_budget = 1.0

[decision]
rule = "sequential"

[canaries]
files = ["cases.jsonl"]

[ledger]
path = "ledger.db"
blobs = "blobs"
"""


def _project(tmp_path: Path, capture: str) -> Path:
    """A configuration naming one public and one hidden case, and a ledger of one review."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cases = [{"id": "pub", "input": "what is two plus two", "expect": "4"},
             {"id": "sec", "input": f"{HIDDEN_MARKER} x", "expect": "no", "hidden": True,
              "tags": ["safety"]}]
    (tmp_path / "cases.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    (tmp_path / "guardrails.toml").write_text(CONFIG.format(capture=capture))
    guard = gr.Guard.from_config(tmp_path / "guardrails.toml")
    client = gr.testing.DictClient({"prompt": "p", "answers": {"what is two plus two": "5"},
                                    "default": "no", "temperature": 0.1})
    client.queue({"op": "replace", "path": "/answers/what is two plus two", "value": "4"},
                 kind="answers")
    guarded = guard.wrap(client)
    guarded.self_improve()
    guard.ledger.close()
    return tmp_path


def test_public_inputs_are_shown_only_when_the_configuration_opts_in(tmp_path: Path) -> None:
    """--public-inputs needs capture_content; with it, public inputs appear and hidden ones never."""
    refused = _project(tmp_path / "off", "false")
    done = run_cli("report", "--public-inputs", cwd=refused)
    assert done.returncode == 3 and "capture_content" in done.stderr
    allowed = _project(tmp_path / "on", "true")
    done = run_cli("report", "--public-inputs", cwd=allowed)
    assert done.returncode == 0, done.stderr
    html = (allowed / "report.html").read_text(encoding="utf-8")
    assert "<code>pub</code>: <code>&#34;what is two plus two&#34;</code>" in html
    assert HIDDEN_MARKER not in html


def test_transparency_names_what_the_configuration_freezes(tmp_path: Path) -> None:
    """With the configuration, the statement lists the frozen and mutable pointers and the budget."""
    project = _project(tmp_path, "false")
    statement = json.loads(run_cli("transparency", "--json", cwd=project).stdout)
    assert statement["frozen"] == ["/prompt"]
    assert statement["mutable"] == ["/answers", "/temperature"]
    assert statement["drift_budget"] == 1.0


def test_importing_guardrails_loads_no_template_or_plot_library() -> None:
    """The report's libraries are imported only when a report is made."""
    import subprocess
    import sys

    code = ("import sys, guardrails, guardrails.report; "
            "print([m for m in ('jinja2', 'matplotlib', 'starlette') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_state_or_rationale_quoting_a_hidden_case_is_withheld(tmp_path: Path) -> None:
    """A model that learned a hidden input from traffic cannot show it through the report."""
    project = _project(tmp_path, "false")
    ledger = gr.SQLiteLedger(project / "ledger.db")
    state = ledger.get_state(ledger.served_version() or "")
    ledger.close()
    client = gr.testing.DictClient(state)
    client.queue({"op": "add", "path": "/memory", "value": f"users ask {HIDDEN_MARKER} x"},
                 kind="answers", rationale=f"I remember {HIDDEN_MARKER} x")
    guarded = gr.Guard.from_config(project / "guardrails.toml").wrap(client)
    assert guarded.self_improve() is not None
    guarded.guard.ledger.close()
    done = run_cli("report", cwd=project)
    assert done.returncode == 0, done.stderr
    html = (project / "report.html").read_text(encoding="utf-8")
    assert HIDDEN_MARKER not in html
    assert "withheld: contains a hidden canary case" in html


def test_a_ledger_that_will_not_open_still_gets_a_red_report(tmp_path: Path) -> None:
    """A file the ledger refuses (here another application's database): red report, exit 1."""
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    out = tmp_path / "report.html"
    done = run_cli("report", "--ledger", str(foreign), "-o", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    html = out.read_text(encoding="utf-8")
    assert "LEDGER DOES NOT VERIFY" in html and "not a guardrails ledger" in html
    statement = run_cli("transparency", "--ledger", str(foreign), "--json")
    assert statement.returncode == 1 and json.loads(statement.stdout)["verified"] is False


def _group_sequential_ledger(tmp_path: Path) -> gr.SQLiteLedger:
    """One review under the group-sequential design (margin 0.1): a harmless change, accepted."""
    ledger = gr.SQLiteLedger(tmp_path / "group.db")
    _review_into(ledger)
    return ledger


def _review_into(ledger: Any) -> None:
    answers = {f"q{i}": f"a{i}" for i in range(120)}
    cases = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(120)]
    cases.append(gr.CanaryCase(id="s", input="q0", expect="a0", tags=("safety",)))
    client = DictClient({"answers": answers, "temperature": 0.2, "default": "?"})
    guard = gr.Guard(canaries=cases, seed=3, ledger=ledger,
                     decision_rule=gr.SequentialRule(margin=0.1, safety_cases=1))
    guarded = guard.wrap(client)
    client.queue({"op": "replace", "path": "/temperature", "value": 0.3})
    decision = guarded.self_improve()
    assert decision is not None and decision.accepted


def test_a_group_sequential_decision_draws_its_score_and_boundary(tmp_path: Path) -> None:
    """The score path ends at the recorded score, at or below the critical value it was
    accepted at; the report's plot gets the score panel."""
    ledger = _group_sequential_ledger(tmp_path)
    try:
        data = read_report(ledger, source="t")
        entry = list(ledger.entries())[-1]
    finally:
        ledger.close()
    recorded = next(f for f in entry.decision.findings if f.check == "capability").evidence
    test = next(t for t in data.details[0].tests if t.name == "capability")
    n, score, critical = test.score_path[-1]
    assert n == recorded["cases"]
    assert score == pytest.approx(recorded["score"], abs=1e-6)
    assert critical == pytest.approx(recorded["score_at"], abs=1e-6) and score <= critical
    assert all(c is None for k, _, c in test.score_path if k < recorded["boundary"]["min_pairs"])
    out = tmp_path / "group.html"
    assert run_cli("report", "--ledger", str(tmp_path / "group.db"), "-o", str(out)).returncode == 0
    assert "score statistic (lower panel)" in out.read_text(encoding="utf-8")


def test_an_anytime_decision_has_no_score_panel(ledger_paths: tuple[Path, Path]) -> None:
    """Margin 0.2 has no tabulated boundary: the e-value path alone, as before."""
    ledger = gr.SQLiteLedger(ledger_paths[0])
    try:
        data = read_report(ledger, source="t")
    finally:
        ledger.close()
    assert all(not t.score_path for d in data.details for t in d.tests)


@pytest.mark.parametrize("evidence", [
    {"boundary": {"constant": "wide", "max_pairs": -1}},
    {"boundary": "group"},
    {"cases": 10**12},
], ids=["nonsense boundary", "boundary not a mapping", "absurd case count"])
def test_a_hostile_sequential_record_draws_no_path_and_the_report_still_renders(
        tmp_path: Path, evidence: dict[str, object]) -> None:
    """What the ledger recorded is read, not trusted: a boundary that does not validate, or a
    case count no review has, gives the final figures without a path, not an error or a stall."""
    ledger = _group_sequential_ledger(tmp_path)
    try:
        decision = list(ledger.entries())[-1].decision
        findings = tuple(f.model_copy(update={"evidence": {**f.evidence, **evidence}})
                         if f.check == "capability" else f for f in decision.findings)
        ledger.record(decision.model_copy(update={"proposal_id": "hostile", "findings": findings,
                                                  "verdict": gr.Verdict.REJECTED,
                                                  "accepted": False}))
        data = read_report(ledger, source="t")
    finally:
        ledger.close()
    test = next(t for t in data.details[0].tests if t.name == "capability")
    assert test.score_path == ()
    if "cases" in evidence:
        assert test.path == ()


@pytest.mark.parametrize("command", ["report", "transparency"])
def test_reading_for_a_report_writes_nothing_to_the_ledger(tmp_path: Path, command: str) -> None:
    """A ledger in rollback-journal mode stays byte for byte what it was, with no file added
    beside it: the report opens it read-only (a writable open would switch it to WAL)."""
    (tmp_path / "ledger").mkdir()
    ledger, _ = build_ledger(tmp_path / "ledger", pending=False)
    with sqlite3.connect(ledger) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    before, files = ledger.read_bytes(), sorted(p.name for p in ledger.parent.iterdir())
    args = ["-o", str(tmp_path / "report.html")] if command == "report" else []
    done = run_cli(command, "--ledger", str(ledger), *args)
    assert done.returncode == 0, done.stderr
    assert ledger.read_bytes() == before
    assert sorted(p.name for p in ledger.parent.iterdir()) == files


def test_a_postgresql_ledger_is_reported_from_its_configuration(
        tmp_path: Path, postgres_dsn: str, pg_schema: str) -> None:
    """`report -c` on a configuration naming a PostgreSQL ledger: verified, every decision
    shown, and the ledger's size unchanged (read-only transactions)."""
    ledger = gr.PostgresLedger(postgres_dsn, schema=pg_schema)
    try:
        _review_into(ledger)
        size = len(ledger)
    finally:
        ledger.close()
    config = tmp_path / "guardrails.toml"
    (tmp_path / "cases.jsonl").write_text(json.dumps({"id": "c0", "input": "q0", "expect": "a0"}))
    config.write_text(f'[canaries]\nfiles = ["cases.jsonl"]\n\n[ledger]\npath = "{postgres_dsn}"\n'
                      f'schema = "{pg_schema}"\n', encoding="utf-8")
    out = tmp_path / "pg.html"
    done = run_cli("report", "-c", str(config), "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    assert "Ledger verified" in html and "score statistic (lower panel)" in html
    reopened = gr.PostgresLedger(postgres_dsn, schema=pg_schema, read_only=True)
    try:
        assert len(reopened) == size
    finally:
        reopened.close()


def _rolled_back(tmp_path: Path) -> Path:
    """A ledger where a candidate passed the canaries, entered a staged rollout and was rolled
    back by its live errors (the rollout of tests/test_rollout_guard.py, on a SQLite ledger)."""
    path = tmp_path / "rollout.db"
    ledger = gr.SQLiteLedger(path)
    cases = [gr.CanaryCase(id=k, input=k, expect=k.upper()) for k in ("a", "b")]
    policy = gr.RolloutPolicy(steps=(5, 25, 50, 100), min_samples=30, evaluate_every=10)

    def responder(state: dict[str, Any], request: gr.Request) -> Any:
        text = str(request.input)
        if text.startswith("live") and int(text.split()[1]) % 10 < state["fail"] * 10:
            raise RuntimeError("the model could not answer")
        return text.upper()

    guarded = gr.Guard(canaries=cases, rollout=policy, ledger=ledger).wrap(
        DictClient({"fail": 0.1, "rev": 0}, responder))
    assert guarded.propose({"parent": guarded.version, "patch": [
        {"op": "replace", "path": "/fail", "value": 0.6},
        {"op": "replace", "path": "/rev", "value": 1}]}).accepted
    for i in range(5000):
        with contextlib.suppress(RuntimeError):
            guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": f"u{i % 2000}"}))
        if guarded.rollout_status().phase == "aborted":  # type: ignore[union-attr]
            break
    ledger.close()
    return path


def test_a_rolled_back_rollout_is_in_the_report_with_its_reason(tmp_path: Path) -> None:
    """Every transition has a row: the start at the first step's share, then the abort with
    the reason and the failed finding the rollout recorded."""
    path = _rolled_back(tmp_path)
    ledger = gr.SQLiteLedger(path, read_only=True)
    try:
        events = [e.body for e in ledger.entries() if e.body.get("event") == "rollout"]
        data = read_report(ledger, source="t")
    finally:
        ledger.close()
    assert [r.action for r in data.rollouts] == [e["action"] for e in events] == ["start", "abort"]
    start, abort = data.rollouts
    assert start.phase == "step" and start.weight == 5.0
    assert abort.phase == "aborted" and abort.reason == events[-1]["reason"]
    assert "fail" in abort.reason and abort.attempt == start.attempt == events[0]["attempt"]
    assert all(name != "rollout" for _, name in data.events)
    out = tmp_path / "rollout.html"
    assert run_cli("report", "--ledger", str(path), "-o", str(out)).returncode == 0
    html = out.read_text(encoding="utf-8")
    assert "Staged rollouts" in html and str(escape(abort.reason)) in html


def test_a_rollout_event_of_the_wrong_shape_is_shown_as_far_as_it_reads(tmp_path: Path) -> None:
    """Fields of the wrong type read as absent; hostile text stays text on the page."""
    path = _rolled_back(tmp_path)
    ledger = gr.SQLiteLedger(path)
    try:
        ledger.record_event("rollout", action=5, phase=None, weight="lots", step=True,
                            findings="none", reason=HOSTILE, attempt=["x"])
        data = read_report(ledger, source="t")
    finally:
        ledger.close()
    odd = data.rollouts[-1]
    assert (odd.action, odd.phase, odd.weight, odd.step, odd.attempt, odd.failed) == \
        ("?", "?", None, None, None, ())
    out = tmp_path / "odd.html"
    assert run_cli("report", "--ledger", str(path), "-o", str(out)).returncode == 0
    page = out.read_text(encoding="utf-8")
    assert HOSTILE not in page and str(escape(HOSTILE)) in page
