"""Policy plugins: discovered through entry points, verified when loaded, built from settings.

A plugin is a ``Plugin`` object registered under the entry-point group
``guardrails.plugins`` (the built-in ones use the same group as any third
party). Loading verifies its shape; ``Plugin.build(settings)`` validates the
settings with the plugin's pydantic model and returns the ``PluginParts`` it
contributes: runtime middleware, static update checks, canary checkers and
client adapters. The core imports no concrete plugin.
"""

from __future__ import annotations

import difflib
import inspect
import json
import types
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from .._decision import Finding
from .._errors import ConfigError, GuardrailViolation
from .._messages import Request, Response
from ..canary import Checker
from ..chain import (
    AsyncHandler,
    Handler,
    StreamHit,
    StreamInput,
    StreamPolicy,
    is_async_only,
    validate_middlewares,
)
from ..gate import ReviewContext, UpdateCheck

PLUGIN_GROUP = "guardrails.plugins"
"""The entry-point group every plugin, built-in or third-party, is registered under."""

OnError = Literal["block", "allow"]
Facet = Literal["middleware", "checks", "checkers", "adapters"]

_FACETS: frozenset[str] = frozenset(get_args(Facet))
_ON_ERROR: frozenset[str] = frozenset(get_args(OnError))
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

_log = structlog.get_logger(__name__)

S = TypeVar("S", bound=BaseModel)


