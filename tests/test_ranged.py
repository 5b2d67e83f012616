"""`pos3.stores.ranged`: the spans tracker hashers follow, and downloads through it (threads, an event loop)
from in-memory bodies."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pos3.stores.ranged import DownloadFailed, Landed, download, download_async, open_sized, write_body


def test_landed_merges_spans_in_any_order() -> None:
    landed = Landed()
    for start, end in [(30, 40), (0, 10), (20, 30), (50, 60)]:
        landed.add(start, end)
    assert landed.covered(0, 10) and landed.covered(20, 40) and not landed.covered(0, 11)
    assert not landed.covered(35, 55)
    landed.add(10, 20)
    landed.add(40, 50)
    assert landed.covered(0, 60) and not landed.covered(0, 61)
    assert Landed().covered(7, 7)  # an empty span (an empty object) is always written


def test_a_failed_download_releases_a_waiting_hasher() -> None:
    landed = Landed()
    raised = threading.Event()

    def wait() -> None:
        with pytest.raises(DownloadFailed):
            landed.wait(0, 10)
        raised.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    landed.add(0, 5)
    landed.fail()
    waiter.join(timeout=30)
    assert raised.is_set()


class _Broken(io.BytesIO):
    """A body that fails after its first read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionError("cut")
        return super().read(size)


def test_download_hashes_each_segment_and_raises_a_range_failure(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)
    part = 1 << 20
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, len(data))
        fetch = lambda start, end: io.BytesIO(data[start : end + 1])  # noqa: E731
        segments = [(s, min(s + part, len(data))) for s in range(0, len(data), part)]
        digests = download(fd, len(data), (io.BytesIO(data[:part]), part), fetch, part, 3, lambda: segments)
        assert digests == [hashlib.md5(data[s:e]).digest() for s, e in segments]
        assert (tmp_path / "f").read_bytes() == data
        broken = lambda start, end: _Broken(data[start : end + 1]) if start >= 2 * part else fetch(start, end)  # noqa: E731
        with pytest.raises(ConnectionError):
            download(fd, len(data), (io.BytesIO(data[:part]), part), broken, part // 2, 3, lambda: segments)
    finally:
        os.close(fd)


def test_download_async_hashes_what_lands_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    """The event-loop driver: ranges written through `write_body` in batches, each range hashed;
    a range that fails raises its own error, and no range not yet started is fetched."""
    data = os.urandom(5 * (1 << 20) + 77)
    part = 1 << 20
    ranges = [(s, min(s + part, len(data))) for s in range(0, len(data), part)]
    fetched: list[int] = []

    async def body(start: int, end: int) -> AsyncIterator[bytes]:
        for at in range(start, end, 100_000):  # uneven pieces, batched by write_body
            await asyncio.sleep(0)
            yield data[at : min(at + 100_000, end)]

    async def fetch(start: int, end: int, landed: Landed) -> None:
        fetched.append(start)
        if failing and start == part:
            raise ConnectionError("cut")
        assert await write_body(body(start, end), fd, start, landed) == end - start

    fd = open_sized(tmp_path / "f", len(data))
    try:
        failing = False
        digests = asyncio.run(download_async(fd, len(data), ranges, fetch, 2, ranges))
        assert digests == [hashlib.md5(data[s:e]).digest() for s, e in ranges]
        assert (tmp_path / "f").read_bytes() == data
        failing, fetched = True, []
        with pytest.raises(ConnectionError):
            asyncio.run(download_async(fd, len(data), ranges, fetch, 1, [(0, len(data))]))
        assert fetched == [0, part]  # one at a time: the failed second range stopped the rest
    finally:
        os.close(fd)


def test_open_sized_allocates_the_blocks_up_front(tmp_path: Path) -> None:
    """Ranges written at many offsets into a sparse file were 5-15x slower on ext4 than into
    allocated blocks (benchmarks/ANALYSIS.md): the file is allocated, not only sized."""
    fd = open_sized(tmp_path / "big", 8 << 20)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == 8 << 20
    if sys.platform.startswith("linux"):  # fallocate(2); elsewhere a sparse file of the right size
        assert st.st_blocks * 512 >= 8 << 20
    fd = open_sized(tmp_path / "empty", 0)
    os.close(fd)
    assert (tmp_path / "empty").stat().st_size == 0
    (tmp_path / "stale").write_bytes(b"much longer stale content")  # an existing file is cut to the size
    os.close(open_sized(tmp_path / "stale", 3))
    assert (tmp_path / "stale").stat().st_size == 3
