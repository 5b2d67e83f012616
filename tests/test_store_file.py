"""What the ``file://`` store guarantees beyond the conformance suite: safe keys, atomic puts, tidy deletes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pos3
from pos3 import Profile, StoreError, UnsafeKeyError
from pos3.local import TMP_PREFIX
from pos3.plugins import schemes, store_spec
from pos3.stores.file import FileStore
from pos3.urls import parse


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    root.mkdir()
    return root


@pytest.fixture
def store(root: Path) -> FileStore:
    return FileStore(root)


def put(store: FileStore, key: str, data: bytes, tmp_path: Path):
    src = tmp_path / "src"
    src.write_bytes(data)
    return store.put(key, src)


def test_registered_through_the_entry_point() -> None:
    assert schemes()["file"] == "file"
    backend = store_spec("file").connect(Profile(), 4)
    assert backend.store("tmp").root == Path("/tmp")


def test_url_maps_the_first_path_segment_to_the_bucket() -> None:
    url = parse("file:///mnt/nfs/data")
    assert (url.scheme, url.bucket, url.key) == ("file", "mnt", "nfs/data")
    assert str(url) == "file:///mnt/nfs/data"
    assert str(url.with_key("nfs/data/x/y.txt")) == "file:///mnt/nfs/data/x/y.txt"
    assert str(parse("file:///mnt")) == "file:///mnt/"
    assert str(parse("s3://bucket/key")) == "s3://bucket/key"


def test_profile_options_and_unsafe_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown file profile options: root"):
        store_spec("file").connect(Profile(options={"root": "/x"}), 4)
    backend = store_spec("file").connect(Profile(), 4)
    for bucket in ("..", ".", ""):
        with pytest.raises(UnsafeKeyError):
            backend.store(bucket)


@pytest.mark.parametrize(
    "key", ["../x", "a/../b", "a/./b", "a//b", "/abs", "a//", "/", "nul\0", f"{TMP_PREFIX}x", f"d/{TMP_PREFIX}1/f"]
)
def test_unsafe_keys_are_refused(store: FileStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        put(store, key, b"x", tmp_path)
    with pytest.raises(UnsafeKeyError):
        store.head(key)
    with pytest.raises(UnsafeKeyError):
        store.get(key, tmp_path / "dest")
    with pytest.raises(UnsafeKeyError):
        store.delete([key])
    assert list(store.root.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "src"]


def test_unsafe_list_prefixes_are_refused(store: FileStore) -> None:
    for prefix in ("../", "a/../", "/", "a//"):
        with pytest.raises(UnsafeKeyError):
            list(store.list(prefix))


def test_put_to_a_missing_bucket_creates_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        put(store, "a/b.txt", b"x", tmp_path)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(FileNotFoundError):
        store.head("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.delete(["a/b.txt"])


def test_put_replaces_the_file_atomically(store: FileStore, root: Path, tmp_path: Path) -> None:
    put(store, "d/obj", b"old content", tmp_path)
    with open(root / "d/obj", "rb") as reader:  # a reader of the old version
        put(store, "d/obj", b"new content, longer", tmp_path)
        assert reader.read() == b"old content"
    assert (root / "d/obj").read_bytes() == b"new content, longer"
    assert os.listdir(root / "d") == ["obj"]  # no temporary file left behind


def test_list_skips_temporary_files(store: FileStore, root: Path, tmp_path: Path) -> None:
    put(store, "d/a", b"a", tmp_path)
    (root / "d" / f"{TMP_PREFIX}inflight").write_bytes(b"partial")
    (root / f"{TMP_PREFIX}dir").mkdir()
    (root / f"{TMP_PREFIX}dir" / "x").write_bytes(b"x")
    assert [m.key for m in store.list("")] == ["d/a"]


def test_list_follows_file_symlinks_but_not_directory_symlinks(store: FileStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"outside")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "linked-file").symlink_to(outside / "f")
    assert [(m.key, m.size) for m in store.list("")] == [("linked-file", 7)]


def test_put_through_a_symlink_out_of_the_bucket_is_refused(store: FileStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKeyError):
        put(store, "escape/x", b"x", tmp_path)
    assert list(outside.iterdir()) == []


def test_names_that_are_not_utf8_fail_the_listing(store: FileStore, root: Path) -> None:
    fd = os.open(os.fsencode(root) + b"/bad\xff", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(StoreError, match="not valid UTF-8"):
        list(store.list(""))


def test_version_changes_even_when_the_clock_does_not_advance(store: FileStore, root: Path, tmp_path: Path) -> None:
    first = put(store, "obj", b"same size 1", tmp_path)
    future = os.stat(root / "obj").st_mtime_ns + 3_600 * 10**9
    os.utime(root / "obj", ns=(future, future))  # the old file looks newer than any new write
    old = store.head("obj")
    second = put(store, "obj", b"same size 2", tmp_path)
    assert old is not None and len({first.version, old.version, second.version}) == 3
    assert os.stat(root / "obj").st_mtime_ns > future


def test_a_key_cannot_be_both_an_object_and_a_directory(store: FileStore, tmp_path: Path) -> None:
    put(store, "a", b"file", tmp_path)
    with pytest.raises(StoreError, match="a parent of it is an object"):
        put(store, "a/b", b"x", tmp_path)
    put(store, "d/x", b"x", tmp_path)
    with pytest.raises(StoreError, match="other objects have keys under 'd/'"):
        put(store, "d", b"x", tmp_path)
    assert [m.key for m in store.list("")] == ["a", "d/x"]


def test_delete_removes_directories_it_empties(store: FileStore, root: Path, tmp_path: Path) -> None:
    for key in ("x/y/z/1", "x/y/2", "x/3"):
        put(store, key, b"d", tmp_path)
    store.delete(["x/y/z/1"])
    assert not (root / "x/y/z").exists() and (root / "x/y/2").exists()
    store.delete(["x/y/2", "x/3", "x"])  # "x" is a directory, not an object: ignored
    assert root.is_dir() and list(root.iterdir()) == []


def test_download_and_upload_through_file_urls(root: Path, tmp_path: Path) -> None:
    url = f"file://{root}/data/"
    with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
        out = pos3.upload(url, interval=None)
        (out / "sub").mkdir()
        (out / "sub" / "f.txt").write_text("hello")
    assert (root / "data/sub/f.txt").read_text() == "hello"
    with pos3.mirror(cache_root=tmp_path / "cache2", show_progress=False):
        path = pos3.download(url)
    assert path == tmp_path / "cache2" / "_.file" / parse(url).bucket / parse(url).key.rstrip("/")
    assert (path / "sub/f.txt").read_text() == "hello"
