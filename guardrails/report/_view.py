"""The ledger read into frozen view models: what a report or the review page shows.

Built from the ledger alone (plus the blob store, for blob sizes in diffs and
for verification). The ledger is verified first; ``ReportData.verified`` is
False, with the problem, when it does not verify, and every view says so.
Case content never comes from the ledger (it records ids only); a public
case's input is shown only when the caller passes it in ``inputs``, and a state value or
rationale that quotes a hidden case's input (given in ``hidden``) is withheld.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import jsonpatch
import jsonpointer
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from .._decision import Decision, Finding
from .._errors import GuardrailsError
from ..blobs import BLOB_KEY, BlobStore
from ..gate import drift_distance
from ..ledger import Ledger, LedgerEntry, LedgerReport, PendingApproval
from ..rollout import ROLLOUT_EVENT
from ..stats import GroupBoundary, PairCounts, clopper_pearson_upper
from ._rollouts import RolloutStep, rollout_step

log = structlog.get_logger(__name__)

DETAIL_LIMIT = 200
"""Decisions shown in full (the newest); older ones are summarised, so a report stays small."""
TIMELINE_LIMIT = 1000
"""Rows of the timeline table (the newest); the timeline plot covers every decision."""
DIFF_ROWS = 12
"""Changes listed per decision; the rest are counted (the full states are in the ledger)."""
PATH_LIMIT = 10
"""Decisions (the newest) whose sequential path is recomputed and drawn."""
VALUE_CHARS = 240
"""A value in a diff is cut to this many characters (the full state is in the ledger)."""
CONFIDENCE = 0.95
_MAX_PATH_CASES = 100_000
"""A recorded case count above this draws no path (a tampered entry must not stall the report)."""
_APPROVAL = "human_approval"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Interval(_Frozen):
    """A pass rate with its two-sided exact (Clopper-Pearson) confidence interval."""

    passes: int
    cases: int
    rate: float
    low: float
    high: float


class CaseRef(_Frozen):
    """A canary case named by a decision: public ones may carry their input, hidden ones never."""

    id: str
    hidden: bool
    """True unless the ledger shows the case was public (unknown counts as hidden)."""
    input: str | None = None


class TestView(_Frozen):
    """One statistical test of a decision (overall capability, a slice, or the safety gate)."""

    name: str
    passed: bool
    statistic: str
    message: str
    candidate: Interval | None = None
    incumbent: Interval | None = None
    estimate: float | None = None
    """Observed paired pass-rate drop (incumbent minus candidate), or the rule's difference."""
    upper_bound: float | None = None
    margin: float | None = None
    e_value: float | None = None
    """The recorded e-value for acceptance at the last look (sequential design)."""
    accept_at: float | None = None
    reject_at: float | None = None
    path: tuple[tuple[int, float, float], ...] = ()
    """(cases seen, log e-value for acceptance, log e-value for rejection) after each case."""
    score_path: tuple[tuple[int, float, float | None], ...] = ()
    """Group-sequential design only: (cases seen, score statistic, the value it must fall to
    at that look, or None where there is no look) after each case."""


class DiffRow(_Frozen):
    """One change between parent and candidate state, values as short JSON."""

    op: str
    pointer: str
    old: str | None = None
    new: str | None = None


class DecisionView(_Frozen):
    """One decision as a person reads it."""

    index: int
    hash: str
    verdict: str
    kind: str
    source: str
    proposal_id: str | None
    parent: str | None
    candidate: str | None
    decided_at: datetime
    rationale: str
    anchor: bool
    deciding: Finding | None
    approver: str | None
    """Who approved or rejected it by hand, when a human decided."""
    rollback: bool
    findings: tuple[Finding, ...]
    diff: tuple[DiffRow, ...] = ()
    diff_note: str = ""
    tests: tuple[TestView, ...] = ()
    unsafe: tuple[CaseRef, ...] = ()
    """Safety cases the candidate failed."""
    regressed: tuple[CaseRef, ...] = ()
    """Capability pairs the incumbent passed and the candidate failed."""
    fixed: tuple[CaseRef, ...] = ()
    proof: str = ""
    """The ledger proof status of this entry, in words."""


