"""Start Arize Phoenix with its OTLP/gRPC receiver bound to 127.0.0.1 instead of every interface.

Run it with the Python of Phoenix's own virtual environment, never the
library's; arguments go to ``phoenix serve``::

    PHOENIX_HOST=127.0.0.1 .venvs/phoenix/bin/python examples/tracing/phoenix_loopback.py

``PHOENIX_HOST`` only moves the HTTP server (UI and OTLP/HTTP at ``/v1/traces``):
Phoenix binds its gRPC receiver (``PHOENIX_GRPC_PORT``, default 4317) to ``[::]``,
every interface, whatever the host setting. This launcher wraps the public
``grpc.aio.server`` factory so that every port the server adds is bound on
loopback, then runs Phoenix's own ``main``. With ``--no-grpc`` it refuses to
bind the gRPC receiver at all (OTLP/HTTP keeps working).
"""

from __future__ import annotations

import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def _port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def patch_grpc(*, disable: bool) -> None:
    import grpc.aio

    make_server = grpc.aio.server

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = make_server(*args, **kwargs)
        add_insecure, add_secure = server.add_insecure_port, server.add_secure_port

        def insecure(address: str) -> int:
            if disable:
                print("phoenix_loopback: gRPC receiver disabled", file=sys.stderr)
                return 0
            bound = f"{LOOPBACK}:{_port_of(address)}"
            print(f"phoenix_loopback: gRPC receiver on {bound} (asked for {address})",
                  file=sys.stderr)
            return int(add_insecure(bound))

        def secure(address: str, credentials: Any) -> int:
            if disable:
                print("phoenix_loopback: gRPC receiver disabled", file=sys.stderr)
                return 0
            return int(add_secure(f"{LOOPBACK}:{_port_of(address)}", credentials))

        server.add_insecure_port, server.add_secure_port = insecure, secure
        return server

    grpc.aio.server = loopback_server


def main() -> None:
    args = sys.argv[1:]
    disable = "--no-grpc" in args
    args = [a for a in args if a != "--no-grpc"]
    patch_grpc(disable=disable)
    from phoenix.server.main import main as phoenix_main

    sys.argv = ["phoenix", "serve", *args]
    phoenix_main()


if __name__ == "__main__":
    main()
