"""The report and the review page in a real browser (Debian's Chromium, driven by Playwright).

Set GUARDRAILS_DOC_SCREENSHOTS=1 to write the screenshots docs/report.md shows
into docs/img/ (they are checked in); otherwise they go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import guardrails as gr

from .conftest import GUARDRAILS, ROOT, run_cli
from .ledgers import HIDDEN_MARKER, build_ledger

pytest.importorskip("playwright")


def _shots(tmp_path: Path) -> Path:
    if os.environ.get("GUARDRAILS_DOC_SCREENSHOTS"):
        return ROOT / "docs" / "img"
    return tmp_path


def test_the_report_renders_with_every_network_request_aborted(
        browser: Any, ledger_paths: tuple[Path, Path], tmp_path: Path) -> None:
    """From disk, offline: no request leaves the file, the plots are there, a screenshot is taken."""
    ledger, blobs = ledger_paths
    out = tmp_path / "report.html"
    assert run_cli("report", "--ledger", str(ledger), "--blobs", str(blobs),
                   "-o", str(out)).returncode == 0
    attempted: list[str] = []

    def only_the_file(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    page = browser.new_page()
    page.route("**/*", only_the_file)
    page.goto(out.as_uri())
    assert attempted == []
    assert page.title().startswith("guardrails report")  # the hostile rationale did not run
    assert page.locator("svg").count() >= 3  # timeline, drift, a sequential path
    assert page.locator("#verification.good").is_visible()
    assert HIDDEN_MARKER not in page.content()
    shot = _shots(tmp_path) / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    assert 20_000 < shot.stat().st_size < 2_000_000
    page.locator("#entry-1").screenshot(path=str(_shots(tmp_path) / "report-decision.png"))
    page.close()


def test_an_unverified_ledger_is_red_at_the_top_of_the_page(browser: Any, tmp_path: Path) -> None:
    """The banner of a tampered ledger is the first thing a reader sees, in red."""
    import sqlite3

    ledger, _ = build_ledger(tmp_path, pending=False)
    with sqlite3.connect(ledger) as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, 'shorter', 'longer') "
                     "WHERE idx = 2")
    out = tmp_path / "report.html"
    assert run_cli("report", "--ledger", str(ledger), "-o", str(out)).returncode == 1
    page = browser.new_page()
    page.goto(out.as_uri())
    banner = page.locator("#verification")
    assert "DOES NOT VERIFY" in banner.inner_text()
    assert banner.evaluate("e => getComputedStyle(e).color") == "rgb(164, 14, 38)"
    page.screenshot(path=str(_shots(tmp_path) / "report-unverified.png"))
    page.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`guardrails serve` on a ledger with a pending proposal; yields (URL with token, ledger)."""
    ledger, blobs = build_ledger(tmp_path)
    process = subprocess.Popen(
        [str(GUARDRAILS), "serve", "--ledger", str(ledger), "--blobs", str(blobs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        assert match, f"no address printed: {line!r} {process.stderr.read() if process.stderr else ''}"
        yield match.group(1), ledger
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_pending_proposal_is_approved_through_the_page(
        browser: Any, served: tuple[str, Path], tmp_path: Path) -> None:
    """Approve on the page: the ledger records it accepted, approved by the named reviewer."""
    url, ledger_path = served
    page = browser.new_page()
    page.goto(url)
    assert "token=" not in page.url  # moved into a cookie
    section = page.locator("section.pending")
    assert section.count() == 1
    page.screenshot(path=str(_shots(tmp_path) / "review.png"))
    approve = section.locator("form[action='/approve']")
    approve.locator("input[name=approver]").fill("alice")
    approve.locator("button").click()
    page.wait_for_selector("#result")
    assert "accepted by alice" in page.locator("#result").inner_text()
    page.close()
    ledger = gr.SQLiteLedger(ledger_path)
    try:
        last = list(ledger.entries())[-1].decision
        assert ledger.pending() == []
        assert last is not None and last.accepted and last.kind == "prompt"
        assert any(f.evidence.get("approver") == "alice" for f in last.findings)
        assert ledger.verify().ok
    finally:
        ledger.close()


def test_a_rejection_needs_a_reason(browser: Any, served: tuple[str, Path]) -> None:
    """The reject form cannot be sent without a reason; with one, the ledger records it."""
    url, ledger_path = served
    page = browser.new_page()
    page.goto(url)
    reject = page.locator("section.pending form[action='/reject']")
    reject.locator("button").click()  # the browser refuses: the reason is required
    assert page.locator("#result").count() == 0
    reject.locator("input[name=reason]").fill("too terse for our users")
    reject.locator("button").click()
    page.wait_for_selector("#result")
    page.close()
    ledger = gr.SQLiteLedger(ledger_path)
    try:
        last = list(ledger.entries())[-1].decision
        assert last is not None and last.verdict.value == "rejected"
        assert "too terse for our users" in last.findings[0].message
    finally:
        ledger.close()


def _request(url: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> int:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_requests_without_the_token_or_the_csrf_field_are_refused(
        served: tuple[str, Path]) -> None:
    """No token: 403 on every route. Token but no CSRF field: 403, and nothing is written."""
    url, ledger_path = served
    base, token = url.split("/?token=")
    assert _request(base + "/") == 403
    assert _request(base + "/transparency.json") == 403
    pending = gr.SQLiteLedger(ledger_path).pending()[0].id
    cookie = {"Cookie": f"guardrails_token_{base.rsplit(':', 1)[1]}={token}"}
    assert _request(base + "/approve", {"id": pending, "approver": "mallory"}, cookie) == 403
    assert _request(base + "/approve", {"id": pending, "approver": "mallory", "csrf": "guess"},
                    cookie) == 403
    assert _request(base + "/", headers={**cookie, "Host": "evil.example:80"}) == 403
    ledger = gr.SQLiteLedger(ledger_path)
    try:
        assert [p.id for p in ledger.pending()] == [pending]
    finally:
        ledger.close()
    assert _request(base + "/transparency.json", headers=cookie) == 200
