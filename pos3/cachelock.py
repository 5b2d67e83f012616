"""The cross-process lock of one local root, sound on filesystems shared between hosts.

`RootLock` takes a POSIX record lock (``fcntl.lockf``) on a lock file: the lock
NFS implements on the server (NLM for NFSv3, built into NFSv4), and that
Lustre (mounted with ``flock``), GPFS, CephFS and SMB make cluster-wide. So
processes on different hosts sharing one ``cache_root`` take turns on a root
just like processes on one host.

Some mounts keep locks local to each host, which would let two hosts write one
root at once. `check_filesystem` reads the mount table and refuses those with a
clear message (`SharedCacheError`): NFS with ``nolock`` or
``local_lock=posix|all``, Lustre with ``localflock`` or ``noflock``, SMB with
``nobrl``, and filesystems without cluster-wide locks (sshfs, 9p). Setting
``POS3_CACHE_SINGLE_HOST=1`` declares that one host uses the cache and lifts
the refusal. Where ``fcntl`` does not exist (Windows), a `filelock.FileLock`
is used instead.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

MOUNTINFO = Path("/proc/self/mountinfo")
SINGLE_HOST_ENV = "POS3_CACHE_SINGLE_HOST"
#: Filesystem types whose locks never reach other hosts.
_LOCAL_LOCKS_ONLY = {"fuse.sshfs", "9p", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.goofys"}


class SharedCacheError(OSError):
    """The cache is on a mount where locks do not work across hosts."""


@dataclass(frozen=True)
class Mount:
    """One line of the mount table: where, which filesystem, with which options."""

    point: str
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` text (mount and superblock options merged)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields or len(fields) < 6:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        opts = fields[5].split(",") + (fields[sep + 3].split(",") if len(fields) > sep + 3 else [])
        mounts.append(Mount(point, fields[sep + 1], frozenset(opts)))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path`` (the last-mounted of the longest matching mount points)."""
    best: Mount | None = None
    target = str(path)
    for m in mounts:
        inside = target == m.point or target.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def local_locks_only(mount: Mount) -> str | None:
    """Why locks on ``mount`` do not reach other hosts, or ``None`` if they do (or may)."""
    opts, fs = mount.options, mount.fstype
    if fs.startswith("nfs"):
        if "nolock" in opts:
            return "it is mounted with 'nolock'"
        if "local_lock=posix" in opts or "local_lock=all" in opts:
            return "it is mounted with local_lock=posix/all"
    if fs == "lustre" and ("localflock" in opts or "noflock" in opts):
        return "it is mounted with 'localflock' or 'noflock' (use 'flock')"
    if fs in ("cifs", "smb3") and "nobrl" in opts:
        return "it is mounted with 'nobrl'"
    if fs in _LOCAL_LOCKS_ONLY:
        return f"{fs} has no locks shared between hosts"
    return None


def check_filesystem(path: Path, mountinfo: str | None = None) -> None:
    """Raise `SharedCacheError` if ``path`` is on a mount whose locks stay on one host
    (unless ``POS3_CACHE_SINGLE_HOST=1``). ``mountinfo`` replaces the system's table (tests)."""
    if os.environ.get(SINGLE_HOST_ENV) == "1":
        return
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return  # no mount table (not Linux): nothing known to refuse
    mount = mount_of(Path(os.path.realpath(path)), parse_mountinfo(mountinfo))
    why = local_locks_only(mount) if mount is not None else None
    if why is not None:
        assert mount is not None
        raise SharedCacheError(
            f"The pos3 cache {path} is on {mount.fstype} at {mount.point}, where locks do not work across "
            f"hosts: {why}. Processes on different hosts could write one root at once. Put cache_root on a "
            f"local disk or a mount with cluster-wide locks, or set {SINGLE_HOST_ENV}=1 if only this host "
            f"uses it."
        )


class RootLock:
    """An exclusive lock on ``path`` held by this process, waited for while another holds it.

    A POSIX lock belongs to the process: threads must take turns on their own
    (`pos3.sync.Root` holds a thread lock around it).
    """

    def __init__(self, path: Path, mode: int = 0o644) -> None:
        self.path = path
        self.mode = mode  # of the lock file, if it is created
        self._fd: int | None = None
        self._fallback: Any = None  # a filelock.FileLock where fcntl does not exist

    def __enter__(self) -> RootLock:
        check_filesystem(self.path.parent)
        try:
            import fcntl
        except ImportError:
            from filelock import FileLock

            self._fallback = FileLock(self.path, mode=self.mode)
            self._fallback.acquire()
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise SharedCacheError(
                    f"Cannot lock {self.path} ({os.strerror(exc.errno or 0)}): the filesystem of the pos3 cache "
                    f"offers no locks; put cache_root on a local disk or a mount with locking"
                ) from exc
            raise
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
