"""Canary cases, checkers and suites (from code and from JSONL)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import guardrails as gr
from guardrails.canary._suite import as_checker, judge

# -- checkers ----------------------------------------------------------------------------


def test_equals_uses_json_equality() -> None:
    """Equals passes on equal JSON values and fails on Python-equal but JSON-different ones."""
    assert gr.Equals(value={"a": [1, "x"]})({"a": [1, "x"]})
    assert not gr.Equals(value=1)(True)
    assert not gr.Equals(value=1)(1.0)


def test_equals_fails_on_non_json_output() -> None:
    """Equals does not raise on an output JSON cannot represent; it fails."""
    assert not gr.Equals(value=1)(object())


@pytest.mark.parametrize(("output", "passed"), [("say yes", True), (["yes", "no"], True),
                                                 ({"yes": 1}, True), ("no", False), (5, False)])
def test_contains(output: Any, passed: bool) -> None:
    """Contains passes on a substring, list item or dict key, and fails on non-containers."""
    assert gr.Contains(value="yes")(output) is passed


@pytest.mark.parametrize(("output", "passed"), [("fine", True), (["ok"], True),
                                                 ("bad word", False), (None, False), (3, False)])
def test_not_contains(output: Any, passed: bool) -> None:
    """NotContains passes only on a str, list or dict without the value."""
    assert gr.NotContains(value="bad")(output) is passed


def test_regex_searches_text_only() -> None:
    """Regex matches anywhere in a string and fails on non-strings."""
    checker = gr.Regex(pattern=r"\d{3}")
    assert checker("call 555 now")
    assert not checker("no digits")
    assert not checker(555)


def test_regex_must_compile() -> None:
    """A pattern that does not compile is rejected at construction, naming the pattern."""
    with pytest.raises(ValidationError, match=r"regex '\(unclosed' does not compile"):
        gr.Regex(pattern="(unclosed")


def test_predicate_needs_a_real_true() -> None:
    """A Predicate passes only when its callable returns True, not a truthy value."""
    assert gr.Predicate(fn=lambda out: out == "x")("x")
    assert not gr.Predicate(fn=lambda out: 1)("x")


def test_checker_spec_names_checker_and_arguments() -> None:
    """A checker's spec records its name and arguments so a decision can be replayed."""
    assert gr.Regex(pattern="^a").spec() == {"name": "regex", "args": {"pattern": "^a"}}
    assert gr.Equals(value=[1]).spec() == {"name": "equals", "args": {"value": [1]}}


def test_predicate_spec_names_the_callable() -> None:
    """A Predicate's spec names its callable by module and qualified name."""
    def is_polite(output: Any) -> bool:
        return True

    spec = gr.Predicate(fn=is_polite, label="polite").spec()
    assert spec["name"] == "predicate"
    assert spec["args"]["callable"].endswith("is_polite")
    assert spec["args"]["label"] == "polite"


@pytest.mark.parametrize(
    ("expect", "kind"),
    [
        ({"regex": "^a"}, gr.Regex),
        ({"contains": "a"}, gr.Contains),
        ({"not_contains": "a"}, gr.NotContains),
        ({"equals": {"x": 1}}, gr.Equals),
        ("plain", gr.Equals),
        (len, gr.Predicate),
    ],
)
def test_as_checker_coercion(expect: Any, kind: type[gr.Checker]) -> None:
    """expect becomes a named checker, a Predicate for callables, else Equals."""
    assert type(as_checker(expect)) is kind


def test_as_checker_keeps_a_checker() -> None:
    """A Checker passed as expect is used as is."""
    checker = gr.Contains(value="x")
    assert as_checker(checker) is checker


@pytest.mark.parametrize("output", [None, "", math.nan])
def test_empty_output_never_passes(output: Any) -> None:
    """None, empty text and NaN never pass, even for a checker that would accept them."""
    passed, why = judge(gr.Predicate(fn=lambda out: True), output)
    assert not passed and why == "empty output"


def test_raising_checker_fails() -> None:
    """A checker that raises fails the case, naming the exception type."""
    passed, why = judge(gr.Predicate(fn=lambda out: 1 / 0), "x")
    assert not passed and "ZeroDivisionError" in why


@pytest.mark.parametrize(("value", "passed"), [(True, True), (False, False)])
def test_numpy_bool_results_count(value: bool, passed: bool) -> None:
    """A checker returning numpy's bool_ (what numpy comparisons give) is judged by its value."""
    np = pytest.importorskip("numpy")

    class Close(gr.Checker):
        def __call__(self, output: Any) -> bool:
            return np.bool_(value)  # type: ignore[no-any-return]

    assert judge(Close(), "x")[0] is passed


# -- cases --------------------------------------------------------------------------------


def test_safety_tag_marks_a_hard_case() -> None:
    """A case tagged 'safety' is a safety case; others are capability cases."""
    assert gr.CanaryCase(id="s", input="x", expect="y", tags=("safety",)).is_safety
    assert not gr.CanaryCase(id="c", input="x", expect="y", tags=("slice:math",)).is_safety


def test_case_input_must_be_json() -> None:
    """A case whose input JSON cannot represent is rejected naming 'input'."""
    with pytest.raises(ValidationError, match="input"):
        gr.CanaryCase(id="x", input={1, 2}, expect="y")


