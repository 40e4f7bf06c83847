"""Frozen constraints: invariants and their composition, frozen pointers, mutable scope."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

import guardrails as gr
from guardrails.gate._constraints import changed_pointers


def short_prompt(state: dict[str, Any]) -> bool:
    return len(state.get("prompt", "")) < 10


def has_prompt(state: dict[str, Any]) -> bool:
    return "prompt" in state


def low_temperature(state: dict[str, Any]) -> bool:
    return bool(state.get("temperature", 0) <= 1)


# -- invariants --------------------------------------------------------------------------


def test_invariant_is_named_after_its_function() -> None:
    """An invariant built from a function takes the function's name."""
    assert gr.Invariant(short_prompt).name == "short_prompt"


def test_invariant_explicit_name_wins() -> None:
    """An explicit name replaces the function's name."""
    assert gr.Invariant(short_prompt, name="brief").name == "brief"


def test_invariant_needs_a_callable() -> None:
    """Building an invariant from a non-callable raises TypeError naming the type."""
    with pytest.raises(TypeError, match="str"):
        gr.Invariant("prompt is short")  # type: ignore[arg-type]


@pytest.mark.parametrize("result", [1, "yes", [True], None, False])
def test_only_true_holds(result: object) -> None:
    """A predicate returning anything but True fails (fail closed), naming the value."""
    ok, message = gr.Invariant(lambda s: result, name="odd").holds({})  # type: ignore[arg-type,return-value]
    assert not ok
    assert repr(result) in message


def test_raising_predicate_fails_with_the_exception_named() -> None:
    """A predicate that raises does not hold, and the message names the exception."""
    ok, message = gr.Invariant(lambda s: s["missing"], name="reads").holds({})
    assert not ok
    assert "KeyError" in message and "'reads'" in message


def test_and_holds_only_when_both_hold() -> None:
    """a & b holds only when both hold; the message names the first that failed."""
    both = gr.Invariant(has_prompt) & gr.Invariant(short_prompt)
    assert isinstance(both, gr.AllOf)
    assert both.holds({"prompt": "hi"})[0]
    ok, message = both.holds({"prompt": "much too long a prompt"})
    assert not ok and "short_prompt" in message
    assert not both.holds({})[0]


def test_or_holds_when_either_holds() -> None:
    """a | b holds when at least one holds and lists every failure otherwise."""
    either = gr.Invariant(has_prompt) | gr.Invariant(low_temperature)
    assert isinstance(either, gr.AnyOf)
    assert either.holds({"temperature": 0.5})[0]
    assert either.holds({"prompt": "x", "temperature": 5})[0]
    ok, message = either.holds({"temperature": 5})
    assert not ok and "has_prompt" in message and "low_temperature" in message


def test_nested_and_groups_flatten() -> None:
    """(a & b) & c and a & (b & c) are one AllOf with three members."""
    a, b, c = gr.Invariant(has_prompt), gr.Invariant(short_prompt), gr.Invariant(low_temperature)
    for combined in ((a & b) & c, a & (b & c)):
        assert isinstance(combined, gr.AllOf)
        assert [m.name for m in combined.members] == ["has_prompt", "short_prompt",
                                                      "low_temperature"]


def test_nested_or_groups_flatten() -> None:
    """a | b | c is one AnyOf with three members."""
    a, b, c = gr.Invariant(has_prompt), gr.Invariant(short_prompt), gr.Invariant(low_temperature)
    combined = a | b | c
    assert isinstance(combined, gr.AnyOf)
    assert len(combined.members) == 3


def test_mixed_groups_do_not_flatten() -> None:
    """(a | b) & c keeps the AnyOf as one member of the AllOf."""
    a, b, c = gr.Invariant(has_prompt), gr.Invariant(short_prompt), gr.Invariant(low_temperature)
    combined = (a | b) & c
    assert isinstance(combined, gr.AllOf)
    assert [type(m) for m in combined.members] == [gr.AnyOf, gr.Invariant]
    assert combined.name == "has_prompt | short_prompt & low_temperature"


def test_plain_callables_compose_on_either_side() -> None:
    """A plain callable may stand on either side of & and |."""
    inv = gr.Invariant(has_prompt)
    for combined in (inv & short_prompt, short_prompt & inv):
        assert isinstance(combined, gr.AllOf)
        assert {m.name for m in combined.members} == {"has_prompt", "short_prompt"}
    for combined in (inv | low_temperature, low_temperature | inv):
        assert isinstance(combined, gr.AnyOf)
        assert combined.holds({"temperature": 0})[0]


