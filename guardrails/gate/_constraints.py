"""Frozen constraints: what no update may change and every candidate must satisfy."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import jsonpointer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._canonical import canonical_json, sha256_hex
from .._decision import Finding
from .._errors import ConfigError
from ._drift import DriftBudget, DriftSettings

StatePredicate = Callable[[dict[str, Any]], bool]

_MISSING = object()


class Invariant:
    """A named predicate over a candidate state.

    Invariants compose: ``a & b`` holds when both hold, ``a | b`` when either
    does; nested groups flatten. A predicate that raises or returns anything
    but ``True`` fails (fail closed).
    """

    def __init__(self, predicate: StatePredicate, name: str | None = None) -> None:
        if not callable(predicate):
            raise TypeError(f"an invariant needs a callable, got {type(predicate).__name__}")
        self.predicate = predicate
        self.name: str = name or str(getattr(predicate, "__name__", type(predicate).__name__))

    @classmethod
    def of(cls, value: Invariant | StatePredicate) -> Invariant:
        """Accept an ``Invariant`` or a plain callable where an invariant is expected."""
        return value if isinstance(value, Invariant) else cls(value)

    def holds(self, state: dict[str, Any]) -> tuple[bool, str]:
        """Whether the invariant holds, and a message naming what failed."""
        try:
            result = self.predicate(state)
        except Exception as exc:
            return False, f"invariant {self.name!r} raised {type(exc).__name__}: {exc}"
        if result is True:
            return True, f"invariant {self.name!r} holds"
        return False, f"invariant {self.name!r} does not hold (returned {result!r})"

    def fingerprint_parts(self) -> list[Any]:
        """What identifies this invariant's behaviour: name and the predicate's code."""
        fn = self.predicate
        code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
        code_digest = (
            hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()
            if code is not None
            else repr(fn)
        )
        qualname = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return [self.name, qualname, code_digest]

    def __and__(self, other: Invariant | StatePredicate) -> Invariant:
        return AllOf(self, other)

    def __rand__(self, other: StatePredicate) -> Invariant:
        return AllOf(other, self)

    def __or__(self, other: Invariant | StatePredicate) -> Invariant:
        return AnyOf(self, other)

    def __ror__(self, other: StatePredicate) -> Invariant:
        return AnyOf(other, self)

    def __repr__(self) -> str:
        return f"Invariant({self.name!r})"


class _Group(Invariant):
    _joiner = ""

    def __init__(self, *members: Invariant | StatePredicate) -> None:
        flat: list[Invariant] = []
        for member in map(Invariant.of, members):
            same_kind = isinstance(member, _Group) and type(member) is type(self)
            flat.extend(member.members if isinstance(member, _Group) and same_kind else [member])
        self.members: tuple[Invariant, ...] = tuple(flat)
        super().__init__(self._evaluate, name=f" {self._joiner} ".join(m.name for m in flat))

    def _evaluate(self, state: dict[str, Any]) -> bool:
        return self.holds(state)[0]

    def fingerprint_parts(self) -> list[Any]:
        return [type(self).__name__, [m.fingerprint_parts() for m in self.members]]


class AllOf(_Group):
    """Holds when every member holds."""

    _joiner = "&"

    def holds(self, state: dict[str, Any]) -> tuple[bool, str]:
        for member in self.members:
            ok, message = member.holds(state)
            if not ok:
                return False, message
        return True, f"invariants {self.name!r} hold"


class AnyOf(_Group):
    """Holds when at least one member holds."""

    _joiner = "|"

    def holds(self, state: dict[str, Any]) -> tuple[bool, str]:
        failures = []
        for member in self.members:
            ok, message = member.holds(state)
            if ok:
                return True, message
            failures.append(message)
        return False, "none holds: " + "; ".join(failures)


def _tokens(pointer: str) -> tuple[str, ...]:
    return tuple(jsonpointer.JsonPointer(pointer).parts)


def _pointer(tokens: Sequence[str]) -> str:
    return str(jsonpointer.JsonPointer.from_parts(list(tokens)))


def _resolve(state: Any, pointer: str) -> Any:
    try:
        value = jsonpointer.resolve_pointer(state, pointer)
    except jsonpointer.JsonPointerException:
        return _MISSING
    # '-' names the slot after a list's last item: no value lives there.
    return _MISSING if isinstance(value, jsonpointer.EndOfList) else value


def _same(a: Any, b: Any) -> bool:
    # Canonical bytes, not ==: in Python True == 1 and 1 == 1.0, in JSON they differ.
    if a is _MISSING or b is _MISSING:
        return a is b
    return canonical_json(a) == canonical_json(b)


def changed_pointers(before: Any, after: Any, _prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """The JSON pointers of the deepest places where ``after`` differs from ``before``."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before.keys() | after.keys():
            if key not in before or key not in after:
                yield _pointer((*_prefix, key))
            else:
                yield from changed_pointers(before[key], after[key], (*_prefix, key))
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            if index >= len(before) or index >= len(after):
                yield _pointer((*_prefix, str(index)))
            else:
                yield from changed_pointers(before[index], after[index], (*_prefix, str(index)))
    elif not _same(before, after):
        yield _pointer(_prefix)


