"""Each adapter example runs offline, in well under a minute, and shows an accepted and a
rejected change."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "adapters"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_there_is_one_example_per_adapter() -> None:
    assert SCRIPTS == ["dspy_compile.py", "langchain_agent.py", "openai_prompt_optimiser.py",
                       "river_online.py", "sklearn_online.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_example_accepts_one_change_and_rejects_another(script: str) -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - started < 60
    assert "accepted" in done.stdout and "rejected" in done.stdout, done.stdout
