"""Checks shared by the process-death and concurrency tests: what a mirror must never hold.

Objects are read from listings: on the test server (SeaweedFS) every object
these tests write is single-part, so its ETag is the MD5 of its content.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def poll(condition, timeout: float = 30.0, every: float = 0.01):
    """Wait until ``condition()`` is truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(every)
    return result


def remote_listing(s3, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """{rel: (size, ETag)} of every object under ``prefix`` (lease objects aside: a killed
    writer with deletes leaves its lease until it expires)."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].rsplit("/", 1)[-1] == ".pos3-lease":
                continue
            out[obj["Key"][len(prefix) :]] = (obj["Size"], obj["ETag"].strip('"'))
    return out


def state_records(cache: Path) -> list[tuple[str, int, int, int, str]]:
    """Every record of every root under ``cache``, after SQLite's own integrity check passed."""
    rows = []
    for db in sorted((cache / ".pos3-state").glob("*.sqlite")):
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), db
            rows += conn.execute("SELECT * FROM records").fetchall()
        finally:
            conn.close()
    return rows


def assert_records_honest(cache: Path, local: Path, listing: dict[str, tuple[int, str]]) -> int:
    """A record that both sides still match claims the two are equal: check that they are.
    Returns how many records were checked that way."""
    checked = 0
    for rel, lsize, lmtime, rsize, version in state_records(cache):
        path = local / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if (st.st_size, st.st_mtime_ns) != (lsize, lmtime) or listing.get(rel) != (rsize, version):
            continue  # the next run sees a difference and transfers
        assert md5(path.read_bytes()) == version, f"the record of {rel} claims equal files that differ"
        checked += 1
    return checked
