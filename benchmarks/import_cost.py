"""What ``import guardrails`` costs: wall time and resident memory in a fresh interpreter.

Each run is a new interpreter that times ``import guardrails`` alone and then
reads its resident set size (``VmRSS``); the first run writes the bytecode
cache (into a private ``PYTHONPYCACHEPREFIX``, so a machine that sets
``PYTHONDONTWRITEBYTECODE`` measures an installed package, not a compile) and
is not counted. Then one ``-X importtime`` run lists the modules that cost
most by their own (self) time.

With ``--attribute``, for each heavy dependency it also measures how much
faster ``import guardrails`` is when that dependency is already loaded (what
importing it lazily would save, at most) and how much memory the dependency
adds on its own.

    python benchmarks/import_cost.py                  # 15 runs
    python benchmarks/import_cost.py --attribute      # and the per-dependency costs
    GUARDRAILS_BENCH_N=3 python benchmarks/import_cost.py   # short mode

It also times the command line the same way (``guardrails --version`` and
``guardrails --help`` run in the fresh interpreter by ``guardrails._cli.main``),
and the first use of the runtime path (``import guardrails`` then
``guardrails.Guard``), and prints each as a ratio to the floor measured in the
same run: pydantic with one model built plus the OpenTelemetry API. Then the
real console script is timed as whole processes against ``python -c`` of the
floor (interpreter start-up included on both sides).

Targets: under 150 ms and under 40 MB resident (interpreter included);
``import guardrails`` at most 1.25x the floor, ``--version`` and ``--help`` at
most 1.5x (issue 22).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("GUARDRAILS_BENCH_N", "15"))
TARGET_MS = 150
TARGET_MB = 40

PROBE = r"""
import json, sys, time
exec(sys.argv[2])
start = time.perf_counter()
exec(sys.argv[1])
elapsed = time.perf_counter() - start
rss_kb = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
print(json.dumps({"ms": elapsed * 1000, "mb": rss_kb / 1024}))
"""

FLOOR = ("from pydantic import BaseModel\nclass _Model(BaseModel):\n    x: int = 0\n"
         "from opentelemetry import context, metrics, trace")
"""What any pydantic-and-OpenTelemetry library pays: pydantic with one model built, the OTel API."""

TARGET_IMPORT_RATIO = 1.25
TARGET_CLI_RATIO = 1.5
_CLI = ("import contextlib, io\nfrom guardrails._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main([{flag!r}])\n    except SystemExit:\n        pass")
STATEMENTS = {
    "guardrails --version": _CLI.format(flag="--version"),
    "guardrails --help": _CLI.format(flag="--help"),
    "first use (import, then gr.Guard)": "import guardrails\nguardrails.Guard",
}
FIRST_USE = STATEMENTS["first use (import, then gr.Guard)"]
"""Timed like the import, in-process in a fresh interpreter; the CLI's output is swallowed."""

_CRYPTOGRAPHY = ("cryptography", "cryptography.exceptions", "cryptography.hazmat",
                 "cryptography.hazmat.primitives", "cryptography.hazmat.primitives.asymmetric",
                 "cryptography.hazmat.primitives.asymmetric.ed25519",
                 "cryptography.hazmat.primitives.serialization")
LAZY_CANDIDATES = {
    "structlog": ("structlog",),
    "structlog and asyncio": ("structlog", "asyncio"),
    "cryptography": _CRYPTOGRAPHY,
    "tenacity": ("tenacity",),
    "jsonpatch, jsonpointer": ("jsonpatch", "jsonpointer"),
    "all of the above": ("structlog", "asyncio", *_CRYPTOGRAPHY, "tenacity", "jsonpatch",
                         "jsonpointer"),
}
"""Dependencies ``import guardrails`` loads eagerly although few calls need them."""

STUBS = r"""
import sys, types
class _Anything:
    def __call__(self, *args, **kwargs): return _Anything()
    def __getattr__(self, name): return _Anything()
    def __mro_entries__(self, bases): return (object,)
class _Stub(types.ModuleType):
    __path__ = []
    def __getattr__(self, name):
        if name.startswith("__"): raise AttributeError(name)
        return _Anything()
for _name in sys.argv[3].split(","):
    if _name: sys.modules[_name] = _Stub(_name)
"""


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def probe(statement: str, env: dict[str, str], runs: int,
          stubbed: tuple[str, ...] = ()) -> list[dict[str, float]]:
    """``runs`` fresh interpreters timing ``statement`` (one uncounted run first).

    Modules named in ``stubbed`` are replaced by empty stand-ins before the
    timer starts: the import then costs what it would if this package
    imported them lazily (it never calls them during the import).
    """
    samples = []
    for attempt in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", PROBE, statement, STUBS, ",".join(stubbed)],
                             env=env, capture_output=True, text=True, check=True)
        if attempt:
            samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return samples


