"""End-to-end checks of transferred bytes, and the bounded retry of a transfer that failed one.

Stores use these helpers to keep one promise the same way: a transfer whose
bytes do not match the store's checksum raises `IntegrityError`; a transfer
cut short mid-body (after the SDK's own retries) raises `TransferInterrupted`;
both are retried whole (`retried`, `retried_async`) a few times with a short
backoff, then reported. The caller never keeps the bad copy: a download's
temporary file is removed by the sync engine, and a store that can only
detect a bad upload after the fact deletes it (see each store).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from .store import StoreError

log = logging.getLogger("pos3")
T = TypeVar("T")

#: How many times a transfer is tried in all when its checksum fails or its body is cut.
ATTEMPTS = 3
MiB = 1024 * 1024


class IntegrityError(StoreError):
    """The bytes a transfer moved do not match the store's checksum (the copy was not kept)."""


class TransferInterrupted(StoreError):
    """A connection broke in the middle of a body, beyond the retries of the store's SDK."""


RETRYABLE = (IntegrityError, TransferInterrupted)


def md5_hex(path: Path) -> str:
    """The hex MD5 of a file's content."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The S3 ETag of ``path`` uploaded in parts of ``part_size``: MD5 of the parts' MD5s, ``-N``."""
    digests = []
    with open(path, "rb") as f:
        while True:
            h = hashlib.md5(usedforsecurity=False)
            left = part_size
            while left:
                chunk = f.read(min(MiB, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            digests.append(h.digest())
            if left:
                break
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def check_md5(path: Path, expected: str, what: str) -> None:
    """Raise `IntegrityError` unless the file's MD5 is ``expected`` (hex)."""
    got = md5_hex(path)
    if got != expected.lower():
        raise IntegrityError(f"{what}: content MD5 {got} does not match the store's {expected.lower()}")


def _backoff(attempt: int) -> float:
    return min(0.2 * 2**attempt, 2.0)


def retried(attempt: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    """Call ``attempt`` until it does not raise `IntegrityError`/`TransferInterrupted`,
    at most ``attempts`` times; the last such failure is raised."""
    for n in range(attempts):
        try:
            return attempt()
        except RETRYABLE as exc:
            if n + 1 == attempts:
                raise type(exc)(f"{exc} (tried {attempts} times)") from exc
            log.warning("%s; trying again", exc)
            time.sleep(_backoff(n))
    raise AssertionError("unreachable")


def retried_async(start: Callable[[], Future[T]], attempts: int = ATTEMPTS) -> Future[T]:
    """`retried` for a transfer started natively: ``start`` begins one attempt and returns its future.
    A new attempt is started from a timer thread, never from the completing one."""
    out: Future[T] = Future()

    def go(n: int) -> None:
        try:
            fut = start()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting side
            out.set_exception(exc)
            return

        def done(f: Future[T]) -> None:
            if f.cancelled():  # the store closed under it
                out.cancel()
                out.set_running_or_notify_cancel()  # wakes `wait`ers too
                return
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            elif isinstance(exc, RETRYABLE) and n + 1 < attempts:
                log.warning("%s; trying again", exc)
                timer = threading.Timer(_backoff(n), go, (n + 1,))
                timer.daemon = True
                timer.start()
            elif isinstance(exc, RETRYABLE):
                out.set_exception(type(exc)(f"{exc} (tried {attempts} times)"))
            else:
                out.set_exception(exc)

        fut.add_done_callback(done)

    go(0)
    return out
