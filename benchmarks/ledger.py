"""Ledger figures: append latency, full verification time, proof size and proof checking.

For each size (10^4, 10^5, 10^6 entries by default) a SQLite ledger is
filled in bulk (the ledger's own append path, many entries per transaction,
so building 10^6 entries takes minutes, not hours), then measured:

* append: median and p99 of 500 single appends (one transaction and one
  fsync each, as a review records a decision), with and without a signing key;
* verify: the full ``verify()`` (hash chain, Merkle tree, states);
* proof: inclusion proof size (hashes, bytes of JSON) and the time to build
  and to check one.

    python benchmarks/ledger.py                 # 10^4, 10^5, 10^6 (about 10 minutes)
    GUARDRAILS_BENCH_N=2000 python benchmarks/ledger.py   # one small size
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import guardrails as gr

SHORT = os.environ.get("GUARDRAILS_BENCH_N")
SIZES = [int(SHORT)] if SHORT else [10**4, 10**5, 10**6]
APPENDS = 100 if SHORT else 500
BULK = 5_000  # entries per transaction while filling


def fill(ledger: gr.SQLiteLedger, size: int) -> None:
    body = {"event": "bench", "detail": "x" * 200}
    while len(ledger) < size:
        with ledger._transaction() as tx:
            for _ in range(min(BULK, size - len(ledger))):
                ledger._append(tx, "event", body)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def appends(ledger: gr.SQLiteLedger) -> tuple[float, float]:
    samples = []
    for i in range(APPENDS):
        started = time.perf_counter()
        ledger.record_event("bench.append", i=i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def main() -> None:
    print(f"{'entries':>9} {'append ms (p50/p99)':>20} {'signed (p50/p99)':>18} "
          f"{'verify s':>9} {'proof hashes':>12} {'proof bytes':>11} {'prove ms':>9} "
          f"{'check ms':>9}")
    for size in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ledger.db"
            ledger = gr.SQLiteLedger(path)
            fill(ledger, size)
            plain = appends(ledger)
            ledger.close()
            key = gr.SigningKey.generate("bench")
            signed_ledger = gr.SQLiteLedger(path, signing_key=key)
            signed = appends(signed_ledger)
            started = time.perf_counter()
            report = signed_ledger.verify()
            verify_s = time.perf_counter() - started
            assert report.ok, report.problem
            started = time.perf_counter()
            proof = signed_ledger.prove(size // 2)
            prove_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            proof.verify()
            check_ms = (time.perf_counter() - started) * 1000
            signed_ledger.close()
        print(f"{size:>9} {plain[0]:>9.2f} / {plain[1]:>7.2f} {signed[0]:>8.2f} / {signed[1]:>7.2f} "
              f"{verify_s:>9.2f} {len(proof.hashes):>12} {len(proof.model_dump_json()):>11} "
              f"{prove_ms:>9.2f} {check_ms:>9.3f}")


if __name__ == "__main__":
    main()
