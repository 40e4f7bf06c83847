"""The command line tells the truth: the real ``guardrails`` executable, in a subprocess.

One group of tests per promise of issue 15: reading never writes, every view
verifies, ids as printed, decisions shown as decided, bad input is a usage
error, strict configuration, quiet output, the help renders as text.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest

import guardrails as gr
from guardrails.testing import DictClient

GUARDRAILS = str(Path(sys.executable).with_name("guardrails"))
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


def cli(project: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run the installed ``guardrails`` command in ``project``."""
    return subprocess.run([GUARDRAILS, *args], cwd=project, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (side files included) and the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cases.jsonl").write_text(
        '{"id": "a", "input": "a", "expect": "1"}\n{"id": "b", "input": "b", "expect": "2"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def served(project: Path) -> Iterator[gr.GuardedClient]:
    """A ledger with the initial state and one accepted change; closed before the CLI runs."""
    client = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    client.propose(gr.UpdateProposal(parent=client.version, patch=[
        {"op": "replace", "path": "/default", "value": "??"}]))
    client.guard.ledger.close()  # type: ignore[attr-defined]
    yield client


LEDGER = ".guardrails/ledger.db"


def entries(project: Path) -> int:
    with sqlite3.connect(project / LEDGER) as conn:
        return int(conn.execute("SELECT count(*) FROM guardrails_entries").fetchone()[0])


# 1. Read-only means read-only ------------------------------------------------------------


def test_verify_of_an_empty_file_is_not_a_ledger_and_leaves_it_empty(tmp_path: Path) -> None:
    """A 0-byte file fails verification (exit 1, "not a guardrails ledger"), with or without
    --key, and is still 0 bytes afterwards, with no side file beside it."""
    (tmp_path / "ledger.db").write_bytes(b"")
    assert cli(tmp_path, "ledger", "keygen", "k", "--out", "keys/k").returncode == 0
    before = snapshot(tmp_path)
    for extra in ((), ("--key", "keys/k.pub")):
        result = cli(tmp_path, "ledger", "verify", "ledger.db", *extra)
        assert result.returncode == 1, result
        assert "not a guardrails ledger" in result.stderr and "empty" in result.stderr
        assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


def test_status_with_a_ledger_in_a_missing_folder_creates_nothing(project: Path) -> None:
    """status, pending and ledger show on a ledger that does not exist fail and create no
    folder or file."""
    (project / "guardrails.toml").write_text(
        CONFIG + '\n[ledger]\npath = "nowhere/ledger.db"\n')
    before = snapshot(project)
    for args in (("status",), ("pending",), ("ledger", "show", "nowhere/ledger.db")):
        result = cli(project, *args)
        assert result.returncode == 1, result
        assert "not a guardrails ledger" in result.stderr
    assert not (project / "nowhere").exists()
    assert snapshot(project) == before


def test_a_blob_folder_that_is_not_there_is_a_usage_error_and_stays_absent(
        project: Path, served: gr.GuardedClient) -> None:
    """ledger verify and report given --blobs at nothing: exit 2 naming the folder, and no
    folder is created (a reader never makes the store it was asked to read)."""
    before = snapshot(project)
    for args in (("ledger", "verify", LEDGER, "--blobs", "nowhere"),
                 ("report", "--blobs", "nowhere", "-o", "report.html")):
        result = cli(project, *args)
        assert result.returncode == 2, (args, result)
        assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert not (project / "nowhere").exists() and snapshot(project) == before


def test_blobs_verify_without_a_ledger_fails_and_creates_nothing(project: Path) -> None:
    """No ledger yet: not "ok: 0 blobs checked" on a ledger it just made, but exit 1 naming
    the missing ledger; no ledger and no blob folder appear."""
    before = snapshot(project)
    result = cli(project, "blobs", "verify")
    assert result.returncode == 1, result
    assert "not a guardrails ledger" in result.stderr
    assert snapshot(project) == before and not (project / ".guardrails").exists()


def test_blobs_verify_reads_a_missing_blob_folder_as_empty_without_creating_it(
        project: Path, served: gr.GuardedClient) -> None:
    """The served states reference no blob: ok, and the folder named in the output is still
    not there afterwards."""
    shutil.rmtree(project / ".guardrails" / "blobs", ignore_errors=True)
    before = snapshot(project)
    result = cli(project, "blobs", "verify")
    assert result.returncode == 0, result
    assert "no such folder" in result.stdout
    assert snapshot(project) == before and not (project / ".guardrails" / "blobs").exists()


def test_blobs_verify_creates_no_table_in_a_postgresql_blob_store(
        project: Path, postgres_dsn: str, pg_schema: str) -> None:
    """The served state references a blob; the PostgreSQL blob store it should be in was
    never set up: verify fails naming the blob (exit 1) and leaves the schema without a
    table (it reads the store, it does not create it)."""
    digest = gr.FileBlobStore(project / "elsewhere").put(b"weights")
    ledger = gr.SQLiteLedger(project / LEDGER)
    gr.Guard(canaries=[gr.CanaryCase(id="a", input="a", expect="1")], ledger=ledger).wrap(
        DictClient({"weights": gr.blob_ref(digest)}))
    ledger.close()
    config = project / "guardrails.toml"
    config.write_text(config.read_text()
                      + f'\n[blobs]\nurl = "{postgres_dsn}"\nschema = "{pg_schema}"\n')
    result = cli(project, "blobs", "verify")
    assert result.returncode == 1, result
    assert digest in result.stdout
    with pg_server.connect(postgres_dsn, None) as conn:
        (tables,) = conn.execute("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_schema = %s", (pg_schema,)).fetchone()
    assert tables == 0


def test_blobs_gc_refuses_an_empty_ledger_and_deletes_nothing(project: Path) -> None:
    """A ledger with no entries (a wrong [ledger] path, say) would make every blob look
    unreferenced: gc refuses (exit 1) and every blob stays."""
    store = gr.FileBlobStore(project / ".guardrails" / "blobs")
    digest = store.put(b"weights that the real ledger references")
    gr.SQLiteLedger(project / LEDGER).close()  # created, with no entry
    result = cli(project, "blobs", "gc", "--grace", "0")
    assert result.returncode == 1, result
    assert "holds no entries" in result.stderr
    assert store.get(digest) == b"weights that the real ledger references"


def test_check_of_a_new_project_creates_no_ledger_and_no_blob_folder(project: Path) -> None:
    """check validates what the configuration names without opening a store for writing: the
    ledger it would create is named as not there yet, and the folder is left as it was."""
    before = snapshot(project)
    result = cli(project, "check")
    assert result.returncode == 0, result
    assert "does not exist yet" in result.stdout
    assert snapshot(project) == before and not (project / ".guardrails").exists()


def test_check_reports_an_existing_ledger_read_only(project: Path,
                                                   served: gr.GuardedClient) -> None:
    """With a ledger there, check names its size and served version (JSON too)."""
    result = cli(project, "check", "--json")
    assert result.returncode == 0, result
    ledger = json.loads(result.stdout)["ledger"]
    assert f"{entries(project)} entries" in ledger and served.version[:12] in ledger


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Another application's SQLite database is "not a guardrails ledger" and is not altered."""
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    before = snapshot(tmp_path)
    result = cli(tmp_path, "ledger", "verify", "app.db")
    assert result.returncode == 1 and "not a guardrails ledger" in result.stderr
    assert "users" in result.stderr
    assert snapshot(tmp_path) == before


def test_every_reading_command_leaves_the_ledger_folder_byte_identical(
        project: Path, served: gr.GuardedClient) -> None:
    """verify, show, prove, status, pending, check and transparency change no byte and create
    no side file."""
    before = snapshot(project)
    for args in (("ledger", "verify", LEDGER), ("ledger", "show", LEDGER),
                 ("ledger", "prove", LEDGER, "0"), ("status",), ("pending",), ("check",),
                 ("transparency",)):
        result = cli(project, *args)
        assert result.returncode == 0, (args, result)
    assert snapshot(project) == before


# 2. Every view verifies ------------------------------------------------------------------


def _forge_accepted(project: Path) -> None:
    """Rewrite the accepted change's candidate in place, as an attacker editing the file."""
    with sqlite3.connect(project / LEDGER) as conn:
        data = conn.execute("SELECT data FROM guardrails_entries WHERE idx = 1").fetchone()[0]
        conn.execute("UPDATE guardrails_entries SET data = ? WHERE idx = 1",
                     (data.replace('"kind":"state"', '"kind":"prompt"'),))


def test_status_and_show_refuse_a_tampered_ledger_loudly(
        project: Path, served: gr.GuardedClient) -> None:
    """status and ledger show exit 1 on a tampered ledger, name the entry and show nothing."""
    _forge_accepted(project)
    for args in (("status",), ("ledger", "show", LEDGER)):
        result = cli(project, *args)
        assert result.returncode == 1, result
        assert "DOES NOT VERIFY" in result.stderr and "entry 1" in result.stderr
        assert result.stdout == ""


def test_no_verify_shows_a_tampered_ledger_with_a_warning(
        project: Path, served: gr.GuardedClient) -> None:
    """--no-verify reads a tampered ledger for forensics, and says it was not verified."""
    _forge_accepted(project)
    result = cli(project, "ledger", "show", LEDGER, "--no-verify")
    assert result.returncode == 0 and "prompt" in result.stdout
    assert "NOT verified" in result.stderr


# 3. Ids as printed -----------------------------------------------------------------------


def test_rollback_takes_the_twelve_characters_the_tools_print(
        project: Path, served: gr.GuardedClient) -> None:
    """rollback with the 12-character prefix status prints serves that version."""
    initial = json.loads(cli(project, "status", "--json").stdout)["anchor"]
    result = cli(project, "rollback", initial[:12])
    assert result.returncode == 0, result
    assert json.loads(cli(project, "status", "--json").stdout)["served"] == initial


def test_an_unknown_prefix_is_a_usage_error_that_writes_nothing(
        project: Path, served: gr.GuardedClient) -> None:
    """rollback of a prefix no accepted version starts with exits 2; the ledger is unchanged."""
    before = snapshot(project)
    result = cli(project, "rollback", "0000000000ff")
    assert result.returncode == 2, result
    assert "no accepted version starts with '0000000000ff'" in result.stderr
    assert snapshot(project) == before


def test_approve_takes_a_prefix_of_the_proposal_id(project: Path) -> None:
    """approve with the 12 characters pending prints approves the waiting proposal."""
    client = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    waiting = client.propose(gr.UpdateProposal(parent=client.version, kind="memory", patch=[
        {"op": "add", "path": "/answers/c", "value": "3"}]))
    client.guard.ledger.close()  # type: ignore[attr-defined]
    listed = cli(project, "pending").stdout
    assert str(waiting.proposal_id)[:12] in listed
    result = cli(project, "approve", str(waiting.proposal_id)[:12], "--approver", "alice")
    assert result.returncode == 0, result


def test_an_ambiguous_prefix_names_the_candidates() -> None:
    """resolve_version refuses a prefix two versions share, listing both."""
    ledger = gr.MemoryLedger()
    versions = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(17)]
    for version in versions:
        ledger.record(gr.Decision.reject([], parent=versions[0], candidate=version))
    first = next(v[0] for v in versions if sum(w[0] == v[0] for w in versions) > 1)
    with pytest.raises(gr.IdPrefixError, match="ambiguous") as raised:
        gr.resolve_version(ledger, first)
    assert len(raised.value.matches) > 1
    assert gr.resolve_version(ledger, versions[3][:12]) == versions[3]


