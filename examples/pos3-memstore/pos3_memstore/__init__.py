"""An in-memory pos3 store for ``mem://bucket/key`` URLs: the smallest complete store plugin.

Buckets live in this process and are shared by every backend; create one with
`create_bucket` before use. The store keeps `ObjectStore`'s guarantees:
listings are paged (`PAGE` keys at a time, resumed after the last key, so
concurrent writes never break a listing) in UTF-8 byte order, a `put` becomes
visible all at once, every `put` gets a new ``version``, and ``md5`` is always
known. A missing bucket raises `FileNotFoundError`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pos3 import Backend, ObjectMeta, ObjectStore, PreconditionFailed, Profile, StoreSpec, hookimpl

#: Keys one listing page returns.
PAGE = 1000

_versions = itertools.count(1)


@hookimpl
def pos3_register_stores(register) -> None:
    """pos3 calls this once, when a URL scheme is first looked up."""
    register(StoreSpec(scheme="mem", connect=MemBackend))


@dataclass(frozen=True)
class _Object:
    data: bytes
    meta: ObjectMeta


@dataclass
class _Bucket:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: list[str] = field(default_factory=list)  # sorted
    objects: dict[str, _Object] = field(default_factory=dict)


_buckets: dict[str, _Bucket] = {}
_buckets_lock = threading.Lock()


def create_bucket(name: str) -> None:
    """Create an empty bucket (an existing one is kept)."""
    with _buckets_lock:
        _buckets.setdefault(name, _Bucket())


def delete_bucket(name: str) -> None:
    """Drop a bucket and everything in it."""
    with _buckets_lock:
        _buckets.pop(name, None)


def keys(bucket: str) -> list[str]:
    """Every key in ``bucket``, sorted."""
    b = _bucket(bucket)
    with b.lock:
        return list(b.keys)


def _bucket(name: str) -> _Bucket:
    try:
        return _buckets[name]
    except KeyError:
        raise FileNotFoundError(f"No such bucket: mem://{name}") from None


class MemBackend(Backend):
    """Nothing to connect to; the profile takes no options."""

    def __init__(self, profile: Profile, max_workers: int) -> None:
        if profile.options:
            raise ValueError(f"Unknown mem profile options: {', '.join(sorted(profile.options))}")

    def store(self, bucket: str) -> MemStore:
        return MemStore(bucket)


class MemStore(ObjectStore):
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        b = _bucket(self.bucket)
        after: str | None = None
        while True:
            with b.lock:  # one "request": a page of keys after the last one seen
                start = bisect.bisect_left(b.keys, prefix) if after is None else bisect.bisect_right(b.keys, after)
                page = [b.objects[k].meta for k in b.keys[start : start + PAGE] if k.startswith(prefix)]
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].key

    def head(self, key: str) -> ObjectMeta | None:
        b = _bucket(self.bucket)
        with b.lock:
            obj = b.objects.get(key)
        return obj.meta if obj else None

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        b = _bucket(self.bucket)
        with b.lock:
            obj = b.objects.get(key)
        if obj is None:
            raise FileNotFoundError(f"No such object: mem://{self.bucket}/{key}")
        dest.write_bytes(obj.data)
        return obj.meta

    def put(self, key: str, src: Path) -> ObjectMeta:
        return self._store(key, src.read_bytes(), lambda current: None)

    conditional_put = True

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """Check and write under the bucket's lock: atomic, like a server's ``If-Match``."""

        def check(current: _Object | None) -> None:
            found = current.meta.version if current is not None else None
            if found != version:
                raise PreconditionFailed.of(f"mem://{self.bucket}/{key}", version)

        return self._store(key, data, check)

    def _store(self, key: str, data: bytes, check: Callable[[_Object | None], None]) -> ObjectMeta:
        key.encode("utf-8")  # a key must be valid UTF-8
        b = _bucket(self.bucket)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        meta = ObjectMeta(key, len(data), str(next(_versions)), time.time(), md5)
        with b.lock:
            check(b.objects.get(key))
            if key not in b.objects:
                bisect.insort(b.keys, key)
            b.objects[key] = _Object(data, meta)
        return meta

    def delete(self, keys: Iterable[str]) -> None:
        b = _bucket(self.bucket)
        keys = list(keys)
        with b.lock:
            for key in keys:
                if b.objects.pop(key, None) is not None:
                    b.keys.pop(bisect.bisect_left(b.keys, key))
