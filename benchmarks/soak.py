"""Soak: sustained concurrent calls and proposals, with random faults, for minutes.

Four threads call the guarded client without pause while the main thread
proposes updates one after another. About half of the reviews run under a
random fault from the reliability matrix (tests/reliability/fault_kit.py): the
candidate raises, hangs, answers NaN, nothing or an empty string, or hangs while
built; the checker crashes or returns NaN; a plugin's update check crashes; the
blob store cannot be read; the ledger cannot write an entry, runs out of disk at
commit, or is locked by another writer; the served client changes itself
silently. The rest are clean proposals, which are accepted.

Printed at the end: calls served and failed, reviews by verdict, reviews under a
fault and how many of those were accepted (must be 0), the ledger's size and
whether it verifies, and resident memory at the start, every tenth of the run
and the end (the in-memory blob store keeps every proposal's weights, a few
hundred bytes each; anything beyond that growing to the end would be a leak).

    python benchmarks/soak.py                             # 10 minutes (1 minute when CI is set)
    GUARDRAILS_SOAK_SECONDS=120 python benchmarks/soak.py
    GUARDRAILS_BENCH_N=40 python benchmarks/soak.py       # short mode: 40 reviews

Exits 1 if a review under a fault was accepted, a runtime call failed, or the
ledger does not verify: those are correctness failures, not timings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import structlog

import guardrails as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
import fault_kit as fk

SHORT = os.environ.get("GUARDRAILS_BENCH_N")
SECONDS = float(os.environ.get("GUARDRAILS_SOAK_SECONDS") or (60 if os.environ.get("CI") else 600))
INVOKERS = 4
FAULTS = ["raise", "hang", "nan", "none", "empty", "build-hang", "checker-crash", "checker-nan",
          "plugin-crash", "blob-read", "ledger-write", "disk-full", "disk-full-os", "lock",
          "silent"]
QUESTIONS = ["2+2", "capital of France", "colour of the sky", "how do I make a weapon"]


def rss_mib() -> float:
    """Resident memory now (Linux: /proc/self/statm; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Invokers:
    """Threads calling the guarded client until stopped; counts what was served and failed."""

    def __init__(self, guarded: gr.GuardedClient, count: int) -> None:
        self.guarded = guarded
        self.served = self.failed = self.unsafe = 0
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        while not self._stop.is_set():
            question = rng.choice(QUESTIONS)
            try:
                output = self.guarded.invoke(question).output
            except Exception as exc:
                with self._lock:
                    self.failed += 1
                    self.errors[type(exc).__name__] += 1
                continue
            with self._lock:
                self.served += 1
                if question == "how do I make a weapon" and output != fk.SAFE_REFUSAL:
                    self.unsafe += 1
            time.sleep(0.0005)


def build(directory: Path) -> tuple[gr.GuardedClient, gr.SQLiteLedger, gr.BlobStore, Path]:
    path = directory / "ledger.db"
    store = fk.FaultyBlobStore()
    ledger = fk.faulty_sqlite_ledger(path, timeout=0.2)
    cases = fk.base_cases()
    cases[0] = gr.CanaryCase(id="sum", input="2+2", expect=fk.crashy_checker)
    guard = gr.Guard(canaries=cases, ledger=ledger, blob_store=store, case_timeout=0.2,
                     integrity_check_every=25, checks=list(fk.CRASHY_PLUGIN.build().checks),
                     canary_run=gr.RunSettings(retries=0))
    state = fk.base_state()
    state["weights"] = gr.blob_ref(store.put(b"initial weights"))
    return guard.wrap(fk.FaultyClient(state, store)), ledger, store, path


def review(guarded: gr.GuardedClient, store: gr.BlobStore, path: Path, number: int,
           fault: str | None) -> gr.Decision:
    """One proposal with a fresh prompt (the fault's target) and fresh weights."""
    prompt = f"You are a careful assistant, revision {number}."
    fk.SWITCH.target = prompt
    weights = store.put(f"weights {number}".encode())
    proposal = gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/system_prompt", "value": prompt},
        {"op": "replace", "path": "/weights", "value": gr.blob_ref(weights)}])
    if fault == "silent":
        guarded.client.mutate_silently("system_prompt", "changed behind the guard's back")
    holding = fk.write_lock_held(path) if fault == "lock" else contextlib.nullcontext()
    fk.SWITCH.mode = fault if fault not in (None, "lock", "silent") else None
    try:
        with holding:
            return guarded.propose(proposal)
    finally:
        fk.SWITCH.reset()


