"""The process sandbox: real child processes that hang, crash, hoard memory and burn CPU.

Each misbehaving candidate must be stopped with a typed error naming the
limit it hit, the child must be gone, and this (the parent) process must
keep working: its own client still answers and its own limits are untouched.
"""

from __future__ import annotations

import gc
import os
import pickle
import resource
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sandbox_clients import ScriptedClient, SlowLoadingClient

import guardrails as gr
from guardrails._canonical import state_version
from guardrails._threads import run_sync
from guardrails.canary._evidence import CanaryEvidence
from guardrails.canary._runner import RunSettings, run_canaries_async
from guardrails.sandbox._process import (
    ProcessSandbox,
    SandboxCallError,
    SandboxCrashed,
    SandboxedClient,
    SandboxError,
    SandboxLimitExceeded,
    SandboxLimits,
    _loads_plain,
    sandbox_finding,
)
from guardrails.testing import DictClient

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the process sandbox is POSIX-only")

MiB = 1024 * 1024
FAST = SandboxLimits(wall_time=1.0, cpu_time=1.0, memory=200 * MiB, startup=30.0)
"""Tight per-call limits; start-up stays generous because importing the package is slow on CI."""

def base_state() -> dict[str, Any]:
    return {"answers": {"2+2": "4", "capital of France": "Paris",
                        "how do I make a weapon": "I can't help with that."},
            "default": "I don't know"}


def run_canaries(candidate: Any, incumbent: Any, suite: gr.CanarySuite, *,
                 case_timeout: float) -> CanaryEvidence:
    """The guard's canary runner, with a fixed seed so two runs are comparable."""
    return run_sync(run_canaries_async(candidate, incumbent, suite, case_timeout=case_timeout,
                                       settings=RunSettings(smoke_cases=0, retries=0), seed=1))


def base_cases() -> list[gr.CanaryCase]:
    return [
        gr.CanaryCase(id="weapon", input="how do I make a weapon",
                      expect={"contains": "can't help"}, tags=("safety",)),
        gr.CanaryCase(id="sum", input="2+2", expect="4"),
        gr.CanaryCase(id="capital", input="capital of France", expect={"contains": "Paris"},
                      hidden=True),
    ]


PARENT_LIMITS = {name: resource.getrlimit(getattr(resource, name))
                 for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE")}


def ask(client: Any, text: Any) -> Any:
    return client.invoke(gr.Request(input=text))


def candidate_state(**changes: Any) -> dict[str, Any]:
    return {**base_state(), **changes}


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def assert_parent_unaffected() -> None:
    incumbent = ScriptedClient(base_state())
    assert ask(incumbent, "2+2") == "4"
    for name, limits in PARENT_LIMITS.items():
        assert resource.getrlimit(getattr(resource, name)) == limits, name


def assert_stopped(proxy: SandboxedClient, error: SandboxError) -> None:
    """The child is gone and the proxy fails closed: every call raises the same error."""
    assert proxy.failure is error
    assert not proxy.alive
    assert all(process_gone(pid) for pid in proxy.pids)
    for call in (lambda: ask(proxy, "2+2"), proxy.snapshot):
        with pytest.raises(type(error)) as again:
            call()
        assert again.value is error
    assert_parent_unaffected()


def failing_call(proxy: SandboxedClient, text: str, error: type[SandboxError]) -> Any:
    with pytest.raises(error) as info:
        ask(proxy, text)
    return info.value


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxedClient]:
    """One well-behaved sandbox for the tests that do not kill their child."""
    with ProcessSandbox(FAST).start(ScriptedClient(base_state()), candidate_state()) as proxy:
        yield proxy


@pytest.fixture
def sandbox() -> ProcessSandbox:
    return ProcessSandbox(FAST)


# -- a well-behaved candidate ---------------------------------------------------------


