"""``GuardedClient``: a self-updating client behind the guard.

It opens from the ledger, serves the runtime path (``_runtime``), follows
other replicas' promotions, resolves approvals, and hands every proposal and
rollback to the gate's stage list; the gate calls back ``swap`` to promote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._canonical import state_version
from .._decision import Decision, Finding
from .._errors import ConfigError, LedgerIntegrityError
from .._messages import Request, Response
from .._telemetry import bound_log
from ..canary import Progress
from ..chain import build_async_chain, build_chain
from ..gate import (
    UpdateProposal,
    approve_pending,
    expire_pending,
    finish,
    reject_pending,
    report,
    review_proposal,
    review_rollback,
)
from ..ledger import Ledger, PendingApproval
from ._rollout import RolloutPath
from ._runtime import RuntimePath
from ._served import Served, serve
from ._streaming import StreamPath

if TYPE_CHECKING:
    from ._guard import Guard


class GuardedClient(RolloutPath, RuntimePath, StreamPath):
    """A self-updating client behind the guard. Built by ``Guard.wrap``.

    ``invoke``/``ainvoke`` pass the runtime chain, ``stream``/``astream`` the same
    chain as a stream (docs/streaming.md); ``propose``,
    ``self_improve`` and ``rollback`` pass the update gate and always return a
    recorded ``Decision`` (they do not raise for bad proposals).
    """

    def __init__(self, guard: Guard, client: Any) -> None:
        self.guard = guard
        self._telemetry = guard.telemetry
        self._review_lock = threading.RLock()
        self._blocked: Finding | None = None
        self._calls = 0
        self._served = self._open(client)
        try:
            self._chain = build_chain(guard.middleware, self._endpoint)
        except ConfigError as exc:
            # An async-only middleware: the guard still serves ainvoke; invoke says why not.
            self._chain = _refuse_sync(exc)
        self._achain = build_async_chain(guard.middleware, self._aendpoint)
        # A ledger that announces promotions (PostgresLedger) is followed off the hot path.
        subscribe = getattr(guard.ledger, "subscribe", None)
        self._following = callable(subscribe)
        if callable(subscribe):
            subscribe(self._follow)

    def _open(self, client: Any) -> Served:
        ledger = self.guard.ledger
        report = ledger.verify(self.guard.blob_store)
        if not report.ok:
            raise LedgerIntegrityError(
                f"refusing to serve from a ledger that does not verify: {report.problem}",
                index=report.index)
        state = client.snapshot()
        version = state_version(state)
        if report.size == 0:
            # Before genesis, so a misspelled pointer leaves no ledger behind.
            self.guard.constraints.check_pointers(state)
            failed = [f for f in self.guard.constraints.check_invariants(state) if not f.passed]
            if failed:
                raise ConfigError(f"the initial state breaks the constraints: {failed[0].message}")
            ledger.put_state(state)
            genesis = Decision.accept(
                [Finding(check="genesis", passed=True,
                         message="initial state recorded as the first anchor")],
                candidate=version, kind="genesis", source="operator", anchor=True)
            if ledger.promote(genesis, None) is not None:
                bound_log(version=version).info("guardrails.ledger_initialised")
                return serve(client, version, genesis.decided_at)
            # Another replica initialised the ledger first: serve what it recorded.
        served = ledger.served_version()
        assert served is not None  # a verified non-empty ledger has a genesis entry
        self.guard.constraints.check_pointers(
            state if version == served else ledger.get_state(served),
            "the served state (the ledger's)")
        if version != served:
            client = self._rebuild_from(client, served)
            bound_log(served=served, found=version).warning(
                "guardrails.restored_from_ledger",
                reason="the client's state differs from the ledger's served version")
        return serve(client, served, self._last_change())

    def _last_change(self) -> datetime | None:
        # Read back from the end in growing spans: the last acceptance is usually among the
        # last entries, and a replica following a long ledger must not re-read all of it.
        ledger = self.guard.ledger
        end, span = len(ledger), 64
        while end > 0:
            start, last = max(0, end - span), None
            for entry in ledger.entries(start):
                if entry.index >= end:
                    break
                decision = entry.decision
                if decision is not None and decision.accepted:
                    last = decision.decided_at
            if last is not None:
                return last
            end, span = start, span * 4
        return None

    def rebuild(self, version: str) -> Any:
        """A new client of ``version`` as the ledger records it, built from the served client."""
        return self._rebuild_from(self._served.client, version)

    def _rebuild_from(self, client: Any, version: str) -> Any:
        state = self.guard.ledger.get_state(version)
        rebuilt = client.with_state(state)
        found = state_version(rebuilt.snapshot())
        if found != version:
            raise LedgerIntegrityError(
                f"the client rebuilt from state {version[:12]} reports state {found[:12]}; "
                "its with_state/snapshot do not round-trip")
        return rebuilt

    @property
    def version(self) -> str:
        """The served version id: always the candidate of the last accepted ledger entry."""
        return self._served.version

    @property
    def client(self) -> Any:
        """The client object now serving (replaced, never mutated, by promotions)."""
        return self._served.client

    @property
    def ledger(self) -> Ledger:
        return self.guard.ledger

    def state(self) -> dict[str, Any]:
        """A copy of the served state, as recorded in the ledger."""
        return self.guard.ledger.get_state(self._served.version)

    def self_improve(self) -> Decision | None:
        """Ask the served model for its own update and review it; ``None`` if it has none."""
        try:
            proposal = self._served.client.propose_update()
        except Exception as exc:
            return finish(self.guard, Decision.error(
                "propose_update", f"the model's propose_update raised {type(exc).__name__}: {exc}",
                parent=self._served.version), None)
        if proposal is None:
            return None
        return self.propose(proposal)

    def propose(self, proposal: UpdateProposal | dict[str, Any], *,
                progress: Progress | None = None) -> Decision:
        """Review a proposal and promote it if, and only if, the gate accepts it.

        Never raises for a bad proposal or a failing candidate: the outcome is
        a recorded ``Decision`` whose findings say what decided it.
        ``progress(done, planned)`` is called after each canary case. The
        proposal passes ``guard.stages`` in order (see ``gate``).
        """
        with self._review_lock:
            return review_proposal(self.guard, self, proposal, self.guard.stages, progress)

    def swap(self, client: Any, version: str, decision: Decision) -> None:
        """Serve ``client`` as ``version`` from now on (the gate calls this after promoting)."""
        self._served = serve(client, version, decision.decided_at)

    def sync(self) -> bool:
        """Follow the ledger: serve its version if another process promoted one.

        Returns whether the served client changed. Runs on the integrity
        schedule and before every review; call it to follow at once.
        """
        with self._review_lock:
            served = self._served
            version = self.guard.ledger.served_version()
            if version is None or version == served.version:
                self._sync_rollout()
                return False
            client = self._rebuild_from(served.client, version)
            self._served = serve(client, version, self._last_change())
            bound_log(previous=served.version, served=version).info("guardrails.followed_ledger")
            self._sync_rollout()
            return True

    def _follow(self, version: str | None = None, *, wait: bool = True) -> None:
        """``sync()`` unless ``version`` is already served; logs instead of raising.

        Called on the integrity schedule and by the ledger's watcher thread
        (``subscribe``): a store that cannot be read leaves the current
        version serving. ``wait=False`` (the runtime path) skips the sync while
        a review or approval holds the review lock: a call never waits for a
        review, which syncs before it decides anyway.
        """
        if version is not None and version == self._served.version:
            return
        if not self._review_lock.acquire(blocking=wait):
            return
        try:
            self.sync()
        except Exception as exc:
            bound_log(served=self._served.version).warning(
                "guardrails.follow_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._review_lock.release()

    def pending(self) -> list[PendingApproval]:
        """Proposals waiting for a human (expired ones are rejected first)."""
        expire_pending(self.guard.ledger)
        return self.guard.ledger.pending()

    def approve(self, proposal_id: str, *, approver: str = "api") -> Decision:
        """Approve a waiting proposal: promoted as the new anchor if its parent is still served.

        Raises ``KeyError`` (unknown id) or ``ValueError`` (already resolved).
        """
        with self._review_lock:
            decision = approve_pending(self.guard.ledger, proposal_id, approver=approver)
            self.sync()
        return report(self.guard, decision)

    def reject(self, proposal_id: str, *, reason: str, approver: str = "api") -> Decision:
        """Reject a waiting proposal; same errors as ``approve``."""
        with self._review_lock:
            decision = reject_pending(self.guard.ledger, proposal_id, reason=reason,
                                      approver=approver)
        return report(self.guard, decision)

    def rollback(self, version: str) -> Decision:
        """Serve an earlier accepted version again, recorded as an operator decision.

        Rejected (never raised) when ``version`` was never accepted, is
        already served, or breaks today's constraints.
        """
        with self._review_lock:
            return review_rollback(self.guard, self, version)


def _refuse_sync(error: ConfigError) -> Callable[[Request], Response]:
    def refuse(request: Request) -> Response:
        raise ConfigError(str(error))

    return refuse
