"""A TCP relay on 127.0.0.1 that can drop or black-hole the connections it carries.

Put between a ledger and its PostgreSQL server to inject network faults:
``drop()`` resets every live connection and refuses new ones; ``stall()``
resets the live ones and accepts new ones without ever answering (so
connecting times out, as to a host that vanished); ``heal()`` relays
normally again. Loopback only; every loop ends at ``close()``.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
import time


class FaultyRelay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def route(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by this relay's."""
        return re.sub(r"@[^/@]+/", f"@127.0.0.1:{self.port}/", dsn, count=1)

    def drop(self) -> None:
        self.mode = "drop"
        self._reset_live()

    def stall(self) -> None:
        self.mode = "stall"
        self._reset_live()

    def heal(self) -> None:
        self.mode = "pass"

    def close(self) -> None:
        self._closed.set()
        self._reset_live()
        for thread in self._threads:
            thread.join(timeout=2)
        self._listener.close()

    def _reset_live(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for sock in live:
            try:
                # RST rather than FIN: what a vanished peer or a middlebox reset looks like.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                client.close()
                continue
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        with self._lock:
            self._live.append(client)
        # Stalled: hold the connection open and say nothing until healed or dropped.
        while self.mode == "stall" and not self._closed.is_set():
            time.sleep(0.02)
        if self.mode != "pass" or self._closed.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._live.append(upstream)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._closed.is_set() and self.mode == "pass":
                for key, _ in selector.select(timeout=0.05):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
