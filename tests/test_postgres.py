"""PostgresLedger specifics: bad input, schema migrations, replicas following, concurrent
processes, a server killed mid-promotion and network faults.

The behaviour every store shares runs against PostgreSQL in test_ledger.py and
test_ledger_merkle.py (the ``ledger_factory`` / ``store_factory`` fixtures).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg_server
import psycopg
import pytest
import replica_worker
from click.testing import CliRunner
from net_fault import FaultyRelay

import guardrails as gr
from guardrails._cli import main
from guardrails.ledger._postgres import SCHEMA_VERSION, PostgresLedger, _PostgresTx, redact
from guardrails.testing import DictClient

STATE_0: dict[str, Any] = {"prompt": "v0"}
V0 = gr.state_version(STATE_0)


def genesis(ledger: gr.Ledger) -> None:
    ledger.put_state(STATE_0)
    assert ledger.promote(gr.Decision.accept(candidate=V0, kind="genesis", anchor=True),
                          None) is not None


def proposal(replica: gr.GuardedClient, text: str) -> gr.UpdateProposal:
    return gr.UpdateProposal(parent=replica.version, source="test", patch=[
        {"op": "replace", "path": "/system_prompt", "value": text}])


def wait_for(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition()`` held (an exception counts as not yet); fails the test after
    ``within`` seconds."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:
            pass
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        time.sleep(0.005)


@pytest.fixture
def open_pg(postgres_dsn: str, pg_schema: str) -> Iterator[Callable[..., PostgresLedger]]:
    """Opens ledgers on this test's schema (keywords go to PostgresLedger); closes them after."""
    opened: list[PostgresLedger] = []

    def make(dsn: str | None = None, **kwargs: Any) -> PostgresLedger:
        kwargs.setdefault("schema", pg_schema)
        ledger = PostgresLedger(dsn or postgres_dsn, **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


def sql(dsn: str, schema: str | None, statement: str, params: Any = None) -> list[Any]:
    with pg_server.connect(dsn, schema) as conn:
        cursor = conn.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []


# -- bad input: clear errors before anything is served ------------------------------------------


def test_a_malformed_url_names_the_form_to_use() -> None:
    with pytest.raises(gr.ConfigError, match=r"not a PostgreSQL connection URL.*postgresql://USER@"):
        PostgresLedger("postgresql://u@h/db?nonsense_option=1")


def test_a_server_that_is_not_there_is_a_connection_error_with_the_fix() -> None:
    with socket_closed_port() as port, pytest.raises(gr.ConfigError) as caught:
        PostgresLedger(f"postgresql://postgres:secret@127.0.0.1:{port}/db")
    message = str(caught.value)
    assert f"postgresql://postgres@127.0.0.1:{port}/db" in message and "secret" not in message
    assert "cannot connect" in message and "check that the server runs" in message


def test_a_missing_database_says_how_to_create_it(postgres_dsn: str) -> None:
    dsn = re.sub(r"/[^/]*$", "/no_such_db", postgres_dsn)
    with pytest.raises(gr.ConfigError, match=r"database 'no_such_db' does not exist.*createdb"):
        PostgresLedger(dsn)


def test_an_unknown_user_says_so(postgres_dsn: str) -> None:
    dsn = postgres_dsn.replace("postgres@", "nobody_here@", 1)
    with pytest.raises(gr.ConfigError, match=r"no user \(role\) 'nobody_here'"):
        PostgresLedger(dsn)


def test_a_schema_from_a_newer_library_is_refused(open_pg: Any, postgres_dsn: str,
                                                  pg_schema: str) -> None:
    open_pg().close()
    sql(postgres_dsn, pg_schema, "INSERT INTO guardrails_schema (version, library) "
                                 "VALUES (99, 'from the future')")
    with pytest.raises(gr.LedgerIntegrityError,
                       match=r"schema 99 is newer than this library understands \(1\); upgrade"):
        open_pg()


@pytest.mark.parametrize("table", ["guardrails_entries", "guardrails_meta", "guardrails_schema"])
def test_a_foreign_table_with_our_name_is_refused_and_left_alone(
        open_pg: Any, postgres_dsn: str, pg_schema: str, table: str) -> None:
    sql(postgres_dsn, None, f"CREATE SCHEMA {pg_schema}")
    sql(postgres_dsn, pg_schema, f"CREATE TABLE {table} (id INTEGER, body TEXT)")
    sql(postgres_dsn, pg_schema, f"INSERT INTO {table} VALUES (1, 'theirs')")
    with pytest.raises(gr.LedgerIntegrityError) as caught:
        open_pg()
    message = str(caught.value)
    assert table in message and pg_schema in message
    assert "guardrails did not create it" in message or "is not a guardrails version table" in message
    assert "another database, or at its own schema" in message
    tables = sql(postgres_dsn, None, "SELECT tablename FROM pg_tables WHERE schemaname = %s",
                 (pg_schema,))
    assert tables == [(table,)]
    assert sql(postgres_dsn, pg_schema, f"SELECT * FROM {table}") == [(1, "theirs")]


def test_a_table_dropped_by_hand_is_named(open_pg: Any, postgres_dsn: str,
                                          pg_schema: str) -> None:
    open_pg().close()
    sql(postgres_dsn, pg_schema, "DROP TABLE guardrails_pending")
    with pytest.raises(gr.LedgerIntegrityError, match=r"guardrails_pending.*missing.*backup"):
        open_pg()


def test_a_role_that_may_not_create_tables_is_told_what_to_run(postgres_dsn: str,
                                                               pg_schema: str) -> None:
    """A role without DDL rights gets the command to run as the owner; once the owner has
    upgraded the schema and granted SELECT, INSERT and UPDATE, the same role opens and writes."""
    role = f"app_{pg_schema}"
    as_role = postgres_dsn.replace("postgres@", f"{role}@", 1)
    sql(postgres_dsn, None, f"CREATE ROLE {role} LOGIN")
    sql(postgres_dsn, None, f"CREATE SCHEMA {pg_schema}")
    try:
        with pytest.raises(gr.ConfigError, match=r"not allowed to create.*guardrails db upgrade"):
            PostgresLedger(as_role, schema=pg_schema)
        PostgresLedger.upgrade(postgres_dsn, schema=pg_schema)
        sql(postgres_dsn, None, f"GRANT USAGE ON SCHEMA {pg_schema} TO {role}")
        sql(postgres_dsn, None,
            f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {pg_schema} TO {role}")
        ledger = PostgresLedger(as_role, schema=pg_schema)
        genesis(ledger)
        assert ledger.verify().ok
        ledger.close()
    finally:
        sql(postgres_dsn, None, f"DROP OWNED BY {role}")
        sql(postgres_dsn, None, f"DROP ROLE {role}")


def test_without_migrate_an_empty_database_says_to_run_db_upgrade(open_pg: Any) -> None:
    with pytest.raises(gr.ConfigError, match=r"schema is at version 0.*guardrails db upgrade"):
        open_pg(migrate=False)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"schema": "Bad-Name"}, "not a plain lower-case SQL name"),
    ({"timeout": 0}, "timeout 0 must be a positive"),
    ({"poll_interval": -1}, "poll_interval -1 must be a positive"),
    ({"pool_size": 0}, "pool_size 0 must be at least 1"),
])
def test_bad_arguments_are_named(postgres_dsn: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(gr.ConfigError, match=match):
        PostgresLedger(postgres_dsn, **kwargs)


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(gr.ConfigError, match=r"pip install 'guardrails-middleware\[postgres\]'"):
        PostgresLedger("postgresql://u@127.0.0.1:1/db")


def test_passwords_never_appear_in_messages() -> None:
    assert redact("postgresql://me:hunter2@db.example:5433/prod") == \
        "postgresql://me@db.example:5433/prod"
    assert "hunter2" not in redact("postgresql://me:hunter2@db:5433/prod?bad=1 x")


def test_a_bad_url_in_the_configuration_stops_the_guard_before_it_serves(
        tmp_path: Path, postgres_dsn: str) -> None:
    config = write_config(tmp_path, re.sub(r"/[^/]*$", "/no_such_db", postgres_dsn))
    with pytest.raises(gr.ConfigError) as caught:
        gr.Guard.from_config(config)
    assert str(config) in str(caught.value) and "[ledger] path" in str(caught.value)
    assert "no_such_db" in str(caught.value)


# -- configuration and command line -----------------------------------------------------------


def write_config(tmp_path: Path, path: str, extra: str = "") -> Path:
    (tmp_path / "cases.jsonl").write_text('{"id": "sum", "input": "2+2", "expect": "4"}\n')
    config = tmp_path / "guardrails.toml"
    config.write_text(f'[canaries]\nfiles = ["cases.jsonl"]\n\n[ledger]\npath = "{path}"\n{extra}'
                      '\n[client]\nfactory = "replica_worker:client"\n')
    return config


def test_a_postgresql_url_in_the_configuration_opens_a_postgres_ledger(
        tmp_path: Path, postgres_dsn: str, pg_schema: str) -> None:
    config = write_config(tmp_path, postgres_dsn, f'schema = "{pg_schema}"\npoll_interval = 0.5\n')
    guard = gr.Guard.from_config(config)
    assert isinstance(guard.ledger, PostgresLedger)
    assert (guard.ledger.schema, guard.ledger.poll_interval) == (pg_schema, 0.5)
    guard.ledger.close()


def test_postgres_settings_with_a_sqlite_path_are_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "ledger.db", 'schema = "x"\n')
    with pytest.raises(gr.ConfigError, match=r"schema applies to a PostgreSQL ledger only"):
        gr.Guard.from_config(config)


