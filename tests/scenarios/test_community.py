"""Scenario ``community``: signed contributions, a poisoned one from a trusted key, unsigned,
unknown-key and replayed ones, an outside contributor behind human approval; the exported
transparency log verifies with the standalone verifier. Every assertion reads the
scenario's own computation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from guardrails_plugins.demos import community
from guardrails_plugins.demos._report import ScenarioResult

pytestmark = pytest.mark.slow

VERIFIER = Path(__file__).parents[2] / "examples" / "scenarios" / "verify_transparency_log.py"
# Runs the verifier with the guardrails package made unimportable: it must stand alone.
WITHOUT_GUARDRAILS = ("import runpy, sys; sys.modules['guardrails'] = None; "
                      "sys.argv = [sys.argv[1], *sys.argv[2:]]; "
                      "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return community.run(tmp_path_factory.mktemp("community"), echo=lambda _: None)


def _verify(log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_GUARDRAILS, str(VERIFIER), str(log)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_without_the_guard_the_poisoned_weights_are_served(result: ScenarioResult) -> None:
    """Serving every contribution pushes the held-out error past the stated bound."""
    assert result.worst_unguarded > result.bound >= result.baseline


def test_with_the_guard_the_error_stays_within_it(result: ScenarioResult) -> None:
    """Behind the guard the held-out error never exceeds the bound."""
    assert result.worst_guarded <= result.bound


def test_unsigned_foreign_key_and_replayed_proposals_fail_provenance(result: ScenarioResult) -> None:
    """Three proposals are decided by the built-in ``provenance`` check with its Ed25519
    keyring: one unsigned, one signed by a key not in it, one replayed."""
    messages = [d.deciding_finding.message for d in result.decisions
                if d.deciding_finding is not None and d.deciding_finding.check == "provenance"]
    assert len(messages) == 3
    assert any("must be signed" in m for m in messages)
    assert any("does not verify" in m for m in messages)
    assert any("already decided" in m for m in messages)


def test_a_validly_signed_poisoned_proposal_fails_the_canaries(result: ScenarioResult) -> None:
    """Bob's signature verifies, and his poisoned weights are rejected on capability."""
    bob = next(d for d in result.decisions if d.source == "bob" and d.deciding_finding is not None
               and d.deciding_finding.check == "capability")
    assert any(f.check == "provenance" and f.passed for f in bob.findings)


def test_an_outside_contribution_is_served_only_after_approval(result: ScenarioResult) -> None:
    """Carol's proposal is accepted by a human approval, not by the gate alone."""
    carol = [d for d in result.decisions if d.source == "carol"]
    assert carol and carol[-1].accepted
    assert "human_approval" not in [f.check for f in carol[-1].findings if not f.passed]


def test_the_exported_log_verifies_without_the_library(result: ScenarioResult) -> None:
    """The standalone verifier, with guardrails unimportable, accepts the exported log."""
    assert result.ledger.ok
    done = _verify(Path(result.extra["log"]))
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "provenance" in done.stdout


def test_a_tampered_entry_fails_the_standalone_verifier(result: ScenarioResult, tmp_path: Path) -> None:
    """Changing one byte of one exported entry makes the verifier exit 1."""
    log = tmp_path / "log"
    subprocess.run(["cp", "-r", result.extra["log"], str(log)], check=True)
    entry = log / "entries" / "2.json"
    entry.write_bytes(entry.read_bytes().replace(b'"rejected"', b'"accepted"'))
    done = _verify(log)
    assert done.returncode == 1 and "NOT VERIFIED" in done.stderr


def test_ledger_export_writes_a_log_the_standalone_verifier_accepts(result: ScenarioResult,
                                                                   tmp_path: Path) -> None:
    """``guardrails ledger export LEDGER DIR`` on the scenario's ledger writes a verifiable log."""
    from click.testing import CliRunner

    from guardrails._cli import main

    ledger = Path(result.extra["log"]).parent / "community-ledger.db"
    done = CliRunner().invoke(main, ["ledger", "export", str(ledger), str(tmp_path / "log")])
    assert done.exit_code == 0, done.output
    assert _verify(tmp_path / "log").returncode == 0


def test_ledger_export_refuses_a_directory_that_is_not_empty(result: ScenarioResult,
                                                           tmp_path: Path) -> None:
    """Exporting into a non-empty directory exits 3 and says why; nothing is mixed."""
    from click.testing import CliRunner

    from guardrails._cli import main

    (tmp_path / "old").write_text("x")
    ledger = Path(result.extra["log"]).parent / "community-ledger.db"
    done = CliRunner().invoke(main, ["ledger", "export", str(ledger), str(tmp_path)])
    assert done.exit_code == 3 and "not empty" in done.output
