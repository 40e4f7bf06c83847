"""Scenario ``community``: open community feedback, signed with Ed25519 and published as a
transparency log.

Mechanism (open community feedback): a shared digit classifier improves from proposals
that contributors send: new weights each one trained on the labelled digits they hold.
Trust is by public key, not shared secret (public contributors cannot share one): a
keyring names each trusted proposer's Ed25519 public key (the built-in ``provenance``
plugin's ``public_keys`` setting, as a ``guardrails.toml`` would give it). It verifies the
signature over the proposal's canonical payload (id, parent, patch, kind, source),
refuses unsigned proposals, sources without a key and replays (a signed proposal id the
ledger already decided). ``outside_kind`` (an ``UpdateCheck``) requires an outside
contributor's proposal to be of kind ``outside``, which the ``ApprovalPolicy`` sends to a
human even when the gate accepts.

The rounds, computed: a maintainer's honest fine-tune (accepted); a trusted maintainer's
poisoned weights (labels of 7 flipped to 1 in their training data), validly signed, which
the canaries reject; an attacker's unsigned proposal in a maintainer's name; one in
another maintainer's name signed by a key not in the keyring; a replay of the poisoned
proposal and its signature; an outside contributor's honest proposal,
which waits for a human and is served once a maintainer approves it.

The ledger signs a checkpoint (a C2SP signed note) after every entry. At the end the
scenario exports it as a transparency log (``gr.export_transparency_log``, also
``guardrails ledger export``: entries as their canonical bytes, the signed checkpoint,
the verifier key and an inclusion proof per entry) and
``examples/scenarios/verify_transparency_log.py`` (stdlib plus ``cryptography``, no import
of this library) checks it.

Harm: the error rate of the served model on held-out digits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import guardrails as gr

from ..checks.provenance import sign_proposal_ed25519
from . import _linear as lin
from ._report import Echo, Row, ScenarioResult, Table, entry_point, fresh_store, make_row, summary

NAME = "community"
SEED = 21
HARM_BOUND = 0.10
OUTSIDE_KIND = "outside"


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign(proposal: gr.UpdateProposal, key: Ed25519PrivateKey) -> gr.UpdateProposal:
    """The proposal with its Ed25519 signature (hex) over the provenance payload."""
    return proposal.model_copy(update={"signature": sign_proposal_ed25519(proposal, key)})


class OutsideKind:
    """``outside_kind``: a proposal from an outside contributor must be of kind ``outside``
    (which the ``ApprovalPolicy`` sends to a human). The signature covers the kind, so an
    outsider cannot sign a proposal as another kind and skip the approval."""

    name = "outside_kind"

    def __init__(self, outside: Iterable[str]) -> None:
        self.outside = frozenset(outside)

    def __repr__(self) -> str:
        return f"OutsideKind({sorted(self.outside)!r})"

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        proposal = context.proposal
        ok = proposal.source not in self.outside or proposal.kind == OUTSIDE_KIND
        return [gr.Finding(
            check=self.name, passed=ok,
            message=(f"{proposal.source!r} proposes as kind {proposal.kind!r}" if ok else
                     f"{proposal.source!r} is an outside contributor: propose as kind "
                     f"{OUTSIDE_KIND!r}, which waits for a human"),
            evidence={"source": proposal.source, "kind": proposal.kind})]


class SharedClassifier:
    """The community's digit classifier. It does not propose by itself (contributors do):
    ``propose_update`` returns ``None``. State: ``{"model", "weights" (a blob)}``."""

    def __init__(self, state: dict[str, Any], blobs: gr.BlobStore) -> None:
        self._state, self._blobs = json.loads(json.dumps(state)), blobs
        self.weights = lin.get_weights(blobs, state["weights"])

    def invoke(self, request: gr.Request) -> dict[str, Any]:
        x = np.asarray(request.input, dtype=np.float64)
        if x.shape != (lin.N_PIXELS,):
            raise ValueError(f"expected {lin.N_PIXELS} pixel values, got shape {x.shape}")
        return {"label": int(lin.predict(self.weights, x)[0])}

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state))  # type: ignore[no-any-return]

    def with_state(self, state: dict[str, Any]) -> SharedClassifier:
        return SharedClassifier(state, self._blobs)

    def propose_update(self) -> gr.UpdateProposal | None:
        return None


def contribution(client: SharedClassifier, blobs: gr.BlobStore, X: np.ndarray, y: np.ndarray,
                 source: str, note: str, kind: str = "weights") -> gr.UpdateProposal:
    """A contributor's proposal: the served weights fine-tuned on the contributor's own data."""
    W = lin.train(client.weights, X, y, lr=0.5, epochs=60)
    parent = gr.state_version(client.snapshot())
    return gr.UpdateProposal(
        parent=parent, kind=kind, source=source, rationale=note,
        # Deterministic ids keep the printed table identical across runs.
        id=hashlib.sha256(f"{source}:{parent}:{note}".encode()).hexdigest()[:32],
        patch=[{"op": "replace", "path": "/weights", "value": lin.put_weights(blobs, W)}])


def _keys(seed: int) -> dict[str, Ed25519PrivateKey]:
    """Deterministic Ed25519 keys per person (a demo; real keys come from each contributor)."""
    rng = np.random.default_rng([seed, 7])
    return {name: Ed25519PrivateKey.from_private_bytes(rng.bytes(32))
            for name in ("alice", "bob", "carol", "dave")}


def _proposals(client: SharedClassifier, blobs: gr.BlobStore, keys: dict[str, Ed25519PrivateKey],
               pools: list[tuple[np.ndarray, np.ndarray]], previous: list[gr.UpdateProposal]
               ) -> list[tuple[str, gr.UpdateProposal]]:
    """This round's proposal, built on the served ``client`` (round = len(previous))."""
    r = len(previous)
    X, y = pools[r]
    poisoned = np.where(y == 7, 1, y)
    if r == 0:
        return [("alice: fine-tune on her digits", sign(contribution(
            client, blobs, X, y, "alice", "fine-tuned on 150 digits I labelled"), keys["alice"]))]
    if r == 1:
        return [("bob: poisoned weights (7 -> 1), signed", sign(contribution(
            client, blobs, X, poisoned, "bob", "fine-tuned on my digits"), keys["bob"]))]
    if r == 2:
        return [("mallory as 'alice': unsigned, poisoned", contribution(
            client, blobs, X, poisoned, "alice", "urgent fix"))]
    if r == 3:
        return [("dave as 'bob': signed by a key not in the keyring", sign(contribution(
            client, blobs, X, poisoned, "bob", "fine-tuned"), keys["dave"]))]
    if r == 4:
        return [("replay of bob's signed proposal", previous[1])]
    return [("carol (outside): fine-tune on her digits", sign(contribution(
        client, blobs, X, y, "carol", "fine-tuned on 150 digits I labelled", kind=OUTSIDE_KIND),
        keys["carol"]))]


