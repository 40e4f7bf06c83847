"""Content-addressed blob stores: large artifacts (weights, memories) that states reference by SHA-256 digest.

Write-once, every read verified against its digest. A local folder
(``FileBlobStore``), PostgreSQL beside the ledger (``PostgresBlobStore``) or
S3-compatible object storage (``S3BlobStore``), chosen by URL with
``open_blob_store``, a remote one optionally behind a local ``CachedBlobStore``;
``verify_blobs`` and ``collect_garbage`` check a store against a ledger's states.
Imports only the top-level shared modules (``_canonical``, ``_errors``); psycopg and
boto3 only when such a store is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from ._audit import unreferenced_blobs, verify_blobs
    from ._blobs import (
        BLOB_KEY,
        BlobError,
        BlobInfo,
        BlobIntegrityError,
        BlobStore,
        BlobStoreUnavailable,
        FileBlobStore,
        MemoryBlobStore,
        StreamingBlobStore,
        blob_digest,
        blob_ref,
        iter_blob_refs,
    )
    from ._cache import CachedBlobStore
    from ._open import open_blob_store
    from ._postgres import PostgresBlobStore
    from ._s3 import S3BlobStore

_LAZY: dict[str, str] = {
    "unreferenced_blobs": "._audit",
    "verify_blobs": "._audit",
    "BLOB_KEY": "._blobs",
    "BlobError": "._blobs",
    "BlobInfo": "._blobs",
    "BlobIntegrityError": "._blobs",
    "BlobStore": "._blobs",
    "BlobStoreUnavailable": "._blobs",
    "FileBlobStore": "._blobs",
    "MemoryBlobStore": "._blobs",
    "StreamingBlobStore": "._blobs",
    "blob_digest": "._blobs",
    "blob_ref": "._blobs",
    "iter_blob_refs": "._blobs",
    "open_blob_store": "._open",
    "CachedBlobStore": "._cache",
    "PostgresBlobStore": "._postgres",
    "S3BlobStore": "._s3",
}
"""Where each lazily loaded name lives (module relative to this package)."""

__all__ = [
    "unreferenced_blobs",
    "verify_blobs",
    "BLOB_KEY",
    "BlobError",
    "BlobInfo",
    "BlobIntegrityError",
    "BlobStore",
    "BlobStoreUnavailable",
    "CachedBlobStore",
    "FileBlobStore",
    "MemoryBlobStore",
    "PostgresBlobStore",
    "S3BlobStore",
    "StreamingBlobStore",
    "blob_digest",
    "blob_ref",
    "iter_blob_refs",
    "open_blob_store",
]


def __getattr__(name: str) -> Any:
    # PEP 562: a name's module is imported on first use, so importing this package costs
    # only what is used.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