# 5. Bad input is a usage error, not a decision -------------------------------------------


@pytest.mark.parametrize(("content", "says"), [
    ("[1, 2]", "JSON object"),
    ('{"parent": "PARENT"}', "'patch' is required"),
    ('{"parent": "PARENT", "patch": [{"op": "rplace", "path": "/default", "value": 1}]}',
     "patch.0"),
])
def test_a_file_that_is_not_a_proposal_exits_3_and_records_nothing(
        project: Path, served: gr.GuardedClient, content: str, says: str) -> None:
    """review of valid JSON in the wrong shape exits 3, names the file and the problem, and
    writes nothing to the ledger."""
    (project / "p.json").write_text(content.replace("PARENT", served.version))
    before = entries(project)
    result = cli(project, "review", "p.json")
    assert result.returncode == 3, result
    assert "p.json" in result.stderr and says in result.stderr
    assert "Tuple should have" not in result.stderr and "Traceback" not in result.stderr
    assert entries(project) == before


FACTORIES = '''
from guardrails.testing import DictClient

def make(state):
    return DictClient(state)

def boom():
    raise RuntimeError("no API key in the environment")
'''


@pytest.mark.parametrize(("client", "says"), [
    ('factory = "factories:make"\nargs = {state = {a = 1}, colour = "red"}', "colour"),
    ('factory = "factories:boom"', "no API key in the environment"),
    ('factory = "nosuchmodule:make"', "cannot be imported"),
])
def test_a_factory_that_cannot_build_the_client_exits_3_naming_it(
        project: Path, client: str, says: str) -> None:
    """A factory that cannot be imported, takes other arguments or raises: exit 3 naming the
    factory and the cause, no traceback."""
    (project / "factories.py").write_text(FACTORIES)
    (project / "guardrails.toml").write_text(CONFIG.split("[client]")[0] + "[client]\n" + client)
    (project / "p.json").write_text(json.dumps({"parent": "0" * 64, "patch": [
        {"op": "replace", "path": "/default", "value": "x"}]}))
    result = cli(project, "review", "p.json")
    assert result.returncode == 3, result
    assert "factor" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr


