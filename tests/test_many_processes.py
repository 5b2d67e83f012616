"""N processes, one cache, one transfer (issue 10, point 1): real processes against SeaweedFS.

Every request reaches the server through a transparent `FaultProxy`, whose
counter is the number of HTTP requests of all processes together. The
target: N ranks cost at most 1.1 x one rank's requests plus N, and each rank
sees the complete mirror when its call returns. ``POS3_RANKS`` sets N (4).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pos3.handoff import Turns
from pos3.testing.faultproxy import FaultProxy

RANKS = int(os.environ.get("POS3_RANKS", "4"))
FILES = 300


def _fill(s3: Any, bucket: str, prefix: str, n: int) -> dict[str, str]:
    """``n`` small objects under ``prefix``; their MD5s by relative path."""
    bodies = {f"d{i % 7}/f{i:04d}.txt": f"object {i} ".encode() * (1 + i % 5) for i in range(n)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=prefix + kv[0], Body=kv[1]), bodies.items()))
    return {rel: hashlib.md5(body).hexdigest() for rel, body in bodies.items()}


def _ranks(n: int, verb: str, url: str, cache: Path, env: dict[str, str], tmp: Path) -> list[dict[str, Any]]:
    """Run ``n`` ranks (`pos3.testing.ranks`) started together; their JSON reports."""
    go = tmp / f"go-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "pos3.testing.ranks", verb, url, "--cache", str(cache), "--go", str(go)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr.decode()
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


@pytest.fixture
def proxy(s3_server: Any) -> Any:
    with FaultProxy(s3_server.endpoint, flavour="s3") as p:
        yield p


@pytest.fixture
def env(s3_server: Any, proxy: FaultProxy) -> dict[str, str]:
    return {**os.environ, **s3_server.env(), "AWS_ENDPOINT_URL": proxy.endpoint}


@pytest.mark.reliability(
    "N processes downloading one prefix into one cache fetch each object once (S3)", group="Many processes"
)
def test_n_downloads_one_transfer(s3, bucket, proxy, env, tmp_path, reliability) -> None:
    expected = _fill(s3, bucket, "data/", FILES)
    url = f"s3://{bucket}/data"
    (single,) = _ranks(1, "download", url, tmp_path / "one", env, tmp_path)
    one = proxy.requests
    assert single["files"] == expected
    assert single["counts"]["get"] == FILES

    before = proxy.requests
    reports = _ranks(RANKS, "download", url, tmp_path / "shared", env, tmp_path)
    many = proxy.requests - before
    reliability.runs(1)

    for r in reports:
        assert r["files"] == expected, f"rank {r['pid']} returned before its mirror was complete"
    assert sum(r["counts"].get("get", 0) for r in reports) == FILES  # each object fetched once
    assert many <= 1.1 * one + RANKS, f"{RANKS} ranks made {many} requests; one rank made {one}"
    # The ranks that waited reused the holder's result: no listing of their own.
    assert sum(r["counts"].get("list", 0) for r in reports) < RANKS


@pytest.mark.reliability("N processes syncing one prefix into one cache transfer it once (S3)", group="Many processes")
def test_n_syncs_one_transfer(s3, bucket, proxy, env, tmp_path, reliability) -> None:
    expected = _fill(s3, bucket, "ckpt/", FILES)
    url = f"s3://{bucket}/ckpt"
    (single,) = _ranks(1, "sync", url, tmp_path / "one", env, tmp_path)
    one = proxy.requests
    assert single["files"] == expected

    before = proxy.requests
    reports = _ranks(RANKS, "sync", url, tmp_path / "shared", env, tmp_path)
    many = proxy.requests - before
    reliability.runs(1)

    for r in reports:
        assert r["files"] == expected
    # Each object fetched once (twice would be 2 x FILES); beside them, lease objects are read: the
    # whole-bucket lease key while taking the lease, and the lease a rank joins (at most 2 per rank).
    assert FILES <= sum(r["counts"].get("get", 0) for r in reports) <= FILES + 2 * RANKS
    # Nobody re-uploads what was downloaded; the one lease taken is the only conditional put.
    assert sum(r["counts"].get("put", 0) for r in reports) == 0
    assert many <= 1.1 * one + RANKS, f"{RANKS} ranks made {many} requests; one rank made {one}"


def test_turns_reuse_only_a_later_matching_completion(tmp_path: Path) -> None:
    """A completion stands in only if it started after the waiter asked, matches its identity,
    and no other sync of the root started since."""
    turns = Turns(tmp_path / "root.lock")
    asked = turns.ask()
    assert asked == 0 and turns.reusable("a", asked) is None
    gen = turns.start()
    turns.complete("a", gen)
    done = turns.reusable("a", asked)
    assert done is not None and done.pid == os.getpid() and done.generation == gen
    assert turns.reusable("b", asked) is None  # other identity (e.g. other delete/exclude options)
    assert turns.reusable("a", turns.ask()) is None  # completed before this request was made
    failed = turns.start()  # a later sync that never completes
    assert failed == gen + 1 and turns.reusable("a", asked) is None
