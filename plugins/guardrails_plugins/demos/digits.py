"""Demo: a digit classifier that trains itself on its own pseudo-labels, behind a guard.

The model (scikit-learn's ``SGDClassifier`` with log loss, on the 8x8 digits
bundled with scikit-learn) answers production traffic and, each round,
proposes new weights learned from that traffic, labelled by itself wherever
it was confident (self-training). Part-way through, the traffic drifts
(rotated, noisy digits): the model's own confidence in its proposals keeps
rising while its real accuracy falls, the paradox this library exists for.
Once, judging itself by "helpfulness" (fewer abstentions on its traffic), it
also proposes to lower its abstention threshold, which is frozen.

The guard decides every proposal on canaries the model never trains on:
200 labelled clean digits (capability: non-inferior within a margin) and a
few non-digit images (blank, faint static, salt noise) on which the model
must keep abstaining (safety: a hard gate). A held-out test set that neither
the model nor the guard ever sees shows what each decision was worth, and an
unguarded twin that serves every weights proposal shows what the guard prevented.
Nothing is scripted: every verdict comes from the computation, and the whole
run is deterministic for a given seed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import structlog
from scipy.ndimage import rotate
from scipy.special import expit
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

import guardrails as gr

from ..adapters.sklearn import LinearWeights, SklearnOnlineClient

CLASSES = tuple(range(10))
N_FEATURES = 64
MODEL = {
    "kind": "sklearn.linear_model.SGDClassifier",
    "loss": "log_loss",
    "learning_rate": "constant",
    "classes": list(CLASSES),
    "n_features": N_FEATURES,
    "input": "8x8 grey levels scaled to [0, 1], row-major",
}
ESTIMATOR = {
    "alpha": 3e-3,  # L2 penalty: keeps the linear scores, and so the confidences, moderate
    "eta0": 0.1,  # constant step size: the weights alone are the whole optimiser state
}
HYPERPARAMETERS = {
    "initial_epochs": 20,
    "self_training_epochs": 6,  # passes over the pseudo-labelled traffic per proposal
    "pseudo_label_min_confidence": 0.5,  # only inputs it is this sure of are self-labelled
    "target_abstention_rate": 0.25,  # its own "helpfulness" goal
}
ABSTAIN_BELOW = 0.5

# Split of the 1797 bundled digits (shuffled by the seed): labelled by a human for the
# initial model, capability canaries (the guard's), held-out test (nobody's), and the rest
# is the pool production traffic is drawn from (never labelled).
N_INITIAL, N_CANARY, N_TEST = 200, 200, 400
BATCH = 150  # traffic images per round
# Every seed from 0 to 15 shows the same pattern (at least one clean self-training step
# accepted, the threshold change rejected as frozen, every drifted step rejected by the
# canaries); with seed 12 all three clean steps pass and both canary kinds reject.
DEFAULT_SEED = 12
MARGIN = 0.02
"""How far the candidate's canary pass rate may fall below the incumbent's and still pass."""
# (rotation in degrees, Gaussian noise sd) per round; later rounds keep the last drift.
DRIFT = ((0, 0.0), (0, 0.0), (0, 0.0), (15, 0.25), (20, 0.30), (25, 0.30), (30, 0.35))


# -- the model ------------------------------------------------------------------------------


def predict_proba(model: SGDClassifier, X: np.ndarray) -> np.ndarray:
    """``model.predict_proba(X)`` computed directly (one-vs-rest logistic scores,
    normalised, as scikit-learn does for multiclass log loss), without the per-call input
    validation that makes single-image calls ~20x slower."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES)
    proba = expit(X @ model.coef_.T + model.intercept_)
    return proba / proba.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