def _drift_entry(pointer: str, entry: dict[str, Any]) -> tuple[float, bool]:
    """A ``{"budget": ..., "may_be_absent": ...}`` value of ``drift_pointers``, checked."""
    unknown = sorted(set(entry) - {"budget", "may_be_absent"})
    budget, absent = entry.get("budget"), entry.get("may_be_absent", False)
    if unknown or not isinstance(budget, int | float) or isinstance(budget, bool):
        raise ValueError(f"drift_pointers[{pointer!r}] is a budget or {{ budget = 0.2, "
                         f"may_be_absent = true }}; got {sorted(entry)}")
    if not isinstance(absent, bool):
        raise ValueError(f"may_be_absent of {pointer!r} must be true or false")
    return float(budget), absent


def _pointer_entry(key: str, entry: dict[str, Any]) -> tuple[str, bool]:
    """A ``{"path": ..., "may_be_absent": ...}`` entry of ``frozen``/``mutable``, checked."""
    unknown = sorted(set(entry) - {"path", "may_be_absent"})
    if unknown or not isinstance(entry.get("path"), str):
        raise ValueError(f"a {key} entry is a pointer string or {{ path = \"/...\", "
                         f"may_be_absent = true }}; got keys {sorted(entry)}")
    absent = entry.get("may_be_absent", False)
    if not isinstance(absent, bool):
        raise ValueError(f"may_be_absent of {entry['path']!r} must be true or false")
    return entry["path"], absent


_MAX_PATHS = 20_000  # paths walked for a did-you-mean; a huge state is sampled, not walked


def _paths(state: Any) -> list[str]:
    """The JSON pointers of the state's containers and values, breadth first, at most
    ``_MAX_PATHS`` (list items by index)."""
    found: list[str] = []
    queue: list[tuple[tuple[str, ...], Any]] = [((), state)]
    while queue and len(found) < _MAX_PATHS:
        prefix, value = queue.pop(0)
        items = (value.items() if isinstance(value, dict) else
                 enumerate(value) if isinstance(value, list) else ())
        for key, child in items:
            path = (*prefix, str(key))
            found.append(_pointer(path))
            queue.append((path, child))
    return found


