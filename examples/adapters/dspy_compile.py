"""A DSPy program recompiled by an optimiser; the guard decides which compile serves.

Offline: DSPy's ``DummyLM`` answers by following the demos in its prompt, so
what a compile puts into the program decides its answers. ``LabeledFewShot``
on correct examples is accepted; a compile on mislabelled feedback is
rejected on the canaries, and the serving program keeps its demos.

Run: ``python examples/adapters/dspy_compile.py`` (extra: ``dspy``).
"""

from __future__ import annotations

import dspy
import structlog
from dspy.utils import DummyLM
from guardrails_plugins.adapters.dspy import DSPyProgramClient

import guardrails as gr

QA = [("2+2", "4"), ("capital of France", "Paris"), ("colour of the sky", "blue")]


def examples(pairs: list[tuple[str, str]]) -> list[dspy.Example]:
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in pairs]


class DemoFollowingLM(DummyLM):  # type: ignore[misc]
    """Follows the demos in its prompt and says "unknown" where none covers the question, so
    the uncompiled program answers (wrongly): an incumbent that answers nothing is no control
    and the guard would void every review against it."""

    def _use_example(self, messages: object) -> object:
        return super()._use_example(messages) or self._format_answer_fields({"answer": "unknown"})


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    lm = DemoFollowingLM([{"answer": "unknown"}] * 1000, follow_examples=True)
    client = DSPyProgramClient(dspy.Predict("question -> answer"), lm=lm, output_field="answer",
                               optimizer=dspy.LabeledFewShot(k=3), trainset=examples(QA))
    suite = [gr.CanaryCase(id=f"qa-{i}", input=q, expect=a) for i, (q, a) in enumerate(QA)]
    guarded = gr.Guard(canaries=suite).wrap(client)
    print(f"served {guarded.version[:12]}: {len(guarded.state()['program']['demos'])} demos")

    decision = guarded.self_improve()  # compile with LabeledFewShot on the correct examples
    assert decision is not None
    print(f"\ncompile on labelled examples ({decision.kind}, {decision.source}): "
          f"{decision.verdict.value}")
    print(f"  served {guarded.version[:12]}: 2+2 -> {guarded.invoke('2+2').output!r}")

    noisy = dspy.LabeledFewShot(k=3).compile(dspy.Predict("question -> answer"),
                                             trainset=examples([(q, "42") for q, _ in QA]))
    proposal = guarded.client.proposal_for(noisy, rationale="recompiled on last week's feedback")
    assert proposal is not None
    decision = guarded.propose(proposal)
    deciding = decision.deciding_finding
    print(f"\ncompile on mislabelled feedback: {decision.verdict.value}"
          + (f": {deciding.check}: {deciding.message}" if deciding else ""))
    print(f"  served {guarded.version[:12]}: 2+2 -> {guarded.invoke('2+2').output!r}")


if __name__ == "__main__":
    main()