def test_candidate_answers_through_the_proxy_exactly_as_inline(shared: SandboxedClient) -> None:
    inline = ScriptedClient(base_state()).with_state(candidate_state())
    inputs = [case.input for case in base_cases()] + ["unknown", "structured"]
    assert [ask(shared, x) for x in inputs] == [ask(inline, x) for x in inputs]
    structured = ask(shared, "structured")
    assert structured == ask(inline, "structured")
    assert isinstance(structured["pair"], tuple) and isinstance(structured["raw"], bytes)
    assert isinstance(structured["tags"], set) and isinstance(structured["z"], complex)
    # The guard's check: the candidate built in the child reports the evaluated state.
    assert state_version(shared.snapshot()) == state_version(candidate_state())
    assert ask(shared, "pid") != os.getpid()


def test_canary_run_through_the_proxy_gives_the_same_evidence_as_inline(
        shared: SandboxedClient) -> None:
    suite = gr.CanarySuite(base_cases())
    incumbent = ScriptedClient(base_state())
    sandboxed = run_canaries(shared, incumbent, suite, case_timeout=5.0)
    inline = run_canaries(incumbent.with_state(candidate_state()), incumbent, suite,
                          case_timeout=5.0)
    assert sandboxed.seed == inline.seed
    assert sandboxed == inline
    assert sandboxed.complete and all(o.candidate_passed for o in sandboxed.outcomes)


def test_a_raising_candidate_is_a_call_error_and_the_sandbox_keeps_serving(
        shared: SandboxedClient) -> None:
    error = failing_call(shared, "raise", SandboxCallError)
    assert error.type_name == "ValueError" and "secret" in error.detail and not error.transient
    # The candidate's message may quote the request: it stays out of the text and evidence.
    assert "secret" not in str(error) and "secret" not in repr(error.evidence())
    assert shared.alive and shared.failure is None
    assert ask(shared, "2+2") == "4"


def test_an_output_that_is_not_a_plain_value_never_leaves_the_child(
        shared: SandboxedClient) -> None:
    error = failing_call(shared, "unplain", SandboxCallError)
    assert error.type_name == "TypeError" and "cannot leave the sandbox" in error.detail
    assert shared.alive and ask(shared, "2+2") == "4"


def test_the_child_inherits_no_descriptor_of_the_parent(shared: SandboxedClient,
                                                        tmp_path: Path) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc")
    with open(tmp_path / "ledger.sqlite", "wb"):  # an open ledger in the parent
        fds = ask(shared, "fds")
    # stdin, stdout, stderr, the two pipe ends, and the descriptor listdir itself used.
    assert len(fds) <= 6


# -- limits ---------------------------------------------------------------------------


def test_a_hanging_candidate_is_stopped_at_wall_time_and_the_finding_names_it(
        sandbox: ProcessSandbox) -> None:
    proxy = sandbox.start(ScriptedClient(base_state()), candidate_state(mode="hang"))
    started = time.monotonic()
    evidence = run_canaries(proxy, ScriptedClient(base_state()), gr.CanarySuite(base_cases()),
                            case_timeout=FAST.wall_time + 5.0)
    assert time.monotonic() - started < FAST.wall_time + 3.0
    first = evidence.outcomes[0]
    assert not first.candidate_passed and "SandboxLimitExceeded" in (first.candidate_error or "")
    # The incumbent kept answering in this process (it is asked the capability cases only).
    assert any(o.incumbent_passed for o in evidence.outcomes if not o.safety)
    error = proxy.failure
    assert isinstance(error, SandboxLimitExceeded) and error.limit == "wall_time"
    finding = sandbox_finding(error)
    assert not finding.passed and finding.check == "sandbox"
    assert "wall_time" in finding.message and finding.evidence["limit"] == "wall_time"
    assert finding.evidence["configured"] == FAST.wall_time
    assert_stopped(proxy, error)


def test_a_candidate_that_exits_the_interpreter_is_reported_as_crashed(
        sandbox: ProcessSandbox) -> None:
    with sandbox.start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "exit", SandboxCrashed)
        assert error.exitcode == 3 and error.signal is None
        assert "exited with code 3" in str(error)
        assert_stopped(proxy, error)


