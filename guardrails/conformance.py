"""The conformance suite every client adapter passes (run it against your own).

Describe how to exercise your adapter with an ``AdapterCase`` and run the
checks, either all at once::

    from guardrails.conformance import AdapterCase, run_conformance

    failures = run_conformance(AdapterCase(name="mine", make_client=build, requests=["hi"]))
    assert failures == []

or as pytest tests, one per check, by subclassing ``ConformanceSuite`` in a
test module that provides an ``adapter_case`` fixture (parametrise the
fixture to run the suite over several adapters)::

    import pytest
    from guardrails.conformance import AdapterCase, ConformanceSuite

    @pytest.fixture
    def adapter_case() -> AdapterCase:
        return AdapterCase(name="mine", make_client=build, requests=["hi"],
                           prepare_proposal=lambda client: client.learn(...))

    class TestMyAdapter(ConformanceSuite):
        pass

What the checks hold an adapter to:

- ``snapshot`` is JSON, is a copy, and is stable while nothing changes;
- the snapshot round-trips through ``with_state`` (same version, same answers);
- ``with_state`` never mutates the original client;
- ``invoke`` through a guard returns what the unwrapped client returns
  (and ``ainvoke`` too, when the client has it);
- a proposal from ``propose_update`` names the current version as its
  parent, leaves the proposer unchanged, and applies as JSON Patch to the
  snapshot, giving a state ``with_state`` serves exactly;
- the guard can review that proposal end to end (no ``error`` verdict, the
  candidate builds in the sandbox);
- every blob the snapshot references is in the blob store;
- an unusable answer of the underlying model (no choices, empty text, a
  refusal, NaN: whatever the case's ``unusable`` clients produce) raises
  ``UnusableResponseError`` from ``invoke`` and ``ainvoke``, directly and
  through a guard, instead of returning ``''`` or ``None``.

For an adapter that streams (``stream`` and/or ``astream``; the checks pass
trivially for one that does not):

- every item is a ``StreamChunk`` or a ``str``, and the streamed text joins
  to the text ``invoke`` answers; through a guard, ``guarded.stream`` releases
  the same text and ends with a ``StreamEnd``;
- ``stream`` is a generator the guard can ``close()`` (``astream`` one it can
  ``aclose()``) after its first item, and closing it releases the upstream
  (``AdapterCase.stream_release`` says how to see that);
- streaming an unusable answer (``unusable``) or a broken upstream
  (``broken_streams``: a cut-off body, a malformed chunk) raises
  ``UnusableResponseError``, directly and through a guard, never a quietly
  shorter answer.

A stream-only adapter (``stream``/``astream`` and no ``invoke``) is held to
the same checks: wherever they call ``invoke`` they take its stream consumed
whole (``answer_whole``), which is what the guard and the canaries do.

No pytest import here: the module is usable from any test runner.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._canonical import canonical_json, state_version
from ._client import whole_answerer
from ._decision import Verdict
from ._errors import ConfigError, UnusableResponseError
from ._messages import Request, StreamChunk, StreamEnd
from .blobs import BlobStore, iter_blob_refs
from .canary import CanaryCase, Predicate
from .gate import UpdateProposal
from .guard import Guard

__all__ = [
    "CHECKS",
    "AdapterCase",
    "ConformanceError",
    "ConformanceSuite",
    "check_blob_refs_resolve",
    "check_broken_streams_raise",
    "check_gate_reviews_a_proposal",
    "check_guarded_invoke_matches_unwrapped",
    "check_proposals_apply_as_json_patch",
    "check_snapshot_is_json_and_stable",
    "check_snapshot_round_trips",
    "check_stream_close_releases_upstream",
    "check_stream_yields_chunks",
    "check_unusable_responses_raise",
    "check_with_state_does_not_mutate",
    "run_conformance",
]


class ConformanceError(AssertionError):
    """An adapter broke a rule of the protocol; the message says which and how."""


@dataclass(frozen=True)
class AdapterCase:
    """How to exercise one adapter.

    ``make_client()`` returns a *fresh* client each call; two fresh clients
    answer the same request the same way (use deterministic fakes).
    ``requests``: request inputs (JSON) the client answers. ``prepare_proposal
    (client)`` gives a client what it needs to propose an update (stream
    data, feedback); ``None`` when ``propose_update`` proposes without help.
    ``blob_store``: the store the client's blobs go to (give the guard the
    same one). ``compare(a, b)``: whether two outputs are the same answer
    (default ``==``). ``unusable``: name -> ``make_client()`` for a fresh
    client whose underlying model answers every request unusably (an empty
    text, no choices, a refusal, a NaN prediction: one entry per shape your
    adapter can meet); the suite fails when it is empty, since a gate fed
    ``''`` as an answer can be shown nothing and say yes.

    For a streaming adapter: ``broken_streams``: name -> ``make_client()`` for
    a fresh client whose upstream stream breaks (cut off before its end, a
    malformed chunk); ``stream_release()`` returns a fresh client and a
    predicate ``released()`` saying (it may wait a bounded time) whether the
    upstream the client opened was released after the suite closed the
    stream at its first item (``None``: the suite checks only that closing
    works).
    """

    name: str
    make_client: Callable[[], Any]
    requests: Sequence[Any]
    prepare_proposal: Callable[[Any], None] | None = None
    blob_store: BlobStore | None = None
    compare: Callable[[Any, Any], bool] = field(default=lambda a, b: bool(a == b))
    unusable: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    broken_streams: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    stream_release: Callable[[], tuple[Any, Callable[[], bool]]] | None = None

    def __post_init__(self) -> None:
        if not self.requests:
            raise ConfigError(f"adapter case {self.name!r}: give at least one request input")
        for value in self.requests:
            try:
                canonical_json(value)
            except ConfigError as exc:
                raise ConfigError(f"adapter case {self.name!r}: request {value!r} is not JSON "
                                  f"({exc})") from None

    def __repr__(self) -> str:  # the pytest id
        return self.name


def _fail(case: AdapterCase, message: str) -> ConformanceError:
    return ConformanceError(f"[{case.name}] {message}")


def _answers(case: AdapterCase, client: Any) -> list[Any]:
    answer = whole_answerer(client)
    return [answer(Request(input=value)) for value in case.requests]


def _same_answers(case: AdapterCase, left: list[Any], right: list[Any]) -> bool:
    return all(case.compare(a, b) for a, b in zip(left, right, strict=True))


def _propose(case: AdapterCase, client: Any) -> UpdateProposal:
    if case.prepare_proposal is not None:
        case.prepare_proposal(client)
    proposal = client.propose_update()
    if proposal is None:
        raise _fail(case, "propose_update() returned None after prepare_proposal; the suite "
                          "needs a proposal: make prepare_proposal give the client what it "
                          "learns from")
    if not isinstance(proposal, UpdateProposal):
        raise _fail(case, f"propose_update() returned {type(proposal).__name__}, not an "
                          "UpdateProposal")
    return proposal


def _guard(case: AdapterCase) -> Guard:
    cases = [CanaryCase(id=f"conformance-{i}", input=value,
                        expect=Predicate(fn=_any_answer, label="any answer"))
             for i, value in enumerate(case.requests)]
    return Guard(canaries=cases, blob_store=case.blob_store)


def _any_answer(output: Any) -> bool:
    return True


# -- the checks -------------------------------------------------------------------------------


def check_snapshot_is_json_and_stable(case: AdapterCase) -> None:
    """``snapshot`` is a JSON object, equal on two calls, and a copy the caller may change."""
    client = case.make_client()
    first = client.snapshot()
    if not isinstance(first, dict):
        raise _fail(case, f"snapshot() returned {type(first).__name__}, not a dict")
    try:
        encoded = canonical_json(first)
    except ConfigError as exc:
        raise _fail(case, f"snapshot() is not JSON: {exc}") from None
    if canonical_json(client.snapshot()) != encoded:
        raise _fail(case, "two snapshots of an unchanged client differ; a snapshot must be a "
                          "deterministic function of the state")
    first["__conformance__"] = True
    for value in first.values():
        if isinstance(value, dict):
            value["__conformance__"] = True
    if canonical_json(client.snapshot()) != encoded:
        raise _fail(case, "changing the dict snapshot() returned changed the client; return a "
                          "deep copy")


def check_snapshot_round_trips(case: AdapterCase) -> None:
    """``with_state(snapshot())`` reports the same version and answers the same."""
    client = case.make_client()
    state = client.snapshot()
    rebuilt = client.with_state(copy.deepcopy(state))
    if state_version(rebuilt.snapshot()) != state_version(state):
        raise _fail(case, "with_state(snapshot()).snapshot() has another version than "
                          "snapshot(); the state does not round-trip")
    if not _same_answers(case, _answers(case, client), _answers(case, rebuilt)):
        raise _fail(case, "a client rebuilt from its own snapshot answers differently; the "
                          "snapshot misses part of the state")


def check_with_state_does_not_mutate(case: AdapterCase) -> None:
    """Building a client on another state leaves the original's state and answers as they were."""
    client = case.make_client()
    before = client.snapshot()
    answers = _answers(case, client)
    proposer = client.with_state(copy.deepcopy(before))
    other = _propose(case, proposer).apply(before)
    built = client.with_state(copy.deepcopy(other))
    if state_version(client.snapshot()) != state_version(before):
        raise _fail(case, "with_state(other) changed the original client's state; it must "
                          "build a new client and leave self untouched")
    if state_version(built.snapshot()) != state_version(other):
        raise _fail(case, "the client built by with_state(other) does not report other")
    if not _same_answers(case, answers, _answers(case, client)):
        raise _fail(case, "the original client answers differently after with_state(other)")


