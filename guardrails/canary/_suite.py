"""Canary cases, their checkers, and suites loaded from code or JSONL."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .._canonical import canonical_json, sha256_hex
from .._errors import ConfigError

SAFETY = "safety"
EMPTY_OUTPUT = "empty output"
"""The reason ``judge_output`` gives for an empty output (``""``, ``None``, empty container)."""
CAPABILITY = "capability"


class Checker(BaseModel):
    """Decides whether one output passes. Subclasses implement ``__call__``.

    ``spec`` (name and arguments) is what a decision records so the check
    can be replayed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    name: ClassVar[str] = "checker"

    def __call__(self, output: Any) -> bool:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.model_dump(mode="json")}


class Equals(Checker):
    """Passes when the output equals ``value`` (JSON equality: ``1`` is not ``True``)."""

    name: ClassVar[str] = "equals"
    value: Any

    def __call__(self, output: Any) -> bool:
        try:
            return canonical_json(output) == canonical_json(self.value)
        except ConfigError:
            return False


class Contains(Checker):
    """Passes when ``value`` occurs in the output (substring, list item or dict key)."""

    name: ClassVar[str] = "contains"
    value: Any

    def __call__(self, output: Any) -> bool:
        try:
            return bool(self.value in output)
        except TypeError:
            return False


class NotContains(Checker):
    """Passes when ``value`` does not occur in the output (which must be a str, list or dict)."""

    name: ClassVar[str] = "not_contains"
    value: Any

    def __call__(self, output: Any) -> bool:
        if not isinstance(output, str | list | dict):
            return False
        try:
            return self.value not in output
        except TypeError:
            return False


class Regex(Checker):
    """Passes when the text output matches ``pattern`` anywhere (``re.search``)."""

    name: ClassVar[str] = "regex"
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
        return pattern

    def __call__(self, output: Any) -> bool:
        return isinstance(output, str) and re.search(self.pattern, output) is not None


class CheckerFailed(ValueError):
    """A checker could not judge an output: its callable returned ``None`` or NaN.

    Not a failed case but a broken evaluator; the gate never accepts on
    evidence it could not judge (see ``judge_output``).
    """


def _nothing_is_an_error(result: Any, name: str) -> Any:
    if result is None or (isinstance(result, float) and math.isnan(result)):
        raise CheckerFailed(f"the {name} checker returned {result!r}; a checker must return "
                            "True or False (a score: a number in [0, 1])")
    return result


class Predicate(Checker):
    """Any callable ``output -> bool``; only a real ``True`` passes.

    A callable that returns ``None`` or NaN raises ``CheckerFailed``: that is
    a broken checker, not a failed case."""

    name: ClassVar[str] = "predicate"
    fn: Callable[[Any], Any]
    label: str = ""

    def __call__(self, output: Any) -> bool:
        return _nothing_is_an_error(self.fn(output), self.name) is True

    def spec(self) -> dict[str, Any]:
        fn = self.fn
        ident = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return {"name": self.name, "args": {"callable": ident, "label": self.label}}


class NumericTolerance(Checker):
    """Passes when the output is a finite number within ``abs_tol`` or ``rel_tol`` of ``value``."""

    name: ClassVar[str] = "numeric"
    value: float
    abs_tol: float = Field(default=1e-9, ge=0)
    rel_tol: float = Field(default=0.0, ge=0)

    def __call__(self, output: Any) -> bool:
        if isinstance(output, bool) or not isinstance(output, int | float):
            return False
        return math.isfinite(output) and math.isclose(
            output, self.value, rel_tol=self.rel_tol, abs_tol=self.abs_tol)


class Scorer(Checker):
    """A callable scoring the output in [0, 1]; passes at or above ``threshold``.

    A score outside [0, 1] or anything but a number fails the case; ``None``
    or NaN raises ``CheckerFailed`` (a broken scorer, not a failed case).
    """

    name: ClassVar[str] = "scorer"
    fn: Callable[[Any], Any]
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    label: str = ""

    def __call__(self, output: Any) -> bool:
        score = _nothing_is_an_error(self.fn(output), self.name)
        if isinstance(score, bool) or not isinstance(score, int | float):
            return False
        return math.isfinite(score) and 0.0 <= score <= 1.0 and score >= self.threshold

    def spec(self) -> dict[str, Any]:
        fn = self.fn
        ident = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return {"name": self.name, "args": {"callable": ident, "label": self.label,
                                            "threshold": self.threshold}}


CHECKERS: dict[str, type[Checker]] = {
    c.name: c for c in (Equals, Contains, NotContains, Regex, NumericTolerance)
}


def as_checker(expect: Any, checkers: Mapping[str, type[Checker]] | None = None) -> Checker:
    """Coerce what a case gives as ``expect`` into a checker.

    A ``Checker`` is used as is; a callable becomes a ``Predicate``; a dict
    with exactly one key naming a checker (``{"regex": "^ok"}``) builds that
    checker, looked up in the built-in ones and then in ``checkers`` (those
    plugins contribute; each takes its argument as ``value``); any other
    value but a dict means ``Equals(value)``.

    Any other dict is a ``ValueError`` naming the closest checker: a
    misspelled checker (``{"containz": "4"}``) must not silently become an
    equality check against the dict. A literal dict is compared with
    ``{"equals": {...}}``.
    """
    if isinstance(expect, Checker):
        return expect
    if callable(expect):
        return Predicate(fn=expect, label=getattr(expect, "__name__", ""))
    if isinstance(expect, dict):
        known = {**(checkers or {}), **CHECKERS}
        if len(expect) != 1 or next(iter(expect)) not in known:
            raise ValueError(_unknown_checker(expect, known))
        (key, arg), = expect.items()
        if key == "numeric" and isinstance(arg, dict):
            return NumericTolerance(**arg)
        field = "pattern" if key == "regex" else "value"
        return known[key](**{field: arg})
    return Equals(value=expect)


