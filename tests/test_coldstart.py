"""A cold start the store absorbs (issue 10, point 3): many clients against a rate-limited server.

A `FaultProxy` in ``ratelimit`` mode admits a fixed number of requests a
second to SeaweedFS and answers the rest 503 SlowDown with ``Retry-After``.
``POS3_COLDSTART_CLIENTS`` (default 6; the issue's scenario is 16) client
processes, started together, each download a prefix into their own cache.
Every client completes (none gives up), and the time from the start signal to
the last client's end stays within the issue's 1.5x of the ideal (the requests
the server admitted divided by the admitted rate), plus the time the same
clients take with no limit at all (start-up, listing and local work that no
rate limit explains). Measured: 1.05-1.10x the ideal for 6 and 16 clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_many_processes import _fill

from pos3.store import StoreError, Throttled
from pos3.stores.file import FileStore
from pos3.testing.faultproxy import FaultProxy
from pos3.wrappers.backoff import Backoff, BackoffStore
from pos3.wrappers.faults import FaultyStore, fail_first

CLIENTS = int(os.environ.get("POS3_COLDSTART_CLIENTS", "6"))
FILES = 80
RATE = 40.0  # admitted requests per second


def _start(n: int, url: str, caches: Path, env: dict[str, str], go: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        args = [sys.executable, "-m", "pos3.testing.ranks", "download", url]
        args += ["--cache", str(caches / f"cache{i}"), "--go", str(go), "--workers", "16"]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def _ready(procs: list[subprocess.Popen[bytes]], go: Path, deadline: float) -> None:
    """Wait until every client imported pos3 and polls for the start signal (``go``)."""
    while len(list(go.parent.glob(f"{go.name}.*.ready"))) < len(procs):
        assert time.monotonic() < deadline, "the clients did not get ready"
        assert all(p.poll() is None for p in procs), "a client exited before the start signal"
        time.sleep(0.05)


def _run(n: int, url: str, tmp: Path, env: dict[str, str], name: str) -> tuple[float, list[dict[str, Any]]]:
    """Start ``n`` clients, each into its own fresh cache; seconds from the start signal to the last
    client's end, and their reports. A client that gives up fails the test."""
    go = tmp / name
    procs = _start(n, url, tmp / f"{name}-caches", env, go)
    _ready(procs, go, time.monotonic() + 60 + 5 * n)
    began = time.monotonic()
    go.touch()
    reports = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, f"a client gave up: {stderr.decode()[-2000:]}"
        reports.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return time.monotonic() - began, reports


@pytest.mark.reliability(
    "Clients started at once behind a rate limit all complete near its pace (S3)", group="Many processes"
)
def test_cold_start_under_a_rate_limit(s3, bucket, s3_server, tmp_path, reliability) -> None:
    """Every client completes and none gives up while most requests are refused, within 1.5 x the
    ideal time plus what the same clients take with no limit (measured first)."""
    expected = _fill(s3, bucket, "cold/", FILES)
    url = f"s3://{bucket}/cold"
    with FaultProxy(s3_server.endpoint, flavour="s3") as proxy:
        env = {**os.environ, **s3_server.env(), "AWS_ENDPOINT_URL": proxy.endpoint, "POS3_THROTTLE_DEADLINE": "120"}
        unlimited, _ = _run(CLIENTS, url, tmp_path, env, "free")
        rule = proxy.set("ratelimit", per_second=RATE, burst=RATE, retry_after=1)
        before = proxy.requests
        elapsed, reports = _run(CLIENTS, url, tmp_path, env, "limited")
        refused = rule.fired
        admitted = proxy.requests - before - refused
    reliability.runs(1)
    for r in reports:
        assert r["files"] == expected
    assert refused > 0, "the rate limit never bit: the scenario tested nothing"
    ideal = admitted / RATE
    print(
        f"coldstart: {CLIENTS} clients, {admitted} admitted, {refused} refused, {elapsed:.2f}s, "
        f"ideal {ideal:.2f}s, unlimited {unlimited:.2f}s"
    )
    assert elapsed <= 1.5 * ideal + unlimited, f"{elapsed:.1f}s for {admitted} admitted requests ({refused} refused)"


# -- the pieces: policy, wrapper, rate limit ---------------------------------------


def test_backoff_policy_full_jitter_and_retry_after() -> None:
    low, high = Backoff(base=0.25, cap=20.0, rng=lambda: 0.0), Backoff(base=0.25, cap=20.0, rng=lambda: 1.0)
    assert low.delay(5, None) == 0.0  # full jitter: from zero
    assert high.delay(0, None) == pytest.approx(0.25) and high.delay(3, None) == pytest.approx(2.0)
    assert high.delay(30, None) == pytest.approx(20.0)  # capped
    assert low.delay(9, 3.0) == 3.0 and high.delay(0, 3.0) == pytest.approx(6.0)  # never sooner than asked


def test_backoff_store_retries_throttling_only(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    src = tmp_path / "src"
    src.write_bytes(b"x")
    slept: list[float] = []

    def throttled(arg: object) -> Throttled:
        return Throttled(f"slow down: {arg}", retry_after=2.0)

    inner = FaultyStore(FileStore(bucket), put=fail_first(3, throttled), head=fail_first(1))
    store = BackoffStore(inner, Backoff(rng=lambda: 0.0), sleep=slept.append)
    assert store.put("k", src).size == 1
    assert slept == [2.0, 2.0, 2.0]  # Retry-After honoured on each retry
    with pytest.raises(StoreError, match="injected"):  # anything else is not retried here
        store.head("k")
    deadline = BackoffStore(FaultyStore(FileStore(bucket), put=fail_first(9, throttled)), Backoff(deadline=5.0))
    deadline._sleep = lambda s: None
    with pytest.raises(Throttled):  # gives up only once the deadline would pass
        deadline.put("k", src)


def test_ratelimit_admits_its_rate(s3_server) -> None:
    """The proxy's token bucket: a burst is admitted at once, the rest refused with Retry-After."""
    import urllib.error
    import urllib.request

    with FaultProxy(s3_server.endpoint, flavour="s3") as proxy:
        rule = proxy.set("ratelimit", per_second=0.001, burst=3, retry_after=7)
        codes, after = [], None
        for _ in range(5):
            try:
                with urllib.request.urlopen(proxy.endpoint + "/") as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
                after = exc.headers.get("Retry-After")
    assert codes[3:] == [503, 503] and 503 not in codes[:3] and rule.fired == 2 and after == "7"
