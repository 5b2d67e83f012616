"""Issue 7, point 6: directory markers, ``pos3.ls`` returning ``list[str]``, ``pos3.upload(local_path)``.

A directory marker is a key ending in '/' remotely and an empty directory locally.
Transfers run against the session's SeaweedFS; SeaweedFS keeps no body under
such a key, so the marker-with-a-body case runs on fake-gcs-server, which does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3 import local as fs
from pos3.local import LocalEntry
from pos3.patterns import Excluder
from pos3.planner import Action, Direction, RemoteEntry, plan
from pos3.state import Record
from pos3.store import ObjectMeta, StoreError
from pos3.stores.file import FileStore
from pos3.testing.conformance import empty_dirs
from pos3.urls import parse

pytest_plugins = ["emulator_fixtures"]

Q = {"show_progress": False}
DOWN, UP = Direction.DOWN, Direction.UP


def keys(s3, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (relative to it), markers included."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"][len(prefix) :] for page in pages for obj in page.get("Contents", []))


def make_dirs(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).mkdir(parents=True, exist_ok=True)


def _count_puts(store) -> list[str]:
    """Record the key of every `put` pos3 makes through ``store``."""
    puts: list[str] = []
    inner = store.put

    def counted(key, src):
        puts.append(key)
        return inner(key, src)

    store.put = counted
    store.start_put = lambda key, src: None  # every put goes through `put`
    return puts


# -- the planner's rules (pure) -------------------------------------------------


def _local(*rels: str) -> list[LocalEntry]:
    return [LocalEntry(rel, 1, 1) for rel in sorted(rels)]


def _remote(*rels: str) -> list[RemoteEntry]:
    return [RemoteEntry(rel, ObjectMeta(rel, 0 if rel.endswith("/") else 1, "v")) for rel in sorted(rels)]


def _plan(direction, local, remote, delete=True, records=()) -> list[tuple[str, str]]:
    return [(a.kind, a.rel) for a in plan(direction, _local(*local), _remote(*remote), records, delete=delete)]


@pytest.mark.parametrize(
    ("direction", "local", "remote", "delete", "expected"),
    [
        # a marker missing at the destination is copied, both ways
        (DOWN, [], ["e/"], True, [("copy", "e/")]),
        (UP, ["e/"], [], True, [("copy", "e/")]),
        # present on both sides: nothing, whatever the body
        (DOWN, ["e/"], ["e/"], True, []),
        # the destination has the directory through its contents: no marker needed
        (DOWN, ["d/x"], ["d/", "d/x"], True, [("verify", "d/x")]),
        # ... unless deletes will empty it: then the marker is copied so that it survives them
        (DOWN, ["d/old"], ["d/"], True, [("copy", "d/"), ("delete", "d/old")]),
        (UP, ["d/"], ["d/old"], True, [("copy", "d/"), ("delete", "d/old")]),
        (DOWN, ["d/old"], ["d/"], False, []),
        # stale markers are deleted with deletes on, both ways
        (UP, [], ["e/"], True, [("delete", "e/")]),
        (DOWN, ["e/"], [], True, [("delete", "e/")]),
        (UP, [], ["e/"], False, []),
        # a directory that holds files at the source keeps an existing destination marker (S3 consoles, 0.4.0)
        (UP, ["d/x"], ["d/"], True, [("copy", "d/x")]),
        (UP, ["d/x"], ["d/", "d/x"], True, [("verify", "d/x")]),
        (DOWN, ["d/"], ["d/x"], True, [("copy", "d/x")]),
        # a file has no marker; the markers sort before their contents
        (UP, ["a-b", "a/", "a0"], [], True, [("copy", "a-b"), ("copy", "a/"), ("copy", "a0")]),
    ],
)
def test_planner_treats_markers_like_files_by_presence(direction, local, remote, delete, expected):
    assert _plan(direction, local, remote, delete) == expected


def test_planner_forgets_the_record_of_a_marker_gone_from_both_sides():
    records = [Record("gone/", 0, 1, 0, "v")]
    assert _plan(UP, ["a"], ["a"], records=records) == [("verify", "a"), ("forget", "gone/")]


def test_excluded_markers_are_never_copied_or_deleted():
    excluded = Excluder(["logs", "tmp/"]).file
    assert list(plan(UP, _local("logs/"), _remote("tmp/", "x/"), [], delete=True, excluded=excluded)) == [
        Action("delete", "x/", None, _remote("x/")[0])
    ]


# -- the local side ----------------------------------------------------------------


def test_walk_yields_empty_directories_as_markers(tmp_path):
    write(tmp_path, {"a-b": b"1", "a/x": b"2", "z": b"3", f"t/{fs.TMP_PREFIX}1": b"partial"})
    make_dirs(tmp_path, "a/e", "a/n/e", "e")
    assert [e.rel for e in fs.walk(tmp_path)] == ["a-b", "a/e/", "a/n/e/", "a/x", "e/", "z"]
    assert all(e.size == 0 for e in fs.walk(tmp_path) if fs.is_marker(e.rel))
    # a directory holding only a leftover temporary file is empty once that is cleaned (downloads)
    assert "t/" in [e.rel for e in fs.walk(tmp_path, clean_temp=True)]
    assert not (tmp_path / "t" / f"{fs.TMP_PREFIX}1").exists()
    assert [e.rel for e in fs.walk(tmp_path / "e")] == []  # the root itself is no marker


def test_remove_dir_never_removes_a_non_empty_directory(tmp_path):
    write(tmp_path, {"full/x": b"x"})
    make_dirs(tmp_path, "a/b/c", "k/e")
    fs.remove_dir(tmp_path, tmp_path / "full")
    assert (tmp_path / "full/x").read_bytes() == b"x"
    fs.remove_dir(tmp_path, tmp_path / "a/b/c")  # and the parents it leaves empty
    assert not (tmp_path / "a").exists()
    fs.remove_dir(tmp_path, tmp_path / "k/e", keep={tmp_path / "k"})  # but not one kept
    assert (tmp_path / "k").is_dir() and not (tmp_path / "k/e").exists()


def test_file_store_markers_are_empty_directories(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    store = FileStore(bucket)
    src = tmp_path / "body"
    src.write_bytes(b"dropped")
    assert store.put("d/", src).size == 0 and (bucket / "d").is_dir()
    assert [(m.key, m.size) for m in store.list("")] == [("d/", 0)]
    src.write_bytes(b"x")
    store.put("d/x", src)
    assert [m.key for m in store.list("")] == ["d/x"] and store.head("d/") is None  # it holds an object now
    store.delete(["d/"])  # no marker there: nothing is removed
    assert (bucket / "d/x").read_bytes() == b"x"
    store.delete(["d/x"])
    assert list(bucket.iterdir()) == []
    (bucket / "f").write_bytes(b"f")
    with pytest.raises(StoreError, match="an object has the key 'f'"):
        store.put("f/", src)


# -- against SeaweedFS ------------------------------------------------------------


def test_download_turns_markers_into_empty_directories(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"p/": b"", "p/e/": b"", "p/n/deeper/e/": b"", "p/f/": b"", "p/f/x": b"x", "p/z": b"z"})
    local = tmp_path / "down"
    with pos3.mirror(cache_root=cache, **Q):
        assert pos3.download(f"s3://{bucket}/p", local=local) == local
    # the root's own marker and the marker of a directory that holds files add nothing
    assert empty_dirs(local) == ["e/", "n/deeper/e/"] and local_tree(local) == {"f/x": b"x", "z": b"z"}


def test_upload_writes_markers_for_empty_directories_only(s3, bucket, cache, tmp_path):
    local = tmp_path / "up"
    write(local, {"full/x": b"x", "z": b"z"})
    make_dirs(local, "e", "full/e", "n/deeper/e")
    url = f"s3://{bucket}/out"
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=local, interval=None)
    assert keys(s3, bucket, "out/") == ["e/", "full/e/", "full/x", "n/deeper/e/", "z"]
    assert remote_tree(s3, bucket, "out/")["e/"] == b""
    with pos3.mirror(cache_root=cache, **Q) as m:
        puts = _count_puts(m.store(parse(url), pos3.Profile()))
        pos3.upload(url, local=local, interval=None)
    assert puts == []  # markers already there are not put again


def test_stale_markers_are_deleted_on_both_sides(s3, bucket, cache, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src, {"f": b"f"})
    make_dirs(src, "gone", "kept", "nested/gone")
    url = f"s3://{bucket}/s"
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=src, interval=None)
    with pos3.mirror(cache_root=cache, **Q):
        pos3.download(url, local=dst)
    assert empty_dirs(dst) == ["gone/", "kept/", "nested/gone/"]
    (src / "gone").rmdir()
    (src / "nested/gone").rmdir()
    (src / "nested").rmdir()
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=src, interval=None, delete=False)
    assert keys(s3, bucket, "s/") == ["f", "gone/", "kept/", "nested/gone/"]  # no deletes asked
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=src, interval=None)
    assert keys(s3, bucket, "s/") == ["f", "kept/"]
    with pos3.mirror(cache_root=cache, **Q):
        pos3.download(url, local=dst, delete=False)
    assert empty_dirs(dst) == ["gone/", "kept/", "nested/gone/"]
    # a directory whose marker is gone but that holds something (here excluded) is never removed
    write(dst, {"gone/notes.keep": b"mine"})
    with pos3.mirror(cache_root=cache, **Q):
        pos3.download(url, local=dst, exclude=["*.keep"])
    assert empty_dirs(dst) == ["kept/"] and local_tree(dst) == {"f": b"f", "gone/notes.keep": b"mine"}


def test_a_marker_survives_the_deletes_that_empty_its_directory(s3, bucket, cache, tmp_path):
    # download: the remote has only the (empty) directory, the local copy still has a stale file in it
    put(s3, bucket, {"d/keep/": b"", "d/f": b"f"})
    local = tmp_path / "down"
    write(local, {"keep/old.txt": b"old"})
    with pos3.mirror(cache_root=cache, **Q):
        pos3.download(f"s3://{bucket}/d", local=local)
    assert empty_dirs(local) == ["keep/"] and local_tree(local) == {"f": b"f"}
    # upload: the local directory was emptied, the remote still has its file
    put(s3, bucket, {"u/keep/old.txt": b"old"})
    src = tmp_path / "up"
    make_dirs(src, "keep")
    write(src, {"other.txt": b"o"})  # a source with no file at all is refused by the delete guard
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(f"s3://{bucket}/u", local=src, interval=None)
    assert keys(s3, bucket, "u/") == ["keep/", "other.txt"]


def test_nested_empty_directories_round_trip(s3, bucket, cache, tmp_path):
    url = f"s3://{bucket}/rt"
    dirs = ["a/b/c/", "a/sibling/", "x y/\u00fc/"]
    with pos3.mirror(cache_root=cache, **Q):
        out = pos3.sync(url, local=tmp_path / "first", interval=None)
        make_dirs(out, *dirs)
        write(out, {"a/b/file": b"1"})
    with pos3.mirror(cache_root=tmp_path / "other-cache", **Q):
        back = pos3.download(url)
    assert empty_dirs(back) == sorted(dirs) and local_tree(back) == {"a/b/file": b"1"}


def test_markers_of_directories_that_hold_files_are_left_alone(s3, bucket, cache, tmp_path):
    """Buckets written by 0.4.0 or an S3 console have a marker for every directory."""
    put(s3, bucket, {"o/": b"", "o/d/": b"", "o/d/x": b"x", "o/d/sub/": b"", "o/d/sub/y": b"y"})
    with pos3.mirror(cache_root=cache, **Q):
        path = pos3.sync(f"s3://{bucket}/o", interval=None)
        assert empty_dirs(path) == [] and local_tree(path) == {"d/x": b"x", "d/sub/y": b"y"}
        write(path, {"d/new": b"n"})
    assert keys(s3, bucket, "o/") == ["", "d/", "d/new", "d/sub/", "d/sub/y", "d/x"]


def test_a_marker_with_a_body_is_a_directory_and_warns_once(gcs, gcs_bucket, gcs_profile, cache, tmp_path, caplog):
    bucket = gcs.bucket(gcs_bucket)
    bucket.blob("p/odd/").upload_from_string(b"stray content")
    bucket.blob("p/f").upload_from_string(b"f")
    url = f"gs://{gcs_bucket}/p"
    local = tmp_path / "local"
    with caplog.at_level(logging.WARNING, logger="pos3"), pos3.mirror(cache_root=cache, **Q):
        pos3.download(url, local=local, profile=gcs_profile)
        pos3.download(url, local=local, profile=gcs_profile)
    warnings = [r.getMessage() for r in caplog.records if "directory marker" in r.getMessage()]
    assert (
        len(warnings) == 1 and warnings[0].startswith(f"{url}/odd/ is a directory marker") and "13 bytes" in warnings[0]
    )
    assert empty_dirs(local) == ["odd/"] and local_tree(local) == {"f": b"f"}
    # uploads leave it alone while the directory exists, and delete it like any stale marker once it is gone
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=local, interval=None, profile=gcs_profile)
    assert bucket.get_blob("p/odd/").download_as_bytes() == b"stray content"
    (local / "odd").rmdir()
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(url, local=local, interval=None, profile=gcs_profile)
    assert sorted(b.name for b in gcs.list_blobs(gcs_bucket, prefix="p/")) == ["p/f"]


# -- pos3.ls --------------------------------------------------------------------------


def test_ls_returns_strings_for_local_paths_as_for_urls(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"p/a.csv": b"1", "p/sub/b.csv": b"2", "p/e/": b"", "p/full/": b"", "p/full/c.csv": b"3"})
    base = f"s3://{bucket}/p"
    with pos3.mirror(cache_root=cache, **Q):
        local = pos3.download(base)
        listings = {
            "remote": pos3.ls(base),
            "remote -r": pos3.ls(base, recursive=True),
            "local": pos3.ls(local),
            "local -r": pos3.ls(str(local), recursive=True),
            "file": pos3.ls(local / "a.csv"),
        }
    assert all(type(x) is str for listing in listings.values() for x in listing)
    # sub-directories end in '/'; recursive listings show files and empty directories, both sides alike
    assert listings["remote"] == [f"{base}/a.csv", f"{base}/e/", f"{base}/full/", f"{base}/sub/"]
    assert listings["remote -r"] == [f"{base}/{r}" for r in ("a.csv", "e/", "full/c.csv", "sub/b.csv")]
    assert listings["local"] == [f"{local}/{r}" for r in ("a.csv", "e/", "full/", "sub/")]
    assert listings["local -r"] == [f"{local}/{r}" for r in ("a.csv", "e/", "full/c.csv", "sub/b.csv")]
    assert listings["file"] == [f"{local}/a.csv"]
    assert [x for x in listings["local -r"] if x.endswith(".csv")] == [f"{local}/a.csv", *listings["local -r"][2:]]


def test_ls_of_a_missing_local_path_raises(cache, tmp_path):
    with pos3.mirror(cache_root=cache, **Q), pytest.raises(FileNotFoundError):
        pos3.ls(tmp_path / "missing")


# -- pos3.upload(local_path) --------------------------------------------------------------


def test_upload_of_a_local_path_creates_the_directory(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pos3.mirror(cache_root=cache, **Q):
        out = pos3.upload(tmp_path / "results" / "run1")
        assert out == tmp_path / "results" / "run1" and out.is_dir()
        assert pos3.upload(str(out)) == out  # again: fine
        write(tmp_path, {"single.txt": b"s"})
        assert pos3.upload(tmp_path / "single.txt") == tmp_path / "single.txt"  # a file is left as it is
        home = pos3.upload("~/outputs")
    assert (tmp_path / "single.txt").read_bytes() == b"s"
    assert home == tmp_path / "home" / "outputs" and home.is_dir()
