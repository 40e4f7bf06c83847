"""``guardrails.toml``: one validated file for everything that judges a model.

Every mistake is caught when the file is loaded, with the file, the key path
and the fix in the message; unknown keys are errors with a "did you mean".
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import ConfigError
from .gate import ProposalLimits
from .rollout import RolloutPolicy


class _Section(BaseModel):
    # strict: a number or a boolean written as a string ("0.02", "no") is an error, as the
    # schema (`guardrails config schema`) says, never silently converted.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class GuardSettings(_Section):
    """``[guard]``: limits of the update gate and the runtime path."""

    margin: float = Field(default=0.0, ge=0.0, le=1.0)
    """How far the candidate's capability pass rate may fall below the incumbent's."""
    case_timeout: float = Field(default=10.0, gt=0)
    """Seconds a candidate gets to build and to answer one case."""
    integrity_check_every: int = Field(default=1000, ge=0)
    """Snapshot the served client every N calls (0: only around reviews)."""
    on_silent_modification: Literal["restore", "block"] = "restore"
    capture_content: Literal["true", "false", "NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY",
                             "SPAN_AND_EVENT"] | None = None
    """GenAI message content capture; ``None`` reads the OpenTelemetry environment variable."""
    seed: int | None = None
    """Fixes the canary order and hidden draw (default: a fresh seed per review, recorded)."""
    stream_max_held: int = Field(default=1_048_576, ge=0)
    """Bytes a stream may hold back for the output policies; past it the stream fails
    closed (0: no cap)."""


class SandboxSettings(_Section):
    """``[sandbox]``: where candidates are evaluated, and the process sandbox's limits."""

    mode: Literal["inline", "process"] = "inline"
    """``inline``: in this process, timeouts only (trusted clients); ``process``: a child
    process per review under the limits below."""
    wall_time: float = Field(default=10.0, gt=0)
    """Seconds per call inside the sandbox."""
    cpu_time: float = Field(default=60.0, gt=0)
    """CPU seconds per sandbox process."""
    memory: int = Field(default=2 * 1024**3, gt=0)
    """Bytes of address space per sandbox process."""
    startup: float = Field(default=30.0, gt=0)
    """Seconds the sandbox may take to start."""
    isolation: Literal["strict", "best_effort", "off"] = "strict"
    """``strict``: refuse to evaluate when a jail layer cannot be set up (the error names it);
    ``best_effort``: evaluate with the layers this kernel allows, recording the missing ones;
    ``off``: resource limits only (no namespaces, Landlock or seccomp)."""
    max_processes: int = Field(default=64, ge=4, le=4096)
    """Processes and threads a sandbox child may hold at once."""
    read_paths: list[str] = []
    """More files or folders the candidate may read (relative paths: from this file's folder)."""
    write_paths: list[str] = []
    """Folders the candidate may also write (relative paths: from this file's folder)."""
    env: list[str] = []
    """Names of environment variables passed to the candidate; every other one stays out."""
    network: list[str] = []
    """``host:port`` endpoints the candidate may reach (its model endpoint); nothing else is.
    Empty: no network at all."""
    warm: bool = True
    """Fork each child from a pre-started template process (``false``: a fresh interpreter
    per candidate, slower)."""


class DecisionSettings(_Section):
    """``[decision]``: how canary evidence becomes a verdict."""

    rule: Literal["margin", "sequential"] = "margin"
    """``margin``: pass rates compared within ``[guard] margin``; ``sequential``: the exact
    paired non-inferiority test with anytime-valid early stopping (``SequentialRule``)."""
    margin: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Sequential rule: the largest acceptable drop in capability pass rate."""
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    required_improvement: float = Field(default=0.0, ge=0.0, lt=1.0)
    slice_margin: float | None = Field(default=None, ge=0.0, lt=1.0)
    max_safety_failure_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    design: Literal["sequential", "anytime", "fixed"] = "sequential"
    """``sequential``: group-sequential where calibrated (margin or slice margin 0.05 or 0.1,
    alpha 0.05, 0.025 or 0.01), else anytime-valid; ``anytime``: the e-process only;
    ``fixed``: the exact fixed-n test."""


class PointerSettings(_Section):
    """A frozen or mutable pointer as a table: ``{ path = "/memory/rules", may_be_absent = true }``."""

    path: str
    may_be_absent: bool = False
    """The path may match nothing in the state yet; without this, a pointer that matches
    nothing when the guard wraps the client is a configuration error."""


class DriftPointerSettings(_Section):
    """A drift pointer's budget as a table: ``{ budget = 0.2, may_be_absent = true }``."""

    budget: float = Field(ge=0.0)
    may_be_absent: bool = False
    """The path may match nothing in the state yet (see ``PointerSettings``)."""


