"""Issue 8, point 3: concurrent jobs.

Processes that share a cache root (same remote into the same local root, and
different roots sharing the state directory) never corrupt a file or each
other's records; background uploads racing a file that is still being
written never leave a torn object as the final remote state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import threading
from collections import defaultdict
from concurrent.futures import Future
from pathlib import Path

import pytest
from child_jobs import forked, open_records, rank, wave
from mirror_checks import assert_records_honest, md5, poll, remote_listing

import pos3
from helpers import local_tree, remote_tree
from pos3.executor import SyncError
from pos3.local import TMP_PREFIX
from pos3.patterns import Excluder
from pos3.planner import Direction
from pos3.state import StateDB
from pos3.store import ObjectMeta, ObjectStore, StoreError
from pos3.sync import Root
from pos3.urls import parse
from pos3.wrappers import WrappedStore

MiB = 1024 * 1024
SOAK = int(os.environ.get("POS3_SOAK", "1"))
WAVES = 2 * SOAK
RANK_RUNS = 1 * SOAK


def dataset(rng: random.Random, name: str, n: int) -> dict[str, bytes]:
    files = {f"{name}-{i:03d}.bin": rng.randbytes(rng.choice([0, 100, 5000, 30_000])) for i in range(n)}
    files[f"{name}-big.bin"] = rng.randbytes(2 * MiB)
    return files


def put_all(s3, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)


def no_temporary_files(root: Path) -> bool:
    return not any(p.name.startswith(TMP_PREFIX) for p in root.rglob("*"))


def join_all(procs, timeout: float = 120) -> list[int | None]:
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


@pytest.mark.reliability(
    "Processes sharing a cache root: downloads and a sync of one remote, a changing remote", group="Concurrency"
)
def test_processes_sharing_a_cache_root(s3, s3_server, bucket, cache, reliability):
    """Each wave starts three processes at once in one cache root. ``a/`` is mirrored by two downloads
    and a sync (background uploads every 0.05 s) and changes between waves; ``b/``, a second root
    sharing the state directory, is downloaded by all three while it changes under them."""
    rng = random.Random(f"share-{os.getpid()}")
    env, ctx = s3_server.env(), forked()
    a, b = f"s3://{bucket}/a", f"s3://{bucket}/b"
    files_a, files_b = dataset(rng, "a", 40), dataset(rng, "b", 40)
    put_all(s3, bucket, "a/", files_a)
    put_all(s3, bucket, "b/", files_b)
    seen_b = defaultdict(set, {rel: {md5(body)} for rel, body in files_b.items()})  # every version b/ ever had
    plans = [[("sync", a), ("download", b)], [("download", a), ("download", b)], [("download", b), ("download", a)]]
    local_a, local_b = cache / "_" / bucket / "a", cache / "_" / bucket / "b"
    changes = 0
    for step in range(WAVES):
        for rel in rng.sample(sorted(files_a), 10):
            files_a[rel] = rng.randbytes(rng.choice([len(files_a[rel]), 7, 12_000]))
        files_a[f"a-new-{step}.bin"] = rng.randbytes(3000)
        put_all(s3, bucket, "a/", files_a)
        go = ctx.Event()
        procs = [ctx.Process(target=wave, args=(env, cache, jobs, 3, go)) for jobs in plans]
        for p in procs:
            p.start()
        go.set()
        while any(p.is_alive() for p in procs):  # b/ changes while they download it
            rel = rng.choice(sorted(files_b))
            body = rng.randbytes(len(files_b[rel]) if rng.random() < 0.5 else rng.choice([10, 40_000]))
            s3.put_object(Bucket=bucket, Key="b/" + rel, Body=body)
            files_b[rel] = body
            seen_b[rel].add(md5(body))
            changes += 1
        assert join_all(procs) == [0, 0, 0]
        assert local_tree(local_a) == files_a  # exact; the sync uploaded nothing it should not have
        assert remote_listing(s3, bucket, "a/") == {rel: (len(v), md5(v)) for rel, v in files_a.items()}
        for rel, body in local_tree(local_b).items():
            assert md5(body) in seen_b[rel], f"b/{rel} holds none of its versions (torn or foreign)"
        assert no_temporary_files(cache)
        assert_records_honest(cache, local_a, remote_listing(s3, bucket, "a/"))
        assert_records_honest(cache, local_b, remote_listing(s3, bucket, "b/"))
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(b)
    assert local_tree(local_b) == files_b
    print(f"\n{WAVES} waves of 3 processes, {changes} objects of b/ rewritten under them")
    reliability.runs(WAVES)


@pytest.mark.reliability(
    "Ranks sharing a cache: all sync one root while two write, one downloads another root", group="Concurrency"
)
def test_ranks_sharing_a_cache_sync_one_root_while_two_write(s3, s3_server, bucket, cache, reliability):
    rng = random.Random(f"ranks-{os.getpid()}")
    env, ctx = s3_server.env(), forked()
    files = dataset(rng, "d", 20)
    put_all(s3, bucket, "data/", files)
    steps = 25
    for run in range(RANK_RUNS):
        ckpt = f"ckpt{run}"
        go = ctx.Barrier(3)
        args = (env, cache, f"s3://{bucket}/{ckpt}", f"s3://{bucket}/data")
        procs = [ctx.Process(target=rank, args=(*args, me, steps, go)) for me in range(3)]
        for p in procs:
            p.start()
        assert join_all(procs) == [0, 0, 0]
        local = cache / "_" / bucket / ckpt
        tree = local_tree(local)
        expected = {f"r{me}/step-{s:03d}.pt" for me in (0, 1) for s in range(steps)} | {"r0/latest.pt", "r1/latest.pt"}
        assert set(tree) == expected  # nothing lost
        assert remote_tree(s3, bucket, f"{ckpt}/") == tree  # byte for byte
        assert_records_honest(cache, local, remote_listing(s3, bucket, f"{ckpt}/"))
        assert local_tree(cache / "_" / bucket / "data") == files
    reliability.runs(RANK_RUNS)


@pytest.mark.reliability("Processes opening one new state database at once: none refused", group="Concurrency")
def test_processes_opening_one_state_database_at_once(tmp_path, reliability):
    """Ranks sharing a cache open the same new state database at once; SQLite refuses all but one
    switch to WAL mode at once ("database is locked", no waiting): each must retry, never fail."""
    ctx, rounds, procs_n, cycles = forked(), 10 * SOAK, 6, 10
    for i in range(rounds):
        path = tmp_path / f"s{i}.sqlite"
        go = ctx.Event()
        procs = [ctx.Process(target=open_records, args=(path, cycles, go)) for _ in range(procs_n)]
        for p in procs:
            p.start()
        go.set()
        assert join_all(procs) == [0] * procs_n
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT COUNT(*) FROM records").fetchone() == (procs_n * cycles,)
        finally:
            conn.close()
    reliability.runs(rounds)


# -- a background upload racing a writer -------------------------------------------


def writer(path: Path, mode: str, stop: threading.Event, rng: random.Random) -> None:
    """Keeps changing ``path`` until ``stop``: appending, rewriting in place (the size changes), or
    overwriting at the same size, chunk by chunk, so that an upload can read a half-written file.

    Between rounds it pauses for a random 0-30 ms, as a job does between checkpoint writes: a file
    that never stops changing has no consistent version to upload, so without pauses the test would
    measure the machine's speed, not pos3."""
    while not stop.wait(rng.uniform(0, 0.03)):
        if mode == "append":
            with open(path, "ab") as f:
                f.write(rng.randbytes(64 * 1024))
            if path.stat().st_size > 3 * MiB:
                path.write_bytes(b"")
        elif mode == "rewrite":
            with open(path, "wb") as f:
                for _ in range(rng.randint(1, 40)):
                    f.write(rng.randbytes(64 * 1024))
        elif mode == "same size":
            with open(path, "r+b") as f:
                for _ in range(32):
                    f.write(rng.randbytes(64 * 1024))
        elif mode == "append past 64 MiB":  # between single-request and multipart uploads
            with open(path, "ab") as f:
                f.write(rng.randbytes(MiB))
            if path.stat().st_size > 66 * MiB:
                os.truncate(path, 62 * MiB)
            stop.wait(0.05)  # a slower writer: large uploads take longer