def test_invariant_of_accepts_callable_and_invariant() -> None:
    """Invariant.of wraps a callable and returns an Invariant unchanged."""
    inv = gr.Invariant(has_prompt)
    assert gr.Invariant.of(inv) is inv
    assert gr.Invariant.of(has_prompt).name == "has_prompt"


# -- FrozenConstraints construction ---------------------------------------------------------


def test_constraints_accept_plain_callables() -> None:
    """FrozenConstraints turns plain callables into invariants, alone or in a list."""
    single = gr.FrozenConstraints(invariants=has_prompt)
    many = gr.FrozenConstraints(invariants=[has_prompt, gr.Invariant(short_prompt)])
    assert [i.name for i in single.invariants] == ["has_prompt"]
    assert [i.name for i in many.invariants] == ["has_prompt", "short_prompt"]


def test_constraints_reject_non_callable_invariants() -> None:
    """A non-callable invariant is a validation error saying what to pass."""
    with pytest.raises(ValidationError, match="callables state -> bool"):
        gr.FrozenConstraints(invariants=["prompt is short"])


@pytest.mark.parametrize("field", ["frozen", "mutable"])
def test_constraints_reject_bad_pointers(field: str) -> None:
    """A frozen or mutable entry that is not a JSON Pointer names the pointer and the fix."""
    with pytest.raises(ValidationError, match=r"'params\.threshold' is not a JSON Pointer"):
        gr.FrozenConstraints(**{field: ["params.threshold"]})


def test_constraints_reject_negative_drift_budget() -> None:
    """The drift budget cannot be negative."""
    with pytest.raises(ValidationError, match="drift_budget"):
        gr.FrozenConstraints(drift_budget=-0.1)


def test_constraints_reject_unknown_fields() -> None:
    """A misspelt field ('frozn') is an error, not silently ignored."""
    with pytest.raises(ValidationError, match="frozn"):
        gr.FrozenConstraints(frozn=["/a"])  # type: ignore[call-arg]


def test_constraints_are_immutable() -> None:
    """Assigning to a constraints field raises."""
    constraints = gr.FrozenConstraints(frozen=["/a"])
    with pytest.raises(ValidationError):
        constraints.frozen = ()  # type: ignore[misc]


def test_fingerprint_is_stable() -> None:
    """Equal constraints built twice have the same fingerprint."""
    def build() -> gr.FrozenConstraints:
        return gr.FrozenConstraints(frozen=["/a"], invariants=[has_prompt], drift_budget=0.5)

    assert build().fingerprint() == build().fingerprint()


@pytest.mark.parametrize(
    "other",
    [
        {"frozen": ["/b"], "invariants": [has_prompt], "drift_budget": 0.5},
        {"frozen": ["/a"], "invariants": [short_prompt], "drift_budget": 0.5},
        {"frozen": ["/a"], "invariants": [has_prompt], "drift_budget": 0.6},
        {"frozen": ["/a"], "invariants": [has_prompt], "drift_budget": 0.5, "mutable": ["/c"]},
    ],
)
def test_fingerprint_changes_with_any_field(other: dict[str, Any]) -> None:
    """Changing a pointer, an invariant, the budget or the scope changes the fingerprint."""
    base = gr.FrozenConstraints(frozen=["/a"], invariants=[has_prompt], drift_budget=0.5)
    assert gr.FrozenConstraints(**other).fingerprint() != base.fingerprint()


def test_fingerprint_sees_invariant_code() -> None:
    """Two invariants with the same name but different code fingerprint differently."""
    first = gr.FrozenConstraints(invariants=[gr.Invariant(lambda s: s["n"] < 3, name="n")])
    second = gr.FrozenConstraints(invariants=[gr.Invariant(lambda s: s["n"] < 4, name="n")])
    assert first.fingerprint() != second.fingerprint()


# -- frozen pointers ----------------------------------------------------------------------

INCUMBENT: dict[str, Any] = {"params": {"threshold": 0.5, "top_k": 3}, "tools": ["a", "b"],
                             "prompt": "hi"}


def frozen_findings(candidate: dict[str, Any], *pointers: str) -> list[gr.Finding]:
    return gr.FrozenConstraints(frozen=pointers).check_frozen(INCUMBENT, candidate)


def with_changes(**changes: Any) -> dict[str, Any]:
    return {**INCUMBENT, **changes}


def test_changed_frozen_value_is_a_finding() -> None:
    """Changing the value at a frozen pointer gives a failed frozen_pointer finding naming it."""
    findings = frozen_findings(with_changes(params={"threshold": 0.4, "top_k": 3}),
                               "/params/threshold")
    assert [(f.check, f.passed, f.evidence["pointer"]) for f in findings] == [
        ("frozen_pointer", False, "/params/threshold")]


