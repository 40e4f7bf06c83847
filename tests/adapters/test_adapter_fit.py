"""Adapters are plugins; an object that does not fit says what it lacks and what would fit."""

from __future__ import annotations

from typing import Any

import dspy
import openai
import pytest
from adapter_cases import generic_fake_model, river_model
from guardrails_plugins.adapters import ADAPTERS, AdapterMismatch, adapt, require, suggest_adapter
from sklearn.linear_model import SGDClassifier

import guardrails as gr

ADAPTER_NAMES = ["openai", "langchain", "dspy", "sklearn", "river"]


def vendor_objects() -> dict[str, Any]:
    return {
        "openai": openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1"),
        "langchain": generic_fake_model("ok"),
        "dspy": dspy.Predict("question -> answer"),
        "sklearn": SGDClassifier(),
        "river": river_model(),
    }


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_every_adapter_is_a_loaded_plugin_with_its_factory(name: str) -> None:
    """Registered in guardrails.plugins like any third-party plugin, providing one adapter."""
    info = gr.installed_plugins()[name]
    assert info.loaded and info.provides == ("adapters",)
    parts = gr.load_plugin(name).build()
    assert list(parts.adapters) == [name]


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_each_vendor_object_fits_exactly_its_adapter(name: str) -> None:
    obj = vendor_objects()[name]
    assert suggest_adapter(obj) == name
    for other in ADAPTER_NAMES:
        factory = gr.load_plugin(other).build().adapters[other]
        assert factory.fits(obj) is (other == name)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("given", ADAPTER_NAMES)
def test_a_mismatch_names_what_is_missing_and_the_adapter_that_fits(adapter: str,
                                                                     given: str) -> None:
    """Every wrong pairing fails with the missing methods and the right adapter's class."""
    if adapter == given:
        return
    obj = vendor_objects()[given]
    with pytest.raises(AdapterMismatch) as caught:
        gr.load_plugin(adapter).build().adapters[adapter](obj)
    error = caught.value
    assert isinstance(error, gr.ConfigError) and isinstance(error, TypeError)
    assert error.adapter == adapter and error.suggestion == given and error.missing
    message = str(error)
    for missing in error.missing:
        assert f"'{missing}'" in message
    assert f"use the {given!r} adapter" in message and ADAPTERS[given].client in message


def test_an_object_no_adapter_fits_says_so() -> None:
    with pytest.raises(AdapterMismatch, match="None of the built-in adapters fits") as caught:
        require(object(), "river")
    assert caught.value.suggestion is None
    with pytest.raises(AdapterMismatch, match="SelfUpdatingClient protocol"):
        adapt(object())


def test_adapt_picks_the_adapter_that_fits() -> None:
    client = adapt(vendor_objects()["dspy"], output_field="answer")
    assert type(client).__name__ == "DSPyProgramClient"
    blobs = gr.MemoryBlobStore()
    import numpy as np

    X = np.random.default_rng(0).normal(size=(20, 3))
    model = SGDClassifier(random_state=0).partial_fit(X, (X[:, 0] > 0).astype(int), classes=[0, 1])
    client = adapt(model, blobs=blobs)
    assert type(client).__name__ == "SklearnOnlineClient"
    assert isinstance(client, gr.SelfUpdatingClient)


def test_adapt_by_name_checks_the_fit_first() -> None:
    with pytest.raises(AdapterMismatch, match="'openai' adapter"):
        adapt(SGDClassifier(), adapter="openai", model="m")
    with pytest.raises(gr.PluginError, match="no installed plugin provides an adapter named"):
        adapt(SGDClassifier(), adapter="tensorflow")


def test_wrapping_a_raw_estimator_names_the_adapter_that_fits() -> None:
    """Guard.wrap of a bare scikit-learn estimator says which installed adapter would fit it."""
    import numpy as np

    model = SGDClassifier().fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    guard = gr.Guard(gr.FrozenConstraints(), [gr.CanaryCase(id="a", input=[0, 0, 0], expect=0)])
    with pytest.raises(gr.ConfigError, match="the installed adapter 'sklearn' fits it"):
        guard.wrap(model)
