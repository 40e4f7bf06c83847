"""The benchmark scripts still run (short mode); their numbers are printed, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("script", "n"), [
    ("overhead.py", "200"),
    ("streaming.py", "50"),  # per-chunk overhead and time to first released byte
    ("ledger.py", "500"),
    ("review_walltime.py", "200"),
    ("concurrency.py", "200"),  # concurrent calls
    ("import_cost.py", "2"),  # fresh interpreters
    ("sandbox_startup.py", "3"),  # warm and cold jailed sandboxes
    ("peers/workload_ours.py", "200"),  # our side of the peers comparison (the peers need installs)
    ("report.py", "300"),  # `guardrails report` on a ledger of 300 entries, against `ledger verify`
    ("soak.py", "40"),  # 40 reviews under random faults, calls in 4 threads; exits 1 on a failure
    # a LocalCluster of 2 workers against the local runner, a CPU-bound model
    pytest.param("distributed_review.py", "100", marks=pytest.mark.slow),
    # an 8 MB blob through each store; uses the session's servers or starts its own
    pytest.param("blob_throughput.py", "8", marks=pytest.mark.slow),
    # 4 replica processes on PostgreSQL, then on SQLite; starts a server if none is configured
    pytest.param("replicas.py", "10", marks=pytest.mark.slow),
])
def test_benchmark_runs_in_short_mode(script: str, n: str) -> None:
    """The script exits 0 and prints a table when GUARDRAILS_BENCH_N asks for a short run."""
    env = {**os.environ, "GUARDRAILS_BENCH_N": n}
    result = subprocess.run([sys.executable, str(BENCHMARKS / script)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


def test_decision_efficiency_short_mode() -> None:
    """The decision-efficiency simulation runs on a few hundred candidates and prints its table."""
    env = {**os.environ, "GUARDRAILS_BENCH_N": "400"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "decision_efficiency.py")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("false-accept rate", "model calls per candidate", "better by 5", "safety 2 %"):
        assert line in result.stdout
