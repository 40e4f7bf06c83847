"""One URL names a blob store: ``file://``, ``postgresql://`` or ``s3://``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._blobs import FileBlobStore, StreamingBlobStore

SCHEMES = ("file://", "postgresql://", "postgres://", "s3://")


def open_blob_store(url: str, *, root: str | Path | None = None, read_only: bool = False,
                    **options: Any) -> StreamingBlobStore:
    """The store ``url`` names; ``options`` are the store's keyword arguments.

    ``file://PATH`` (or a bare path): a folder, relative paths resolved from
    ``root`` (the configuration's folder). ``postgresql://...``: the
    ``PostgresBlobStore`` (``schema``). ``s3://BUCKET/PREFIX``: the
    ``S3BlobStore`` (``endpoint``, ``region``). Raises ``ConfigError`` for any
    other scheme or an option the store does not take. ``read_only``: a
    PostgreSQL store then creates no table and writes nothing (opening a folder
    store creates the folder, so a reader checks that it exists first).
    """
    lowered = url.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresBlobStore

        return _build(PostgresBlobStore, url, {**options, "read_only": read_only})
    if lowered.startswith("s3://"):
        from ._s3 import S3BlobStore

        return _build(S3BlobStore, url, options)
    if "://" in url and not lowered.startswith("file://"):
        # The scheme only: the rest of a URL may hold a password.
        raise ConfigError(f"the blob store URL has an unknown scheme "
                          f"{lowered.split('://', 1)[0] + '://'!r}; use file://PATH, "
                          "postgresql://USER@HOST/DB or s3://BUCKET/PREFIX")
    if options:
        raise ConfigError(f"a file blob store takes no options (got {', '.join(sorted(options))})")
    path = Path(url[len("file://"):] if lowered.startswith("file://") else url)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return FileBlobStore(path)


def _build(cls: Any, url: str, options: dict[str, Any]) -> StreamingBlobStore:
    try:
        store: StreamingBlobStore = cls(url, **options)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}; see docs/deployment.md for its options") from None
    return store
