"""``guardrails rollout``: the staged rollout as the ledger and the shared store record it
(status, advance, pause, resume, abort), no model needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ._errors import GuardrailsError

EXIT_NOT_DONE = 1
EXIT_CONFIG = 3
EXIT_NO_ROLLOUT = 4


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _open(config_path: Path, *, read_only: bool) -> tuple[Any, Any, Any]:
    """(policy, ledger, store) as the configuration names them; exit 3 when it cannot."""
    from ._config import load_config, open_ledger
    from .rollout import store_for

    try:
        config, root = load_config(config_path)
        ledger = open_ledger(config.ledger, root, str(config_path), read_only=read_only)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    report = ledger.verify()
    if not report.ok:
        _fail(f"THE LEDGER DOES NOT VERIFY: {report.problem}; nothing is shown or changed",
              EXIT_NOT_DONE)
    path = getattr(ledger, "path", None)
    if read_only and path is not None and not Path(f"{path}-rollout").exists():
        return config.rollout, ledger, None  # never rolled out; a reader creates nothing
    return config.rollout, ledger, store_for(ledger)


def _story(ledger: Any, attempt: str) -> list[dict[str, Any]]:
    return [{"entry": e.index, **{k: e.body.get(k) for k in (
        "action", "phase", "step", "weight", "seq", "reason", "source")}}
        for e in ledger.entries() if e.body.get("event") == "rollout"
        and e.body.get("attempt") == attempt]


@click.group("rollout")
def rollout_group() -> None:
    """The staged rollout of an accepted candidate on live traffic (docs/rollout.md)."""


@rollout_group.command("status")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
              default=Path("guardrails.toml"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--repair", is_flag=True, help="Write the ledger entry of a transition a crash "
              "left out (the store's state stands; a start never recorded is rolled back).")
def status(config_path: Path, as_json: bool, repair: bool) -> None:
    """The active (or last) rollout: phase, weight, evidence and its ledger entries (read-only
    unless --repair; exit 1 when the store and the ledger disagree)."""
    policy, ledger, store = _open(config_path, read_only=not repair)
    if repair and store is not None:
        _repair(policy, ledger, store)
    state = None if store is None else store.latest()
    if state is None:
        _emit({"rollout": None}, as_json, "no rollout recorded")
        return
    story = _story(ledger, state.attempt)
    evidence = store.evidence(state, 0.0)
    weight = state.weight(policy) if policy is not None else None
    data = {"attempt": state.attempt, "phase": state.phase, "step": state.step,
            "weight": weight, "candidate": state.candidate, "incumbent": state.incumbent,
            "reason": state.reason, "seq": state.seq, "served": ledger.served_version(),
            "evidence": {"pairs": evidence.pairs.model_dump(), "step_samples":
                         evidence.step_samples, "step_failures": evidence.step_failures},
            "ledger": story}
    text = [f"attempt    {state.attempt}", f"phase      {state.label()}"
            + ("" if weight is None else f"  ({weight:g} % of traffic to the candidate)"),
            f"candidate  {state.candidate}", f"incumbent  {state.incumbent}",
            f"served     {data['served']}", f"reason     {state.reason}",
            f"evidence   {evidence.pairs.n} pairs ({evidence.pairs.regressions} regressions, "
            f"{evidence.pairs.fixes} fixes); this step {evidence.step_samples} samples, "
            f"{evidence.step_failures} failed", "ledger:"]
    text += [f"  #{s['entry']:<5} {s['action']:<8} {s['phase']:<9} weight {s['weight']:g} %  "
             f"{s['reason']}" for s in story]
    _emit(data, as_json, "\n".join(text))
    if not story or story[-1]["seq"] != state.seq or story[-1]["phase"] != state.phase:
        _fail("the ledger's last rollout entry does not match the rollout store (a crash "
              "between the two writes?); run 'guardrails rollout status --repair'",
              EXIT_NOT_DONE)


def _repair(policy: Any, ledger: Any, store: Any) -> None:
    from .rollout import repair

    if policy is None:
        _fail("there is no [rollout] section to repair the rollout with; add it back "
              "(docs/rollout.md)", EXIT_CONFIG)
    fixed = repair(store, ledger, policy)
    if fixed.problem is not None:
        _fail(fixed.problem, EXIT_NOT_DONE)
    if fixed.action is not None and fixed.state is not None:
        click.echo(f"repaired: recorded the {fixed.action} of attempt {fixed.state.attempt[:12]} "
                   f"(now {fixed.state.label()}) that a crash had left out of the ledger", err=True)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _act(action: str, config_path: Path, reason: str, as_json: bool) -> None:
    from .rollout import InvalidTransition, operate

    policy, ledger, store = _open(config_path, read_only=False)
    if policy is None:
        _fail(f"{config_path}: there is no [rollout] section, so nothing is rolled out; add "
              "one (docs/rollout.md)", EXIT_CONFIG)
    state = store.active()
    if state is None:
        _fail("no rollout is in progress (guardrails rollout status shows the last one)",
              EXIT_NO_ROLLOUT)
    try:
        moved = operate(store, ledger, policy, state, action, reason)  # type: ignore[arg-type]
    except (InvalidTransition, RuntimeError) as exc:
        _fail(f"{exc}", EXIT_NOT_DONE)
    _emit(moved.summary(), as_json, f"{action}: attempt {moved.attempt[:12]} is now "
          f"{moved.label()} ({moved.weight(policy):g} % to the candidate)")


def _action_command(action: str, help_text: str) -> None:
    @rollout_group.command(action, help=help_text)
    @click.option("--reason", default="operator", show_default=True,
                  help="Why (recorded in the ledger).")
    @click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
                  default=Path("guardrails.toml"), show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    def command(reason: str, config_path: Path, as_json: bool) -> None:
        _act(action, config_path, reason, as_json)


_action_command("advance", "Move to the next step now (the last one promotes to 100 %).")
_action_command("pause", "Hold the current split; no verdict moves it until resume.")
_action_command("resume", "Let a paused rollout be judged again.")
_action_command("abort", "Send all traffic back to the incumbent (final; a retry is a new attempt).")