class ConstraintSettings(_Section):
    """``[constraints]``: frozen pointers, mutable scope and drift budget."""

    frozen: list[str | PointerSettings] = []
    mutable: list[str | PointerSettings] | None = None
    drift_budget: float | None = Field(default=None, ge=0.0)
    drift_pointers: dict[str, float | DriftPointerSettings] = {}
    drift_blobs: Literal["digest", "l2"] = "digest"


class DaskClusterSettings(_Section):
    """``[canaries.dask]``: evaluate the cases on a Dask cluster (see docs/deployment.md)."""

    scheduler: str = Field(min_length=1)
    """The scheduler's address, e.g. ``tcp://10.0.0.5:8786``."""
    build: str
    """``"package.module:callable"`` importable on every worker: ``build(state, blobs)``
    returns the client serving ``state``; ``blobs`` is the store ``[blobs] url`` names."""
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("build")
    @classmethod
    def _build_form(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr:
            raise ValueError(f"{value!r} is not 'package.module:callable'")
        return value


class RayClusterSettings(_Section):
    """``[canaries.ray]``: evaluate the cases on a Ray cluster (see docs/deployment.md)."""

    address: str = Field(min_length=1)
    """The cluster's ``HOST:PORT`` (its GCS), ``ray://HOST:PORT`` or ``auto``."""
    build: str
    """As in ``[canaries.dask]``: ``"package.module:callable"`` importable on every worker."""
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("build")
    @classmethod
    def _build_form(cls, value: str) -> str:
        return DaskClusterSettings._build_form(value)


class CanarySettings(_Section):
    """``[canaries]``: JSONL case files, relative to the configuration file."""

    files: list[str] = Field(min_length=1)
    concurrency: int = Field(default=16, ge=1, le=1024)
    batch_size: int = Field(default=32, ge=1)
    retries: int = Field(default=2, ge=0, le=10)
    retry_budget: int = Field(default=32, ge=0)
    hidden_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    smoke_cases: int = Field(default=4, ge=0)
    gaming_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    dask: DaskClusterSettings | None = None
    ray: RayClusterSettings | None = None

    @model_validator(mode="after")
    def _one_cluster(self) -> CanarySettings:
        if self.dask is not None and self.ray is not None:
            raise ValueError("[canaries.dask] and [canaries.ray] both name a cluster; keep one")
        return self


class BlobSettings(_Section):
    """``[blobs]``: the blob store, by URL; credentials never here (see docs/deployment.md)."""

    url: str = Field(min_length=1)
    """``file://PATH`` or a folder relative to the configuration file; ``postgresql://...``
    (the ledger's database: password in PGPASSWORD or ~/.pgpass); ``s3://BUCKET/PREFIX``
    (keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws)."""
    schema_: str | None = Field(default=None, alias="schema")
    """PostgreSQL only: the schema of the blob tables."""
    endpoint: str | None = None
    """S3 only: the service URL of a store other than AWS (default: AWS_ENDPOINT_URL_S3 or
    AWS_ENDPOINT_URL, else AWS)."""
    region: str | None = None
    """S3 only (default: AWS_REGION, else us-east-1)."""
    cache_dir: str | None = None
    """S3 and PostgreSQL only: a local folder (relative to the configuration file) caching the
    blobs read, verified on every read, so a follower fetches a promoted state's weights once."""
    cache_max_bytes: int = Field(default=1 << 30, ge=1)
    """The most the cache folder holds; the least recently used blobs go first."""

    @model_validator(mode="after")
    def _options_fit(self) -> BlobSettings:
        lowered = self.url.lower()
        if "://" in lowered and not lowered.startswith(
                ("file://", "s3://", "postgresql://", "postgres://")):
            # The scheme only: the rest of a URL may hold a password.
            raise ValueError(f"the blob store URL has an unknown scheme "
                             f"{lowered.split('://', 1)[0] + '://'!r}; use file://PATH, "
                             "postgresql://USER@HOST/DB or s3://BUCKET/PREFIX")
        if self.cache_dir is not None and not lowered.startswith(
                ("s3://", "postgresql://", "postgres://")):
            raise ValueError("cache_dir applies to a remote (s3:// or postgresql://) blob store "
                             "only: a local folder needs no cache; remove it")
        if self.schema_ is not None and not lowered.startswith(("postgresql://", "postgres://")):
            raise ValueError("schema applies to a postgresql:// blob store only; remove it")
        for key, value in (("endpoint", self.endpoint), ("region", self.region)):
            if value is not None and not lowered.startswith("s3://"):
                raise ValueError(f"{key} applies to an s3:// blob store only; remove it")
        return self

    def options(self) -> dict[str, Any]:
        """The store's keyword arguments (those set)."""
        given = {"schema": self.schema_, "endpoint": self.endpoint, "region": self.region}
        return {key: value for key, value in given.items() if value is not None}


class LedgerSettings(_Section):
    """``[ledger]``: where decisions, states and blobs live."""

    path: str = ".guardrails/ledger.db"
    """SQLite file, relative to the configuration file; or a ``postgresql://`` URL, the store
    several replicas share (keep its password in PGPASSWORD or ~/.pgpass, not here)."""
    blobs: str = ".guardrails/blobs"
    """Blob directory, relative to the configuration file."""
    signing_key: str | None = None
    """Ed25519 key file (``guardrails ledger keygen``) that signs a checkpoint after every
    append; relative to the configuration file."""
    verifier_key: str | None = None
    """Public key file that the stored checkpoint must verify with on open (default: the key
    recorded when the ledger was first signed)."""
    schema_: str | None = Field(default=None, alias="schema")
    """PostgreSQL only: the schema holding the ledger's tables (default: the search path's
    first, normally ``public``)."""
    poll_interval: float | None = Field(default=None, gt=0)
    """PostgreSQL only: seconds between polls of the served version, so the longest a replica
    misses a promotion whose notification was lost (default 1.0)."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds to wait for the ledger's write lock (and, for PostgreSQL, to connect and for
    each statement) before failing with a clear error (default: 30 for SQLite, 10 for
    PostgreSQL)."""

    @model_validator(mode="after")
    def _postgres_only(self) -> LedgerSettings:
        from .ledger import is_postgres_url

        if not is_postgres_url(self.path):
            for key, value in (("schema", self.schema_), ("poll_interval", self.poll_interval)):
                if value is not None:
                    raise ValueError(f"{key} applies to a PostgreSQL ledger only; remove it, or "
                                     "set path to a postgresql:// URL")
        return self


class ApprovalSettings(_Section):
    """``[approval]``: which proposals wait for a human."""

    kinds: list[str] = []
    inconclusive: bool = True
    timeout: float | None = Field(default=86_400.0, gt=0)


class ClientSettings(_Section):
    """``[client]``: how the command line builds the model it reviews proposals for."""

    factory: str
    """``"package.module:callable"``; called with ``args`` as keyword arguments."""
    args: dict[str, Any] = {}

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr:
            raise ValueError(f"{value!r} is not 'package.module:callable'")
        return value

    def load_factory(self, root: Path | None = None) -> Any:
        """Import the factory; ``root`` (the configuration's folder) is searched first.

        Raises ``ConfigError`` naming the factory and the cause.
        """
        module_name, _, attr = self.factory.partition(":")
        if root is not None and str(root) not in sys.path:
            # A factory module next to guardrails.toml must import without PYTHONPATH=.
            sys.path.insert(0, str(root))
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"[client] factory {self.factory!r} cannot be imported ({exc}); "
                              "check the module path and that its package is installed, or "
                              "put the module next to the configuration file") from None
        except Exception as exc:  # the module itself failed while importing
            raise ConfigError(f"[client] factory {self.factory!r}: importing {module_name!r} "
                              f"raised {type(exc).__name__}: {exc}") from None
        if not callable(factory):
            raise ConfigError(f"[client] factory {self.factory!r} is not callable")
        try:
            inspect.signature(factory).bind(**self.args)
        except TypeError as exc:
            raise ConfigError(f"[client] args do not fit the factory {self.factory!r} ({exc}); "
                              "it takes " + _parameters(factory)) from None
        except ValueError:
            pass  # no signature to check (a builtin): the call below will tell
        return factory

    def build(self, root: Path | None = None) -> Any:
        """Import the factory and call it with ``args``; ``ConfigError`` naming the cause."""
        factory = self.load_factory(root)
        try:
            return factory(**self.args)
        except Exception as exc:
            raise ConfigError(f"[client] factory {self.factory!r} raised {type(exc).__name__}: "
                              f"{exc}; the model could not be built") from None


