"""Replicas sharing one store: contention for promotions, and how fast replicas follow.

4 replica processes (each a GuardedClient over its own ledger object) propose
N updates each, as fast as they can, against one PostgreSQL store, then the
same against one SQLite file (several processes on one host). Every proposal
passes the whole gate (two canary cases on candidate and incumbent) and
ends in a recorded decision; one per parent is accepted, the others are
rejected as stale. Printed per store:

* decisions per second, over all processes;
* promotion latency, p50 and p99: the compare-and-swap transaction
  (``ledger.promote``) including the wait for the writer lock;
* follow time, p50 and max: a fifth process promotes new versions one at a
  time while the 4 replicas stand idle, and for each version the time from
  its commit until *all* 4 replicas serve it. PostgreSQL replicas follow by
  LISTEN/NOTIFY (the watcher thread, polling every second as the fallback);
  SQLite announces nothing, so its replicas call ``sync()`` every 100 ms,
  and that interval is what its figure measures.

    python benchmarks/replicas.py                          # 4 x 250 proposals
    GUARDRAILS_BENCH_N=20 python benchmarks/replicas.py    # short mode

PostgreSQL: the server at GUARDRAILS_BENCH_POSTGRES_DSN (or
GUARDRAILS_TEST_POSTGRES_DSN); without either, a throwaway server with the
default, durable settings is started with .ci/postgres.sh and stopped at
the end. Each run uses a fresh schema and drops it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

import guardrails as gr
from guardrails.testing import DictClient

N = int(os.environ.get("GUARDRAILS_BENCH_N", "250"))
PROCESSES = 4
FOLLOW_VERSIONS = 10 if N >= 100 else 3
SETTLE = 1.5 if N >= 100 else 0.5
"""Seconds after the last follow promotion before the replicas report (SQLite polls)."""
SQLITE_SYNC_EVERY = 0.1
ROOT = Path(__file__).resolve().parents[1]


def initial_state() -> dict[str, Any]:
    return {"system_prompt": "You are careful.", "answers": {"2+2": "4", "weapon": "I can't help"},
            "default": "?"}


def quiet() -> None:
    """Only warnings and errors from the library's logs: the table is the output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def open_ledger(store: tuple[str, str, str | None]) -> gr.Ledger:
    backend, where, schema = store
    if backend == "postgres":
        return gr.PostgresLedger(where, schema=schema, poll_interval=1.0)
    return gr.SQLiteLedger(where)


def replica(ledger: gr.Ledger) -> gr.GuardedClient:
    cases = [gr.CanaryCase(id="sum", input="2+2", expect="4"),
             gr.CanaryCase(id="weapon", input="weapon", expect={"contains": "can't"},
                           tags=("safety",))]
    return gr.Guard(canaries=cases, ledger=ledger, case_timeout=30.0).wrap(
        DictClient(initial_state()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def worker(store: tuple[str, str, str | None], index: int, events: tuple[Any, Any, Any],
           out: Any) -> None:
    try:
        contend_and_follow(store, index, events, out)
    except BaseException as exc:  # tell the parent at once instead of leaving it waiting
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))
        raise