def self_times(env: dict[str, str]) -> list[tuple[float, str]]:
    """Modules by self time (ms) in one ``-X importtime`` run of the first use, top-level
    packages summed (``import guardrails`` alone loads nothing worth listing).

    Modules of this package stay separate: their self time is mostly
    pydantic building the models they define.
    """
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", FIRST_USE],
                         env=env, capture_output=True, text=True, check=True)
    totals: collections.Counter[str] = collections.Counter()
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = line.split(":", 1)[1].split("|")
        name = name.strip()
        key = name if name.startswith("guardrails") else name.split(".")[0]
        totals[key] += int(own)
    return [(us / 1000, name) for name, us in totals.most_common()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attribute", action="store_true",
                        help="also measure what each heavy dependency costs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="guardrails-pycache-") as cache:
        env = _env(cache)
        bare = probe("pass", env, max(3, min(RUNS, 5)))
        floor = probe(FLOOR, env, RUNS)
        samples = probe("import guardrails", env, RUNS)
        median_ms = statistics.median(s["ms"] for s in samples)
        rss = statistics.median(s["mb"] for s in samples)
        print(f"import guardrails, {RUNS} fresh interpreters (bytecode cached):")
        print(f"  time  median {median_ms:.0f} ms, best {min(s['ms'] for s in samples):.0f} ms "
              f"(target < {TARGET_MS} ms: {'met' if median_ms < TARGET_MS else 'NOT met'})")
        print(f"  RSS   median {rss:.1f} MB after the import; the bare interpreter "
              f"{statistics.median(s['mb'] for s in bare):.1f} MB "
              f"(target < {TARGET_MB} MB: {'met' if rss < TARGET_MB else 'NOT met'})")
        floor_ms = statistics.median(s["ms"] for s in floor)
        print(f"  floor: pydantic with one model and the OpenTelemetry API take {floor_ms:.0f} ms, "
              f"{statistics.median(s['mb'] for s in floor):.1f} MB here; import guardrails is "
              f"{median_ms / floor_ms:.2f}x that")
        _ratios(env, floor_ms, median_ms)
        ranked = self_times(env)
        own = sum(ms for ms, name in ranked if name.startswith("guardrails"))
        print(f"\nfirst use, self time by module (one -X importtime run, which inflates times); "
              f"this package's own modules: {own:.0f} ms in all")
        for ms, name in ranked[:15]:
            print(f"  {ms:7.1f} ms  {name}")
        if not args.attribute:
            return
        runs = max(RUNS, 5)
        base = probe(FIRST_USE, env, runs)
        base_ms = min(x["ms"] for x in base)
        base_mb = statistics.median(x["mb"] for x in base)
        print(f"\nfirst use (import, then gr.Guard) if these were imported lazily (stand-ins "
              f"loaded instead), best of {runs} runs (as it is: {base_ms:.0f} ms, {base_mb:.1f} MB):")
        print(f"  {'deferred':<28} {'import ms':>10} {'saves ms':>9} {'RSS MB':>8} {'saves MB':>9}")
        for label, modules in LAZY_CANDIDATES.items():
            try:
                lazy = probe(FIRST_USE, env, runs, modules)
            except subprocess.CalledProcessError as exc:
                print(f"  {label:<28} cannot be stood in for: {exc.stderr.strip().splitlines()[-1]}")
                continue
            ms = min(x["ms"] for x in lazy)
            mb = statistics.median(x["mb"] for x in lazy)
            print(f"  {label:<28} {ms:>10.0f} {base_ms - ms:>9.0f} {mb:>8.1f} {base_mb - mb:>9.1f}")

def _ratios(env: dict[str, str], floor_ms: float, import_ms: float) -> None:
    """Each start-up path as a ratio to the floor of the same run, with its target."""
    ok = import_ms / floor_ms <= TARGET_IMPORT_RATIO
    print(f"\nratios to the floor ({floor_ms:.0f} ms), medians of {RUNS} fresh interpreters:")
    print(f"  {'import guardrails':<36} {import_ms:6.0f} ms {import_ms / floor_ms:5.2f}x "
          f"(target <= {TARGET_IMPORT_RATIO}x: {'met' if ok else 'NOT met'})")
    for label, statement in STATEMENTS.items():
        ms = statistics.median(s["ms"] for s in probe(statement, env, RUNS))
        target = TARGET_CLI_RATIO if label.startswith("guardrails -") else None
        verdict = (f"(target <= {target}x: {'met' if ms / floor_ms <= target else 'NOT met'})"
                   if target else "(no target: loads the runtime path)")
        print(f"  {label:<36} {ms:6.0f} ms {ms / floor_ms:5.2f}x {verdict}")
    script = shutil.which("guardrails", path=str(Path(sys.executable).parent)) or shutil.which(
        "guardrails")
    if script is None:
        return
    floor_wall = _wall([sys.executable, "-c", FLOOR], env)
    print(f"  whole processes (interpreter start included), floor `python -c` {floor_wall:.0f} ms:")
    for flag in ("--version", "--help"):
        wall = _wall([script, flag], env)
        print(f"    {'guardrails ' + flag:<34} {wall:6.0f} ms {wall / floor_wall:5.2f}x")


def _wall(command: list[str], env: dict[str, str]) -> float:
    """Median wall time (ms) of ``RUNS`` runs of a whole process, one uncounted run first."""
    times = []
    for attempt in range(RUNS + 1):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        if attempt:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    main()
