"""Signed checkpoints: the C2SP note format, Ed25519 keys, and every way a checkpoint can be bad."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from guardrails._errors import ConfigError, LedgerIntegrityError
from guardrails.ledger._checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    SigningKey,
    VerifierKey,
    key_id,
    open_note,
    sign_note,
    split_note,
)
from guardrails.ledger._merkle import MerkleTree

# The example of Go's golang.org/x/mod/sumdb/note documentation, the reference
# implementation of signed notes: Ed25519 is deterministic, so signing this text
# with this key must give exactly this note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = (GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIu"
           "GUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")

ORIGIN = "example.com/guardrails/ledger"
KEY = SigningKey.generate(ORIGIN)


def make_tree(n: int) -> MerkleTree:
    tree = MerkleTree()
    for i in range(n):
        tree.append(b"entry-%d" % i)
    return tree


def make_checkpoint(n: int = 5) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=n, root_hash=make_tree(n).root)


SIGNED = make_checkpoint().sign(KEY)


def test_go_reference_vector() -> None:
    signer = SigningKey.parse(GO_SKEY)
    assert str(signer.verifier) == GO_VKEY
    assert signer.to_text() == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, VerifierKey.parse(GO_VKEY)) == GO_TEXT
    assert f"{key_id('PeterNeumann', VerifierKey.parse(GO_VKEY).public_key):08x}" == "c74f20a3"


def test_round_trip() -> None:
    checkpoint = make_checkpoint(5)
    note = checkpoint.sign(KEY)
    lines = note.split("\n")
    assert lines[:3] == [ORIGIN, "5", base64.b64encode(checkpoint.root_hash).decode()]
    assert lines[3] == "" and lines[4].startswith(f"\u2014 {ORIGIN} ") and lines[5] == ""
    assert Checkpoint.verify(note, KEY.verifier, origin=ORIGIN) == checkpoint
    assert Checkpoint.verify(note.encode("utf-8"), [KEY.verifier]) == checkpoint
    assert Checkpoint.read(note) == checkpoint
    assert Checkpoint.from_text(checkpoint.text()) == checkpoint
    assert Checkpoint.model_validate_json(checkpoint.model_dump_json()) == checkpoint


def test_empty_tree_checkpoint() -> None:
    checkpoint = Checkpoint(origin=ORIGIN, size=0, root_hash=MerkleTree().root)
    assert checkpoint.text().split("\n")[1] == "0"
    assert Checkpoint.verify(checkpoint.sign(KEY), KEY.verifier) == checkpoint
    checkpoint.check_tree(MerkleTree())
    checkpoint.check_tree(make_tree(3))


def test_every_single_byte_change_is_detected() -> None:
    data = SIGNED.encode("utf-8")
    for position in range(len(data)):
        for mask in (0x01, 0x20, 0x80):
            altered = data[:position] + bytes([data[position] ^ mask]) + data[position + 1:]
            with pytest.raises(LedgerIntegrityError, match=r"^checkpoint: "):
                Checkpoint.verify(altered, KEY.verifier, origin=ORIGIN)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_replacement_insertion_or_deletion_is_detected(data: st.DataObject) -> None:
    raw = SIGNED.encode("utf-8")
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="position")
    action = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="action")
    byte = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    if action == "replace":
        if byte == raw[position]:
            return
        altered = raw[:position] + bytes([byte]) + raw[position + 1:]
    elif action == "insert":
        altered = raw[:position] + bytes([byte]) + raw[position:]
    else:
        altered = raw[:position] + raw[position + 1:]
    with pytest.raises(LedgerIntegrityError):
        Checkpoint.verify(altered, KEY.verifier, origin=ORIGIN)


def test_every_truncation_is_detected() -> None:
    for length in range(len(SIGNED)):
        with pytest.raises(LedgerIntegrityError):
            Checkpoint.verify(SIGNED[:length], KEY.verifier)


def test_truncated_note_names_what_is_missing() -> None:
    text_only = make_checkpoint().text()
    with pytest.raises(LedgerIntegrityError, match=r"no signatures.*unsigned or truncated"):
        Checkpoint.verify(text_only, KEY.verifier)
    with pytest.raises(LedgerIntegrityError, match="no signature lines"):
        Checkpoint.verify(text_only + "\n", KEY.verifier)
    with pytest.raises(LedgerIntegrityError, match="does not end in a newline"):
        Checkpoint.verify(SIGNED[:-1], KEY.verifier)


def test_wrong_key_is_named() -> None:
    other = SigningKey.generate(ORIGIN)
    expected = re.escape(f"not signed by the expected key {ORIGIN}+{other.key_id:08x} "
                         f"(signed by {ORIGIN}+{KEY.key_id:08x})")
    with pytest.raises(LedgerIntegrityError, match=expected):
        Checkpoint.verify(SIGNED, other.verifier)
    # A key that claims the signer's name and id but holds another public key.
    impostor = VerifierKey(name=ORIGIN, key_id=KEY.key_id, public_key=other.verifier.public_key)
    with pytest.raises(LedgerIntegrityError, match="does not verify"):
        Checkpoint.verify(SIGNED, impostor)
    with pytest.raises(ConfigError, match="no verifier key"):
        Checkpoint.verify(SIGNED, [])


def test_unknown_signatures_are_ignored_but_a_bad_known_one_rejects() -> None:
    witness = SigningKey.generate("witness.example/w1")
    cosigned = SIGNED + NoteSignature(
        name=witness.name, key_id=witness.key_id,
        signature=witness.sign(make_checkpoint().text().encode())).line() + "\n"
    assert Checkpoint.verify(cosigned, KEY.verifier) == make_checkpoint()
    assert Checkpoint.verify(cosigned, witness.verifier) == make_checkpoint()
    assert Checkpoint.verify(cosigned, [witness.verifier, KEY.verifier]) == make_checkpoint()
    _, signatures = split_note(cosigned)
    assert [s.name for s in signatures] == [ORIGIN, witness.name]

    forged_witness = SIGNED + NoteSignature(
        name=witness.name, key_id=witness.key_id, signature=bytes(64)).line() + "\n"
    assert Checkpoint.verify(forged_witness, KEY.verifier) == make_checkpoint()
    with pytest.raises(LedgerIntegrityError, match=r"witness\.example/w1.*does not verify"):
        Checkpoint.verify(forged_witness, [KEY.verifier, witness.verifier])


def test_foreign_ledger_checkpoint_is_rejected() -> None:
    with pytest.raises(LedgerIntegrityError, match=r"for log .* not 'example\.org/other'"):
        Checkpoint.verify(SIGNED, KEY.verifier, origin="example.org/other")


@pytest.mark.parametrize(("text", "problem"), [
    (f"{ORIGIN}\n5\n", "found 2 line"),
    (f"\n5\n{'A' * 43}=\n", "origin is empty"),
    (f"{ORIGIN}\n05\n{'A' * 43}=\n", "line 2: tree size '05'"),
    (f"{ORIGIN}\n-5\n{'A' * 43}=\n", "line 2"),
    (f"{ORIGIN}\n\u0665\n{'A' * 43}=\n", "line 2"),  # a non-ASCII digit
    (f"{ORIGIN}\n{2**63}\n{'A' * 43}=\n", "line 2"),
    (f"{ORIGIN}\n5\n{'A' * 42}==\n", "line 3: the root hash has 31 bytes"),
    (f"{ORIGIN}\n5\n{'A' * 43}\n", "line 3: the root hash is not valid base64"),
    (f"{ORIGIN}\n5\n{'A' * 42}B=\n", "line 3: the root hash is not canonical base64"),
    (f"{ORIGIN}\n5\n{'A' * 43}=", "does not end in a newline"),
    (f"bad\rorigin\n5\n{'A' * 43}=\n", "origin is a non-empty single line"),
])
def test_malformed_checkpoint_text(text: str, problem: str) -> None:
    with pytest.raises(LedgerIntegrityError, match=problem):
        Checkpoint.from_text(text, where="ledger.db checkpoint")
    if text.endswith("\n") and "\r" not in text:
        with pytest.raises(LedgerIntegrityError, match=f"^ledger.db checkpoint: .*{problem}"):
            Checkpoint.verify(sign_note(text, KEY), KEY.verifier, where="ledger.db checkpoint")


def test_extension_lines_are_kept_and_signed() -> None:
    checkpoint = make_checkpoint().model_copy(update={"extensions": ("ext one",)})
    note = checkpoint.sign(KEY)
    assert Checkpoint.verify(note, KEY.verifier).extensions == ("ext one",)


@pytest.mark.parametrize(("note", "problem"), [
    (SIGNED + "junk\n", "line 6 is not a signature line"),
    (SIGNED.replace("\n\n", "\n\n\n"), "does not verify"),  # the blank line joins the text
    (SIGNED.replace("\u2014 ", "-- "), "not a signature line"),
    (SIGNED.replace(f"\u2014 {ORIGIN} ", f"\u2014 {ORIGIN}  "), "a signature line is"),
    (SIGNED.replace(f"\u2014 {ORIGIN} ", "\u2014 a+b "), "not a valid key name"),
    (SIGNED.replace(ORIGIN + "\n", ORIGIN + "\r\n", 1), "control character"),
    (SIGNED + "\u2014 x AAAA\n", "too short to hold a key id"),
])
def test_malformed_signature_lines(note: str, problem: str) -> None:
    with pytest.raises(LedgerIntegrityError, match=problem):
        Checkpoint.verify(note, KEY.verifier)


def test_too_many_signatures() -> None:
    line = SIGNED.rsplit("\n\n", 1)[1]
    with pytest.raises(LedgerIntegrityError, match=f"at most {MAX_SIGNATURES}"):
        Checkpoint.verify(SIGNED + line * MAX_SIGNATURES, KEY.verifier)


def test_invalid_utf8_is_reported() -> None:
    with pytest.raises(LedgerIntegrityError, match="not valid UTF-8 at byte 0"):
        Checkpoint.verify(b"\xff" + SIGNED.encode(), KEY.verifier)


def test_checkpoint_model_validation() -> None:
    with pytest.raises(ValidationError):
        Checkpoint(origin=ORIGIN, size=1, root_hash=b"short")
    with pytest.raises(ValidationError):
        Checkpoint(origin="two\nlines", size=1, root_hash=bytes(32))
    with pytest.raises(ValidationError):
        Checkpoint(origin="", size=1, root_hash=bytes(32))
    with pytest.raises(ValidationError):
        Checkpoint(origin=ORIGIN, size=-1, root_hash=bytes(32))
    with pytest.raises(ValidationError):
        Checkpoint(origin=ORIGIN, size=1, root_hash=bytes(32), extensions=("",))
    checkpoint = make_checkpoint()
    with pytest.raises(ValidationError):
        checkpoint.size = 6  # type: ignore[misc]
    with pytest.raises(ValueError, match="exactly one newline"):
        sign_note("no newline", KEY)


# ---------------------------------------------------------------------------
# The checkpoint against the ledger's tree


def test_check_tree_accepts_the_same_and_grown_trees() -> None:
    checkpoint = Checkpoint.verify(SIGNED, KEY.verifier)
    checkpoint.check_tree(make_tree(5))
    checkpoint.check_tree(make_tree(6))
    checkpoint.check_tree(make_tree(1000))


def test_check_tree_names_removed_entries() -> None:
    with pytest.raises(LedgerIntegrityError, match=r"ledger\.db: has 3 entries but the trusted "
                       r"checkpoint records 5: entries 3 to 4 were removed") as info:
        make_checkpoint(5).check_tree(make_tree(3), where="ledger.db")
    assert info.value.index == 3


@pytest.mark.parametrize("size", [5, 6, 9, 64])
def test_check_tree_detects_rewritten_history(size: int) -> None:
    forged = MerkleTree()
    for i in range(size):
        forged.append(b"entry-%d" % i if i != 2 else b"rewritten")
    with pytest.raises(LedgerIntegrityError, match=r"ledger\.db: does not extend the trusted "
                       r"checkpoint of 5 entries .* history before entry 5 was rewritten"):
        make_checkpoint(5).check_tree(forged, where="ledger.db")


# ---------------------------------------------------------------------------
# Key files


def test_signing_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    KEY.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert loaded.verifier == KEY.verifier
    assert Checkpoint.verify(make_checkpoint().sign(loaded), KEY.verifier) == make_checkpoint()

    with pytest.raises(ConfigError, match="already exists; refusing to overwrite"):
        SigningKey.generate(ORIGIN).save(path)
    assert SigningKey.load(path).verifier == KEY.verifier

    replacement = SigningKey.generate(ORIGIN)
    replacement.save(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).verifier == replacement.verifier
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.key"]  # no temp file left


def test_signing_key_is_never_shown() -> None:
    secret = KEY.to_text().rsplit("+", 1)[1]
    assert secret not in repr(KEY) and secret not in str(KEY)
    assert repr(KEY) == f"SigningKey({ORIGIN}+{KEY.key_id:08x})"


def test_verifier_key_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "ledger.pub"
    KEY.verifier.save(path)
    assert VerifierKey.load(path) == KEY.verifier
    assert VerifierKey.parse(str(KEY.verifier)) == KEY.verifier


@pytest.mark.parametrize(("text", "problem"), [
    ("", "exactly one key line, found 0"),
    ("a+b+c\nd+e+f\n", "exactly one key line, found 2"),
    ("justaname", "expected a verifier key"),
    ("name+c74f20a3", "expected a verifier key"),
    ("na me+c74f20a3+AAAA", "key name 'na me' is not valid"),
    ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 lowercase hex"),
    ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not valid base64"),
    ("PeterNeumann+c74f20a3+AhpcAAA=", "not an Ed25519 verifier key"),
    ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
     "key id c74f20a4 does not match"),
    (GO_SKEY, "private signing key"),
])
def test_malformed_verifier_key_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.pub"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: .*{problem}"):
        VerifierKey.load(path)


@pytest.mark.parametrize(("text", "problem"), [
    (GO_VKEY, "expected a signing key"),
    (GO_SKEY.replace("c74f20a3", "c74f20a4"), "does not match the key"),
    (GO_SKEY[:-1], "not valid base64"),
    (GO_SKEY.replace("+AYEK", "+AiEK"), "not an Ed25519 signing key"),
])
def test_malformed_signing_key_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: .*{problem}") as info:
        SigningKey.load(path)
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key file not found"):
        VerifierKey.load(tmp_path / "absent.pub")
    with pytest.raises(ConfigError, match="key file not found"):
        SigningKey.load(tmp_path / "absent.key")


def test_key_names_follow_the_note_rules() -> None:
    for name in ("", "has space", "has+plus", "tab\there"):
        with pytest.raises(ConfigError, match="is not valid"):
            SigningKey.generate(name)
    with pytest.raises(ConfigError, match="32 bytes"):
        VerifierKey.from_public_key(ORIGIN, b"short")
