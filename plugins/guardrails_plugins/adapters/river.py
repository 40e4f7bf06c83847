"""Adapter for river online learners (``learn_one`` / ``predict_one``).

``RiverOnlineClient`` serves a river model; what it learns from the stream
becomes proposals. Its state::

    {"model": "river.compose.pipeline.Pipeline",
     "params": {...},                       # the constructor parameters, as JSON
     "weights": {"$blob": "sha256:..."},    # everything it learned, one JSON blob
     "updates": 3, ...}                     # accepted learning steps, application keys

The learned state is read from the model's attributes (never pickled): for
each river object, every attribute that is not a constructor parameter, and
the learned attributes of its parameters that are river objects (an
optimiser's iteration count), recursively through pipelines. Numbers,
strings, dicts (``dict``, ``defaultdict``, ``Counter``, river's
``VectorDict``) and river objects are supported, which covers the linear
models, the preprocessing scalers and pipelines of those; a model holding
anything else (a random generator in Gaussian naive Bayes, a Hoeffding
tree's nodes) is refused when it is wrapped, naming the attribute.

``learn(x, y)`` hands it labelled examples; ``propose_update()`` replays them
with ``learn_one`` on a *copy* and proposes the new learned state.
Hyperparameters are fixed by the model the client was given: a state whose
``params`` differ is refused when a client is built from it.
"""

from __future__ import annotations

import collections
import copy
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from river import base, compose, utils

import guardrails as gr

from . import require
from ._adapting import usable_json

__all__ = ["RiverOnlineClient", "learned_state", "load_learned_state"]

_SCALARS = (str, int, float, bool, type(None))