def test_db_upgrade_creates_then_has_nothing_to_do(postgres_dsn: str, pg_schema: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", postgres_dsn, "--schema", pg_schema])
    assert first.exit_code == 0, first.output
    assert f"upgraded from schema version 0 to {SCHEMA_VERSION}" in first.output
    again = runner.invoke(main, ["db", "upgrade", postgres_dsn, "--schema", pg_schema])
    assert again.exit_code == 0 and "nothing to do" in again.output
    rows = sql(postgres_dsn, pg_schema, "SELECT version, library FROM guardrails_schema")
    assert [row[0] for row in rows] == [SCHEMA_VERSION] and rows[0][1]


def test_db_status_and_verify_read_the_configured_store(
        tmp_path: Path, open_pg: Any, postgres_dsn: str, pg_schema: str) -> None:
    genesis(open_pg())
    config = write_config(tmp_path, postgres_dsn, f'schema = "{pg_schema}"\n')
    runner = CliRunner()
    status = runner.invoke(main, ["db", "status", "-c", str(config), "--json"])
    assert status.exit_code == 0, status.output
    assert '"entries": 1' in status.output and V0 in status.output
    verify = runner.invoke(main, ["db", "verify", "-c", str(config)])
    assert verify.exit_code == 0 and verify.output.startswith("ok: 1 entries")
    assert runner.invoke(main, ["status", "-c", str(config)]).exit_code == 0
    sql(postgres_dsn, pg_schema, "UPDATE guardrails_entries SET data = replace(data, 'genesis', "
                                 "'genesys')")
    verify = runner.invoke(main, ["db", "verify", "-c", str(config)])
    assert verify.exit_code == 1 and "entry 0 was altered" in verify.output


def test_db_commands_refuse_a_sqlite_configuration(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "-c", str(write_config(tmp_path, "l.db"))])
    assert result.exit_code == 3 and "needs no 'db' command" in result.output


