"""Adapter for scikit-learn estimators that learn online (``partial_fit``).

``SklearnOnlineClient`` serves a fitted estimator; what it learns from the
stream becomes proposals. Its state::

    {"estimator": "sklearn.linear_model._stochastic_gradient.SGDClassifier",
     "params": {"alpha": 0.0001, ...},        # get_params(deep=False), the JSON ones
     "weights": {"coef_": {"$blob": "sha256:..."}, "t_": 12.0, ...},
     "updates": 3,                            # accepted learning steps
     ...}                                     # the application's own keys (``extra``)

Weights are blobs (``.npy``, never pickled) in the guard's blob store; a
``WeightCodec`` decides the layout: ``FittedAttributes`` (default) keeps
every public learned attribute, ``LinearWeights`` stacks ``coef_`` and
``intercept_`` into one matrix (for linear models with a constant step size;
the ``drift_budget`` plugin compares such blobs by L2 distance).

``learn(X, y)`` hands it labelled examples from the stream;
``propose_update()`` runs ``partial_fit`` on a *copy* and proposes the new
weights (``/weights`` and the update counter, nothing else). The estimator is
rebuilt for every state from a clone of the one it was given with the
state's ``params`` (so a ``/params`` change is a hyperparameter proposal).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import guardrails as gr

from . import require
from ._adapting import unusable, usable_json

__all__ = ["FittedAttributes", "LinearWeights", "SklearnOnlineClient", "WeightCodec",
           "array_from_npy", "npy_bytes"]


def npy_bytes(array: Any) -> bytes:
    """Deterministic ``.npy`` bytes of an array (never pickled)."""
    value = np.asarray(array)
    if value.dtype.kind in "fc":
        value = value.astype(value.dtype.newbyteorder("<"), copy=False)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
    return buffer.getvalue()


def array_from_npy(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes; pickled (object) arrays are refused."""
    return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]


@runtime_checkable
class WeightCodec(Protocol):
    """How learned parameters live in a state: JSON holding blob references."""

    def dump(self, estimator: Any, blobs: gr.BlobStore) -> Any:
        """The estimator's learned parameters as JSON, arrays stored in ``blobs``."""
        ...

    def load(self, estimator: Any, weights: Any, blobs: gr.BlobStore) -> None:
        """Set the learned parameters on a fresh (unfitted) estimator."""
        ...


class FittedAttributes:
    """Every public learned attribute (name ending in ``_``): numeric and text arrays as
    ``.npy`` blobs, lists of arrays as lists of blobs, numbers and strings inline.

    Private attributes (``_optimizer``, ``_loss_function_``) are not kept:
    ``partial_fit`` continues from the weights with fresh optimiser state.
    ``exclude`` skips attributes that are derived or not serialisable.
    """

    def __init__(self, exclude: Sequence[str] = ()) -> None:
        self.exclude = frozenset(exclude)

    def __repr__(self) -> str:
        return f"FittedAttributes(exclude={sorted(self.exclude)!r})"

    def _encode(self, name: str, value: Any, blobs: gr.BlobStore) -> Any:
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biufcU":
                return gr.blob_ref(blobs.put(npy_bytes(value)))
            if value.dtype.kind == "O" and all(isinstance(v, bool | int | float | str)
                                               for v in value.ravel().tolist()):
                return {"$objects": value.tolist()}
        if isinstance(value, list | tuple):
            return {"$list": [self._encode(name, item, blobs) for item in value]}
        raise ValueError(f"learned attribute {name!r} is a {type(value).__name__}, which has no "
                         "JSON or .npy form; pass FittedAttributes(exclude=[...]) or write a "
                         "WeightCodec for this estimator")

    def _decode(self, value: Any, blobs: gr.BlobStore) -> Any:
        if isinstance(value, dict) and set(value) == {"$blob"}:
            return array_from_npy(blobs.get(value["$blob"]))
        if isinstance(value, dict) and set(value) == {"$list"}:
            return [self._decode(item, blobs) for item in value["$list"]]
        if isinstance(value, dict) and set(value) == {"$objects"}:
            return np.array(value["$objects"], dtype=object)
        return value

    def dump(self, estimator: Any, blobs: gr.BlobStore) -> dict[str, Any]:
        return {name: self._encode(name, value, blobs)
                for name, value in sorted(vars(estimator).items())
                if name.endswith("_") and not name.startswith("_") and name not in self.exclude}

    def load(self, estimator: Any, weights: Any, blobs: gr.BlobStore) -> None:
        if not isinstance(weights, Mapping):
            raise ValueError("weights must be an object of learned attributes")
        for name, value in weights.items():
            if not (isinstance(name, str) and name.endswith("_") and not name.startswith("_")):
                raise ValueError(f"{name!r} is not a learned attribute (public, ending in '_')")
            setattr(estimator, name, self._decode(value, blobs))


