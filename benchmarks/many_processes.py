"""The multi-process row: N processes downloading one prefix into one cache, against one process.

    python -m benchmarks.many_processes [--ranks 8] [--files 5000] [--size 1024]

Starts SeaweedFS (as the tests do) behind a transparent `FaultProxy`, whose
counter gives the HTTP requests of all processes together; writes ``--files``
objects; then times one rank (`pos3.testing.ranks`) downloading them into a
fresh cache, and ``--ranks`` ranks started together (after they imported
pos3) downloading them into one other fresh cache. Each rank's tree is
checked against the objects' MD5s. Prints one Markdown row: requests per
object and wall time, N ranks against one, and the issue's targets
(requests <= 1.1 x one + N, wall time <= 1.2 x one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

from pos3.testing.faultproxy import FaultProxy
from pos3.testing.servers import seaweedfs


def _ranks(n: int, url: str, cache: Path, env: dict[str, str], tmp: Path) -> tuple[float, list[dict[str, Any]]]:
    """Wall seconds from the start signal until the last rank's ``download`` returned, and the reports."""
    go = tmp / f"go-{n}-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "pos3.testing.ranks", "download", url, "--cache", str(cache), "--go", str(go)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    deadline = time.monotonic() + 120
    while len(list(tmp.glob(f"{go.name}.*.ready"))) < n:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the ranks did not get ready")
        time.sleep(0.05)
    go.touch()
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return max(r["seconds_call"] for r in reports), reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pos3-bench-ranks-") as d, seaweedfs(Path(d) / "weed") as server:
        tmp = Path(d)
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="ranks")
        bodies = {f"d{i % 50:02d}/f{i:05d}": os.urandom(args.size) for i in range(args.files)}
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda kv: s3.put_object(Bucket="ranks", Key="data/" + kv[0], Body=kv[1]), bodies.items()))
        expected = {rel: hashlib.md5(b).hexdigest() for rel, b in bodies.items()}
        with FaultProxy(server.endpoint, flavour="s3") as proxy:
            env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL": proxy.endpoint}
            t1, (one,) = _ranks(1, "s3://ranks/data", tmp / "one", env, tmp)
            r1 = proxy.requests
            tn, many = _ranks(args.ranks, "s3://ranks/data", tmp / "shared", env, tmp)
            rn = proxy.requests - r1
        for r in [one, *many]:
            if r["files"] != expected:
                raise RuntimeError(f"rank {r['pid']} returned an incomplete or wrong mirror")
        gets = sum(r["counts"].get("get", 0) for r in many)
        print(
            "| ranks | files | requests, 1 rank | requests, N ranks | per object, N ranks | bound 1.1x+N "
            "| wall 1 rank | wall N ranks | ratio | gets, N ranks |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {args.ranks} | {args.files} | {r1} | {rn} | {rn / args.files:.3f} | {1.1 * r1 + args.ranks:.0f} "
            f"| {t1:.2f} s | {tn:.2f} s | {tn / t1:.2f} | {gets} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
