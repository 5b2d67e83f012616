"""Point 1 of the core issue: changes are detected from listings and records, never by HEAD per object."""

from __future__ import annotations

import os

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3.urls import parse


def _count_calls(store, *verbs: str) -> dict[str, int]:
    """Count the calls pos3 makes to the store's verbs (each is one or more requests)."""
    counts = dict.fromkeys(verbs, 0)
    for verb in verbs:
        inner = getattr(store, verb)

        def counted(*args, _verb=verb, _inner=inner, **kwargs):
            counts[_verb] += 1
            return _inner(*args, **kwargs)

        setattr(store, verb, counted)
    return counts


def test_noop_download_rewrites_nothing_and_makes_no_object_requests(s3, bucket, cache):
    put(s3, bucket, {f"d/{i:02d}.bin": bytes([i]) * 100 for i in range(20)})
    url = f"s3://{bucket}/d"
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        path = pos3.download(url)
        before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.iterdir()}
        counts = _count_calls(m.store(parse(url), pos3.Profile()), "head", "get", "list", "put")
        pos3.download(url)
        after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.iterdir()}
    assert before == after
    assert counts["get"] == counts["put"] == 0
    assert counts["head"] <= 1  # one probe: is the URL a single object?
    assert counts["list"] == 1


def test_same_size_remote_edit_is_downloaded(s3, bucket, cache):
    put(s3, bucket, {"ckpt/model.pt": b"AAAA", "ckpt/other": b"x"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        path = pos3.download(f"s3://{bucket}/ckpt")
        other_ino = (path / "other").stat().st_ino
        put(s3, bucket, {"ckpt/model.pt": b"BBBB"})
        pos3.download(f"s3://{bucket}/ckpt")
        assert (path / "model.pt").read_bytes() == b"BBBB"
        assert (path / "other").stat().st_ino == other_ino


def test_same_size_remote_edit_is_seen_by_a_later_mirror(s3, bucket, cache):
    put(s3, bucket, {"cfg/a.yaml": b"lr: 1"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        path = pos3.download(f"s3://{bucket}/cfg")
    put(s3, bucket, {"cfg/a.yaml": b"lr: 2"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        assert (pos3.download(f"s3://{bucket}/cfg") / "a.yaml").read_bytes() == b"lr: 2"
    assert local_tree(path) == {"a.yaml": b"lr: 2"}


def test_same_size_local_edit_is_uploaded(s3, bucket, cache, tmp_path):
    out = tmp_path / "out"
    write(out, {"model.pt": b"AAAA", "log.txt": b"1"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/out", local=out, interval=None)
    first_etag = s3.head_object(Bucket=bucket, Key="out/log.txt")["ETag"]
    (out / "model.pt").write_bytes(b"BBBB")
    st = (out / "model.pt").stat()
    os.utime(out / "model.pt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later save
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/out", local=out, interval=None)
    assert remote_tree(s3, bucket, "out/") == {"model.pt": b"BBBB", "log.txt": b"1"}
    assert s3.head_object(Bucket=bucket, Key="out/log.txt")["ETag"] == first_etag


def test_edit_keeping_size_and_mtime_of_a_rewritten_remote(s3, bucket, cache):
    """A remote rewrite at equal size is caught by its ETag even when the local file looks untouched."""
    put(s3, bucket, {"x/f": b"1111"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        path = pos3.download(f"s3://{bucket}/x")
        put(s3, bucket, {"x/f": b"2222"})
        pos3.download(f"s3://{bucket}/x")
    assert (path / "f").read_bytes() == b"2222"


def test_existing_copy_without_records_is_verified_by_content(s3, bucket, cache, tmp_path):
    """A local tree made by another tool: equal files are kept (same inode), differing ones replaced."""
    put(s3, bucket, {"t/same": b"same-bytes", "t/diff": b"remote-1", "t/new": b"n"})
    local = tmp_path / "t"
    write(local, {"same": b"same-bytes", "diff": b"local--1"})
    same_ino = (local / "same").stat().st_ino
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/t", local=local)
    assert local_tree(local) == {"same": b"same-bytes", "diff": b"remote-1", "new": b"n"}
    assert (local / "same").stat().st_ino == same_ino


def test_records_are_per_root(s3, bucket, cache, tmp_path):
    """Two local copies of one remote keep separate records: updating one does not fool the other."""
    put(s3, bucket, {"r/f": b"v1v1"})
    a, b = tmp_path / "a", tmp_path / "b"
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/r", local=a)
        pos3.download(f"s3://{bucket}/r", local=b)
    put(s3, bucket, {"r/f": b"v2v2"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/r", local=a)
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/r", local=b)
    assert (a / "f").read_bytes() == (b / "f").read_bytes() == b"v2v2"
