"""The `ObjectStore` interface every backend implements.

A store speaks for one bucket-like namespace of one backend under one profile.
Keys are ``/``-separated strings without a leading ``/``. Each verb states the
guarantee the sync engine relies on; the shared conformance suite
(`pos3.testing`) checks each of them against a real server.
"""

from __future__ import annotations

import abc
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Charged with a byte count just before a store moves that many body bytes; it may block to slow the transfer.
Pace = Callable[[int], None]

#: The most bytes a paced store moves per `Pace` call.
PACE_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """One object as a listing reports it.

    ``version`` is the store's change token (S3 ETag, GCS generation, Azure
    ETag): it changes whenever the content is rewritten, even at equal size.
    ``md5`` is the hex MD5 of the content when the store knows it (S3
    single-part ETag, GCS md5Hash, Azure Content-MD5), else ``None``.
    """

    key: str
    size: int
    version: str | None = None
    mtime: float | None = None
    md5: str | None = None


def batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Split a stream of keys into lists of at most ``size`` (for batched deletes)."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def chain(
    fut: Future, fn: Callable[[Any], Any], error: Callable[[BaseException], BaseException] | None = None
) -> Future:
    """A future of ``fn(fut.result())``; a failure passes through ``error`` (if given).
    ``fn`` runs on whichever thread completes ``fut``, so it must be short."""
    out: Future = Future()

    def done(f: Future) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(error(exc) if error is not None else exc)
            return
        try:
            out.set_result(fn(f.result()))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting side
            out.set_exception(err)

    fut.add_done_callback(done)
    return out


def settle(out: Future, fut: Future) -> None:
    """Give ``out`` the outcome of the finished ``fut``: its result, its exception, or its cancellation."""
    if fut.cancelled():
        out.cancel()
        out.set_running_or_notify_cancel()  # wakes `wait`ers too
        return
    exc = fut.exception()
    if exc is not None:
        out.set_exception(exc)
    else:
        out.set_result(fut.result())


class StoreError(Exception):
    """Base class for errors a store raises that are not `FileNotFoundError`/`PermissionError`."""


class PreconditionFailed(StoreError):
    """A conditional write (`ObjectStore.put_if`) whose condition did not hold: the
    object already existed (a create) or its version had changed (an update)."""

    @classmethod
    def of(cls, what: str, version: str | None) -> PreconditionFailed:
        """The error for a refused write of ``what`` conditional on ``version`` (``None``: a create)."""
        return cls(f"{what}: {'an object exists' if version is None else f'not at version {version} any more'}")


