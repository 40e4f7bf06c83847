"""Audit an exported guardrails transparency log without the guardrails library.

    python examples/scenarios/verify_transparency_log.py DIR [--key KEY_TEXT]

DIR is what ``guardrails ledger export LEDGER DIR`` (``gr.export_transparency_log``)
writes, as ``guardrails demo community`` does:
``entries/N.json`` (each ledger entry's canonical JSON bytes, the Merkle leaves),
``proofs/N.json`` (RFC 6962 inclusion proofs), ``checkpoint`` (a C2SP signed note:
origin, tree size, base64 root, Ed25519 signature line) and ``key`` (the verifier key
``name+keyid+base64(0x01 || public key)``). Pass ``--key`` with the key text you obtained
out of band (a witness, the operator's web page) to check against it rather than the
published file.

It checks: the checkpoint's signature under the key, that the entries' Merkle root is the
signed root, that every entry is chained to the previous one, and every inclusion proof
against the signed root. Then it lists what was accepted and why the rest was not.
Exit code 0 when everything holds, 1 otherwise. Needs only the standard library and
``cryptography``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class AuditError(Exception):
    pass


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1: split at the largest power of two smaller than n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def root_from_proof(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to."""
    if index >= size:
        raise AuditError(f"leaf index {index} is outside a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise AuditError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise AuditError("inclusion proof is shorter than the tree is deep")
    return r


def parse_key(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    name, key_id, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded)
    if len(raw) != 33 or raw[0] != 0x01:
        raise AuditError("verifier key is not an Ed25519 key (0x01 || 32 bytes)")
    computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if computed.hex() != key_id:
        raise AuditError(f"verifier key id {key_id} does not match the key ({computed.hex()})")
    return name, computed, Ed25519PublicKey.from_public_bytes(raw[1:])


def verify_checkpoint(note: str, key_text: str) -> tuple[str, int, bytes]:
    """Check the signed note under the key; return (origin, size, root)."""
    name, key_id, public = parse_key(key_text)
    text, sep, signatures = note.partition("\n\n")
    if not sep:
        raise AuditError("checkpoint has no signature block")
    body = text + "\n"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            continue
        signer, _, blob = line[2:].partition(" ")
        raw = base64.b64decode(blob)
        if signer != name or raw[:4] != key_id:
            continue
        try:
            public.verify(raw[4:], body.encode())
        except InvalidSignature as exc:
            raise AuditError("checkpoint signature does not verify under the key") from exc
        origin, size, root = body.splitlines()[:3]
        return origin, int(size), base64.b64decode(root)
    raise AuditError(f"checkpoint carries no signature by {name!r}")


def audit(directory: Path, key_text: str | None) -> list[str]:
    """Every check; returns the report lines, raises AuditError at the first failure."""
    key_text = key_text or (directory / "key").read_text()
    origin, size, root = verify_checkpoint((directory / "checkpoint").read_text(), key_text)
    entries = [(directory / "entries" / f"{i}.json").read_bytes() for i in range(size)]
    if (directory / "entries" / f"{size}.json").exists():
        raise AuditError(f"more entries than the signed tree size {size}")
    leaves = [leaf_hash(data) for data in entries]
    if merkle_root(leaves) != root:
        raise AuditError("the entries' Merkle root is not the signed root")
    lines = [f"checkpoint of {origin}: {size} entries, root {root.hex()[:16]}..., signature ok"]
    previous = None
    for i, data in enumerate(entries):
        entry = json.loads(data)
        if entry["index"] != i or (previous is not None and entry["prev_hash"] != previous):
            raise AuditError(f"entry {i} is not chained to entry {i - 1}")
        previous = hashlib.sha256(data).hexdigest()
        proof = json.loads((directory / "proofs" / f"{i}.json").read_text())
        if bytes.fromhex(proof["leaf_hash"]) != leaves[i]:
            raise AuditError(f"proof {i} is for another leaf")
        got = root_from_proof(proof["leaf_index"], proof["tree_size"], leaves[i],
                              [bytes.fromhex(h) for h in proof["hashes"]])
        if proof["tree_size"] != size or got != root:
            raise AuditError(f"inclusion proof {i} does not lead to the signed root")
        lines.append(describe(i, entry))
    return lines


def describe(index: int, entry: dict) -> str:
    decision = (entry.get("body") or {}).get("decision")
    if entry.get("type") != "decision" or not decision:
        return f"  {index}: event {entry.get('body', {}).get('event', entry.get('type'))}"
    failed = next((f for f in decision.get("findings", []) if not f.get("passed")), None)
    why = "" if failed is None else f" ({failed['check']}: {failed['message'][:80]})"
    return (f"  {index}: {decision['verdict']:<12} {decision.get('kind', '')} from "
            f"{decision.get('source', '')}{why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--key", help="verifier key text obtained out of band")
    args = parser.parse_args(argv)
    try:
        lines = audit(args.directory, args.key)
    except (AuditError, OSError, ValueError, KeyError) as exc:
        print(f"NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print("verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
