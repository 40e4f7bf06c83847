"""examples/rollout_digits.py on a real self-training model: the ledger and the rollout status
tell the story the example prints (one promotion on live evidence, one rollback in shadow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import guardrails as gr

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_rollout_example_promotes_one_candidate_and_rolls_back_the_other(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Candidate 1, better live, goes shadow -> 5 -> 25 -> 50 -> 100 % and is served;
    candidate 2, better on the canaries and worse live, is aborted in shadow, before any user
    was assigned to it, and never serves; the ledger tells the same story."""
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("rollout_digits",
                                                  ROOT / "examples" / "rollout_digits.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.run(tmp_path, 3)
    printed = capsys.readouterr().out
    assert "rolled back" in printed
    ledger = gr.SQLiteLedger(tmp_path / ".guardrails" / "ledger.db")
    events = [e.body for e in ledger.entries() if e.body.get("event") == "rollout"]
    starts = [i for i, e in enumerate(events) if e["action"] == "start"]
    assert len(starts) == 2
    second = events[starts[1]:]
    assert [e["action"] for e in second] == ["start", "abort"]
    assert second[-1]["weight"] == 0.0 and second[0]["phase"] == "shadow"
    assert ledger.served_version() != second[0]["candidate"]
    first = events[:starts[1]]
    assert [e["action"] for e in first] == ["start", "advance", "advance", "advance", "advance"]
    assert first[0]["phase"] == "shadow" and first[-1]["phase"] == "promoted"
    promoted = [e for e in ledger.entries() if e.decision is not None and e.decision.accepted]
    assert promoted[-1].decision.kind == "rollout"  # type: ignore[union-attr]
    assert promoted[-1].decision.candidate == first[0]["candidate"]  # type: ignore[union-attr]
    assert ledger.served_version() == first[0]["candidate"]