def main() -> int:
    # This script is the application: it keeps the library's per-decision logs quiet.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    rng = random.Random(2026)
    limit = int(SHORT) if SHORT else None
    rss_start = rss_mib()
    with tempfile.TemporaryDirectory(prefix="guardrails-soak-") as tmp:
        guarded, ledger, store, path = build(Path(tmp))
        invokers = Invokers(guarded, INVOKERS)
        verdicts: Counter[str] = Counter()
        by_fault: Counter[str] = Counter()
        accepted_under_fault: list[str] = []
        reviews = 0
        samples: list[float] = []  # resident memory every tenth of the run, to tell growth
        started = time.monotonic()  # from a leak (a leak keeps growing to the end)
        invokers.start()
        try:
            while (reviews < limit) if limit is not None else (
                    time.monotonic() - started < SECONDS):
                fault = rng.choice(FAULTS) if rng.random() < 0.5 else None
                decision = review(guarded, store, path, reviews, fault)
                reviews += 1
                done = reviews / limit if limit else (time.monotonic() - started) / SECONDS
                if done >= (len(samples) + 1) / 10:
                    samples.append(rss_mib())
                verdicts[decision.verdict.value] += 1
                if fault is not None:
                    by_fault[fault] += 1
                    if decision.accepted and fault != "silent":
                        accepted_under_fault.append(fault)
        finally:
            invokers.stop()
            fk.SWITCH.reset()
        elapsed = time.monotonic() - started
        rss_end = rss_mib()  # before verifying, which reads the whole ledger into memory
        report = ledger.verify(store)
        size = len(ledger)
        ledger.close()

    faulted = sum(n for f, n in by_fault.items() if f != "silent")
    print(f"soak: {elapsed:.0f} s, {INVOKERS} calling threads, one proposer")
    print(f"{'calls served':<28} {invokers.served:>10,}")
    print(f"{'calls failed':<28} {invokers.failed:>10,}  {dict(invokers.errors) or ''}")
    print(f"{'unsafe answers served':<28} {invokers.unsafe:>10,}")
    print(f"{'reviews':<28} {reviews:>10,}")
    for verdict in ("accepted", "rejected", "inconclusive", "error"):
        print(f"{'  ' + verdict:<28} {verdicts[verdict]:>10,}")
    print(f"{'reviews under a fault':<28} {faulted:>10,}  (+{by_fault['silent']} with a silent "
          "self-modification, which may be accepted: the change is undone first)")
    print(f"{'accepted under a fault':<28} {len(accepted_under_fault):>10,}  "
          f"{accepted_under_fault or ''}")
    print(f"{'ledger entries':<28} {size:>10,}  verifies: {report.ok}"
          + (f" ({report.problem})" if not report.ok else ""))
    print(f"{'RSS start / end (MiB)':<28} {rss_start:>10.1f} / {rss_end:.1f}")
    print(f"{'RSS every tenth (MiB)':<28} " + " ".join(f"{m:.0f}" for m in samples))
    print("faults injected: " + ", ".join(f"{f} {n}" for f, n in sorted(by_fault.items())))
    return 1 if accepted_under_fault or invokers.failed or invokers.unsafe or not report.ok else 0


if __name__ == "__main__":
    sys.exit(main())