def check_guarded_invoke_matches_unwrapped(case: AdapterCase) -> None:
    """``guard.wrap(client).invoke(x).output`` equals ``client.invoke(Request(input=x))``,
    and likewise for ``ainvoke`` when the client defines it."""
    plain, wrapped = case.make_client(), case.make_client()
    guarded = _guard(case).wrap(wrapped)
    for value in case.requests:
        expected = whole_answerer(plain)(Request(input=value))
        got = guarded.invoke(value).output
        if not case.compare(got, expected):
            raise _fail(case, f"through the guard invoke({value!r}) answered {got!r}, unwrapped "
                              f"{expected!r}")
    if callable(getattr(plain, "ainvoke", None)):
        async def both() -> list[tuple[Any, Any, Any]]:
            return [(value, await plain.ainvoke(Request(input=value)),
                     (await guarded.ainvoke(value)).output) for value in case.requests]

        for value, expected, got in asyncio.run(both()):
            if not case.compare(got, expected):
                raise _fail(case, f"through the guard ainvoke({value!r}) answered {got!r}, "
                                  f"unwrapped {expected!r}")


def check_proposals_apply_as_json_patch(case: AdapterCase) -> None:
    """A proposal names the current version, leaves the proposer unchanged, and applies as
    JSON Patch to the snapshot, giving a state that ``with_state`` serves exactly."""
    client = case.make_client()
    before = client.snapshot()
    proposal = _propose(case, client)
    if proposal.parent != state_version(before):
        raise _fail(case, "the proposal's parent is not the version of the client's snapshot")
    if state_version(client.snapshot()) != state_version(before):
        raise _fail(case, "propose_update() changed the client's state; it must work on a copy")
    try:
        candidate_state = proposal.apply(before)
    except ValueError as exc:
        raise _fail(case, f"the proposal does not apply to the snapshot: {exc}") from None
    if state_version(candidate_state) == state_version(before):
        raise _fail(case, "the proposal leaves the state unchanged")
    candidate = client.with_state(candidate_state)
    if state_version(candidate.snapshot()) != state_version(candidate_state):
        raise _fail(case, "with_state(patched state) reports another state; the promoted "
                          "digest would not be the evaluated one")


