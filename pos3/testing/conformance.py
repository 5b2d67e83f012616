"""The store conformance suite: every guarantee of `pos3.store`, checked against a real store.

A store author subclasses `StoreConformance` and provides one fixture,
``conformance_target``, returning a `Target`::

    import pytest
    from pos3.testing.conformance import StoreConformance, Target, unique_prefix

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def conformance_target(self, my_backend):
            prefix = unique_prefix()
            return Target(
                url=f"my://bucket/{prefix}",
                store=my_backend.store("bucket"),
                prefix=prefix,
                missing_store=my_backend.store("no-such-bucket"),
            )

Nothing is mocked: the tests talk to the store through its `ObjectStore`
methods, and to pos3's public API (`pos3.download`, `upload`, `sync`, `ls`)
through the URL, so the store must also be registered for the URL's scheme.
The suite's own fixtures are ``remote`` and ``cache_root``.

Mixins for what not every store can offer: `AccessControlConformance`
(``Target.denied_store``: every verb raises `PermissionError`) and
`NetworkFaultConformance` (``Target.proxy`` and ``Target.proxied_store``: the
same bucket reached through a `pos3.testing.faultproxy.FaultProxy`, for
stores that speak HTTP/1.1: transient faults are retried, corrupted bodies
are never accepted, and refused connections raise `StoreError`).
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import pos3

from ..lease import LEASE_NAME, Lease, LeaseConflict
from ..profiles import Profile
from ..store import PACE_CHUNK, ObjectMeta, ObjectStore, PreconditionFailed, StoreError
from ..urls import parse
from ..wrappers.throttle import ThrottledStore, TokenBucket
from .faultproxy import FaultProxy

__all__ = [
    "AccessControlConformance",
    "NetworkFaultConformance",
    "Remote",
    "StoreConformance",
    "Target",
    "unique_prefix",
]

MiB = 1024 * 1024
EMPTY_MD5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Target:
    """Where one conformance test runs.

    ``url`` is a remote URL ending in ``/`` that no other test uses; ``store``
    serves its bucket and ``prefix`` is its key inside the bucket (``url`` is
    ``scheme://bucket/<prefix>``). ``missing_store`` is a store of the same
    backend for a bucket that does not exist. ``profile`` is passed to pos3's
    API (``None``: the default profile). ``denied_store`` is a store for the
    same bucket whose every request is refused (for example built with bad
    credentials); `AccessControlConformance` needs it.
    ``page_size`` is the most keys one list request returns (the paging test
    writes ``page_size + 100`` objects); ``large_size`` is an object size that
    takes the store's multipart or resumable path; ``sorted_listing`` says
    whether listings come in UTF-8 byte order.

    ``proxy`` and ``proxied_store`` (both or neither) serve
    `NetworkFaultConformance`: ``proxied_store`` is a store for the same
    bucket whose every request goes through ``proxy``, a running
    `FaultProxy` in front of the real service. Build it with few retries and
    a short timeout (the tests make some requests fail every time).
    """

    url: str
    store: ObjectStore
    prefix: str
    missing_store: ObjectStore
    profile: Profile | None = None
    denied_store: ObjectStore | None = None
    page_size: int = 1000
    large_size: int = 70 * MiB
    #: False for a server known to list out of byte order (SeaweedFS lists a
    #: directory's keys before siblings that sort earlier, "a/b" before "a-b"):
    #: only the order checks are relaxed; mirrors must still come out exact.
    sorted_listing: bool = True
    #: True for a server that creates a missing bucket on the first put (SeaweedFS does):
    #: only the check that `put` into a missing bucket raises is skipped.
    put_creates_bucket: bool = False
    proxy: FaultProxy | None = None
    proxied_store: ObjectStore | None = None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _utf8_sorted(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


class Remote:
    """One test's view of its `Target`: bytes in and out of the store, keys relative to the prefix."""

    def __init__(self, target: Target, scratch: Path) -> None:
        self.target = target
        self.store = target.store
        self.prefix = target.prefix
        self.scratch = scratch
        self._names = itertools.count()

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def url(self, rel: str = "") -> str:
        return self.target.url + rel

    def scratch_file(self, data: bytes | None = None) -> Path:
        """A fresh file in the scratch directory (with ``data``, if given)."""
        path = self.scratch / f"f{next(self._names)}"
        if data is not None:
            path.write_bytes(data)
        return path

    def put(self, rel: str, data: bytes) -> ObjectMeta:
        return self.store.put(self.key(rel), self.scratch_file(data))

    def put_many(self, files: dict[str, bytes]) -> dict[str, ObjectMeta]:
        """Put every file from 16 threads at once (stores are thread-safe)."""
        with ThreadPoolExecutor(16) as pool:
            metas = pool.map(lambda item: self.put(*item), files.items())
            return dict(zip(files, metas, strict=True))

    def get(self, rel: str) -> tuple[ObjectMeta, bytes]:
        dest = self.scratch_file()
        meta = self.store.get(self.key(rel), dest)
        return meta, dest.read_bytes()

    def read(self, rel: str) -> bytes:
        return self.get(rel)[1]

    def list(self, rel_prefix: str = "") -> list[ObjectMeta]:
        return list(self.store.list(self.key(rel_prefix)))

    def keys(self, rel_prefix: str = "") -> builtins.list[str]:
        """Keys under ``rel_prefix``, relative to the target prefix, in listing order
        (sorted here when the target declares an unsorted listing)."""
        keys = [m.key[len(self.prefix) :] for m in self.list(rel_prefix)]
        return keys if self.target.sorted_listing else _utf8_sorted(keys)

    def tree(self) -> dict[str, bytes]:
        return {rel: self.read(rel) for rel in self.keys()}

    def versions(self) -> dict[str, str | None]:
        return {m.key[len(self.prefix) :]: m.version for m in self.list()}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def empty_dirs(root: Path) -> list[str]:
    """Every empty directory under ``root`` as a marker ("a/b/"), sorted."""
    return sorted(p.relative_to(root).as_posix() + "/" for p in root.rglob("*") if p.is_dir() and not any(p.iterdir()))


def rewrite(path: Path, data: bytes) -> None:
    """Overwrite ``path`` and make sure its mtime changes (filesystem clocks can be coarse)."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    st = path.stat()
    if st.st_mtime_ns == before:
        os.utime(path, ns=(st.st_atime_ns, before + 1_000_000))


def inodes(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file: unchanged values prove a file was not copied again."""
    stats = {p.relative_to(root).as_posix(): p.stat() for p in root.rglob("*") if p.is_file()}
    return {rel: (st.st_ino, st.st_mtime_ns) for rel, st in stats.items()}


#: A small tree with nesting, an empty file, spaces and non-ASCII names.
TREE = {
    "a.txt": b"alpha",
    "empty.bin": b"",
    "sub/b.txt": b"bravo",
    "sub/deeper/c.txt": b"charlie",
    "with space/\u00e4 \u00f6.txt": "\u00fcber".encode(),
    "\u65e5\u672c\u8a9e/\u30c7\u30fc\u30bf.csv": b"1,2,3\n",
}

#: Keys whose UTF-8 byte order differs from naive orders: '.' < '/' < '0',
#: directories against siblings, and a character beyond U+FFFF (which sorts
#: before U+FF5E in UTF-16 but after it in UTF-8).
SORT_KEYS = [
    "a b",
    "a-b",
    "a.b",
    "a/b",
    "a/c/d",
    "a0",
    "aB",
    "a_b",
    "ab",
    "e.x",
    "e/x",
    "e~",
    "z",
    "\u00e9",
    "\u00ff",
    "\u0100",
    "\u20ac",
    "\uff5e",
    "\U0001f600/x",
    "\U0001f600x",
]

PREFIX_KEYS = ["foo/ba", "foo/bar.txt", "foo/bar/x", "foo/bar/y/z", "foo/bar_baz/x", "foo/barn"]

ODD_KEYS = [
    "with space.txt",
    "dir with space/inner file",
    "\u00fcml\u00e4\u00fct/\u00e9t\u00e9.txt",
    "\u4e2d\u6587/\u6587\u4ef6.bin",
    "emoji \U0001f389/\U0001f40d.py",
    "punct/a+b=c&d;e,f@g$h!i'(j).txt",
    "percent/100%25 done.txt",
    "query/what?x=1#frag",
]


class StoreConformance:
    """The shared suite. Subclass it as ``Test...`` and provide the ``conformance_target`` fixture."""

    @pytest.fixture
    def remote(self, conformance_target: Target, tmp_path: Path) -> Remote:
        t = conformance_target
        url = parse(t.url)
        assert t.url.endswith("/"), f"Target.url must end with '/': {t.url!r}"
        assert url.key == t.prefix, f"Target.prefix {t.prefix!r} is not the key of Target.url {t.url!r}"
        scratch = tmp_path / "pos3-scratch"
        scratch.mkdir()
        return Remote(t, scratch)

    @pytest.fixture
    def cache_root(self, tmp_path: Path) -> Path:
        return tmp_path / "pos3-cache"

    @staticmethod
    def mirror(cache_root: Path) -> pos3.Mirror:
        return pos3.mirror(cache_root=cache_root, show_progress=False)

    # -- list -----------------------------------------------------------------

    def test_target_starts_empty(self, remote: Remote) -> None:
        assert remote.list() == []

    def test_list_of_a_missing_prefix_is_empty(self, remote: Remote) -> None:
        remote.put("present.txt", b"x")
        assert remote.keys("absent/") == []
        assert remote.keys("presentx") == []

    def test_missing_bucket_raises_file_not_found(self, remote: Remote) -> None:
        store = remote.target.missing_store
        with pytest.raises(FileNotFoundError):
            list(store.list(remote.prefix))
        with pytest.raises(FileNotFoundError):
            store.get(remote.key("x.txt"), remote.scratch_file())

    def test_missing_bucket_raises_file_not_found_from_every_verb(self, remote: Remote) -> None:
        """A missing key is an answer (`head` gives None); a missing bucket is an error from every verb."""
        store = remote.target.missing_store
        with pytest.raises(FileNotFoundError):
            store.head(remote.key("x.txt"))
        with pytest.raises(FileNotFoundError):
            store.delete([remote.key("x.txt")])
        if not remote.target.put_creates_bucket:
            with pytest.raises(FileNotFoundError):
                store.put(remote.key("x.txt"), remote.scratch_file(b"x"))

    def test_list_pages_beyond_one_page(self, remote: Remote) -> None:
        page = remote.target.page_size
        # The first page boundary falls inside the "directory" page/b/.
        files = {f"page/a{i:05d}": f"a{i}".encode() for i in range(page - 50)}
        files |= {f"page/b/{i:04d}": f"b{i}".encode() for i in range(150)}
        remote.put_many(files)
        listed = remote.list("page/")
        keys = [m.key[len(remote.prefix) :] for m in listed]
        assert len(keys) == len(files) == page + 100
        assert keys == _utf8_sorted(files)
        assert {k: m.size for k, m in zip(keys, listed, strict=True)} == {k: len(v) for k, v in files.items()}
        assert remote.keys("page/b/") == _utf8_sorted(k for k in files if k.startswith("page/b/"))

    def test_list_is_sorted_in_utf8_byte_order(self, remote: Remote) -> None:
        remote.put_many({k: k.encode() for k in SORT_KEYS})
        listed = [m.key[len(remote.prefix) :] for m in remote.list()]
        if remote.target.sorted_listing:
            assert listed == _utf8_sorted(SORT_KEYS)
        else:
            assert _utf8_sorted(listed) == _utf8_sorted(SORT_KEYS) and len(listed) == len(SORT_KEYS)

    def test_mirror_of_keys_that_sort_differently_as_directories(
        self, remote: Remote, cache_root: Path, tmp_path: Path
    ) -> None:
        files = {k: k.encode() for k in SORT_KEYS if not any(o.startswith(k + "/") for o in SORT_KEYS)}
        remote.put_many(files)
        local = tmp_path / "sorted"
        write_tree(local, {"zz-stale": b"x"})
        with self.mirror(cache_root):
            pos3.download(remote.url(), local, profile=remote.target.profile)
        assert local_tree(local) == files
        (local / "a-b").unlink()
        with self.mirror(cache_root):
            pos3.upload(remote.url(), local, interval=None, profile=remote.target.profile)
        assert remote.tree() == {k: v for k, v in files.items() if k != "a-b"}

    def test_prefix_ending_in_slash_is_a_directory(self, remote: Remote) -> None:
        remote.put_many({k: b"p" for k in PREFIX_KEYS})
        assert remote.keys("foo/bar/") == ["foo/bar/x", "foo/bar/y/z"]
        assert remote.keys("foo/bar/y/") == ["foo/bar/y/z"]

    def test_prefix_without_slash_is_a_plain_string_prefix(self, remote: Remote) -> None:
        remote.put_many({k: b"p" for k in PREFIX_KEYS})
        assert remote.keys("foo/bar") == ["foo/bar.txt", "foo/bar/x", "foo/bar/y/z", "foo/bar_baz/x", "foo/barn"]
        assert remote.keys("foo/ba") == _utf8_sorted(PREFIX_KEYS)
        assert remote.keys("foo/bar/x") == ["foo/bar/x"]
        assert remote.keys("foo/bar/y") == ["foo/bar/y/z"]
        assert remote.keys("fo") == _utf8_sorted(PREFIX_KEYS)

    # -- objects --------------------------------------------------------------

    def test_keys_with_spaces_and_unicode(self, remote: Remote) -> None:
        files = {k: k.encode() for k in ODD_KEYS}
        remote.put_many(files)
        assert remote.keys() == _utf8_sorted(ODD_KEYS)
        for rel, data in files.items():
            head = remote.store.head(remote.key(rel))
            assert head is not None and head.key == remote.key(rel) and head.size == len(data)
            assert remote.read(rel) == data

    def test_empty_object(self, remote: Remote) -> None:
        put = remote.put("empty", b"")
        assert put.size == 0
        [listed] = remote.list("empty")
        assert (listed.key, listed.size) == (remote.key("empty"), 0)
        head = remote.store.head(remote.key("empty"))
        assert head is not None and head.size == 0
        dest = remote.scratch_file(b"stale content")
        meta = remote.store.get(remote.key("empty"), dest)
        assert meta.size == 0 and dest.read_bytes() == b""
        for m in (put, listed, head, meta):
            assert m.md5 in (None, EMPTY_MD5)

    def test_large_object(self, remote: Remote) -> None:
        size = remote.target.large_size
        src = remote.scratch_file()
        digest = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        with open(src, "wb") as f:
            for start in range(0, size, 8 * MiB):
                chunk = os.urandom(min(8 * MiB, size - start))
                digest.update(chunk)
                md5.update(chunk)
                f.write(chunk)
        put = remote.store.put(remote.key("large.bin"), src)
        assert put.size == size
        [listed] = remote.list("large.bin")
        assert listed.size == size and listed.version == put.version
        dest = remote.scratch_file()
        got = remote.store.get(remote.key("large.bin"), dest)
        assert got.size == size and got.version == put.version
        assert os.path.getsize(dest) == size and _file_sha256(dest) == digest.hexdigest()
        os.truncate(dest, 0)  # with its listed size, as a sync asks (a store may take ranges then)
        sized = remote.store.get(remote.key("large.bin"), dest, listed.size)
        assert sized.size == size and sized.version == put.version
        assert os.path.getsize(dest) == size and _file_sha256(dest) == digest.hexdigest()
        for m in (put, listed, got, sized):
            assert m.md5 in (None, md5.hexdigest())

    def test_paced_view_charges_every_body_byte(self, remote: Remote) -> None:
        """The optional `ObjectStore.paced` capability: each direction charges exactly the
        bytes it moves, in chunks of at most `PACE_CHUNK`; without it, the throttle wrapper
        falls back to charging whole objects."""
        down: list[int] = []
        up: list[int] = []
        paced = remote.store.paced(down.append, up.append)
        if paced is None:
            assert ThrottledStore(remote.store, TokenBucket(1e12), TokenBucket(1e12)).per_object
            return
        data = os.urandom(3 * MiB + 123)
        put = paced.put(remote.key("paced.bin"), remote.scratch_file(data))
        assert put.size == len(data) and sum(up) == len(data) and down == []
        assert max(up) <= PACE_CHUNK
        up.clear()
        dest = remote.scratch_file()
        got = paced.get(remote.key("paced.bin"), dest, len(data))
        assert got.version == put.version and dest.read_bytes() == data
        assert sum(down) == len(data) and max(down) <= PACE_CHUNK and up == []

    def test_put_meta_matches_list_head_and_get(self, remote: Remote) -> None:
        put = remote.put("dir/obj.txt", b"hello world")
        assert put.key == remote.key("dir/obj.txt") and put.size == 11 and put.version is not None
        [listed] = remote.list("dir/")
        head = remote.store.head(remote.key("dir/obj.txt"))
        got, data = remote.get("dir/obj.txt")
        assert data == b"hello world"
        for m in (listed, head, got):
            assert m is not None
            assert (m.key, m.size, m.version) == (put.key, put.size, put.version)

    def test_same_size_overwrite_changes_version(self, remote: Remote) -> None:
        first = remote.put("obj", b"version one")
        second = remote.put("obj", b"version two")
        assert second.version != first.version
        [listed] = remote.list("obj")
        head = remote.store.head(remote.key("obj"))
        assert listed.version == second.version and head is not None and head.version == second.version
        meta, data = remote.get("obj")
        assert data == b"version two" and meta.version == second.version

    def test_md5_is_right_when_known(self, remote: Remote) -> None:
        files = {"m/empty": b"", "m/small": b"abc", "m/bigger": os.urandom(300_000)}
        puts = remote.put_many(files)
        listed = {m.key[len(remote.prefix) :]: m for m in remote.list("m/")}
        for rel, data in files.items():
            head = remote.store.head(remote.key(rel))
            got, _ = remote.get(rel)
            for m in (puts[rel], listed[rel], head, got):
                assert m is not None and m.md5 in (None, _md5(data)), rel

    def test_head_of_a_missing_key_is_none(self, remote: Remote) -> None:
        remote.put("dir/inner.txt", b"x")
        assert remote.store.head(remote.key("missing.txt")) is None
        assert remote.store.head(remote.key("dir")) is None  # a "directory" is not an object
        assert remote.store.head(remote.key("dir/inner")) is None  # nor is a prefix of a key

    def test_get_of_a_missing_key_raises_file_not_found(self, remote: Remote) -> None:
        with pytest.raises(FileNotFoundError):
            remote.store.get(remote.key("missing.txt"), remote.scratch_file())

    def test_get_truncates_dest(self, remote: Remote) -> None:
        remote.put("short", b"abc")
        dest = remote.scratch_file(b"a much longer stale content")
        remote.store.get(remote.key("short"), dest)
        assert dest.read_bytes() == b"abc"

    # -- delete ---------------------------------------------------------------

    def test_delete_in_batches_and_ignores_missing_keys(self, remote: Remote) -> None:
        batch = remote.target.store.delete_batch_size
        n = 2 * batch + 3 if batch <= 100 else 30
        doomed = {f"del/{i:03d}": b"d" for i in range(n)}
        kept = {"del/keep.txt": b"k", "other/x": b"o"}
        remote.put_many(doomed | kept)
        names = [*doomed, "del/never-existed", "nowhere/at/all"]
        remote.store.delete(remote.key(rel) for rel in names)  # any iterable, even a generator
        assert remote.keys() == _utf8_sorted(kept)
        remote.store.delete(remote.key(rel) for rel in names)  # all missing now: still fine
        remote.store.delete([])
        assert remote.keys() == _utf8_sorted(kept)

    # -- mirror round trips through the public API ----------------------------

    def test_download_tree(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        t = remote.target
        with self.mirror(cache_root):
            path = pos3.download(remote.url(), profile=t.profile)
        url = parse(t.url)
        # cache_root / <local_name> (".<scheme>" for schemes other than s3) / <bucket> / <key>
        assert path.relative_to(cache_root).parts[1:] == (url.bucket, *url.key.rstrip("/").split("/"))
        assert local_tree(path) == TREE
        before = inodes(path)
        with self.mirror(cache_root):
            assert pos3.download(remote.url(), profile=t.profile) == path
        assert inodes(path) == before  # nothing copied again

    def test_upload_tree(self, remote: Remote, cache_root: Path, tmp_path: Path) -> None:
        local = tmp_path / "pos3-local"
        with self.mirror(cache_root):
            out = pos3.upload(remote.url(), local, interval=None, profile=remote.target.profile)
            write_tree(out, TREE)
        assert remote.tree() == TREE
        versions = remote.versions()
        with self.mirror(cache_root):
            pos3.upload(remote.url(), local, interval=None, profile=remote.target.profile)
        assert remote.versions() == versions  # nothing uploaded again

    def test_download_detects_a_same_size_remote_edit(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        profile = remote.target.profile
        with self.mirror(cache_root):
            path = pos3.download(remote.url(), profile=profile)
        before = inodes(path)
        remote.put("sub/b.txt", b"BRAVO")
        with self.mirror(cache_root):
            pos3.download(remote.url(), profile=profile)
        assert local_tree(path) == TREE | {"sub/b.txt": b"BRAVO"}
        after = inodes(path)
        assert after["a.txt"] == before["a.txt"]

    def test_sync_uploads_a_same_size_local_edit(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        versions = remote.versions()
        with self.mirror(cache_root):
            path = pos3.sync(remote.url(), interval=None, profile=remote.target.profile)
            assert local_tree(path) == TREE
            rewrite(path / "sub/b.txt", b"BRAVO")
        assert remote.tree() == TREE | {"sub/b.txt": b"BRAVO"}
        now = remote.versions()
        assert now["sub/b.txt"] != versions["sub/b.txt"]
        assert {k: v for k, v in now.items() if k != "sub/b.txt"} == {
            k: v for k, v in versions.items() if k != "sub/b.txt"
        }

    def test_download_propagates_remote_deletes(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        profile = remote.target.profile
        with self.mirror(cache_root):
            path = pos3.download(remote.url(), profile=profile)
        remote.store.delete([remote.key("sub/b.txt"), remote.key("sub/deeper/c.txt")])
        with self.mirror(cache_root):
            pos3.download(remote.url(), delete=False, profile=profile)
        assert local_tree(path) == TREE
        with self.mirror(cache_root):
            pos3.download(remote.url(), profile=profile)
        expected = {k: v for k, v in TREE.items() if not k.startswith("sub/")}
        assert local_tree(path) == expected

    def test_upload_propagates_local_deletes(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        profile = remote.target.profile
        with self.mirror(cache_root):
            path = pos3.sync(remote.url(), interval=None, delete_remote=False, profile=profile)
            (path / "a.txt").unlink()
        assert remote.tree() == TREE
        with self.mirror(cache_root):
            assert pos3.upload(remote.url(), interval=None, profile=profile) == path
            (path / "sub/deeper/c.txt").unlink()
        # sub/deeper/ is left empty locally: it is kept as a directory marker.
        expected = {k: v for k, v in TREE.items() if k not in ("a.txt", "sub/deeper/c.txt")}
        assert remote.tree() == expected | {"sub/deeper/": b""}

    def test_exclude_patterns(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE | {"logs/run.log": b"log", "keep.tmp": b"tmp"})
        exclude = ["*.tmp", "logs/"]
        with self.mirror(cache_root):
            path = pos3.sync(remote.url(), interval=None, exclude=exclude, profile=remote.target.profile)
            assert local_tree(path) == TREE
            write_tree(path, {"out.txt": b"out", "new.tmp": b"new", "logs/new.log": b"new"})
        assert remote.tree() == TREE | {"logs/run.log": b"log", "keep.tmp": b"tmp", "out.txt": b"out"}

    def test_single_object_download(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many({"one/file.bin": b"single", "one/file.bin.sibling": b"other"})
        profile = remote.target.profile
        with self.mirror(cache_root):
            path = pos3.download(remote.url("one/file.bin"), profile=profile)
            assert path.is_file() and path.read_bytes() == b"single"
        remote.put("one/file.bin", b"SINGLE")
        with self.mirror(cache_root):
            assert pos3.download(remote.url("one/file.bin"), profile=profile) == path
        assert path.read_bytes() == b"SINGLE"

    def test_download_of_a_missing_remote_raises_file_not_found(self, remote: Remote, cache_root: Path) -> None:
        remote.put("present.txt", b"x")
        with self.mirror(cache_root), pytest.raises(FileNotFoundError):
            pos3.download(remote.url("absent/"), profile=remote.target.profile)

    def test_ls(self, remote: Remote, cache_root: Path) -> None:
        remote.put_many(TREE)
        with self.mirror(cache_root):
            flat = pos3.ls(remote.url(), profile=remote.target.profile)
            deep = pos3.ls(remote.url(), recursive=True, profile=remote.target.profile)
        children = {k.split("/", 1)[0] + ("/" if "/" in k else "") for k in TREE}
        assert flat == [remote.url(c) for c in _utf8_sorted(children)]
        assert deep == [remote.url(k) for k in _utf8_sorted(TREE)]

    # -- directory markers (keys ending in '/') ---------------------------------

    def test_directory_marker_object(self, remote: Remote) -> None:
        remote.put_many({"m-x": b"x", "m0": b"0"})
        put = remote.put("m/", b"")
        assert put.key == remote.key("m/") and put.size == 0
        assert remote.keys() == _utf8_sorted(["m-x", "m/", "m0"])
        [listed] = remote.list("m/")
        head = remote.store.head(remote.key("m/"))
        assert head is not None and (listed.key, listed.size, head.size) == (remote.key("m/"), 0, 0)
        assert remote.read("m/") == b""
        remote.store.delete([remote.key("m/")])
        assert remote.keys() == ["m-x", "m0"] and remote.store.head(remote.key("m/")) is None

    def test_empty_directories_round_trip_as_markers(self, remote: Remote, cache_root: Path, tmp_path: Path) -> None:
        profile = remote.target.profile
        src, dst = tmp_path / "marker-src", tmp_path / "marker-dst"
        write_tree(src, {"b.txt": b"b", "full/a.txt": b"a"})
        for d in ("empty", "full/empty", "nested/deeper/empty"):
            (src / d).mkdir(parents=True)
        with self.mirror(cache_root):
            pos3.upload(remote.url(), src, interval=None, profile=profile)
        # Only empty directories get a marker; a directory that holds files needs none.
        markers = ["empty/", "full/empty/", "nested/deeper/empty/"]
        assert remote.keys() == _utf8_sorted(["b.txt", "full/a.txt", *markers])
        assert all(m.size == 0 for m in remote.list() if m.key.endswith("/"))
        with self.mirror(cache_root):
            assert pos3.ls(remote.url(), recursive=True, profile=profile) == [
                remote.url(k) for k in _utf8_sorted(["b.txt", "full/a.txt", *markers])
            ]
            assert pos3.ls(remote.url(), profile=profile) == [
                remote.url(k) for k in ("b.txt", "empty/", "full/", "nested/")
            ]
            pos3.download(remote.url(), dst, profile=profile)
        assert empty_dirs(dst) == markers and local_tree(dst) == local_tree(src)
        # Stale markers: deleted remotely on upload, and their empty directories locally on download.
        (src / "empty").rmdir()
        (src / "nested/deeper/empty").rmdir()  # leaves nested/deeper/ empty: now it gets the marker
        with self.mirror(cache_root):
            pos3.upload(remote.url(), src, interval=None, profile=profile)
        assert remote.keys() == _utf8_sorted(["b.txt", "full/a.txt", "full/empty/", "nested/deeper/"])
        with self.mirror(cache_root):
            pos3.download(remote.url(), dst, profile=profile)
        assert empty_dirs(dst) == ["full/empty/", "nested/deeper/"] and local_tree(dst) == local_tree(src)
        # A directory emptied locally keeps its marker while the deletes remove what it held.
        (src / "full/a.txt").unlink()
        (src / "full/empty").rmdir()
        with self.mirror(cache_root):
            pos3.upload(remote.url(), src, interval=None, profile=profile)
        assert remote.keys() == _utf8_sorted(["b.txt", "full/", "nested/deeper/"])

    def test_marker_with_a_body_is_a_directory(
        self, remote: Remote, cache_root: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        remote.put_many({"odd/": b"stray content", "x.txt": b"x"})
        [marker] = remote.list("odd/")  # some stores drop the body of such a key
        with caplog.at_level("WARNING", logger="pos3"), self.mirror(cache_root):
            path = pos3.download(remote.url(), profile=remote.target.profile)
            pos3.download(remote.url(), profile=remote.target.profile)
        assert empty_dirs(path) == ["odd/"] and local_tree(path) == {"x.txt": b"x"}
        warnings = [r for r in caplog.records if "directory marker" in r.getMessage()]
        assert len(warnings) == (1 if marker.size else 0)  # once per marker

    def test_long_unicode_file_name_round_trip(self, remote: Remote, cache_root: Path) -> None:
        name = "long/" + "\U0001f600" * 60 + ".bin"  # a 244-byte file name (filesystems allow 255)
        remote.put(name, b"long")
        with self.mirror(cache_root):
            path = pos3.download(remote.url(), profile=remote.target.profile)
        assert local_tree(path) == {name: b"long"}

    # -- conditional writes (put_if) and leases -------------------------------

    def test_put_if_create(self, remote: Remote) -> None:
        meta = remote.store.put_if(remote.key("lease"), b"first")
        head = remote.store.head(remote.key("lease"))
        assert head is not None and head.version == meta.version and head.size == 5
        with pytest.raises(PreconditionFailed):
            remote.store.put_if(remote.key("lease"), b"second")
        assert remote.read("lease") == b"first"

    def test_put_if_update_needs_the_current_version(self, remote: Remote) -> None:
        first = remote.store.put_if(remote.key("lease"), b"first")
        second = remote.store.put_if(remote.key("lease"), b"second", first.version)
        assert second.version != first.version
        assert remote.get("lease")[0].version == second.version
        with pytest.raises(PreconditionFailed):
            remote.store.put_if(remote.key("lease"), b"stale", first.version)  # same size, old version
        with pytest.raises(PreconditionFailed):
            remote.store.put_if(remote.key("missing"), b"x", second.version)
        assert remote.tree() == {"lease": b"second"}

    def test_put_if_racing_creates_have_one_winner(self, remote: Remote) -> None:
        if not remote.store.conditional_put:
            pytest.skip("the store declares no atomic conditional writes (conditional_put = False)")
        writers = 8
        for round_ in range(5):
            key = remote.key(f"race-{round_}")

            def create(i: int, key: str = key) -> bytes | None:
                try:
                    remote.store.put_if(key, f"writer {i}".encode())
                    return f"writer {i}".encode()
                except PreconditionFailed:
                    return None

            with ThreadPoolExecutor(writers) as pool:
                wins = [w for w in pool.map(create, range(writers)) if w is not None]
            assert len(wins) == 1, f"{len(wins)} of {writers} racing creates succeeded"
            assert remote.read(f"race-{round_}") == wins[0]

    def test_put_if_racing_updates_have_at_most_one_winner(self, remote: Remote) -> None:
        if not remote.store.conditional_put:
            pytest.skip("the store declares no atomic conditional writes (conditional_put = False)")
        writers = 8
        version = remote.store.put_if(remote.key("lease"), b"start").version

        def update(i: int) -> bytes | None:
            try:
                remote.store.put_if(remote.key("lease"), f"writer {i}".encode(), version)
                return f"writer {i}".encode()
            except PreconditionFailed:
                return None

        with ThreadPoolExecutor(writers) as pool:
            wins = [w for w in pool.map(update, range(writers)) if w is not None]
        assert len(wins) <= 1, f"{len(wins)} of {writers} racing updates from one version succeeded"
        assert remote.read("lease") == (wins[0] if wins else b"start")

    def test_lease_excludes_a_second_writer_and_stays_out_of_sight(
        self, remote: Remote, cache_root: Path, tmp_path: Path
    ) -> None:
        remote.put("data/kept.txt", b"k")
        local = tmp_path / "up"
        (local / "data").mkdir(parents=True)
        (local / "data" / "kept.txt").write_bytes(b"k")
        with self.mirror(cache_root) as m:
            m.upload(remote.url(), local, interval=None, delete=True, profile=remote.target.profile)
            assert remote.store.head(remote.key(LEASE_NAME)) is not None
            for prefix in (remote.prefix, remote.key("data/")):  # the same prefix, and one inside it
                with pytest.raises(LeaseConflict, match=socket.gethostname()):
                    Lease.acquire(remote.store, prefix, remote.url())
            assert m.ls(remote.url(), recursive=True, profile=remote.target.profile) == [remote.url("data/kept.txt")]
        assert remote.keys() == ["data/kept.txt"]  # released at exit; the sync deleted nothing else
        with self.mirror(cache_root) as m:
            down = m.download(remote.url(), profile=remote.target.profile)
            assert sorted(p.name for p in down.rglob("*")) == ["data", "kept.txt"]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def unique_prefix(name: str = "conformance") -> str:
    """A fresh key prefix (``name-<random>/``) for one test's `Target`."""
    return f"{name}-{secrets.token_hex(6)}/"


class AccessControlConformance:
    """For stores that can refuse requests: mix into the test class beside
    `StoreConformance` and give the `Target` a ``denied_store``."""

    def test_refused_requests_raise_permission_error(self, remote: Remote) -> None:
        denied = remote.target.denied_store
        assert denied is not None, "AccessControlConformance needs Target.denied_store"
        remote.put("secret.txt", b"s")
        with pytest.raises(PermissionError):
            list(denied.list(remote.prefix))
        with pytest.raises(PermissionError):
            denied.head(remote.key("secret.txt"))
        with pytest.raises(PermissionError):
            denied.get(remote.key("secret.txt"), remote.scratch_file())
        with pytest.raises(PermissionError):
            denied.put(remote.key("new.txt"), remote.scratch_file(b"n"))
        with pytest.raises(PermissionError):
            denied.put_if(remote.key("new.txt"), b"n")
        with pytest.raises(PermissionError):
            denied.delete([remote.key("secret.txt")])
        assert remote.tree() == {"secret.txt": b"s"}


def _is_store_error(exc: BaseException) -> bool:
    """The store's own error type, and not a not-found or permission answer."""
    return isinstance(exc, StoreError) and not isinstance(exc, (FileNotFoundError, PermissionError))


class NetworkFaultConformance:
    """For stores over HTTP/1.1: mix in beside `StoreConformance` and give the `Target` a
    ``proxy`` and a ``proxied_store`` (see `Target`). Every test leaves the proxy clear."""

    @pytest.fixture
    def faults(self, remote: Remote) -> Iterator[tuple[FaultProxy, ObjectStore]]:
        proxy, store = remote.target.proxy, remote.target.proxied_store
        assert proxy is not None and store is not None, "NetworkFaultConformance needs Target.proxy and proxied_store"
        proxy.clear()
        try:
            yield proxy, store
        finally:
            proxy.clear()
            proxy.accept()

    def test_transient_faults_are_retried(self, remote: Remote, faults: tuple[FaultProxy, ObjectStore]) -> None:
        proxy, store = faults
        data = os.urandom(200_000)
        proxy.set("status", status=503, first=1)  # each fault once: the proxied store may retry just once
        store.put(remote.key("t/obj.bin"), remote.scratch_file(data))
        proxy.set("status", status=500, first=1)
        assert [m.key for m in store.list(remote.key("t/"))] == [remote.key("t/obj.bin")]
        for kind in ("reset", "cut", "status"):
            proxy.set(kind, first=1, method="GET")
            dest = remote.scratch_file()
            assert store.get(remote.key("t/obj.bin"), dest).size == len(data), kind
            assert dest.read_bytes() == data, kind
        proxy.set("drop", first=1)
        assert store.head(remote.key("t/obj.bin")) is not None
        assert proxy.injected == 6
        assert remote.read("t/obj.bin") == data

    def test_a_corrupted_download_is_never_accepted(
        self, remote: Remote, faults: tuple[FaultProxy, ObjectStore]
    ) -> None:
        proxy, store = faults
        data = os.urandom(100_000)
        remote.put("c/integrity-obj.bin", data)
        proxy.set("corrupt", first=1, path="integrity-obj.bin")
        dest = remote.scratch_file()
        store.get(remote.key("c/integrity-obj.bin"), dest)
        assert proxy.count(fault="corrupt") == 1 and dest.read_bytes() == data  # detected, and read again
        proxy.set("corrupt", path="integrity-obj.bin")
        with pytest.raises(StoreError):
            store.get(remote.key("c/integrity-obj.bin"), remote.scratch_file())

    def test_a_corrupted_upload_is_never_kept(self, remote: Remote, faults: tuple[FaultProxy, ObjectStore]) -> None:
        proxy, store = faults
        data = os.urandom(100_000)
        proxy.set("corrupt_request", first=1)
        store.put(remote.key("c/up.bin"), remote.scratch_file(data))
        assert proxy.count(fault="corrupt_request") == 1
        assert remote.read("c/up.bin") == data  # rejected by the service, or detected, and sent again
        proxy.set("corrupt_request")
        with pytest.raises(StoreError):
            store.put(remote.key("c/never.bin"), remote.scratch_file(data))
        proxy.clear()
        assert remote.keys("c/") == ["c/up.bin"]  # the corrupted copy was not kept

    def test_refused_connections_raise_the_store_error(
        self, remote: Remote, faults: tuple[FaultProxy, ObjectStore]
    ) -> None:
        proxy, store = faults
        remote.put("r/x.txt", b"x")
        proxy.refuse()
        calls = {
            "list": lambda: list(store.list(remote.prefix)),
            "head": lambda: store.head(remote.key("r/x.txt")),
            "get": lambda: store.get(remote.key("r/x.txt"), remote.scratch_file()),
            "put": lambda: store.put(remote.key("r/y.txt"), remote.scratch_file(b"y")),
            "delete": lambda: store.delete([remote.key("r/x.txt")]),
        }
        for verb, call in calls.items():
            with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
                call()
            assert _is_store_error(info.value), f"{verb} raised {type(info.value).__name__}: {info.value}"
        proxy.accept()
        assert remote.tree() == {"r/x.txt": b"x"}

    def test_a_listing_broken_mid_way_raises_the_store_error(
        self, remote: Remote, faults: tuple[FaultProxy, ObjectStore]
    ) -> None:
        """A listing never ends quietly short: refused or cut after its first page, it raises."""
        proxy, store = faults
        page = remote.target.page_size
        remote.put_many({f"l/{i:05d}": b"l" for i in range(page + 1)})
        for fault in ("refuse", "cut"):
            listing = store.list(remote.key("l/"))
            assert next(listing).key == remote.key("l/00000")
            if fault == "refuse":
                proxy.refuse()
            else:
                proxy.set("cut")
            with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
                for _ in listing:
                    pass
            assert _is_store_error(info.value), f"{fault}: {type(info.value).__name__}: {info.value}"
            proxy.accept()
            proxy.clear()
