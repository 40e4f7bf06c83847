"""The runtime chain: middleware as callables, composed by one loop, first in the list outermost.

Also the streaming side of the chain (``_stream``): the ``StreamPolicy`` a
middleware may offer and the hold-back buffer that releases only text every
output check has cleared. Imports only ``_errors``, ``_decision`` and
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
from ._stream import (
    CHANNELS,
    OVERFLOW_POLICY,
    StreamBuffer,
    StreamCheck,
    StreamHit,
    StreamInput,
    StreamPolicy,
    regex_span,
    stream_policies,
)

__all__ = [
    "CHANNELS",
    "OVERFLOW_POLICY",
    "AsyncHandler",
    "AsyncMiddleware",
    "Handler",
    "Middleware",
    "StreamBuffer",
    "StreamCheck",
    "StreamHit",
    "StreamInput",
    "StreamPolicy",
    "build_async_chain",
    "build_chain",
    "is_async_only",
    "regex_span",
    "stream_policies",
    "validate_middlewares",
]
