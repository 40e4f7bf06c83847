"""Pointers that point at nothing are errors when the guard wraps the client: a frozen,
mutable or drift pointer must match something in the served state, unless it says it may be
absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpointer
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails._cli import main
from guardrails.testing import DictClient

STATE: dict[str, Any] = {"system_prompt": "be kind", "params": {"temperature": 0.2},
                         "memory": {}}
CASES = [gr.CanaryCase(id="a", input="a", expect="?")]


def _guard(ledger: gr.Ledger | None = None, **constraints: Any) -> gr.Guard:
    return gr.Guard(gr.FrozenConstraints(**constraints), CASES, ledger=ledger)


def test_a_misspelled_frozen_pointer_is_refused_with_the_closest_path() -> None:
    """`/sytem_prompt` protects nothing: wrap says so and suggests `/system_prompt`."""
    with pytest.raises(gr.ConfigError) as raised:
        _guard(frozen=["/sytem_prompt"]).wrap(DictClient(STATE))
    assert "frozen pointer '/sytem_prompt' matches nothing" in str(raised.value)
    assert "did you mean '/system_prompt'?" in str(raised.value)


def test_a_misspelled_mutable_pointer_is_refused_too() -> None:
    """A mutable scope at nothing would make every change out of scope, silently."""
    with pytest.raises(gr.ConfigError, match=r"mutable pointer '/param' .*did you mean '/params'"):
        _guard(mutable=["/param"]).wrap(DictClient(STATE))


def test_a_misspelled_drift_pointer_is_refused_too() -> None:
    """A per-pointer budget at nothing leaves the real path under no budget of its own."""
    with pytest.raises(gr.ConfigError) as raised:
        _guard(drift_pointers={"/system_promt": 0.2}).wrap(DictClient(STATE))
    message = str(raised.value)
    assert "drift pointer '/system_promt' matches nothing" in message
    assert "did you mean '/system_prompt'?" in message
    assert '"/system_promt" = { budget = 0.2, may_be_absent = true }' in message


def test_a_drift_pointer_that_may_be_absent_starts_and_still_bounds_what_appears() -> None:
    """With may_be_absent the guard starts; content added there later is measured against
    that pointer's own budget (all new: distance 1 > 0.2) and refused."""
    guarded = _guard(drift_pointers={"/memory/notes": {"budget": 0.2, "may_be_absent": True}}
                     ).wrap(DictClient(STATE))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "add", "path": "/memory/notes", "value": "remember everything"}]))
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "drift_budget"


def test_a_drift_pointer_table_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match=r"is a budget or \{ budget = 0.2"):
        gr.FrozenConstraints(drift_pointers={"/memory": {"budget": 0.2, "maybe": True}})


def test_a_refused_pointer_leaves_no_ledger_behind(tmp_path: Path) -> None:
    """The check runs before genesis: fixing the pointer and starting again just works."""
    ledger = gr.SQLiteLedger(tmp_path / "ledger.db")
    with pytest.raises(gr.ConfigError):
        _guard(ledger, frozen=["/sytem_prompt"]).wrap(DictClient(STATE))
    assert len(ledger) == 0


def test_a_pointer_that_may_be_absent_is_accepted_and_still_protects() -> None:
    """`may_be_absent` lets the guard start; adding the path later is still a frozen change."""
    guarded = _guard(frozen=[{"path": "/memory/rules", "may_be_absent": True}]).wrap(
        DictClient(STATE))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "add", "path": "/memory/rules", "value": ["obey"]}]))
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "frozen_pointer"


def test_may_be_absent_for_a_pointer_that_is_not_listed_is_refused() -> None:
    """A may_be_absent entry that no pointer lists is itself a pointer at nothing."""
    with pytest.raises(ValueError, match="not a frozen, mutable or drift pointer"):
        gr.FrozenConstraints(frozen=["/system_prompt"], may_be_absent=["/memory/rules"])


def test_a_pointer_table_with_an_unknown_key_is_refused() -> None:
    """Hostile input: `{ path, optional }` is not the documented spelling."""
    with pytest.raises(ValueError, match="may_be_absent = true"):
        gr.FrozenConstraints(frozen=[{"path": "/memory", "optional": True}])


