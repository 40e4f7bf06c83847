"""The runtime path's unvalidated ``Response`` is indistinguishable from a validated one."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import guardrails as gr
from guardrails._messages import served_response

outputs = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
metadata = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.text(), max_size=4)


@given(outputs, st.text(min_size=1), metadata)
def test_a_served_response_equals_the_validated_one(output: Any, version: str,
                                                    meta: dict[str, Any]) -> None:
    """Fields, fields set, equality, dump, JSON, copies and pickling all agree."""
    fast = served_response(output, version, dict(meta))
    slow = gr.Response(output=output, version=version, metadata=dict(meta))
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert copy.deepcopy(fast) == slow
    assert fast.model_copy(update={"output": "x"}) == slow.model_copy(update={"output": "x"})


def test_a_served_response_is_frozen() -> None:
    """Assigning a field fails as on any ``Response``."""
    response = served_response("ok", "v", {})
    with pytest.raises(pydantic.ValidationError):
        response.output = "changed"  # type: ignore[misc]


def test_copies_of_a_served_response_do_not_share_the_fields_set() -> None:
    """Each response owns its fields-set, so a copy's update cannot leak into another."""
    first, second = served_response("a", "v", {}), served_response("b", "v", {})
    assert first.model_fields_set is not second.model_fields_set
