"""The ledger: the append-only, hash-chained record of every proposal and decision.

The protocol and its verification, the memory, SQLite and PostgreSQL stores on
one storage seam, the Merkle tree, inclusion and consistency proofs, signed
checkpoints, and the export as a transparency log of static files. Imports ``blobs`` and the shared modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
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

_LAZY: dict[str, str] = {
    "Checkpoint": "._checkpoint",
    "SigningKey": "._checkpoint",
    "VerifierKey": "._checkpoint",
    "export_transparency_log": "._export",
    "IdPrefixError": "._ids",
    "resolve_proposal": "._ids",
    "resolve_version": "._ids",
    "Ledger": "._ledger",
    "LedgerBusyError": "._ledger",
    "LedgerEntry": "._ledger",
    "LedgerReport": "._ledger",
    "MemoryLedger": "._ledger",
    "PendingApproval": "._ledger",
    "SQLiteLedger": "._ledger",
    "ConsistencyProof": "._merkle",
    "InclusionProof": "._merkle",
    "PostgresLedger": "._postgres",
    "is_postgres_url": "._postgres",
    "redact": "._postgres",
}
"""Where each lazily loaded name lives (module relative to this package)."""

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