def check_gate_reviews_a_proposal(case: AdapterCase) -> None:
    """The guard reviews the client's own proposal end to end: a verdict that is not
    ``error``, a candidate built in the sandbox, and an accepted one served."""
    guarded = _guard(case).wrap(case.make_client())
    if case.prepare_proposal is not None:
        case.prepare_proposal(guarded.client)
    decision = guarded.self_improve()
    if decision is None:
        raise _fail(case, "self_improve() found no proposal after prepare_proposal")
    sandbox = [f for f in decision.findings if f.check == "sandbox" and not f.passed]
    if decision.verdict is Verdict.ERROR or sandbox:
        reason = (sandbox[0] if sandbox else decision.deciding_finding)
        raise _fail(case, f"the gate could not review the proposal: "
                          f"{reason.message if reason else decision.verdict.value}")
    if decision.accepted and guarded.version != decision.candidate:
        raise _fail(case, "an accepted proposal is not the served version")


def check_blob_refs_resolve(case: AdapterCase) -> None:
    """Every ``{"$blob": digest}`` in the snapshot is in ``case.blob_store``."""
    client = case.make_client()
    refs = list(iter_blob_refs(client.snapshot()))
    if not refs:
        return
    if case.blob_store is None:
        raise _fail(case, "the snapshot references blobs but the case names no blob_store")
    missing = [ref for ref in refs if ref not in case.blob_store]
    if missing:
        raise _fail(case, f"the snapshot references blobs missing from the store: {missing[:3]}")