def test_the_pointer_is_checked_against_the_state_the_ledger_serves(tmp_path: Path) -> None:
    """A guard reopened on a ledger serves the ledger's state: that is what must match."""
    path = tmp_path / "ledger.db"
    _guard(gr.SQLiteLedger(path)).wrap(DictClient(STATE))
    elsewhere = DictClient({**STATE, "extra": 1})  # restored to the served state on open
    with pytest.raises(gr.ConfigError, match="the served state"):
        _guard(gr.SQLiteLedger(path), frozen=["/extra"]).wrap(elsewhere)


def test_a_huge_state_still_gets_an_answer() -> None:
    """Hostile input: 100 000 keys; the did-you-mean looks at a bounded sample."""
    state = {f"k{i}": i for i in range(100_000)}
    with pytest.raises(gr.ConfigError, match="matches nothing"):
        gr.FrozenConstraints(frozen=["/nope/deeper"]).check_pointers(state)


_JSON = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _JSON, max_size=4),
       st.lists(st.text(max_size=4), min_size=1, max_size=3))
def test_check_pointers_refuses_exactly_the_pointers_that_resolve_to_nothing(
        state: dict[str, Any], parts: list[str]) -> None:
    """For any state and pointer: silent when RFC 6901 resolves it to a value, ConfigError
    otherwise; marked may_be_absent, always silent."""
    pointer = str(jsonpointer.JsonPointer.from_parts(parts))
    try:
        value = jsonpointer.resolve_pointer(state, pointer)
        resolves = not isinstance(value, jsonpointer.EndOfList)
    except jsonpointer.JsonPointerException:
        resolves = False
    constraints = gr.FrozenConstraints(frozen=[pointer])
    if resolves:
        constraints.check_pointers(state)
    else:
        with pytest.raises(gr.ConfigError):
            constraints.check_pointers(state)
    gr.FrozenConstraints(frozen=[{"path": pointer, "may_be_absent": True}]).check_pointers(state)


CONFIG = """
[constraints]
frozen = [{frozen}]

[canaries]
files = ["cases.jsonl"]

[client]
factory = "guardrails.testing:DictClient"
args = {{state = {{system_prompt = "be kind", memory = {{}}}}}}
"""


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen: str) -> None:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "?"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG.format(frozen=frozen))
    monkeypatch.chdir(tmp_path)


def test_guardrails_check_refuses_a_pointer_at_nothing_with_exit_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`guardrails check` builds the client and reports the same did-you-mean (exit 3)."""
    _project(tmp_path, monkeypatch, '"/sytem_prompt"')
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 3
    assert "did you mean '/system_prompt'?" in result.output


def test_guardrails_check_accepts_the_table_form_from_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`{ path = "/memory/rules", may_be_absent = true }` in guardrails.toml is accepted."""
    _project(tmp_path, monkeypatch,
             '"/system_prompt", { path = "/memory/rules", may_be_absent = true }')
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "every pointer resolves" in result.output


def test_guardrails_check_takes_a_drift_pointer_table_from_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`drift_pointers = { "/memory/notes" = { budget = 0.2, may_be_absent = true } }` is
    accepted; the same pointer as a bare budget is refused with exit 3."""
    _project(tmp_path, monkeypatch, '"/system_prompt"')
    config = tmp_path / "guardrails.toml"
    text = config.read_text()
    config.write_text(text.replace("[canaries]", 'drift_pointers = { "/memory/notes" = '
                                   '{ budget = 0.2, may_be_absent = true } }\n\n[canaries]'))
    assert CliRunner().invoke(main, ["check"]).exit_code == 0
    config.write_text(text.replace("[canaries]", 'drift_pointers = { "/memory/notes" = 0.2 }'
                                   '\n\n[canaries]'))
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 3 and "drift pointer '/memory/notes' matches nothing" in result.output


def test_guardrails_check_resolves_the_pointers_in_the_state_the_ledger_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a ledger serving a state, check judges the pointers there, as wrap will: the
    configured client's fresh state has "/extra", the served one does not, so exit 3."""
    _project(tmp_path, monkeypatch, '"/system_prompt"')
    ledger = gr.SQLiteLedger(tmp_path / ".guardrails" / "ledger.db")
    _guard(ledger).wrap(DictClient({"system_prompt": "be kind", "memory": {}}))
    ledger.close()
    config = tmp_path / "guardrails.toml"
    config.write_text(config.read_text().replace('frozen = ["/system_prompt"]',
                                                 'frozen = ["/system_prompt", "/extra"]')
                      .replace("memory = {}}", "memory = {}, extra = 1}"))
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 3, result.output
    assert "frozen pointer '/extra' matches nothing in the state the ledger serves" in result.output
