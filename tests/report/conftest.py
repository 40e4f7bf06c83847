"""Fixtures of the report tests: real ledgers, the CLI, Debian's Chromium driven by Playwright.

The browser comes from the machine's Debian package (``.ci/chromium.sh``
installs it when missing and we are root); Playwright only drives it through
``executable_path`` and never downloads a browser. Without a browser the
browser tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .ledgers import build_ledger

ROOT = Path(__file__).resolve().parents[2]
GUARDRAILS = Path(sys.executable).parent / "guardrails"
"""The console script installed beside this interpreter."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real ``guardrails`` command in a subprocess."""
    return subprocess.run([str(GUARDRAILS), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ledger_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ledger with accepted, rejected (capability, hidden safety case) and pending decisions."""
    return build_ledger(tmp_path_factory.mktemp("ledger"))


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium, installed by the project's script when missing.

    ``.ci/run`` installs it once and exports GUARDRAILS_TEST_CHROMIUM; without it the
    fixture runs the same script.
    """
    given = os.environ.get("GUARDRAILS_TEST_CHROMIUM")
    if given and Path(given).is_file():
        return given
    done = subprocess.run(["bash", str(ROOT / ".ci" / "chromium.sh")], capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode != 0:
        message = f"no Chromium for the browser tests: {done.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Playwright browser context on Debian's Chromium with a fresh user-data-dir."""
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()
