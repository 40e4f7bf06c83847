"""The network allow-list: a jailed child reaches exactly the endpoints the policy names.

The jail has no network (its own network namespace, Landlock denying TCP
connect), so an allowed endpoint is reached through the parent: the child
asks, over a UNIX socket pair it was born with, for endpoint number ``i``;
the parent (trusted, in the service's network) connects to that endpoint
and passes the connected socket back (``SCM_RIGHTS``). The child asks for
nothing else: it names an index into the parent's own list, so the worst a
hostile candidate can do with the broker is open connections to endpoints
it is allowed anyway.

In the child, ``socket.getaddrinfo`` resolves each allowed host name to a
private placeholder address and ``socket.socket.connect`` turns a connect to
an allowed (host or placeholder, port) into a broker request, so ordinary
clients (``http.client``, ``urllib3``, ``httpx``, ``asyncio``) work unchanged,
TLS included (the handshake runs end to end in the child). A candidate that
undoes the patch only loses its network.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = "127.77.{}.{}"
_SERVICES = {"http": 80, "https": 443}


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` too) as ``(host, port)``; ``ValueError`` when malformed."""
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"network endpoint {endpoint!r} must be host:port, e.g. "
                         "api.openai.com:443")
    return host, int(port)


# -- the parent's side ------------------------------------------------------------------


class Broker:
    """Connects to allowed endpoints for one child and hands it the sockets. Thread-safe."""

    def __init__(self, channel: socket.socket, endpoints: Sequence[str], timeout: float) -> None:
        self._channel = channel
        self._endpoints = [split_endpoint(e) for e in endpoints]
        self._timeout = timeout
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                request = self._channel.recv(64)
            except OSError:
                return
            if not request:
                return
            reply, fds = self._connect(request)
            try:
                socket.send_fds(self._channel, [reply], fds)
            except OSError:
                return
            finally:
                for fd in fds:
                    os.close(fd)

    def _connect(self, request: bytes) -> tuple[bytes, list[int]]:
        try:
            index = int(request.decode())
            host, port = self._endpoints[index]
        except (ValueError, IndexError, UnicodeDecodeError):
            return b"refused: not an allowed endpoint", []
        try:
            connection = socket.create_connection((host, port), timeout=self._timeout)
        except OSError as exc:
            return f"refused: {type(exc).__name__}: {exc}"[:500].encode(), []
        return b"ok", [connection.detach()]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._channel.close()


# -- the child's side --------------------------------------------------------------------


def install(broker_fd: int, endpoints: Sequence[str]) -> None:
    """In the jailed child: route connects to the allowed endpoints through the broker."""
    if len(endpoints) > 250 * 250:
        raise ValueError("too many network endpoints")
    broker = socket.socket(fileno=broker_fd)
    table: dict[tuple[str, int], int] = {}
    names: dict[str, str] = {}
    for index, endpoint in enumerate(endpoints):
        host, port = split_endpoint(endpoint)
        placeholder = names.setdefault(host, _PLACEHOLDER.format(1 + index // 250,
                                                                 1 + index % 250))
        table[(placeholder, port)] = table[(host, port)] = index
    _patch_resolver(names)
    _patch_connect(broker, table)


def _patch_resolver(names: dict[str, str]) -> None:
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in names:
            number = _SERVICES.get(port, 0) if isinstance(port, str) and not port.isdigit() \
                else int(port or 0)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (names[name], number))]
        return resolve(host, port, family, type, proto, flags)

    socket.getaddrinfo = getaddrinfo


def _patch_connect(broker: socket.socket, table: dict[tuple[str, int], int]) -> None:
    connect = socket.socket.connect
    lock = threading.Lock()

    def brokered(self: socket.socket, address: Any) -> None:
        index = (table.get((address[0], address[1]))
                 if isinstance(address, tuple) and len(address) >= 2 else None)
        if index is None or self.family != socket.AF_INET or self.type != socket.SOCK_STREAM:
            connect(self, address)
            return
        with lock:  # one request and its answer at a time
            broker.send(str(index).encode())
            reply, fds, _, _ = socket.recv_fds(broker, 1024, 1)
        if not fds:
            raise ConnectionRefusedError(errno.ECONNREFUSED, reply.decode(errors="replace")
                                         or "the sandbox's network broker is gone")
        blocking = self.gettimeout() is None
        os.dup2(fds[0], self.fileno())  # this socket object now holds the connection
        os.close(fds[0])
        os.set_blocking(self.fileno(), blocking)

    socket.socket.connect = brokered  # type: ignore[method-assign,assignment]
