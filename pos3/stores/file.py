"""The local-directory store for ``file://`` URLs: a shared mount (NFS, SMB) used as the remote.

``file:///mnt/nfs/data`` is bucket ``mnt``, key ``nfs/data``: a bucket is the
directory ``/<bucket>``, an object the regular file ``/<bucket>/<key>``.
Guarantees on top of `ObjectStore`'s:

* `put` writes a temporary file in the object's directory, flushes it to disk
  and renames it over the key (`os.replace`): no reader sees a partial object.
  Temporary files (``.pos3-tmp-*``) are never listed.
* `list` walks lazily in UTF-8 byte order of keys (a directory sorts as
  ``name/``) and does not follow symlinked directories.
* ``version`` is ``"<mtime_ns>-<size>"``; `put` moves the new file's mtime
  past the one it replaces, so every rewrite through the store changes it.
  ``md5`` is ``None`` (it would cost a full read).
* Keys map to paths safely: empty, ``.`` or ``..`` segments, NUL bytes,
  ``.pos3-tmp-`` names and paths leaving the bucket through a symlink are
  refused with `UnsafeKeyError`.
* Directories a `delete` leaves empty are removed, up to the bucket.
* A directory marker (a key ending in '/') is an empty directory: `put`
  creates the directory (any content is dropped, as SeaweedFS does), `list`
  reports each empty directory as one (size 0), and `delete` removes the
  directory only while it is empty. A directory that holds anything is no marker.

The profile takes no options.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..hookspecs import StoreSpec, hookimpl
from ..local import TMP_PREFIX, UnsafeKeyError, check_rel, is_marker, is_temp, prepare_parent, sort_key
from ..store import PACE_CHUNK, Backend, ObjectMeta, ObjectStore, Pace, PreconditionFailed, StoreError

if TYPE_CHECKING:
    from ..profiles import Profile

CHUNK = PACE_CHUNK
#: mtime steps `put` tries, finest first, until the filesystem stores a later mtime.
_MTIME_STEPS_NS = (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000)


@hookimpl
def pos3_register_stores(register) -> None:
    register(StoreSpec(scheme="file", connect=FileBackend))


class FileBackend(Backend):
    """Buckets are the top-level directories of the local filesystem."""

    def __init__(self, profile: Profile, max_workers: int) -> None:
        if profile.options:
            raise ValueError(f"Unknown file profile options: {', '.join(sorted(profile.options))}")

    def store(self, bucket: str) -> FileStore:
        if "/" in bucket:
            raise UnsafeKeyError(f"Refusing bucket {bucket!r}: it is not one directory name")
        check_rel(bucket, bucket)
        return FileStore(Path("/", bucket))


def _meta(key: str, st: os.stat_result) -> ObjectMeta:
    size = 0 if is_marker(key) else st.st_size  # a marker's directory has no content
    return ObjectMeta(key, size, f"{st.st_mtime_ns}-{size}", st.st_mtime)


class FileStore(ObjectStore):
    """Objects as files under ``root`` (the bucket directory)."""

    def __init__(self, root: Path, down: Pace | None = None, up: Pace | None = None) -> None:
        self.root = root
        self._update_lock = threading.Lock()  # with the file lock of `put_if`, for threads of this process
        self._down, self._up = down, up

    def paced(self, down: Pace | None, up: Pace | None) -> FileStore:
        return FileStore(self.root, down, up)

    def _url(self, key: str) -> str:
        return f"file://{self.root}/{key}"

    def _path(self, key: str) -> Path:
        check_rel(key[:-1] if is_marker(key) else key, key)
        if any(is_temp(part) for part in key.split("/")):
            raise UnsafeKeyError(f"Refusing key {key!r}: names starting with {TMP_PREFIX!r} are temporary files")
        return self.root / key

    def _check_bucket(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"No such bucket: {self.root} is not a directory")

    # -- reads ----------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        self._check_bucket()
        head, slash, name = prefix.rpartition("/")
        if slash:
            check_rel(head, prefix)
        yield from self._walk(self.root / head, head + "/" if head else "", name)

    def _walk(self, path: Path, rel: str, name_prefix: str) -> Iterator[ObjectMeta]:
        """The objects under ``path``; an empty directory (not the bucket) is its marker ``rel``."""
        try:
            with os.scandir(path) as it:
                entries = sorted((e for e in it if e.name.startswith(name_prefix)), key=sort_key)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing under this prefix (or it vanished meanwhile)
        if not entries and rel and not name_prefix:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return  # removed meanwhile
            yield _meta(rel, st)  # an empty directory: its marker
            return
        for entry in entries:
            if is_temp(entry.name):
                continue
            key = rel + _checked_name(entry)
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key + "/", "")
                continue
            try:
                st = entry.stat()  # follows a symlink to its file
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield _meta(key, st)

    def head(self, key: str) -> ObjectMeta | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._check_bucket()
            return None
        if is_marker(key):
            return _meta(key, st) if _is_empty_dir(path) else None
        return _meta(key, st) if stat.S_ISREG(st.st_mode) else None

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        path = self._path(key)
        if is_marker(key):
            meta = self.head(key)
            if meta is None:
                raise FileNotFoundError(f"{self._url(key)}: no such object")
            dest.write_bytes(b"")
            return meta
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._check_bucket()
            raise FileNotFoundError(f"{self._url(key)}: no such object") from None
        with src:
            st = os.fstat(src.fileno())  # the version being read, even if replaced meanwhile
            with open(dest, "wb") as out:
                _copy(src, out, self._down)
        return _meta(key, st)

    # -- writes ---------------------------------------------------------------

    def put(self, key: str, src: Path) -> ObjectMeta:
        path = self._path(key)
        self._check_bucket()
        if is_marker(key):
            return self._put_marker(key, path)
        tmp = self._write_temp(key, path, src)
        try:
            st = _advance_mtime(tmp, path)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, IsADirectoryError):
                raise StoreError(f"Cannot store {self._url(key)}: other objects have keys under {key + '/'!r}") from exc
            raise
        return _meta(key, st)

    def _put_marker(self, key: str, path: Path) -> ObjectMeta:
        try:
            prepare_parent(self.root, path)
            path.mkdir(exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StoreError(f"Cannot store {self._url(key)}: an object has the key {key[:-1]!r}") from exc
        return _meta(key, os.stat(path))

    def _write_temp(self, key: str, path: Path, src: Path) -> str:
        """Copy ``src`` into a flushed temporary file beside ``path``; return its name."""
        for attempt in range(3):
            try:
                prepare_parent(self.root, path)
            except (FileExistsError, NotADirectoryError) as exc:
                raise StoreError(f"Cannot store {self._url(key)}: a parent of it is an object") from exc
            tmp = os.path.join(path.parent, f"{TMP_PREFIX}{secrets.token_hex(8)}")
            try:
                out = open(tmp, "xb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue  # a concurrent delete removed the empty directory: create it again
            try:
                with out, open(src, "rb") as f:
                    _copy(f, out, self._up)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return tmp
        raise AssertionError("unreachable")

    conditional_put = True

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """A create links a complete temporary file to the key (``link`` fails if the key exists);
        an update locks the current file (``flock``, which Linux maps to POSIX locks on NFS),
        checks its version and that it is still the key's file, and renames over it.
        Atomic against other `put_if` calls, not against a plain `put` racing an update."""
        path = self._path(key)
        self._check_bucket()
        with tempfile.TemporaryDirectory(prefix="pos3-put-if-") as scratch:
            src = Path(scratch, "data")
            src.write_bytes(data)
            tmp = self._write_temp(key, path, src)
        try:
            st = self._create(key, path, tmp) if version is None else self._update(key, path, tmp, version)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return _meta(key, st)

    def _create(self, key: str, path: Path, tmp: str) -> os.stat_result:
        try:
            os.link(tmp, path)
        except FileExistsError:
            if path.is_dir():
                raise StoreError(f"Cannot store {self._url(key)}: objects have keys under {key + '/'!r}") from None
            raise PreconditionFailed.of(self._url(key), None) from None
        return os.stat(path)

    def _update(self, key: str, path: Path, tmp: str, version: str) -> os.stat_result:
        changed = PreconditionFailed.of(self._url(key), version)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise changed from None
        try:
            with self._update_lock:
                import fcntl  # POSIX only; here rather than at import, which other systems also do

                fcntl.flock(fd, fcntl.LOCK_EX)
                st = os.fstat(fd)
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    raise changed from None
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or _meta(key, st).version != version:
                    raise changed
                new = _advance_mtime(tmp, path)
                os.replace(tmp, path)
                return new
        finally:
            os.close(fd)

    def delete(self, keys: Iterable[str]) -> None:
        self._check_bucket()
        for key in keys:
            path = self._path(key)
            try:
                if is_marker(key):
                    path.rmdir()
                else:
                    os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # no object at this key
            except OSError as exc:
                if is_marker(key) and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue  # a directory that holds objects is no marker
                raise
            self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove ``directory`` and its parents while they are empty, stopping at the bucket."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _is_empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return False


def _copy(src: BinaryIO, out: BinaryIO, pace: Pace | None) -> None:
    """Copy ``src`` to ``out`` in chunks, charging ``pace`` (if any) for each before writing it."""
    if pace is None:
        shutil.copyfileobj(src, out, CHUNK)
        return
    while data := src.read(CHUNK):
        pace(len(data))
        out.write(data)


def _checked_name(entry: os.DirEntry[str]) -> str:
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"File name is not valid UTF-8 and cannot be a key: {entry.path!r}") from None
    return entry.name


def _advance_mtime(tmp: str, path: Path) -> os.stat_result:
    """Give ``tmp`` an mtime later than the file it will replace (so the version changes)."""
    st = os.stat(tmp)
    try:
        old = os.stat(path).st_mtime_ns
    except OSError:
        return st
    for step in _MTIME_STEPS_NS:
        if st.st_mtime_ns > old:
            break
        os.utime(tmp, ns=(st.st_atime_ns, old + step))
        st = os.stat(tmp)
    return st