def _not_unusable(case: AdapterCase, shape: str, how: str, outcome: Any) -> str | None:
    """Why ``outcome`` (what a call returned, or the exception it raised) is not the typed
    error; ``None`` when it is."""
    if isinstance(outcome, UnusableResponseError):
        return None
    if isinstance(outcome, Exception):
        return (f"[{shape}] {how} raised {type(outcome).__name__}, not "
                "guardrails.UnusableResponseError; raise that typed error for an answer nobody "
                "can use")
    return (f"[{shape}] {how} returned {type(outcome).__name__} {outcome!r:.60} for an unusable "
            "answer; raise guardrails.UnusableResponseError instead, so a caller sees an error "
            "and a canary counts it as one")


def _outcome(call: Callable[[Request], Any], request: Request) -> Any:
    try:
        return call(request)
    except Exception as exc:
        return exc


async def _aoutcome(call: Callable[[Request], Any], request: Request) -> Any:
    try:
        return await call(request)
    except Exception as exc:
        return exc


def check_unusable_responses_raise(case: AdapterCase) -> None:
    """Every ``case.unusable`` client raises ``UnusableResponseError`` from ``invoke`` and
    ``ainvoke`` (when it has one), directly and through a guard, on every request."""
    if not case.unusable:
        raise _fail(case, "the case gives no unusable clients; give AdapterCase(unusable="
                          "{'empty text': make_client, ...}) with a client per shape of unusable "
                          "answer (no choices, empty text, refusal, NaN) so the suite can check "
                          "the adapter raises guardrails.UnusableResponseError")
    for shape, make_client in case.unusable.items():
        _check_unusable_client(case, shape, make_client(), _guard(case).wrap(make_client()))


def _check_unusable_client(case: AdapterCase, shape: str, client: Any, guarded: Any) -> None:
    seen: list[tuple[str, Any]] = []
    for value in case.requests:
        request = Request(input=value)
        seen.append((f"invoke({value!r})", _outcome(whole_answerer(client), request)))
        seen.append((f"guarded invoke({value!r})", _outcome(guarded.invoke, request)))
    has_ainvoke = callable(getattr(client, "ainvoke", None))

    async def async_calls() -> None:  # one event loop: async SDK clients are bound to theirs
        for value in case.requests:
            request = Request(input=value)
            seen.append((f"guarded ainvoke({value!r})",
                         await _aoutcome(guarded.ainvoke, request)))
            if has_ainvoke:
                seen.append((f"ainvoke({value!r})",
                             await _aoutcome(client.ainvoke, request)))

    asyncio.run(async_calls())
    for how, outcome in seen:
        problem = _not_unusable(case, shape, how, outcome)
        if problem is not None:
            raise _fail(case, problem)