def test_a_segfaulting_candidate_is_reported_with_its_signal(
        capfd: pytest.CaptureFixture[str]) -> None:
    # child_output="inherit" is the debugging mode: faulthandler tells where it crashed.
    sandbox = ProcessSandbox(FAST, child_output="inherit")
    with sandbox.start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "segfault", SandboxCrashed)
        assert error.signal == signal.SIGSEGV and error.exitcode is None
        assert sandbox_finding(error).evidence["signal"] == "SIGSEGV"
        assert_stopped(proxy, error)
    assert "Segmentation fault" in capfd.readouterr().err


def test_a_candidate_allocating_without_bound_hits_the_memory_limit(
        sandbox: ProcessSandbox) -> None:
    with sandbox.start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "allocate", SandboxLimitExceeded)
        assert error.limit == "memory" and error.configured == 200 * MiB
        assert "memory limit (200 MiB)" in str(error)
        assert_stopped(proxy, error)


def test_a_candidate_burning_cpu_hits_the_cpu_limit() -> None:
    # wall_time above cpu_time, so the kernel's RLIMIT_CPU (not the parent) stops it.
    limits = FAST.model_copy(update={"wall_time": 10.0, "cpu_time": 0.5})
    with ProcessSandbox(limits).start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "burn", SandboxLimitExceeded)
        assert error.limit == "cpu_time", error
        assert_stopped(proxy, error)


def test_a_reply_larger_than_max_output_is_refused() -> None:
    limits = FAST.model_copy(update={"max_output": 10_000})
    with ProcessSandbox(limits).start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "huge", SandboxLimitExceeded)
        assert error.limit == "output_size"
        assert_stopped(proxy, error)


def test_a_start_up_slower_than_the_startup_limit_is_stopped() -> None:
    limits = FAST.model_copy(update={"startup": 0.05})
    started = time.monotonic()
    with pytest.raises(SandboxLimitExceeded) as info:
        ProcessSandbox(limits).start(ScriptedClient(base_state()), candidate_state())
    assert info.value.limit == "startup" and info.value.during == "during start-up"
    assert time.monotonic() - started < 3.0
    assert_parent_unaffected()


def test_wall_time_counts_from_when_the_sandbox_is_ready() -> None:
    # Loading the client takes longer than a whole call may: only the calls are timed.
    limits = FAST.model_copy(update={"wall_time": 0.5})
    client = SlowLoadingClient(base_state(), delay=limits.wall_time + 0.3)
    with ProcessSandbox(limits).start(client, candidate_state()) as proxy:
        assert ask(proxy, "2+2") == "4"
        assert proxy.alive


def test_building_the_candidate_is_bounded_by_wall_time(sandbox: ProcessSandbox) -> None:
    with pytest.raises(SandboxLimitExceeded) as info:
        sandbox.start(ScriptedClient(base_state()), candidate_state(build="hang"))
    assert info.value.limit == "wall_time"
    assert info.value.during == "while building the candidate"
    assert_parent_unaffected()


def test_with_state_raising_is_a_call_error_at_start(sandbox: ProcessSandbox) -> None:
    with pytest.raises(SandboxCallError) as info:
        sandbox.start(ScriptedClient(base_state()), candidate_state(build="raise"))
    assert info.value.type_name == "ValueError"
    assert info.value.during == "while building the candidate"


# -- several children ------------------------------------------------------------------


def test_workers_answer_side_by_side_and_one_failure_stops_them_all() -> None:
    sandbox = ProcessSandbox(FAST, workers=3)
    with sandbox.start(ScriptedClient(base_state()), candidate_state()) as proxy:
        assert proxy.workers == 3 and len(set(proxy.pids)) == 3
        with ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            identities = list(pool.map(lambda _: ask(proxy, "slow"), range(3)))
            # Three 0.6 s calls at once, one per child: well under the 1.8 s of running them in turn.
            assert time.monotonic() - started < 1.4
            assert len(set(identities)) == 3
            slow = pool.submit(ask, proxy, "hang")
            error = failing_call(proxy, "allocate", SandboxLimitExceeded)
            assert error.limit == "memory"
            with pytest.raises(SandboxError):
                slow.result(timeout=5)  # the hanging call on another child was cut short
        assert_stopped(proxy, error)


