"""Client adapters: which vendor object fits which adapter, and the adapter plugins.

One module per vendor (``openai``, ``langchain``, ``dspy``, ``sklearn``,
``river``), each with its loopback test server or fake where it has one
(``openai_testing``, ``langchain_testing``); ``_adapting`` holds what they share.

This module imports no vendor package, so ``guardrails plugins`` lists every
adapter whether or not its extra is installed; the vendor is imported when an
adapter is built, and a missing extra is a ``PluginError`` that says which
``pip install`` fixes it.

Each adapter is a plugin (``openai``, ``langchain``, ``dspy``, ``sklearn``,
``river``) that contributes one adapter factory under its own name:
``factory(obj, **options) -> SelfUpdatingClient``. A factory also has
``fits(obj) -> bool`` (duck-typed, no import of the vendor) and ``missing(obj)
-> list[str]`` (what the object lacks). ``adapt(obj, **options)`` picks the
adapter that fits among the installed ones.

An object that does not fit raises ``AdapterMismatch``: it names the adapter,
the method or attribute that is missing, and the adapter that would fit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import guardrails as gr

__all__ = ["ADAPTERS", "AdapterMismatch", "AdapterSpec", "adapt", "require", "suggest_adapter"]


class AdapterMismatch(gr.ConfigError, TypeError):
    """An object was given to an adapter it does not fit.

    ``adapter`` names the adapter; ``missing`` lists what the object lacks;
    ``suggestion`` names the adapter that would fit, when one does.
    """

    def __init__(self, message: str, *, adapter: str, missing: tuple[str, ...] = (),
                 suggestion: str | None = None) -> None:
        super().__init__(message)
        self.adapter = adapter
        self.missing = missing
        self.suggestion = suggestion


@dataclass(frozen=True)
class AdapterSpec:
    """What one built-in adapter expects, for fitting checks and error messages."""

    name: str
    extra: str
    """The extra that installs its vendor package."""
    vendor: str
    """The vendor's import name (checked when the adapter is built)."""
    what: str
    """What kind of object it wraps, in words."""
    needs: tuple[str, ...]
    """Dotted attribute paths an object must have (callables end with ``()``)."""
    module: str
    """``guardrails_plugins`` module holding the adapter."""
    client: str
    """The adapter's client class, the factory's default target."""


ADAPTERS: dict[str, AdapterSpec] = {spec.name: spec for spec in (
    AdapterSpec("openai", "openai", "openai",
                "an OpenAI-compatible SDK client (openai.OpenAI or openai.AsyncOpenAI)",
                ("chat.completions.create()",), "guardrails_plugins.adapters.openai",
                "OpenAIChatClient"),
    AdapterSpec("langchain", "langchain", "langchain",
                "a LangChain chat model (BaseChatModel) to build an agent around",
                ("invoke()", "ainvoke()", "bind()", "_generate()"),
                "guardrails_plugins.adapters.langchain", "LangChainAgentClient"),
    AdapterSpec("dspy", "dspy", "dspy",
                "a DSPy program (dspy.Module)",
                ("dump_state()", "load_state()", "named_predictors()", "deepcopy()"),
                "guardrails_plugins.adapters.dspy", "DSPyProgramClient"),
    AdapterSpec("sklearn", "demo", "sklearn",
                "a fitted scikit-learn estimator that learns online (partial_fit)",
                ("partial_fit()", "get_params()", "set_params()", "predict()"),
                "guardrails_plugins.adapters.sklearn", "SklearnOnlineClient"),
    AdapterSpec("river", "river", "river",
                "a river online learner (learn_one)",
                ("learn_one()", "predict_one()", "clone()", "_get_params()"),
                "guardrails_plugins.adapters.river", "RiverOnlineClient"),
)}


def _has(obj: Any, need: str) -> bool:
    callable_ = need.endswith("()")
    current = obj
    for part in need.removesuffix("()").split("."):
        try:
            current = getattr(current, part)
        except Exception:
            return False
    return callable(current) if callable_ else True


def _missing(obj: Any, spec: AdapterSpec) -> list[str]:
    return [need for need in spec.needs if not _has(obj, need)]


def _is_compiled_agent(obj: Any) -> bool:
    return type(obj).__module__.startswith("langgraph") and _has(obj, "get_graph()")


def suggest_adapter(obj: Any, *, exclude: str | None = None) -> str | None:
    """The name of a built-in adapter whose needs ``obj`` meets (first in ``ADAPTERS`` order)."""
    for name, spec in ADAPTERS.items():
        if name != exclude and not _missing(obj, spec):
            return name
    return None


