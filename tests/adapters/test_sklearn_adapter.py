"""The scikit-learn adapter: partial_fit learners whose stream updates are gated proposals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from adapter_cases import blobs_data, sklearn_client
from guardrails_plugins.adapters import AdapterMismatch
from guardrails_plugins.adapters.sklearn import (
    FittedAttributes,
    LinearWeights,
    SklearnOnlineClient,
    array_from_npy,
)
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.naive_bayes import MultinomialNB
from sklearn.neural_network import MLPClassifier

import guardrails as gr

CANARY_CHECKS = {"capability", "smoke", "safety_canary"}
"""Checks that reject a candidate on canary evidence (the smoke stage is the gate's first)."""


def suite(n: int = 60) -> list[gr.CanaryCase]:
    X, y = blobs_data(seed=1)
    return [gr.CanaryCase(id=f"c{i}", input=X[i].round(4).tolist(), expect=int(y[i]))
            for i in range(n)]


def test_weights_are_npy_blobs_and_params_are_json() -> None:
    blobs = gr.MemoryBlobStore()
    state = sklearn_client(blobs).snapshot()
    assert state["estimator"].endswith("SGDClassifier")
    assert state["params"]["loss"] == "log_loss" and state["updates"] == 0
    coef = array_from_npy(blobs.get(state["weights"]["coef_"]["$blob"]))
    assert coef.shape == (1, 4)
    assert state["weights"]["n_features_in_"] == 4


def test_learning_from_good_labels_is_accepted() -> None:
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs, margin=0.05).wrap(
        sklearn_client(blobs))
    X, y = blobs_data()
    guarded.client.learn(X[50:150], y[50:150])
    decision = guarded.self_improve()
    assert decision is not None and decision.accepted, decision
    assert decision.kind == "weights"
    assert guarded.state()["updates"] == 1
    assert guarded.client.propose_update() is None  # the examples were consumed


def test_learning_from_flipped_labels_is_rejected() -> None:
    """A poisoned stream (labels flipped) moves the weights the wrong way: the capability
    canaries reject it and the served weights stay."""
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs, margin=0.05).wrap(
        sklearn_client(blobs, epochs=5))
    before = guarded.state()
    X, y = blobs_data()
    guarded.client.learn(X[50:200], 1 - y[50:200])
    decision = guarded.self_improve()
    assert decision is not None and decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check in CANARY_CHECKS
    assert guarded.state() == before


def test_a_silent_partial_fit_on_the_served_estimator_is_caught() -> None:
    """Training the served estimator directly changes the snapshot: the guard restores it."""
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs).wrap(sklearn_client(blobs))
    X, y = blobs_data()
    guarded.client.estimator.partial_fit(X[:20], 1 - y[:20])
    finding = guarded.check_integrity()
    assert finding is not None and finding.check == "silent_modification"
    assert gr.state_version(guarded.client.snapshot()) == guarded.version


def test_frozen_params_block_a_hyperparameter_change() -> None:
    blobs = gr.MemoryBlobStore()
    guard = gr.Guard(gr.FrozenConstraints(frozen=["/params", "/estimator"]), suite(),
                     blob_store=blobs)
    guarded = guard.wrap(sklearn_client(blobs))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/params/alpha", "value": 10.0}]))
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "frozen_pointer"


def test_a_hyperparameter_change_builds_a_candidate_with_it() -> None:
    blobs = gr.MemoryBlobStore()
    client = sklearn_client(blobs)
    state = client.snapshot()
    state["params"]["alpha"] = 0.5
    assert client.with_state(state).estimator.alpha == 0.5
    assert client.estimator.alpha != 0.5
    state["params"]["alpha"] = "lots"
    with pytest.raises(ValueError, match="'alpha' parameter"):
        client.with_state(state)


@pytest.mark.parametrize("estimator, kwargs", [
    (SGDRegressor(random_state=0), {}),
    (MultinomialNB(), {"classes": [0, 1]}),
])
def test_other_online_estimators_round_trip(estimator: Any, kwargs: dict[str, Any]) -> None:
    X, y = blobs_data()
    X = np.abs(X)
    estimator.partial_fit(X[:50], y[:50], **kwargs)
    client = SklearnOnlineClient(estimator, blobs=gr.MemoryBlobStore())
    rebuilt = client.with_state(client.snapshot())
    for x in X[50:60]:
        assert client.invoke(gr.Request(input=x.tolist())) == rebuilt.invoke(gr.Request(input=x.tolist()))


def test_linear_weights_store_one_matrix_blob() -> None:
    blobs = gr.MemoryBlobStore()
    X, y = blobs_data()
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.1, random_state=0)
    model.partial_fit(X[:50], y[:50], classes=[0, 1])
    client = SklearnOnlineClient(model, blobs=blobs, codec=LinearWeights([0, 1]))
    state = client.snapshot()
    assert list(gr.iter_blob_refs(state)) == [state["weights"]["$blob"]]
    assert array_from_npy(blobs.get(state["weights"]["$blob"])).shape == (1, 5)


def test_linear_weight_blobs_work_with_the_drift_budget_plugin() -> None:
    """The drift_budget plugin reads LinearWeights blobs by L2 distance: a big jump is refused."""
    blobs = gr.MemoryBlobStore()
    X, y = blobs_data()
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.1, random_state=0)
    model.partial_fit(X[:50], y[:50], classes=[0, 1])
    client = SklearnOnlineClient(model, blobs=blobs, codec=LinearWeights([0, 1]), epochs=20)
    checks = gr.load_plugin("drift_budget").build({"pointers": {"/weights": 0.01}}).checks
    guarded = gr.Guard(canaries=suite(), blob_store=blobs, checks=checks).wrap(client)
    guarded.client.learn(X[50:200], 1 - y[50:200])
    decision = guarded.self_improve()
    assert decision is not None and decision.deciding_finding is not None
    assert decision.deciding_finding.check == "drift_budget"


def test_unfitted_and_unrebuildable_estimators_are_refused() -> None:
    with pytest.raises(gr.ConfigError, match="not fitted"):
        SklearnOnlineClient(SGDClassifier(), blobs=gr.MemoryBlobStore())
    X, y = blobs_data()
    mlp = MLPClassifier(hidden_layer_sizes=(3,), random_state=0).partial_fit(X, y, classes=[0, 1])
    with pytest.raises(gr.ConfigError, match="WeightCodec"):
        SklearnOnlineClient(mlp, blobs=gr.MemoryBlobStore())


def test_unserialisable_learned_attributes_name_the_attribute() -> None:
    X, y = blobs_data()
    model = SGDClassifier(random_state=0).partial_fit(X, y, classes=[0, 1])
    model.calibrator_ = object()
    with pytest.raises(ValueError, match="'calibrator_'"):
        SklearnOnlineClient(model, blobs=gr.MemoryBlobStore())
    client = SklearnOnlineClient(model, blobs=gr.MemoryBlobStore(),
                                 codec=FittedAttributes(exclude=["calibrator_"]))
    assert "calibrator_" not in client.snapshot()["weights"]


def test_bad_input_is_refused() -> None:
    client = sklearn_client(gr.MemoryBlobStore())
    with pytest.raises(ValueError, match="4 features"):
        client.invoke(gr.Request(input=[1.0, 2.0]))


def test_an_openai_client_given_to_sklearn_names_the_openai_adapter() -> None:
    import openai

    with pytest.raises(AdapterMismatch) as caught:
        SklearnOnlineClient(openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9"),
                            blobs=gr.MemoryBlobStore())
    assert caught.value.suggestion == "openai"
    assert "'partial_fit()'" in str(caught.value)
