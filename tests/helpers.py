"""Small helpers for arranging and reading test data through plain boto3."""

from __future__ import annotations

from pathlib import Path


def put(s3, bucket: str, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def remote_tree(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` as {key relative to prefix: content}, except the lease
    objects that a writer with deletes holds while it runs (pos3.lease)."""
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].rsplit("/", 1)[-1] == ".pos3-lease":
                continue
            out[obj["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def local_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` as {relative posix path: content}."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
