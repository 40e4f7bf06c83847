"""The control check: the incumbent is the baseline, so it must have behaved like a model.

A review compares the candidate with the incumbent on the same cases. When the
incumbent's side of the run is no evidence at all (no capability call came back
with a non-empty answer), a tie or a "win" against it says nothing about the
candidate: the endpoint, the adapter or the evaluator is broken, and the review
is void. Capability cases only: safety cases go to the candidate alone.
"""

from __future__ import annotations

from .._decision import Finding
from ..canary import EMPTY_OUTPUT, CanaryEvidence

CONTROL = "control"


def control_finding(evidence: CanaryEvidence) -> Finding:
    """A ``control`` finding: failed when the incumbent gave no non-empty answer on any
    capability case (every call raised, timed out or came back empty); passed otherwise,
    with the counts."""
    capability = [o for o in evidence.outcomes if not o.safety]
    answered = [o for o in capability if o.incumbent_answered]
    empty = [o for o in answered if o.incumbent_error == EMPTY_OUTPUT]
    counts = {"statistic": "incumbent_sanity_floor", "capability_cases": len(capability),
              "incumbent_answered": len(answered), "incumbent_empty": len(empty),
              "incumbent_passed": sum(o.incumbent_passed is True for o in capability)}
    if capability and len(empty) == len(answered):
        # An empty output never passes a case, so a side with no other answer is no baseline.
        first = capability[0]
        why = (f"answered none of {len(capability)} capability cases (first {first.case_id!r}: "
               f"{first.incumbent_error})" if not answered else
               f"gave empty output on all {len(answered)} capability cases it answered "
               f"({len(capability) - len(answered)} more raised or timed out)")
        return Finding(
            check=CONTROL, passed=False,
            message=f"the incumbent {why}; with no baseline the review is void: check the "
                    "model endpoint and the adapter, then propose again",
            evidence={**counts, "cases": [o.case_id for o in capability[:50]]})
    return Finding(check=CONTROL, passed=True,
                   message=f"the incumbent answered {len(answered)} of {len(capability)} "
                           f"capability cases ({len(empty)} empty)", evidence=counts)
