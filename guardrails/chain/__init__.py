"""The runtime chain: middleware as callables, composed by one loop, first in the list outermost.

Also the error boundaries around middleware. Imports only ``_errors`` and
``_messages``; knows nothing of the gate or the ledger.
"""

from ._chain import (
    AsyncHandler,
    AsyncMiddleware,
    Handler,
    Middleware,
    build_async_chain,
    build_chain,
    is_async_only,
    validate_middlewares,
)

__all__ = [
    "AsyncHandler",
    "AsyncMiddleware",
    "Handler",
    "Middleware",
    "build_async_chain",
    "build_chain",
    "is_async_only",
    "validate_middlewares",
]
