"""Signed checkpoints: the ledger's tree head as a C2SP signed note, signed with Ed25519.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text::

    <origin>
    <tree size, decimal>
    <root hash, base64>

followed by a blank line and signature lines (c2sp.org/signed-note)::

    — <key name> <base64(4-byte key id || Ed25519 signature of the text)>

The key id is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``.
Keys are stored in the text forms of Go's ``golang.org/x/mod/sumdb/note``
package, so checkpoints and keys interoperate with the transparency-log
ecosystem's tools::

    verifier key: <name>+<key id, 8 hex digits>+<base64(0x01 || public key)>
    signing key:  PRIVATE+KEY+<name>+<key id>+<base64(0x01 || private seed)>

Errors: a malformed or unusable *key* is a ``ConfigError``; a checkpoint
that is malformed, unsigned by the given key, or does not match the ledger
is a ``LedgerIntegrityError``, because from the verifier's side a damaged
checkpoint and a forged one look the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._errors import ConfigError, LedgerIntegrityError
from ._merkle import HASH_SIZE, MerkleTree, verify_consistency

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _ed25519() -> Any:
    """The cryptography module, imported on first use: most guards never sign, and it is
    the largest part of ``import guardrails`` otherwise (about 7 MB resident)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519

ALG_ED25519 = 0x01
"""The signed-note signature type of Ed25519."""

SIGNATURE_PREFIX = "\u2014 "
"""Em dash (U+2014) and a space: how every signature line starts."""

MAX_SIGNATURES = 100
"""Notes with more signature lines are rejected (the spec asks for a limit of at least 16)."""

MAX_TREE_SIZE = 2**63 - 1
"""SQLite's largest integer; a bigger size in a checkpoint is malformed, not a huge ledger."""

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HEX8_RE = re.compile(r"[0-9a-f]{8}")


def _b64decode(text: str) -> bytes:
    """Strict standard base64: the only text that decodes to these bytes.

    Lenient decoding would let a changed character in a signature line (which
    the signature does not cover) decode to the same bytes unnoticed.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_key_name(name: str, where: str) -> None:
    if not name or any(ch.isspace() or ch == "+" for ch in name) or not name.isprintable():
        raise ConfigError(
            f"{where}: key name {name!r} is not valid; a key name is non-empty and has no "
            "spaces, '+' or control characters (use the log's origin, e.g. example.com/ledger)"
        )


def key_id(name: str, public_key: bytes) -> int:
    """The signed-note key id of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || key)[:4]``."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


# ---------------------------------------------------------------------------
# Keys


def _key_bytes(name: str, hex_id: str, encoded: str, where: str, what: str,
               body: str) -> bytes:
    """Check a key text's name and id fields and decode its type byte plus 32 key bytes."""
    _check_key_name(name, where)
    if not _HEX8_RE.fullmatch(hex_id):
        raise ConfigError(f"{where}: key id {hex_id!r} is not 8 lowercase hex digits")
    try:
        raw = _b64decode(encoded)
    except ValueError as exc:
        raise ConfigError(f"{where}: the key is {exc}") from None
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise ConfigError(f"{where}: not an Ed25519 {what} (expected type byte 0x01 and {body})")
    return raw


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 public key that checks checkpoint signatures.

    ``str(key)`` is the verifier-key text ``name+id+base64``, safe to publish
    and to record beside the ledger.
    """

    name: str
    key_id: int
    public_key: bytes
    """The 32 raw bytes of the Ed25519 public key."""

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> VerifierKey:
        """The verifier key for raw Ed25519 public key bytes under ``name``."""
        _check_key_name(name, "verifier key")
        if len(public_key) != 32:
            raise ConfigError(
                f"verifier key {name}: an Ed25519 public key has 32 bytes, not {len(public_key)}"
            )
        return cls(name=name, key_id=key_id(name, public_key), public_key=bytes(public_key))

    @classmethod
    def parse(cls, text: str, *, where: str = "verifier key") -> VerifierKey:
        """Read the text form ``name+id+base64(0x01 || key)``; ``ConfigError`` if malformed."""
        text = text.strip()
        if text.startswith("PRIVATE+KEY+"):
            raise ConfigError(f"{where}: this is a private signing key; give the public "
                              "verifier key instead (never publish the private one)")
        # At most two splits: the base64 key itself may contain '+'.
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected a verifier key 'name+keyid+base64key', got "
                              f"{len(parts)} '+'-separated parts")
        name, hex_id, encoded = parts
        raw = _key_bytes(name, hex_id, encoded, where, "verifier key", "32 key bytes")
        key = cls(name=name, key_id=int(hex_id, 16), public_key=raw[1:])
        if key.key_id != key_id(name, key.public_key):
            raise ConfigError(f"{where}: key id {hex_id} does not match key {name}'s public key "
                              "(the key text was altered or mixed from two keys)")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerifierKey:
        """Read a verifier key file (one line of text); ``ConfigError`` naming the file."""
        return cls.parse(_read_key_file(path), where=str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the verifier key file (world-readable: it is public)."""
        Path(path).write_text(str(self) + "\n", encoding="utf-8")

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes, no key id) is this key's Ed25519 signature."""
        try:
            _ed25519().Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature, message)
        except Exception:  # cryptography's InvalidSignature, or a malformed key
            return False
        return True