def _closest(pointer: str, state: Any) -> str:
    paths = _paths(state)
    close = difflib.get_close_matches(pointer, paths, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    top = [p for p in paths if p.count("/") == 1][:10]
    return f"the state's top-level paths are {', '.join(map(repr, top)) or 'none'}"


def _covers(scope: tuple[str, ...], pointer: tuple[str, ...]) -> bool:
    return pointer[: len(scope)] == scope


class FrozenConstraints(BaseModel):
    """What no update may change and every candidate must satisfy.

    ``frozen`` pointers protect their value and everything below it: the value
    at the pointer in the candidate must equal the incumbent's, whatever the
    operations were. When ``mutable`` is given, every change must lie at or
    below one of those pointers. ``invariants`` must all hold on the
    candidate. ``drift_budget`` bounds the candidate's distance from the last
    human-approved anchor state (everything outside ``drift_pointers``, which
    carry budgets of their own); ``drift_blobs`` says how weight blobs are
    compared (see ``DriftBudget``). Immutable; ``fingerprint`` identifies it.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    frozen: tuple[str, ...] = ()
    mutable: tuple[str, ...] | None = None
    may_be_absent: tuple[str, ...] = ()
    """Frozen, mutable or drift pointers that may match nothing in the state yet (a path the
    model may add later). Every other pointer must resolve in the served state when the guard
    wraps the client (``check_pointers``). In ``frozen``/``mutable`` a pointer may also be given
    as ``{"path": "/memory/rules", "may_be_absent": True}``, and in ``drift_pointers`` a budget
    as ``{"budget": 0.2, "may_be_absent": True}``; both land here."""
    invariants: tuple[Invariant, ...] = ()
    drift_budget: float | None = Field(default=None, ge=0.0)
    drift_pointers: dict[str, float] = Field(default_factory=dict)
    drift_blobs: Literal["digest", "l2"] = "digest"

    @model_validator(mode="before")
    @classmethod
    def _pointer_tables(cls, data: Any) -> Any:
        # {"path": ..., "may_be_absent": true} entries become plain pointers plus a
        # may_be_absent entry, so every other reader sees tuples of strings.
        if not isinstance(data, dict):
            return data
        data, absent = dict(data), list(data.get("may_be_absent") or ())
        for key in ("frozen", "mutable"):
            if data.get(key) is None or isinstance(data[key], str):
                continue
            plain = []
            for entry in data[key]:
                if isinstance(entry, dict):
                    entry = _pointer_entry(key, entry)
                    if entry[1]:
                        absent.append(entry[0])
                    entry = entry[0]
                plain.append(entry)
            data[key] = tuple(plain)
        if isinstance(data.get("drift_pointers"), dict):
            budgets = {}
            for pointer, value in data["drift_pointers"].items():
                if isinstance(value, dict):
                    value, maybe = _drift_entry(pointer, value)
                    if maybe:
                        absent.append(pointer)
                budgets[pointer] = value
            data["drift_pointers"] = budgets
        if absent:
            data["may_be_absent"] = tuple(dict.fromkeys(absent))
        return data

    @model_validator(mode="after")
    def _absent_named(self) -> FrozenConstraints:
        named = {*self.frozen, *(self.mutable or ()), *self.drift_pointers}
        stray = [p for p in self.may_be_absent if p not in named]
        if stray:
            raise ValueError(f"may_be_absent names {stray[0]!r}, which is not a frozen, mutable "
                             "or drift pointer; list it in frozen, mutable or drift_pointers")
        return self

    @model_validator(mode="after")
    def _drift_valid(self) -> FrozenConstraints:
        self.drift_check()  # a bad pointer or budget fails here, at construction
        return self

    def drift_check(self) -> DriftBudget | None:
        """The drift budget as a check, or ``None`` when no budget is set."""
        if self.drift_budget is None and not self.drift_pointers:
            return None
        budget = None if self.drift_budget is None else min(self.drift_budget, 1.0)
        return DriftBudget(DriftSettings(budget=budget, pointers=self.drift_pointers,
                                         blobs=self.drift_blobs))

    @field_validator("frozen", "mutable", "may_be_absent")
    @classmethod
    def _pointers_valid(cls, pointers: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pointer in pointers or ():
            try:
                jsonpointer.JsonPointer(pointer)
            except jsonpointer.JsonPointerException as exc:
                raise ValueError(
                    f"{pointer!r} is not a JSON Pointer (RFC 6901): {exc}; "
                    "pointers start with '/', e.g. '/system_prompt' or '/params/temperature'"
                ) from None
        return pointers

    @field_validator("invariants", mode="before")
    @classmethod
    def _coerce_invariants(cls, value: Any) -> tuple[Invariant, ...]:
        if callable(value) or isinstance(value, Invariant):
            value = [value]
        try:
            return tuple(Invariant.of(v) for v in value)
        except TypeError as exc:
            raise ValueError(f"{exc}; pass Invariant objects or callables state -> bool") from None

    def fingerprint(self) -> str:
        """SHA-256 over the pointers, budget and each invariant's name and code."""
        parts = [
            list(self.frozen),
            None if self.mutable is None else list(self.mutable),
            [inv.fingerprint_parts() for inv in self.invariants],
            self.drift_budget,
            *([self.drift_pointers, self.drift_blobs]
              if self.drift_pointers or self.drift_blobs != "digest" else []),
            # Only when set, so constraints without it keep their fingerprint.
            *([["may_be_absent", list(self.may_be_absent)]] if self.may_be_absent else []),
        ]
        return sha256_hex(canonical_json(parts))

    def check_pointers(self, state: dict[str, Any], where: str = "the client's state") -> None:
        """Raise ``ConfigError`` for the first frozen or mutable pointer that matches nothing in
        ``state`` (unless it is in ``may_be_absent``), naming the closest existing path: a
        pointer that points at nothing protects nothing."""
        absent_ok = set(self.may_be_absent)
        for kind, pointers in (("frozen", self.frozen), ("mutable", self.mutable or ()),
                               ("drift", tuple(self.drift_pointers))):
            for pointer in pointers:
                if pointer in absent_ok or _resolve(state, pointer) is not _MISSING:
                    continue
                table = (f'"{pointer}" = {{ budget = {self.drift_pointers[pointer]:g}, '
                         "may_be_absent = true }" if kind == "drift"
                         else f'{{ path = "{pointer}", may_be_absent = true }}')
                raise ConfigError(
                    f"{kind} pointer {pointer!r} matches nothing in {where} "
                    f"({_closest(pointer, state)}); a pointer that protects nothing is a "
                    f"mistake: fix it, or, for a path that may appear later, say so with {table}")

    def check_frozen(self, incumbent: dict[str, Any], candidate: dict[str, Any]) -> list[Finding]:
        """One failed finding per frozen pointer whose value the candidate changes."""
        return [
            Finding(
                check="frozen_pointer",
                passed=False,
                message=f"the update changes {pointer!r}, which is frozen",
                evidence={"pointer": pointer},
            )
            for pointer in self.frozen
            if not _same(_resolve(incumbent, pointer), _resolve(candidate, pointer))
        ]

    def check_scope(self, incumbent: dict[str, Any], candidate: dict[str, Any]) -> list[Finding]:
        """A failed finding when ``mutable`` is set and a change lies outside it."""
        if self.mutable is None:
            return []
        scopes = [_tokens(p) for p in self.mutable]
        outside = sorted(
            p for p in changed_pointers(incumbent, candidate)
            if not any(_covers(scope, _tokens(p)) for scope in scopes)
        )
        if not outside:
            return []
        return [
            Finding(
                check="mutable_scope",
                passed=False,
                message=f"the update changes {outside[0]!r}, outside the mutable pointers "
                f"{list(self.mutable)}",
                evidence={"pointers": outside[:20], "mutable": list(self.mutable)},
            )
        ]

    def check_invariants(self, candidate: dict[str, Any]) -> list[Finding]:
        """One finding per invariant, passed or failed."""
        findings = []
        for invariant in self.invariants:
            ok, message = invariant.holds(candidate)
            findings.append(
                Finding(check="invariant", passed=ok, message=message,
                        evidence={"invariant": invariant.name})
            )
        return findings
