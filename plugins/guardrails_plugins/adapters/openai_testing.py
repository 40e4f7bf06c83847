"""A local OpenAI-compatible HTTP server for tests and offline examples.

``FakeOpenAIServer`` serves ``POST /v1/chat/completions`` on ``127.0.0.1``
(a free port) from a thread, so the real ``openai`` SDK can be exercised
end to end without a network: requests go through the SDK's own HTTP stack,
responses are parsed by the SDK's own models, and errors are the SDK's own
exceptions. Only the standard library is used.

The answer comes from ``responder(request) -> str | dict``, where
``request`` is a ``ChatRequest`` (system prompt, last user message, the raw
JSON body). A ``dict`` answer is sent as the assistant message (for tool
calls); raising ``ServerFault(status)`` answers with that HTTP status.
``fail_next(status, times)`` injects faults from the outside; a ``status``
of ``0`` drops the connection without an answer (a network error).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatRequest", "FakeOpenAIServer", "ServerFault", "count_tokens"]


class ServerFault(Exception):
    """Raised by a responder to answer with an HTTP error (``status`` 0: drop the connection)."""

    def __init__(self, status: int = 500, message: str = "injected fault") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ChatRequest:
    """What one chat-completions call asked for."""

    body: dict[str, Any]
    """The JSON body as the SDK sent it."""

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def system_prompt(self) -> str:
        """The text of every system (or developer) message, joined by blank lines."""
        return "\n\n".join(_text(m.get("content")) for m in self.messages
                           if m.get("role") in ("system", "developer"))

    @property
    def user_text(self) -> str:
        """The text of the last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


Responder = Callable[[ChatRequest], "str | dict[str, Any]"]


def echo_responder(request: ChatRequest) -> str:
    return request.user_text


@dataclass
class _Faults:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[int] = field(default_factory=list)


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions endpoint on loopback. Use as a context manager.

    ``base_url`` is what to give ``openai.OpenAI(base_url=...)``; ``requests``
    lists every ``ChatRequest`` received, in order; ``delay`` (seconds) is
    slept before each answer.
    """

    def __init__(self, responder: Responder = echo_responder, *, delay: float = 0.0) -> None:
        self.responder = responder
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self._faults = _Faults()
        self._counter = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running; call start() or use it in a with block")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- faults -----------------------------------------------------------------------

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` calls with HTTP ``status`` (0: drop the connection)."""
        with self._faults.lock:
            self._faults.queue.extend([status] * times)

    def _next_fault(self) -> int | None:
        with self._faults.lock:
            return self._faults.queue.pop(0) if self._faults.queue else None

    # -- answering --------------------------------------------------------------------

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        request = ChatRequest(body)
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            number = self._counter
        answer = self.responder(request)
        message: dict[str, Any]
        if isinstance(answer, dict):
            message = {"role": "assistant", "content": None, **answer}
        else:
            message = {"role": "assistant", "content": str(answer)}
        prompt_tokens = sum(count_tokens(_text(m.get("content"))) for m in request.messages)
        completion_tokens = count_tokens(_text(message.get("content")))
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            if status == 0:
                self.close_connection = True
                self.connection.close()
                return
            self._send(status, {"error": {"message": message, "type": "server_error",
                                          "code": str(status)}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if server.delay:
                time.sleep(server.delay)
            fault = server._next_fault()
            if fault is not None:
                self._error(fault, "injected fault")
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw or b"{}")
                payload = server._complete(body)
            except ServerFault as exc:
                self._error(exc.status, exc.message)
                return
            except Exception as exc:  # a broken responder is a 500, as a real server's would be
                self._error(500, f"{type(exc).__name__}: {exc}")
                return
            self._send(200, payload)

    return Handler