def _parameters(factory: Any) -> str:
    try:
        names = list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return "arguments that cannot be inspected"
    return f"({', '.join(names)})" if names else "no arguments"


class PolicySettings(BaseModel):
    """One ``[[policies]]`` entry: ``plugin = "name"`` plus that plugin's own settings.

    The settings are checked by the plugin's settings model when it loads, so
    a typo there is an error naming the plugin and the setting.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    plugin: str = Field(min_length=1)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(_Section):
    """The whole ``guardrails.toml``."""

    guard: GuardSettings = GuardSettings()
    constraints: ConstraintSettings = ConstraintSettings()
    canaries: CanarySettings
    decision: DecisionSettings = DecisionSettings()
    sandbox: SandboxSettings = SandboxSettings()
    ledger: LedgerSettings = LedgerSettings()
    blobs: BlobSettings | None = None
    """``[blobs]``: a shared blob store; without it, the folder ``[ledger] blobs``."""
    approval: ApprovalSettings | None = None
    proposals: ProposalLimits = ProposalLimits()
    """``[proposals]``: the largest proposal a review evaluates (``ProposalLimits``)."""
    client: ClientSettings | None = None
    rollout: RolloutPolicy | None = None
    """``[rollout]``: stage an accepted candidate on live traffic (``RolloutPolicy``)."""
    policies: list[PolicySettings] = []
    """Plugins, in order: runtime middlewares wrap the model first-listed outermost;
    update checks run in the same order."""


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc`` (the location of an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                       None)
    return [f.alias or n for n, f in current.model_fields.items()] if current is not None else []


def explain(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per error: file, key path, what is wrong and how to fix it."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"allowed keys here: {', '.join(allowed) or 'none'}")
            lines.append(f"{source}: unknown key {key!r}; {hint}")
        elif error["type"] == "missing":
            lines.append(f"{source}: {key!r} is required; add it")
        elif error["type"] in _SCALAR_TYPES and isinstance(error.get("input"), str):
            lines.append(f"{source}: {key!r}: {error['msg']} (got the string "
                         f"{_shown(error.get('input'))}); write the value without quotes")
        elif isinstance(error.get("input"), dict):  # a whole section: its message says what
            lines.append(f"{source}: {key!r}: {error['msg']}")
        else:
            lines.append(f"{source}: {key!r}: {error['msg']} (got {_shown(error.get('input'))})")
    return "\n".join(lines)


_SCALAR_TYPES = frozenset({"float_type", "int_type", "bool_type"})
_URL_PASSWORD = re.compile(r"(://[^:/@\s'\"]*):[^@\s'\"]*@")


def _shown(value: Any) -> str:
    """A rejected value as an error shows it: a password in a URL becomes ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", repr(value))


