"""A river online learner whose learning from the stream is gated.

Offline, on a generated stream. ``RiverOnlineClient`` replays what the model
learns (``learn_one`` on a copy) into a proposal whose learned state is one
JSON blob. A clean stretch of stream is accepted; a stretch whose labels
drifted to the opposite concept is rejected on the canaries.

Run: ``python examples/adapters/river_online.py`` (extra: ``river``).
"""

from __future__ import annotations

import random

import structlog
from guardrails_plugins.adapters.river import RiverOnlineClient
from river import compose, linear_model, optim, preprocessing

import guardrails as gr


def stream(n: int, seed: int, flipped: bool = False) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {"a": round(rng.uniform(-1, 1), 4), "b": round(rng.uniform(-1, 1), 4)}
        label = x["a"] + 0.5 * x["b"] > 0
        out.append((x, label != flipped))
    return out


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    model = compose.Pipeline(preprocessing.StandardScaler(),
                             linear_model.LogisticRegression(optimizer=optim.SGD(0.1)))
    for x, y in stream(30, 0):
        model.learn_one(x, y)
    blobs = gr.MemoryBlobStore()
    client = RiverOnlineClient(model, blobs=blobs, epochs=2)
    suite = [gr.CanaryCase(id=f"c{i}", input=x, expect=y) for i, (x, y) in enumerate(stream(100, 1))]
    guarded = gr.Guard(canaries=suite, blob_store=blobs, margin=0.02).wrap(client)

    def accuracy() -> float:
        held_out = stream(500, 2)
        return sum(guarded.invoke(x).output == y for x, y in held_out) / len(held_out)

    print(f"served {guarded.version[:12]} (update {guarded.state()['updates']}): "
          f"held-out accuracy {accuracy():.3f}")
    for label, flipped in (("a clean stretch of stream", False), ("a drifted stretch", True)):
        for x, y in stream(300, 3, flipped=flipped):
            guarded.client.learn(x, y)
        decision = guarded.self_improve()
        assert decision is not None
        deciding = decision.deciding_finding or next(
            (f for f in decision.findings if f.check == "capability"), None)
        print(f"\nlearned from {label}: {decision.verdict.value}"
              + (f": {deciding.check}: {deciding.message}" if deciding else ""))
        print(f"  served {guarded.version[:12]} (update {guarded.state()['updates']}): "
              f"held-out accuracy {accuracy():.3f}")


if __name__ == "__main__":
    main()