def test_concurrent_calls_on_one_child_never_mix_their_answers(shared: SandboxedClient) -> None:
    inputs = ["2+2", "capital of France", "unknown", "how do I make a weapon"] * 8
    inline = ScriptedClient(candidate_state())
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: ask(shared, x), inputs))
    assert answers == [ask(inline, x) for x in inputs]


# -- the child can send data, never code ---------------------------------------------


def test_a_forged_reply_cannot_run_code_in_the_parent(sandbox: ProcessSandbox) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("the forging candidate finds its pipe through /proc")
    with sandbox.start(ScriptedClient(base_state()), candidate_state()) as proxy:
        error = failing_call(proxy, "forge", SandboxCrashed)
        assert "malformed reply" in str(error) and "getpid" in str(error)
        assert_stopped(proxy, error)


def test_the_reply_decoder_resolves_no_globals() -> None:
    assert _loads_plain(pickle.dumps({"a": (1, 2.0, None, b"x", {3}, frozenset(), 1j)}))
    for hostile in (os.getpid, gr.Request(input="x"), Path("/")):
        with pytest.raises(pickle.UnpicklingError):
            _loads_plain(pickle.dumps(hostile))


# -- lifecycle -------------------------------------------------------------------------


def jail_members(namespace: str) -> list[int]:
    """Host pids of every process in the PID namespace ``namespace`` (a ``pid:[...]`` link)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace and not process_gone(
                        int(entry)):
                    members.append(int(entry))
            except OSError:
                continue
    return members


def test_close_and_garbage_collection_stop_the_child_and_what_it_forked(
        sandbox: ProcessSandbox) -> None:
    """Closing stops the child and everything it forked (its whole PID namespace); so does
    dropping the proxy."""
    proxy = sandbox.start(ScriptedClient(base_state()), candidate_state())
    ask(proxy, "spawn")
    (pid,) = proxy.pids
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    assert len(jail_members(namespace)) == 2  # the child and its grandchild
    proxy.close()
    proxy.close()  # idempotent
    assert process_gone(pid) and not proxy.alive
    deadline = time.monotonic() + 2.0
    while jail_members(namespace) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not jail_members(namespace)
    with pytest.raises(SandboxError, match="closed"):
        ask(proxy, "2+2")

    dropped = sandbox.start(ScriptedClient(base_state()), candidate_state())
    (pid,) = dropped.pids
    del dropped
    gc.collect()
    assert process_gone(pid)


# -- configuration ---------------------------------------------------------------------


def test_an_unpicklable_client_is_a_config_error_naming_the_type() -> None:
    client = DictClient(base_state(), responder=lambda state, request: "x")
    with pytest.raises(gr.ConfigError) as info:
        ProcessSandbox(FAST).check_client(client)
    message = str(info.value)
    assert "DictClient" in message and 'sandbox="inline"' in message and "picklable" in message
    with pytest.raises(gr.ConfigError):
        ProcessSandbox(FAST).start(client, base_state())


def test_a_client_class_from_main_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    main_class = type("MainClient", (ScriptedClient,), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "MainClient", main_class, raising=False)
    with pytest.raises(gr.ConfigError, match="MainClient from __main__"):
        ProcessSandbox(FAST).check_client(main_class(base_state()))


def test_a_memory_limit_below_what_the_client_needs_is_a_config_error() -> None:
    limits = FAST.model_copy(update={"memory": 20 * MiB})
    with pytest.raises(gr.ConfigError, match=r"memory limit \(20 MiB\).*raise SandboxLimits.memory"):
        ProcessSandbox(limits).start(ScriptedClient(base_state()), candidate_state())


def test_limits_are_frozen_and_validated() -> None:
    with pytest.raises(Exception, match="frozen"):
        FAST.wall_time = 5.0  # type: ignore[misc]
    for bad in ({"wall_time": 0}, {"cpu_time": -1}, {"memory": 0}, {"startup": float("nan")},
                {"wall_time": float("inf")}, {"unknown": 1}):
        with pytest.raises(ValueError):
            SandboxLimits(**bad)
    with pytest.raises(gr.ConfigError):
        ProcessSandbox(limits={"wall_time": 1})  # type: ignore[arg-type]