def load_config(path: str | os.PathLike[str]) -> tuple[Config, Path]:
    """Parse and validate a configuration file; returns it and its folder.

    Raises ``ConfigError`` naming the file, the key path and the fix.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(not_utf8(path, exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return Config.model_validate(raw), path.resolve().parent
    except ValidationError as exc:
        raise ConfigError(explain(exc, Config, str(path))) from None


def not_utf8(path: str | os.PathLike[str], exc: UnicodeDecodeError) -> str:
    """The message for a file that is not UTF-8: the file, the byte offset and the fix."""
    return (f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start} "
            "cannot be decoded); save the file as UTF-8")


def _pointer_specs(entries: list[str | PointerSettings]) -> tuple[Any, ...]:
    """``[constraints]`` pointers as ``FrozenConstraints`` takes them (strings or tables)."""
    return tuple(e if isinstance(e, str) else e.model_dump() for e in entries)


def guard_kwargs(config: Config, root: Path, source: str, *,
                 stores: bool = True) -> dict[str, Any]:
    """The ``Guard`` arguments a validated configuration describes (files resolved from ``root``).

    ``stores=False`` leaves the ledger and the blob store out (the guard then keeps an
    in-memory ledger): nothing is opened, created or written, for commands that only check."""
    from .canary import CanarySuite, RunSettings
    from .gate import ApprovalPolicy, FrozenConstraints

    parts = build_policies(config.policies, source, root)
    cases: list[Any] = []
    try:
        for name in config.canaries.files:
            try:
                cases.extend(CanarySuite.from_jsonl(root / name, checkers=parts.checkers).cases)
            except UnicodeDecodeError as exc:
                raise ConfigError(not_utf8(root / name, exc)) from None
        suite = CanarySuite(cases)
        constraints = FrozenConstraints(
            frozen=_pointer_specs(config.constraints.frozen),
            mutable=(None if config.constraints.mutable is None
                     else _pointer_specs(config.constraints.mutable)),
            drift_budget=config.constraints.drift_budget,
            drift_pointers={p: b if isinstance(b, float) else b.model_dump()
                            for p, b in config.constraints.drift_pointers.items()},
            drift_blobs=config.constraints.drift_blobs)
    except ValidationError as exc:
        raise ConfigError(explain(exc, ConstraintSettings, f"{source} [constraints]")) from None
    except ConfigError as exc:
        raise ConfigError(f"{source} [canaries] files: {exc}") from None
    approval = None if config.approval is None else ApprovalPolicy(**config.approval.model_dump())
    refuse_two_blob_stores(config, source)  # also when no store is opened
    return {
        "middleware": parts.middleware,
        "checks": parts.checks,
        "constraints": constraints,
        "canaries": suite,
        "ledger": open_ledger(config.ledger, root, source) if stores else None,
        "blob_store": open_blobs(config, root, source) if stores else None,
        "approval": approval,
        "canary_run": RunSettings(**config.canaries.model_dump(exclude={"files", "dask", "ray"}),
                                  dask=_dask(config, root, source),
                                  ray=_ray(config, root, source)),
        "sandbox": config.sandbox.mode,
        "sandbox_limits": _sandbox_limits(config.sandbox, root),
        "decision_rule": _decision_rule(config.decision, suite, source),
        "proposal_limits": config.proposals,
        "rollout": config.rollout,
        **config.guard.model_dump(),
    }


_JAIL_KEYS = {"isolation", "max_processes", "read_paths", "write_paths", "env", "network",
              "warm"}


def _sandbox_limits(settings: SandboxSettings, root: Path) -> Any:
    """``[sandbox]`` as ``SandboxLimits``, its jail keys as the nested ``JailPolicy``."""
    from .sandbox import JailPolicy, SandboxLimits

    jail = settings.model_dump(include=_JAIL_KEYS)
    for key in ("read_paths", "write_paths"):
        jail[key] = tuple(str((root / path).resolve()) for path in jail[key])
    jail["env"] = tuple(jail["env"])
    jail["network"] = tuple(jail["network"])
    return SandboxLimits(**settings.model_dump(exclude={"mode", *_JAIL_KEYS}),
                         jail=JailPolicy(**jail))


def _relative_to(root: Path | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with every relative ``*_file`` path resolved from the configuration's folder,
    as every other path in the file is."""
    if root is None:
        return settings
    return {key: str(root / value) if key.endswith("_file") and isinstance(value, str)
            and not Path(value).is_absolute() else value for key, value in settings.items()}


