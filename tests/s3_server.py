"""A throwaway S3-compatible server (SeaweedFS) for the tests: started and stopped by ``.ci/seaweedfs.sh``.

``.ci/run`` starts one with the same script and exports its endpoint as
``GUARDRAILS_TEST_S3_ENDPOINT``; without that variable the session fixture in
conftest.py starts its own. Tests that stop or kill a server start their own
with ``S3Server.start_new()``. The tests share one bucket (each bucket costs the server
volumes of its own), each test under a prefix of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "seaweedfs.sh"
ENV_ENDPOINT = "GUARDRAILS_TEST_S3_ENDPOINT"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "guardrails-test", "AWS_SECRET_ACCESS_KEY": "guardrails-test",
               "AWS_REGION": "us-east-1"}
"""The gateway has no identities configured and accepts any; boto3 still wants some."""


class ServerUnavailable(RuntimeError):
    """The script could not start a server (no ``weed`` binary, say)."""


class S3Server:
    """One SeaweedFS server in its own directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.endpoint = ""

    @classmethod
    def start_new(cls) -> S3Server:
        server = cls(Path(tempfile.mkdtemp(prefix="guardrails-s3-")))
        try:
            server.start()
        except BaseException:
            shutil.rmtree(server.directory, ignore_errors=True)
            raise
        return server

    def start(self) -> str:
        result = subprocess.run(["bash", str(SCRIPT), "start", str(self.directory)],
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServerUnavailable(f"{SCRIPT.name} start failed ({result.returncode}): "
                                    f"{result.stderr.strip()[-2000:]}")
        self.endpoint = result.stdout.strip().splitlines()[-1]
        return self.endpoint

    @property
    def pid(self) -> int:
        return int((self.directory / "pid").read_text())

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory), mode],
                       capture_output=True, text=True, timeout=60, check=True)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")  # its data is thrown away next
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def server_endpoint() -> str | None:
    return os.environ.get(ENV_ENDPOINT) or None


def set_credentials() -> None:
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)


def client(endpoint: str) -> Any:
    import boto3

    set_credentials()
    return boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_REGION"])


BUCKET = "guardrails-test"


def new_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}/"


def ensure_bucket(endpoint: str, name: str = BUCKET) -> str:
    """The shared test bucket, created if missing; retried while a just-started gateway finds
    its filer."""
    s3 = client(endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.head_bucket(Bucket=name)
            return name
        except Exception:
            pass
        try:
            s3.create_bucket(Bucket=name)
            return name
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