def _describe(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def require(obj: Any, adapter: str) -> None:
    """Raise ``AdapterMismatch`` unless ``obj`` has everything adapter ``adapter`` needs.

    The message names each missing method or attribute and the adapter that
    would fit instead (or says that none of the built-in ones does).
    """
    spec = ADAPTERS[adapter]
    missing = _missing(obj, spec)
    if not missing:
        return
    if adapter == "langchain" and _is_compiled_agent(obj):
        raise AdapterMismatch(
            f"the 'langchain' adapter got a compiled agent ({_describe(obj)}); its prompt and "
            "model cannot be read back from the graph. Pass the chat model, system_prompt and "
            "tools to LangChainAgentClient (it builds the agent with create_agent), or put "
            "GuardrailsMiddleware in your own create_agent(..., middleware=[...])",
            adapter=adapter, missing=tuple(missing), suggestion=None)
    suggestion = suggest_adapter(obj, exclude=adapter)
    lacks = ", ".join(f"'{m}'" for m in missing)
    message = (f"the {adapter!r} adapter wraps {spec.what}; {_describe(obj)} lacks {lacks}")
    if suggestion is not None:
        other = ADAPTERS[suggestion]
        message += (f". It looks like {other.what}: use the {suggestion!r} adapter "
                    f"({other.module}.{other.client})")
    else:
        message += (". None of the built-in adapters fits it; implement the SelfUpdatingClient "
                    "protocol (invoke, snapshot, propose_update, with_state) or write an "
                    "adapter plugin (docs/adapters.md)")
    raise AdapterMismatch(message, adapter=adapter, missing=tuple(missing), suggestion=suggestion)


# -- plugins --------------------------------------------------------------------------------


class AdapterSettings(gr.PluginSettings):
    """Adapters take their options when they wrap an object, not in the configuration."""


class AdapterFactory:
    """``factory(obj, **options)``: checks the fit, imports the adapter, builds its client."""

    def __init__(self, spec: AdapterSpec) -> None:
        self.spec = spec
        self.__name__ = spec.name

    def __repr__(self) -> str:
        return f"AdapterFactory({self.spec.name!r})"

    def fits(self, obj: Any) -> bool:
        return not _missing(obj, self.spec)

    def missing(self, obj: Any) -> list[str]:
        return _missing(obj, self.spec)

    def client_class(self) -> Any:
        return getattr(_import_adapter(self.spec), self.spec.client)

    def __call__(self, obj: Any, /, **options: Any) -> Any:
        require(obj, self.spec.name)
        return self.client_class()(obj, **options)


def _import_adapter(spec: AdapterSpec) -> Any:
    try:
        importlib.import_module(spec.vendor)
    except ImportError as exc:
        raise gr.PluginError(
            f"the {spec.name!r} adapter needs the {spec.vendor!r} package ({exc}); install it with "
            f"pip install 'guardrails-middleware[{spec.extra}]'", plugin=spec.name) from None
    return importlib.import_module(spec.module)


def _plugin(spec: AdapterSpec) -> gr.Plugin[AdapterSettings]:
    def build(settings: AdapterSettings) -> gr.PluginParts:
        _import_adapter(spec)  # a missing extra stops the build with the fix
        return gr.PluginParts(adapters={spec.name: AdapterFactory(spec)})

    return gr.Plugin(name=spec.name, settings=AdapterSettings, factory=build,
                     provides={"adapters"},
                     description=f"Client adapter: wraps {spec.what} as a self-updating client "
                                 f"(extra: {spec.extra})")


openai_plugin = _plugin(ADAPTERS["openai"])
langchain_plugin = _plugin(ADAPTERS["langchain"])
dspy_plugin = _plugin(ADAPTERS["dspy"])
sklearn_plugin = _plugin(ADAPTERS["sklearn"])
river_plugin = _plugin(ADAPTERS["river"])


def adapt(obj: Any, /, adapter: str | None = None, **options: Any) -> Any:
    """Wrap ``obj`` with the installed adapter plugin named ``adapter``, or the one that fits.

    Searches every plugin in ``guardrails.plugins`` that provides adapters
    (third-party ones too); an adapter factory without ``fits`` is only used
    by name. Raises ``AdapterMismatch`` when no adapter fits (naming what the
    closest built-in one misses) and ``PluginError`` when the adapter's extra
    is not installed.
    """
    factories = _installed_adapters()
    if adapter is not None:
        if adapter not in factories:
            raise gr.PluginError(f"no installed plugin provides an adapter named {adapter!r}; "
                                 f"installed adapters: {', '.join(sorted(factories)) or 'none'}",
                                 plugin=adapter)
        if adapter in ADAPTERS:
            require(obj, adapter)
        return factories[adapter](obj, **options)
    for factory in factories.values():
        fits: Callable[[Any], bool] | None = getattr(factory, "fits", None)
        if fits is not None and fits(obj):
            return factory(obj, **options)
    closest = min(ADAPTERS.values(), key=lambda spec: len(_missing(obj, spec)))
    require(obj, closest.name)  # raises, naming what the closest adapter misses
    # It fits a built-in adapter that did not build: its extra is missing.
    _import_adapter(closest)
    raise gr.PluginError(f"the {closest.name!r} adapter fits {_describe(obj)} but its plugin is "
                         "not installed; reinstall guardrails-middleware", plugin=closest.name)


def _installed_adapters() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, info in gr.installed_plugins().items():
        if not info.loaded or "adapters" not in info.provides:
            continue
        try:
            parts = gr.load_plugin(name).build()
        except gr.PluginError:
            continue  # an adapter whose extra is missing cannot fit anything
        found.update(parts.adapters)
    return found
