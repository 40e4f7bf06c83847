"""Content-addressed blob stores: large artifacts (weights, memories) that states reference by SHA-256 digest.

Write-once, every read verified against its digest. A local folder
(``FileBlobStore``), PostgreSQL beside the ledger (``PostgresBlobStore``) or
S3-compatible object storage (``S3BlobStore``), chosen by URL with
``open_blob_store``; ``verify_blobs`` and ``collect_garbage`` check a store
against a ledger's states. Imports only the top-level shared modules
(``_canonical``, ``_errors``); psycopg and boto3 only when such a store is used.
"""

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
from ._open import open_blob_store
from ._postgres import PostgresBlobStore
from ._s3 import S3BlobStore

__all__ = [
    "unreferenced_blobs",
    "verify_blobs",
    "BLOB_KEY",
    "BlobError",
    "BlobInfo",
    "BlobIntegrityError",
    "BlobStore",
    "BlobStoreUnavailable",
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
