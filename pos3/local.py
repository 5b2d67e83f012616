"""The local side: sorted directory walks, safe key-to-path mapping, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import unicodedata
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .patterns import Excluder

log = logging.getLogger("pos3")

#: Name prefix of in-flight download files; never listed, uploaded or reported.
TMP_PREFIX = ".pos3-tmp-"
#: Bytes kept free under PATH_MAX for a temporary name beside a file.
_TEMP_ROOM = 128

T = TypeVar("T")


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

    Leftover temporary download files are skipped (and removed when
    ``clean_temp``); a directory holding nothing else is empty. Symlinks are
    never followed out of the root: a symlink to a regular file inside the root
    is listed (with its target's size and mtime); symlinks to directories, links
    leading outside the root, dangling links and entries that are not regular
    files (fifos, sockets, devices) are skipped, links with a warning. A root
    that is a file yields one entry with ``rel == ''``; a missing root yields
    nothing. An unreadable directory raises `PermissionError` (never treated as
    empty).
    """
    try:
        st = root.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield LocalEntry("", st.st_size, st.st_mtime_ns)
        return
    yield from _walk_dir(str(root), "", exclude, clean_temp, os.path.realpath(root))


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _walk_dir(path: str, rel: str, exclude: Excluder | None, clean_temp: bool, real_root: str) -> Iterator[LocalEntry]:
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
                yield from _walk_dir(entry.path, child + "/", exclude, clean_temp, real_root)
            continue
        if exclude and exclude.file(child):
            continue
        if entry.is_symlink() and not _inside(os.path.realpath(entry.path), real_root):
            log.warning("skipping %s: a symlink leading outside %s", entry.path, real_root)
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


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less, e.g. at a file size limit;
    the next call then raises, as it does on a full disk)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def md5_digest(path: Path) -> bytes:
    """The raw MD5 digest of a file's content, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


@dataclass(frozen=True, slots=True)
class NameRules:
    """What the filesystem under one local root accepts and treats as the same name.

    ``rel_max`` is the most bytes a relative path may take under the root
    (PATH_MAX minus the root and room for a temporary name).
    """

    name_max: int = 255
    rel_max: int = 4096 - _TEMP_ROOM
    folds_case: bool = False
    folds_unicode: bool = False

    @property
    def folds(self) -> bool:
        return self.folds_case or self.folds_unicode

    def fold(self, name: str) -> str:
        """The form under which this filesystem compares ``name``."""
        if self.folds_unicode:
            name = unicodedata.normalize("NFD", name)
        return name.casefold() if self.folds_case else name


def probe_limits(directory: Path) -> NameRules:
    """The name and path limits for files under ``directory`` (which need not exist yet:
    its nearest existing ancestor is asked). Writes nothing; assumes no folding."""
    existing = next((p for p in (directory, *directory.parents) if p.is_dir()), Path("/"))
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    return NameRules(name_max, path_max - len(os.fsencode(directory)) - 1 - _TEMP_ROOM)


def probe(directory: Path) -> NameRules:
    """Probe the filesystem of an existing ``directory``: its limits (`probe_limits`), and
    whether it folds case or Unicode normalisation (by creating one temporary file there)."""
    limits = probe_limits(directory)
    base = f"{TMP_PREFIX}probe-{secrets.token_hex(4)}-"
    probe_path = directory / (base + "A\u00e9")  # "Aé" with a precomposed é (NFC)
    fd = os.open(probe_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    try:
        folds_case = os.path.lexists(directory / (base + "a\u00e9"))
        folds_unicode = os.path.lexists(directory / (base + "Ae\u0301"))  # é decomposed (NFD)
    finally:
        probe_path.unlink(missing_ok=True)
    return NameRules(limits.name_max, limits.rel_max, folds_case, folds_unicode)


def check_rel(rel: str, key: str, rules: NameRules | None = None) -> str:
    """Return ``rel`` if it maps strictly inside a local root, else raise `UnsafeKeyError` naming ``key``.

    Refused: absolute paths, empty, ``.`` or ``..`` segments, NUL bytes,
    backslashes, a trailing ``/`` (a directory marker is not a file), a
    segment longer than ``rules.name_max`` bytes (UTF-8) and a path longer
    than ``rules.rel_max`` bytes.
    """
    rules = rules or _DEFAULT_RULES
    if (
        not rel
        or rel[0] == "/"
        or rel[-1] == "/"
        or "//" in rel
        or "\0" in rel
        or ("/." in f"/{rel}" and ("/./" in f"/{rel}/" or "/../" in f"/{rel}/"))
    ):
        raise UnsafeKeyError(f"Refusing remote key {key!r}: it does not map to a path inside the local root")
    if "\\" in rel or os.sep in rel and os.sep != "/":
        raise UnsafeKeyError(f"Refusing remote key {key!r}: it contains a backslash (a path separator on Windows)")
    if len(rel) * 4 > min(rules.name_max, rules.rel_max):  # else short enough whatever its UTF-8 length
        _check_length(rel, key, rules)
    return rel


def _check_length(rel: str, key: str, rules: NameRules) -> None:
    encoded = rel.encode("utf-8", "surrogateescape")
    too_long = len(encoded) > rules.rel_max or (
        len(encoded) > rules.name_max
        and any(len(p.encode("utf-8", "surrogateescape")) > rules.name_max for p in rel.split("/"))
    )
    if too_long:
        raise UnsafeKeyError(
            f"Refusing remote key {key!r}: its local path is too long for this filesystem "
            f"(a name over {rules.name_max} bytes or a path over {rules.rel_max} bytes under the root)"
        )


_DEFAULT_RULES = NameRules()


def without_file_dir_clashes(items: Iterable[T], rel: Callable[[T], str], key: Callable[[T], str]) -> Iterator[T]:
    """Pass through a stream sorted by ``rel``, refusing a path that is both a file and a directory.

    Raises `UnsafeKeyError` naming both keys when ``a`` and ``a/b`` both occur.
    An item is held back until no later path can sit under it, so the file
    half of a clash is never yielded. Memory stays small: a file is held only
    while the stream is between ``a`` and ``a0`` (``'0'`` follows ``'/'``).
    """
    held: deque[tuple[str, str, T]] = deque()  # (rel, the first rel that cannot sit under it, item)
    for item in items:
        r = rel(item)
        while held and r >= held[0][1]:
            yield held.popleft()[2]
        for f, _, h in held:
            if r.startswith(f) and r[len(f) : len(f) + 1] == "/":
                both = f"{key(h)!r} and {key(item)!r}"
                raise UnsafeKeyError(f"Refusing remote keys {both}: {f!r} would be both a file and a directory locally")
        held.append((r, r + "0", item))
    for *_, h in held:
        yield h


def fold_clashes(paths: Iterable[tuple[str, str]], rules: NameRules) -> tuple[str, str] | None:
    """The first two distinct paths that ``rules`` folds to one name, or None.

    ``paths`` holds ``(rel, label)`` pairs; every directory above a path is
    compared too (``A/x`` and ``a/y`` share a folded directory). Returns the
    two labels, each with the clashing part (``label (part)`` when they differ).
    """
    seen: dict[str, tuple[str, str]] = {}
    for rel, label in paths:
        parts = rel.split("/")
        for n in range(1, len(parts) + 1):
            part = "/".join(parts[:n])
            first = seen.setdefault(rules.fold(part), (part, label))
            if first[0] != part:
                return _name(first[1], first[0]), _name(label, part)
    return None


def _name(label: str, part: str) -> str:
    return label if label.endswith(part) else f"{label} ({part})"


def check_shape(path: Path, is_file: bool, what: str) -> None:
    """Refuse a local path of the wrong kind for ``what``: a file where a
    directory is needed (or any ancestor is a file), or a directory where a file is."""
    if is_file:
        if path.is_dir():
            raise IsADirectoryError(f"{what}: {path} is a directory, but the remote is one object")
        return
    for p in (path, *path.parents):
        if os.path.lexists(p):
            if not p.is_dir():
                raise NotADirectoryError(f"{what}: {p} is a file, but the remote is a prefix (a directory)")
            return


def target(root: Path, rel: str) -> Path:
    """The local path of ``rel`` under ``root`` ('' is the root itself)."""
    return root / rel if rel else root


def temp_beside(path: Path) -> Path:
    """A fresh temporary name in the same directory as ``path`` (same filesystem, so rename is atomic)."""
    stem = path.name.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")  # fits NAME_MAX
    return path.with_name(f"{TMP_PREFIX}{stem}.{secrets.token_hex(4)}")


def umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode pos3 creates files with: 0o666 under the umask, never world-writable."""
    return 0o666 & ~umask() & ~stat.S_IWOTH


def make_dirs(path: Path) -> None:
    """``mkdir -p`` under the umask; a directory it creates is never left world-writable
    (one extra ``stat`` per created directory; existing directories are left alone)."""
    missing: list[Path] = []
    p = path
    while not os.path.isdir(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        not_world_writable(d)


def not_world_writable(path: Path | str, mode: int | None = None) -> None:
    """Clear the world-write bit of a file or directory pos3 created, if the umask let it through."""
    mode = os.stat(path).st_mode if mode is None else mode
    if mode & stat.S_IWOTH:
        os.chmod(path, stat.S_IMODE(mode) & ~stat.S_IWOTH)


def prepare_parent(root: Path, path: Path) -> None:
    """Create the parent directories of ``path``, refusing to write through a symlinked directory
    below ``root`` (the root itself may be a symlink)."""
    parent = path.parent
    make_dirs(parent)
    base = root if root.is_dir() else root.parent
    real_parent = os.path.realpath(parent)
    expected = os.path.join(os.path.realpath(base), os.path.relpath(parent, base))
    if real_parent != os.path.normpath(expected):
        raise UnsafeKeyError(f"Refusing to write {path}: a directory on its path below {base} is a symlink")


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
