"""The shared workload against this library: the ``regex`` runtime policy on the output.

Runs in the project's own environment. The model is a zero-latency client
answering ``"ok"``; the check is the ``regex`` plugin's middleware (built
through the plugin registry, as ``guardrails.toml`` would build it) with one
output rule. Two settings: the OpenTelemetry API alone (no-op spans), and
the SDK recording spans and metrics in memory.

    python workload_ours.py percall | concurrency
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import _bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import concurrency as shared

import guardrails as gr


def _guarded(providers: object, latency: float) -> gr.GuardedClient:
    client = shared.SleepyClient({"prompt": "p"}, latency=latency)
    return shared.guarded(client, shared.regex_policy(), providers)  # type: ignore[arg-type]


def _check(response: gr.Response) -> None:
    if response.output != _bench.FIXED_OUTPUT:
        raise SystemExit(f"the guarded call answered {response.output!r}")


def percall() -> dict[str, object]:
    request = gr.Request(input=_bench.USER_TEXT)
    raw_client = shared.SleepyClient({"prompt": "p"}, latency=0)
    settings = [("API only", None)]
    providers = shared.sdk_providers()
    if providers is not None:
        settings.append(("SDK in memory", providers))
    rows = []
    for setting, pair in settings:
        client = _guarded(pair, 0)
        _check(client.invoke(request))
        rows.append({"setting": setting, "mode": "sync",
                     **_bench.compare(lambda: raw_client.invoke(request),
                                      lambda c=client: c.invoke(request))})

        async def run_async(c: gr.GuardedClient = client) -> dict[str, object]:
            _check(await c.ainvoke(request))
            return await _bench.acompare(lambda: raw_client.ainvoke(request),
                                         lambda: c.ainvoke(request))

        rows.append({"setting": setting, "mode": "async", **asyncio.run(run_async())})
    return {"rows": rows}


def concurrency() -> dict[str, object]:
    request = gr.Request(input=_bench.USER_TEXT)
    raw_client = shared.SleepyClient({"prompt": "p"}, latency=_bench.LATENCY)
    client = _guarded(None, _bench.LATENCY)
    result = asyncio.run(_bench.concurrency(lambda: raw_client.ainvoke(request),
                                            lambda: client.ainvoke(request)))
    return {"rows": [{"setting": "API only", **result}]}


if __name__ == "__main__":
    chosen = _bench.mode()
    result = percall() if chosen == "percall" else concurrency()
    _bench.emit({"framework": "guardrails (this library)", "version": gr.__version__, **result})
