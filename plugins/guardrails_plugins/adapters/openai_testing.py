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
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["UNUSABLE_KINDS", "ChatRequest", "FakeOpenAIServer", "RawBody", "RawStream",
           "ServerFault", "StreamPlan", "count_tokens", "stream_events", "unusable_body"]


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


@dataclass(frozen=True)
class RawStream:
    """A responder's answer to a ``stream=True`` call, sent as exactly these SSE events.

    A ``str`` event is sent verbatim as the ``data:`` payload (malformed JSON
    included); anything else is JSON-encoded. ``done``: end with ``data: [DONE]``.
    """

    events: tuple[Any, ...]
    done: bool = True


@dataclass(frozen=True)
class StreamPlan:
    """How the server breaks (or not) the streams it sends; the default sends them whole.

    Event numbers count the ``data:`` events from 0, ``[DONE]`` included.
    """

    delta_chars: int | None = None
    """Split every text, reasoning, refusal and tool-argument delta into pieces of at most this
    many characters, one event each (default: one word per event)."""
    write_size: int | None = None
    """Write the SSE bytes in slices of this many bytes, each its own flushed HTTP chunk, so
    boundaries fall inside ``data:`` lines, inside JSON and inside multi-byte characters."""
    drop_after: int | None = None
    """Close the connection abruptly before event N (no terminating HTTP chunk)."""
    end_after: int | None = None
    """End the body cleanly before event N: no finish reason, no ``[DONE]``."""
    bad_event_at: int | None = None
    """Send malformed JSON as event N instead of the real one."""
    hold_after: int | None = None
    """Before event N, wait until the client closes the stream (at most ``hold_timeout``
    seconds); a client that closes is counted in ``FakeOpenAIServer.abandoned``."""
    hold_timeout: float = 10.0


BAD_EVENT = '{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "tru'
"""The malformed ``data:`` payload ``StreamPlan.bad_event_at`` sends."""


def _pieces(text: str, size: int | None) -> list[str]:
    if size is None:
        return re.findall(r"\s*\S+\s*|\s+", text)
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_events(payload: Any, *, include_usage: bool = True,
                  delta_chars: int | None = None) -> list[Any]:
    """The chunk objects a streaming server sends for ``payload`` (a completion body).

    A payload that is not a completion (no ``choices`` list) is sent as one
    event, as it is: a broken server streams what it would have answered.
    """
    if not (isinstance(payload, dict) and isinstance(payload.get("choices"), list)):
        return [payload]
    base = {key: payload.get(key) for key in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    events: list[Any] = []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        events.append({**base, "choices": [{"index": 0, "delta": delta,
                                            "finish_reason": finish, "logprobs": None}]})

    for choice in payload["choices"]:
        message = choice.get("message") or {}
        chunk({"role": "assistant", "content": ""})
        for name in ("reasoning_content", "content", "refusal"):
            if isinstance(message.get(name), str):
                for piece in _pieces(message[name], delta_chars):
                    chunk({name: piece})
        for i, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            pieces = _pieces(str(function.get("arguments", "")), delta_chars) or [""]
            chunk({"tool_calls": [{"index": i, "id": call.get("id"), "type": "function",
                                   "function": {"name": function.get("name"),
                                                "arguments": pieces[0]}}]})
            for piece in pieces[1:]:
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        chunk({}, choice.get("finish_reason") or "stop")
    if include_usage and payload.get("usage") is not None:
        events.append({**base, "choices": [], "usage": payload["usage"]})
    return events


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


Responder = Callable[[ChatRequest], "str | dict[str, Any] | RawBody | RawStream"]


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
    slept before each answer. ``stream_plan`` says how ``stream=True`` calls
    are answered (``plan_stream``); ``abandoned`` counts streams the client
    closed before their end.
    """

    def __init__(self, responder: Responder = echo_responder, *, delay: float = 0.0) -> None:
        self.responder = responder
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self._faults = _Faults()
        self.unusable: str | None = None
        """While set, every call is answered with ``unusable_body(unusable)``."""
        self.stream_plan = StreamPlan()
        self.abandoned = 0
        self._abandoned = threading.Condition()
        self._counter = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        handler = _handler_for(self)
        self._server = _QuietServer(("127.0.0.1", 0), handler)
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

    def plan_stream(self, plan: StreamPlan | None = None) -> None:
        """Answer ``stream=True`` calls by ``plan`` from now on (``None``: well-formed streams)."""
        self.stream_plan = plan or StreamPlan()

    def wait_abandoned(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` streams in all were closed early by the client; whether they were."""
        with self._abandoned:
            return self._abandoned.wait_for(lambda: self.abandoned >= count, timeout)

    def _abandon(self) -> None:
        with self._abandoned:
            self.abandoned += 1
            self._abandoned.notify_all()

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
        if isinstance(answer, RawBody | RawStream):
            return answer.payload if isinstance(answer, RawBody) else answer
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


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a client resets its connection (a test closing a stream early)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


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
            if body.get("stream"):
                _send_stream(self, server, payload, body)
            elif isinstance(payload, RawStream):
                self._error(500, "the responder answered RawStream to a call without stream=True")
            else:
                self._send(200, payload)

    return Handler


def _encoded_events(server: FakeOpenAIServer, payload: Any, body: dict[str, Any]) -> list[str]:
    plan = server.stream_plan
    if isinstance(payload, RawStream):
        events = [e if isinstance(e, str) else json.dumps(e) for e in payload.events]
        done = payload.done
    else:
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [json.dumps(e) for e in stream_events(payload, include_usage=usage,
                                                       delta_chars=plan.delta_chars)]
        done = True
    events += ["[DONE]"] if done else []
    if plan.bad_event_at is not None and plan.bad_event_at < len(events):
        events[plan.bad_event_at] = BAD_EVENT
    return events


def _client_left(connection: socket.socket, timeout: float) -> bool:
    """Whether the client closes its end within ``timeout`` seconds (EOF or reset)."""
    readable, _, _ = select.select([connection], [], [], timeout)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _send_stream(handler: BaseHTTPRequestHandler, server: FakeOpenAIServer, payload: Any,
                 body: dict[str, Any]) -> None:
    """Answer with ``text/event-stream`` in HTTP/1.1 chunks, broken as the plan says."""
    plan = server.stream_plan
    events = _encoded_events(server, payload, body)
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()

    def write(data: bytes) -> None:
        step = plan.write_size or len(data)
        for i in range(0, len(data), step):
            part = data[i:i + step]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.flush()

    try:
        for n, data in enumerate(events):
            if n == plan.drop_after:
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            if n == plan.end_after:
                break
            if n == plan.hold_after and _client_left(handler.connection, plan.hold_timeout):
                server._abandon()
                handler.close_connection = True
                return
            write(f"data: {data}\n\n".encode())
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:  # the client went away mid-stream
        server._abandon()
        handler.close_connection = True