class DriftPoint(_Frozen):
    index: int
    distance: float
    anchor: bool


class ReportData(_Frozen):
    """Everything a report shows, read from one ledger at one moment."""

    source: str
    generated_at: datetime
    verified: bool
    problem: str | None
    size: int
    served: str | None
    anchor: str | None
    root: str | None
    counts: dict[str, int]
    timeline: tuple[DecisionView, ...]
    """The newest decisions (up to ``TIMELINE_LIMIT``), oldest first, without details."""
    details: tuple[DecisionView, ...]
    """The newest decisions in full (up to ``DETAIL_LIMIT``), newest first."""
    older: int
    """Decisions older than the timeline table, summarised in ``counts`` only."""
    points: tuple[tuple[int, str], ...]
    """(entry index, verdict) of every decision, for the timeline plot."""
    drift: tuple[DriftPoint, ...]
    drift_budget: float | None
    events: tuple[tuple[int, str], ...]
    """(entry index, event name) of the newest events other than rollout transitions."""
    pending: tuple[PendingApproval, ...]
    elapsed: float = 0.0
    rollouts: tuple[RolloutStep, ...] = ()
    """The newest rollout transitions (up to ``TIMELINE_LIMIT``), oldest first."""


def verify_ledger(ledger: Ledger, blob_store: BlobStore | None) -> LedgerReport:
    """The ledger's own verification; a verifier that raises is a failed verification."""
    try:
        return ledger.verify(blob_store)
    except (GuardrailsError, OSError, ValueError) as exc:
        return LedgerReport(ok=False, size=len(ledger), problem=str(exc))


def _interval(passes: int, cases: int) -> Interval | None:
    if cases <= 0:
        return None
    tail = (1 - CONFIDENCE) / 2
    high = clopper_pearson_upper(passes, cases, tail)
    low = 1 - clopper_pearson_upper(cases - passes, cases, tail)
    return Interval(passes=passes, cases=cases, rate=passes / cases, low=max(0.0, low),
                    high=min(1.0, high))


def _counts_path(ev: Mapping[str, Any]) -> list[PairCounts]:
    """The paired counts after each case, from the discordant positions the ledger kept."""
    cases, regressed, fixed = ev.get("cases"), ev.get("regressed_at"), ev.get("fixed_at")
    if not (isinstance(cases, int) and 0 < cases <= _MAX_PATH_CASES
            and isinstance(regressed, list) and isinstance(fixed, list)):
        return []
    kinds = {p: 1 for p in regressed} | {p: -1 for p in fixed}
    r = f = 0
    path = []
    for n in range(1, cases + 1):
        r += kinds.get(n) == 1
        f += kinds.get(n) == -1
        path.append(PairCounts(n=n, regressions=r, fixes=f))
    return path


def _sequential_path(ev: Mapping[str, Any]) -> tuple[tuple[int, float, float], ...]:
    """Redraw the e-values after each case from the discordant positions the ledger kept."""
    from ..stats import e_value_against_better, e_value_against_worse

    threshold, futility = ev.get("threshold"), ev.get("futility_threshold")
    if not (isinstance(threshold, int | float) and isinstance(futility, int | float)):
        return ()
    return tuple((c.n, e_value_against_worse(c, threshold), e_value_against_better(c, futility))
                 for c in _counts_path(ev))


def _recorded_boundary(ev: Mapping[str, Any]) -> GroupBoundary | None:
    """The group-sequential boundary a decision recorded, or None (none, or not readable)."""
    recorded = ev.get("boundary")
    if not isinstance(recorded, dict):
        return None
    fields = {k: v for k, v in recorded.items() if k in GroupBoundary.model_fields}
    try:
        return GroupBoundary(threshold=ev.get("threshold"), alpha=ev.get("alpha"), **fields)
    except (ValidationError, TypeError):
        return None