class LinearWeights:
    """``coef_`` and ``intercept_`` as one ``.npy`` matrix (the intercept as the last column).

    For linear models with a constant step size: ``t_`` restarts at 1 on load
    and nothing else is kept, so the blob is the whole learned state.
    ``classes`` are set as ``classes_`` on load (classifiers).
    """

    def __init__(self, classes: Sequence[Any] | None = None) -> None:
        self.classes = None if classes is None else list(classes)

    def __repr__(self) -> str:
        return f"LinearWeights(classes={self.classes!r})"

    @staticmethod
    def encode(coef: np.ndarray, intercept: np.ndarray) -> bytes:
        """The blob: little-endian float64 ``[coef | intercept]``, one row per output."""
        coef2 = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        matrix = np.hstack([coef2, np.asarray(intercept, dtype=np.float64).reshape(-1, 1)])
        return npy_bytes(np.ascontiguousarray(matrix, dtype="<f8"))

    def dump(self, estimator: Any, blobs: gr.BlobStore) -> dict[str, str]:
        return gr.blob_ref(blobs.put(self.encode(estimator.coef_, estimator.intercept_)))

    def load(self, estimator: Any, weights: Any, blobs: gr.BlobStore) -> None:
        if not (isinstance(weights, Mapping) and set(weights) == {"$blob"}):
            raise ValueError("LinearWeights expects the weights to be one blob reference")
        matrix = array_from_npy(blobs.get(weights["$blob"]))
        if matrix.ndim != 2 or matrix.shape[1] < 2:
            raise ValueError(f"weights blob has shape {matrix.shape}; expected a matrix with "
                             "the intercept as its last column")
        if self.classes is not None:
            expected = 1 if len(self.classes) == 2 else len(self.classes)
            if matrix.shape[0] != expected:
                raise ValueError(f"weights blob has {matrix.shape[0]} rows; {len(self.classes)} "
                                 f"classes need {expected}")
            estimator.classes_ = np.array(self.classes)
        estimator.coef_ = np.array(matrix[:, :-1], dtype=np.float64, order="C")
        intercept = np.array(matrix[:, -1], dtype=np.float64)
        estimator.intercept_ = intercept
        estimator.n_features_in_ = int(matrix.shape[1] - 1)
        estimator.t_ = 1.0