def _qualname(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _params_json(value: Any) -> Any:
    """Constructor parameters as JSON: a river object as ``{"class", "params"}``."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type) \
            and isinstance(value[1], dict):
        return {"class": f"{value[0].__module__}.{value[0].__qualname__}",
                "params": {k: _params_json(v) for k, v in value[1].items()}}
    if isinstance(value, dict):
        return {str(k): _params_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_params_json(v) for v in value]
    if isinstance(value, _SCALARS):
        return value
    return repr(value)


_MAP_KINDS: dict[str, type] = {"dict": dict, "ordered": collections.OrderedDict,
                               "counter": collections.Counter,
                               "defaultdict": collections.defaultdict,
                               "vectordict": utils.VectorDict}


def _map_kind(value: Any) -> str | None:
    if isinstance(value, utils.VectorDict):
        return "vectordict"
    if isinstance(value, collections.Counter):
        return "counter"
    if isinstance(value, collections.defaultdict):
        return "defaultdict"
    if isinstance(value, collections.OrderedDict):
        return "ordered"
    if type(value) is dict:
        return "dict"
    return None


def _encode(value: Any, path: str) -> Any:
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and value != value:
            raise ValueError(f"learned state at {path} is NaN")
        return value
    kind = _map_kind(value)
    if kind is not None:
        items = []
        for key, item in value.items():
            if not isinstance(key, _SCALARS):
                raise ValueError(f"learned state at {path} has a {type(key).__name__} key; only "
                                 "strings, numbers and booleans are supported")
            items.append([key, _encode(item, f"{path}[{key!r}]")])
        return {"$map": kind, "items": items}
    if isinstance(value, list):
        return {"$list": [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, base.Base):
        return {"$object": _qualname(value), "state": learned_state(value, path)}
    raise ValueError(f"learned state at {path} is a {_qualname(value)}, which the river adapter "
                     "cannot store; supported: numbers, strings, dicts and river objects")


def learned_state(model: Any, path: str = "model") -> dict[str, Any]:
    """Everything ``model`` learned, as JSON (see the module docstring); ``ValueError`` names
    the first attribute that cannot be stored."""
    if isinstance(model, compose.Pipeline):
        return {"steps": {name: _encode(step, f"{path}[{name!r}]")
                          for name, step in model.steps.items()}}
    params = model._get_params()
    out: dict[str, Any] = {}
    for name, value in vars(model).items():
        if name in params:
            if isinstance(value, base.Base):
                inner = learned_state(value, f"{path}.{name}")
                if inner:
                    out[name] = {"$object": _qualname(value), "state": inner}
            continue
        out[name] = _encode(value, f"{path}.{name}")
    return out


def _decode(value: Any, template: Any, path: str) -> Any:
    if not isinstance(value, dict):
        return value
    if "$list" in value:
        return [_decode(item, None, f"{path}[{i}]") for i, item in enumerate(value["$list"])]
    if "$object" in value:
        if template is None or _qualname(template) != value["$object"]:
            found = "nothing" if template is None else _qualname(template)
            raise ValueError(f"learned state at {path} is a {value['$object']}, but the model "
                             f"has {found} there")
        load_learned_state(template, value["state"], path)
        return template
    if "$map" in value:
        kind = value["$map"]
        if kind not in _MAP_KINDS:
            raise ValueError(f"learned state at {path}: unknown map kind {kind!r}")
        factory = getattr(template, "default_factory", None)
        if kind == "defaultdict":
            target: Any = collections.defaultdict(factory)
        elif kind == "vectordict" and isinstance(template, utils.VectorDict):
            target = template
            target.clear()
        else:
            target = _MAP_KINDS[kind]()
        for key, item in value["items"]:
            inner_template = factory() if callable(factory) else None
            target[key] = _decode(item, inner_template, f"{path}[{key!r}]")
        return target
    raise ValueError(f"learned state at {path} is an object without a type tag")


def load_learned_state(model: Any, state: Mapping[str, Any], path: str = "model") -> None:
    """Put ``state`` (from ``learned_state``) into a fresh ``model`` of the same structure."""
    if isinstance(model, compose.Pipeline):
        steps = state.get("steps", {})
        if set(steps) != set(model.steps):
            raise ValueError(f"learned state at {path} has steps {sorted(steps)}, the model has "
                             f"{sorted(model.steps)}")
        for name, encoded in steps.items():
            _decode(encoded, model.steps[name], f"{path}[{name!r}]")
        return
    for name, encoded in state.items():
        current = getattr(model, name, None)
        setattr(model, name, _decode(encoded, current, f"{path}.{name}"))


def default_respond(model: Any, x: dict[str, Any]) -> Any:
    """``model.predict_one(x)`` as a JSON value."""
    value = model.predict_one(x)
    return value.item() if hasattr(value, "item") else value


class RiverOnlineClient:
    """A river model as a ``SelfUpdatingClient``.

    ``model``: a river estimator or pipeline, usually already trained.
    ``blobs``: where the learned-state blob goes (give the guard the same
    store). ``respond(model, x) -> JSON``: the answer to one example
    (default ``predict_one``). ``epochs``: passes over the new examples per
    proposal. ``extra``: application keys kept in the state as they are.

    ``invoke(request)``: ``request.input`` is a dict of features. A
    prediction that is ``None`` (a model that has not learned enough to
    answer), NaN or infinite, or not JSON raises
    ``guardrails.UnusableResponseError``.
    """

    def __init__(self, model: Any, *, blobs: gr.BlobStore,
                 respond: Callable[[Any, dict[str, Any]], Any] = default_respond,
                 epochs: int = 1, extra: Mapping[str, Any] | None = None,
                 updates_key: str = "updates") -> None:
        require(model, "river")
        self._template = model.clone()
        self._blobs = blobs
        self.respond = respond
        self.epochs = int(epochs)
        self.updates_key = updates_key
        try:
            weights = self._dump(model)
        except ValueError as exc:
            raise gr.ConfigError(f"{type(model).__name__} cannot be wrapped: {exc}") from None
        state = {**dict(extra or {}), "model": _qualname(model),
                 "params": _params_json(model._get_params()), "weights": weights,
                 updates_key: 0}
        self._setup(state)
        probe = self._build(self._parsed())
        if self._dump(probe) != weights:
            raise gr.ConfigError(f"{type(model).__name__} does not round-trip through its learned "
                                 "state; it keeps something the river adapter cannot read")

    def _dump(self, model: Any) -> dict[str, str]:
        data = gr.canonical_json(learned_state(model))
        return gr.blob_ref(self._blobs.put(data))

    def _setup(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise ValueError("a river client state is a JSON object")
        missing = [k for k in ("model", "params", "weights", self.updates_key) if k not in state]
        if missing:
            raise ValueError(f"the state lacks {', '.join(missing)}")
        if state["model"] != _qualname(self._template):
            raise ValueError(f"state is for {state['model']!r}; this client serves "
                             f"{_qualname(self._template)}")
        template_params = _params_json(self._template._get_params())
        if gr.canonical_json(state["params"]) != gr.canonical_json(template_params):
            changed = sorted(k for k in set(template_params) | set(state["params"])
                             if template_params.get(k) != state["params"].get(k))
            raise ValueError(f"state 'params' differ from this client's model ({', '.join(changed)}); "
                             "river hyperparameters are fixed: wrap a model built with them")
        self._state = gr.canonical_json(dict(state))
        self._model = self._build(self._parsed())
        self._pending: list[tuple[dict[str, Any], Any]] = []
        self._lock = threading.Lock()

    def _parsed(self) -> dict[str, Any]:
        return json.loads(self._state)  # type: ignore[no-any-return]

    def _build(self, state: Mapping[str, Any]) -> Any:
        ref = state["weights"]
        if not (isinstance(ref, Mapping) and set(ref) == {"$blob"}):
            raise ValueError("state 'weights' must be one blob reference")
        learned = json.loads(self._blobs.get(ref["$blob"]))
        model = self._template.clone()
        load_learned_state(model, learned)
        return model

    # -- the protocol -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state with the learned state as it is *now* (a silent change shows up)."""
        state = self._parsed()
        state["weights"] = self._dump(self._model)
        return state

    def with_state(self, state: dict[str, Any]) -> RiverOnlineClient:
        clone = object.__new__(type(self))
        clone._template, clone._blobs = self._template, self._blobs
        clone.respond, clone.epochs, clone.updates_key = self.respond, self.epochs, self.updates_key
        clone._setup(state)
        return clone

    @property
    def model(self) -> Any:
        """The model serving this state (do not train it: use ``learn`` and proposals)."""
        return self._model

    def invoke(self, request: gr.Request) -> Any:
        if not isinstance(request.input, Mapping):
            raise ValueError(f"a river request input is a dict of features, got "
                             f"{type(request.input).__name__}")
        return usable_json("river", self.respond(self._model, dict(request.input)))

    # -- learning from the stream ---------------------------------------------------------

    def learn(self, x: Mapping[str, Any], y: Any) -> None:
        """Remember one labelled example for the next proposal (scratch memory, not state)."""
        with self._lock:
            self._pending.append((dict(x), copy.deepcopy(y)))

    def propose_update(self) -> gr.UpdateProposal | None:
        """Replay the examples learned since the last proposal on a copy; propose the result.
        Consumes those examples; the served model is untouched."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return None
        candidate = self._build(self._parsed())
        for _ in range(self.epochs):
            for x, y in pending:
                candidate.learn_one(x, y)
        return self.proposal_for(candidate, rationale=f"learned from {len(pending)} labelled "
                                 f"examples from the stream ({self.epochs} pass(es))")

    def proposal_for(self, candidate: Any, *, rationale: str = "", source: str = "model"
                     ) -> gr.UpdateProposal:
        """The proposal serving ``candidate``'s learned state: ``/weights`` and the counter."""
        state = self.snapshot()
        key = self.updates_key.replace("~", "~0").replace("/", "~1")
        return gr.UpdateProposal(
            parent=gr.state_version(state), kind="weights", source=source, rationale=rationale,
            patch=[{"op": "replace", "path": "/weights", "value": self._dump(candidate)},
                   {"op": "replace", "path": f"/{key}", "value": int(state[self.updates_key]) + 1}])
