"""Update proposals: validation of RFC 6902 operations and applying them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

import guardrails as gr

PARENT = "a" * 64


def make(*ops: dict[str, Any], **fields: Any) -> gr.UpdateProposal:
    return gr.UpdateProposal(parent=PARENT, patch=ops, **fields)


def test_proposal_from_plain_operations() -> None:
    """Plain RFC 6902 dicts become PatchOperations and round-trip through patch_json."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/a", "value": 1},
        {"op": "move", "from": "/b", "path": "/c"},
        {"op": "remove", "path": "/d"},
    ]
    proposal = make(*ops)
    assert proposal.patch_json() == ops
    assert all(isinstance(op, gr.PatchOperation) for op in proposal.patch)


def test_defaults() -> None:
    """A proposal defaults to kind 'state', source 'model' and an empty rationale."""
    proposal = make({"op": "remove", "path": "/a"})
    assert (proposal.kind, proposal.source, proposal.rationale) == ("state", "model", "")


def test_ids_are_unique() -> None:
    """Each proposal gets its own id when none is given."""
    op = {"op": "remove", "path": "/a"}
    assert make(op).id != make(op).id


def test_proposal_is_frozen() -> None:
    """A proposal cannot be changed after construction."""
    proposal = make({"op": "remove", "path": "/a"})
    with pytest.raises(ValidationError):
        proposal.rationale = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("parent", ["", "abc", "A" * 64, "g" * 64, "a" * 65])
def test_parent_must_be_a_version_id(parent: str) -> None:
    """The parent must be a 64-digit lower-case hex version id; the error names 'parent'."""
    with pytest.raises(ValidationError, match="parent"):
        gr.UpdateProposal(parent=parent, patch=[{"op": "remove", "path": "/a"}])


def test_empty_patch_is_rejected() -> None:
    """A proposal must change something: an empty patch names the 'patch' field."""
    with pytest.raises(ValidationError, match="patch"):
        gr.UpdateProposal(parent=PARENT, patch=[])


def test_unknown_operation_is_rejected() -> None:
    """An op outside RFC 6902 is rejected."""
    with pytest.raises(ValidationError, match="op"):
        make({"op": "merge", "path": "/a", "value": 1})


@pytest.mark.parametrize("op", ["add", "replace", "test"])
def test_value_operations_need_a_value(op: str) -> None:
    """add, replace and test without a 'value' are rejected with a message naming it."""
    with pytest.raises(ValidationError, match="needs a 'value'"):
        make({"op": op, "path": "/a"})


def test_null_value_is_not_a_missing_value() -> None:
    """An explicit null value is kept and serialised, unlike an absent one."""
    proposal = make({"op": "add", "path": "/a", "value": None})
    assert proposal.patch_json() == [{"op": "add", "path": "/a", "value": None}]


@pytest.mark.parametrize("op", ["move", "copy"])
def test_move_and_copy_need_from(op: str) -> None:
    """move and copy without 'from' are rejected with a message naming it."""
    with pytest.raises(ValidationError, match="needs a 'from'"):
        make({"op": op, "path": "/a"})


@pytest.mark.parametrize("field", ["path", "from"])
def test_pointers_must_be_rfc6901(field: str) -> None:
    """A path or from that is not a JSON Pointer is rejected, naming RFC 6901 and the fix."""
    op: dict[str, Any] = {"op": "copy", "path": "/a", "from": "/b"}
    op[field] = "no/leading/slash"
    with pytest.raises(ValidationError, match="RFC 6901"):
        make(op)


def test_unknown_operation_fields_are_rejected() -> None:
    """A misspelt operation member ('valeu') is an error, not silently ignored."""
    with pytest.raises(ValidationError, match="valeu"):
        make({"op": "add", "path": "/a", "value": 1, "valeu": 2})


@pytest.mark.parametrize("kind", ["", "Prompt", "with space", "1st"])
def test_kind_is_a_lower_case_identifier(kind: str) -> None:
    """kind must be a short lower-case identifier."""
    with pytest.raises(ValidationError, match="kind"):
        make({"op": "remove", "path": "/a"}, kind=kind)


def test_apply_returns_a_patched_copy() -> None:
    """apply returns the patched state and leaves the given state untouched."""
    state = {"a": {"b": [1, 2]}, "c": "x"}
    before = copy.deepcopy(state)
    result = make(
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "move", "from": "/c", "path": "/d"},
    ).apply(state)
    assert result == {"a": {"b": [1, 2, 3]}, "d": "x"}
    assert state == before


def test_apply_handles_escaped_pointers() -> None:
    """'~0' and '~1' in a path address keys containing '~' and '/'."""
    result = make({"op": "replace", "path": "/a~1b/c~0d", "value": 2}).apply(
        {"a/b": {"c~d": 1}})
    assert result == {"a/b": {"c~d": 2}}


def test_apply_names_the_failing_operation() -> None:
    """An operation that cannot apply raises ValueError naming its position and path."""
    proposal = make(
        {"op": "replace", "path": "/a", "value": 1},
        {"op": "remove", "path": "/missing"},
    )
    with pytest.raises(ValueError, match=r"patch operation 1 \(remove '/missing'\)"):
        proposal.apply({"a": 0})


def test_apply_runs_test_operations() -> None:
    """A failing 'test' operation stops the patch with ValueError."""
    with pytest.raises(ValueError, match="patch operation 0"):
        make({"op": "test", "path": "/a", "value": 2}).apply({"a": 1})


def test_apply_keeps_the_state_an_object() -> None:
    """A patch that would turn the state into a non-object raises ValueError."""
    with pytest.raises(ValueError, match="not a JSON object"):
        make({"op": "replace", "path": "", "value": [1]}).apply({"a": 1})


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/l/-", "value": 1},
        {"op": "remove", "path": "/l/-"},
        {"op": "add", "path": "/s/0", "value": 1},
        {"op": "add", "path": "/n/x", "value": 1},
        {"op": "move", "from": "/o", "path": "/o/x"},
        {"op": "remove", "path": ""},
        {"op": "add", "path": "/l/01", "value": 1},
        {"op": "test", "path": "/l/-", "value": 1},
    ],
)
def test_apply_raises_only_value_error(op: dict[str, Any]) -> None:
    """Every way a well-formed operation can fail to apply surfaces as ValueError."""
    with pytest.raises(ValueError, match="patch operation 0"):
        make(op).apply({"l": [1], "s": "text", "n": None, "o": {}})


def test_dump_holds_rfc6902_operations() -> None:
    """A proposal's dump (what the ledger records) holds the operations as RFC 6902 JSON and
    validates back to an equal proposal."""
    proposal = make({"op": "move", "from": "/a", "path": "/b"},
                    {"op": "add", "path": "/c", "value": None})
    dumped = proposal.model_dump(mode="json")
    assert dumped["patch"] == [{"op": "move", "from": "/a", "path": "/b"},
                               {"op": "add", "path": "/c", "value": None}]
    assert gr.UpdateProposal.model_validate(dumped) == proposal