class SigningKey:
    """A named Ed25519 private key that signs checkpoints.

    Never printed: ``repr`` shows the name and key id only.
    """

    __slots__ = ("_private", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        _check_key_name(name, "signing key")
        self.name = name
        self._private = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier: VerifierKey = VerifierKey.from_public_key(name, public)
        """The public half, to record beside the ledger and hand to verifiers."""

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        """A new random key named ``name`` (by convention the log's origin)."""
        return cls(name, _ed25519().Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    def __repr__(self) -> str:
        return f"SigningKey({self.name}+{self.key_id:08x})"

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def to_text(self) -> str:
        """The private text form ``PRIVATE+KEY+name+id+base64(0x01 || seed)``. Keep it secret."""
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return (f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+"
                f"{_b64(bytes([ALG_ED25519]) + seed)}")

    @classmethod
    def parse(cls, text: str, *, where: str = "signing key") -> SigningKey:
        """Read the private text form; ``ConfigError`` if malformed (never echoes the key)."""
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ConfigError(f"{where}: expected a signing key 'PRIVATE+KEY+name+keyid+base64'")
        name, hex_id, encoded = parts[2:]
        raw = _key_bytes(name, hex_id, encoded, where, "signing key", "a 32-byte seed")
        key = cls(name, _ed25519().Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if key.key_id != int(hex_id, 16):
            raise ConfigError(f"{where}: key id {hex_id} does not match the key "
                              f"({key.key_id:08x}); the key text was altered")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a signing key file; ``ConfigError`` naming the file."""
        return cls.parse(_read_key_file(path), where=str(path))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key to ``path``, readable by its owner only (mode 0600).

        Refuses to replace an existing file unless ``overwrite``: losing a
        signing key cannot be undone. The file never exists with wider
        permissions, not even briefly.
        """
        target = Path(path)
        data = (self.to_text() + "\n").encode("utf-8")
        if not overwrite:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise ConfigError(f"{target}: a key file already exists; refusing to overwrite "
                                  "it (pass overwrite=True to replace it)") from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # O_CREAT's mode is narrowed by the umask, never widened, so 0600 holds;
            # chmod anyway in case the platform ignored it.
            os.chmod(target, 0o600)
            return
        # mkstemp creates the file 0600; the rename makes the replacement atomic.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _read_key_file(path: str | os.PathLike[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: key file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the key file ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ConfigError(f"{path}: a key file holds exactly one key line, found {len(lines)}")
    return lines[0]


# ---------------------------------------------------------------------------
# Notes


class NoteSignature(BaseModel):
    """One signature line of a signed note, not yet verified."""

    model_config = ConfigDict(frozen=True)

    name: str
    key_id: int
    signature: bytes
    """The signature proper, without the 4-byte key id."""

    def line(self) -> str:
        """The signature line, without its newline."""
        return (f"{SIGNATURE_PREFIX}{self.name} "
                f"{_b64(self.key_id.to_bytes(4, 'big') + self.signature)}")


def _bad(where: str, problem: str) -> LedgerIntegrityError:
    return LedgerIntegrityError(f"{where}: {problem}")


def split_note(note: str | bytes, *, where: str = "checkpoint") -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and its (unverified) signatures.

    Enforces the signed-note syntax: UTF-8, no control characters but
    newline, text ending in a newline, a blank line, then 1 to
    ``MAX_SIGNATURES`` well-formed signature lines. Raises
    ``LedgerIntegrityError`` naming ``where`` and the line.
    """
    if isinstance(note, bytes | bytearray):
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(where, f"not valid UTF-8 at byte {exc.start}") from None
    for offset, ch in enumerate(note):
        if ch < " " and ch != "\n":
            line = note.count("\n", 0, offset) + 1
            raise _bad(where, f"control character {ch!r} on line {line}")
    # The text ends at the *last* blank line: the text itself may contain blank lines.
    cut = note.rfind("\n\n")
    if cut < 0:
        raise _bad(where, "no signatures (a signed note is its text, a blank line, then "
                          "signature lines); the checkpoint is unsigned or truncated")
    text, block = note[: cut + 1], note[cut + 2:]
    if not block:
        raise _bad(where, "no signature lines after the blank line (truncated?)")
    if not block.endswith("\n"):
        raise _bad(where, "the last signature line does not end in a newline (truncated?)")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _bad(where, f"{len(lines)} signature lines; at most {MAX_SIGNATURES} are accepted")
    first_line = text.count("\n") + 2
    signatures = []
    for number, sig_line in enumerate(lines, start=first_line):
        if not sig_line.startswith(SIGNATURE_PREFIX):
            raise _bad(where, f"line {number} is not a signature line ('\u2014 name signature')")
        fields = sig_line[len(SIGNATURE_PREFIX):].split(" ")
        if len(fields) != 2 or not fields[0]:
            raise _bad(where, f"line {number}: a signature line is '\u2014 <key name> <base64>'")
        name, encoded = fields
        try:
            _check_key_name(name, where)
        except ConfigError:
            raise _bad(where, f"line {number}: {name!r} is not a valid key name") from None
        try:
            raw = _b64decode(encoded)
        except ValueError as exc:
            raise _bad(where, f"line {number}: the signature is {exc}") from None
        if len(raw) < 5:
            raise _bad(where, f"line {number}: the signature is too short to hold a key id")
        signatures.append(NoteSignature(name=name, key_id=int.from_bytes(raw[:4], "big"),
                                        signature=raw[4:]))
    return text, signatures


def sign_note(text: str, key: SigningKey) -> str:
    """Sign ``text`` (which must end in a newline and hold no blank last line) as a note."""
    if not text.endswith("\n") or text.endswith("\n\n") or text == "\n":
        raise ValueError("note text must end in exactly one newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise ValueError("note text must not contain control characters other than newline")
    signature = NoteSignature(name=key.name, key_id=key.key_id,
                              signature=key.sign(text.encode("utf-8")))
    return f"{text}\n{signature.line()}\n"


def open_note(
    note: str | bytes, keys: VerifierKey | Sequence[VerifierKey], *, where: str = "checkpoint"
) -> str:
    """The text of ``note`` once a signature by one of ``keys`` verifies.

    Per the signed-note spec: signatures by other keys are ignored; any
    signature that names a known key (name and key id) and fails rejects
    the whole note; at least one must verify. Raises
    ``LedgerIntegrityError`` naming ``where`` and the key.
    """
    known = [keys] if isinstance(keys, VerifierKey) else list(keys)
    if not known:
        raise ConfigError(f"{where}: no verifier key given to check the signature with")
    text, signatures = split_note(note, where=where)
    message = text.encode("utf-8")
    verified = False
    for signature in signatures:
        for key in known:
            if (signature.name, signature.key_id) != (key.name, key.key_id):
                continue
            if not key.verify(message, signature.signature):
                raise _bad(where, f"the signature by {key.name}+{key.key_id:08x} does not "
                                  "verify: the checkpoint text or signature was altered")
            verified = True
    if not verified:
        present = ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)
        wanted = ", ".join(f"{k.name}+{k.key_id:08x}" for k in known)
        raise _bad(where, f"not signed by the expected key {wanted} (signed by {present}); "
                          "check that the key belongs to this ledger")
    return text


# ---------------------------------------------------------------------------
# Checkpoints


class Checkpoint(BaseModel):
    """A tree head: the log ``origin``, the tree ``size`` and its RFC 6962 ``root_hash``.

    ``text()`` is the exact note text that is signed. Equal checkpoints
    give identical text.
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    origin: str
    size: int = Field(ge=0, le=MAX_TREE_SIZE)
    root_hash: bytes
    extensions: tuple[str, ...] = ()
    """Optional extra lines (c2sp.org/tlog-checkpoint discourages them; kept for reading)."""

    @field_validator("origin")
    @classmethod
    def _origin_is_one_line(cls, value: str) -> str:
        if not value or any(ch < " " for ch in value):
            raise ValueError("the origin is a non-empty single line without control characters")
        return value

    @field_validator("root_hash")
    @classmethod
    def _root_is_a_hash(cls, value: bytes) -> bytes:
        if len(value) != HASH_SIZE:
            raise ValueError(f"the root hash has {HASH_SIZE} bytes, not {len(value)}")
        return value

    @field_validator("extensions")
    @classmethod
    def _extensions_are_lines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not line or any(ch < " " for ch in line) for line in value):
            raise ValueError("extension lines are non-empty single lines")
        return value

    def text(self) -> str:
        """The checkpoint's note text: origin, size and base64 root, one per line."""
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def sign(self, key: SigningKey) -> str:
        """The signed note: ``text()``, a blank line and ``key``'s signature line."""
        return sign_note(self.text(), key)

    @classmethod
    def from_text(cls, text: str, *, where: str = "checkpoint") -> Checkpoint:
        """Parse checkpoint note text (no signatures); ``LedgerIntegrityError`` if malformed."""
        if not text.endswith("\n"):
            raise _bad(where, "the checkpoint text does not end in a newline (truncated?)")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise _bad(where, f"a checkpoint has an origin, a size and a root hash line; "
                              f"found {len(lines)} line(s)")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise _bad(where, "line 1: the origin is empty")
        if not _SIZE_RE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
            raise _bad(where, f"line 2: tree size {size_text[:40]!r} is not a decimal number "
                              "without leading zeros")
        try:
            root = _b64decode(root_text)
        except ValueError as exc:
            raise _bad(where, f"line 3: the root hash is {exc}") from None
        if len(root) != HASH_SIZE:
            raise _bad(where, f"line 3: the root hash has {len(root)} bytes, not {HASH_SIZE}")
        for number, line in enumerate(extensions, start=4):
            if not line:
                raise _bad(where, f"line {number} is empty")
        try:
            return cls(origin=origin, size=int(size_text), root_hash=root,
                       extensions=tuple(extensions))
        except ValidationError as exc:  # control characters, when called without split_note
            problem = "; ".join(error["msg"] for error in exc.errors())
            raise _bad(where, f"not a valid checkpoint ({problem})") from None

    @classmethod
    def read(cls, note: str | bytes, *, where: str = "checkpoint") -> Checkpoint:
        """Parse a signed checkpoint WITHOUT checking its signatures.

        For display, or to compare with a tree when no key is at hand;
        never trust the result. Use ``verify`` to trust it.
        """
        text, _ = split_note(note, where=where)
        return cls.from_text(text, where=where)

    @classmethod
    def verify(
        cls,
        note: str | bytes,
        keys: VerifierKey | Sequence[VerifierKey],
        *,
        origin: str | None = None,
        where: str = "checkpoint",
    ) -> Checkpoint:
        """Check a signed checkpoint against ``keys`` and return it.

        If ``origin`` is given, the checkpoint must be for that log (a
        checkpoint of another ledger is rejected). Raises
        ``LedgerIntegrityError`` naming ``where`` for a malformed note, a
        missing or failing signature, or the wrong origin.
        """
        checkpoint = cls.from_text(open_note(note, keys, where=where), where=where)
        if origin is not None and checkpoint.origin != origin:
            raise _bad(where, f"the checkpoint is for log {checkpoint.origin!r}, not "
                              f"{origin!r} (a checkpoint of another ledger?)")
        return checkpoint

    def check_tree(self, tree: MerkleTree, *, where: str = "ledger") -> None:
        """Check that ``tree`` extends this (trusted) checkpoint.

        The tree must hold at least ``size`` leaves, and its first ``size``
        must have this root: proved with an RFC 6962 consistency proof from
        the tree's stored nodes. Raises ``LedgerIntegrityError`` naming
        ``where`` if entries were removed or history before ``size`` was
        rewritten. ``O(log n)``.
        """
        if tree.size < self.size:
            raise LedgerIntegrityError(
                f"{where}: has {tree.size} entries but the trusted checkpoint records "
                f"{self.size}: entries {tree.size} to {self.size - 1} were removed",
                index=tree.size,
            )
        proof = tree.consistency_proof(self.size)
        try:
            verify_consistency(self.size, tree.size, self.root_hash, tree.root, proof)
        except LedgerIntegrityError as exc:
            raise LedgerIntegrityError(
                f"{where}: does not extend the trusted checkpoint of {self.size} entries "
                f"(root {self.root_hash.hex()[:12]}): history before entry {self.size} was "
                f"rewritten ({exc})",
                index=exc.index,
            ) from None