def blob_url(config: Config, root: Path) -> tuple[str, dict[str, Any]]:
    """The blob store's URL and options: ``[blobs]``, else the folder ``[ledger] blobs``."""
    if config.blobs is None:
        return (root / config.ledger.blobs).resolve().as_uri(), {}
    url = config.blobs.url
    lowered = url.lower()
    if "://" not in url or lowered.startswith("file://"):
        path = Path(url[len("file://"):] if lowered.startswith("file://") else url)
        url = (path if path.is_absolute() else root / path).resolve().as_uri()
    return url, config.blobs.options()


def refuse_two_blob_stores(config: Config, source: str) -> None:
    """``ConfigError`` when both ``[blobs] url`` and ``[ledger] blobs`` name a store."""
    if config.blobs is not None and "blobs" in config.ledger.model_fields_set:
        raise ConfigError(f"{source}: both [blobs] url and [ledger] blobs name a blob store; "
                          "keep [blobs] url and remove [ledger] blobs")


def open_blobs(config: Config, root: Path, source: str, *, read_only: bool = False) -> Any:
    """The blob store the configuration names; errors name the file and the section.
    ``read_only``: as ``open_blob_store``, and without the local cache (no folder made)."""
    from .blobs import open_blob_store

    refuse_two_blob_stores(config, source)
    url, options = blob_url(config, root)
    try:
        store = open_blob_store(url, read_only=read_only, **options)
    except ConfigError as exc:
        raise ConfigError(f"{source} [blobs]: {exc}") from None
    if not read_only and config.blobs is not None and config.blobs.cache_dir is not None:
        from .blobs import CachedBlobStore

        return CachedBlobStore(store, root / config.blobs.cache_dir, config.blobs.cache_max_bytes)
    return store


