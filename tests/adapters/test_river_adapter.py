"""The river adapter: learn_one learners whose stream updates are gated proposals."""

from __future__ import annotations

import json

import pytest
from adapter_cases import river_client, river_model, stream
from guardrails_plugins.adapters import AdapterMismatch
from guardrails_plugins.adapters.river import RiverOnlineClient
from river import linear_model, naive_bayes, optim

import guardrails as gr


def suite() -> list[gr.CanaryCase]:
    return [gr.CanaryCase(id=f"c{i}", input=x, expect=y) for i, (x, y) in
            enumerate(stream(seed=7, n=60))]


def test_the_learned_state_is_one_json_blob() -> None:
    blobs = gr.MemoryBlobStore()
    state = river_client(blobs).snapshot()
    assert state["model"] == "river.compose.pipeline.Pipeline"
    assert state["params"]["LogisticRegression"]["optimizer"]["class"] == "river.optim.sgd.SGD"
    learned = json.loads(blobs.get(state["weights"]["$blob"]))
    assert set(learned["steps"]) == {"StandardScaler", "LogisticRegression"}


def test_learning_from_the_stream_is_accepted() -> None:
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs, margin=0.05).wrap(river_client(blobs))
    for x, y in stream()[50:200]:
        guarded.client.learn(x, y)
    decision = guarded.self_improve()
    assert decision is not None and decision.accepted, decision
    assert guarded.state()["updates"] == 1


def test_learning_from_flipped_labels_is_rejected() -> None:
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs, margin=0.05).wrap(
        river_client(blobs, epochs=3))
    before = guarded.state()
    for x, y in stream()[50:200]:
        guarded.client.learn(x, not y)
    decision = guarded.self_improve()
    assert decision is not None and decision.verdict is gr.Verdict.REJECTED
    assert guarded.state() == before


def test_hyperparameter_changes_are_refused_in_the_sandbox() -> None:
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs).wrap(river_client(blobs))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/params/LogisticRegression/l2", "value": 1.0}]))
    assert decision.deciding_finding is not None and decision.deciding_finding.check == "sandbox"
    assert "hyperparameters are fixed" in decision.deciding_finding.message


def test_a_silent_learn_one_on_the_served_model_is_caught() -> None:
    blobs = gr.MemoryBlobStore()
    guarded = gr.Guard(canaries=suite(), blob_store=blobs).wrap(river_client(blobs))
    guarded.client.model.learn_one({"a": 1.0, "b": 1.0}, False)
    finding = guarded.check_integrity()
    assert finding is not None and finding.check == "silent_modification"


def test_a_single_linear_model_round_trips_exactly() -> None:
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    for x, y in stream()[:80]:
        model.learn_one(x, y)
    client = RiverOnlineClient(model, blobs=gr.MemoryBlobStore())
    rebuilt = client.with_state(client.snapshot())
    for x, _ in stream(seed=3, n=20):
        assert rebuilt.model.predict_proba_one(x) == model.predict_proba_one(x)


def test_models_with_state_it_cannot_store_are_refused_naming_it() -> None:
    model = naive_bayes.GaussianNB()
    for x, y in stream()[:20]:
        model.learn_one(x, y)
    with pytest.raises(gr.ConfigError, match=r"GaussianNB cannot be wrapped: .*random.Random"):
        RiverOnlineClient(model, blobs=gr.MemoryBlobStore())


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="dict of features"):
        river_client(gr.MemoryBlobStore()).invoke(gr.Request(input=[1.0, 2.0]))


def test_a_sklearn_estimator_given_to_river_names_the_sklearn_adapter() -> None:
    from sklearn.linear_model import SGDClassifier

    with pytest.raises(AdapterMismatch) as caught:
        RiverOnlineClient(SGDClassifier(), blobs=gr.MemoryBlobStore())
    assert caught.value.suggestion == "sklearn"
    assert "'learn_one()'" in str(caught.value)
    assert river_model() is not None