class PluginError(ConfigError):
    """A plugin could not be found, loaded, configured or built.

    ``plugin`` names it; ``setting`` is the first offending setting as a
    TOML-style path (``rules[0].op``, ``pointers."/a"``) when one setting was
    at fault; ``problems`` lists every ``(setting path, message)`` found, the
    path ``""`` for a rule over the settings as a whole.
    """

    def __init__(self, message: str, *, plugin: str, setting: str | None = None,
                 problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.setting = setting
        self.problems = problems


class PluginSettings(BaseModel):
    """Base class for plugin settings: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RuntimePolicySettings(PluginSettings):
    """Base class for the settings of a plugin that contributes runtime middleware."""

    on_error: OnError = "block"
    """What a crash of the policy's own code does to the call: ``block`` refuses it
    with a ``GuardrailViolation`` naming the plugin; ``allow`` lets it through
    unchecked by this policy and logs a warning."""


@dataclass(frozen=True)
class PluginParts:
    """What one built plugin contributes to a guard.

    ``middleware``: runtime links, in order (already wrapped by ``apply_on_error``
    when returned from ``Plugin.build``). ``checks``: static update checks
    (``UpdateCheck``). ``checkers``: canary checker classes by name.
    ``adapters``: client adapter factories by name.
    """

    middleware: Sequence[Any] = ()
    checks: Sequence[UpdateCheck] = ()
    checkers: Mapping[str, type[Checker]] = field(default_factory=dict)
    adapters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copies, so a factory that keeps a reference to what it returned cannot
        # change a guard's parts after they were verified.
        object.__setattr__(self, "middleware", tuple(self.middleware))
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "checkers", types.MappingProxyType(dict(self.checkers)))
        object.__setattr__(self, "adapters", types.MappingProxyType(dict(self.adapters)))

    def facets(self) -> frozenset[str]:
        """The names of the non-empty fields."""
        return frozenset(name for name in _FACETS if getattr(self, name))


def merge_parts(named: Iterable[tuple[str, PluginParts]]) -> PluginParts:
    """Concatenate the parts of several plugins, in order.

    Raises ``ConfigError`` naming both plugins when two contribute a checker
    or an adapter under the same name.
    """
    middleware: list[Any] = []
    checks: list[UpdateCheck] = []
    checkers: dict[str, type[Checker]] = {}
    adapters: dict[str, Callable[..., Any]] = {}
    owners: dict[tuple[str, str], str] = {}

    def claim(facet: str, key: str, plugin: str) -> None:
        if (facet, key) in owners:
            raise ConfigError(f"plugins {owners[facet, key]!r} and {plugin!r} both provide a "
                              f"{facet} named {key!r}; configure only one of them")
        owners[facet, key] = plugin

    for plugin, parts in named:
        middleware.extend(parts.middleware)
        checks.extend(parts.checks)
        for key, checker in parts.checkers.items():
            claim("checker", key, plugin)
            checkers[key] = checker
        for key, adapter in parts.adapters.items():
            claim("adapter", key, plugin)
            adapters[key] = adapter
    return PluginParts(middleware=middleware, checks=checks, checkers=checkers,
                       adapters=adapters)


@dataclass(frozen=True, eq=False)
class Plugin(Generic[S]):
    """A named factory with a pydantic settings model.

    Construct one at module level in the plugin's package and register it
    under the entry-point group ``guardrails.plugins``. Construction verifies
    the shape (so a broken plugin fails when it is loaded, never at first
    use) and raises ``PluginError``:

    - ``name``: lower-case letters, digits, ``_ . -``; the entry point's name.
    - ``settings``: a pydantic model class that forbids unknown keys
      (subclass ``PluginSettings``, or ``RuntimePolicySettings`` for runtime
      policies, which adds ``on_error``) and has a JSON schema.
    - ``factory``: called with one validated settings object, returns
      ``PluginParts``.
    - ``provides``: the ``PluginParts`` fields the factory may fill; a plugin
      providing ``middleware`` must have an ``on_error`` setting.
    """

    name: str
    settings: type[S]
    factory: Callable[[S], PluginParts]
    provides: Collection[Facet]
    description: str = ""

    def __post_init__(self) -> None:
        name = self.name
        if (not isinstance(name, str) or not 0 < len(name) <= 64 or not name[0].isalpha()
                or not set(name) <= _NAME_CHARS):
            raise PluginError(f"plugin name {name!r} is invalid; use lower-case letters, digits, "
                              "'_', '.' or '-', starting with a letter", plugin=str(name))
        settings = self.settings
        if not (isinstance(settings, type) and issubclass(settings, BaseModel)):
            raise PluginError(f"plugin {name!r}: settings must be a pydantic model class, got "
                              f"{settings!r}; subclass guardrails.PluginSettings", plugin=name)
        if settings.model_config.get("extra") != "forbid":
            raise PluginError(
                f"plugin {name!r}: settings model {settings.__name__} accepts unknown keys, so a "
                "typo in a configuration would pass silently; subclass guardrails.PluginSettings "
                "or set model_config = ConfigDict(extra='forbid')", plugin=name)
        try:
            settings.model_json_schema()
        except Exception as exc:
            raise PluginError(f"plugin {name!r}: settings model {settings.__name__} has no JSON "
                              f"schema ({type(exc).__name__}: {exc}); use JSON-compatible field "
                              "types", plugin=name) from None
        if not callable(self.factory):
            raise PluginError(f"plugin {name!r}: factory {self.factory!r} is not callable",
                              plugin=name)
        try:
            inspect.signature(self.factory).bind(None)
        except TypeError:
            raise PluginError(f"plugin {name!r}: factory {_qualname(self.factory)} does not accept "
                              "exactly one argument (the validated settings)", plugin=name) from None
        except ValueError:
            pass  # builtins without a signature: trust them
        try:
            provides = None if isinstance(self.provides, str) else frozenset(self.provides)
        except TypeError:
            provides = None
        if not provides or not provides <= _FACETS:
            raise PluginError(f"plugin {name!r}: provides={self.provides!r} must be a non-empty set "
                              f"of {', '.join(sorted(_FACETS))}", plugin=name)
        object.__setattr__(self, "provides", provides)
        if "middleware" in provides and "on_error" not in settings.model_fields:
            raise PluginError(f"plugin {name!r} provides middleware, so its settings need an "
                              "'on_error' field; subclass guardrails.RuntimePolicySettings",
                              plugin=name)
        if not isinstance(self.description, str):
            raise PluginError(f"plugin {name!r}: description must be a string", plugin=name)

    def settings_schema(self) -> dict[str, Any]:
        """The JSON schema of the settings (for editors, ``guardrails plugins`` and docs)."""
        return self.settings.model_json_schema()

    def validate_settings(self, settings: Mapping[str, Any] | BaseModel | None = None) -> S:
        """Validate ``settings`` with the plugin's model; ``PluginError`` names each bad key."""
        if isinstance(settings, self.settings):
            return settings
        if isinstance(settings, BaseModel):
            raise PluginError(f"plugin {self.name!r} takes {self.settings.__name__} settings, got "
                              f"{type(settings).__name__}", plugin=self.name)
        if settings is not None and not isinstance(settings, Mapping):
            raise PluginError(f"plugin {self.name!r}: settings must be a table (mapping), got "
                              f"{type(settings).__name__}", plugin=self.name)
        try:
            return self.settings.model_validate(dict(settings or {}))
        except ValidationError as exc:
            raise _settings_error(self.name, self.settings, exc) from None

    def build(self, settings: Mapping[str, Any] | BaseModel | None = None) -> PluginParts:
        """Validate the settings, run the factory and verify what it returned.

        Returns parts whose middleware is wrapped by ``apply_on_error`` with the
        configured ``on_error`` and whose checks name this plugin when they
        crash. Raises ``PluginError`` (a ``ConfigError``) naming the plugin for
        bad settings, a factory that raises, or parts of the wrong shape.
        """
        validated = self.validate_settings(settings)
        try:
            parts = self.factory(validated)
        except PluginError:
            raise
        except ConfigError as exc:
            # The factory said what to fix; keep its words and name the plugin.
            raise PluginError(f"plugin {self.name!r}: {exc}", plugin=self.name) from exc
        except Exception as exc:
            raise PluginError(f"plugin {self.name!r} failed to build: {type(exc).__name__}: {exc}",
                              plugin=self.name) from exc
        if not isinstance(parts, PluginParts):
            raise PluginError(f"plugin {self.name!r}: factory returned {type(parts).__name__}, "
                              "not PluginParts", plugin=self.name)
        undeclared = parts.facets() - frozenset(self.provides)
        if undeclared:
            raise PluginError(f"plugin {self.name!r} returned {', '.join(sorted(undeclared))} but "
                              f"declares provides={sorted(self.provides)}; declare every facet it "
                              "contributes", plugin=self.name)
        try:
            middleware = validate_middlewares(parts.middleware)
        except ConfigError as exc:
            raise PluginError(f"plugin {self.name!r}: {exc}", plugin=self.name) from None
        self._verify_checks(parts.checks)
        self._verify_checkers(parts.checkers)
        for key, adapter in parts.adapters.items():
            if not isinstance(key, str) or not key or not callable(adapter):
                raise PluginError(f"plugin {self.name!r}: adapter {key!r} must be a callable under "
                                  "a non-empty name", plugin=self.name)
        on_error = str(getattr(validated, "on_error", "block"))
        if on_error not in _ON_ERROR:
            raise PluginError(f"plugin {self.name!r}: on_error {on_error!r} must be 'block' or "
                              "'allow'", plugin=self.name, setting="on_error")
        return PluginParts(
            middleware=[apply_on_error(m, policy=self.name, on_error=on_error)  # type: ignore[arg-type]
                        for m in middleware],
            checks=[_PluginCheck(self.name, check) for check in parts.checks],
            checkers=parts.checkers, adapters=parts.adapters)

    def _verify_checks(self, checks: Sequence[Any]) -> None:
        for position, check in enumerate(checks):
            name = getattr(check, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {self.name!r}: update check #{position} ({check!r}) has "
                                  "no 'name' string", plugin=self.name)
            if not callable(check):
                raise PluginError(f"plugin {self.name!r}: update check {name!r} is not callable",
                                  plugin=self.name)
            try:
                inspect.signature(check).bind(None)
            except TypeError:
                raise PluginError(f"plugin {self.name!r}: update check {name!r} does not accept "
                                  "exactly one argument (the ReviewContext)",
                                  plugin=self.name) from None
            except ValueError:
                pass

    def _verify_checkers(self, checkers: Mapping[str, Any]) -> None:
        for key, checker in checkers.items():
            if not (isinstance(checker, type) and issubclass(checker, Checker)):
                raise PluginError(f"plugin {self.name!r}: checker {key!r} must be a subclass of "
                                  f"guardrails.Checker, got {checker!r}", plugin=self.name)
            if checker.name != key:
                raise PluginError(f"plugin {self.name!r}: checker class {checker.__name__} is named "
                                  f"{checker.name!r} but registered as {key!r}; use one name",
                                  plugin=self.name)


def _qualname(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", repr(obj)))


# -- settings errors -------------------------------------------------------------------


def _format_loc(loc: Sequence[int | str]) -> str:
    """A setting's path as a TOML reader would write it: ``rules[0].op``, ``pointers."/a"``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        key = part if part and set(part) <= _BARE_KEY else json.dumps(part)
        path += f".{key}" if path else key
    return path


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The setting names accepted at ``loc`` (for "did you mean"), or [] when unknown."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None:
            return []
        info = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        current = None if info is None else _model_in(info.annotation)
    if current is None:
        return []
    return [info.alias or key for key, info in current.model_fields.items()]


def _settings_error(plugin: str, model: type[BaseModel], exc: ValidationError) -> PluginError:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        path = _format_loc(loc)
        if error["type"] == "extra_forbidden":
            known = _keys_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message = "unknown setting" + (f"; did you mean {close[0]!r}?" if close else "")
            if known:
                message += f" (known: {', '.join(sorted(known))})"
        elif error["type"] == "missing":
            message = "required setting is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append((path, message))
    def line(path: str, message: str) -> str:
        # A whole-model rule (``set a or b``) has no single setting to point at.
        return f"setting {path!r}: {message}" if path else message

    if len(problems) == 1:
        text = f"plugin {plugin!r}: {line(*problems[0])}"
    else:
        text = f"plugin {plugin!r}: {len(problems)} invalid settings:" + "".join(
            f"\n  {line(path, message)}" for path, message in problems)
    return PluginError(text, plugin=plugin, setting=problems[0][0] or None,
                       problems=tuple(problems))


# -- discovery -------------------------------------------------------------------------


class PluginInfo(BaseModel):
    """What ``installed_plugins`` knows about one registered plugin."""

    model_config = ConfigDict(frozen=True)

    name: str
    entry_point: str
    """The entry point's target, ``module:attribute``."""
    distribution: str | None = None
    """The distribution that registers it, and its version."""
    version: str | None = None
    description: str = ""
    provides: tuple[str, ...] = ()
    settings_schema: dict[str, Any] | None = None
    error: str | None = None
    """Why the plugin failed to load; ``None`` when it loaded."""

    @property
    def loaded(self) -> bool:
        return self.error is None


def _entry_points() -> dict[str, list[Any]]:
    from importlib.metadata import entry_points

    found: dict[str, list[Any]] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        same = found.setdefault(ep.name, [])
        # The same distribution can be visible twice on sys.path (an editable
        # install next to a build); one target registered twice is one plugin.
        if all(other.value != ep.value for other in same):
            same.append(ep)
    return found


def _dist(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return str(dist.metadata["Name"]), str(dist.version)


def load_plugin(name: str) -> Plugin[Any]:
    """Find the plugin registered as ``name``, import it and verify its shape.

    The entry point must resolve to a ``Plugin`` or to a zero-argument
    factory returning one, named like the entry point. Raises
    ``PluginError``: an unknown name lists the installed plugins; a name
    registered by two different targets is refused (one could shadow the
    other); an import or factory that raises is reported with the plugin's
    name and target.
    """
    registered = _entry_points()
    matches = registered.get(name, [])
    if not matches:
        installed = sorted(registered)
        close = difflib.get_close_matches(name, installed, n=1)
        raise PluginError(
            f"unknown plugin {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            + f" Installed plugins: {', '.join(installed) if installed else 'none'}",
            plugin=name)
    if len(matches) > 1:
        targets = "; ".join(f"{ep.value} ({_dist(ep)[0] or 'unknown distribution'})"
                            for ep in matches)
        raise PluginError(f"plugin {name!r} is registered more than once ({targets}); uninstall "
                          "all but one so a plugin cannot be shadowed", plugin=name)
    ep = matches[0]
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} ({ep.value}) failed to load: "
                          f"{type(exc).__name__}: {exc}", plugin=name) from exc
    if not isinstance(obj, Plugin):
        if not callable(obj) or isinstance(obj, type):
            raise PluginError(f"plugin {name!r}: entry point {ep.value} is {obj!r}, not a "
                              "guardrails.Plugin or a factory returning one", plugin=name)
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"plugin {name!r}: factory {ep.value} raised "
                              f"{type(exc).__name__}: {exc}", plugin=name) from exc
        if not isinstance(obj, Plugin):
            raise PluginError(f"plugin {name!r}: factory {ep.value} returned "
                              f"{type(obj).__name__}, not a guardrails.Plugin", plugin=name)
    if obj.name != name:
        raise PluginError(f"entry point {name!r} ({ep.value}) resolves to a plugin named "
                          f"{obj.name!r}; register it under its own name", plugin=name)
    return obj


