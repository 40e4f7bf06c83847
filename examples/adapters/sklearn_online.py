"""A scikit-learn classifier that learns from its stream, behind a guard.

Offline, on generated data. ``SklearnOnlineClient`` turns each batch the
model learns from (``partial_fit`` on a copy) into a proposal whose weights
are ``.npy`` blobs. A batch with honest labels is accepted; a poisoned batch
(labels flipped by an attacker) is rejected on the canaries. The
``guardrails demo`` (self-training digits) runs on the same adapter.

Run: ``python examples/adapters/sklearn_online.py`` (extra: ``demo``).
"""

from __future__ import annotations

import numpy as np
import structlog
from guardrails_plugins.adapters.sklearn import SklearnOnlineClient
from sklearn.linear_model import SGDClassifier

import guardrails as gr


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    blobs = gr.MemoryBlobStore()
    X0, y0 = data(40, 0)
    model = SGDClassifier(loss="log_loss", random_state=0).partial_fit(X0, y0, classes=[0, 1])
    client = SklearnOnlineClient(model, blobs=blobs, epochs=5)
    Xc, yc = data(100, 1)
    suite = [gr.CanaryCase(id=f"c{i}", input=x.round(4).tolist(), expect=int(y))
             for i, (x, y) in enumerate(zip(Xc, yc, strict=True))]
    guard = gr.Guard(gr.FrozenConstraints(frozen=["/estimator", "/params"]), suite,
                     blob_store=blobs, margin=0.02)
    guarded = guard.wrap(client)

    def accuracy() -> float:
        X, y = data(500, 2)
        return float(np.mean([guarded.invoke(x.tolist()).output == t for x, t in zip(X, y, strict=True)]))

    print(f"served {guarded.version[:12]} (update {guarded.state()['updates']}): "
          f"held-out accuracy {accuracy():.3f}")
    for label, flip in (("honest labels", False), ("poisoned labels", True)):
        X, y = data(300, 3 if not flip else 4)
        guarded.client.learn(X, 1 - y if flip else y)
        decision = guarded.self_improve()
        assert decision is not None
        deciding = decision.deciding_finding or next(
            (f for f in decision.findings if f.check == "capability"), None)
        print(f"\nlearned from 300 examples with {label}: {decision.verdict.value}"
              + (f": {deciding.check}: {deciding.message}" if deciding else ""))
        print(f"  served {guarded.version[:12]} (update {guarded.state()['updates']}): "
              f"held-out accuracy {accuracy():.3f}")


if __name__ == "__main__":
    main()
