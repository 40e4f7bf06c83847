"""A self-training digit classifier rolled out on live traffic: shadow, steps, promotion or
rollback, decided by live evidence (issue 17, docs/rollout.md).

Run it with ``python examples/rollout_digits.py`` (needs the ``demo`` extra for
scikit-learn: ``pip install -e '.[demo]'``). It writes ``guardrails.toml``, the canary cases
and the ledger into ``--workdir`` (default ``.guardrails/rollout-demo``), so afterwards
``guardrails rollout status -c .guardrails/rollout-demo/guardrails.toml`` tells the same story.

The model is scikit-learn's ``SGDClassifier`` behind the library's sklearn adapter. Twice it
proposes new weights; both pass the offline canaries (clean labelled digits):

1. it learned from labelled stream examples (five passes): on live traffic it is clearly
   better than the incumbent (0.936 against 0.898 accuracy; 63 live examples it fixes, 27 it
   breaks), so it goes from shadow through 5, 25 and 50 % to 100 %;
2. it self-trained on its own labels of the stream, which a bug shifts for a few classes,
   and it had also seen the public canaries: it does *better* on the canaries and worse on
   live traffic, so it is rolled back at a small share (and the gap is a ``gaming`` finding).

Live evidence is the application's: each answer's true label arrives a moment later and is
handed over with ``guarded.expect(response_id, label)``. Nothing is scripted. The live
requests are seeded; which of them are copied to the shadow is not (a random half, under
the concurrency cap, so it varies with load), so the counts printed vary from run to run.
A candidate only as good as the incumbent would be rolled back in a few per cent of runs:
"worse than the incumbent" is an anytime-valid test at ``alpha``, and an equal candidate
sits on its boundary (docs/rollout.md, "Decisions"); this one is better by a clear margin.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from guardrails_plugins.adapters.sklearn import SklearnOnlineClient
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

import guardrails as gr

CONFIG = """\
[canaries]
files = ["canaries.jsonl"]

[decision]
margin = 0.05

[rollout]
shadow = true
shadow_fraction = 0.5
steps = [5, 25, 50, 100]
min_samples = 60
margin = 0.04
evaluate_every = 25
on_gaming = "record"
"""


class Digits(SklearnOnlineClient):
    """The adapter's client, declaring its calls free of side effects (it may be shadowed)."""

    side_effect_free = True


def _data(seed: int) -> dict[str, Any]:
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = X[order] / 16.0, y[order]
    return {"initial": (X[:100], y[:100]), "canary": (X[300:450], y[300:450]),
            "learn": (X[450:850], y[450:850]), "live": (X[850:], y[850:])}


def _project(workdir: Path, data: dict[str, Any]) -> Path:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    X, y = data["canary"]
    (workdir / "canaries.jsonl").write_text("".join(
        json.dumps({"id": f"digit-{i}", "input": x.tolist(), "expect": int(label)}) + "\n"
        for i, (x, label) in enumerate(zip(X, y, strict=True))))
    (workdir / "guardrails.toml").write_text(CONFIG)
    return workdir / "guardrails.toml"


def _serve(guarded: gr.GuardedClient, data: dict[str, Any], rng: np.random.Generator,
           calls: int) -> None:
    """Live traffic from 400 users; each true label arrives after the answer."""
    X, y = data["live"]
    last = None
    for _ in range(calls):
        i = int(rng.integers(len(y)))
        response = guarded.invoke(gr.Request(input=X[i].tolist(),
                                             metadata={"user_id": f"user-{rng.integers(400)}"}))
        rid = response.metadata.get("guardrails.response_id")
        if rid is not None:
            guarded.expect(rid, int(y[i]))
        status = guarded.rollout_status()
        now = None if status is None else (status.label(), status.final)
        if now != last and status is not None:
            weight = status.weight(guarded.guard.rollout)  # type: ignore[arg-type]
            print(f"  {status.label():<9} {weight:>5.0f} % to the candidate   {status.reason}")
            last = now
        if status is None or status.final:
            return


def _accuracy(client: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([client.invoke(gr.Request(input=x.tolist())) == label
                          for x, label in zip(X, y, strict=True)]))


def run(workdir: Path, seed: int) -> None:
    data = _data(seed)
    config = _project(workdir, data)
    guard = gr.Guard.from_config(config)
    assert guard.blob_store is not None
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.1, alpha=3e-3,
                          random_state=seed)
    for _ in range(20):
        model.partial_fit(*data["initial"], classes=list(range(10)))
    guarded = guard.wrap(Digits(model, blobs=guard.blob_store, classes=list(range(10)), epochs=5))
    rng = np.random.default_rng(seed)
    print(f"incumbent {guarded.version[:12]}: live accuracy {_accuracy(guarded.client, *data['live']):.3f}")

    print("\n1. it learned from 400 labelled stream examples")
    guarded.client.learn(*data["learn"])
    decision = guarded.self_improve()
    assert decision is not None
    print(f"  gate: {decision.verdict.value}; {decision.findings[-1].message}")
    _serve(guarded, data, rng, 20000)

    print("\n2. it self-trained on its own (buggy) labels and on the public canaries")
    served: Any = guarded.client
    X_learn, _ = data["learn"]
    own = np.asarray([served.invoke(gr.Request(input=x.tolist())) for x in X_learn])
    buggy = np.where(np.isin(own, [2, 3, 5, 8]), (own + 1) % 10, own)  # the labelling bug
    X_c, y_c = data["canary"]
    candidate = served.fit_candidate(X_c, y_c)
    for _ in range(10):  # its own labels, then the canaries it should never have seen
        candidate.partial_fit(X_learn, buggy)
        candidate.partial_fit(X_c, y_c)
        candidate.partial_fit(X_c, y_c)
    print(f"  canary accuracy {_accuracy(_wrap_est(served, candidate), X_c, y_c):.3f} "
          f"(incumbent {_accuracy(served, X_c, y_c):.3f}); live "
          f"{_accuracy(_wrap_est(served, candidate), *data['live']):.3f} "
          f"(incumbent {_accuracy(served, *data['live']):.3f})")
    decision = guarded.propose(served.proposal_for(candidate, rationale="self-training"))
    print(f"  gate: {decision.verdict.value}; {decision.findings[-1].message}")
    if decision.accepted:
        _serve(guarded, data, rng, 20000)
    status = guarded.rollout_status()
    if status is not None and status.phase == "aborted":
        print(f"  rolled back: {status.reason}")
    print(f"\nserved now: {guarded.version[:12]} (the ledger says "
          f"{guarded.ledger.served_version()[:12]})")  # type: ignore[index]
    print(f"see it:     guardrails rollout status -c {config}")


class _wrap_est:
    """Answers with a bare estimator the way the served client does (for the printout only)."""

    def __init__(self, like: Any, estimator: Any) -> None:
        self.like, self.estimator = like, estimator

    def invoke(self, request: gr.Request) -> Any:
        return self.like.respond(self.estimator, np.asarray(request.input, dtype=np.float64))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".guardrails/rollout-demo"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    run(args.workdir.resolve(), args.seed)