class Throttled(StoreError):
    """The service asked to slow down (HTTP 503/429, ``SlowDown``, ``ServerBusy``) beyond the SDK's
    own retries; ``retry_after`` is the seconds its ``Retry-After`` asked for, if it sent one.
    `pos3.wrappers.backoff.BackoffStore` retries these."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(headers: Any) -> float | None:
    """The seconds a ``Retry-After`` (or S3's ``x-amz-retry-after``, in ms) header asks for, if any.
    ``headers``: a mapping or a list of pairs; names compared case-insensitively."""
    items = headers.items() if hasattr(headers, "items") else headers or ()
    found = {str(k).lower(): str(v) for k, v in items}
    for name, scale in (("retry-after", 1.0), ("x-amz-retry-after", 0.001)):
        try:
            return max(0.0, float(found[name]) * scale)
        except (KeyError, ValueError):
            continue
    return None


class ObjectStore(abc.ABC):
    """A flat namespace of objects in one bucket.

    Errors are mapped to the same Python exceptions on every backend:
    a missing object or bucket raises `FileNotFoundError`, a refused request
    raises `PermissionError`. Transient failures are retried inside the store.
    Every method is safe to call from many threads at once.
    """

    #: Largest number of keys one `delete` call sends in a single request.
    delete_batch_size: int = 1

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        """Yield every object whose key starts with ``prefix``, page by page as
        the server answers, in ascending UTF-8 byte order of keys where the
        service provides it (the sync engine detects any other order and then
        sorts the listing in memory).

        The stream is complete: a page the server marks as the last is not
        trusted when it could have been cut short. A missing bucket raises
        `FileNotFoundError`; an empty prefix yields nothing.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectMeta | None:
        """Return the object stored at exactly ``key``, or ``None`` if there is none."""

    @abc.abstractmethod
    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        """Write the object's content to ``dest`` (created or truncated).

        The caller owns ``dest`` and makes it visible atomically; the store
        only writes bytes. ``size`` is the size a listing reported, a hint for
        choosing how to transfer (one request or parallel ranges), never
        trusted for correctness. Returns the metadata of the version it read.
        """

    @abc.abstractmethod
    def put(self, key: str, src: Path) -> ObjectMeta:
        """Store the content of ``src`` at ``key``.

        No client ever observes a partially written object. Returns the
        metadata a later `list` reports for this object (at least ``version``).
        """

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (missing keys are not an error), batching requests
        where the service allows. Raises if any key could not be deleted."""

    # -- optional capability: native asynchronous transfers ---------------------

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        """Start `get` without occupying a thread and return its future, or
        ``None`` to have the caller run `get` on a worker thread (the default).
        The future's callbacks run on the store's own threads and must be short."""
        return None

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        """Start `put` without occupying a thread, like `start_get`; ``None`` by default."""
        return None

    # -- optional capability: conditional writes of small objects ----------------

    #: True when `put_if` is atomic on the server (``If-None-Match``/``If-Match`` and the like).
    #: A store that leaves it False gets the default `put_if`, a check followed by a write.
    conditional_put: bool = False

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """Store the small payload ``data`` at ``key`` only if a condition holds, like
        object_store's ``PutMode::Create`` (``version=None``: no object exists at ``key``)
        and ``PutMode::Update`` (the object's current ``version`` is the given one).

        When `conditional_put` is True the check and the write are one atomic step
        on the server: of several racing creates exactly one succeeds, and of
        several racing updates from one version at most one succeeds. A condition
        that does not hold raises `PreconditionFailed` and changes nothing.
        Returns the new object's metadata (its ``version`` is the one a later
        update must name; equal to what `head`, `get` and `list` report).

        A request retried after its response was lost may report `PreconditionFailed`
        for its own write: a caller that must know reads the object back (the lease
        does, by its token). Wrappers must never retry `PreconditionFailed`.

        This default (``conditional_put = False``) reads the version with `head`
        and then writes with `put`: sequential writers are checked, but two
        writers racing within one round trip may both succeed.
        """
        current = self.head(key)
        if version is None and current is not None:
            raise PreconditionFailed(f"{key}: an object already exists (version {current.version})")
        if version is not None and (current is None or current.version != version):
            found = "no object" if current is None else f"version {current.version}"
            raise PreconditionFailed(f"{key}: expected version {version}, found {found}")
        with tempfile.TemporaryDirectory(prefix="pos3-put-if-") as tmp:
            src = Path(tmp, "data")
            src.write_bytes(data)
            return self.put(key, src)

    # -- optional capability: paced transfers ----------------------------------

    def paced(self, down: Pace | None, up: Pace | None) -> ObjectStore | None:
        """A view of this store whose `get` calls ``down(n)`` before moving each next ``n``
        (at most `PACE_CHUNK`) body bytes from the service and whose `put` calls ``up(n)``
        before sending each next ``n``; ``None`` leaves that direction as it is.

        A blocking pace must slow the transfer itself (the bytes on the wire), not only
        its average: the view moves bodies in chunks on the calling thread, as each pace
        returns. Over a successful transfer the charged bytes sum to the object's size
        (plus whatever a retry sends again). Return ``None`` (the default) when the store
        cannot report bytes as they move; `pos3.wrappers.throttle` then charges each
        object whole, before it moves."""
        return None


class Backend(abc.ABC):
    """One service under one profile: one client and one connection pool,
    shared by every bucket and every worker thread."""

    @abc.abstractmethod
    def store(self, bucket: str) -> ObjectStore:
        """Return the store for ``bucket`` (cheap; no request is made)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The default does nothing."""
