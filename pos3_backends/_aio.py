"""Native transfers for the GCS and Azure stores: one asyncio event loop on one background
thread, one aiohttp session, many requests in flight without a Python thread per request.

The SDKs stay in charge of configuration and credentials (each store builds its requests
from its SDK client's endpoint and credential); this module only moves bytes. A request
is retried here on transient failures (HTTP 408/429/5xx, broken or refused connections,
timeouts) with doubling back-off, as the SDKs' own retry policies do; the last failure
is handed to the store to map to the same errors as its SDK path.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pos3.integrity import TransferInterrupted
from pos3.stores import ranged

from ._http import RetryPolicy, Transient

T = TypeVar("T")

#: Ranges of a large download in flight at once.
RANGES_IN_FLIGHT = 8


class Engine:
    """An event loop thread and an aiohttp session with up to ``connections`` connections, both
    started by the first `run` (aiohttp is imported then: a command that never transfers a body
    never pays for it)."""

    def __init__(self, connections: int, timeout: float) -> None:
        self.connections = connections
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.session: Any = None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            import aiohttp

            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="pos3-aio", daemon=True)
            self._thread.start()
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(20.0, self.timeout), sock_read=self.timeout)

            async def open_session() -> Any:
                n = self.connections
                connector = aiohttp.TCPConnector(limit=n, limit_per_host=n, ttl_dns_cache=300)
                # auto_decompress=False: bodies are kept exactly as stored (their hashes are of those bytes).
                return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

            self.session = asyncio.run_coroutine_threadsafe(open_session(), loop).result()
            self._loop = loop
            return loop

    def run(self, coro: Awaitable[T]) -> Future[T]:
        """Schedule ``coro`` on the loop; its future's callbacks run on the loop thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._start())  # type: ignore[arg-type]

    def close(self) -> None:
        """Cancel the requests still running (a ranged download then releases its hashers), close the
        session and stop the loop thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def shut() -> None:
            running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self.session.close()

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()


async def retrying(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Await ``attempt()`` until it does not raise `Transient`, within ``policy``; then raise its ``final``."""
    import aiohttp

    start = time.monotonic()
    n = 0
    while True:
        try:
            return await attempt()
        except Transient as exc:
            failure: BaseException = exc.final
            asked = exc.retry_after
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failure, asked = exc, None
        wait = policy.after(n, start, asked)
        n += 1
        if wait is None:
            raise failure
        await asyncio.sleep(wait)


def network_failure(exc: BaseException) -> bool:
    """True for aiohttp's connection and payload errors and timeouts (the service's failures)."""
    import aiohttp

    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError))


async def guard(work: Awaitable[T], what: str) -> T:
    """Await ``work``; a network failure left after the retries becomes a `StoreError`, a body
    cut short a `TransferInterrupted` (mapped errors and local disk errors pass through unchanged)."""
    import aiohttp

    from pos3.store import StoreError

    try:
        return await work
    except asyncio.TimeoutError as exc:
        raise StoreError(f"{what}: timed out") from exc
    except aiohttp.ClientPayloadError as exc:
        raise TransferInterrupted(f"{what}: the body was cut short ({exc})") from exc
    except Exception as exc:
        if network_failure(exc):
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise


@dataclass
class Ranged:
    """What `get_ranges` wrote: the ranges, the digest of each span hashed (the whole file, or
    each range), and each range's answer headers by its start."""

    ranges: list[tuple[int, int]]
    digests: list[bytes]
    headers: dict[int, Any]


async def get_ranges(
    first: Any,
    total: int,
    open_range: Callable[[int, int], Awaitable[Any]],
    dest: Path,
    range_size: int,
    per_range: bool,
    policy: RetryPolicy,
    what: str,
    new_hash: ranged.NewHash | None = None,
) -> Ranged:
    """Fill ``dest`` with the ``total`` bytes of an object as parallel ranges (`pos3.stores.ranged`).

    ``first`` is the open answer to a GET of the first range (released here); ``open_range(start, end)``
    opens the answer for ``[start, end)`` (checked: pinned to the same object). Every range is
    retried alone under ``policy``; the first one that cannot be stops the rest and is raised.
    Hashed as they land: each range when ``per_range``, else the whole file (MD5 by default).
    """
    opened = [first]
    length = int(first.headers.get("Content-Length") or 0)
    ranges = [(0, length), *ranged.spans(length, total, range_size)]
    headers: dict[int, Any] = {}

    async def fetch(start: int, end: int, landed: ranged.Landed) -> None:
        async def once() -> None:
            r = opened.pop() if start == 0 and opened else await open_range(start, end)
            try:
                headers[start] = r.headers
                n = await ranged.write_body(r.content.iter_any(), fd, start, landed)
            finally:
                r.release()
            if n != end - start:
                raise Transient(TransferInterrupted(f"{what}: a range ended after {n} of {end - start} bytes"))

        await retrying(once, policy)

    try:
        fd = await asyncio.to_thread(ranged.open_sized, dest, total)
        try:
            segments = ranges if per_range else [(0, total)]
            digests = await ranged.download_async(
                fd, total, ranges, fetch, RANGES_IN_FLIGHT, segments, new_hash or ranged.md5
            )
        finally:
            os.close(fd)
    finally:
        for r in opened:
            r.release()
    return Ranged(ranges, digests, headers)
