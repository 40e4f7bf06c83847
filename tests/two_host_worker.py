"""One 'host' of the two-host test: a guard process sharing only PostgreSQL and S3 with the other.

Run as ``python two_host_worker.py leader|follower`` in a working directory of its own holding
``guardrails.toml`` and ``cases.jsonl``; speaks JSON lines on stdout, reads commands on stdin.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import guardrails as gr


class BlobClient:
    """Answers with its weights, which live in the blob store: ``invoke`` is ``weights:input``."""

    def __init__(self, state: dict[str, Any], blobs: gr.BlobStore) -> None:
        self._state = json.loads(json.dumps(state))
        self.blobs = blobs
        self.weights = blobs.get(state["weights"]["$blob"]).decode()  # verified on read
        self.queued: list[dict[str, Any]] = []

    def invoke(self, request: Any) -> str:
        return f"{self.weights}:{request.input}"

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state))

    def propose_update(self) -> gr.UpdateProposal | None:
        if not self.queued:
            return None
        return gr.UpdateProposal(parent=gr.state_version(self._state), patch=self.queued.pop(0))

    def with_state(self, state: dict[str, Any]) -> BlobClient:
        return BlobClient(state, self.blobs)


def say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def leader() -> None:
    guard = gr.Guard.from_config("guardrails.toml")
    store = guard.blob_store
    assert store is not None
    v1 = store.put(b"weights-v1")
    client = BlobClient({"prompt": "p", "weights": gr.blob_ref(v1)}, store)
    guarded = guard.wrap(client)
    say(event="serving", version=guarded.version, answer=guarded.invoke("x").output)
    sys.stdin.readline()  # the follower is up
    v2 = store.put(b"weights-v2")
    guarded.client.queued.append([{"op": "replace", "path": "/weights", "value": gr.blob_ref(v2)}])
    decision = guarded.self_improve()
    assert decision is not None
    report = guard.ledger.verify(store)
    say(event="promoted", accepted=decision.accepted, version=guarded.version,
        answer=guarded.invoke("x").output, verified=report.ok)


def follower() -> None:
    guard = gr.Guard.from_config("guardrails.toml")
    store = guard.blob_store
    assert store is not None
    served = guard.ledger.served_version()
    assert served is not None
    guarded = guard.wrap(BlobClient(guard.ledger.get_state(served), store))
    first = guarded.version
    say(event="serving", version=first, answer=guarded.invoke("x").output)
    deadline = time.monotonic() + 30
    while guarded.version == first and time.monotonic() < deadline:
        time.sleep(0.05)  # the ledger's watcher follows the promotion, no sync() here
    report = guard.ledger.verify(store)
    say(event="followed", version=guarded.version, answer=guarded.invoke("x").output,
        verified=report.ok, fetched=getattr(store, "misses", None),
        cached=len(store.cached()) if isinstance(store, gr.CachedBlobStore) else None)


if __name__ == "__main__":
    import structlog

    # Logs to stderr: stdout carries the JSON lines the test reads.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    {"leader": leader, "follower": follower}[sys.argv[1]]()
