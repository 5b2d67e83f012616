"""Points 2–4 of the core issue: atomic writes, nothing outside the root, safe deletes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3.executor import SyncError
from pos3.local import TMP_PREFIX, UnsafeKeyError
from pos3.patterns import Excluder
from pos3.planner import Direction
from pos3.state import StateDB
from pos3.store import ObjectMeta, ObjectStore
from pos3.sync import Root
from pos3.urls import parse
from pos3.wrappers import WrappedStore
from pos3.wrappers.faults import FaultyStore, fail_keys


class HostileStore(ObjectStore):
    """A store serving keys that real S3 servers may keep verbatim (moto does)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(keys)

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        return (ObjectMeta(k, 3, "v", 0.0) for k in self.keys if k.startswith(prefix))

    def head(self, key: str) -> ObjectMeta | None:
        return None

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        dest.write_bytes(b"bad")
        return ObjectMeta(key, 3, "v", 0.0)

    def put(self, key: str, src: Path) -> ObjectMeta:
        raise AssertionError("not used")

    def delete(self, keys: Iterable[str]) -> None:
        raise AssertionError("not used")


@pytest.mark.parametrize("bad", ["d/../escape", "d/a/../../escape", "d//abs", "d/./x", "d/a/.."])
def test_keys_escaping_the_root_are_refused(tmp_path, bad):
    root_dir = tmp_path / "sandbox" / "root"
    root_dir.mkdir(parents=True)
    (root_dir / "keep").write_bytes(b"keep")
    store = HostileStore([bad, "d/ok"])
    root = Root(parse("mem://b/d"), store, root_dir, False, Excluder(None), StateDB(tmp_path / "state.sqlite"))
    with pytest.raises(UnsafeKeyError, match=repr(bad).replace(".", r"\.")):
        root.sync(Direction.DOWN, delete=True, max_workers=2, show_progress=False)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"sandbox/root/keep", "sandbox/root/ok", "state.sqlite", "state.sqlite-wal", "state.sqlite-shm"}
    assert (root_dir / "keep").read_bytes() == b"keep"  # no delete after a refused listing


def test_cache_path_of_an_escaping_url_is_refused(cache):
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(UnsafeKeyError):
        pos3.download("s3://bucket/../../etc")


