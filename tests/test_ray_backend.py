"""The Ray backend's cases (tests/ray_backend_cases.py), run in a private network namespace.

Ray 2.60 binds its servers to every interface even when told the node is 127.0.0.1, and the
tests must listen on loopback only. In a new network namespace the only interface is a
loopback of its own, so nothing outside this machine (nor outside the namespace) can reach
the cluster. The cases start their own S3-compatible server there: the outer one on the
host's loopback is out of reach. Slow; never skipped where Ray is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CASES = HERE / "ray_backend_cases.py"


def _in_private_network(argv: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("util-linux `unshare` is needed to run the Ray cases in their own network")
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, "--net", *user, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            *argv]


def test_the_ray_backend_cases_pass_in_a_network_of_their_own(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GUARDRAILS_TEST_S3_ENDPOINT", "GUARDRAILS_TEST_POSTGRES_DSN")}
    argv = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider",
            "-o", f"cache_dir={tmp_path}", "--rootdir", str(HERE.parent)]
    done = subprocess.run(_in_private_network(argv), cwd=HERE.parent, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "skipped" not in done.stdout, report