def test_case_id_must_not_be_empty() -> None:
    """A case needs a non-empty id."""
    with pytest.raises(ValidationError, match="id"):
        gr.CanaryCase(id="", input="x", expect="y")


def test_case_rejects_unknown_fields() -> None:
    """A misspelt case field ('expected') is an error."""
    with pytest.raises(ValidationError, match="expected"):
        gr.CanaryCase.model_validate({"id": "x", "input": "a", "expect": "b", "expected": "c"})


# -- suites -------------------------------------------------------------------------------


def test_suite_splits_safety_and_capability(cases: list[gr.CanaryCase]) -> None:
    """A suite keeps case order and splits safety from capability cases."""
    suite = gr.CanarySuite(cases)
    assert [c.id for c in suite] == ["sum", "capital", "sky", "weapon"]
    assert [c.id for c in suite.safety] == ["weapon"]
    assert [c.id for c in suite.capability] == ["sum", "capital", "sky"]
    assert len(suite) == 4


def test_empty_suite_is_rejected() -> None:
    """An empty suite raises ConfigError saying to add a case."""
    with pytest.raises(gr.ConfigError, match="empty"):
        gr.CanarySuite([])


def test_duplicate_ids_are_rejected() -> None:
    """Two cases with one id raise ConfigError naming the id."""
    with pytest.raises(gr.ConfigError, match="'dup' appears twice"):
        gr.CanarySuite([{"id": "dup", "input": 1, "expect": 1},
                        {"id": "dup", "input": 2, "expect": 2}])


def test_invalid_dict_case_names_its_position_and_field() -> None:
    """A malformed case given as a dict names its position and the field."""
    with pytest.raises(gr.ConfigError, match=r"canary case #1: field 'id'"):
        gr.CanarySuite([{"id": "ok", "input": 1, "expect": 1}, {"input": 2, "expect": 2}])


def test_fingerprint_is_stable_for_equal_suites(cases: list[gr.CanaryCase]) -> None:
    """Two suites with the same cases have the same fingerprint."""
    assert gr.CanarySuite(cases).fingerprint() == gr.CanarySuite(list(cases)).fingerprint()


@pytest.mark.parametrize(
    "change",
    [{"input": "3+3"}, {"expect": gr.Equals(value="5")}, {"tags": ("safety",)}, {"hidden": True}],
)
def test_fingerprint_changes_with_any_case_field(
    cases: list[gr.CanaryCase], change: dict[str, Any]
) -> None:
    """Changing a case's input, checker, tags or hidden flag changes the suite fingerprint."""
    changed = [cases[0].model_copy(update=change), *cases[1:]]
    assert gr.CanarySuite(changed).fingerprint() != gr.CanarySuite(cases).fingerprint()


# -- JSONL --------------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_from_jsonl_loads_cases(tmp_path: Path) -> None:
    """A JSONL file loads one case per line, with named checkers and blank lines skipped."""
    path = write_lines(
        tmp_path / "cases.jsonl",
        json.dumps({"id": "a", "input": "2+2", "expect": "4"}),
        "",
        json.dumps({"id": "b", "input": "hi", "expect": {"regex": "^h"}, "tags": ["safety"],
                    "hidden": True}),
    )
    suite = gr.CanarySuite.from_jsonl(path)
    assert [c.id for c in suite] == ["a", "b"]
    assert isinstance(suite.cases[1].expect, gr.Regex)
    assert suite.cases[1].is_safety and suite.cases[1].hidden


def test_from_jsonl_bad_json_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON gives ConfigError naming the file and line number."""
    path = write_lines(tmp_path / "cases.jsonl",
                       json.dumps({"id": "a", "input": 1, "expect": 1}), "{not json")
    with pytest.raises(gr.ConfigError, match=rf"{path}:2: not valid JSON"):
        gr.CanarySuite.from_jsonl(path)


def test_from_jsonl_bad_case_names_line_and_field(tmp_path: Path) -> None:
    """A line with an invalid case names the file, line and field."""
    path = write_lines(tmp_path / "cases.jsonl",
                       json.dumps({"id": "a", "input": 1, "expect": 1}), "",
                       json.dumps({"id": "b", "input": 1, "expect": {"regex": "("}}))
    with pytest.raises(gr.ConfigError, match=rf"{path}:3: field 'expect"):
        gr.CanarySuite.from_jsonl(path)


def test_from_jsonl_missing_file_names_it(tmp_path: Path) -> None:
    """A missing case file gives ConfigError naming the file."""
    path = tmp_path / "absent.jsonl"
    with pytest.raises(gr.ConfigError, match=rf"{path}: cannot read"):
        gr.CanarySuite.from_jsonl(path)


def test_from_jsonl_empty_file_names_it(tmp_path: Path) -> None:
    """A file with no cases gives ConfigError naming the file."""
    path = write_lines(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(gr.ConfigError, match=rf"{path}: the canary suite is empty"):
        gr.CanarySuite.from_jsonl(path)


def test_from_jsonl_duplicate_ids_name_file(tmp_path: Path) -> None:
    """Duplicate ids in a file give ConfigError naming the file and the id."""
    line = json.dumps({"id": "a", "input": 1, "expect": 1})
    path = write_lines(tmp_path / "dup.jsonl", line, line)
    with pytest.raises(gr.ConfigError, match=rf"{path}: .*'a' appears twice"):
        gr.CanarySuite.from_jsonl(path)
