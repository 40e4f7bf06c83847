"""Per-call cost side by side: this library, Guardrails AI, NeMo Guardrails, LangChain agents.

One command, one machine, one run. Each peer gets a virtual environment of
its own under a cache directory that git ignores (``benchmarks/peers/.venvs``
by default, ``--cache`` or ``GUARDRAILS_PEERS_CACHE`` to move it), with the
pinned release installed from the package registry. Then every framework
runs the same workload in a subprocess of its own environment:

* a zero-latency fake model answering ``"ok"``;
* one output check, a regular expression that passes (the answer holds no
  SSN-like number), written the way each framework intends: a custom
  ``Validator`` (Guardrails AI), a Python action in an output rail (NeMo
  Guardrails), an ``after_model`` middleware (LangChain agents), the
  ``regex`` runtime policy (this library);
* ``N`` raw and ``N`` guarded calls after a warm-up, interleaved in rounds,
  sync and async where the framework has both;
* 1,000 concurrent async calls against the same model with 50 ms latency.

Import time and resident memory are measured in a fresh interpreter per
framework (median of several runs after one that writes the bytecode
cache). Peers run offline: their telemetry and hub access are switched off
with their own settings, and HTTP(S) proxies point at a closed local port
so a forgotten download fails at once instead of reaching out.

    .venv/bin/python benchmarks/peers/run.py                 # N=5,000 calls per row
    GUARDRAILS_BENCH_N=300 .venv/bin/python benchmarks/peers/run.py   # short mode
    .venv/bin/python benchmarks/peers/run.py --only guardrails-ai     # one peer (and ours)
    .venv/bin/python benchmarks/peers/run.py --streaming   # benchmarks/streaming.py vs NeMo

It installs three frameworks, so CI does not run it; docs/benchmarks.md
shows its latest output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_CACHE = HERE / ".venvs"


@dataclass(frozen=True)
class Framework:
    key: str
    label: str
    workload: str
    import_statement: str
    requirement: str | None = None
    """Pinned requirement installed in the framework's own venv; ``None`` for this library."""
    related: tuple[str, ...] = ()
    """Distributions whose resolved versions are printed next to the framework's."""
    env: dict[str, str] = field(default_factory=dict)


OURS = Framework("ours", "guardrails (this library)", "workload_ours.py", "import guardrails")

PEERS = (
    Framework(
        "guardrails-ai", "Guardrails AI", "workload_guardrails_ai.py",
        "from guardrails import Guard, AsyncGuard", requirement="guardrails-ai==0.11.0",
        related=("litellm",),
        # Hub metrics and remote inference are read from ~/.guardrailsrc (written below);
        # litellm would otherwise fetch its model cost map from the network at import.
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "GUARD_HISTORY_ENABLED": "true"}),
    Framework(
        "nemoguardrails", "NeMo Guardrails", "workload_nemo.py",
        "from nemoguardrails import LLMRails, RailsConfig", requirement="nemoguardrails==0.24.1",
        env={"NEMO_GUARDRAILS_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}),
    Framework(
        "langchain", "LangChain agents", "workload_langchain.py",
        "from langchain.agents import create_agent; "
        "from langchain.agents.middleware import AgentMiddleware",
        requirement="langchain==1.5.2", related=("langchain-core", "langgraph"),
        env={"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false",
             "LANGCHAIN_TRACING": "false", "LANGSMITH_OTEL_ENABLED": "false"}),
)

TARGETS = {"guardrails-ai": 50, "langchain": 20, "nemoguardrails": 100}
"""Each peer's per-call overhead must be at least this many times ours."""

GUARDRAILSRC = "enable_metrics=false\nuse_remote_inferencing=false\n"
DEAD_PROXY = "http://127.0.0.1:9"

IMPORT_PROBE = r"""
import json, sys, time
statement = sys.argv[1]
start = time.perf_counter()
exec(compile(statement, "<import>", "exec"))
elapsed = time.perf_counter() - start
rss_kb = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
print(json.dumps({"import_ms": elapsed * 1000, "rss_mb": rss_kb / 1024}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# -- environments ---------------------------------------------------------------------


def venv_python(cache: Path, framework: Framework) -> Path:
    return cache / framework.key / "bin" / "python"


def ensure_venv(cache: Path, framework: Framework) -> Path:
    """The framework's venv, created and its pinned release installed when missing or stale."""
    assert framework.requirement is not None
    root = cache / framework.key
    python = venv_python(cache, framework)
    marker = root / "bench-requirement.txt"
    if python.exists() and marker.exists() and marker.read_text().strip() == framework.requirement:
        return python
    log(f"[peers] creating {root} and installing {framework.requirement} ...")
    venv.EnvBuilder(clear=True, with_pip=True).create(root)
    started = time.perf_counter()
    installed = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                framework.requirement], capture_output=True, text=True, check=False)
    (root / "bench-install.log").write_text(installed.stdout + installed.stderr)
    if installed.returncode != 0:
        raise SystemExit(f"installing {framework.requirement} failed:\n{installed.stderr[-3000:]}")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout
    (root / "bench-freeze.txt").write_text(freeze)
    marker.write_text(framework.requirement + "\n")
    log(f"[peers] installed {framework.requirement} in {time.perf_counter() - started:.0f} s")
    return python


