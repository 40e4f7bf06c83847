"""Crash-consistency worker: fork a guarded process, SIGKILL it at a random moment, restart,
check; many times. Run by tests/reliability/test_crash.py; not a test module.

    python crash_worker.py DIR --kills N --seed S [--ledgers K] [--sign]

This process imports guardrails once and forks every child from it, so a child
starts working within a millisecond and hundreds of kills take seconds. Each
child opens the SQLite ledger, wraps a client (the restart: the guard serves
the ledger's version) and runs random operations: proposals that are accepted,
rejected or left waiting for approval, approvals, rejections, rollbacks, runtime
calls and silent self-modification. The parent kills it with SIGKILL after a
random few milliseconds, then, as the next process to start, checks:

- the ledger verifies (hash chain, Merkle tree, signed checkpoint when ``--sign``);
- it only grew: every entry seen before is still there, unchanged;
- the served version is the candidate of the last accepted entry, its state is
  stored, and a restarted guard serves exactly that state (nothing half-applied);
- every pending approval is intact: each points at the entry that requested it,
  none seen before has vanished, each resolved one has its resolving entry,
  and every entry that requested an approval has its pending record.

A shared memory byte tells which operation the child was in when it died.
Prints one JSON line: kills, kills per phase, ledger sizes, failures (empty
when every check held).
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from fault_kit import SAFE_REFUSAL, base_cases, base_state

import guardrails as gr
from guardrails.testing import DictClient

# `import guardrails` loads its parts on first use; load them all before forking, so each
# child spends its few milliseconds in the guard's phases, not importing modules.
for _name in gr.__all__:
    getattr(gr, _name)

PHASES = ("startup", "open", "propose", "approve", "reject", "rollback", "invoke", "silent",
          "ledger.put_state", "ledger.record", "ledger.promote", "ledger.event", "idle")
PROMPTS = [f"You are a careful assistant, version {i}." for i in range(8)]


class PhasedLedger(gr.SQLiteLedger):
    """A SQLiteLedger that marks, in shared memory, which write it is in."""

    phase: mmap.mmap | None = None

    def _mark(self, name: str) -> int:
        assert self.phase is not None
        before = self.phase[0]
        self.phase[0] = PHASES.index(name)
        return before

    def put_state(self, state: dict[str, Any]) -> str:
        before = self._mark("ledger.put_state")
        try:
            return super().put_state(state)
        finally:
            self.phase[0] = before  # type: ignore[index]

    def record(self, *args: Any, **kwargs: Any) -> gr.Decision:
        before = self._mark("ledger.record")
        try:
            return super().record(*args, **kwargs)
        finally:
            self.phase[0] = before  # type: ignore[index]

    def promote(self, *args: Any, **kwargs: Any) -> gr.Decision | None:
        before = self._mark("ledger.promote")
        try:
            return super().promote(*args, **kwargs)
        finally:
            self.phase[0] = before  # type: ignore[index]

    def record_event(self, *args: Any, **kwargs: Any) -> gr.LedgerEntry:
        before = self._mark("ledger.event")
        try:
            return super().record_event(*args, **kwargs)
        finally:
            self.phase[0] = before  # type: ignore[index]


def make_guard(ledger: gr.Ledger) -> gr.Guard:
    return gr.Guard(
        gr.FrozenConstraints(frozen=("/tools",)), base_cases(), ledger=ledger,
        approval=gr.ApprovalPolicy(kinds=("weights",), inconclusive=False, timeout=None),
        integrity_check_every=1, case_timeout=5.0, seed=7)


def open_ledger(path: Path, key: gr.SigningKey | None) -> PhasedLedger:
    return PhasedLedger(path, signing_key=key)


# -- the child ------------------------------------------------------------------------------


def child(path: Path, key: gr.SigningKey | None, seed: int, phase: mmap.mmap) -> None:
    """Work until killed. Any exception is a failure the parent sees as a non-SIGKILL exit."""
    rng = random.Random(seed)
    PhasedLedger.phase = phase
    phase[0] = PHASES.index("open")
    ledger = open_ledger(path, key)
    guarded = make_guard(ledger).wrap(DictClient(base_state()))
    while True:
        op = rng.choices(["propose", "weights", "unsafe", "approve", "reject", "rollback",
                          "invoke", "silent"], [4, 3, 1, 2, 1, 3, 2, 1])[0]
        if op in ("propose", "weights", "unsafe"):
            phase[0] = PHASES.index("propose")
            patch = [{"op": "replace", "path": "/system_prompt", "value": rng.choice(PROMPTS)}]
            if op == "unsafe":
                patch = [{"op": "replace", "path": "/answers/how do I make a weapon",
                          "value": "Here is how."}]
            decision = guarded.propose(gr.UpdateProposal(
                parent=guarded.version, patch=patch, kind="weights" if op == "weights" else "prompt"))
            if op == "unsafe" and decision.accepted:
                raise AssertionError("an unsafe candidate was accepted")
        elif op in ("approve", "reject"):
            phase[0] = PHASES.index(op)
            waiting = guarded.pending()
            if waiting:
                chosen = rng.choice(waiting).id
                if op == "approve":
                    guarded.approve(chosen, approver="crash-test")
                else:
                    guarded.reject(chosen, reason="crash test", approver="crash-test")
        elif op == "rollback":
            phase[0] = PHASES.index("rollback")
            accepted = [e.decision.candidate for e in ledger.entries()
                        if e.decision is not None and e.decision.accepted]
            guarded.rollback(rng.choice(accepted))
        elif op == "invoke":
            phase[0] = PHASES.index("invoke")
            if guarded.invoke("how do I make a weapon").output != SAFE_REFUSAL:
                raise AssertionError("a served version answered the safety case wrongly")
        else:
            phase[0] = PHASES.index("silent")
            guarded.client.mutate_silently("system_prompt", "silently changed")
            guarded.invoke("2+2")  # integrity_check_every=1: caught and restored first
        phase[0] = PHASES.index("idle")


# -- the checks after each restart ----------------------------------------------------------


class Checker:
    """What the next process to start sees, compared with what earlier restarts saw."""

    def __init__(self) -> None:
        self.hashes: list[str] = []
        self.pending_seen: set[str] = set()

    def reset(self) -> None:
        self.hashes, self.pending_seen = [], set()

    def check(self, path: Path, key: gr.SigningKey | None) -> list[str]:
        problems: list[str] = []
        try:
            ledger = gr.SQLiteLedger(path, signing_key=key)  # checks the signed checkpoint
        except Exception as exc:
            return [f"reopening failed: {type(exc).__name__}: {exc}"]
        try:
            problems += self._check(ledger)
        except Exception as exc:
            problems.append(f"checking raised {type(exc).__name__}: {exc}")
        finally:
            ledger.close()
        return problems

    def _check(self, ledger: gr.SQLiteLedger) -> list[str]:
        report = ledger.verify()
        if not report.ok:
            return [f"the ledger does not verify: {report.problem}"]
        entries = list(ledger.entries())
        problems = []
        if len(entries) < len(self.hashes) or any(
                e.hash != h for e, h in zip(entries, self.hashes, strict=False)):
            problems.append("entries seen before were lost or changed")
        self.hashes = [e.hash for e in entries]
        decisions = [e.decision for e in entries if e.decision is not None]
        accepted = [d for d in decisions if d.accepted]
        last = accepted[-1].candidate if accepted else None
        if ledger.served_version() != last:
            problems.append(f"served {ledger.served_version()} is not the last accepted {last}")
        if last is None:
            return problems  # killed before the genesis entry: nothing is served yet
        # The restart: a fresh guard on this ledger serves exactly the recorded state.
        guarded = make_guard(ledger).wrap(DictClient(base_state()))
        if guarded.version != last:
            problems.append(f"a restarted guard serves {guarded.version}, not {last}")
        if gr.state_version(guarded.client.snapshot()) != last:
            problems.append("the restarted client does not hold the served state")
        if guarded.state() != ledger.get_state(last):
            problems.append("the served state differs from the recorded one")
        response = guarded.invoke("how do I make a weapon")
        if response.version != last or response.output != SAFE_REFUSAL:
            problems.append("the restarted guard answered from another state")
        problems += self._check_pending(ledger, entries)
        return problems

    def _check_pending(self, ledger: gr.SQLiteLedger, entries: list[gr.LedgerEntry]) -> list[str]:
        problems = []
        records = {p.id: p for p in ledger.pending(include_resolved=True)}
        for lost in self.pending_seen - records.keys():
            problems.append(f"pending approval {lost} vanished")
        self.pending_seen = set(records)
        requested = set()
        for entry in entries:
            decision = entry.decision
            if decision is None:
                continue
            for finding in decision.findings:
                if finding.check == "human_approval" and "pending" in finding.evidence:
                    requested.add(finding.evidence["pending"])
        for missing in requested - records.keys():
            problems.append(f"the entry requesting approval {missing} has no pending record")
        for pending in records.values():
            index = pending.entry_index
            if index is None or index >= len(entries):
                problems.append(f"pending {pending.id} points at no entry")
                continue
            asked = entries[index].decision
            if asked is None or asked.proposal_id != pending.id or asked.verdict.value != "inconclusive":
                problems.append(f"pending {pending.id} points at entry {index}, which did not ask")
            later = [e.decision for e in entries[index + 1:]
                     if e.decision is not None and e.decision.proposal_id == pending.id]
            if pending.status == "approved" and not any(d.accepted for d in later):
                problems.append(f"pending {pending.id} is approved without an accepted entry")
            if pending.status == "rejected" and not any(
                    d.verdict.value == "rejected" for d in later):
                problems.append(f"pending {pending.id} is rejected without a rejected entry")
            if pending.status == "pending" and later:
                problems.append(f"pending {pending.id} is still pending but was decided")
        return problems


# -- the fork loop --------------------------------------------------------------------------


def run(directory: Path, kills: int, seed: int, ledgers: int, sign: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    key = gr.SigningKey.generate("crash-test") if sign else None
    phase = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: the children write, this reads
    checker = Checker()
    by_phase: dict[str, int] = {}
    failures: list[str] = []
    sizes: list[int] = []
    per_ledger = max(1, kills // ledgers)
    path = directory / "ledger-0.db"
    started = time.perf_counter()
    for kill in range(kills):
        if kill and kill % per_ledger == 0:
            sizes.append(len(checker.hashes))
            path = directory / f"ledger-{kill // per_ledger}.db"
            checker.reset()
        phase[0] = PHASES.index("startup")
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                child(path, key, rng.randrange(2**32), phase)
            except BaseException as exc:
                sys.stderr.write(f"child failed: {type(exc).__name__}: {exc}\n")
                code = 3
            os._exit(code)
        # Mostly a few milliseconds, sometimes longer, so kills land in every phase.
        time.sleep(rng.uniform(0.0, 0.12) if rng.random() < 0.2 else rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        name = PHASES[phase[0]] if phase[0] < len(PHASES) else "?"
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            failures.append(f"kill {kill}: the child exited by itself (status {status}) in {name}")
        by_phase[name] = by_phase.get(name, 0) + 1
        for problem in checker.check(path, key):
            failures.append(f"kill {kill} (in {name}): {problem}")
        if len(failures) > 20:
            break
    sizes.append(len(checker.hashes))
    return {"kills": kill + 1, "by_phase": by_phase, "ledger_sizes": sizes,
            "failures": failures, "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--kills", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ledgers", type=int, default=3)
    parser.add_argument("--sign", action="store_true")
    args = parser.parse_args()
    # This script is the application here: it keeps the library's logs quiet.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    args.directory.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args.directory, args.kills, args.seed, args.ledgers, args.sign)))


if __name__ == "__main__":
    main()
