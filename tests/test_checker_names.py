"""Checker names in a case's ``expect`` are validated: a misspelled checker is an error at suite
build with a did-you-mean, never a silent equality check against the dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import guardrails as gr
from guardrails._cli import main


def _jsonl(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_misspelled_checker_names_the_file_the_line_and_the_closest_checker(
        tmp_path: Path) -> None:
    """`{"containz": "4"}` on line 2: the error says where and suggests 'contains'."""
    path = _jsonl(tmp_path, '{"id": "a", "input": "2+2", "expect": "4"}',
                  '{"id": "b", "input": "2+2", "expect": {"containz": "4"}}')
    with pytest.raises(gr.ConfigError) as raised:
        gr.CanarySuite.from_jsonl(path)
    assert f"{path}:2:" in str(raised.value)
    assert "did you mean 'contains'?" in str(raised.value)


def test_a_literal_dict_is_compared_through_equals() -> None:
    """`{"equals": {...}}` is the way to expect a dict output."""
    [case] = gr.CanarySuite([{"id": "a", "input": "x", "expect": {"equals": {"label": 1}}}])
    assert isinstance(case.expect, gr.Equals)
    assert case.expect({"label": 1}) and not case.expect({"label": 2})


def test_a_dict_of_several_keys_is_refused_with_the_way_to_compare_it() -> None:
    """A bare dict of two keys is no checker spec: the error shows the `equals` form."""
    with pytest.raises(gr.ConfigError, match=r'\{"equals": \{\.\.\.\}\}'):
        gr.CanarySuite([{"id": "a", "input": "x", "expect": {"label": 1, "score": 2}}])


def test_an_unknown_name_with_nothing_close_lists_the_checkers() -> None:
    """No did-you-mean when nothing is close, but the names are listed."""
    with pytest.raises(gr.ConfigError) as raised:
        gr.CanarySuite([{"id": "a", "input": "x", "expect": {"zzzz": 1}}])
    assert "did you mean" not in str(raised.value)
    assert "contains, equals, not_contains, numeric, regex" in str(raised.value)


class Shouts(gr.Checker):
    """A plugin's checker: passes when the output is upper case."""

    name: ClassVar[str] = "shouts"
    value: Any

    def __call__(self, output: Any) -> bool:
        return isinstance(output, str) and output.isupper()


def test_a_plugin_checker_name_is_known_and_its_misspelling_is_suggested() -> None:
    """Names plugins contribute count: a near miss of one is suggested too."""
    suite = gr.CanarySuite([{"id": "a", "input": "x", "expect": {"shouts": True}}],
                           checkers={"shouts": Shouts})
    assert isinstance(suite.cases[0].expect, Shouts)
    with pytest.raises(gr.ConfigError, match="did you mean 'shouts'"):
        gr.CanarySuite([{"id": "a", "input": "x", "expect": {"shout": True}}],
                       checkers={"shouts": Shouts})


def test_guardrails_check_refuses_the_misspelled_checker_with_exit_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reports the same error, naming the case file, with the configuration exit code."""
    _jsonl(tmp_path, '{"id": "a", "input": "x", "expect": {"regx": "^o"}}')
    (tmp_path / "guardrails.toml").write_text('[canaries]\nfiles = ["cases.jsonl"]\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 3
    assert "cases.jsonl:1" in result.output and "did you mean 'regex'?" in result.output
