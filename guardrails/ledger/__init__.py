"""The ledger: the append-only, hash-chained record of every proposal and decision.

The protocol and its verification, the memory, SQLite and PostgreSQL stores on
one storage seam, the Merkle tree, inclusion and consistency proofs, signed
checkpoints, and the export as a transparency log of static files. Imports ``blobs`` and the shared modules.
"""

from ._checkpoint import Checkpoint, SigningKey, VerifierKey
from ._export import export_transparency_log
from ._ids import IdPrefixError, resolve_proposal, resolve_version
from ._ledger import (
    Ledger,
    LedgerBusyError,
    LedgerEntry,
    LedgerReport,
    MemoryLedger,
    PendingApproval,
    SQLiteLedger,
)
from ._merkle import ConsistencyProof, InclusionProof
from ._postgres import PostgresLedger, is_postgres_url, redact

__all__ = [
    "Checkpoint",
    "ConsistencyProof",
    "IdPrefixError",
    "InclusionProof",
    "Ledger",
    "LedgerBusyError",
    "LedgerEntry",
    "LedgerReport",
    "MemoryLedger",
    "PendingApproval",
    "PostgresLedger",
    "SQLiteLedger",
    "SigningKey",
    "VerifierKey",
    "export_transparency_log",
    "is_postgres_url",
    "redact",
    "resolve_proposal",
    "resolve_version",
]
