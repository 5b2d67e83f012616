"""Retries of throttled requests: a store that waits and tries again when the service says "slow down".

The stores map a throttling answer (HTTP 503/429, S3 ``SlowDown``, Azure
``ServerBusy``) that their SDK's own retries did not absorb to `Throttled`,
carrying the server's ``Retry-After`` when it sent one. `BackoffStore` then
waits and repeats the call, until its waits would add up to more than
``deadline`` seconds, so that many clients starting at once (a cold start) all complete
at the pace the service admits instead of giving up after a fixed count:

* a server that says when to come back is believed: the wait is its
  ``Retry-After`` plus a uniform random part of up to as much again (full
  jitter over one more period, so clients told the same time do not
  return together);
* otherwise the wait is exponential backoff with full jitter: uniform in
  ``[0, min(cap, base * 2**attempt))``, ``cap`` 2 s as rclone's S3 pacer. A
  larger cap (botocore's is 20 s) leaves the service idle while refused
  requests sleep: 6 to 16 clients behind a rate limit (tests/test_coldstart.py,
  where the CRT gives no ``Retry-After``) took 1.4-2.3x the ideal time with a
  20 s cap and 1.05-1.10x with 2 s.

``deadline`` is 120 s unless the environment variable
``POS3_THROTTLE_DEADLINE`` gives another number of seconds (`Backoff.from_env`).
A listing is retried only before its first entry; after that, `Throttled`
propagates (the caller's plan has already read part of it).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..store import ObjectMeta, ObjectStore, Throttled
from . import WrappedStore

__all__ = ["Backoff", "BackoffStore"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """The wait policy (see the module): seconds, and a random source for the jitter."""

    base: float = 0.25
    cap: float = 2.0
    deadline: float = 120.0
    rng: Callable[[], float] = random.random

    @classmethod
    def from_env(cls) -> Backoff:
        """The default policy, with ``deadline`` from ``POS3_THROTTLE_DEADLINE`` when set."""
        value = os.environ.get("POS3_THROTTLE_DEADLINE")
        return cls() if not value else cls(deadline=float(value))

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None and retry_after > 0:
            return retry_after * (1 + self.rng())
        return self.rng() * min(self.cap, self.base * 2**attempt)


class BackoffStore(WrappedStore):
    """``inner`` with throttled calls retried under ``policy`` (see the module)."""

    def __init__(self, inner: ObjectStore, policy: Backoff | None = None, sleep: Callable[[float], None] = time.sleep):
        super().__init__(inner)
        self.policy = policy or Backoff.from_env()
        self._sleep = sleep

    def __getattr__(self, name: str) -> object:
        """Anything else (a backend's ``client``, ``bucket``...) is the inner store's."""
        return getattr(self.inner, name)

    def _retrying(self, call: Callable[[], T]) -> T:
        waited = 0.0
        attempt = 0
        while True:
            try:
                return call()
            except Throttled as exc:
                wait = self.policy.delay(attempt, exc.retry_after)
                if waited + wait > self.policy.deadline:
                    raise
                self._sleep(wait)
                waited += wait
                attempt += 1

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        it = self._retrying(lambda: _first(self.inner.list(prefix)))
        yield from it

    def head(self, key: str) -> ObjectMeta | None:
        return self._retrying(lambda: self.inner.head(key))

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        return self._retrying(lambda: self.inner.get(key, dest, size))

    def put(self, key: str, src: Path) -> ObjectMeta:
        return self._retrying(lambda: self.inner.put(key, src))

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        self._retrying(lambda: self.inner.delete(batch))

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        fut = self.inner.start_get(key, dest, size)
        return None if fut is None else self._on_throttle(fut, lambda: self.get(key, dest, size))

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        fut = self.inner.start_put(key, src)
        return None if fut is None else self._on_throttle(fut, lambda: self.put(key, src))

    def _on_throttle(self, fut: Future[ObjectMeta], again: Callable[[], ObjectMeta]) -> Future[ObjectMeta]:
        """``fut``, unless it fails with `Throttled`: then the call is repeated on a new thread
        (after the policy's wait, through `get`/`put` here)."""
        out: Future[ObjectMeta] = Future()

        def done(f: Future[ObjectMeta]) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            elif not isinstance(exc, Throttled):
                out.set_exception(exc)
            else:
                retry_after = exc.retry_after

                def later() -> None:
                    try:
                        self._sleep(self.policy.delay(0, retry_after))
                        out.set_result(again())
                    except BaseException as err:  # noqa: BLE001 - handed to the waiting side
                        out.set_exception(err)

                threading.Thread(target=later, name="pos3-backoff", daemon=True).start()

        fut.add_done_callback(done)
        return out


def _first(it: Iterator[ObjectMeta]) -> Iterator[ObjectMeta]:
    """``it`` with its first entry already fetched (so a throttled first page raises here)."""
    try:
        head = next(it)
    except StopIteration:
        return iter(())
    return itertools.chain([head], it)
