"""Large downloads: parallel ranges written at their offsets into one file, hashed as they land.

Each range streams into one shared descriptor with ``os.pwrite`` (no per-range ``open`` and
``seek``), into a file already sized, its blocks allocated (`open_sized`). `Landed` records which
spans are written; hashers follow it (`Hashers`), so the checksum of the content (a plain MD5,
a CRC32C, or the MD5 of each part or range, hashed in parallel) is computed while the download
runs instead of by reading the whole file again afterwards. Any failure stops the other ranges
and the hashers and is raised; the caller owns the file (a temporary one, renamed only once
verified). Two drivers share these parts: `download` fetches ranges on threads (boto3 bodies),
`download_async` as coroutines on an event loop (the native GCS and Azure engines).
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import functools
import hashlib
import os
import sys
import threading
from collections.abc import AsyncIterable, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ..integrity import TransferInterrupted
from ..local import pwrite_all

MiB = 1024 * 1024
#: Bytes read from a stream (and charged to a pace) at a time; bytes written at once from an
#: asynchronous body (one range's memory); bytes hashed at a time.
STREAM_CHUNK = MiB
BATCH = 256 * 1024
HASH_CHUNK = MiB
#: A body to stream: ``read(n)`` returns up to ``n`` bytes (b"" at its end) and ``close()``.
Body = Any
#: A new hash object (``update``, ``digest``): `hashlib.md5` by default.
NewHash = Callable[[], Any]


def md5() -> Any:
    """A new MD5 (not for security)."""
    return hashlib.md5(usedforsecurity=False)


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


def open_sized(dest: str | os.PathLike[str], total: int) -> int:
    """A read-write descriptor of ``dest`` (created if missing, emptied if not) sized to exactly ``total``
    bytes, its blocks allocated up front where the filesystem can (`preallocate`)."""
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        preallocate(fd, total)  # sized once; every byte is then written by exactly one range
    except BaseException:
        os.close(fd)
        raise
    return fd


def preallocate(fd: int, size: int) -> None:
    """Give ``fd`` ``size`` bytes with its blocks allocated (Linux ``fallocate(2)``), else a sparse
    ``ftruncate``. Parallel ranges written into a sparse file took 2-7 s for 512 MiB on ext4 here,
    against 0.4-0.6 s into allocated blocks; and a full disk fails here, before any transfer.
    Never glibc's ``posix_fallocate``, which emulates the call by writing every block where the
    filesystem lacks it (NFSv3, many FUSE filesystems)."""
    call = _fallocate()
    if call is not None and size > 0 and call(fd, 0, 0, size) == 0:
        return
    err = ctypes.get_errno() if call is not None and size > 0 else 0
    if err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        raise OSError(err, os.strerror(err))
    os.ftruncate(fd, size)  # not supported here (or nothing to allocate): a sparse file


@functools.cache
def _fallocate() -> Any:
    """libc's ``fallocate`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    call.restype = ctypes.c_int
    return call


def spans(first: int, total: int, size: int) -> list[tuple[int, int]]:
    """The ranges ``[start, end)`` after a first one of ``first`` bytes, ``size`` bytes each."""
    return [(start, min(start + size, total)) for start in range(first, total, size)]


def write_at(fd: int, data: bytes | list[bytes], pos: int, landed: Landed) -> int:
    """``pwrite`` all of ``data`` (one buffer, or several in a row with one ``pwritev``) at ``pos`` and
    record it in ``landed``; returns the position after it. Raises `DownloadFailed` (writing nothing)
    once another part of the download failed."""
    if landed.failed:  # another range failed: stop early, the download is lost anyway
        raise DownloadFailed
    if isinstance(data, list):
        size = sum(len(b) for b in data)
        n = os.pwritev(fd, data, pos)
        view = memoryview(b"".join(data))[n:] if n < size else memoryview(b"")  # a short write: rare
        at = pos + n
    else:
        view, at = memoryview(data), pos
    pwrite_all(fd, view, at)
    at += len(view)
    landed.add(pos, at)
    return at


def write_stream(body: Body, fd: int, offset: int, landed: Landed, pace: Callable[[int], None] | None) -> int:
    """Copy ``body`` to ``fd`` from ``offset`` on, recording each chunk in ``landed`` and charging
    ``pace`` for it before reading the next; the body is closed. Returns the bytes written; raises
    `DownloadFailed` once another part of the download failed."""
    pos = offset
    try:
        while data := body.read(STREAM_CHUNK):
            if landed.failed:
                raise DownloadFailed
            if pace is not None:
                pace(len(data))
            pos = write_at(fd, data, pos, landed)
    finally:
        body.close()
    return pos - offset