def installed_plugins() -> dict[str, PluginInfo]:
    """Every plugin registered in ``guardrails.plugins``, by name, each loaded and described.

    Never raises for a broken plugin: its ``PluginInfo.error`` says why it
    failed to load, exactly as ``load_plugin`` would.
    """
    infos: dict[str, PluginInfo] = {}
    for name, eps in sorted(_entry_points().items()):
        distribution, version = _dist(eps[0])
        base: dict[str, Any] = {"name": name, "entry_point": eps[0].value,
                                "distribution": distribution, "version": version}
        try:
            plugin = load_plugin(name)
        except PluginError as exc:
            infos[name] = PluginInfo(**base, error=str(exc))
            continue
        infos[name] = PluginInfo(**base, description=plugin.description,
                                 provides=tuple(sorted(plugin.provides)),
                                 settings_schema=plugin.settings_schema())
    return infos


# -- on_error around runtime middleware ------------------------------------------------


class _Downstream:
    """Per-call record of what the rest of the chain did, so a failure of the
    policy's own code is told apart from a failure of the model behind it."""

    __slots__ = ("error", "response")

    def __init__(self) -> None:
        self.response: Response | None = None
        self.error: BaseException | None = None


class _Boundary:
    def __init__(self, middleware: Any, policy: str, on_error: OnError) -> None:
        self.middleware = middleware
        self.policy = policy
        self.on_error = on_error
        self.__name__ = policy

    def __repr__(self) -> str:
        return f"apply_on_error({self.middleware!r}, policy={self.policy!r}, " \
               f"on_error={self.on_error!r})"

    def _failed(self, exc: Exception, seen: _Downstream) -> None:
        """Log the failure; raise for ``block`` or when there is nothing to pass through."""
        error = f"{type(exc).__name__}: {exc}"
        if self.on_error == "allow":
            _log.warning("guardrails.plugin_failed", plugin=self.policy, on_error="allow",
                         error=error)
            if seen.error is not None:
                # The model behind the policy failed too; its error is never swallowed.
                raise seen.error
            return
        _log.error("guardrails.plugin_failed", plugin=self.policy, on_error="block", error=error)
        message = (f"policy plugin {self.policy!r} failed ({error}); on_error='block' refuses the "
                   "call: fix the plugin, or set on_error='allow' to let calls through when it fails")
        finding = Finding(check=self.policy, passed=False, message=message,
                          evidence={"error": type(exc).__name__, "on_error": "block"})
        raise GuardrailViolation(message, policy=self.policy, findings=(finding,)) from exc


    def streaming(self) -> StreamPolicy | None:
        """The wrapped middleware's streaming side, its own failures handled by ``on_error``."""
        offer = getattr(self.middleware, "streaming", None)
        policy = offer() if callable(offer) else None
        if not isinstance(policy, StreamPolicy):
            return policy  # None (no streaming side), or malformed: the guard says which
        before = policy.before
        return StreamPolicy(name=policy.name,
                            checks=tuple(_GuardedCheck(check, self) for check in policy.checks),
                            before=None if before is None else _GuardedBefore(before, self))