def test_temp_files_are_never_uploaded_listed_and_are_cleaned(s3, bucket, cache, tmp_path):
    local = tmp_path / "out"
    write(local, {"a": b"1", f"sub/{TMP_PREFIX}a.1234": b"partial", f"{TMP_PREFIX}b.99": b"partial"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/out", local=local, interval=None)
        assert pos3.ls(str(local), recursive=True) == [f"{local}/a"]
        assert pos3.ls(str(local)) == [f"{local}/a", f"{local}/sub/"]
    assert remote_tree(s3, bucket, "out/") == {"a": b"1"}
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/out", local=local)
    assert local_tree(local) == {"a": b"1"}  # leftovers of the (pretend) crashed download are gone


def test_a_killed_download_leaves_no_partial_file(s3, s3_server, bucket, cache, tmp_path):
    size = 96 * 1024 * 1024
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(size)
    s3.upload_file(str(big), bucket, "big/file.bin")
    big.unlink()
    dest = tmp_path / "dest"
    script = textwrap.dedent(
        f"""
        import pos3
        with pos3.mirror(cache_root={str(cache)!r}, show_progress=False, max_workers=1):
            pos3.download("s3://{bucket}/big", local={str(dest)!r})
        """
    )
    env = {**os.environ, **s3_server.env()}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(TMP_PREFIX) and p.stat().st_size > 0 for p in _files(dest)):
            assert proc.poll() is None, "the download finished before it could be interrupted"
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.01)
        proc.kill()
    finally:
        proc.wait()
    assert not (dest / "file.bin").exists()
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/big", local=dest)
    assert [p.name for p in dest.iterdir()] == ["file.bin"]
    assert (dest / "file.bin").stat().st_size == size


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("what", ["prefix", "object", "bucket"])
def test_missing_remote_raises_and_deletes_nothing(s3, bucket, cache, tmp_path, what):
    put(s3, bucket, {"exists/a": b"1"})
    url = {
        "prefix": f"s3://{bucket}/nothing-here/",
        "object": f"s3://{bucket}/no-such-object",
        "bucket": "s3://no-such-bucket-pos3/data",
    }[what]
    local = tmp_path / "local"
    write(local, {"precious": b"data"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(FileNotFoundError, match=url.rstrip("/").split("//")[1].split("/")[0]):
            pos3.download(url, local=local)
    assert local_tree(local) == {"precious": b"data"}


def test_deletes_wait_for_every_copy(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"d/clash": b"remote file", "d/ok": b"ok"})
    local = tmp_path / "d"
    write(local, {"clash/inner": b"a local directory where the remote has a file", "extra": b"to delete"})
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(SyncError) as info:
        pos3.download(f"s3://{bucket}/d", local=local)
    assert f"{local / 'clash'} is a directory locally but a file remotely" in str(info.value)
    assert (local / "clash" / "inner").read_bytes() == b"a local directory where the remote has a file"
    assert (local / "extra").read_bytes() == b"to delete"  # not deleted: a copy failed
    assert (local / "ok").read_bytes() == b"ok"  # the copies that could succeed did


def test_upload_failure_reports_every_path_and_deletes_nothing(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"u/stale": b"old"})
    local = tmp_path / "u"
    write(local, {"a": b"1", "b": b"2", "c": b"3"})
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/u")
        store = FaultyStore(m.store(url, pos3.Profile()), put=fail_keys({"u/a", "u/c"}))
        root = Root(url, store, local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        with pytest.raises(SyncError) as info:
            root.sync(Direction.UP, delete=True, max_workers=4, show_progress=False)
    msg = str(info.value)
    assert "2 file(s) failed" in msg and f"s3://{bucket}/u/a" in msg and f"s3://{bucket}/u/c" in msg
    assert "injected failure" in msg
    assert remote_tree(s3, bucket, "u/") == {"stale": b"old", "b": b"2"}


class WriterDuringPut(WrappedStore):
    """Simulates the job rewriting a checkpoint while its first upload is in flight."""

    def __init__(self, inner: ObjectStore, local: Path) -> None:
        super().__init__(inner)
        self.local, self.calls = local, 0

    def start_put(self, key, src):
        return None  # through `put` below

    def put(self, key, src):
        meta = self.inner.put(key, src)
        self.calls += 1
        if self.calls == 1:
            src.write_bytes(b"the finished checkpoint")
        return meta


def test_a_file_changing_during_its_upload_is_sent_again(s3, bucket, cache, tmp_path):
    local = tmp_path / "ck"
    write(local, {"model.pt": b"half-written"})
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/ck")
        store = WriterDuringPut(m.store(url, pos3.Profile()), local)
        root = Root(url, store, local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        root.sync(Direction.UP, delete=True, max_workers=2, show_progress=False)
    assert store.calls == 2
    assert remote_tree(s3, bucket, "ck/") == {"model.pt": b"the finished checkpoint"}


def test_processes_sharing_a_cache_take_turns(s3, s3_server, bucket, cache):
    """Ranks of one job downloading the same dataset into one cache all get a complete copy."""
    files = {f"ds/{i:03d}.bin": bytes([i % 256]) * 2048 for i in range(200)}
    put(s3, bucket, files)
    script = f"import pos3\nwith pos3.mirror(cache_root={str(cache)!r}, show_progress=False):\n"
    script += f"    print(pos3.download('s3://{bucket}/ds'))\n"
    env = {**os.environ, **s3_server.env()}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len(set(outs)) == 1
    assert local_tree(Path(outs[0])) == {k[3:]: v for k, v in files.items()}


class WriterDuringAsyncPut(WriterDuringPut):
    """The same, through the store's native asynchronous puts."""

    def start_put(self, key, src):
        started = self.inner.start_put(key, src)
        self.calls += 1
        if self.calls == 1:
            started.result()  # the first send completes, then the job rewrites the file
            src.write_bytes(b"the finished checkpoint")
        return started


def test_a_file_changing_during_its_async_upload_is_sent_again(s3, bucket, cache, tmp_path):
    local = tmp_path / "ck"
    write(local, {"model.pt": b"half-written"})
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/ck")
        store = WriterDuringAsyncPut(m.store(url, pos3.Profile()), local)
        root = Root(url, store, local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        root.sync(Direction.UP, delete=True, max_workers=2, show_progress=False)
    assert store.calls == 2
    assert remote_tree(s3, bucket, "ck/") == {"model.pt": b"the finished checkpoint"}
