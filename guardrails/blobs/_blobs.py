"""Content-addressed storage for large artifacts (weights, indexes).

A state never holds a large artifact inline; it holds ``{"$blob": digest}``
and the bytes live here under that digest.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._canonical import sha256_hex

BLOB_KEY = "$blob"
_PREFIX = "sha256:"


def blob_digest(data: bytes) -> str:
    """The digest under which ``data`` is stored: ``"sha256:<hex>"``."""
    return _PREFIX + sha256_hex(data)


def blob_ref(digest: str) -> dict[str, str]:
    """The JSON a state holds in place of a blob: ``{"$blob": digest}``."""
    return {BLOB_KEY: digest}


def iter_blob_refs(state: Any) -> Iterator[str]:
    """Every blob digest referenced anywhere in a JSON state."""
    if isinstance(state, dict):
        ref = state.get(BLOB_KEY)
        if isinstance(ref, str) and len(state) == 1:
            yield ref
            return
        for value in state.values():
            yield from iter_blob_refs(value)
    elif isinstance(state, list):
        for value in state:
            yield from iter_blob_refs(value)


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live. ``put`` is idempotent; ``get`` raises ``KeyError`` if absent."""

    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def __contains__(self, digest: object) -> bool: ...


class MemoryBlobStore:
    """Blobs in a dict: for tests and short-lived processes."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        digest = blob_digest(data)
        with self._lock:
            self._blobs.setdefault(digest, bytes(data))
        return digest

    def get(self, digest: str) -> bytes:
        return self._blobs[digest]

    def __contains__(self, digest: object) -> bool:
        return digest in self._blobs


class FileBlobStore:
    """Blobs as files named by digest under ``root``, written atomically.

    A reader never sees a partly written blob: each is written to a
    temporary file and renamed into place.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if not digest.startswith(_PREFIX) or len(digest) != len(_PREFIX) + 64:
            raise KeyError(f"not a blob digest: {digest!r} (expected 'sha256:' and 64 hex digits)")
        return self.root / digest[len(_PREFIX) :]

    def put(self, data: bytes) -> str:
        digest = blob_digest(data)
        path = self._path(digest)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self._path(digest).exists()