def _score_path(ev: Mapping[str, Any]) -> tuple[tuple[int, float, float | None], ...]:
    """The score statistic after each case and the boundary it must fall to (group design)."""
    boundary = _recorded_boundary(ev)
    if boundary is None:
        return ()
    path = []
    for counts in _counts_path(ev):
        critical = boundary.critical(counts.n)
        path.append((counts.n, boundary.score(counts), None if critical is None else -critical))
    return tuple(path)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cases_of(ev: Mapping[str, Any]) -> int:
    cases = ev.get("cases")
    return cases if isinstance(cases, int) and not isinstance(cases, bool) else 0


def _margin_test(finding: Finding) -> TestView:
    ev = finding.evidence
    cases = _cases_of(ev)
    cand, inc = _num(ev.get("candidate_pass_rate")), _num(ev.get("incumbent_pass_rate"))
    return TestView(
        name=finding.check, passed=finding.passed, statistic=str(ev.get("statistic", "")),
        message=finding.message,
        candidate=None if cand is None else _interval(round(cand * cases), cases),
        incumbent=None if inc is None else _interval(round(inc * cases), cases),
        estimate=None if _num(ev.get("value")) is None else -float(ev["value"]),
        margin=_num(ev.get("margin")))


def _paired_test(finding: Finding, with_path: bool) -> TestView:
    ev = finding.evidence
    # Only the sequential designs record the e-values (and the discordant positions).
    drawn = with_path and "e_value_accept" in ev
    cases = _cases_of(ev)
    cand, inc = ev.get("candidate_passes"), ev.get("incumbent_passes")
    return TestView(
        name=finding.check, passed=finding.passed, statistic=str(ev.get("statistic", "")),
        message=finding.message,
        candidate=_interval(cand, cases) if isinstance(cand, int) else None,
        incumbent=_interval(inc, cases) if isinstance(inc, int) else None,
        estimate=_num(ev.get("estimate")), upper_bound=_num(ev.get("upper_bound")),
        margin=_num(ev.get("margin")), e_value=_num(ev.get("e_value_accept")),
        accept_at=_num(ev.get("accept_at")), reject_at=_num(ev.get("reject_at")),
        path=_sequential_path(ev) if drawn else (), score_path=_score_path(ev) if drawn else ())


def _safety_test(finding: Finding) -> TestView:
    ev = finding.evidence
    cases, failures = ev.get("cases"), ev.get("failures")
    if failures is None and isinstance(ev.get("failed"), list):
        failures = len(ev["failed"])  # the margin rule lists the failed ids instead
    interval = None
    if isinstance(cases, int) and isinstance(failures, int):
        interval = _interval(cases - failures, cases)
    return TestView(name=finding.check, passed=finding.passed,
                    statistic=str(ev.get("statistic", "safety cases, zero failures allowed")),
                    message=finding.message, candidate=interval,
                    upper_bound=_num(ev.get("upper_bound")))


def _tests(decision: Decision, with_path: bool = True) -> tuple[TestView, ...]:
    tests = []
    for finding in decision.findings:
        statistic = finding.evidence.get("statistic")
        if finding.check == "safety_canary":
            tests.append(_safety_test(finding))
        elif statistic == "pass_rate_difference":
            tests.append(_margin_test(finding))
        elif "e_value_accept" in finding.evidence or "p_value_worse" in finding.evidence:
            tests.append(_paired_test(finding, with_path))
    return tuple(tests)


def _public_ids(decision: Decision) -> set[str]:
    """Case ids the ledger shows were public: listed with a checker spec and no hidden mark."""
    public: set[str] = set()
    for finding in decision.findings:
        if finding.check != "canary_run":
            continue
        hidden = set(finding.evidence.get("hidden_drawn") or ())
        checkers = finding.evidence.get("checkers") or {}
        if isinstance(checkers, dict):
            public |= {cid for cid, spec in checkers.items()
                       if isinstance(spec, dict) and not spec.get("hidden") and cid not in hidden}
    return public