def _cluster_blobs(config: Config, root: Path, source: str, table: str) -> tuple[Any, Any]:
    """The blob store the workers open, after refusing a cluster under the process sandbox."""
    if config.sandbox.mode == "process":
        raise ConfigError(f"{source}: [{table}] runs candidates on the cluster's "
                          "workers, outside the process sandbox; use [sandbox] mode = "
                          f"\"inline\" with a cluster of trusted candidates, or remove "
                          f"[{table}]")
    # The workers open the same store as the guard: on another host, a file:// store must be
    # a shared mount at the same path.
    return blob_url(config, root)


def _dask(config: Config, root: Path, source: str) -> Any:
    cluster = config.canaries.dask
    if cluster is None:
        return None
    from .canary import DaskSettings

    url, options = _cluster_blobs(config, root, source, "canaries.dask")
    return DaskSettings(scheduler=cluster.scheduler, build=cluster.build, blobs=url,
                        blob_options=options, connect_timeout=cluster.connect_timeout)


def _ray(config: Config, root: Path, source: str) -> Any:
    cluster = config.canaries.ray
    if cluster is None:
        return None
    from .canary import RaySettings

    url, options = _cluster_blobs(config, root, source, "canaries.ray")
    return RaySettings(address=cluster.address, build=cluster.build, blobs=url,
                       blob_options=options, connect_timeout=cluster.connect_timeout)


def build_policies(policies: list[PolicySettings], source: str, root: Path | None = None) -> Any:
    """Load and build every configured plugin; errors name the file, the entry and the plugin.

    With ``root`` (the configuration's folder), relative ``*_file`` settings resolve from it.
    """
    from .plugin import load_plugin, merge_parts

    built = []
    for position, policy in enumerate(policies):
        where = f"{source} policies[{position}] (plugin {policy.plugin!r})"
        settings = _relative_to(root, policy.settings)
        try:
            built.append((policy.plugin, load_plugin(policy.plugin).build(settings)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except Exception as exc:
            raise ConfigError(f"{where}: the plugin raised {type(exc).__name__}: {exc}; the "
                              "guard refuses to start with a policy it cannot build") from None
    try:
        return merge_parts(built)
    except ConfigError as exc:
        raise ConfigError(f"{source} policies: {exc}") from None


def open_ledger(settings: LedgerSettings, root: Path, source: str, *,
                read_only: bool = False) -> Any:
    """The configured ledger; ``read_only`` opens it without creating or writing anything."""
    from ._errors import GuardrailsError
    from .ledger import PostgresLedger, SigningKey, SQLiteLedger, VerifierKey, is_postgres_url

    try:
        signing = None if settings.signing_key is None else SigningKey.load(
            root / settings.signing_key)
        verifier = None if settings.verifier_key is None else VerifierKey.load(
            root / settings.verifier_key)
    except ConfigError as exc:
        raise ConfigError(f"{source} [ledger]: {exc}") from None
    if read_only and verifier is None and signing is not None:
        verifier = signing.verifier  # a reader checks with the key the ledger is signed with
    if is_postgres_url(settings.path):
        try:
            return PostgresLedger(settings.path, schema=settings.schema_,
                                  poll_interval=settings.poll_interval or 1.0,
                                  timeout=settings.timeout or 10.0, read_only=read_only,
                                  signing_key=None if read_only else signing,
                                  verifier_key=verifier)
        except GuardrailsError as exc:
            raise type(exc)(f"{source} [ledger] path: {exc}") from None
    return SQLiteLedger(root / settings.path, timeout=settings.timeout or 30.0,
                        read_only=read_only, signing_key=None if read_only else signing,
                        verifier_key=verifier)


def _decision_rule(settings: DecisionSettings, suite: Any, source: str) -> Any:
    if settings.rule == "margin":
        return None  # the guard's MarginRule with [guard] margin
    from .gate import SequentialRule

    try:
        return SequentialRule.for_suite(suite, **settings.model_dump(exclude={"rule"}))
    except ConfigError as exc:
        raise ConfigError(f"{source} [decision]: {exc}") from None