async def write_body(chunks: AsyncIterable[bytes], fd: int, offset: int, landed: Landed) -> int:
    """`write_stream` for an asynchronous body: its chunks are gathered up to `BATCH` bytes and
    written with one ``pwritev`` on a worker thread, so the event loop keeps reading the other ranges
    meanwhile and no chunk is copied. Returns the bytes written."""
    import asyncio  # here, not at the top: only the event loop's stores need it

    pos, batch, size = offset, [], 0
    async for data in chunks:
        batch.append(data)
        size += len(data)
        if size >= BATCH:
            pos = await asyncio.to_thread(write_at, fd, batch, pos, landed)
            batch, size = [], 0
    if batch:
        pos = await asyncio.to_thread(write_at, fd, batch, pos, landed)
    return pos - offset


def md5_following(fd: int, start: int, end: int, landed: Landed, new_hash: NewHash = md5) -> bytes:
    """The digest (MD5 unless ``new_hash`` says) of ``[start, end)`` of ``fd``, read from the page
    cache as soon as each chunk landed."""
    h = new_hash()
    pos = start
    while pos < end:
        stop = min(pos + HASH_CHUNK, end)
        landed.wait(pos, stop)
        data = os.pread(fd, stop - pos, pos)
        if not data:
            raise OSError(f"short read at {pos} while hashing a download")
        h.update(data)
        pos += len(data)
    return bytes(h.digest())


class Hashers:
    """Threads hashing ``segments`` of ``fd`` in order, each as soon as its bytes landed."""

    def __init__(self, fd: int, landed: Landed, new_hash: NewHash = md5) -> None:
        self._fd, self._landed, self._new_hash = fd, landed, new_hash
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)), thread_name_prefix="pos3-hash")
        self.digests: list[Future[bytes]] = []

    def follow(self, segments: list[tuple[int, int]]) -> None:
        """Start hashing each span of ``segments``."""
        fd, landed, new_hash = self._fd, self._landed, self._new_hash
        self.digests += [self._pool.submit(md5_following, fd, s, e, landed, new_hash) for s, e in segments]

    def close(self) -> None:
        """Stop (a failed download's hashers raise `DownloadFailed` at once) and wait for the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _cause(errors: list[BaseException]) -> BaseException:
    """The error that failed a download, not a range stopped because of it."""
    return next((e for e in errors if not isinstance(e, DownloadFailed)), errors[0])


def _check_complete(landed: Landed, total: int) -> None:
    if not landed.covered(0, total):  # a body that ended early without an error
        raise TransferInterrupted(f"a ranged download ended with bytes missing (expected {total})")


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
    hashers = Hashers(fd, landed)
    jobs: list[Future[Any]] = []
    try:

        def rest(start: int, end: int) -> None:
            if landed.failed:
                raise DownloadFailed
            write_stream(fetch(start, end - 1), fd, start, landed, pace)

        def stop_all(job: Future[Any]) -> None:  # the first failed range stops the others and the hashers
            if not job.cancelled() and job.exception() is not None:
                landed.fail()

        jobs.append(pool.submit(write_stream, body, fd, 0, landed, pace))
        jobs += [pool.submit(rest, start, end) for start, end in spans(length, total, range_size)]
        for job in jobs:
            job.add_done_callback(stop_all)
        hashers.follow(segments())
        wait(jobs)
        errors = [e for e in (None if job.cancelled() else job.exception() for job in jobs) if e is not None]
        if errors:
            raise _cause(errors)
        _check_complete(landed, total)
        return [d.result() for d in hashers.digests]
    except BaseException:
        landed.fail()
        for job in jobs:
            job.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        hashers.close()


async def download_async(
    fd: int,
    total: int,
    ranges: list[tuple[int, int]],
    fetch: Callable[[int, int, Landed], Awaitable[None]],
    concurrency: int,
    segments: list[tuple[int, int]],
    new_hash: NewHash = md5,
) -> list[bytes]:
    """`download` on an event loop: fill ``fd`` (already ``total`` bytes long) and return the digest
    of each span of ``segments``.

    ``fetch(start, end, landed)`` fetches ``[start, end)`` (one of ``ranges``, which cover the file)
    and writes it with `write_body` (retrying as it sees fit: a range written again is
    the same bytes); at most ``concurrency`` run at once. Hashers follow on threads. The first error
    is raised once every range stopped; ranges not yet started are not fetched.
    """
    import asyncio

    landed = Landed()
    hashers = Hashers(fd, landed, new_hash)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(start: int, end: int) -> None:
        async with gate:
            if landed.failed:
                raise DownloadFailed
            try:
                await fetch(start, end, landed)
            except BaseException:
                landed.fail()  # the first failed range stops the others and the hashers
                raise

    tasks = [asyncio.ensure_future(one(s, e)) for s, e in ranges]
    try:
        hashers.follow(segments)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise _cause(errors)
        _check_complete(landed, total)
        return list(await asyncio.gather(*(asyncio.wrap_future(d) for d in hashers.digests)))
    except BaseException:
        landed.fail()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        await asyncio.to_thread(hashers.close)