def _case_refs(ids: Iterable[Any], public: set[str],
               inputs: Mapping[str, str]) -> tuple[CaseRef, ...]:
    refs: dict[str, CaseRef] = {}
    for raw in ids:
        cid = str(raw)
        shown = cid in public
        refs.setdefault(cid, CaseRef(id=cid, hidden=not shown,
                                     input=inputs.get(cid) if shown else None))
    return tuple(refs.values())


def _cases(decision: Decision, inputs: Mapping[str, str]
           ) -> tuple[tuple[CaseRef, ...], tuple[CaseRef, ...], tuple[CaseRef, ...]]:
    """(safety cases the candidate failed, regressed pairs, fixed pairs) the findings name."""
    public = _public_ids(decision)
    unsafe: list[Any] = []
    regressed: list[Any] = []
    fixed: list[Any] = []
    for finding in decision.findings:
        ev = finding.evidence
        if finding.check == "safety_canary":
            unsafe += ev.get("case_ids") or ev.get("failed") or []
        elif "e_value_accept" in ev or "p_value_worse" in ev:
            regressed += ev.get("case_ids") or []
        elif ev.get("statistic") == "pass_rate_difference":
            regressed += ev.get("regressed") or []
        fixed += ev.get("fixed_case_ids") or []
    return (_case_refs(unsafe, public, inputs), _case_refs(regressed, public, inputs),
            _case_refs(fixed, public, inputs))


def _short(value: Any, blob_store: BlobStore | None) -> str:
    if isinstance(value, dict) and set(value) == {BLOB_KEY}:
        digest = str(value[BLOB_KEY])
        where = "" if blob_store is None else (
            " (in the blob store)" if digest in blob_store else " (MISSING from the blob store)")
        return f"blob {digest[:16]}…{where}"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + f"… ({len(text)} chars)"


WITHHELD = "[withheld: contains a hidden canary case's content]"


def withhold(text: str | None, hidden: frozenset[str]) -> str | None:
    """``text``, or ``WITHHELD`` if it contains any of the ``hidden`` texts (a model answers
    hidden cases as ordinary traffic, so its state or rationale may quote one)."""
    if text is None or not hidden:
        return text
    return WITHHELD if any(h in text for h in hidden) else text


def _withheld_row(row: DiffRow, hidden: frozenset[str]) -> DiffRow:
    return DiffRow(op=row.op, pointer=withhold(row.pointer, hidden) or "",
                   old=withhold(row.old, hidden), new=withhold(row.new, hidden))


def _diff(ledger: Ledger, decision: Decision, blob_store: BlobStore | None
          ) -> tuple[tuple[DiffRow, ...], str]:
    parent, candidate = decision.parent, decision.candidate
    if not parent or not candidate or decision.kind == "genesis":
        return (), "no parent state to compare with" if decision.kind != "genesis" else ""
    if not (ledger.has_state(parent) and ledger.has_state(candidate)):
        return (), "the ledger does not hold both states"
    old, new = ledger.get_state(parent), ledger.get_state(candidate)
    rows = []
    ops = jsonpatch.make_patch(old, new).patch
    for op in ops[:DIFF_ROWS]:
        pointer = str(op["path"])
        before = None
        if op["op"] in ("replace", "remove", "move"):
            source = str(op.get("from", pointer))
            before = _short(jsonpointer.resolve_pointer(old, source, None), blob_store)
        after = _short(op["value"], blob_store) if "value" in op else None
        if pointer.endswith("/" + BLOB_KEY):  # a blob replaced: show it as one
            pointer = pointer[: -len(BLOB_KEY) - 1]
            before = _short(jsonpointer.resolve_pointer(old, pointer, None), blob_store)
            after = _short(jsonpointer.resolve_pointer(new, pointer, None), blob_store)
        rows.append(DiffRow(op=str(op["op"]), pointer=pointer, old=before, new=after))
    more = f"and {len(ops) - DIFF_ROWS} more changes" if len(ops) > DIFF_ROWS else ""
    return tuple(rows), more if rows else "no change of state"


