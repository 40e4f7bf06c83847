"""Completing a transition a crash left half-written: stored (compare-and-swap done) but not
in the ledger.

A transition is written store first, ledger second (``apply_action``), so a crash in between
leaves the store one move ahead. The store's state is then the truth of what every replica
already serves, and the repair writes the missing ledger entry for it, marked
``repaired``: it never undoes a move replicas may have acted on (an abort stays an abort). A
promotion is completed like any (compare-and-swap on the served version; aborted if another
version was promoted meanwhile), and an attempt whose *start* was never recorded (the gate
never reported its acceptance) is rolled back, since no ledger entry says it may serve.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..ledger import Ledger
from ._machine import Action, RolloutState
from ._policy import RolloutPolicy
from ._store import RolloutStore

ROLLOUT_EVENT = "rollout"
"""The ledger event kind of every rollout transition (start included)."""
_WINDOW = 256
_ATTEMPTS = 5


class Repair(BaseModel):
    """What ``repair`` found and did."""

    model_config = ConfigDict(frozen=True)

    state: RolloutState | None
    """The attempt's stored state afterwards (``None``: the store holds no rollout)."""
    action: str | None = None
    """The transition whose ledger entry was written (``None``: nothing was missing)."""
    problem: str | None = None
    """Set when the two disagree in a way no repair may settle (the ledger ahead of the store)."""


def last_entry(ledger: Ledger, attempt: str) -> dict[str, Any] | None:
    """The ledger's last rollout entry of ``attempt`` (scanning back from the end: transitions
    are recent, so this reads a few hundred entries, not the whole ledger)."""
    end = len(ledger)
    while end > 0:
        start = max(0, end - _WINDOW)
        found = None
        for entry in ledger.entries(start):
            if entry.index >= end:
                break
            body = entry.body
            if body.get("event") == ROLLOUT_EVENT and body.get("attempt") == attempt:
                found = body
        if found is not None:
            return found
        end = start
    return None


def _action(previous: dict[str, Any] | None, state: RolloutState) -> Action:
    if state.phase == "aborted":
        return "abort"
    if state.phase == "paused":
        return "pause"
    if previous is not None and previous.get("phase") == "paused":
        return "resume"
    return "advance"


def lag(ledger: Ledger, state: RolloutState) -> tuple[dict[str, Any] | None, bool]:
    """(the ledger's last entry of the attempt, whether it lags the stored ``state``)."""
    last = last_entry(ledger, state.attempt)
    return last, last is None or int(last.get("seq", -1)) < state.seq


def repair(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy,
           state: RolloutState | None = None) -> Repair:
    """Bring the ledger level with the store for ``state``'s attempt (default: the latest one).

    Idempotent, and safe to run in several processes at once: the missing entry is appended
    only if the ledger has not grown since the gap was seen (``record_event_at``), so two
    repairers of the same gap write it once; the one that lost looks again and finds nothing
    missing.
    """
    current = state
    for _ in range(_ATTEMPTS):
        current = store.get(state.attempt) if state is not None else store.latest()
        if current is None:
            return Repair(state=None)
        done = _repair_once(store, ledger, policy, current, len(ledger))
        if done is not None:
            return done
    return Repair(state=current, problem=(
        f"the ledger or the store kept moving during {_ATTEMPTS} repairs; run it again"))


def _repair_once(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy,
                 current: RolloutState, size: int) -> Repair | None:
    """One look at the gap between ``current`` and a ledger of ``size`` entries; ``None`` when
    another writer moved either first (look again)."""
    # The transition's own writers; _live imports this module, so not at the top.
    from ._live import _promote, transition_details

    last, behind = lag(ledger, current)
    if last is not None and int(last.get("seq", -1)) > current.seq:
        return Repair(state=current, problem=(
            f"the ledger records seq {last.get('seq')} of attempt {current.attempt[:12]} but the "
            f"store holds seq {current.seq}: the store was restored from an older copy; the "
            "ledger is the record, so fix the store's database by hand"))
    if not behind:
        return Repair(state=current)
    if last is None and current.phase != "promoted":
        if not current.final:
            rolled_back = current.model_copy(update={
                "phase": "aborted", "seq": current.seq + 1,
                "reason": "its start was never recorded in the ledger (a crash); rolled back"})
            if not store.swap(current, rolled_back):
                return None
            current = rolled_back
        action = "abort"
    else:
        action = _action(last, current)
        if current.phase == "promoted" and ledger.served_version() != current.candidate:
            _promote(store, ledger, policy, current, (), "repair")
            return None  # the ledger grew (or the store moved): record it at the next look
    details = transition_details(current, policy, action)
    if ledger.record_event_at(size, ROLLOUT_EVENT, **details, source="repair",
                              repaired=True) is None:
        return None
    return Repair(state=current, action=action)
