"""Stores that wrap any `ObjectStore` to add one cross-cutting behaviour.

Each wrapper is one small module here (bandwidth limits, request counting,
fault injection, ...), in the style of Rust ``object_store``'s ``throttle``
and ``limit`` wrappers: it subclasses `WrappedStore`, overrides only the
verbs it changes, and never knows which backend it wraps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

from ..store import ObjectMeta, ObjectStore

__all__ = ["WrappedStore"]


class WrappedStore(ObjectStore):
    """Delegates every verb to ``inner``; subclasses override what they change."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.delete_batch_size = inner.delete_batch_size
        self.conditional_put = inner.conditional_put

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectMeta | None:
        return self.inner.head(key)

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        return self.inner.get(key, dest, size)

    def put(self, key: str, src: Path) -> ObjectMeta:
        return self.inner.put(key, src)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        return self.inner.put_if(key, data, version)

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        return self.inner.start_get(key, dest, size)

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        return self.inner.start_put(key, src)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