def test_files_that_are_not_utf8_exit_3_naming_the_file_and_offset(project: Path) -> None:
    """A configuration or a canary file that is not UTF-8: exit 3, the file, the byte offset."""
    (project / "cases.jsonl").write_bytes(b'{"id": "a", "input": "\xff", "expect": "1"}\n')
    result = cli(project, "check")
    assert result.returncode == 3, result
    assert "cases.jsonl" in result.stderr and "offset 22" in result.stderr
    (project / "guardrails.toml").write_bytes(b"# caf\xe9\n" + CONFIG.encode())
    result = cli(project, "check")
    assert result.returncode == 3 and "guardrails.toml" in result.stderr
    assert "offset 5" in result.stderr and "Traceback" not in result.stderr


def test_a_locked_sqlite_ledger_waits_the_timeout_then_says_so(
        project: Path, served: gr.GuardedClient) -> None:
    """While another process holds the write lock, a writing command waits [ledger] timeout,
    then exits 5 with the fix; --debug would show the traceback."""
    (project / "guardrails.toml").write_text(CONFIG + "\n[ledger]\ntimeout = 0.5\n")
    holder = sqlite3.connect(project / LEDGER, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = cli(project, "rollback", served.version[:12])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 5, result
    assert "write lock" in result.stderr and "[ledger] timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(project: Path) -> None:
    """--debug lets the traceback of a user error through, for bug reports."""
    (project / "guardrails.toml").write_bytes(b"\xff")
    assert "Traceback" in cli(project, "--debug", "check").stderr


# 1 and 5 on PostgreSQL: readers take no lock, a locked writer says so -------------------


def test_postgres_readers_take_no_lock_and_a_locked_writer_exits_5(
        project: Path, postgres_dsn: str, pg_schema: str) -> None:
    """While another session holds the writer lock, db status, db verify and status answer
    at once (they take no lock), and approve waits [ledger] timeout, then exits 5 with the
    fix and no traceback."""
    import psycopg

    (project / "guardrails.toml").write_text(
        CONFIG + f'\n[ledger]\npath = "{postgres_dsn}"\nschema = "{pg_schema}"\ntimeout = 1.0\n')
    client = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    waiting = client.propose(gr.UpdateProposal(parent=client.version, kind="memory", patch=[
        {"op": "add", "path": "/answers/c", "value": "3"}]))
    client.guard.ledger.close()  # type: ignore[attr-defined]
    with psycopg.connect(postgres_dsn) as holder:
        holder.execute(f'SET search_path TO "{pg_schema}"')
        holder.execute("SELECT value FROM guardrails_meta WHERE key = 'writer' FOR UPDATE")
        for args in (("db", "status"), ("db", "verify"), ("status",), ("pending",)):
            result = cli(project, *args)
            assert result.returncode == 0, (args, result)
        result = cli(project, "approve", str(waiting.proposal_id))
        holder.rollback()
    assert result.returncode == 5, result
    assert "writer lock" in result.stderr and "[ledger] timeout" in result.stderr
    assert "Traceback" not in result.stderr


# 4. Decisions shown as decided -----------------------------------------------------------


def test_a_pending_review_reads_as_pending_and_an_approval_as_accepted_by_whom(
        project: Path) -> None:
    """A proposal waiting for a human is "pending" (not FAIL human_approval) in status and
    ledger show; once approved, its decision reads "approved" by the approver, and the wait
    before it as "waited"."""
    client = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    waiting = client.propose(gr.UpdateProposal(parent=client.version, kind="memory", patch=[
        {"op": "add", "path": "/answers/c", "value": "3"}]))
    client.guard.ledger.close()  # type: ignore[attr-defined]
    status = cli(project, "status")
    assert "pending" in status.stdout and "FAIL" not in status.stdout
    approved = cli(project, "approve", str(waiting.proposal_id)[:12], "--approver", "alice")
    assert approved.returncode == 0, approved
    assert "accepted by human approval (approved by alice at" in approved.stdout
    rows = cli(project, "ledger", "show", LEDGER).stdout.splitlines()
    assert rows[1].split()[1] == "waited" and rows[2].split()[1] == "approved"
    assert "approved by alice" in rows[2] and "FAIL" not in "".join(rows)


# 6. Strict configuration -----------------------------------------------------------------


@pytest.mark.parametrize("setting", ['[guard]\nmargin = "0.02"',
                                     '[constraints]\ndrift_budget = "0.3"',
                                     '[approval]\ninconclusive = "no"'])
def test_numbers_and_booleans_in_strings_are_configuration_errors(
        project: Path, setting: str) -> None:
    """A number or boolean written as a string exits 3 and says to drop the quotes."""
    text = CONFIG.replace("[approval]\n", "[approval]\ninconclusive = \"no\"\n") \
        if "inconclusive" in setting else CONFIG.replace(
            "[constraints]\n", "[constraints]\ndrift_budget = \"0.3\"\n") \
        if "drift" in setting else setting + "\n" + CONFIG
    (project / "guardrails.toml").write_text(text)
    result = cli(project, "check")
    assert result.returncode == 3, result
    assert "without quotes" in result.stderr


def test_the_factory_module_beside_the_config_imports_and_check_builds_it(
        tmp_path: Path, project: Path) -> None:
    """check, run from another folder, imports a [client] factory module that sits next to
    guardrails.toml (no PYTHONPATH) and reports it built."""
    (project / "factories.py").write_text(FACTORIES)
    (project / "guardrails.toml").write_text(
        CONFIG.split("[client]")[0] + '[client]\nfactory = "factories:make"\n'
        'args = {state = {prompt = "be kind", default = "?"}}\n')  # /prompt is frozen
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli(elsewhere, "check", "-c", str(project / "guardrails.toml"))
    assert result.returncode == 0, result
    assert "factories:make imported and built" in result.stdout


def test_check_reports_a_factory_it_cannot_build_without_failing(project: Path) -> None:
    """A factory that imports but raises here (no API key) is reported by check, exit 0."""
    (project / "factories.py").write_text(FACTORIES)
    (project / "guardrails.toml").write_text(
        CONFIG.split("[client]")[0] + '[client]\nfactory = "factories:boom"\n')
    result = cli(project, "check")
    assert result.returncode == 0, result
    assert "not built here" in result.stdout and "no API key" in result.stdout


# 7. Quiet, legible output ----------------------------------------------------------------


def test_a_review_prints_the_decision_and_nothing_else_unless_verbose(
        project: Path, served: gr.GuardedClient) -> None:
    """Without -v a review writes no warning, log line or progress to stderr; -v shows logs."""
    (project / "p.json").write_text(json.dumps({"parent": served.version[:12], "patch": [
        {"op": "replace", "path": "/default", "value": "!"}]}))
    quiet = cli(project, "review", "p.json")
    assert quiet.returncode == 0, quiet
    assert quiet.stderr == "" and quiet.stdout.startswith("verdict     accepted")
    (project / "q.json").write_text(json.dumps({"parent": served.version, "patch": [
        {"op": "replace", "path": "/default", "value": "!!"}]}))
    loud = cli(project, "-v", "review", "q.json")
    assert "guardrails.decision" in loud.stderr


def test_every_help_renders_without_markup(project: Path) -> None:
    """guardrails --help and every subcommand's help show no RST backticks."""
    from guardrails._cli import main

    def paths(group: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield prefix
        for name, command in getattr(group, "commands", {}).items():
            yield from paths(command, (*prefix, name))

    for args in paths(main, ()):
        result = cli(project, *args, "--help")
        assert result.returncode == 0, (args, result)
        assert "``" not in result.stdout, args


# 8. A demo that explains itself and repeats itself ---------------------------------------


def test_the_demo_prints_the_same_bytes_twice_and_says_why(tmp_path: Path) -> None:
    """Two runs of `guardrails demo` with the default seed print identical output (timings
    aside), including a "why" line for the verdicts that could look wrong."""
    runs = [cli(tmp_path, "demo", "--workdir", str(tmp_path / "work")) for _ in range(2)]
    outputs = ["\n".join(line for line in run.stdout.splitlines() if not line.startswith("done in"))
               for run in runs]
    assert all(run.returncode == 0 for run in runs), runs
    assert outputs[0] == outputs[1]
    assert "why:   accepted within the margin" in outputs[0]
    assert "why:   rejected because the threshold is frozen" in outputs[0]
    assert "proposal test" in outputs[0] and "if served" not in outputs[0]


# 9. The test command says what it fetches ------------------------------------------------


def test_the_readme_says_what_the_test_command_fetches_and_where_it_is_kept() -> None:
    """The README names the MLflow environment's disk and time and the cache folder the
    end-to-end test really reuses; `guardrails --version` runs from the same install."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    source = (Path(__file__).parent / "e2e" / "test_mlflow_tracing.py").read_text(encoding="utf-8")
    assert "860 MB" in readme and "90 s" in readme and '-m "not slow"' in readme
    assert ".cache/e2e/" in readme and '".cache" / "e2e"' in source
    assert "GUARDRAILS_E2E_CACHE" in readme and "GUARDRAILS_E2E_CACHE" in source
    assert subprocess.run([GUARDRAILS, "--version"], capture_output=True, text=True,
                          check=False).returncode == 0