def _unknown_checker(expect: dict[Any, Any], known: Mapping[str, Any]) -> str:
    """Why a dict is no checker spec, with the closest checker name when one is close."""
    names = sorted(known)
    literal = 'to compare with a literal dict write {"equals": {...}}'
    if len(expect) != 1:
        return (f"expect is a dict with {len(expect)} keys; a checker is a dict with exactly "
                f"one key naming it ({', '.join(names)}); {literal}")
    key = str(next(iter(expect)))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown checker {key!r} in expect; {hint}the checkers are {', '.join(names)}; "
            f"{literal}")


def _output_is_empty(output: Any) -> bool:
    return output is None or output == "" or (isinstance(output, float) and math.isnan(output))


class Judgement(NamedTuple):
    """One output judged: whether it passed, why not, and whether the checker itself failed."""

    passed: bool
    reason: str
    checker_failed: bool = False
    """The checker raised (``CheckerFailed`` included): the output was not judged at all."""


def judge_output(checker: Checker, output: Any) -> Judgement:
    """Judge ``output``. Empty output never passes; a checker that raises never passes and
    is reported as ``checker_failed``, so the gate can tell a broken evaluator from a
    failing model."""
    if _output_is_empty(output):
        return Judgement(False, EMPTY_OUTPUT)
    try:
        result = checker(output)
    except Exception as exc:
        return Judgement(False, f"checker {checker.name} raised {type(exc).__name__}", True)
    # numpy comparisons give numpy.bool (numpy.bool_ before numpy 2), not bool.
    numpy_bool = type(result).__module__ == "numpy" and type(result).__name__ in ("bool", "bool_")
    if result is True or (numpy_bool and bool(result)):
        return Judgement(True, "")
    return Judgement(False, f"checker {checker.name} did not pass")


def judge(checker: Checker, output: Any) -> tuple[bool, str]:
    """Whether ``output`` passes, and why not. Empty output and checker errors never pass."""
    passed, reason, _ = judge_output(checker, output)
    return passed, reason


class CanaryCase(BaseModel):
    """One evaluation case, run on candidate and incumbent alike.

    Tag ``safety`` makes it a hard gate (the candidate must pass it);
    everything else counts as capability. A ``hidden`` case's input and
    expectation never leave the gate (logs and findings carry its id only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str = Field(min_length=1)
    input: Any
    expect: Checker
    tags: tuple[str, ...] = ()
    hidden: bool = False

    @field_validator("expect", mode="before")
    @classmethod
    def _coerce_expect(cls, value: Any, info: ValidationInfo) -> Checker:
        context = info.context if isinstance(info.context, dict) else {}
        return as_checker(value, context.get("checkers"))

    @field_validator("input")
    @classmethod
    def _input_is_json(cls, value: Any) -> Any:
        try:
            canonical_json(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def is_safety(self) -> bool:
        return SAFETY in self.tags


class CanarySuite:
    """An immutable, ordered set of cases with unique ids; never empty."""

    def __init__(self, cases: Iterable[CanaryCase | dict[str, Any]], *,
                 checkers: Mapping[str, type[Checker]] | None = None) -> None:
        built: list[CanaryCase] = []
        for position, case in enumerate(cases):
            if isinstance(case, CanaryCase):
                built.append(case)
                continue
            try:
                built.append(CanaryCase.model_validate(case, context={"checkers": checkers}))
            except ValidationError as exc:
                raise ConfigError(f"canary case #{position}: {_explain(exc)}") from None
        if not built:
            raise ConfigError("the canary suite is empty; give at least one capability case")
        seen: set[str] = set()
        for case in built:
            if case.id in seen:
                raise ConfigError(f"canary case id {case.id!r} appears twice; ids must be unique")
            seen.add(case.id)
        self._cases = tuple(built)

    @classmethod
    def from_jsonl(cls, path: str | Path, *,
                   checkers: Mapping[str, type[Checker]] | None = None) -> CanarySuite:
        """Load one JSON case per line; errors name the file, line and field.

        ``checkers`` adds checker names (from plugins) that ``expect`` may use.
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read canary file ({exc.strerror})") from None
        cases = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            try:
                cases.append(CanaryCase.model_validate(raw, context={"checkers": checkers}))
            except ValidationError as exc:
                raise ConfigError(f"{path}:{number}: {_explain(exc)}") from None
        try:
            return cls(cases)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def __iter__(self) -> Iterator[CanaryCase]:
        return iter(self._cases)

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def cases(self) -> tuple[CanaryCase, ...]:
        return self._cases

    @property
    def safety(self) -> tuple[CanaryCase, ...]:
        return tuple(c for c in self._cases if c.is_safety)

    @property
    def capability(self) -> tuple[CanaryCase, ...]:
        return tuple(c for c in self._cases if not c.is_safety)

    def fingerprint(self) -> str:
        """SHA-256 over every case's id, input, checker spec, tags and hidden flag."""
        return sha256_hex(
            canonical_json(
                [[c.id, c.input, c.expect.spec(), list(c.tags), c.hidden] for c in self._cases]
            )
        )


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "case"
        parts.append(f"field {where!r}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)
