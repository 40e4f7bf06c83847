"""A ledger as a transparency log: static files anyone can audit without this library."""

from __future__ import annotations

import os
from pathlib import Path

from .._canonical import canonical_json
from .._errors import LedgerIntegrityError
from ._checkpoint import Checkpoint
from ._ledger import Ledger

LAYOUT = """\
A guardrails ledger, exported as a transparency log.

entries/N.json  entry N as its canonical JSON bytes: the Merkle leaf, and what the hash
                chain hashes (SHA-256 of entry N is entry N+1's prev_hash)
proofs/N.json   RFC 6962 inclusion proof of entry N in the signed tree (hex hashes)
checkpoint      the signed tree head: a C2SP signed note (origin, size, base64 root,
                Ed25519 signature line)
key             the verifier key: name+keyid+base64(0x01 || Ed25519 public key); get it
                from the operator out of band to trust it
"""


def export_transparency_log(ledger: Ledger, directory: str | os.PathLike[str]) -> Path:
    """Write ``ledger`` to ``directory`` as static files (see ``LAYOUT``, also written as
    ``README``) up to its last signed checkpoint, and return the directory.

    The ledger is verified first, and the checkpoint checked against its key. Raises
    ``LedgerIntegrityError`` if it does not verify, ``ValueError`` if it signs no
    checkpoints (open it with a ``signing_key``) or ``directory`` exists and is not
    empty (an export is never mixed with an older one).
    """
    report = ledger.verify()
    if not report.ok:
        raise LedgerIntegrityError(f"the ledger does not verify ({report.problem}); not exported")
    note, key = ledger.latest_checkpoint(), getattr(ledger, "verifier_key", None)
    if note is None or key is None:
        raise ValueError("the ledger signs no checkpoints, so there is nothing to trust the "
                         "export by; open it with a signing key ([ledger] signing_key, or "
                         "guardrails ledger keygen) and record a decision")
    size = Checkpoint.verify(note, key).size
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; export into a new directory")
    (out / "entries").mkdir(parents=True, exist_ok=True)
    (out / "proofs").mkdir(exist_ok=True)
    for entry in ledger.entries():
        if entry.index >= size:
            break  # appended after the checkpoint: not covered by its signature yet
        data = canonical_json({"index": entry.index, "type": entry.type, "body": entry.body,
                               "prev_hash": entry.prev_hash})
        (out / "entries" / f"{entry.index}.json").write_bytes(data)
        proof = ledger.prove(entry.index)
        if proof.tree_size != size:
            raise LedgerIntegrityError(f"the ledger grew from {size} to {proof.tree_size} entries "
                                       "during the export; export again into a new directory")
        (out / "proofs" / f"{entry.index}.json").write_text(proof.model_dump_json())
    (out / "checkpoint").write_text(note, encoding="utf-8")
    (out / "key").write_text(f"{key}\n", encoding="utf-8")
    (out / "README").write_text(LAYOUT, encoding="utf-8")
    return out