def base_env(cache: Path, framework: Framework) -> dict[str, str]:
    """The environment every subprocess of ``framework`` runs in."""
    env = dict(os.environ)
    # Bytecode cached on disk for every framework alike (this machine may set
    # PYTHONDONTWRITEBYTECODE, which would make one framework compile its sources
    # on every import and not the others).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache" / framework.key)
    env.pop("PYTHONPATH", None)
    if framework.requirement is not None:
        home = cache / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / ".guardrailsrc").write_text(GUARDRAILSRC)
        env["HOME"] = str(home)
        env["XDG_CACHE_HOME"] = str(home / ".cache")
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"):
            env[name] = DEAD_PROXY
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        env.update(framework.env)
    return env


def resolved_versions(python: Path, names: tuple[str, ...], env: dict[str, str]) -> dict[str, str]:
    if not names:
        return {}
    code = ("import json, sys\nfrom importlib.metadata import version\n"
            "print(json.dumps({n: version(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *names], env=env, capture_output=True,
                         text=True, check=True).stdout
    return dict(json.loads(out))


# -- measurements -----------------------------------------------------------------------


def measure_import(python: Path, framework: Framework, env: dict[str, str],
                   runs: int) -> dict[str, float]:
    """Median import time and resident memory after the import, each run a fresh interpreter."""
    samples = []
    for attempt in range(runs + 1):  # the first run writes the bytecode cache; it is not counted
        # -P and a neutral working directory: the repository's own ``guardrails`` package
        # must not shadow Guardrails AI's, which has the same name.
        out = subprocess.run([str(python), "-P", "-c", IMPORT_PROBE, framework.import_statement],
                             env=env, cwd=env["HOME"] if framework.requirement else HERE,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"importing {framework.label} failed:\n{out.stderr[-2000:]}")
        if attempt:
            samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"import_ms": statistics.median(s["import_ms"] for s in samples),
            "import_ms_min": min(s["import_ms"] for s in samples),
            "rss_mb": statistics.median(s["rss_mb"] for s in samples)}


