"""The local side: sorted directory walks, safe key-to-path mapping, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

from .patterns import Excluder

#: Name prefix of in-flight download files; never listed, uploaded or reported.
TMP_PREFIX = ".pos3-tmp-"


class UnsafeKeyError(ValueError):
    """A remote key that cannot be mapped inside its local root."""


@dataclass(frozen=True, slots=True)
class LocalEntry:
    """A local file: its path relative to the root ('' when the root is the file),
    or an empty directory: its path with a trailing '/' (see `is_marker`) and size 0."""

    rel: str
    size: int
    mtime_ns: int


def is_temp(name: str) -> bool:
    return name.startswith(TMP_PREFIX)


def is_marker(rel: str) -> bool:
    """True if ``rel`` (or a key) names a directory marker: it ends in '/'.

    Locally a marker is an empty directory; remotely, a key ending in '/'
    (whatever its size). It sorts just before anything inside it ("a/" < "a/x").
    """
    return rel.endswith("/")


def sort_key(entry: os.DirEntry[str]) -> str:
    # A directory sorts as "name/" so that the walk yields full relative paths
    # in plain string order, the order object stores list keys in.
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


def walk(root: Path, exclude: Excluder | None = None, *, clean_temp: bool = False) -> Iterator[LocalEntry]:
    """Yield the files under ``root`` sorted by relative path ('/'-separated),
    and each empty directory below the root as a marker (``"a/b/"``, size 0).

    A directory is empty when it holds nothing but leftover temporary download
    files, which are skipped (and removed when ``clean_temp``); symlinks to files
    are followed, symlinks to directories are not. A root that is a file yields
    one entry with ``rel == ''``; a missing root yields nothing.
    """
    try:
        st = root.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield LocalEntry("", st.st_size, st.st_mtime_ns)
        return
    yield from _walk_dir(str(root), "", exclude, clean_temp)


def _walk_dir(path: str, rel: str, exclude: Excluder | None, clean_temp: bool) -> Iterator[LocalEntry]:
    with os.scandir(path) as it:
        entries = sorted(it, key=sort_key)
    if rel and all(is_temp(e.name) for e in entries) and _clean(entries, clean_temp):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return  # removed meanwhile
        yield LocalEntry(rel, 0, st.st_mtime_ns)  # an empty directory: its marker
        return
    for entry in entries:
        child = rel + entry.name
        if is_temp(entry.name):
            _clean([entry], clean_temp)
            continue
        _check_name(entry.path, entry.name)
        if entry.is_dir(follow_symlinks=False):
            if not (exclude and exclude.directory(child)):
                yield from _walk_dir(entry.path, child + "/", exclude, clean_temp)
            continue
        if exclude and exclude.file(child):
            continue
        try:
            st = entry.stat()  # follows a symlink to its file
        except FileNotFoundError:
            continue  # dangling symlink or removed meanwhile
        if not stat.S_ISREG(st.st_mode):
            continue
        yield LocalEntry(child, st.st_size, st.st_mtime_ns)


def _clean(temps: list[os.DirEntry[str]], clean_temp: bool) -> bool:
    """Remove leftover temporary files if ``clean_temp``; True if none is left."""
    if not clean_temp:
        return not temps
    left = False
    for entry in temps:
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        except OSError:  # a directory of that name, or no permission: it stays
            left = True
    return not left


def _check_name(path: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"Local file name is not valid UTF-8 and cannot become a key: {path!r}") from None


def md5_digest(path: Path) -> bytes:
    """The raw MD5 digest of a file's content, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def check_rel(rel: str, key: str) -> str:
    """Return ``rel`` if it maps strictly inside a local root, else raise `UnsafeKeyError` naming ``key``.

    Refused: absolute paths, empty, ``.`` or ``..`` segments, NUL bytes, and
    a trailing ``/`` (a directory marker is not a file).
    """
    parts = rel.split("/")
    if "\0" in rel or any(p in ("", ".", "..") for p in parts) or rel.startswith("/"):
        raise UnsafeKeyError(f"Refusing remote key {key!r}: it does not map to a path inside the local root")
    if os.sep != "/" and os.sep in rel:
        raise UnsafeKeyError(f"Refusing remote key {key!r}: it contains {os.sep!r}")
    return rel


def target(root: Path, rel: str) -> Path:
    """The local path of ``rel`` under ``root`` ('' is the root itself)."""
    return root / rel if rel else root


def temp_beside(path: Path) -> Path:
    """A fresh temporary name in the same directory as ``path`` (same filesystem, so rename is atomic)."""
    stem = path.name.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")  # fits NAME_MAX
    return path.with_name(f"{TMP_PREFIX}{stem}.{secrets.token_hex(4)}")


def prepare_parent(root: Path, path: Path) -> None:
    """Create the parent directories of ``path``, refusing to pass through a symlink out of ``root``."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    real_root = os.path.realpath(root if root.is_dir() else root.parent)
    real_parent = os.path.realpath(parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        raise UnsafeKeyError(f"Refusing to write {path}: its directory resolves outside {root}")


def remove_file(root: Path, path: Path, keep: Container[Path] = ()) -> None:
    """Delete ``path`` and then every directory it leaves empty, up to (not including)
    ``root`` or a directory in ``keep``."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _prune(root, path.parent, keep)


def remove_dir(root: Path, path: Path, keep: Container[Path] = ()) -> None:
    """Remove the directory ``path`` only if it is empty (never one that holds anything,
    nor a symlink), then the directories that leaves empty, like `remove_file`."""
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return  # not empty, or not a directory: kept
    _prune(root, path.parent, keep)


def _prune(root: Path, parent: Path, keep: Container[Path]) -> None:
    while parent != root and root in parent.parents and parent not in keep:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
