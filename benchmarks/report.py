"""`guardrails report` on a large ledger: wall time and file size against their targets.

The ledger is the report tests' real one (a Guard, a DictClient, accepted and
rejected decisions through the public API), grown to 10,000 entries with copies
of its rejected decisions. Three figures, measured in one run:

* baseline: `guardrails ledger verify` on the same ledger, a CLI process that
  reads and checks every entry as the report must;
* report: `guardrails report` writing the HTML file;
* the file's size.

Targets (issue 21): under 10 s and under 5 MB for 10,000 entries.

    python benchmarks/report.py
    GUARDRAILS_BENCH_N=2000 python benchmarks/report.py   # a smaller ledger
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
from ledgers import build_ledger, grow_ledger

SIZE = int(os.environ.get("GUARDRAILS_BENCH_N", "10000"))
CLI = str(Path(sys.executable).with_name("guardrails"))


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([CLI, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger, blobs = build_ledger(Path(tmp), pending=False)
        grow_ledger(ledger, SIZE)
        out = Path(tmp) / "report.html"
        verify = min(timed("ledger", "verify", str(ledger), "--blobs", str(blobs))
                     for _ in range(3))
        report = min(timed("report", "--ledger", str(ledger), "--blobs", str(blobs),
                           "-o", str(out)) for _ in range(3))
        size = out.stat().st_size
    print(f"ledger of {SIZE:,} entries (best of 3 runs each)")
    print(f"  ledger verify (baseline)  {verify:6.2f} s")
    print(f"  report                    {report:6.2f} s   {report / verify:4.2f}x the baseline,"
          f" {report / 10:4.2f}x the 10 s target")
    print(f"  report file               {size / 1e6:6.2f} MB  {size / 5e6:4.2f}x the 5 MB target")


if __name__ == "__main__":
    main()