def run_workload(python: Path, framework: Framework, mode: str, env: dict[str, str]) -> Any:
    log(f"[peers] {framework.label}: {mode} ...")
    started = time.perf_counter()
    out = subprocess.run([str(python), str(HERE / framework.workload), mode], env=env, cwd=HERE,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{framework.label} {mode} failed:\n{out.stderr[-4000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            log(f"[peers] {framework.label}: {mode} done in {time.perf_counter() - started:.0f} s")
            return json.loads(line[len("BENCH-RESULT "):])
    raise SystemExit(f"{framework.label} {mode} printed no result:\n{out.stdout[-2000:]}")


# -- report -----------------------------------------------------------------------------


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def overhead(row: dict[str, Any]) -> float:
    return float(row["guarded"]["median_us"] - row["raw"]["median_us"])


def report(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"date: {header['date']}",
        f"machine: {header['nproc']} CPUs, {header['cpu']}, Python {header['python']}, "
        f"{header['system']}",
        f"load average before/after: {header['load_before']} / {header['load_after']}",
        f"calls per row: {header['n']} after {header['warmup']} warm-up calls; "
        f"concurrency: {header['concurrency']} calls, 50 ms model latency",
        "",
    ]
    ours = next(r for r in results if r["key"] == "ours")
    base = {(row["setting"], row["mode"]): overhead(row) for row in ours["percall"]["rows"]}
    lines += [
        "| framework | version | setting | mode | raw median µs | raw p99 µs | guarded median µs "
        "| guarded p99 µs | overhead µs | x ours (API only) | x ours (SDK) | import ms | RSS MB |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    summary = []
    for result in results:
        version = result["version"]
        if result["related"]:
            version += " (" + ", ".join(f"{k} {v}" for k, v in result["related"].items()) + ")"
        for row in result["percall"]["rows"]:
            cost = overhead(row)
            api = base.get(("API only", row["mode"]))
            sdk = base.get(("SDK in memory", row["mode"]))
            ratio_api = f"{cost / api:,.0f}x" if api else "n/a"
            ratio_sdk = f"{cost / sdk:,.0f}x" if sdk else "n/a"
            if result["key"] == "ours":
                ratio_api = "1x" if row["setting"] == "API only" else f"{cost / api:.1f}x"
                ratio_sdk = "1x" if row["setting"] != "API only" else f"{cost / sdk:.2f}x" \
                    if sdk else "n/a"
            lines.append(
                f"| {result['label']} | {version} | {row['setting'] or 'default'} | {row['mode']} "
                f"| {_us(row['raw']['median_us'])} | {_us(row['raw']['p99_us'])} "
                f"| {_us(row['guarded']['median_us'])} | {_us(row['guarded']['p99_us'])} "
                f"| {_us(cost)} | {ratio_api} | {ratio_sdk} "
                f"| {result['import']['import_ms']:.0f} | {result['import']['rss_mb']:.1f} |")
            target = TARGETS.get(result["key"])
            if target and api and sdk:
                summary.append((result["label"], row["mode"], target, cost / api, cost / sdk))
    lines += ["", "Targets (a peer's overhead at least this many times ours):"]
    for label, mode, target, vs_api, vs_sdk in summary:
        verdict = ("met" if vs_sdk >= target else "met against the API-only setting, not against "
                   "the SDK one") if vs_api >= target else "NOT met"
        lines.append(f"- {label}, {mode}: {target}x wanted; {vs_api:,.0f}x (API only), "
                     f"{vs_sdk:,.0f}x (SDK): {verdict}")
    import_row = ours["import"]
    lines.append(f"- import guardrails: {import_row['import_ms']:.0f} ms median "
                 f"({import_row['import_ms_min']:.0f} ms best), {import_row['rss_mb']:.1f} MB "
                 f"resident; wanted < 150 ms and < 40 MB: "
                 f"{'met' if import_row['import_ms'] < 150 and import_row['rss_mb'] < 40 else 'NOT met'}")
    lines += [
        "",
        "| framework | concurrent calls | model latency ms | raw wall ms | guarded wall ms "
        "| guarded ÷ ideal | guarded ÷ raw |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        for row in result["concurrency"]["rows"]:
            lines.append(
                f"| {result['label']} | {row['calls']:,} | {row['latency_ms']:.0f} "
                f"| {row['raw_wall_ms']:,.1f} | {row['guarded_wall_ms']:,.1f} "
                f"| {row['guarded_wall_ms'] / row['ideal_ms']:.2f} "
                f"| {row['guarded_wall_ms'] / row['raw_wall_ms']:.2f} |")
    return "\n".join(lines)


def streaming(cache: Path) -> str:
    """benchmarks/streaming.py (ours) and the same workload through NeMo Guardrails' streaming
    output rails (workload_nemo_streaming.py, in NeMo's venv), as ratios from one run."""
    import re

    nemo = next(p for p in PEERS if p.key == "nemoguardrails")
    python = ensure_venv(cache, nemo)
    env = base_env(cache, nemo)
    log("[peers] NeMo Guardrails: streaming ...")
    out = subprocess.run([str(python), str(HERE / "workload_nemo_streaming.py")], env=env,
                         cwd=HERE, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"NeMo Guardrails streaming failed:\n{out.stderr[-4000:]}")
    peer = json.loads(lines[-1][len("BENCH-RESULT "):])
    log("[peers] ours: benchmarks/streaming.py ...")
    ours_env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'plugins'}")
    ours = subprocess.run([sys.executable, str(REPO / "benchmarks" / "streaming.py")],
                          env=ours_env, capture_output=True, text=True, check=True).stdout

    def figure(label: str) -> float:
        found = re.search(re.escape(label) + r": (-?[0-9.]+) us", ours)
        if found is None:
            raise SystemExit(f"benchmarks/streaming.py printed no {label!r}:\n{ours}")
        return float(found.group(1))

    chunk, first = figure("per-chunk overhead, astream"), figure("added time to first released byte")
    return "\n".join([
        ours.rstrip(), "",
        f"NeMo Guardrails {peer['version']} (streaming output rails, stream_first False, "
        f"chunk_size 32, context_size 16; {peer['streams']} streams of {peer['chunks']} chunks):",
        f"per-chunk overhead: {peer['per_chunk_us']:.2f} us; ours (astream) {chunk:.2f} us; "
        f"NeMo / ours: {peer['per_chunk_us'] / chunk:.1f}x",
        f"added time to first released byte: {peer['added_first_us']:.1f} us; ours {first:.2f} us; "
        f"NeMo / ours: {peer['added_first_us'] / first:.0f}x",
        f"NeMo released the text joined exactly: {peer['joined_exactly']}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("GUARDRAILS_PEERS_CACHE", DEFAULT_CACHE)),
                        help="where the peers' venvs live (default: %(default)s)")
    parser.add_argument("--only", nargs="*", choices=[p.key for p in PEERS],
                        help="run only these peers (this library always runs)")
    parser.add_argument("--import-runs", type=int, default=7,
                        help="fresh interpreters per import measurement (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--streaming", action="store_true",
                        help="only the streaming workload (ours and NeMo Guardrails)")
    args = parser.parse_args()

    n = int(os.environ.get("GUARDRAILS_BENCH_N", "5000"))
    concurrency = int(os.environ.get("GUARDRAILS_BENCH_CONCURRENCY",
                                     "1000" if "GUARDRAILS_BENCH_N" not in os.environ
                                     else str(min(1000, n))))
    os.environ["GUARDRAILS_BENCH_N"] = str(n)
    os.environ["GUARDRAILS_BENCH_CONCURRENCY"] = str(concurrency)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if args.streaming:
        print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; {cpu_model()}, "
              f"{os.cpu_count()} CPUs; load {loadavg()}")
        print(streaming(cache))
        return
    peers = [p for p in PEERS if args.only is None or p.key in args.only]
    pythons = {OURS.key: Path(sys.executable)}
    for peer in peers:
        pythons[peer.key] = ensure_venv(cache, peer)

    header = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu_model(), "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}", "load_before": loadavg(),
        "n": n, "warmup": max(20, n // 10), "concurrency": concurrency,
    }
    results = []
    for framework in (OURS, *peers):
        python = pythons[framework.key]
        env = base_env(cache, framework)
        percall = run_workload(python, framework, "percall", env)
        concurrent = run_workload(python, framework, "concurrency", env)
        log(f"[peers] {framework.label}: import time and memory ...")
        results.append({
            "key": framework.key, "label": framework.label, "version": percall["version"],
            "requirement": framework.requirement,
            "related": resolved_versions(python, framework.related, env),
            "percall": {"rows": percall["rows"]}, "concurrency": {"rows": concurrent["rows"]},
            "import": measure_import(python, framework, env, args.import_runs)})
    header["load_after"] = loadavg()
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=2,
                                        default=str))
    print(report(results, header))


if __name__ == "__main__":
    main()