@pytest.mark.reliability(
    "Background uploads racing a writer ({mode}, {client}): the final remote equals the file", group="Concurrency"
)
@pytest.mark.parametrize(
    ("mode", "client"),
    [("append", "crt"), ("rewrite", "crt"), ("same size", "crt"), ("rewrite", "boto3"), ("append past 64 MiB", "crt")],
)
def test_background_uploads_racing_a_writer(s3, bucket, cache, caplog, mode, client, reliability):
    rng = random.Random(f"{mode}-{os.getpid()}")
    profile = pos3.Profile(local_name=f"via-{client}", options={"transfer_client": client})
    key = "out/model.bin"
    versions: set[str] = set()

    def uploaded_versions() -> int:
        with contextlib.suppress(s3.exceptions.ClientError):  # none yet
            versions.add(s3.head_object(Bucket=bucket, Key=key)["ETag"])
        return len(versions)

    with caplog.at_level(logging.INFO, logger="pos3"), pos3.mirror(cache_root=cache, show_progress=False) as m:
        out = pos3.upload(f"s3://{bucket}/out", interval=0.05, profile=profile)
        path = out / "model.bin"
        path.write_bytes(rng.randbytes(62 * MiB if "64" in mode else 2 * MiB))
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(path, mode, stop, rng))
        thread.start()
        try:
            poll(lambda: uploaded_versions() >= 2, timeout=120)  # uploads raced the writer
        finally:
            stop.set()
            thread.join()
        final = path.read_bytes()
        assert m  # the block exits here: its final upload runs after the writer stopped
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == final
    assert len(versions) >= 2
    resent = caplog.text.count("changed during its upload")
    failed = caplog.text.count("background upload of") - caplog.text.count("copied")
    print(f"\n{mode}/{client}: {len(versions)} versions seen remotely, {resent} re-sends, {failed} failed uploads")
    reliability.runs(1)


