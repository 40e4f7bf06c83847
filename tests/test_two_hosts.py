"""Two guard processes that share nothing but PostgreSQL and the S3 server.

Separate working directories, each with its own local blob cache: one promotes new
weights, the other follows and answers with them (fetching each blob from the store once),
and both verify the ledger and its blobs. A follower whose
store is broken keeps serving what it has, and the error names the blob and the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import s3_server
from net_fault import FaultyRelay
from two_host_worker import BlobClient

import guardrails as gr
from guardrails.blobs import S3BlobStore

WORKER = Path(__file__).resolve().parent / "two_host_worker.py"

CONFIG = """
[canaries]
files = ["cases.jsonl"]

[ledger]
path = "{dsn}"
schema = "{schema}"
poll_interval = 0.2

[blobs]
url = "{url}"
endpoint = "{endpoint}"
cache_dir = "blob-cache"
"""

CASES = ('{"id": "a", "input": "a", "expect": {"regex": ":a$"}}\n'
         '{"id": "s", "input": "s", "expect": {"regex": "^weights-"}, "tags": ["safety"]}\n')


def _host(root: Path, name: str, **values: str) -> Path:
    home = root / name
    home.mkdir()
    (home / "guardrails.toml").write_text(CONFIG.format(**values))
    (home / "cases.jsonl").write_text(CASES)
    return home


def _start(home: Path, role: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), role], cwd=home, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **s3_server.CREDENTIALS})


def _read(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise AssertionError(f"the worker exited: {process.stderr.read() if process.stderr else ''}")
    return dict(json.loads(line))


@pytest.fixture
def hosts(tmp_path: Path, postgres_dsn: str, pg_schema: str, s3_endpoint: str, s3_url: str
          ) -> tuple[Path, Path]:
    values = {"dsn": postgres_dsn, "schema": pg_schema, "url": s3_url, "endpoint": s3_endpoint}
    return _host(tmp_path, "host-a", **values), _host(tmp_path, "host-b", **values)


@pytest.mark.slow
def test_a_follower_on_another_host_answers_with_promoted_weights(hosts: tuple[Path, Path]
                                                                  ) -> None:
    """Host A promotes weights v2; host B, sharing only the servers, follows and answers with v2."""
    leader = _start(hosts[0], "leader")
    follower = None
    try:
        first = _read(leader)
        assert first["answer"] == "weights-v1:x"
        follower = _start(hosts[1], "follower")
        assert _read(follower) == {**first, "event": "serving"}
        assert leader.stdin is not None
        leader.stdin.write("go\n")
        leader.stdin.flush()
        promoted = _read(leader)
        assert promoted["accepted"] and promoted["verified"]
        followed = _read(follower)
        assert followed == {"event": "followed", "version": promoted["version"],
                            "answer": "weights-v2:x", "verified": True,
                            "fetched": 2, "cached": 2}  # v1 and v2, each fetched once
        assert not any(home.joinpath(".guardrails").exists() for home in hosts)
    finally:
        for process in (leader, follower):
            if process is not None:
                process.kill()
                process.wait(10)


def _guard(home: Path) -> gr.Guard:
    return gr.Guard.from_config(home / "guardrails.toml")


def test_a_follower_keeps_serving_when_its_store_fails(hosts: tuple[Path, Path],
                                                      s3_endpoint: str) -> None:
    """The store down, then returning altered weights, during a follow: the follower keeps
    serving v1 and the error names the blob and the store; once the blob is good it follows."""
    relay = FaultyRelay(int(s3_endpoint.rsplit(":", 1)[1]))
    config_b = hosts[1] / "guardrails.toml"
    config_b.write_text(config_b.read_text().replace(s3_endpoint, f"http://127.0.0.1:{relay.port}"))
    try:
        guard_a, guard_b = _guard(hosts[0]), _guard(hosts[1])
        store_a, store_b = guard_a.blob_store, guard_b.blob_store
        assert isinstance(store_a, gr.CachedBlobStore) and store_b is not None
        s3_a = store_a.store
        assert isinstance(s3_a, S3BlobStore)
        v1 = store_a.put(b"weights-v1")
        leader = guard_a.wrap(BlobClient({"prompt": "p", "weights": gr.blob_ref(v1)}, store_a))
        follower = guard_b.wrap(BlobClient(leader.state(), store_b))
        relay.drop()
        v2 = store_a.put(b"weights-v2")
        leader.client.queued.append([{"op": "replace", "path": "/weights",
                                      "value": gr.blob_ref(v2)}])
        assert leader.self_improve().accepted  # type: ignore[union-attr]
        with pytest.raises(gr.BlobStoreUnavailable) as down:
            follower.sync()
        assert v2 in str(down.value) and "S3 blob store" in str(down.value)
        assert follower.invoke("x").output == "weights-v1:x"

        key = s3_a.prefix + v2.split(":")[1]
        s3_server.client(s3_endpoint).put_object(Bucket=s3_a.bucket, Key=key, Body=b"rotten")
        relay.heal()
        with pytest.raises(gr.BlobIntegrityError) as altered:
            follower.sync()
        assert v2 in str(altered.value) and "S3 blob store" in str(altered.value)
        assert follower.invoke("x").output == "weights-v1:x"
        assert not guard_b.ledger.verify(store_b).ok

        s3_server.client(s3_endpoint).put_object(Bucket=s3_a.bucket, Key=key,
                                                 Body=b"weights-v2")
        follower.sync()
        assert follower.invoke("x").output == "weights-v2:x"
    finally:
        relay.close()


def test_a_review_is_not_accepted_when_the_store_is_down(hosts: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """With its blob store unreachable, a review that needs a new blob is not accepted, and the
    finding names the store."""
    server = s3_server.S3Server.start_new()
    try:
        bucket = s3_server.ensure_bucket(server.endpoint)
        home = _host(tmp_path, "host-c", dsn="", schema="", url="", endpoint="")
        (home / "guardrails.toml").write_text(
            f'[canaries]\nfiles = ["cases.jsonl"]\n[blobs]\nurl = "s3://{bucket}/w/"\n'
            f'endpoint = "{server.endpoint}"\n')
        guard = _guard(home)
        store = guard.blob_store
        assert store is not None
        v1, v2 = store.put(b"weights-v1"), store.put(b"weights-v2")
        guarded = guard.wrap(BlobClient({"prompt": "p", "weights": gr.blob_ref(v1)}, store))
        server.stop("immediate")
        guarded.client.queued.append([{"op": "replace", "path": "/weights",
                                       "value": gr.blob_ref(v2)}])
        decision = guarded.self_improve()
        assert decision is not None and not decision.accepted
        assert "S3 blob store" in " ".join(f.message for f in decision.findings)
        assert guarded.invoke("x").output == "weights-v1:x"
    finally:
        server.cleanup()
