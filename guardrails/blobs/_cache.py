"""A local, bounded, content-addressed cache in front of a remote blob store (S3, PostgreSQL).

A follower that loads a promoted state's weights fetches each blob from the
shared store once; later loads read the local copy. The cache is only an
optimisation and never an authority:

- every read from it is verified against the digest (the file is hashed
  before a byte of it is handed out); an entry that does not match is
  deleted, counted in ``corrupt``, and the blob fetched again from the store,
  itself verified. A corrupted entry is never served;
- entries are written to a temporary file and renamed into place, so
  several processes on one host may share one folder and a reader never
  sees a partial entry;
- the folder holds at most ``max_bytes``: after each new entry the least
  recently used ones (by modification time, touched on every hit) are
  removed. A blob larger than ``max_bytes`` passes through uncached.

Writes, listings, deletions and ``in`` go to the store itself: the store, not
the cache, says what exists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._blobs import (
    CHUNK_SIZE,
    BlobInfo,
    BlobIntegrityError,
    HashingSink,
    StreamingBlobStore,
    blob_digest,
    digest_hex,
)


class _Discard:
    """A sink that only lets a ``HashingSink`` hash what passes."""

    def write(self, chunk: bytes) -> None:
        return None


class CachedBlobStore:
    """A ``StreamingBlobStore`` that reads through a local folder (see the module docstring).

    ``store``: the shared store; ``directory``: the cache folder (created);
    ``max_bytes``: the most the folder holds. ``hits``, ``misses`` and
    ``corrupt`` count reads served from the folder, fetched from the store,
    and cache entries found altered (deleted and fetched again).
    """

    def __init__(self, store: StreamingBlobStore, directory: str | os.PathLike[str],
                 max_bytes: int = 1 << 30) -> None:
        if max_bytes < 1:
            raise ValueError(f"a blob cache needs max_bytes >= 1, not {max_bytes}")
        self.store = store
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.hits = self.misses = self.corrupt = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.store.url

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.store, str(self.root), self.max_bytes))

    def __repr__(self) -> str:
        return f"CachedBlobStore({self.store.url!r}, cache={str(self.root)!r})"

    def _path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    # -- reads: the folder first, verified; else the store -----------------------------------

    def _cached(self, digest: str) -> IO[bytes] | None:
        """An open handle on a verified cache entry (rewound), or ``None`` on a miss; an entry
        that does not match its digest is deleted and counted as a miss."""
        path = self._path(digest)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        hashing = HashingSink(_Discard())  # type: ignore[arg-type]
        while chunk := handle.read(CHUNK_SIZE):
            hashing.write(chunk)
        try:
            hashing.check(str(path), digest)
        except BlobIntegrityError:
            handle.close()
            path.unlink(missing_ok=True)
            with self._lock:
                self.corrupt += 1
            return None
        handle.seek(0)
        with contextlib.suppress(OSError):  # touched for LRU; another process may evict it
            os.utime(path)
        with self._lock:
            self.hits += 1
        return handle

    def _fetch(self, digest: str) -> IO[bytes]:
        """The blob from the store (verified by it) into a new cache entry; an open handle on
        it, rewound. A blob over ``max_bytes`` is left as an unlinked temporary file."""
        with self._lock:
            self.misses += 1
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".fetch-")
        handle = os.fdopen(fd, "w+b")
        try:
            size = self.store.read_into(digest, handle)
            handle.flush()
            if size <= self.max_bytes:
                os.replace(tmp, self._path(digest))
                self._evict(keep=digest)
            else:
                os.unlink(tmp)
        except BaseException:
            handle.close()
            Path(tmp).unlink(missing_ok=True)
            raise
        handle.seek(0)
        return handle

    def _open(self, digest: str) -> IO[bytes]:
        digest_hex(digest)  # a malformed name is a KeyError before any file is touched
        return self._cached(digest) or self._fetch(digest)

    def get(self, digest: str) -> bytes:
        with self._open(digest) as handle:
            data = handle.read()
        # Checked again: the entry could change between the check and this read.
        if blob_digest(data) != digest:
            raise BlobIntegrityError(f"blob {digest} changed in the cache {self.root} while it "
                                     "was read", digest=digest, store=str(self.root))
        return data

    def read_into(self, digest: str, sink: IO[bytes]) -> int:
        hashing = HashingSink(sink)
        with self._open(digest) as handle:
            while chunk := handle.read(CHUNK_SIZE):
                hashing.write(chunk)
        return hashing.check(str(self.root), digest)

    def _evict(self, keep: str) -> None:
        """Remove the least recently used entries until the folder holds at most max_bytes."""
        entries = []
        for path in self.root.iterdir():
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, path.name, stat.st_size, path))
        total = sum(size for _, _, size, _ in entries)
        for _, name, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if name == digest_hex(keep):
                continue
            path.unlink(missing_ok=True)
            total -= size

    def cached(self) -> list[str]:
        """The digests the folder holds now (unverified: a read verifies)."""
        return sorted("sha256:" + p.name for p in self.root.iterdir() if not p.name.startswith("."))

    # -- everything else is the store's ---------------------------------------------------

    def put(self, data: bytes) -> str:
        return self.store.put(data)

    def put_stream(self, source: IO[bytes]) -> str:
        return self.store.put_stream(source)

    def blobs(self) -> Iterator[BlobInfo]:
        return self.store.blobs()

    def delete(self, digest: str) -> None:
        self.store.delete(digest)
        self._path(digest).unlink(missing_ok=True)

    def __contains__(self, digest: object) -> bool:
        return digest in self.store