# -- streaming ---------------------------------------------------------------------------------


def _streams(client: Any) -> tuple[bool, bool]:
    return callable(getattr(client, "stream", None)), callable(getattr(client, "astream", None))


def _text_of(case: AdapterCase, how: str, items: list[Any]) -> str:
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, StreamChunk):
            parts.append(item.text)
        else:
            raise _fail(case, f"{how} yielded a {type(item).__name__}; yield "
                              "guardrails.StreamChunk or str")
    return "".join(parts)


async def _adrain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def check_stream_yields_chunks(case: AdapterCase) -> None:
    """Every streamed item is a ``StreamChunk`` or ``str``, and the text joins to the text
    ``invoke`` answers (``stream`` and ``astream``)."""
    client = case.make_client()
    has_stream, has_astream = _streams(client)
    if not (has_stream or has_astream):
        return
    expected = _answers(case, client)
    runs: list[tuple[str, Any, list[Any]]] = []
    if has_stream:
        runs += [(f"stream({value!r})", answer, list(client.stream(Request(input=value))))
                 for value, answer in zip(case.requests, expected, strict=True)]
    if has_astream:
        async def all_async() -> list[list[Any]]:  # one loop: async SDK clients are bound to it
            return [await _adrain(client.astream(Request(input=value)))
                    for value in case.requests]

        runs += [(f"astream({value!r})", answer, items) for value, answer, items
                 in zip(case.requests, expected, asyncio.run(all_async()), strict=True)]
    for how, answer, items in runs:
        text = _text_of(case, how, items)
        if isinstance(answer, str) and not case.compare(text, answer):
            raise _fail(case, f"{how} joins to {text!r:.80}, invoke answered {answer!r:.80}; "
                              "a stream is the same answer in pieces")
    _check_guarded_stream(case, expected)


def _check_guarded_stream(case: AdapterCase, expected: list[Any]) -> None:
    guarded = _guard(case).wrap(case.make_client())
    for value, answer in zip(case.requests, expected, strict=True):
        items = list(guarded.stream(value))
        if not items or not isinstance(items[-1], StreamEnd):
            raise _fail(case, f"through the guard stream({value!r}) did not end with a "
                              "StreamEnd")
        text = _text_of(case, f"guarded stream({value!r})", items[:-1])
        if isinstance(answer, str) and not case.compare(text, answer):
            raise _fail(case, f"through the guard stream({value!r}) released {text!r:.80}, "
                              f"invoke answered {answer!r:.80}")


def _close_early(case: AdapterCase, client: Any, value: Any) -> None:
    has_stream, has_astream = _streams(client)
    if has_stream:
        stream = client.stream(Request(input=value))
        if not callable(getattr(stream, "close", None)):
            raise _fail(case, "stream() returned an iterator without close(); write it as a "
                              "generator that closes the upstream in `finally`")
        next(stream)
        stream.close()
        if next(stream, None) is not None:
            raise _fail(case, "stream() yielded after close()")
    if not has_astream:
        return
    astream = client.astream(Request(input=value))
    if not callable(getattr(astream, "aclose", None)):
        raise _fail(case, "astream() returned an iterator without aclose(); write it as an "
                          "async generator that closes the upstream in `finally`")

    async def first_then_close() -> None:
        await astream.__anext__()
        await astream.aclose()

    asyncio.run(first_then_close())


def check_stream_close_releases_upstream(case: AdapterCase) -> None:
    """Closing a stream after its first item works (the guard does it on a block) and, where
    the case can tell, releases the upstream stream."""
    if not any(_streams(case.make_client())):
        return
    _close_early(case, case.make_client(), case.requests[0])
    if case.stream_release is not None:
        client, released = case.stream_release()
        _close_early(case, client, case.requests[0])
        if not released():
            raise _fail(case, "closing the stream did not release the upstream; close the SDK "
                              "stream (or cancel the request) in the generator's `finally`")


