"""`CountingStore`: counts the calls a store receives, per verb (thread-safe).

Counts are of store calls, not HTTP requests: one ``list`` call may page
through many requests, one ``delete`` call may send several batches. A
native transfer (`start_get`/`start_put`) counts as a ``get``/``put`` when the
inner store starts it; otherwise the caller's fallback ``get``/``put`` counts.
``keys_deleted`` counts the keys passed to ``delete``::

    store = CountingStore(real)
    ...
    assert store.counts["put"] == 3
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

from ..store import ObjectMeta, ObjectStore
from . import WrappedStore

__all__ = ["VERBS", "CountingStore"]

VERBS = ("list", "head", "get", "put", "delete")


class CountingStore(WrappedStore):
    """Delegates every verb and counts it in ``counts`` (a `collections.Counter`)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._deleted = 0

    def _add(self, verb: str) -> None:
        with self._lock:
            self._counts[verb] += 1

    @property
    def counts(self) -> Counter[str]:
        """A snapshot: calls per verb (``list``, ``head``, ``get``, ``put``, ``delete``)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def keys_deleted(self) -> int:
        with self._lock:
            return self._deleted

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._deleted = 0

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        self._add("list")
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectMeta | None:
        self._add("head")
        return self.inner.head(key)

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        self._add("get")
        return self.inner.get(key, dest, size)

    def put(self, key: str, src: Path) -> ObjectMeta:
        self._add("put")
        return self.inner.put(key, src)

    def delete(self, keys: Iterable[str]) -> None:
        keys = [*keys]
        self._add("delete")
        with self._lock:
            self._deleted += len(keys)
        self.inner.delete(keys)

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        fut = self.inner.start_get(key, dest, size)
        if fut is not None:
            self._add("get")
        return fut

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        fut = self.inner.start_put(key, src)
        if fut is not None:
            self._add("put")
        return fut