class _GuardedBefore:
    """A stream policy's input side under its plugin's ``on_error`` (``allow``: the request
    passes unchanged)."""

    def __init__(self, before: Callable[[Request], Request | StreamInput],
                 boundary: _Boundary) -> None:
        self.before, self.boundary = before, boundary

    def __call__(self, request: Request) -> Request | StreamInput:
        try:
            return self.before(request)
        except GuardrailViolation:
            raise
        except Exception as exc:
            self.boundary._failed(exc, _Downstream())
            return request


class _GuardedCheck:
    """A stream check under its plugin's ``on_error`` (``allow``: no hits where it failed)."""

    def __init__(self, check: Any, boundary: _Boundary) -> None:
        self.check, self.boundary = check, boundary
        # Copied as declared; the guard validates them when it is built.
        self.max_span: Any = getattr(check, "max_span", "missing")
        self.channels: Any = getattr(check, "channels", None)

    def find(self, text: str, pos: int, offset: int) -> list[StreamHit]:
        try:
            return list(self.check.find(text, pos, offset))
        except GuardrailViolation:
            raise
        except Exception as exc:
            self.boundary._failed(exc, _Downstream())
            return []


class _SyncBoundary(_Boundary):
    def __call__(self, request: Request, call_next: Handler) -> Response:
        seen = _Downstream()

        def downstream(inner: Request) -> Response:
            try:
                seen.response = call_next(inner)
            except BaseException as exc:
                seen.error = exc
                raise
            return seen.response

        try:
            response: Response = self.middleware(request, downstream)
            return response
        except GuardrailViolation:
            raise
        except Exception as exc:
            if exc is seen.error:
                raise
            self._failed(exc, seen)
        return seen.response if seen.response is not None else call_next(request)


