"""The guard: ``Guard`` (settings, fingerprint, wrap) and ``GuardedClient`` (serve the runtime
path, follow the ledger, approve, roll back, swap in a promoted version).

The top of the core: it may import every other sub-package; none imports it.
"""

from ._guard import Guard
from ._guarded import GuardedClient

__all__ = [
    "Guard",
    "GuardedClient",
]