class SelfTrainingDigits(SklearnOnlineClient):
    """A self-updating digit classifier on the scikit-learn adapter (``SklearnOnlineClient``).

    ``invoke`` takes 64 pixel values in [0, 1] and returns
    ``{"label": int | None, "confidence": float}``; ``label`` is ``None`` when
    the model abstains (its confidence is below ``abstain_below``).
    ``observe`` hands it unlabelled production inputs; ``propose_update`` is
    its own improvement step on them.

    The state (``snapshot``) is the adapter's (estimator class, its ``params``,
    the weights as one blob: ``LinearWeights``, ``coef_`` and ``intercept_`` in
    one 10 x 65 ``.npy`` matrix, and the update counter ``self_training_rounds``)
    plus the demo's own keys: the model description, the self-training
    hyperparameters, ``abstain_below`` and the seed. The traffic it observed and
    the proposals it already made are an optimiser's scratch memory, not state:
    they change no answer, and a client built with ``with_state`` starts with
    an empty one.
    """

    def __init__(self, state: dict[str, Any], blobs: gr.BlobStore) -> None:
        self._setup(SGDClassifier(), state, blobs, codec=LinearWeights(CLASSES),
                    classes=CLASSES, updates_key="self_training_rounds")
        self._abstain_below = float(self._parsed()["abstain_below"])
        self._traffic: np.ndarray | None = None
        self._asked_threshold_of: set[str] = set()

    @classmethod
    def train(cls, X: np.ndarray, y: np.ndarray, blobs: gr.BlobStore, seed: int = 0,
              hyperparameters: dict[str, Any] | None = None,
              abstain_below: float = ABSTAIN_BELOW) -> SelfTrainingDigits:
        """The initial model, trained on digits labelled by a human: the first anchor.

        ``hyperparameters`` may override ``ESTIMATOR`` settings (``alpha``,
        ``eta0``) and the self-training ``HYPERPARAMETERS``."""
        overrides = dict(hyperparameters or {})
        params = {**ESTIMATOR, **{k: overrides.pop(k) for k in list(overrides) if k in ESTIMATOR}}
        hyper = {**HYPERPARAMETERS, **overrides}
        model = SGDClassifier(loss="log_loss", learning_rate="constant", random_state=seed,
                              **params)
        rng = np.random.default_rng(seed)
        for _ in range(hyper["initial_epochs"]):
            order = rng.permutation(len(y))
            model.partial_fit(X[order], y[order], classes=list(CLASSES))
        initial = SklearnOnlineClient(
            model, blobs=blobs, codec=LinearWeights(CLASSES), updates_key="self_training_rounds",
            extra={"model": dict(MODEL), "hyperparameters": hyper,
                   "abstain_below": abstain_below, "seed": seed})
        return cls(initial.snapshot(), blobs)

    # -- serving -------------------------------------------------------------------------

    def answer(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidences (max class probability) for a batch; no abstention."""
        proba = predict_proba(self._model, X)
        return proba.argmax(axis=1), proba.max(axis=1)

    @property
    def abstain_below(self) -> float:
        return self._abstain_below

    def invoke(self, request: gr.Request) -> dict[str, Any]:
        pixels = np.asarray(request.input, dtype=np.float64)
        if pixels.shape != (N_FEATURES,):
            raise ValueError(f"expected {N_FEATURES} pixel values, got shape {pixels.shape}")
        label, confidence = self.answer(pixels)
        conf = float(confidence[0])
        return {"label": None if conf < self.abstain_below else int(label[0]),
                "confidence": round(conf, 4)}

    # -- state ---------------------------------------------------------------------------

    def with_state(self, state: dict[str, Any]) -> SelfTrainingDigits:
        return SelfTrainingDigits(state, self._blobs)

    # -- self-improvement ----------------------------------------------------------------

    def observe(self, traffic: np.ndarray | Sequence[Sequence[float]]) -> None:
        """Remember the latest batch of unlabelled production inputs to learn from."""
        self._traffic = np.asarray(traffic, dtype=np.float64).reshape(-1, N_FEATURES).copy()

    def propose_update(self) -> gr.UpdateProposal | None:
        """The model's own step: ask to abstain less if it abstains more than it wants to
        (once per served version), otherwise self-train on its confident answers.

        Works on copies; ``self`` is left as it was (only the scratch memory notes that the
        threshold was asked for).
        """
        if self._traffic is None or not len(self._traffic):
            return None
        state = self.snapshot()
        parent = gr.state_version(state)
        hyper = state["hyperparameters"]
        traffic = self._traffic
        labels, confidence = self.answer(traffic)
        threshold = float(state["abstain_below"])
        abstained = float((confidence < threshold).mean())
        target = float(hyper["target_abstention_rate"])
        if abstained > target and parent not in self._asked_threshold_of:
            # Helpfulness: the threshold at which it would have abstained on at most
            # ``target`` of its recent traffic, rounded down to a multiple of 0.05.
            wanted = float(np.floor(np.quantile(confidence, target) * 20) / 20)
            wanted = round(min(max(wanted, 0.05), threshold - 0.05), 2)
            self._asked_threshold_of.add(parent)
            return gr.UpdateProposal(
                parent=parent, kind="params", source="model",
                patch=[{"op": "replace", "path": "/abstain_below", "value": wanted}],
                rationale=(f"I abstained on {abstained:.0%} of my last {len(traffic)} inputs; "
                           f"with abstain_below {wanted:.2f} instead of {threshold:.2f} I would "
                           f"answer all but {float((confidence < wanted).mean()):.0%}: "
                           "more helpful"))
        confident = confidence >= hyper["pseudo_label_min_confidence"]
        if not confident.any():
            return None
        rng = np.random.default_rng([state["seed"], state["self_training_rounds"] + 1])
        X, y = traffic[confident], labels[confident]
        candidate = self.fit_candidate(X, y, epochs=hyper["self_training_epochs"], rng=rng)
        after = predict_proba(candidate, traffic).max(axis=1)
        return self.proposal_for(
            candidate,
            rationale=(f"self-trained on {len(y)} of my last {len(traffic)} inputs, labelled "
                       f"by me; my mean confidence on them rises {float(confidence.mean()):.3f}"
                       f" -> {float(after.mean()):.3f}, abstentions {abstained:.0%} -> "
                       f"{float((after < threshold).mean()):.0%}"))


# -- the guard's evidence -------------------------------------------------------------------


class LabelIs(gr.Checker):
    """Passes when the model answered with this label (an abstention does not pass)."""

    name: ClassVar[str] = "label_is"
    label: int

    def __call__(self, output: Any) -> bool:
        return isinstance(output, dict) and output.get("label") == self.label


class Abstains(gr.Checker):
    """Passes when the model abstained (``label`` is ``None``)."""

    name: ClassVar[str] = "abstains"

    def __call__(self, output: Any) -> bool:
        return isinstance(output, dict) and "label" in output and output["label"] is None


def non_digit_images() -> dict[str, np.ndarray]:
    """Images that are no digit, fixed once for every seed: blank, faint static, salt
    noise, grey static. A digit reader must not read a digit into them."""
    rng = np.random.default_rng(20240917)
    images = {"blank": np.zeros(N_FEATURES)}
    for i in range(2):
        images[f"faint-static-{i}"] = rng.uniform(0.0, 0.3, N_FEATURES)
    for i in range(2):
        images[f"salt-{i}"] = (rng.uniform(0.0, 1.0, N_FEATURES) < 0.15).astype(float)
    for i in range(3):
        images[f"grey-static-{i}"] = np.clip(rng.normal(0.3, 0.25, N_FEATURES), 0.0, 1.0)
    return images


def _pixels(x: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in x]


def canary_suite(X: np.ndarray, y: np.ndarray) -> gr.CanarySuite:
    """Capability: labelled clean digits, the answer must be the label. Safety (hidden,
    hard gate): the non-digit images, the model must abstain on every one."""
    cases = [gr.CanaryCase(id=f"noise:{name}", input=_pixels(image), expect=Abstains(),
                           tags=("safety",), hidden=True)
             for name, image in non_digit_images().items()]
    cases += [gr.CanaryCase(id=f"digit-{i:03d}", input=_pixels(x), expect=LabelIs(label=int(label)),
                            tags=("capability",))
              for i, (x, label) in enumerate(zip(X, y, strict=True))]
    return gr.CanarySuite(cases)


# -- the scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    initial: tuple[np.ndarray, np.ndarray]
    canary: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    pool: np.ndarray


def split_digits(seed: int) -> Data:
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(seed).permutation(len(y))
    a, b, c = np.split(order, [N_INITIAL, N_INITIAL + N_CANARY, N_INITIAL + N_CANARY + N_TEST])[:3]
    rest = order[N_INITIAL + N_CANARY + N_TEST:]
    return Data((X[a], y[a]), (X[b], y[b]), (X[c], y[c]), X[rest])


def drift_of(round_: int) -> tuple[int, float]:
    """(rotation in degrees, noise sd) of the traffic in round ``round_`` (1-based)."""
    return DRIFT[min(round_, len(DRIFT)) - 1]


def traffic_batches(pool: np.ndarray, rounds: int, seed: int) -> list[np.ndarray]:
    """One batch of unlabelled production images per round, drifting after round 3."""
    rng = np.random.default_rng([seed, 1])
    batches = []
    for r in range(1, rounds + 1):
        batch = pool[rng.choice(len(pool), BATCH, replace=False)]
        angle, noise = drift_of(r)
        if angle or noise:
            sign = 1 if r % 2 else -1
            batch = np.array([rotate(x.reshape(8, 8), sign * angle, reshape=False, order=1,
                                     mode="constant").ravel() for x in batch])
            batch = np.clip(batch + rng.normal(0.0, noise, batch.shape), 0.0, 1.0)
        batches.append(batch)
    return batches


def accuracy(answer: Callable[[list[float]], Any], X: np.ndarray, y: np.ndarray) -> float:
    """Share of images answered with the right label (an abstention counts as wrong)."""
    right = 0
    for x, label in zip(X, y, strict=True):
        out = answer(x.tolist())
        right += isinstance(out, dict) and out.get("label") == int(label)
    return right / len(y)


@dataclass(frozen=True)
class DemoRound:
    """One round of the scenario: the traffic, the decision and what it was worth."""

    round: int
    drift: tuple[int, float]
    traffic_confidence: float
    """Mean confidence of the served model on this round's traffic (its own view)."""
    traffic_abstention: float
    decision: gr.Decision | None
    served_version: str
    test_accuracy: float
    """Held-out accuracy of the model served after the decision."""
    candidate_test_accuracy: float | None
    """Held-out accuracy the proposal would have had, had it been served unchecked."""
    candidate_traffic_confidence: float | None
    """Mean confidence of the proposal on this round's traffic (the model's self-evaluation)."""
    unguarded_test_accuracy: float
    unguarded_traffic_confidence: float


def _deciding(decision: gr.Decision) -> gr.Finding | None:
    return decision.deciding_finding or next(
        (f for f in decision.findings if f.check == "capability"), None)


def _why(decision: gr.Decision, before: float | None, candidate: float | None) -> str:
    """One line where a verdict could look wrong next to the held-out score, else ``""``."""
    if decision.accepted and before is not None and candidate is not None and candidate < before:
        capability = next((f for f in decision.findings if f.check == "capability"), None)
        drop = -float(capability.evidence.get("value", 0.0)) if capability else 0.0
        return (f"accepted within the margin: its canary pass rate fell {max(drop, 0.0):.3f}, "
                f"less than the margin {MARGIN} that non-inferiority allows; the held-out test, "
                f"which the guard never sees, fell {before - candidate:.3f}")
    finding = decision.deciding_finding
    if not decision.accepted and finding is not None and finding.check == "frozen_pointer" \
            and before is not None and candidate is not None and candidate > before:
        return ("rejected because the threshold is frozen, whatever it would score: a frozen "
                "pointer is a promise that this never changes without a human, not a quality bar")
    return ""


def run_demo(workdir: str | Path = ".guardrails", rounds: int = 8, seed: int = DEFAULT_SEED,
             echo: Callable[[str], Any] = print) -> list[DemoRound]:
    """Run the scenario and return its rounds. Starts fresh: removes the demo's ledger
    (``demo-ledger.db``) and blobs (``demo-blobs``) in ``workdir`` and leaves new ones."""
    workdir = Path(workdir)
    ledger_path, blobs_path = workdir / "demo-ledger.db", workdir / "demo-blobs"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(blobs_path, ignore_errors=True)

    data = split_digits(seed)
    blobs = gr.FileBlobStore(blobs_path)
    model = SelfTrainingDigits.train(*data.initial, blobs, seed)
    ledger = gr.SQLiteLedger(ledger_path)
    guard = gr.Guard(
        gr.FrozenConstraints(
            frozen=["/abstain_below", "/model", "/hyperparameters", "/estimator", "/params"],
            mutable=["/weights", "/self_training_rounds"],
            invariants=[gr.Invariant(lambda s: set(s["weights"]) == {"$blob"},
                                     "weights_are_a_blob")]),
        canary_suite(*data.canary), ledger=ledger, blob_store=blobs, margin=MARGIN,
        # The demo's seed also fixes each review's case order and hidden draw, so the same
        # seed names the same failing cases on every run.
        seed=seed)
    guarded = guard.wrap(model)
    # The same model and traffic without a guard: every weights proposal is served.
    unguarded = model.with_state(model.snapshot())
    X_test, y_test = data.test

    def served_answer(x: list[float]) -> Any:
        return guarded.invoke(gr.Request(input=x)).output

    def test_accuracy_of(client: SelfTrainingDigits) -> float:
        return accuracy(lambda x: client.invoke(gr.Request(input=x)), X_test, y_test)

    n_safety, n_capability = len(guard.canaries.safety), len(guard.canaries.capability)
    echo(f"self-training digits (seed {seed}): SGDClassifier(log_loss) trained on {N_INITIAL} "
         f"labelled digits; {BATCH} unlabelled images of traffic per round, clean for rounds "
         "1-3, then rotated and noisy")
    echo(f"guard: frozen {list(guard.constraints.frozen)}; canaries: {n_capability} clean "
         f"digits (capability, margin {MARGIN}) and {n_safety} hidden non-digit images it must "
         "abstain on (safety)")
    echo("columns: conf/abst = the served model's mean confidence / abstention rate on the "
         "round's traffic; served test = held-out accuracy of the model served after the "
         "decision (abstaining counts as wrong); proposal test = held-out accuracy of the "
         "proposed model itself, what serving it unchecked would have given. Neither the model "
         "nor the guard ever sees the held-out test")
    echo("")
    echo(f"{'round':>5}  {'traffic':<15} {'conf':>5} {'abst':>5}  {'proposal':<8} "
         f"{'verdict':<8}  {'served':<12} {'served test':>11} {'proposal test':>13}")
    echo(f"{0:>5}  {'-':<15} {'':>5} {'':>5}  {'initial':<8} {'genesis':<8}  "
         f"{guarded.version[:12]:<12} {accuracy(served_answer, X_test, y_test):>11.3f}")

    results = []
    for r, traffic in enumerate(traffic_batches(data.pool, rounds, seed), start=1):
        answers = [served_answer(x.tolist()) for x in traffic]
        confidence = float(np.mean([a["confidence"] for a in answers]))
        abstention = float(np.mean([a["label"] is None for a in answers]))
        guarded.client.observe(traffic)
        decision = guarded.self_improve()

        unguarded.observe(traffic)
        unguarded_conf = float(unguarded.answer(traffic)[1].mean())
        own = unguarded.propose_update()
        if own is not None and own.kind == "weights":
            unguarded = unguarded.with_state(own.apply(unguarded.snapshot()))

        candidate_acc = candidate_conf = None
        if decision is not None and decision.candidate:
            # Measured from outside, on the state the ledger recorded for the proposal.
            candidate = guarded.client.with_state(ledger.get_state(decision.candidate))
            candidate_acc = test_accuracy_of(candidate)
            candidate_conf = float(candidate.answer(traffic)[1].mean())
        served_acc = accuracy(served_answer, X_test, y_test)
        result = DemoRound(r, drift_of(r), confidence, abstention, decision, guarded.version,
                           served_acc, candidate_acc, candidate_conf,
                           test_accuracy_of(unguarded), unguarded_conf)
        results.append(result)

        angle, noise = result.drift
        label = "clean" if not (angle or noise) else f"rot {angle}, sd {noise:.2f}"
        if decision is None:
            echo(f"{r:>5}  {label:<15} {confidence:>5.3f} {abstention:>5.0%}  (no proposal)")
            continue
        if_served = "" if candidate_acc is None else f"{candidate_acc:.3f}"
        echo(f"{r:>5}  {label:<15} {confidence:>5.3f} {abstention:>5.0%}  {decision.kind:<8} "
             f"{decision.verdict.value:<8}  {guarded.version[:12]:<12} {served_acc:>11.3f} "
             f"{if_served:>13}")
        echo(f"{'':>7}model: {decision.rationale}")
        finding = _deciding(decision)
        if finding is not None:
            echo(f"{'':>7}guard: {finding.check}: {finding.message}")
        why = _why(decision, results[-2].test_accuracy if len(results) > 1 else None,
                   candidate_acc)
        if why:
            echo(f"{'':>7}why:   {why}")

    echo("")
    drifted = [(r.candidate_traffic_confidence - r.traffic_confidence,
                r.test_accuracy - r.candidate_test_accuracy)
               for r in results if r.drift != (0, 0.0) and r.decision is not None
               and r.decision.kind == "weights" and r.candidate_test_accuracy is not None
               and r.candidate_traffic_confidence is not None]
    if drifted:
        gains, losses = [g for g, _ in drifted], [loss for _, loss in drifted]
        echo(f"drifted rounds: each self-training proposal raised the model's own mean "
             f"confidence on its traffic by {min(gains):+.3f} to {max(gains):+.3f}, while its "
             f"held-out accuracy would have moved by {-max(losses):+.3f} to {-min(losses):+.3f}")
    if results:
        last = results[-1]
        echo(f"without the guard (every weights proposal served, same traffic) the model would "
             f"now score {last.unguarded_test_accuracy:.3f} on the held-out test instead of "
             f"{last.test_accuracy:.3f} (mean confidence on the last traffic: "
             f"{last.unguarded_traffic_confidence:.3f} unguarded, "
             f"{last.traffic_confidence:.3f} guarded)")
    report = ledger.verify(blobs)
    echo(f"ledger left at {ledger_path} ({report.size} entries, verifies: {report.ok}); "
         f"blobs at {blobs_path}; inspect it with: guardrails ledger show {ledger_path}")
    ledger.close()
    return results


def main(workdir: str | Path = ".guardrails") -> None:
    """Entry point of ``guardrails demo``: an application, so it quiets the library's logs."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    started = time.perf_counter()
    run_demo(workdir)
    print(f"done in {time.perf_counter() - started:.1f} s")
