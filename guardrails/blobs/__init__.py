"""Content-addressed blob stores: large artifacts (weights, memories) that states reference by SHA-256 digest.

Write-once, every read verified against its digest. Imports only the top-level
shared modules (``_canonical``, ``_errors``).
"""

from ._blobs import (
    BLOB_KEY,
    BlobStore,
    FileBlobStore,
    MemoryBlobStore,
    blob_digest,
    blob_ref,
    iter_blob_refs,
)

__all__ = [
    "BLOB_KEY",
    "BlobStore",
    "FileBlobStore",
    "MemoryBlobStore",
    "blob_digest",
    "blob_ref",
    "iter_blob_refs",
]
