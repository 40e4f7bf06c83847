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

Unusable answers (HTTP 200, but nothing a client can use): a responder may
return ``RawBody(payload)`` to send ``payload`` as the JSON body exactly as
given, and ``serve_unusable(kind)`` answers every call with
``unusable_body(kind)`` until ``serve_unusable(None)``; the kinds are
``UNUSABLE_KINDS`` (a JSON object of the wrong shape, a JSON list, a
completion with ``"choices": []``, null content without tool calls, blank
content, a ``refusal``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["UNUSABLE_KINDS", "ChatRequest", "FakeOpenAIServer", "RawBody", "ServerFault",
           "count_tokens", "unusable_body"]


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


@dataclass(frozen=True)
class RawBody:
    """A responder's answer sent as the HTTP 200 JSON body exactly as given (no completion
    is built around it): for bodies a real server should never send."""

    payload: Any


UNUSABLE_KINDS = ("wrong_schema", "not_an_object", "no_choices", "null_content",
                  "blank_content", "refusal")
"""The unusable HTTP 200 bodies ``unusable_body`` builds."""


def _completion(model: str, number: int, message: dict[str, Any] | None) -> dict[str, Any]:
    choices = [] if message is None else [
        {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop",
         "logprobs": None}]
    return {"id": f"chatcmpl-fake-{number}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}}


def unusable_body(kind: str, model: str = "fake-model", number: int = 0) -> Any:
    """An HTTP 200 body the SDK parses without complaint but that holds no usable answer.

    ``wrong_schema``: a JSON object that is not a completion; ``not_an_object``:
    a JSON list; ``no_choices``: a valid completion with ``"choices": []``;
    ``null_content``: content null and no tool calls; ``blank_content``:
    whitespace only; ``refusal``: content null and a ``refusal`` text.
    """
    bodies: dict[str, Callable[[], Any]] = {
        "wrong_schema": lambda: {"result": "ok", "object": "response", "status": "completed"},
        "not_an_object": lambda: [{"text": "ok"}],
        "no_choices": lambda: _completion(model, number, None),
        "null_content": lambda: _completion(model, number, {"content": None}),
        "blank_content": lambda: _completion(model, number, {"content": "  \n"}),
        "refusal": lambda: _completion(model, number, {"content": None,
                                                       "refusal": "I can't help with that."}),
    }
    if kind not in bodies:
        raise ValueError(f"unknown unusable body {kind!r}; kinds: {', '.join(UNUSABLE_KINDS)}")
    return bodies[kind]()


Responder = Callable[[ChatRequest], "str | dict[str, Any] | RawBody"]


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
        self.unusable: str | None = None
        """While set, every call is answered with ``unusable_body(unusable)``."""
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

    def serve_unusable(self, kind: str | None) -> None:
        """Answer every call with ``unusable_body(kind)`` from now on (``None``: healthy again)."""
        if kind is not None:
            unusable_body(kind)  # an unknown kind fails here, not in the server thread
        self.unusable = kind

    # -- answering --------------------------------------------------------------------

    def _complete(self, body: dict[str, Any]) -> Any:
        request = ChatRequest(body)
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            number = self._counter
        kind = self.unusable
        if kind is not None:
            return unusable_body(kind, request.model, number)
        answer = self.responder(request)
        if isinstance(answer, RawBody):
            return answer.payload
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

        def _send(self, status: int, payload: Any) -> None:
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
