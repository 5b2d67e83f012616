"""`FaultyStore`: a store that runs a hook before each verb, to inject failures in tests.

A hook receives the key (the prefix for ``list``, the list of keys for
``delete``) and raises to make that call fail; returning lets the call reach
the wrapped store unchanged. Ready-made hooks: `fail_keys` (these keys always
fail), `fail_nth` (the n-th call fails) and `fail_first` (the first n calls
fail). All are thread-safe. For faults on the wire (resets, 5xx, corrupted
bodies) use `pos3.testing.faultproxy` instead::

    store = FaultyStore(real, put=fail_keys({"ckpt/a"}), get=fail_nth(3))
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..store import ObjectMeta, ObjectStore, StoreError
from . import WrappedStore

__all__ = ["FaultyStore", "fail_first", "fail_keys", "fail_nth", "injected"]

Hook = Callable[[Any], None]


def injected(what: Any) -> BaseException:
    """The default injected exception: a `StoreError` naming what failed."""
    return StoreError(f"injected failure for {what}")


def fail_keys(keys: Collection[str], error: Callable[[Any], BaseException] = injected) -> Hook:
    """A hook failing every call for one of ``keys`` (for ``delete``: any batch holding one)."""
    wanted = frozenset(keys)

    def hook(arg: Any) -> None:
        hit = [k for k in arg if k in wanted] if isinstance(arg, list) else ([arg] if arg in wanted else [])
        if hit:
            raise error(hit[0])

    return hook


def _counted(fails: Callable[[int], bool], error: Callable[[Any], BaseException]) -> Hook:
    counter = itertools.count(1)
    lock = threading.Lock()

    def hook(arg: Any) -> None:
        with lock:
            n = next(counter)
        if fails(n):
            raise error(arg)

    return hook


def fail_nth(n: int, error: Callable[[Any], BaseException] = injected) -> Hook:
    """A hook failing only the ``n``-th call (counting from 1, across threads)."""
    return _counted(lambda i: i == n, error)


def fail_first(n: int, error: Callable[[Any], BaseException] = injected) -> Hook:
    """A hook failing the first ``n`` calls, then letting every call through."""
    return _counted(lambda i: i <= n, error)


class FaultyStore(WrappedStore):
    """Runs the hook given for a verb before delegating it; a raising hook fails the call.

    Native asynchronous transfers stay native: a failing hook on ``get``/``put``
    makes `start_get`/`start_put` return an already failed future.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        list: Hook | None = None,  # noqa: A002 - named after the verb
        head: Hook | None = None,
        get: Hook | None = None,
        put: Hook | None = None,
        delete: Hook | None = None,
    ) -> None:
        super().__init__(inner)
        self.hooks: dict[str, Hook | None] = {"list": list, "head": head, "get": get, "put": put, "delete": delete}

    def _run(self, verb: str, arg: Any) -> None:
        hook = self.hooks[verb]
        if hook is not None:
            hook(arg)

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        self._run("list", prefix)
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectMeta | None:
        self._run("head", key)
        return self.inner.head(key)

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        self._run("get", key)
        return self.inner.get(key, dest, size)

    def put(self, key: str, src: Path) -> ObjectMeta:
        self._run("put", key)
        return self.inner.put(key, src)

    def delete(self, keys: Iterable[str]) -> None:
        keys = [*keys]
        self._run("delete", keys)
        self.inner.delete(keys)

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        return self._start("get", key, lambda: self.inner.start_get(key, dest, size))

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        return self._start("put", key, lambda: self.inner.start_put(key, src))

    def _start(self, verb: str, key: str, start: Callable[[], Future[ObjectMeta] | None]) -> Future[ObjectMeta] | None:
        try:
            self._run(verb, key)
        except Exception as exc:  # noqa: BLE001 - handed over through the future
            failed: Future[ObjectMeta] = Future()
            failed.set_exception(exc)
            return failed
        return start()
