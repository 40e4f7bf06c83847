"""Staged rollout on live traffic: shadow, weighted steps, online evidence, automatic rollback.

Owns the rollout state machine (``RolloutState``, the pure ``transition``),
``RolloutPolicy`` (``[rollout]``), the sticky salted assignment, the per-step
verdicts on live evidence (the ``stats`` package's anytime-valid tests), the
store replicas share (SQLite or PostgreSQL, beside the ledger) and the
transitions every replica may attempt (``apply_action``, ``evaluate``), each
recorded as a ``rollout`` ledger event. Imports ``ledger``, ``stats`` and the
shared modules; ``gate`` hands it an accepted candidate and ``guard`` serves it.
"""

from ._assign import BUCKETS, Assigner
from ._judge import Judgement, StepEvidence, gaming_finding, judge
from ._live import (
    ATTR_ARM,
    METRIC_ABORTS,
    METRIC_PHASE,
    METRIC_WEIGHT,
    Call,
    LiveRollout,
    RolloutMetrics,
    apply_action,
    evaluate,
    is_shadow_copy,
    judging_shadow_copy,
    operate,
    record_transition,
)
from ._machine import FINAL, Action, InvalidTransition, Phase, RolloutState, choose, start, transition
from ._policy import RolloutPolicy
from ._repair import ROLLOUT_EVENT, Repair, repair
from ._store import (
    PostgresRolloutStore,
    RolloutStore,
    SQLiteRolloutStore,
    reduce_rows,
    store_for,
)

__all__ = [
    "ATTR_ARM",
    "BUCKETS",
    "FINAL",
    "METRIC_ABORTS",
    "METRIC_PHASE",
    "METRIC_WEIGHT",
    "ROLLOUT_EVENT",
    "Action",
    "Assigner",
    "Call",
    "InvalidTransition",
    "Judgement",
    "LiveRollout",
    "Phase",
    "PostgresRolloutStore",
    "Repair",
    "RolloutMetrics",
    "RolloutPolicy",
    "RolloutState",
    "RolloutStore",
    "SQLiteRolloutStore",
    "StepEvidence",
    "apply_action",
    "choose",
    "evaluate",
    "gaming_finding",
    "is_shadow_copy",
    "judge",
    "judging_shadow_copy",
    "operate",
    "record_transition",
    "reduce_rows",
    "repair",
    "start",
    "store_for",
    "transition",
]
