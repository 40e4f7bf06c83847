"""Runs a sandbox in a process whose kernel refuses new namespaces. Not a test module.

``python tests/jail_worker.py MODE`` first installs a seccomp filter that makes
``unshare`` fail with EPERM (inherited by every process it starts, as a
container's profile would be), then starts a sandbox with ``isolation=MODE``
(``strict`` or ``best_effort``) directly and through a guard, and prints one
JSON line: what happened.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pyseccomp as seccomp

sys.path.insert(0, str(Path(__file__).parent))

from sandbox_clients import ScriptedClient

import guardrails as gr
from guardrails.sandbox import ProcessSandbox


def refuse_namespaces() -> None:
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "unshare")
    rules.load()


def main(mode: str) -> dict[str, object]:
    refuse_namespaces()
    limits = gr.SandboxLimits(jail=gr.JailPolicy(isolation=mode))  # type: ignore[arg-type]
    state = {"answers": {"2+2": "4"}, "default": "?"}
    sandbox = ProcessSandbox(limits)
    result: dict[str, object] = {}
    try:
        with sandbox.start(ScriptedClient(state), state) as proxy:
            result["isolation"] = proxy.isolation
            result["answer"] = proxy.invoke(gr.Request(input="2+2"))
    except gr.SandboxUnavailable as exc:
        result["refused"] = {"layer": exc.layer, "message": str(exc)}
    finally:
        sandbox.close()
    guard = gr.Guard(canaries=[gr.CanaryCase(id="sum", input="2+2", expect="4")],
                     sandbox="process", sandbox_limits=limits,
                     canary_run=gr.RunSettings(smoke_cases=0), seed=1)
    guarded = guard.wrap(ScriptedClient(state))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/default", "value": "!"}]))
    assert guard.process_sandbox is not None
    guard.process_sandbox.close()
    result["verdict"] = decision.verdict.value
    result["findings"] = [f.model_dump(mode="json") for f in decision.findings]
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