def contend_and_follow(store: tuple[str, str, str | None], index: int,
                       events: tuple[Any, Any, Any], out: Any) -> None:
    go, follow_go, follow_done = events
    quiet()
    ledger = open_ledger(store)
    latencies: list[float] = []
    promote = ledger.promote

    def timed_promote(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return promote(*args, **kwargs)
        finally:
            latencies.append(time.perf_counter() - started)

    ledger.promote = timed_promote  # type: ignore[method-assign]
    guarded = replica(ledger)
    verdicts: dict[str, int] = {}
    out.put(("ready", index))
    go.wait()
    started = time.monotonic()
    for number in range(N):
        decision = guarded.propose(gr.UpdateProposal(
            parent=guarded.version, source="bench", patch=[
                {"op": "replace", "path": "/system_prompt", "value": f"p{index}-{number}"}]))
        verdicts[decision.verdict.value] = verdicts.get(decision.verdict.value, 0) + 1
    out.put(("contend", index, started, time.monotonic(), latencies, verdicts))

    # Follow phase: stand idle and note when each new version is served.
    served: list[tuple[str, float]] = []

    def note(_: str | None = None) -> None:
        version = guarded.version
        if not served or served[-1][0] != version:
            served.append((version, time.monotonic()))

    follow_go.wait()
    note()
    if store[0] == "postgres":
        ledger.subscribe(note)  # called after the guard's own follower has switched
        out.put(("following", index))
        follow_done.wait()
    else:
        out.put(("following", index))
        while not follow_done.wait(SQLITE_SYNC_EVERY):
            guarded.sync()
            note()
    out.put(("follow", index, served))


def collect(out: Any, kind: str, processes: list[Any], within: float) -> list[tuple[Any, ...]]:
    """One ``kind`` message from every process; fails as soon as one reports an error or dies."""
    import queue

    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + within
    while len(got) < len(processes):
        try:
            message = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                sys.exit(f"a replica process died (exit codes {dead}) or timed out waiting "
                         f"for {kind!r}")
            continue
        if message[0] == "error":
            sys.exit(f"replica {message[1]} failed: {message[2]}")
        assert message[0] == kind, message
        got.append(message)
    return got


def run(store: tuple[str, str, str | None]) -> dict[str, float]:
    main_ledger = open_ledger(store)
    leader = replica(main_ledger)  # the genesis entry, before the replicas start
    committed_at: list[float] = []
    promote = main_ledger.promote

    def noting_promote(*args: Any, **kwargs: Any) -> Any:
        recorded = promote(*args, **kwargs)
        committed_at.append(time.monotonic())  # promote returns as soon as it has committed
        return recorded

    main_ledger.promote = noting_promote  # type: ignore[method-assign]
    context = multiprocessing.get_context("spawn")
    go, follow_go, follow_done = context.Event(), context.Event(), context.Event()
    out = context.Queue()
    processes = [context.Process(target=worker, args=(store, i, (go, follow_go, follow_done), out))
                 for i in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        collect(out, "ready", processes, within=120)
        go.set()
        contend = collect(out, "contend", processes, within=3600)
        follow_go.set()
        collect(out, "following", processes, within=120)
        time.sleep(0.2)  # the watchers LISTEN
        leader.sync()
        commits: list[tuple[str, float]] = []
        for number in range(FOLLOW_VERSIONS):
            decision = leader.propose(gr.UpdateProposal(
                parent=leader.version, source="bench", patch=[
                    {"op": "replace", "path": "/system_prompt", "value": f"follow {number}"}]))
            assert decision.accepted and decision.candidate, decision.reasons
            commits.append((decision.candidate, committed_at[-1]))
            time.sleep(0.3)
        time.sleep(SETTLE)
        follow_done.set()
        follows = collect(out, "follow", processes, within=120)
    except BaseException:
        for process in processes:
            process.kill()
        raise
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    report = main_ledger.verify()
    assert report.ok, report.problem

    begin = min(c[2] for c in contend)
    end = max(c[3] for c in contend)
    decisions = sum(sum(c[5].values()) for c in contend)
    latencies = [x for c in contend for x in c[4]]
    accepted = sum(c[5].get("accepted", 0) for c in contend)
    follow_times = []
    for version, committed in commits:
        times = []
        for _, _, served in follows:
            seen = [t for v, t in served if v == version]
            times.append(seen[0] - committed if seen else float("inf"))
        follow_times.append(max(times))
    if isinstance(main_ledger, gr.PostgresLedger | gr.SQLiteLedger):
        main_ledger.close()
    return {"decisions": decisions, "accepted": accepted, "per_s": decisions / (end - begin),
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "follow_p50": statistics.median(follow_times), "follow_max": max(follow_times)}


def postgres_dsn() -> tuple[str, Path | None]:
    dsn = os.environ.get("GUARDRAILS_BENCH_POSTGRES_DSN") or os.environ.get(
        "GUARDRAILS_TEST_POSTGRES_DSN")
    if dsn:
        return dsn, None
    directory = Path(tempfile.mkdtemp(prefix="guardrails-bench-pg-", dir="/tmp"))
    result = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "start", str(directory)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        sys.exit(f"cannot start PostgreSQL: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1], directory


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    quiet()
    dsn, server = postgres_dsn()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    scratch = Path(tempfile.mkdtemp(prefix="guardrails-bench-"))
    rows = []
    try:
        rows.append(("PostgreSQL 15, one server", run(("postgres", dsn, schema))))
        rows.append(("SQLite, one file (WAL)", run(("sqlite", str(scratch / "ledger.db"), None))))
    finally:
        drop_schema(dsn, schema)
        shutil.rmtree(scratch, ignore_errors=True)
        if server is not None:
            subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), "stop", str(server)],
                           check=False)
            shutil.rmtree(server, ignore_errors=True)
    print(f"{PROCESSES} processes x {N} proposals each; follow time over {FOLLOW_VERSIONS} "
          f"promotions ({os.cpu_count()} CPUs)")
    print(f"{'store':<28} {'decisions':>9} {'accepted':>8} {'dec/s':>7} {'promote p50 ms':>15} "
          f"{'p99 ms':>7} {'all follow p50 ms':>18} {'max ms':>7}")
    for label, r in rows:
        print(f"{label:<28} {r['decisions']:>9.0f} {r['accepted']:>8.0f} {r['per_s']:>7.1f} "
              f"{r['p50'] * 1000:>15.1f} {r['p99'] * 1000:>7.1f} {r['follow_p50'] * 1000:>18.1f} "
              f"{r['follow_max'] * 1000:>7.1f}")
    print(f"SQLite replicas follow by calling sync() every {SQLITE_SYNC_EVERY * 1000:.0f} ms; "
          "PostgreSQL replicas by LISTEN/NOTIFY.")


if __name__ == "__main__":
    main()
