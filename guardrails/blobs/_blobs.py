"""Content-addressed storage for large artifacts (weights, indexes).

A state never holds a large artifact inline; it holds ``{"$blob": digest}``
and the bytes live here under that digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .._canonical import sha256_hex
from .._errors import GuardrailsError

BLOB_KEY = "$blob"
_PREFIX = "sha256:"
CHUNK_SIZE = 1 << 20
"""Bytes read or written at a time when a blob is streamed."""


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


def digest_hex(digest: str) -> str:
    """The 64 hex digits of a ``"sha256:<hex>"`` digest; ``KeyError`` for anything else (no
    store holds a blob under a malformed name, and none may be tricked into a path by one)."""
    if not isinstance(digest, str):
        raise KeyError(f"not a blob digest: {digest!r}")
    hex_part = digest[len(_PREFIX):]
    if (not digest.startswith(_PREFIX) or len(hex_part) != 64
            or any(c not in "0123456789abcdef" for c in hex_part)):
        raise KeyError(f"not a blob digest: {digest!r} (expected 'sha256:' and 64 lower-case "
                       "hex digits)")
    return hex_part


class BlobError(GuardrailsError):
    """A blob could not be stored or read; the message names the blob and the store."""

    def __init__(self, message: str, *, digest: str | None, store: str) -> None:
        super().__init__(message)
        self.digest = digest
        self.store = store

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: the default reduce would lose them (a Dask worker's error).
        return (_rebuild_error, (type(self), str(self), self.digest, self.store))


def _rebuild_error(cls: type[BlobError], message: str, digest: str | None, store: str
                   ) -> BlobError:
    return cls(message, digest=digest, store=store)


class BlobIntegrityError(BlobError):
    """A store returned bytes that do not match the digest they were asked for."""


class BlobStoreUnavailable(BlobError):
    """The store could not be reached or refused the request (down, denied, misconfigured)."""


class BlobInfo(BaseModel):
    """One stored blob as a store lists it."""

    model_config = ConfigDict(frozen=True)

    digest: str
    size: int
    created: float
    """When the store received it (seconds since the epoch)."""


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live. ``put`` is idempotent; ``get`` raises ``KeyError`` if absent."""

    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...

    def __contains__(self, digest: object) -> bool: ...


@runtime_checkable
class StreamingBlobStore(BlobStore, Protocol):
    """A shared store: blobs streamed in and out (never whole in memory), listed, named by URL.

    ``put_stream`` reads ``source`` to its end and returns the digest;
    ``read_into`` writes the blob to ``sink`` and raises ``BlobIntegrityError``
    (after writing: a caller writes to a temporary file) when the bytes do not
    match the digest, ``KeyError`` when absent. ``blobs`` lists what the store
    holds. Each of them, and ``get`` and ``put``, raises
    ``BlobStoreUnavailable`` when the store cannot be reached. A store pickles
    as its URL and reconnects where it is unpickled (a Dask worker, a sandbox).
    """

    @property
    def url(self) -> str: ...

    def put_stream(self, source: IO[bytes]) -> str: ...

    def read_into(self, digest: str, sink: IO[bytes]) -> int: ...

    def blobs(self) -> Iterator[BlobInfo]: ...

    def delete(self, digest: str) -> None: ...


def verified(store: str, digest: str, data: bytes) -> bytes:
    """``data`` if it matches ``digest``, else ``BlobIntegrityError`` naming both."""
    if blob_digest(data) != digest:
        raise BlobIntegrityError(f"blob {digest} read from {store} does not match its digest "
                                 "(altered or truncated in the store)", digest=digest, store=store)
    return data


class Spool:
    """A source read once into a temporary file while hashing it: its digest and size are
    known before the first byte reaches a store, so a store can write it under its name."""

    def __init__(self, source: IO[bytes], directory: str | None = None) -> None:
        hasher = hashlib.sha256()
        self.size = 0
        # Closed by __exit__: a Spool is always used as a context manager.
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        try:
            while chunk := source.read(CHUNK_SIZE):
                hasher.update(chunk)
                self.file.write(chunk)
                self.size += len(chunk)
            self.file.flush()
            self.file.seek(0)
        except BaseException:
            self.file.close()
            raise
        self.digest = _PREFIX + hasher.hexdigest()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


class HashingSink:
    """Wraps a sink: counts and hashes what passes, so a streamed read is verified at its end."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.size = 0
        self._hasher = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self.sink.write(chunk)
        self.size += len(chunk)

    def check(self, store: str, digest: str) -> int:
        if _PREFIX + self._hasher.hexdigest() != digest:
            raise BlobIntegrityError(f"blob {digest} read from {store} does not match its "
                                     "digest (altered or truncated in the store)",
                                     digest=digest, store=store)
        return self.size


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
    """Blobs as files named by digest under ``root``, written atomically, read verified.

    A reader never sees a partly written blob: each is written to a
    temporary file and renamed into place. A file whose bytes no longer match
    its name raises ``BlobIntegrityError`` on read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.root),))

    def _path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

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

    def put_stream(self, source: IO[bytes]) -> str:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                sink = HashingSink(handle)
                while chunk := source.read(CHUNK_SIZE):
                    sink.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            digest = _PREFIX + sink._hasher.hexdigest()
            path = self._path(digest)
            if path.exists():
                Path(tmp).unlink()
            else:
                os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        return verified(self.url, digest, data)

    def read_into(self, digest: str, sink: IO[bytes]) -> int:
        try:
            handle = self._path(digest).open("rb")
        except FileNotFoundError:
            raise KeyError(digest) from None
        hashing = HashingSink(sink)
        with handle:
            while chunk := handle.read(CHUNK_SIZE):
                hashing.write(chunk)
        return hashing.check(self.url, digest)

    def blobs(self) -> Iterator[BlobInfo]:
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            yield BlobInfo(digest=_PREFIX + path.name, size=stat.st_size, created=stat.st_mtime)

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def __contains__(self, digest: object) -> bool:
        try:
            return isinstance(digest, str) and self._path(digest).exists()
        except KeyError:
            return False

