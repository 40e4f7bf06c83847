"""``guardrails serve``: the report, live, on 127.0.0.1, with approve and reject for pending proposals.

Access needs the random token printed at start (``/?token=...``; the page
then keeps it in an HttpOnly, SameSite=Strict cookie). Every form carries a
CSRF token that a POST must return, and a POST whose ``Origin`` is not this
server is refused; so is any request whose ``Host`` is not 127.0.0.1 at this
port (a DNS-rebinding page cannot reach it). Approve and reject call
``gate.approve_pending``/``gate.reject_pending`` with the reviewer's name, so
the ledger records them exactly as ``guardrails approve``/``reject`` do.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import click
import structlog

from ._commands import (
    EXIT_CONFIG,
    EXIT_NOT_VERIFIED,
    Source,
    UnreadableLedger,
    case_texts,
    fail,
    open_source,
    read,
)

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
COOKIE = "guardrails_token"
# same-origin, not no-referrer: with no-referrer a browser posts forms with "Origin: null".
_HEADERS = {"X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass
class ReviewState:
    """The server's secrets and the outcome of the last action (shown once on the page)."""

    source: Source
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    reviewer: str = field(default_factory=lambda: _user())
    hidden: list[str] = field(default_factory=list)
    """Hidden cases' inputs, withheld wherever they would appear."""
    message: str = ""
    ok: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def _cookie(state: ReviewState) -> str:
    # Cookies are shared by every port of a host: one name per server, so an old page's
    # cookie never stands for this one's.
    return f"{COOKIE}_{state.port}"


def _same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def _refusal(state: ReviewState, request: Any) -> str | None:
    """Why ``request`` is refused, or ``None``: wrong host, no token, foreign origin."""
    if request.headers.get("host") != f"{HOST}:{state.port}":
        return f"this page answers only at its own address, http://{HOST}:{state.port}/"
    token = request.query_params.get("token") or request.cookies.get(_cookie(state))
    if not _same(token, state.token):
        return ("the access token is missing or wrong: open the URL that 'guardrails serve' "
                "printed when it started")
    origin = request.headers.get("origin")
    if request.method == "POST" and origin not in (None, f"http://{HOST}:{state.port}"):
        return "a form posted from another site is refused"
    return None


def _page(state: ReviewState) -> str:
    from ._render import render_report

    data, statement = read(state.source, hidden=state.hidden)
    review = {"csrf": state.csrf, "reviewer": state.reviewer, "message": state.message,
              "ok": state.ok, "hidden": frozenset(state.hidden)}
    state.message = ""
    return render_report(data, statement, review=review)


async def _decide(state: ReviewState, request: Any) -> tuple[bool, str]:
    """Approve or reject from a posted form; returns (ok, message for the page)."""
    from starlette.concurrency import run_in_threadpool

    from ..gate import approve_pending, reject_pending

    form = await request.form()
    if not _same(str(form.get("csrf", "")) or None, state.csrf):
        raise PermissionError("the form's CSRF field is missing or wrong: reload the page")
    id_, approver = str(form.get("id", "")).strip(), str(form.get("approver", "")).strip()
    reason = str(form.get("reason", "")).strip()
    if not id_ or not approver:
        return False, "a proposal id and the reviewer's name are required"
    approve = request.url.path == "/approve"
    if not approve and not reason:
        return False, "a rejection needs a reason (it is recorded in the ledger)"
    ledger = state.source.ledger

    def act() -> Any:
        with state.lock:
            if approve:
                return approve_pending(ledger, id_, approver=approver)
            return reject_pending(ledger, id_, reason=reason, approver=approver)

    try:
        decision = await run_in_threadpool(act)
    except (KeyError, ValueError) as exc:
        return False, str(exc).strip('"')
    log.info("review_page_decision", proposal=id_, approver=approver,
             verdict=decision.verdict.value, entry=decision.entry_index)
    return decision.accepted or not approve, (
        f"{id_}: {decision.verdict.value} by {approver} (ledger entry {decision.entry_index})")


def build_app(state: ReviewState) -> Any:
    """The Starlette application of the review page."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
    from starlette.routing import Route

    def refused(why: str) -> Any:
        return PlainTextResponse(f"forbidden: {why}\n", status_code=403, headers=_HEADERS)

    async def index(request: Any) -> Any:
        why = _refusal(state, request)
        if why:
            return refused(why)
        if "token" in request.query_params:  # keep the token out of the address bar
            response = RedirectResponse("/", status_code=303, headers=_HEADERS)
            response.set_cookie(_cookie(state), state.token, httponly=True, samesite="strict")
            return response
        return HTMLResponse(await run_in_threadpool(_page, state), headers=_HEADERS)

    async def transparency_json(request: Any) -> Any:
        why = _refusal(state, request)
        if why:
            return refused(why)
        _, statement = await run_in_threadpool(read, state.source)
        return JSONResponse(statement.model_dump(mode="json"), headers=_HEADERS)

    async def decide(request: Any) -> Any:
        why = _refusal(state, request)
        if why:
            return refused(why)
        try:
            state.ok, state.message = await _decide(state, request)
        except PermissionError as exc:
            return refused(str(exc))
        return RedirectResponse("/#pending", status_code=303, headers=_HEADERS)

    return Starlette(routes=[
        Route("/", index, methods=["GET"]),
        Route("/transparency.json", transparency_json, methods=["GET"]),
        Route("/approve", decide, methods=["POST"]),
        Route("/reject", decide, methods=["POST"]),
    ])


def run_serve(source: Source, port: int) -> None:
    """Serve until interrupted; prints the address with the token on stdout first."""
    try:
        import uvicorn
    except ImportError as exc:
        fail(f"the review page needs Starlette and uvicorn ({exc}); install them with: "
             "pip install 'guardrails-middleware[report]'", EXIT_CONFIG)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        fail(f"cannot listen on {HOST}:{port} ({exc.strerror}); pick another --port", EXIT_CONFIG)
    # Listening before the address is printed: a browser opened on it at once is queued, not refused.
    sock.listen(128)
    state = ReviewState(source=source, port=sock.getsockname()[1],
                        hidden=case_texts(source, False)[1])
    click.echo(f"review page for {source.name}: http://{HOST}:{state.port}/?token={state.token}",
               nl=True)
    click.echo("(only this machine can reach it; the token is the key: keep it private; "
               "Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    config = uvicorn.Config(build_app(state), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])



def serve_command(config_path: Any, ledger_path: Any, blobs_path: Any, port: int) -> None:
    """The body of ``guardrails serve``: refuses a ledger that will not open (exit 1)."""
    try:
        source = open_source(config_path, ledger_path, blobs_path, read_only=False)
    except UnreadableLedger as exc:
        fail(f"{exc.problem}; the review page shows only a ledger that opens", EXIT_NOT_VERIFIED)
    run_serve(source, port)
