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
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Statuses worth another try: timeouts, throttling and server-side failures.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request: at most ``attempts`` tries in all and no new try after ``deadline``
    seconds; the first wait is ``first`` seconds, doubling (capped at ``cap``), jittered ±25%."""

    attempts: int = 7
    deadline: float = 120.0
    first: float = 1.0
    cap: float = 32.0

    def wait(self, n: int, asked: float | None) -> float:
        """Seconds to wait before try ``n + 1`` (the server's ``Retry-After``, if it asked, wins)."""
        if asked is not None:
            return min(asked, 60.0)
        base = min(self.cap, self.first * 2**n)
        return random.uniform(0.75 * base, 1.25 * base)


class Transient(Exception):
    """One try failed in a way worth retrying; ``final`` is what to raise if no try is left."""

    def __init__(self, final: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.retry_after = retry_after


class Engine:
    """An event loop thread and an aiohttp session with up to ``connections`` connections."""

    def __init__(self, connections: int, timeout: float) -> None:
        import aiohttp

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pos3-aio", daemon=True)
        self._thread.start()
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(20.0, timeout), sock_read=timeout)

        async def open_session() -> Any:
            connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, ttl_dns_cache=300)
            # auto_decompress=False: bodies are kept exactly as stored (their hashes are of those bytes).
            return aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=False)

        self.session = self.run(open_session()).result()

    def run(self, coro: Awaitable[T]) -> Future[T]:
        """Schedule ``coro`` on the loop; its future's callbacks run on the loop thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the session and stop the loop thread (idempotent)."""
        if self.loop.is_closed():
            return
        try:
            self.run(self.session.close()).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self.loop.close()


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
        wait = policy.wait(n, asked)
        n += 1
        if n >= policy.attempts or time.monotonic() - start + wait > policy.deadline:
            raise failure
        await asyncio.sleep(wait)


def network_failure(exc: BaseException) -> bool:
    """True for aiohttp's connection and payload errors and timeouts (the service's failures)."""
    import aiohttp

    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError))


async def guard(work: Awaitable[T], what: str) -> T:
    """Await ``work``; a network failure left after the retries becomes a `StoreError`
    (mapped errors and local disk errors pass through unchanged)."""
    from pos3.store import StoreError

    try:
        return await work
    except asyncio.TimeoutError as exc:
        raise StoreError(f"{what}: timed out") from exc
    except Exception as exc:
        if network_failure(exc):
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise
