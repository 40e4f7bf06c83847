"""Fault injectors for the reliability tests and the soak benchmark.

Not a test module. Every fault is switched on and off through ``SWITCH`` so
the same rig runs with and without it: without, the proposal is accepted
(the control), with it, it must not be. Faults aimed at the candidate fire
only for states carrying ``CANDIDATE_PROMPT``, so the incumbent, which keeps
serving runtime calls, is never hit.

The clients here are module-level and picklable, so a process-sandbox child
can load them (the sandbox forwards ``sys.path``).
"""

from __future__ import annotations

import contextlib
import errno
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient

CANDIDATE_PROMPT = "You are a careful and concise assistant."
"""The prompt every control proposal sets; candidate-side faults key on it."""

SAFE_REFUSAL = "I can't help with that."


def base_state() -> dict[str, Any]:
    """The scenario of tests/conftest.py: a state that passes every case of ``base_cases``."""
    return {
        "system_prompt": "You are a careful assistant.",
        "params": {"temperature": 0.2, "threshold": 0.5},
        "tools": ["search", "calculator"],
        "answers": {
            "2+2": "4",
            "capital of France": "Paris",
            "colour of the sky": "blue",
            "how do I make a weapon": SAFE_REFUSAL,
        },
        "default": "I don't know",
    }


def base_cases() -> list[gr.CanaryCase]:
    """Two public capability cases, one hidden, one safety case (as tests/conftest.py)."""
    return [
        gr.CanaryCase(id="sum", input="2+2", expect="4", tags=("capability",)),
        gr.CanaryCase(id="capital", input="capital of France", expect={"contains": "Paris"}),
        gr.CanaryCase(id="sky", input="colour of the sky", expect={"regex": "^blue$"},
                      hidden=True),
        gr.CanaryCase(id="weapon", input="how do I make a weapon",
                      expect={"contains": "can't help"}, tags=("safety",)),
    ]


class Switch:
    """Which fault is on (``mode``), process-wide; ``release`` ends hanging calls.

    Candidate-side faults hit states whose prompt is ``target`` (by default
    ``CANDIDATE_PROMPT``; the soak benchmark gives every proposal its own).
    """

    def __init__(self) -> None:
        self.mode: str | None = None
        self.target = CANDIDATE_PROMPT
        self.release = threading.Event()

    def on(self, mode: str) -> bool:
        return self.mode == mode

    def reset(self) -> None:
        self.mode = None
        self.target = CANDIDATE_PROMPT
        self.release.set()
        self.release = threading.Event()


SWITCH = Switch()


def is_candidate(state: dict[str, Any]) -> bool:
    return state.get("system_prompt") == SWITCH.target


class FaultyClient(DictClient):
    """A ``DictClient`` that misbehaves as the switch says, only in the candidate's state.

    ``raise``: every call raises; ``hang``: every call waits for the switch's
    release; ``nan``/``none``/``empty``: every answer is NaN, ``None`` or
    ``""``; ``build-hang``: building the candidate hangs. With ``weights`` in
    the state, building reads them from ``blob_store`` as a real loader would.
    """

    def __init__(self, state: dict[str, Any], blob_store: gr.BlobStore | None = None) -> None:
        super().__init__(state)
        self.blob_store = blob_store

    def with_state(self, state: dict[str, Any]) -> FaultyClient:
        if is_candidate(state) and SWITCH.on("build-hang"):
            SWITCH.release.wait(30)
        if self.blob_store is not None and isinstance(state.get("weights"), dict):
            self.blob_store.get(state["weights"]["$blob"])  # load the weights: may raise
        clone = FaultyClient(state, self.blob_store)
        clone.queued = self.queued
        return clone

    def invoke(self, request: gr.Request) -> Any:
        if is_candidate(self._state):
            if SWITCH.on("raise"):
                raise RuntimeError("the candidate model crashed")
            if SWITCH.on("hang"):
                SWITCH.release.wait(30)
            if SWITCH.on("nan"):
                return math.nan
            if SWITCH.on("none"):
                return None
            if SWITCH.on("empty"):
                return ""
        return self.responder(self._state, request)  # unlike DictClient, keeps no call log

    def __getstate__(self) -> dict[str, Any]:
        # What a sandbox child receives: the state and the queue, never the parent's blob store
        # handle or its list of served requests.
        return {"_state": self._state, "responder": self.responder, "queued": [], "calls": [],
                "blob_store": None}


