"""Small requests of the native GCS and Azure paths (listings, HEADs, deletes, conditional writes)
over the standard library's `http.client`, with the retry policy the event loop's transfers use.

A command that only lists and compares (a no-op sync) thus never imports aiohttp or starts the
event loop (`pos3_backends._aio`), which cost ~0.15 s of start-up here. Connections are kept alive,
one per thread and host. Errors map as on the event loop: after the last try, a timeout or a
broken connection is a `StoreError`, a body cut short a `TransferInterrupted`; an answer the
caller's ``fail`` maps (a 404, a 403, throttling) passes through as it is.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pos3.integrity import TransferInterrupted

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

    def after(self, n: int, started: float, asked: float | None) -> float | None:
        """Seconds to wait after try ``n + 1`` (counted from 0) of a request first sent at
        ``started`` (`time.monotonic`) failed, or None when no try is left."""
        wait = self.wait(n, asked)
        if n + 1 >= self.attempts or time.monotonic() - started + wait > self.deadline:
            return None
        return wait


class Transient(Exception):
    """One try failed in a way worth retrying; ``final`` is what to raise if no try is left."""

    def __init__(self, final: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """A whole answer: its status, its headers (names case-insensitive) and its body."""

    status: int
    headers: Any
    body: bytes


#: ``fail(status, headers, body, what)`` raises what an answer outside ``ok`` means (`Transient` to retry).
Fail = Callable[[int, Any, bytes, str], None]
#: ``prepare()`` gives the URL and the headers of one try (signed afresh for each).
Prepare = Callable[[], tuple[str, dict[str, str]]]
_NETWORK = (OSError, http.client.HTTPException)
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class SmallRequests:
    """Requests whose answers are small, sent and read whole on the calling thread."""

    def __init__(self, timeout: float, policy: RetryPolicy) -> None:
        self.timeout = timeout
        self.policy = policy
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []

    def send(
        self, method: str, prepare: Prepare, what: str, ok: tuple[int, ...], fail: Fail, body: bytes | None = None
    ) -> Answer:
        """Send until an answer with a status in ``ok`` comes back or the policy gives up."""
        started, n = time.monotonic(), 0
        while True:
            url, headers = prepare()
            try:
                got = self._once(method, url, headers, body)
            except _NETWORK as exc:
                failure: BaseException = _network_failure(exc, what)
                asked = None
            else:
                try:
                    if got.status not in ok:
                        fail(got.status, got.headers, got.body, what)
                    return got
                except Transient as exc:
                    failure, asked = exc.final, exc.retry_after
            wait = self.policy.after(n, started, asked)
            n += 1
            if wait is None:
                raise failure
            time.sleep(wait)

    def close(self) -> None:
        """Close every connection (idempotent); a later request opens new ones."""
        with self._lock:
            opened, self._open = self._open, []
        for conn in opened:
            conn.close()

    def _once(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Answer:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(parts.scheme, parts.netloc)
        reused = conn.sock is not None
        try:
            conn.request(method, target, body=body, headers=headers)
            r = conn.getresponse()
        except _STALE:
            conn.close()
            if not reused:
                raise
            conn.request(method, target, body=body, headers=headers)  # kept alive too long: once more, at once
            r = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        try:
            data = r.read()
        except BaseException:
            conn.close()
            raise
        if r.will_close:
            conn.close()
        return Answer(r.status, r.headers, data)

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns: dict[tuple[str, str], http.client.HTTPConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.timeout)
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            conns[(scheme, netloc)] = conn
            with self._lock:
                self._open.append(conn)
        return conn


def _network_failure(exc: BaseException, what: str) -> BaseException:
    """A broken connection, a timeout or a cut body as the caller sees it (as
    `pos3_backends._aio.guard` maps the event loop's), caused by ``exc``."""
    from pos3.store import StoreError

    err: BaseException
    if isinstance(exc, TimeoutError):
        err = StoreError(f"{what}: timed out")
    elif isinstance(exc, http.client.IncompleteRead):
        err = TransferInterrupted(f"{what}: the body was cut short ({exc!r})")
    else:
        err = StoreError(f"{what}: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
