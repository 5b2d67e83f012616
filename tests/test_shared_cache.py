"""A cache on a filesystem shared between hosts (pos3.cachelock): what one machine can test.

The lock is a POSIX record lock (the kind NFS and cluster filesystems carry between hosts): checked
here with separate processes. Mounts whose locks stay on one host are recognised from the mount
table and refused: checked on synthetic mount tables, and end to end through `pos3.download`.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pos3
from pos3 import cachelock
from pos3.cachelock import SINGLE_HOST_ENV, RootLock, SharedCacheError, check_filesystem, parse_mountinfo

MOUNTS = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /home rw,relatime - nfs4 srv:/home rw,vers=4.2,hard,proto=tcp,local_lock=none,addr=10.0.0.1
41 40 8:2 / /home/ann/fast rw,relatime - xfs /dev/sdb1 rw
42 27 0:51 / /old rw,relatime - nfs srv:/old rw,vers=3,nolock,addr=10.0.0.1
43 27 0:52 / /posix rw,relatime - nfs4 srv:/p rw,vers=4.1,local_lock=posix,addr=10.0.0.1
44 27 0:53 / /lustre rw,relatime - lustre 10.0.0.2@tcp:/fs rw,flock,lazystatfs
45 27 0:54 / /lustre-local rw,relatime - lustre 10.0.0.2@tcp:/fs rw,localflock
46 27 0:55 / /smb rw,relatime - cifs //srv/share rw,vers=3.0,nobrl
47 27 0:56 / /remote rw,relatime - fuse.sshfs ann@host:/data rw,user_id=1000
48 27 0:57 / /with\\040space rw,relatime - nfs4 srv:/s rw,local_lock=all
"""


@pytest.mark.parametrize(
    "path, refused",
    [
        ("/home/ann/.cache/positronic", None),  # NFSv4 with server-side locks: allowed
        ("/home/ann/fast/cache", None),  # a local disk mounted inside the NFS home
        ("/var/cache", None),
        ("/old/cache", "'nolock'"),
        ("/posix/c", "local_lock=posix/all"),
        ("/lustre/c", None),
        ("/lustre-local/c", "'localflock'"),
        ("/smb/c", "'nobrl'"),
        ("/remote/c", "fuse.sshfs has no locks shared between hosts"),
        ("/with space/c", "local_lock=posix/all"),
    ],
)
def test_mounts_whose_locks_stay_on_one_host_are_refused(
    path: str, refused: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SINGLE_HOST_ENV, raising=False)
    if refused is None:
        check_filesystem(Path(path), MOUNTS)
        return
    with pytest.raises(SharedCacheError, match=SINGLE_HOST_ENV) as err:
        check_filesystem(Path(path), MOUNTS)
    assert refused in str(err.value) and path in str(err.value)
    monkeypatch.setenv(SINGLE_HOST_ENV, "1")  # "only this host uses the cache"
    check_filesystem(Path(path), MOUNTS)


def test_mountinfo_parsing() -> None:
    mounts = {m.point: m for m in parse_mountinfo(MOUNTS + "garbage line\n")}
    assert mounts["/with space"].fstype == "nfs4"
    assert "nolock" in mounts["/old"].options and "rw" in mounts["/old"].options
    assert len(mounts) == 11  # the garbage line is skipped


def test_download_refuses_a_cache_on_a_mount_without_shared_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SINGLE_HOST_ENV, raising=False)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "f.txt").write_bytes(b"f")
    cache = tmp_path / "cache"
    table = tmp_path / "mountinfo"
    real = os.path.realpath(cache.parent)
    table.write_text(f"27 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 27 0:50 / {real} rw - nfs srv:/x rw,nolock\n")
    monkeypatch.setattr(cachelock, "MOUNTINFO", table)
    with pytest.raises(SharedCacheError, match="nolock"), pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"file://{remote}/")
    assert not list(cache.rglob("f.txt"))  # refused before anything was written


HOLD = """
import sys
from pathlib import Path
from pos3.cachelock import RootLock
with RootLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_root_lock_is_a_posix_lock_held_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "root.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        fd = os.open(path, os.O_RDWR)
        try:
            # A POSIX record lock of another process refuses ours (an flock would not: on Linux the
            # two kinds do not see each other locally, and only POSIX locks reach an NFS server).
            with pytest.raises(BlockingIOError):
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert child.stdin is not None
            child.stdin.close()
            assert child.wait(60) == 0
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder left
        finally:
            os.close(fd)
        with RootLock(path):  # and ours can be taken again after it
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