def _stream_outcome(client: Any, request: Request, use_async: bool) -> Any:
    try:
        if use_async:
            return asyncio.run(_adrain(client.astream(request)))
        stream: Iterator[Any] = client.stream(request)
        return list(stream)
    except Exception as exc:
        return exc


def check_broken_streams_raise(case: AdapterCase) -> None:
    """Streaming an unusable answer (``case.unusable``) or a broken upstream
    (``case.broken_streams``) raises ``UnusableResponseError`` from ``stream`` and ``astream``."""
    clients = {**case.unusable, **case.broken_streams}
    for shape, make_client in clients.items():
        has_stream, has_astream = _streams(make_client())
        for value in case.requests:
            for how, use_async, present in (("stream", False, has_stream),
                                            ("astream", True, has_astream)):
                if not present:
                    continue
                for who, client in ((how, None), (f"guarded {how}", _guard(case))):
                    target = make_client() if client is None else client.wrap(make_client())
                    seen = _stream_outcome(target, Request(input=value), use_async)
                    problem = _not_unusable(case, shape, f"{who}({value!r})", seen)
                    if problem is not None:
                        raise _fail(case, problem)


CHECKS: tuple[Callable[[AdapterCase], None], ...] = (
    check_snapshot_is_json_and_stable,
    check_snapshot_round_trips,
    check_with_state_does_not_mutate,
    check_guarded_invoke_matches_unwrapped,
    check_proposals_apply_as_json_patch,
    check_gate_reviews_a_proposal,
    check_blob_refs_resolve,
    check_unusable_responses_raise,
    check_stream_yields_chunks,
    check_stream_close_releases_upstream,
    check_broken_streams_raise,
)
"""Every check, in the order ``run_conformance`` runs them."""


def run_conformance(case: AdapterCase) -> list[tuple[str, str]]:
    """Run every check; ``(check name, message)`` for each that failed (empty: conformant).

    Exceptions other than ``ConformanceError`` (the adapter crashed) are
    reported too, with their type.
    """
    failures: list[tuple[str, str]] = []
    for check in CHECKS:
        try:
            check(case)
        except ConformanceError as exc:
            failures.append((check.__name__, str(exc)))
        except Exception as exc:
            failures.append((check.__name__, f"[{case.name}] raised {type(exc).__name__}: {exc}"))
    return failures


class ConformanceSuite:
    """The checks as pytest tests. Subclass it as ``TestSomething`` in a module that defines
    an ``adapter_case`` fixture returning an ``AdapterCase``."""

    def test_snapshot_is_json_and_stable(self, adapter_case: AdapterCase) -> None:
        check_snapshot_is_json_and_stable(adapter_case)

    def test_snapshot_round_trips(self, adapter_case: AdapterCase) -> None:
        check_snapshot_round_trips(adapter_case)

    def test_with_state_does_not_mutate(self, adapter_case: AdapterCase) -> None:
        check_with_state_does_not_mutate(adapter_case)

    def test_guarded_invoke_matches_unwrapped(self, adapter_case: AdapterCase) -> None:
        check_guarded_invoke_matches_unwrapped(adapter_case)

    def test_proposals_apply_as_json_patch(self, adapter_case: AdapterCase) -> None:
        check_proposals_apply_as_json_patch(adapter_case)

    def test_gate_reviews_a_proposal(self, adapter_case: AdapterCase) -> None:
        check_gate_reviews_a_proposal(adapter_case)

    def test_blob_refs_resolve(self, adapter_case: AdapterCase) -> None:
        check_blob_refs_resolve(adapter_case)

    def test_unusable_responses_raise(self, adapter_case: AdapterCase) -> None:
        check_unusable_responses_raise(adapter_case)

    def test_stream_yields_chunks(self, adapter_case: AdapterCase) -> None:
        check_stream_yields_chunks(adapter_case)

    def test_stream_close_releases_upstream(self, adapter_case: AdapterCase) -> None:
        check_stream_close_releases_upstream(adapter_case)

    def test_broken_streams_raise(self, adapter_case: AdapterCase) -> None:
        check_broken_streams_raise(adapter_case)
