"""Crash consistency: a guarded process killed with SIGKILL at random moments, hundreds of
times, always restarts into a consistent state.

The work happens in ``crash_worker.py``: it forks a child that reviews, promotes,
approves, rejects, rolls back and serves against a SQLite ledger, kills it after
a random few milliseconds, restarts, and checks the ledger and the served state
(see its docstring for the checks). Two workers run side by side, one with a
signing key (so a checkpoint is written in every transaction and checked on
every reopen). ``GUARDRAILS_CRASH_KILLS`` sets the kills per worker (default 150).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "crash_worker.py"
KILLS = int(os.environ.get("GUARDRAILS_CRASH_KILLS", "150"))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def test_sigkill_at_random_points_never_leaves_an_inconsistent_ledger(tmp_path: Path) -> None:
    """After every one of the kills: the ledger verifies and only grew, the served version is
    the last accepted entry, a restarted guard serves exactly its recorded state, and every
    pending approval is intact."""
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / f"w{seed}"), "--kills",
                          str(KILLS), "--seed", str(seed), *(["--sign"] if seed % 2 else [])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    failures = [f for report in reports for f in report["failures"]]
    assert failures == [], "\n".join(failures[:20])
    assert sum(r["kills"] for r in reports) == 2 * KILLS
    phases: dict[str, int] = {}
    for report in reports:
        for name, count in report["by_phase"].items():
            phases[name] = phases.get(name, 0) + count
    print(f"kills per phase: {dict(sorted(phases.items()))}")
    # The kills reached reviews and the ledger's own write transactions, not only start-up.
    assert phases.get("propose", 0) > 0
    assert sum(n for name, n in phases.items() if name.startswith("ledger.")) > 0