def test_change_below_a_frozen_pointer_is_a_finding() -> None:
    """A frozen pointer protects everything below it."""
    assert frozen_findings(with_changes(tools=["a", "c"]), "/tools")


def test_sibling_change_is_not_a_finding() -> None:
    """Changing a sibling of a frozen pointer is allowed."""
    assert frozen_findings(with_changes(params={"threshold": 0.5, "top_k": 9}),
                           "/params/threshold") == []


def test_rewriting_an_ancestor_with_the_same_value_is_allowed() -> None:
    """What counts is the value at the pointer, not which operations touched it."""
    assert frozen_findings(with_changes(params={"top_k": 4, "threshold": 0.5}),
                           "/params/threshold") == []


def test_removing_a_parent_is_a_finding() -> None:
    """Removing the parent of a frozen pointer changes the frozen value (to absent)."""
    candidate = {k: v for k, v in INCUMBENT.items() if k != "params"}
    assert frozen_findings(candidate, "/params/threshold")


def test_creating_a_frozen_value_is_a_finding() -> None:
    """A frozen pointer that was absent must stay absent."""
    assert frozen_findings(with_changes(secret="x"), "/secret")


def test_type_change_with_equal_python_value_is_a_finding() -> None:
    """Replacing 1 with true (equal in Python, different in JSON) changes a frozen value."""
    incumbent = {"flag": 1}
    constraints = gr.FrozenConstraints(frozen=["/flag"])
    assert constraints.check_frozen(incumbent, {"flag": True})


def test_end_of_list_pointer_does_not_break_the_check() -> None:
    """A frozen pointer ending in '-' (past the end of a list) compares as absent."""
    constraints = gr.FrozenConstraints(frozen=["/tools/-"])
    assert constraints.check_frozen(INCUMBENT, with_changes(tools=["a", "b", "c"])) == []


def test_one_finding_per_changed_frozen_pointer() -> None:
    """Each changed frozen pointer gives its own finding."""
    findings = frozen_findings(with_changes(tools=[], prompt="bye"), "/tools", "/prompt",
                               "/params")
    assert sorted(f.evidence["pointer"] for f in findings) == ["/prompt", "/tools"]


# -- mutable scope ------------------------------------------------------------------------


def test_no_mutable_scope_allows_any_change() -> None:
    """Without mutable pointers, check_scope finds nothing."""
    assert gr.FrozenConstraints().check_scope(INCUMBENT, {"other": 1}) == []


def test_change_inside_the_mutable_scope_is_allowed() -> None:
    """Changes at or below a mutable pointer pass the scope check."""
    constraints = gr.FrozenConstraints(mutable=["/params", "/prompt"])
    candidate = with_changes(params={"threshold": 0.1, "top_k": 1, "new": 2}, prompt="bye")
    assert constraints.check_scope(INCUMBENT, candidate) == []


def test_change_outside_the_mutable_scope_is_a_finding() -> None:
    """A change outside the mutable pointers gives a mutable_scope finding naming it."""
    constraints = gr.FrozenConstraints(mutable=["/prompt"])
    findings = constraints.check_scope(INCUMBENT, with_changes(tools=["a"]))
    assert [f.check for f in findings] == ["mutable_scope"]
    assert findings[0].evidence["pointers"] == ["/tools/1"]
    assert "'/tools/1'" in findings[0].message


def test_mutable_scope_is_not_a_prefix_of_strings() -> None:
    """Mutable '/param' does not cover '/params': scopes compare pointer tokens."""
    constraints = gr.FrozenConstraints(mutable=["/param"])
    assert constraints.check_scope({"params": 1}, {"params": 2})


def test_changed_pointers_are_deepest_and_escaped() -> None:
    """changed_pointers yields the deepest differing places, with '~' and '/' escaped."""
    before = {"a/b": {"c~d": 1, "same": 2}, "l": [1, 2, 3], "gone": 0}
    after = {"a/b": {"c~d": 9, "same": 2}, "l": [1, 5], "new": 0}
    assert sorted(changed_pointers(before, after)) == [
        "/a~1b/c~0d", "/gone", "/l/1", "/l/2", "/new"]


# -- invariants on constraints ----------------------------------------------------------


def test_check_invariants_gives_one_finding_each() -> None:
    """check_invariants reports every invariant, passed or failed, by name."""
    constraints = gr.FrozenConstraints(invariants=[has_prompt, short_prompt])
    findings = constraints.check_invariants({"prompt": "a very long prompt indeed"})
    assert [(f.evidence["invariant"], f.passed) for f in findings] == [
        ("has_prompt", True), ("short_prompt", False)]
