"""Red team: proposals built to exhaust the reviewer: huge, deeply nested, or self-amplifying.

``ProposalLimits`` bounds a proposal before anything parses, serialises or
applies it (operations, size, nesting), and bounds the state it produces while
it is applied (``copy`` can double the state with every operation). Each attack
is rejected with a ``proposal_limits`` finding naming the limit, quickly and in
little memory, and recorded in the ledger as a summary (id and parent), never
with its body.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import guardrails as gr
from guardrails.testing import DictClient

MakeGuard = Callable[..., gr.Guard]
LIMITS = gr.ProposalLimits(max_bytes=1 << 20, max_state_bytes=1 << 20)
"""The default operations and depth, with 1 MiB proposals and states (the defaults are 4 and
32 MiB): the work to refuse a proposal is bounded by the limits, so smaller limits keep these
tests fast; the defaults are exercised by the last tests."""


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return value


def raw(parent: str, *ops: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"parent": parent, "patch": list(ops), **fields}


def self_referencing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


ATTACKS: dict[str, tuple[Callable[[str], Any], str]] = {
    # name: (builds the proposal from the parent, raw JSON or an object; the limit it hits)
    "a hundred thousand operations": (lambda p: raw(p, *(
        {"op": "add", "path": f"/k{i}", "value": i} for i in range(100_000))), "max_ops"),
    "a 64 MB value": (lambda p: raw(p, {"op": "add", "path": "/blob", "value": "x" * 64_000_000}),
                      "max_bytes"),
    "a 64 MB rationale": (lambda p: gr.UpdateProposal(parent=p, rationale="r" * 64_000_000, patch=[
        {"op": "add", "path": "/x", "value": 1}]), "max_bytes"),
    "three million small values": (lambda p: raw(p, {"op": "add", "path": "/list",
                                                     "value": [0] * 3_000_000}), "max_bytes"),
    "250,000 keys": (lambda p: raw(p, {"op": "add", "path": "/map",
                                       "value": {f"k{i}": [i] for i in range(250_000)}}),
                     "max_bytes"),
    "nesting 100,000 deep (raw JSON)": (lambda p: raw(p, {"op": "add", "path": "/deep",
                                                          "value": nested(100_000)}), "max_depth"),
    "nesting 5,000 deep (a proposal object)": (lambda p: gr.UpdateProposal(parent=p, patch=[
        {"op": "add", "path": "/deep", "value": nested(5_000)}]), "max_depth"),
    "a self-referencing value": (lambda p: raw(p, {"op": "add", "path": "/loop",
                                                   "value": self_referencing()}), "max_depth"),
    "deepening one level per operation": (lambda p: raw(p, *(
        {"op": "add", "path": "/d" * (i + 1), "value": {}} for i in range(500))), "max_depth"),
    "a copy bomb (each copy doubles the state)": (lambda p: raw(p, *(
        {"op": "copy", "from": "", "path": f"/c{i}"} for i in range(40))), "max_state_bytes"),
    "a copy that nests the state in itself": (lambda p: raw(p, *(
        {"op": "copy", "from": "/answers", "path": "/answers/x" + "/x" * i}
        for i in range(200))), "max_depth"),
}
BODY_LIMITS = {"a hundred thousand operations", "a 64 MB value", "a 64 MB rationale",
               "three million small values", "250,000 keys", "nesting 100,000 deep (raw JSON)",
               "nesting 5,000 deep (a proposal object)", "a self-referencing value"}
"""Attacks over a limit of the proposal itself (the rest are caught while it is applied)."""


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_oversized_proposal_is_rejected_quickly_in_bounded_memory(
        name: str, make_guard: MakeGuard, state: dict[str, Any]) -> None:
    """Rejected with a proposal_limits finding naming the limit, within a second and a few
    MiB; recorded without its body when the proposal itself is over a limit; the ledger
    verifies and the incumbent keeps serving."""
    build, limit = ATTACKS[name]
    guarded = make_guard(proposal_limits=LIMITS).wrap(DictClient(state))
    proposal = build(guarded.version)
    started = time.perf_counter()
    decision = guarded.propose(proposal)
    elapsed = time.perf_counter() - started
    assert not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "proposal_limits", decision.reasons
    assert decision.deciding_finding.evidence["limit"] == limit
    assert limit in decision.reasons[0]
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert decision.entry_index is not None
    entry = next(iter(guarded.ledger.entries(decision.entry_index)))
    if name in BODY_LIMITS:
        assert set(entry.body["proposal"]) <= {"id", "parent", "omitted"}
    assert len(gr.canonical_json(entry.body)) < 1 << 20
    assert guarded.ledger.verify().ok
    assert guarded.invoke("2+2").output == "4"

    # The same review again, tracing allocations: what rejecting it costs in memory.
    proposal = build(guarded.version)
    tracemalloc.start()
    try:
        guarded.propose(proposal)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB at peak"


def test_a_model_proposing_an_oversized_update_gets_the_same_treatment(
        make_guard: MakeGuard, state: dict[str, Any]) -> None:
    """Through self_improve, the model's own oversized proposal is rejected, not raised."""
    client = DictClient(state)
    client.queue({"op": "add", "path": "/deep", "value": nested(10_000)})
    guarded = make_guard().wrap(client)
    decision = guarded.self_improve()
    assert decision is not None and not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.evidence["limit"] == "max_depth"


def test_a_proposal_at_the_limits_is_evaluated_normally(make_guard: MakeGuard,
                                                        state: dict[str, Any]) -> None:
    """The control: 1,000 operations and a value nested 60 deep are within the defaults and
    are reviewed (and here accepted) as usual."""
    guarded = make_guard().wrap(DictClient(state))
    ops = [{"op": "add", "path": f"/memo{i}", "value": i} for i in range(999)]
    ops.append({"op": "add", "path": "/deep", "value": nested(29)})  # 58 levels, plus the root
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=ops))
    assert decision.accepted, decision.reasons


def test_the_limits_are_part_of_the_guard_and_validated() -> None:
    """ProposalLimits is frozen and checked; the guard refuses anything else."""
    with pytest.raises(ValueError, match="max_depth"):
        gr.ProposalLimits(max_depth=10_000)
    with pytest.raises(gr.ConfigError, match="ProposalLimits"):
        gr.Guard(canaries=[gr.CanaryCase(id="a", input="a", expect="a")],
                 proposal_limits={"max_ops": 5})  # type: ignore[arg-type]