def test_replicas_opening_at_once_migrate_once(postgres_dsn: str, pg_schema: str) -> None:
    """Replicas that start together on an empty database: one creates the tables, none fails."""
    opened: list[PostgresLedger] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresLedger(postgres_dsn, schema=pg_schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 4
    assert len({ledger.origin for ledger in opened}) == 1
    assert sql(postgres_dsn, pg_schema, "SELECT count(*) FROM guardrails_schema") == [(1,)]
    for ledger in opened:
        ledger.close()


# -- replicas follow ----------------------------------------------------------------------------


def replica(ledger: gr.Ledger, **guard: Any) -> gr.GuardedClient:
    return gr.Guard(canaries=replica_worker.cases(), ledger=ledger, case_timeout=5.0,
                    **guard).wrap(DictClient(replica_worker.initial_state()))


def test_a_replica_follows_a_promotion_by_notification(open_pg: Any) -> None:
    """With polling far off, a promotion through one replica is served by the other within
    moments: the notification, sent on commit, did it."""
    one, two = replica(open_pg(poll_interval=60)), replica(open_pg(poll_interval=60))
    time.sleep(0.2)  # let the watchers LISTEN
    decision = one.propose(proposal(one, "by replica one"))
    assert decision.accepted, decision.reasons
    waited = wait_for(lambda: two.version == decision.candidate, within=5.0)
    assert waited < 2.0
    response = two.invoke("2+2")
    assert response.version == decision.candidate and response.output == "4"


def test_without_notifications_polling_bounds_the_staleness(open_pg: Any) -> None:
    """listen=False (a pooler that drops LISTEN): a replica serves a promotion within about
    poll_interval."""
    one = replica(open_pg(listen=False, poll_interval=0.2))
    two = replica(open_pg(listen=False, poll_interval=0.2))
    decision = one.propose(proposal(one, "polled"))
    assert decision.accepted
    assert wait_for(lambda: two.version == decision.candidate, within=5.0) < 1.5


def test_a_watcher_whose_connection_is_killed_reconnects_and_catches_up(
        open_pg: Any, postgres_dsn: str) -> None:
    """A promotion made while a replica's LISTEN connection is gone is served once the watcher
    reconnects (it polls right after LISTEN), without waiting for a notification."""
    one = replica(open_pg(poll_interval=60))
    two = replica(open_pg(poll_interval=0.3))
    time.sleep(0.2)
    sql(postgres_dsn, None, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "application_name = 'guardrails' AND pid <> pg_backend_pid()")
    decision = one.propose(proposal(one, "while two was deaf"))
    assert decision.accepted, decision.reasons
    assert wait_for(lambda: two.version == decision.candidate, within=5.0) < 3.0


def test_a_follower_never_serves_a_version_the_ledger_does_not_name(open_pg: Any) -> None:
    """Every version a following replica serves is one the ledger accepted, in order."""
    one, two = replica(open_pg(poll_interval=0.05)), replica(open_pg(poll_interval=0.05))
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            version = two.invoke("2+2").version
            if not seen or seen[-1] != version:
                seen.append(version)
            time.sleep(0.0005)  # leave the interpreter to the proposer now and then

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for number in range(5):
            assert one.propose(proposal(one, f"step {number}")).accepted
        wait_for(lambda: two.version == one.version, within=5.0)
    finally:
        stop.set()
        watcher.join()
    seen.append(two.invoke("2+2").version)
    accepted = [e.decision.candidate for e in one.ledger.entries()
                if e.decision is not None and e.decision.accepted]
    assert set(seen) <= set(accepted)
    assert seen == sorted(seen, key=accepted.index) and seen[-1] == accepted[-1] == one.version


def test_subscribe_reports_the_served_version_and_unsubscribes(open_pg: Any) -> None:
    ledger = open_pg(poll_interval=0.05)
    genesis(ledger)
    calls: list[str | None] = []
    unsubscribe = ledger.subscribe(calls.append)
    wait_for(lambda: V0 in calls, within=5.0)
    unsubscribe()
    time.sleep(0.15)
    count = len(calls)
    time.sleep(0.15)
    assert len(calls) == count


def test_an_approval_waits_in_the_shared_store_and_resolves_once_across_replicas(
        open_pg: Any) -> None:
    """A proposal waiting for a human on one replica is seen by another, approved there once
    (a second resolution from any replica is refused), and served by both as the new anchor."""
    policy = gr.ApprovalPolicy(kinds=("prompt",))
    one = replica(open_pg(poll_interval=0.1), approval=policy)
    two = replica(open_pg(poll_interval=0.1), approval=policy)
    waiting = one.propose(proposal(one, "be brief").model_copy(update={"kind": "prompt"}))
    assert waiting.verdict is gr.Verdict.INCONCLUSIVE and one.version == two.version
    assert [p.id for p in two.pending()] == [waiting.proposal_id]
    approved = two.approve(waiting.proposal_id, approver="alice")
    assert approved.accepted and approved.anchor
    with pytest.raises(ValueError, match="already approved"):
        one.approve(waiting.proposal_id)
    wait_for(lambda: one.version == approved.candidate, within=5.0)
    assert one.ledger.anchor_version() == approved.candidate and one.ledger.verify().ok


# -- promotion: compare-and-swap, committed or nothing ----------------------------------------


def test_a_commit_whose_answer_was_lost_is_found(open_pg: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """If the connection breaks after the commit reached the server, promote looks the entry up
    and returns it as recorded rather than reporting a failure."""
    ledger = open_pg()
    genesis(ledger)
    original = PostgresLedger._transaction

    @contextlib.contextmanager
    def commit_then_break(self: PostgresLedger) -> Iterator[Any]:
        with original(self) as tx:
            yield tx
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresLedger, "_transaction", commit_then_break)
    ledger.put_state({"prompt": "v1"})
    v1 = gr.state_version({"prompt": "v1"})
    recorded = ledger.promote(gr.Decision.accept(parent=V0, candidate=v1), V0)
    assert recorded is not None and recorded.entry_index == 1
    monkeypatch.undo()
    assert ledger.served_version() == v1 and ledger.verify().ok


def test_a_commit_that_never_happened_is_an_error(open_pg: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = open_pg()
    genesis(ledger)

    def broken(self: _PostgresTx, index: int, hash_: str, data: str) -> None:
        original_insert(self, index, hash_, data)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    original_insert = _PostgresTx.insert_entry
    monkeypatch.setattr(_PostgresTx, "insert_entry", broken)
    ledger.put_state({"prompt": "v1"})
    v1 = gr.state_version({"prompt": "v1"})
    with pytest.raises(psycopg.OperationalError):
        ledger.promote(gr.Decision.accept(parent=V0, candidate=v1), V0)
    monkeypatch.undo()
    assert ledger.served_version() == V0 and len(ledger) == 1 and ledger.verify().ok


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_four_processes_proposing_from_the_same_parents(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """4 replica processes propose at once from the same parent, round after round: exactly one
    acceptance per parent, every decision recorded, the ledger verifies, and every replica ends
    on the same served version (PostgreSQL: by following, without being told to sync)."""
    rounds, poll_interval = 6, 0.5
    schema = None
    if backend == "postgres":
        where, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    else:
        where = str(tmp_path / "ledger.db")
    first = replica_worker.open_ledger(backend, where, schema, poll_interval)
    replica_worker.guarded(first)  # the genesis entry, before the replicas race
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(4), context.Queue()
    processes = [context.Process(target=replica_worker.contend, args=(
        backend, where, schema, index, rounds, poll_interval, barrier, out)) for index in range(4)]
    for process in processes:
        process.start()
    reports: list[tuple[Any, ...]] = []
    try:
        while sum(1 for r in reports if r[0] in ("final", "error")) < 4:
            reports.append(out.get(timeout=120))
            assert reports[-1][0] != "error", reports[-1]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)

    decisions = [r for r in reports if r[0] == "decision"]
    assert len(decisions) == 4 * rounds
    for round_ in range(rounds):
        this_round = [r for r in decisions if r[2] == round_]
        assert len({r[3] for r in this_round}) == 1, "replicas proposed from different parents"
        verdicts = sorted(r[4] for r in this_round)
        assert verdicts == ["accepted", "rejected", "rejected", "rejected"], this_round
        assert {r[6] for r in this_round if r[4] == "rejected"} == {"stale_parent"}
    entries = list(first.entries())
    recorded = [e.decision for e in entries[1:]]
    assert len(entries) == 1 + 4 * rounds  # every decision, and nothing else
    assert sorted(d.proposal_id for d in recorded if d is not None) == sorted(
        f"r{round_}-p{index}" for round_ in range(rounds) for index in range(4))
    assert {r[5] for r in decisions} == set(range(1, 1 + 4 * rounds))
    accepted = [d for d in recorded if d is not None and d.accepted]
    assert len(accepted) == rounds and len({d.parent for d in accepted}) == rounds
    report = first.verify()
    assert report.ok, report.problem
    finals = [r for r in reports if r[0] == "final"]
    assert {r[2] for r in finals} == {r[3] for r in finals} == {first.served_version()}
    if isinstance(first, PostgresLedger | gr.SQLiteLedger):
        first.close()


# -- the server killed mid-promotion ------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[pg_server.PostgresServer]:
    """A server of this test's own, which it may stop, kill and restart."""
    try:
        server = pg_server.PostgresServer.start_new()
    except pg_server.ServerUnavailable as exc:
        pytest.fail(str(exc))
    yield server
    server.cleanup()


def pause_inside_promotions(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event,
                                                                       threading.Event]:
    """Make the next promotion stop after writing its entry, before committing."""
    inside, go = threading.Event(), threading.Event()
    original = _PostgresTx.insert_entry

    def paused(self: _PostgresTx, index: int, hash_: str, data: str) -> None:
        original(self, index, hash_, data)
        if '"verdict":"accepted"' in data and not inside.is_set():
            inside.set()
            go.wait(30)

    monkeypatch.setattr(_PostgresTx, "insert_entry", paused)
    return inside, go


@pytest.mark.slow
def test_killing_the_server_mid_promotion_leaves_no_half_promotion(
        own_server: pg_server.PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dies (immediate shutdown, as a crash) between a promotion's writes and its
    commit: the promotion is an error, nothing of it is stored after restart, the ledger
    verifies, and the replicas keep serving, reconnect and follow the next promotion."""
    dsn = own_server.dsn
    one = replica(PostgresLedger(dsn, timeout=2.0, poll_interval=0.2))
    two = replica(PostgresLedger(dsn, timeout=2.0, poll_interval=0.2))
    v0 = one.version
    inside, go = pause_inside_promotions(monkeypatch)
    result: list[gr.Decision] = []
    promoting = threading.Thread(target=lambda: result.append(one.propose(proposal(one, "x"))))
    promoting.start()
    assert inside.wait(30)
    own_server.stop("immediate")
    go.set()
    promoting.join(60)
    monkeypatch.undo()
    decision = result[0]
    assert decision.verdict is gr.Verdict.ERROR and not decision.accepted
    assert one.version == v0 and two.version == v0
    assert one.invoke("2+2").version == v0 and two.invoke("2+2").version == v0  # still serving

    own_server.start()
    check = PostgresLedger(dsn)
    report = check.verify()
    assert report.ok, report.problem
    assert report.served == v0 and check.served_version() == v0
    assert not any(e.decision is not None and e.decision.candidate == decision.candidate
                   and e.decision.accepted for e in check.entries())

    again = one.propose(proposal(one, "after the restart"))
    assert again.accepted, again.reasons
    wait_for(lambda: two.version == again.candidate, within=10.0)
    assert check.served_version() == again.candidate and check.verify().ok
    for ledger in (one.ledger, two.ledger, check):
        assert isinstance(ledger, PostgresLedger)
        ledger.close()


# -- network faults -----------------------------------------------------------------------------


@pytest.mark.slow
def test_network_faults_keep_serving_and_accept_nothing_unrecorded(
        open_pg: Any, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections dropped (reset, refused) or timing out (a host that stopped answering), and a
    connection lost inside a promotion: calls keep being served from the current version at
    full speed, no update is accepted, and the store holds no acceptance; once the network is
    back, the next update is accepted, recorded and followed."""
    relay = FaultyRelay(int(postgres_dsn.rsplit(":", 1)[1].split("/")[0]))
    try:
        direct = open_pg()
        through = replica(open_pg(relay.route(postgres_dsn), timeout=1.0, poll_interval=0.2),
                          integrity_check_every=1)
        follower = replica(open_pg(poll_interval=0.2))
        v0 = through.version

        def no_acceptance_of(candidate: str | None) -> bool:
            return not any(e.decision is not None and e.decision.accepted
                           and e.decision.candidate == candidate for e in direct.entries())

        for fault in ("drop", "stall"):
            getattr(relay, fault)()
            started = time.monotonic()
            for _ in range(200):
                response = through.invoke("2+2")
                assert (response.version, response.output) == (v0, "4")
            assert time.monotonic() - started < 1.0  # the hot path never waits for the store
            decision = through.propose(proposal(through, f"during {fault}"))
            assert not decision.accepted and decision.verdict is gr.Verdict.ERROR
            assert through.version == v0 and through.invoke("2+2").version == v0
            assert direct.served_version() == v0 and no_acceptance_of(decision.candidate)
            relay.heal()

        # A connection lost between a promotion's writes and its commit.
        inside, go = pause_inside_promotions(monkeypatch)
        result: list[gr.Decision] = []
        wait_for(lambda: through.ledger.has_state(v0), within=10.0)
        promoting = threading.Thread(
            target=lambda: result.append(through.propose(proposal(through, "mid-commit"))))
        promoting.start()
        assert inside.wait(30)
        relay.drop()
        go.set()
        promoting.join(30)
        monkeypatch.undo()
        assert result[0].verdict is gr.Verdict.ERROR and no_acceptance_of(result[0].candidate)
        assert through.version == v0 and direct.served_version() == v0
        relay.heal()

        assert direct.verify().ok
        assert wait_for(lambda: through.ledger.has_state(v0), within=10.0) < 1.5
        accepted = through.propose(proposal(through, "after the faults"))
        assert accepted.accepted, accepted.reasons
        assert direct.served_version() == accepted.candidate
        assert not no_acceptance_of(accepted.candidate)
        wait_for(lambda: follower.version == accepted.candidate, within=5.0)
        assert direct.verify().ok
    finally:
        relay.close()


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
