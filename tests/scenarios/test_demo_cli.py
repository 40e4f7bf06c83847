"""``guardrails demo --list`` and ``guardrails demo NAME`` for the scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from guardrails._cli import main

SCENARIOS = ("community", "constitutional", "domain", "reasoning", "self_edit")


def test_list_names_every_scenario_with_its_summary() -> None:
    """``demo --list`` names each installed scenario beside its docstring's first paragraph."""
    result = CliRunner().invoke(main, ["demo", "--list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    for name in SCENARIOS:
        assert name in lines and f"Scenario ``{name}``" in lines[name]


@pytest.mark.slow
def test_demo_name_runs_a_scenario_and_ends_with_a_verified_ledger(tmp_path: Path) -> None:
    """``demo reasoning --workdir DIR`` prints its table and a verified ledger in DIR."""
    result = CliRunner().invoke(main, ["demo", "reasoning", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "verdict" in result.output and "verifies: True" in result.output
    assert (tmp_path / "reasoning-ledger.db").exists()
