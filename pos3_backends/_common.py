"""Small pieces the optional stores share: listing order, hashes, connection pools, parallel deletes."""

from __future__ import annotations

import base64
import heapq
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pos3.store import ObjectMeta

MiB = 1024 * 1024


def utf8_order(metas: Iterable[ObjectMeta]) -> Iterator[ObjectMeta]:
    """Put a listing sorted by UTF-16 code unit (or already by UTF-8 byte) into UTF-8 byte order.

    The two orders differ only where one key has a character above U+FFFF
    (a surrogate pair in UTF-16) and another a character in U+E000..U+FFFF at
    the same place: UTF-16 lists the first one earlier. So an object is held
    back only while a later key could still sort before it, which happens
    only for keys with a character above U+FFFF; every other key streams
    straight through. Any other disorder passes through as it comes, for the
    sync engine to detect (it then sorts the listing in memory).
    """
    held: list[tuple[str, int, ObjectMeta]] = []
    for n, meta in enumerate(metas):
        heapq.heappush(held, (meta.key, n, meta))
        bound = _lowest_later_key(meta.key)
        while held and held[0][0] <= bound:
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]


def _lowest_later_key(key: str) -> str:
    """The lowest key (by code point) that a UTF-16-ordered listing may still yield after ``key``.

    After ``key`` come only keys that are higher in UTF-16: the lowest of them
    by code point replaces ``key``'s first character above U+FFFF by U+E000
    (the lowest character UTF-16 sorts after a surrogate) and drops the rest.
    """
    for i, ch in enumerate(key):
        if ord(ch) > 0xFFFF:
            return key[:i] + "\ue000"
    return key


def checked_options(profile: Any, allowed: set[str], backend: str) -> dict[str, Any]:
    """The profile's backend options as a dict; an option this backend does not know raises `ValueError`."""
    opts = dict(profile.options)
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(f"Unknown {backend} profile options: {', '.join(sorted(unknown))}")
    return opts


def b64_to_hex(digest: str | bytes | bytearray | None) -> str | None:
    """A base64 digest (str) or raw digest (bytes) as lowercase hex; ``None`` or empty stays ``None``."""
    if not digest:
        return None
    raw = base64.b64decode(digest) if isinstance(digest, str) else bytes(digest)
    return raw.hex() or None


def widen_pool(session: Any, size: int) -> None:
    """Mount adapters keeping up to ``size`` connections per host on a `requests.Session`.

    The adapters do not retry by themselves: each SDK's retry policy does.
    """
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=Retry(total=False, redirect=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def network_error(exc: BaseException) -> bool:
    """True for an error of the HTTP stack (requests, urllib3, http.client, sockets): these
    subclass `OSError` but are the service's failures, mapped like the SDK's own errors,
    unlike a local disk error, which passes through unchanged."""
    import http.client

    import requests
    import urllib3

    return isinstance(
        exc, (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError)
    )


def run_all(fn: Callable[[str], None], keys: list[str], workers: int) -> None:
    """Call ``fn`` on every key on up to ``workers`` threads; raise the first failure after all ran."""
    if len(keys) <= 1 or workers <= 1:
        for key in keys:
            fn(key)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(keys)), thread_name_prefix="pos3-delete") as pool:
        futures = [pool.submit(fn, key) for key in keys]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


def undeleted(keys: list[str], statuses: list[int]) -> list[str]:
    """The keys whose batched delete neither succeeded nor found the key already gone."""
    return [k for k, s in zip(keys, statuses, strict=True) if not (200 <= s < 300 or s == 404)]
