"""Bandwidth limits: a store that moves object bodies at most at a given rate per direction.

One `TokenBucket` per direction is shared by every store a mirror creates, so
the limit covers every worker, every part and every profile at once. The
wrapper asks the inner store for a paced view (`ObjectStore.paced`): that
store charges the bucket chunk by chunk while the bytes move, so the wire
itself runs at the rate, even within one large object. A store without that
capability is charged each object whole before it moves (honest on average,
bursty within an object). Listing, HEAD and deletes are not limited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from ..store import ObjectMeta, ObjectStore
from . import WrappedStore

__all__ = ["ThrottledStore", "TokenBucket", "throttled"]


class TokenBucket:
    """A byte budget refilled at ``rate`` bytes per second, holding at most ``burst`` bytes.

    `take` reserves its bytes at once (the budget may go into debt) and then
    sleeps until the debt is paid, so concurrent callers share the rate fairly
    and a run of N bytes takes at least ``(N - burst) / rate`` seconds.
    Thread-safe; the lock is never held while sleeping.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"a bandwidth limit must be a positive number of bytes per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else min(self.rate / 10, 1 << 20)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Charge ``n`` bytes, blocking until the rate allows them."""
        if n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - n
            self._last = now
            wait = -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)


class ThrottledStore(WrappedStore):
    """``inner`` with object bodies limited by ``down`` (gets) and ``up`` (puts); ``None`` is unlimited.

    Limited transfers always run on the caller's thread (`start_get`/`start_put`
    return ``None``), so natively asynchronous transfers cannot bypass the limit.
    """

    def __init__(self, inner: ObjectStore, down: TokenBucket | None, up: TokenBucket | None) -> None:
        super().__init__(inner)
        self.down, self.up = down, up
        paced = inner.paced(down.take if down else None, up.take if up else None)
        #: The store that moves bodies: the paced view, or ``inner`` charged per object.
        self.mover = paced if paced is not None else inner
        self.per_object = paced is None

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        if self.per_object and self.down is not None and size is not None:
            self.down.take(size)
            return self.mover.get(key, dest, size)
        meta = self.mover.get(key, dest, size)
        if self.per_object and self.down is not None and size is None:
            self.down.take(meta.size)
        return meta

    def put(self, key: str, src: Path) -> ObjectMeta:
        if self.per_object and self.up is not None:
            self.up.take(src.stat().st_size)
        return self.mover.put(key, src)

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        return self.inner.start_get(key, dest, size) if self.down is None else None

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        return self.inner.start_put(key, src) if self.up is None else None


def throttled(store: ObjectStore, down: TokenBucket | None, up: TokenBucket | None) -> ObjectStore:
    """``store`` limited by the given buckets, or ``store`` itself when neither direction is limited."""
    return store if down is None and up is None else ThrottledStore(store, down, up)