def run(workdir: str | Path = ".guardrails", seed: int = SEED, echo: Echo = print) -> ScenarioResult:
    """Run the community scenario; returns its result, leaves a verified ledger and exports
    the transparency log to ``workdir/community-log``."""
    X, y = lin.digits()
    order = np.random.default_rng(seed).permutation(len(y))
    initial, canary, test, rest = np.split(order, [200, 500, 900])
    pools = [(X[rest[i * 150:(i + 1) * 150]], y[rest[i * 150:(i + 1) * 150]]) for i in range(6)]
    keys = _keys(seed)
    # The keyring, as it would stand in guardrails.toml under [plugins.provenance].
    provenance = gr.load_plugin("provenance").build({
        "allowed_sources": ["alice", "bob", "carol"], "require_signature": True,
        "public_keys": {name: public_hex(keys[name]) for name in ("alice", "bob", "carol")}})
    ledger, blobs, ledger_path = fresh_store(workdir, NAME, signing_key=gr.SigningKey(
        "guardrails-demo-community", Ed25519PrivateKey.from_private_bytes(
            np.random.default_rng([seed, 8]).bytes(32))))
    W = lin.train(np.zeros((lin.N_PIXELS + 1, 10)), X[initial], y[initial], lr=1.0, epochs=300)
    model = SharedClassifier({"model": {"kind": "softmax regression", "classes": 10},
                              "weights": lin.put_weights(blobs, W)}, blobs)
    guard = gr.Guard(gr.FrozenConstraints(frozen=["/model"], mutable=["/weights"]),
                     lin.label_cases("digit", X[canary], y[canary]), ledger=ledger,
                     blob_store=blobs, margin=0.02,
                     checks=[*provenance.checks, OutsideKind(["carol"])],
                     approval=gr.ApprovalPolicy(kinds=(OUTSIDE_KIND,)), seed=seed)
    guarded = guard.wrap(model)
    unguarded = model.with_state(model.snapshot())

    def harm(client: SharedClassifier) -> float:
        return 1.0 - lin.accuracy(client.weights, X[test], y[test])

    echo(f"community (seed {seed}): contributors send weights for a shared digit classifier, "
         "signed with Ed25519; the keyring trusts alice and bob (maintainers) and carol (outside)")
    echo(f"guard: provenance (Ed25519 keyring), outside_kind, {len(canary)} canaries (margin "
         "0.02), outside proposals wait for a maintainer; the ledger signs a checkpoint after "
         "every entry")
    table = Table("error rate on held-out digits", echo)
    baseline = harm(model)
    table.header(baseline)
    rows: list[Row] = []
    sent: list[gr.UpdateProposal] = []  # every proposal so far (the replay reuses one)
    for r in range(6):
        (label, proposal), = _proposals(guarded.client, blobs, keys, pools, sent)
        sent.append(proposal)
        decision = guarded.propose(proposal)
        if decision.deciding_finding is not None and decision.deciding_finding.check == "human_approval":
            echo(f"{'':>7}waiting: {decision.deciding_finding.message}; a maintainer reviews and approves")
            decision = guarded.approve(decision.proposal_id or "", approver="alice")
        # Without a guard every proposal is served (the replay re-applies bob's patch).
        own = proposal if r != 4 else sent[1]
        unguarded = unguarded.with_state(own.apply(unguarded.snapshot()))
        rows.append(make_row(r + 1, label, decision, harm(guarded.client), harm(unguarded)))
        table.row(rows[-1])
    report = ledger.verify(blobs)
    log = gr.export_transparency_log(ledger, Path(workdir) / f"{NAME}-log")
    echo(f"ledger: {ledger_path} ({report.size} entries, verifies: {report.ok}); transparency log "
         f"exported to {log}; check it with: python examples/scenarios/verify_transparency_log.py {log}")
    ledger.close()
    result = ScenarioResult(NAME, "held-out error", HARM_BOUND, baseline, tuple(rows), report,
                            extra={"log": str(log)})
    summary(result, echo)
    return result


main = entry_point(run)