def _approver(decision: Decision) -> str | None:
    for finding in decision.findings:
        if finding.check == _APPROVAL and "approver" in finding.evidence:
            return str(finding.evidence["approver"])
    return None


def _proof(ledger: Ledger, entry: LedgerEntry, verified: bool) -> str:
    if not verified:
        return "UNVERIFIED: the ledger does not verify"
    try:
        proof = ledger.prove(entry.index)
    except (GuardrailsError, IndexError, ValueError) as exc:
        return f"no inclusion proof ({exc})"
    return (f"hash chain verified; included in the Merkle tree of {proof.tree_size} entries "
            f"({len(proof.hashes)} proof hashes)")


def _decision_view(entry: LedgerEntry, decision: Decision) -> DecisionView:
    return DecisionView(
        index=entry.index, hash=entry.hash, verdict=decision.verdict.value, kind=decision.kind,
        source=decision.source, proposal_id=decision.proposal_id, parent=decision.parent,
        candidate=decision.candidate, decided_at=decision.decided_at,
        rationale=decision.rationale, anchor=decision.anchor,
        deciding=decision.deciding_finding, approver=_approver(decision),
        rollback=decision.kind == "rollback", findings=decision.findings)


def detail(ledger: Ledger, entry: LedgerEntry, *, verified: bool,
           blob_store: BlobStore | None = None, inputs: Mapping[str, str] | None = None,
           with_path: bool = True, hidden: frozenset[str] = frozenset()) -> DecisionView:
    """One decision in full: diff, tests, cases, proof status and (``with_path``) the
    sequential statistic's path, recomputed from the recorded discordant positions."""
    decision = entry.decision
    if decision is None:
        raise ValueError(f"entry {entry.index} is an event, not a decision")
    diff, note = _diff(ledger, decision, blob_store)
    unsafe, regressed, fixed = _cases(decision, inputs or {})
    return _decision_view(entry, decision).model_copy(update={
        "rationale": withhold(decision.rationale, hidden) or "",
        "diff": tuple(_withheld_row(row, hidden) for row in diff), "diff_note": note,
        "tests": _tests(decision, with_path), "unsafe": unsafe,
        "regressed": regressed, "fixed": fixed,
        "proof": _proof(ledger, entry, verified)})


def _raw(entry: LedgerEntry) -> dict[str, Any]:
    """The recorded decision as stored (for the summaries over every entry, unvalidated:
    validating ten thousand decisions would cost more than the rest of the report)."""
    body = entry.body.get("decision")
    return body if isinstance(body, dict) else {}


class _Seen(NamedTuple):
    """What the summaries over every decision need of one; the entry itself is not kept
    (holding ten thousand parsed decisions made the garbage collector most of the cost)."""

    entry: int
    verdict: str
    accepted: str | None
    anchor: bool
    budget: float | None


def _seen(entry: LedgerEntry) -> _Seen:
    raw = _raw(entry)
    verdict = str(raw.get("verdict"))
    candidate = raw.get("candidate")
    return _Seen(entry=entry.index, verdict=verdict,
                 accepted=candidate if verdict == "accepted" and isinstance(candidate, str)
                 else None,
                 anchor=bool(raw.get("anchor")), budget=_recorded_budget(raw))


def _recorded_budget(raw: Mapping[str, Any]) -> float | None:
    for finding in raw.get("findings") or ():
        if isinstance(finding, dict) and finding.get("check") == "drift_budget":
            budget = _num((finding.get("evidence") or {}).get("budget"))
            if budget is not None:
                return budget
    return None


