"""Large downloads: parallel ranges written at their offsets into one file, hashed as they land.

Each range streams into one shared descriptor with ``os.pwrite`` (no per-range ``open`` and
``seek``), into a file already sized with ``ftruncate``. `Landed` records which spans are
written; hashers follow it, so the checksum of the content (a plain MD5, or the MD5 of each
part of a multipart upload, parts hashed in parallel) is computed while the download runs
instead of by reading the whole file again afterwards. Any failure stops the hashers and is
raised; the caller owns the file (a temporary one, renamed only once verified).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ..integrity import TransferInterrupted
from ..local import pwrite_all

MiB = 1024 * 1024
#: Bytes read from a stream (and charged to a pace) at a time; bytes hashed at a time.
STREAM_CHUNK = MiB
HASH_CHUNK = 4 * MiB
#: A body to stream: ``read(n)`` returns up to ``n`` bytes (b"" at its end) and ``close()``.
Body = Any


class DownloadFailed(Exception):
    """Raised to a hasher when the download it follows failed (the download's own error is raised)."""


class Landed:
    """The spans of a file written so far; `wait` blocks until a span is written or the download failed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._starts: list[int] = []  # disjoint, merged spans, sorted by start
        self._ends: list[int] = []
        self._failed = False

    def add(self, start: int, end: int) -> None:
        """Record ``[start, end)`` as written."""
        with self._cond:
            i = bisect.bisect_left(self._ends, start)  # first span that ends at or after ``start``
            j = bisect.bisect_right(self._starts, end)  # spans before j start at or before ``end``
            if i < j:
                start, end = min(start, self._starts[i]), max(end, self._ends[j - 1])
            self._starts[i:j], self._ends[i:j] = [start], [end]
            self._cond.notify_all()

    def covered(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` is written."""
        with self._cond:
            return self._covered(start, end)

    def _covered(self, start: int, end: int) -> bool:
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    @property
    def failed(self) -> bool:
        """True once the download failed: writers stop at their next chunk."""
        return self._failed

    def fail(self) -> None:
        """Release every waiter: the download will not complete."""
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def wait(self, start: int, end: int) -> None:
        """Return once ``[start, end)`` is written; raise `DownloadFailed` if the download failed first."""
        with self._cond:
            self._cond.wait_for(lambda: self._failed or self._covered(start, end))
            if self._failed:
                raise DownloadFailed


def write_stream(body: Body, fd: int, offset: int, landed: Landed, pace: Callable[[int], None] | None) -> int:
    """Copy ``body`` to ``fd`` from ``offset`` on, recording each chunk in ``landed`` and charging
    ``pace`` for it before reading the next; the body is closed. Returns the bytes written; raises
    `DownloadFailed` once another part of the download failed."""
    pos = offset
    try:
        while data := body.read(STREAM_CHUNK):
            if landed.failed:  # another range failed: stop early, the download is lost anyway
                raise DownloadFailed
            if pace is not None:
                pace(len(data))
            pwrite_all(fd, data, pos)
            landed.add(pos, pos + len(data))
            pos += len(data)
    finally:
        body.close()
    return pos - offset


def md5_following(fd: int, start: int, end: int, landed: Landed) -> bytes:
    """The MD5 of ``[start, end)`` of ``fd``, read from the page cache as soon as each chunk landed."""
    h = hashlib.md5(usedforsecurity=False)
    pos = start
    while pos < end:
        stop = min(pos + HASH_CHUNK, end)
        landed.wait(pos, stop)
        data = os.pread(fd, stop - pos, pos)
        if not data:
            raise OSError(f"short read at {pos} while hashing a download")
        h.update(data)
        pos += len(data)
    return h.digest()


def download(
    fd: int,
    total: int,
    first: tuple[Body, int],
    fetch: Callable[[int, int], Body],
    range_size: int,
    threads: int,
    segments: Callable[[], list[tuple[int, int]]],
    pace: Callable[[int], None] | None = None,
) -> list[bytes]:
    """Fill ``fd`` (already ``total`` bytes long) and return the MD5 of each span ``segments()`` names.

    ``first`` is an open body for ``[0, its length)``; ``fetch(start, end)`` opens the body of the
    inclusive range ``start..end``, fetched ``range_size`` at a time on ``threads`` threads. ``segments``
    is called once the transfers have started (it may ask the server something); hashers follow the
    bytes as they land. The first error (a fetch, a write or a hash) is raised after every thread
    stopped; spans not yet started are not fetched.
    """
    body, length = first
    landed = Landed()
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pos3-range")
    hashers = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)), thread_name_prefix="pos3-hash")
    jobs: list[Future[Any]] = []
    try:

        def rest(start: int) -> None:
            if landed.failed:
                raise DownloadFailed
            write_stream(fetch(start, min(start + range_size, total) - 1), fd, start, landed, pace)

        def stop_all(job: Future[Any]) -> None:  # the first failed range stops the others and the hashers
            if not job.cancelled() and job.exception() is not None:
                landed.fail()

        jobs.append(pool.submit(write_stream, body, fd, 0, landed, pace))
        jobs += [pool.submit(rest, start) for start in range(length, total, range_size)]
        for job in jobs:
            job.add_done_callback(stop_all)
        digests = [hashers.submit(md5_following, fd, s, e, landed) for s, e in segments()]
        wait(jobs)
        errors = [e for e in (None if job.cancelled() else job.exception() for job in jobs) if e is not None]
        if errors:  # the cause, not a range stopped because of it
            raise next((e for e in errors if not isinstance(e, DownloadFailed)), errors[0])
        if not landed.covered(0, total):  # a body that ended early without an error
            raise TransferInterrupted(f"a ranged download ended with bytes missing (expected {total})")
        return [d.result() for d in digests]
    except BaseException:
        landed.fail()
        for job in jobs:
            job.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        hashers.shutdown(wait=True, cancel_futures=True)