class _AsyncMixin(_Boundary):
    async def _acall(self, target: Any, request: Request, call_next: AsyncHandler) -> Response:
        seen = _Downstream()

        async def downstream(inner: Request) -> Response:
            try:
                seen.response = await call_next(inner)
            except BaseException as exc:
                seen.error = exc
                raise
            return seen.response

        try:
            response: Response = await target(request, downstream)
            return response
        except GuardrailViolation:
            raise
        except Exception as exc:
            if exc is seen.error:
                raise
            self._failed(exc, seen)
        return seen.response if seen.response is not None else await call_next(request)


class _DualBoundary(_SyncBoundary, _AsyncMixin):
    def acall(self, request: Request, call_next: AsyncHandler) -> Coroutine[Any, Any, Response]:
        # Hands back ``_acall``'s coroutine instead of awaiting it in one of its own: the
        # caller awaits the same thing, through one coroutine frame per call, not two.
        return self._acall(self.middleware.acall, request, call_next)


class _AsyncBoundary(_AsyncMixin):
    async def __call__(self, request: Request, call_next: AsyncHandler) -> Response:
        target = getattr(self.middleware, "acall", self.middleware)
        return await self._acall(target, request, call_next)


def apply_on_error(middleware: Any, *, policy: str, on_error: OnError = "block") -> Any:
    """Wrap a runtime middleware so a crash of its own code follows ``on_error``.

    A ``GuardrailViolation`` it raises on purpose passes unchanged, and so
    does any error from the rest of the chain (the model's errors are never
    swallowed). Any other exception from the middleware itself is:

    - ``"block"``: logged and raised as ``GuardrailViolation(policy=policy)``;
    - ``"allow"``: logged as a warning, and the call continues as if the
      policy were absent (the response the rest of the chain already gave is
      returned; the model is never called twice).

    The wrapper keeps the middleware's shape: sync-only, async-only, or both
    (``__call__`` and ``acall``), so the chain treats it exactly as the original.
    """
    if on_error not in _ON_ERROR:
        raise ConfigError(f"on_error {on_error!r} for policy {policy!r}: use 'block' or 'allow'")
    if is_async_only(middleware):
        return _AsyncBoundary(middleware, policy, on_error)
    if getattr(middleware, "acall", None) is not None:
        return _DualBoundary(middleware, policy, on_error)
    return _SyncBoundary(middleware, policy, on_error)