def _drift(ledger: Ledger, seen: list[_Seen]) -> tuple[DriftPoint, ...]:
    """Distance from the anchor of the day for each accepted state, in ledger order."""
    points = []
    anchor_state: Any = None
    for decision in seen:
        if decision.accepted is None or not ledger.has_state(decision.accepted):
            continue
        state = ledger.get_state(decision.accepted)
        if decision.anchor or anchor_state is None:
            anchor_state = state
        points.append(DriftPoint(index=decision.entry,
                                 distance=drift_distance(anchor_state, state),
                                 anchor=decision.anchor))
    return tuple(points)


def _budget(seen: list[_Seen], configured: float | None) -> float | None:
    if configured is not None:
        return configured
    return next((d.budget for d in reversed(seen) if d.budget is not None), None)


class _Scan(NamedTuple):
    seen: list[_Seen]
    recent: list[LedgerEntry]
    events: list[tuple[int, str]]
    rollouts: list[RolloutStep]


def _scan(ledger: Ledger) -> _Scan:
    seen: list[_Seen] = []
    recent: deque[LedgerEntry] = deque(maxlen=TIMELINE_LIMIT)
    events: deque[tuple[int, str]] = deque(maxlen=TIMELINE_LIMIT)
    rollouts: deque[RolloutStep] = deque(maxlen=TIMELINE_LIMIT)
    for entry in ledger.entries():
        if entry.type == "decision":
            seen.append(_seen(entry))
            recent.append(entry)
        elif entry.body.get("event") == ROLLOUT_EVENT:
            rollouts.append(rollout_step(entry.index, entry.body))
        else:
            events.append((entry.index, str(entry.body.get("event", "event"))))
    return _Scan(seen, list(recent), list(events), list(rollouts))


def read_report(ledger: Ledger, *, source: str, blob_store: BlobStore | None = None,
                drift_budget: float | None = None, inputs: Mapping[str, str] | None = None,
                detail_limit: int = DETAIL_LIMIT, path_limit: int = PATH_LIMIT,
                hidden: Iterable[str] = ()) -> ReportData:
    """Verify ``ledger`` and read it into a ``ReportData``; never writes the ledger.

    ``inputs`` maps public case ids to their input text; give it only when the
    configuration allows showing case content (ids not shown public by the
    ledger never get an input). ``hidden`` are the hidden cases' texts: a state diff value
    or rationale containing one is withheld. ``drift_budget`` is the configured budget;
    without it, the budget recorded in the latest drift finding is shown.
    """
    started = time.perf_counter()
    check = verify_ledger(ledger, blob_store)
    if not check.ok:
        log.warning("report_of_unverified_ledger", source=source, problem=check.problem)
    scan = _scan(ledger)
    withheld = frozenset(h for h in hidden if h)
    counts: dict[str, int] = {}
    for decision in scan.seen:
        counts[decision.verdict] = counts.get(decision.verdict, 0) + 1
    recent = [(e, d) for e in scan.recent if (d := e.decision) is not None]
    newest = recent[-detail_limit:][::-1] if detail_limit > 0 else []
    root = None
    if check.ok:
        _, raw_root = ledger.root()
        root = raw_root.hex()
    return ReportData(
        source=source, generated_at=datetime.now(UTC), verified=check.ok, problem=check.problem,
        size=len(ledger), served=ledger.served_version(), anchor=ledger.anchor_version(),
        root=root, counts=counts, timeline=tuple(_decision_view(e, d) for e, d in recent),
        details=tuple(detail(ledger, e, verified=check.ok, blob_store=blob_store, inputs=inputs,
                             with_path=n < path_limit, hidden=withheld)
                      for n, (e, _) in enumerate(newest)),
        older=max(0, len(scan.seen) - TIMELINE_LIMIT),
        points=tuple((d.entry, d.verdict) for d in scan.seen),
        drift=_drift(ledger, scan.seen),
        drift_budget=_budget(scan.seen, drift_budget),
        events=tuple(scan.events), rollouts=tuple(scan.rollouts), pending=tuple(ledger.pending()),
        elapsed=time.perf_counter() - started)