class RefusedWhileWritten(WrappedStore):
    """The first put finds the job rewriting the file and fails, as a store's checksum check does
    (S3 answers 400 BadDigest when the body no longer matches the Content-MD5 computed from it)."""

    def __init__(self, inner: ObjectStore, native: bool, rewrite: bool) -> None:
        super().__init__(inner)
        self.native, self.rewrite, self.calls = native, rewrite, 0

    def _first(self, src: Path) -> StoreError | None:
        self.calls += 1
        if self.calls > 1:
            return None
        if self.rewrite:
            src.write_bytes(b"the finished checkpoint")
        return StoreError("Uploading: HTTP 400 BadDigest (injected)")

    def put(self, key: str, src: Path) -> ObjectMeta:
        if (err := self._first(src)) is not None:
            raise err
        return self.inner.put(key, src)

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        if not self.native:
            return None
        if (err := self._first(src)) is not None:
            failed: Future[ObjectMeta] = Future()
            failed.set_exception(err)
            return failed
        return self.inner.start_put(key, src)


@pytest.mark.parametrize("native", [False, True], ids=["put", "start_put"])
def test_a_put_refused_because_the_file_changed_is_sent_again(s3, bucket, cache, tmp_path, native):
    local = tmp_path / "ck"
    local.mkdir()
    (local / "model.pt").write_bytes(b"half-written")
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/ck")
        store = RefusedWhileWritten(m.store(url, pos3.Profile()), native, rewrite=True)
        root = Root(url, store, local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        root.sync(Direction.UP, delete=True, max_workers=2, show_progress=False)
    assert store.calls == 2
    assert remote_tree(s3, bucket, "ck/") == {"model.pt": b"the finished checkpoint"}


@pytest.mark.parametrize("native", [False, True], ids=["put", "start_put"])
def test_a_put_that_fails_on_an_unchanged_file_is_reported(s3, bucket, cache, tmp_path, native):
    local = tmp_path / "ck"
    local.mkdir()
    (local / "model.pt").write_bytes(b"stable")
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/ck")
        store = RefusedWhileWritten(m.store(url, pos3.Profile()), native, rewrite=False)
        root = Root(url, store, local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        with pytest.raises(SyncError, match="BadDigest"):
            root.sync(Direction.UP, delete=True, max_workers=2, show_progress=False)
    assert store.calls == 1
    assert remote_tree(s3, bucket, "ck/") == {}