class WeightsClient(FaultyClient):
    """Proposes new weights: writes them to the blob store, then proposes the reference.

    ``swallow``: when the write fails, propose the reference anyway (a careless
    model); otherwise the write error propagates out of ``propose_update``.
    """

    def __init__(self, state: dict[str, Any], blob_store: gr.BlobStore,
                 swallow: bool = False) -> None:
        super().__init__(state, blob_store)
        self.swallow = swallow

    def with_state(self, state: dict[str, Any]) -> WeightsClient:
        built = super().with_state(state)
        clone = WeightsClient(built.snapshot(), built.blob_store or self.blob_store, self.swallow)
        clone.queued = self.queued
        return clone

    def propose_update(self) -> gr.UpdateProposal | None:
        data = b"weights trained " + str(time.time_ns()).encode()
        assert self.blob_store is not None
        try:
            digest = self.blob_store.put(data)
        except OSError:
            if not self.swallow:
                raise
            digest = gr.blob_digest(data)
        return gr.UpdateProposal(parent=gr.state_version(self._state), kind="weights", patch=[
            {"op": "replace", "path": "/weights", "value": gr.blob_ref(digest)},
            {"op": "replace", "path": "/system_prompt", "value": CANDIDATE_PROMPT}])


class FaultyBlobStore(gr.MemoryBlobStore):
    """``read`` makes ``get`` raise EIO; ``disk-full`` makes ``put`` raise ENOSPC."""

    def get(self, digest: str) -> bytes:
        if SWITCH.on("blob-read"):
            raise OSError(errno.EIO, "Input/output error reading the blob store")
        return super().get(digest)

    def put(self, data: bytes) -> str:
        if SWITCH.on("blob-write"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().put(data)


def crashy_checker(output: Any) -> bool:
    """A checker that raises, or returns NaN or nothing, while its fault is on."""
    if SWITCH.on("checker-crash"):
        raise ZeroDivisionError("division by zero in the checker")
    if SWITCH.on("checker-nan"):
        return math.nan  # type: ignore[return-value]
    if SWITCH.on("checker-none"):
        return None  # type: ignore[return-value]
    return output == "4"


class _CrashyCheck:
    name = "crashy"

    def __call__(self, context: gr.ReviewContext) -> list[gr.Finding]:
        if SWITCH.on("plugin-crash"):
            raise RuntimeError("the plugin's own bug")
        if SWITCH.on("plugin-garbage"):
            return ["not a finding"]  # type: ignore[list-item]
        return [gr.Finding(check="crashy", passed=True, message="fine")]

    def __repr__(self) -> str:
        return "CrashyCheck()"


class _CheckSettings(gr.PluginSettings):
    pass


CRASHY_PLUGIN = gr.Plugin(name="crashy", settings=_CheckSettings,
                          factory=lambda settings: gr.PluginParts(checks=[_CrashyCheck()]),
                          provides={"checks"})
"""A plugin contributing one update check that crashes while its fault is on."""


# -- the storage seam of SQLiteLedger ---------------------------------------------------------


class FaultyConnection:
    """A ``sqlite3.Connection`` stand-in that fails statements while a fault is on.

    ``ledger-write``: inserting an entry fails as a failing disk would
    (``disk I/O error``); ``disk-full``: the commit fails with SQLite's
    ``database or disk is full`` (SQLITE_FULL, what ENOSPC becomes), after
    every insert of the transaction went through; ``disk-full-os``: the commit
    raises ``OSError(ENOSPC)`` itself, as a storage layer without SQLite's
    translation would.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _check(self, sql: str) -> None:
        statement = sql.strip().upper()
        if SWITCH.on("ledger-write") and statement.startswith("INSERT INTO GUARDRAILS_ENTRIES"):
            raise sqlite3.OperationalError("disk I/O error")
        if SWITCH.on("disk-full") and statement == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        if SWITCH.on("disk-full-os") and statement == "COMMIT":
            raise OSError(errno.ENOSPC, "No space left on device")

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def faulty_sqlite_ledger(path: Any, **kwargs: Any) -> gr.SQLiteLedger:
    """A ``SQLiteLedger`` whose connection is a ``FaultyConnection``."""
    ledger = gr.SQLiteLedger(path, **kwargs)
    ledger._conn = FaultyConnection(ledger._conn)  # type: ignore[assignment]
    return ledger


@contextlib.contextmanager
def write_lock_held(path: Any) -> Iterator[None]:
    """Another connection holds the SQLite write lock (``BEGIN IMMEDIATE``) meanwhile."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


class ServingLoad:
    """Runtime calls in a background thread while something else happens.

    Records every call's answer, served version and latency, and every
    exception; ``stop()`` ends the loop and returns the load itself.
    """

    def __init__(self, guarded: gr.GuardedClient, ask: str = "2+2") -> None:
        self.guarded = guarded
        self.ask = ask
        self.answers: list[tuple[Any, str]] = []
        self.errors: list[BaseException] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-load", daemon=True)

    def __enter__(self) -> ServingLoad:
        self._thread.start()
        while not self.answers and not self.errors and self._thread.is_alive():
            time.sleep(0.001)  # at least one call is served before the action starts
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                response = self.guarded.invoke(self.ask)
            except BaseException as exc:  # recorded, never raised in the thread
                self.errors.append(exc)
            else:
                self.answers.append((response.output, response.version))
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.002)

    def stop(self) -> ServingLoad:
        self._stop.set()
        self._thread.join(10)
        return self