def _qualname(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _json_params(estimator: Any) -> dict[str, Any]:
    """The constructor parameters that survive a JSON round trip (the others stay fixed)."""
    out: dict[str, Any] = {}
    for name, value in estimator.get_params(deep=False).items():
        plain = value.item() if isinstance(value, np.generic) else value
        if isinstance(plain, tuple):
            plain = list(plain)
        try:
            if json.loads(gr.canonical_json(plain)) == plain:
                out[name] = plain
        except (gr.ConfigError, TypeError, ValueError):
            continue
    return out


def default_respond(estimator: Any, x: np.ndarray) -> Any:
    """``estimator.predict`` on one sample, as a JSON value (a list for several outputs).

    Raises ``UnusableResponseError`` (``wrong_shape``) when ``predict`` does not
    return exactly one row for the one sample.
    """
    predictions = np.asarray(estimator.predict(x.reshape(1, -1)))
    if predictions.ndim == 0 or predictions.shape[0] != 1:
        raise unusable("sklearn", "wrong_shape",
                       f"predict() on one sample returned shape {predictions.shape}, not one row")
    value = predictions[0]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


Respond = Callable[[Any, np.ndarray], Any]


class SklearnOnlineClient:
    """A fitted scikit-learn estimator with ``partial_fit`` as a ``SelfUpdatingClient``.

    ``estimator``: fitted (``fit`` or ``partial_fit``). ``blobs``: where weight
    blobs go (give the guard the same store). ``codec``: how weights are
    stored (default ``FittedAttributes()``). ``classes``: passed to
    ``partial_fit`` (default: the estimator's ``classes_``, if any).
    ``respond(estimator, x) -> JSON``: the answer to one sample (default: the
    predicted value). ``epochs`` passes over the new examples per proposal,
    shuffled by ``seed``. ``extra``: application keys kept in the state as
    they are (a threshold, a description). ``updates_key`` names the counter.

    ``invoke(request)``: ``request.input`` is one sample's features (a list
    of numbers). A prediction that is ``None``, NaN or infinite (anywhere in
    it), not JSON (an array, an object) or of the wrong shape raises
    ``guardrails.UnusableResponseError``.
    """

    def __init__(self, estimator: Any, *, blobs: gr.BlobStore, codec: WeightCodec | None = None,
                 classes: Sequence[Any] | None = None, respond: Respond = default_respond,
                 epochs: int = 1, seed: int = 0, extra: Mapping[str, Any] | None = None,
                 updates_key: str = "updates") -> None:
        require(estimator, "sklearn")
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            raise gr.ConfigError(f"{type(estimator).__name__} is not fitted; fit it (or "
                                 "partial_fit it with classes=...) before wrapping it") from None
        if classes is None and getattr(estimator, "classes_", None) is not None:
            classes = list(np.asarray(estimator.classes_).tolist())
        codec = codec if codec is not None else FittedAttributes()
        state = {**dict(extra or {}), "estimator": _qualname(estimator),
                 "params": _json_params(estimator), "weights": codec.dump(estimator, blobs),
                 updates_key: 0}
        self._setup(clone(estimator), state, blobs, codec=codec, classes=classes,
                    respond=respond, epochs=epochs, seed=seed, updates_key=updates_key)
        self._probe(estimator)

    def _probe(self, original: Any) -> None:
        """Check the rebuilt estimator answers like the original (catches state the codec misses)."""
        n_features = getattr(original, "n_features_in_", None)
        if n_features is None:
            return
        probe = np.zeros((1, int(n_features)))
        try:
            same = np.array_equal(np.asarray(original.predict(probe)),
                                  np.asarray(self._model.predict(probe)))
            problem = "" if same else "it predicts differently"
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            raise gr.ConfigError(
                f"{type(original).__name__} rebuilt from its state with {self._codec!r} does not "
                f"answer like the original ({problem}); its predictions depend on attributes the "
                "codec does not keep: write a WeightCodec for it (docs/adapters.md)")

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, template: Any, blobs: gr.BlobStore,
                   **options: Any) -> SklearnOnlineClient:
        """A client serving ``state``, built on a clone of the (unfitted) ``template``."""
        client = object.__new__(cls)
        client._setup(clone(template), state, blobs, **options)
        return client

    def _setup(self, template: Any, state: Mapping[str, Any], blobs: gr.BlobStore, *,
               codec: WeightCodec | None = None, classes: Sequence[Any] | None = None,
               respond: Respond = default_respond, epochs: int = 1, seed: int = 0,
               updates_key: str = "updates") -> None:
        if not isinstance(state, Mapping):
            raise ValueError("a scikit-learn client state is a JSON object")
        missing = [key for key in ("estimator", "params", "weights", updates_key) if key not in state]
        if missing:
            raise ValueError(f"the state lacks {', '.join(missing)}")
        if state["estimator"] != _qualname(template):
            raise ValueError(f"state is for {state['estimator']!r}; this client serves "
                             f"{_qualname(template)}")
        self._template = template
        self._blobs = blobs
        self._codec = codec if codec is not None else FittedAttributes()
        self.classes = None if classes is None else list(classes)
        self.respond = respond
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.updates_key = updates_key
        self._state = gr.canonical_json(dict(state))  # a private, immutable copy (bytes)
        self._model = self._build(json.loads(self._state))
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()

    def _build(self, state: Mapping[str, Any]) -> Any:
        """A fresh estimator holding exactly the state's parameters and weights."""
        estimator = clone(self._template)
        params = state["params"]
        if not isinstance(params, Mapping):
            raise ValueError("state 'params' must be an object")
        try:
            estimator.set_params(**params)
            # partial_fit skips scikit-learn's parameter validation; a bad value must fail
            # here, in the sandbox, not at the first learning step.
            validate = getattr(estimator, "_validate_params", None)
            if callable(validate):
                validate()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"state 'params' do not apply: {exc}") from None
        self._codec.load(estimator, state["weights"], self._blobs)
        return estimator

    def _parsed(self) -> dict[str, Any]:
        return json.loads(self._state)  # type: ignore[no-any-return]

    # -- the protocol -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state, with the weights as they are *now* in the estimator (so a silent change
        to the weights shows up as a new version)."""
        state = self._parsed()
        state["weights"] = self._codec.dump(self._model, self._blobs)
        return state

    def with_state(self, state: dict[str, Any]) -> SklearnOnlineClient:
        """A new client on ``state`` (same template, codec and options); ``self`` is untouched."""
        clone_ = object.__new__(type(self))
        clone_._setup(self._template, state, self._blobs, codec=self._codec, classes=self.classes,
                      respond=self.respond, epochs=self.epochs, seed=self.seed,
                      updates_key=self.updates_key)
        return clone_

    @property
    def estimator(self) -> Any:
        """The estimator serving this state (do not fit it: use ``learn`` and proposals)."""
        return self._model

    def invoke(self, request: gr.Request) -> Any:
        x = np.asarray(request.input, dtype=np.float64)
        n_features = getattr(self._model, "n_features_in_", None)
        if x.ndim != 1 or (n_features is not None and x.shape[0] != n_features):
            raise ValueError(f"expected one sample of {n_features} features, got shape {x.shape}")
        return usable_json("sklearn", self.respond(self._model, x))

    # -- learning from the stream ---------------------------------------------------------

    def learn(self, X: Any, y: Any) -> None:
        """Remember labelled examples from the stream for the next proposal (scratch memory)."""
        X_ = np.asarray(X, dtype=np.float64)
        y_ = np.asarray(y)
        if X_.ndim == 1:
            X_, y_ = X_.reshape(1, -1), y_.reshape(1)
        if len(X_) != len(y_):
            raise ValueError(f"{len(X_)} samples but {len(y_)} labels")
        with self._lock:
            self._pending.append((X_.copy(), y_.copy()))

    def propose_update(self) -> gr.UpdateProposal | None:
        """``partial_fit`` a copy on the examples learned since the last proposal; propose its
        weights. Consumes those examples; the served estimator is untouched."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return None
        X = np.concatenate([x for x, _ in pending])
        y = np.concatenate([labels for _, labels in pending])
        state = self._parsed()
        rng = np.random.default_rng([self.seed, int(state[self.updates_key]) + 1])
        candidate = self.fit_candidate(X, y, epochs=self.epochs, rng=rng)
        return self.proposal_for(candidate, rationale=f"partial_fit on {len(y)} labelled "
                                 f"examples from the stream ({self.epochs} epoch(s))")

    def fit_candidate(self, X: np.ndarray, y: np.ndarray, *, epochs: int = 1,
                      rng: np.random.Generator | None = None) -> Any:
        """A copy of the served estimator, ``partial_fit`` on ``(X, y)`` ``epochs`` times
        (each pass in an order drawn from ``rng``)."""
        candidate = self._build(self._parsed())
        kwargs = {} if self.classes is None else {"classes": list(self.classes)}
        for _ in range(epochs):
            order = rng.permutation(len(y)) if rng is not None else np.arange(len(y))
            candidate.partial_fit(X[order], y[order], **kwargs)
        return candidate

    def proposal_for(self, candidate: Any, *, rationale: str = "", source: str = "model"
                     ) -> gr.UpdateProposal:
        """The proposal serving ``candidate``'s weights: ``/weights`` and the counter."""
        state = self.snapshot()
        weights = self._codec.dump(candidate, self._blobs)
        key = self.updates_key.replace("~", "~0").replace("/", "~1")
        return gr.UpdateProposal(
            parent=gr.state_version(state), kind="weights", source=source, rationale=rationale,
            patch=[{"op": "replace", "path": "/weights", "value": weights},
                   {"op": "replace", "path": f"/{key}", "value": int(state[self.updates_key]) + 1}])
