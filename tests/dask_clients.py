"""Clients the Dask and Ray tests build on the workers (``build = "dask_clients:NAME"``).

Importable on a worker because LocalCluster's worker processes inherit the
test process's ``sys.path``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from guardrails.blobs import BlobStore, blob_ref
from guardrails.testing import DictClient


class WeightsClient:
    """A linear classifier whose weights are a blob: ``invoke`` is ``sign(w . x + bias)``.

    ``work`` repeats the dot product to make a call CPU-bound (the benchmark's local model).
    A request whose input is ``"sleep"`` sleeps ``state["sleep"]`` seconds (a hung call);
    ``state["delay"]`` seconds are slept before every other answer (a slow model); the input
    ``"die"`` ends the worker process at once (a worker killed mid-call).
    """

    def __init__(self, state: dict[str, Any], blobs: BlobStore) -> None:
        self._state = json.loads(json.dumps(state))
        self.weights = json.loads(blobs.get(state["weights"]["$blob"]))
        self.bias = float(state["bias"])
        self.work = int(state.get("work", 1))

    @classmethod
    def create(cls, weights: list[float], bias: float, blobs: BlobStore, **extra: Any
               ) -> WeightsClient:
        digest = blobs.put(json.dumps(weights).encode())
        return cls({"weights": blob_ref(digest), "bias": bias, **extra}, blobs)

    def invoke(self, request: Any) -> Any:
        if request.input == "sleep":
            time.sleep(float(self._state.get("sleep", 30)))
            return 0
        if request.input == "die":
            os._exit(1)
        time.sleep(float(self._state.get("delay", 0)))
        total = 0.0
        for _ in range(self.work):
            total = sum(w * x for w, x in zip(self.weights, request.input, strict=True))
        return 1 if total + self.bias > 0 else 0

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state))

    def propose_update(self) -> None:
        return None

    def with_state(self, state: dict[str, Any]) -> WeightsClient:
        raise NotImplementedError("built by build_weights on the workers")


def build_weights(state: dict[str, Any], blobs: BlobStore) -> WeightsClient:
    return WeightsClient(state, blobs)


def build_dict(state: dict[str, Any], blobs: BlobStore) -> DictClient:
    return DictClient(state)


def build_liar(state: dict[str, Any], blobs: BlobStore) -> DictClient:
    """Builds a client that serves a different state from the one it was given."""
    return DictClient({**state, "tampered": True})