# -- update checks named by their plugin -----------------------------------------------


class _PluginCheck:
    """An update check that names its plugin when it crashes (the proposal is then rejected).

    Other attributes are the wrapped check's (``check``), so an application
    can reach what a plugin's check exposes.
    """

    def __init__(self, plugin: str, check: UpdateCheck) -> None:
        self.plugin = plugin
        self.check = check
        self.name = check.name

    def __call__(self, context: ReviewContext) -> list[Finding]:
        try:
            return list(self.check(context))
        except Exception as exc:
            return [Finding(check=self.name, passed=False,
                            message=f"plugin {self.plugin!r}: update check {self.name!r} raised "
                                    f"{type(exc).__name__}: {exc}; the proposal is rejected",
                            evidence={"plugin": self.plugin, "error": type(exc).__name__})]

    def __getattr__(self, name: str) -> Any:
        if name == "check":  # not yet set (copy, pickle): never recurse
            raise AttributeError(name)
        return getattr(self.check, name)

    def __repr__(self) -> str:
        return repr(self.check)


def fitting_adapters(obj: Any) -> list[str]:
    """Names of the installed adapters whose ``fits(obj)`` says they can wrap ``obj``.

    For error messages only: never raises; a plugin that fails to load or an
    adapter without ``fits`` is skipped.
    """
    names = []
    for name, info in installed_plugins().items():
        if info.error or "adapters" not in info.provides:
            continue
        try:
            adapters = load_plugin(name).build().adapters
            for key, factory in adapters.items():
                fits = getattr(factory, "fits", None)
                if callable(fits) and fits(obj) is True:
                    names.append(key)
        except Exception:
            continue
    return names
