"""One synced root: a remote location paired with a local path.

`Root.sync` is the whole pipeline for one direction: list both sides and
the records, plan, execute. Data flows one way:
listings → `planner.plan` → `executor.execute` → the store / the local disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from . import local as fs
from .cachelock import RootLock
from .executor import Operations, Summary, execute
from .lease import Lease, is_lease_key
from .patterns import Excluder
from .planner import Action, Direction, RemoteEntry, UnsortedListing, plan
from .state import Record, StateDB
from .store import ObjectMeta, ObjectStore, chain
from .urls import RemoteURL

log = logging.getLogger("pos3")

#: Uploads of a file that keeps changing while it is sent are retried this many times.
UNSTABLE_RETRIES = 3


@dataclass
class Root:
    """A remote location and its local copy.

    ``single`` is True when the remote is one object (and the local path one
    file) rather than a prefix and a directory.
    """

    url: RemoteURL
    store: ObjectStore
    local: Path
    single: bool
    exclude: Excluder
    state: StateDB
    lock_path: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set once the store was seen listing out of byte order: later runs sort first.
    sort_remote: bool = False
    #: The lease on the remote prefix, held by an upload or sync with remote deletes.
    lease: Lease | None = None

    # -- listings -------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.url.key if self.single else self.url.dir_prefix

    def key(self, rel: str) -> str:
        return self.prefix + rel if not self.single else self.url.key

    def remote_entries(self, direction: Direction, seen: list[int]) -> Iterator[RemoteEntry]:
        """The remote side, sorted by ``rel``; counts raw entries into ``seen[0]``.

        Directory markers (keys ending in '/') and lease objects are skipped. On download every
        key must map inside the local root, or `UnsafeKeyError` names it.
        """
        if self.single:
            meta = self.store.head(self.url.key)
            if meta is not None:
                seen[0] += 1
                yield RemoteEntry("", meta)
            return
        n = len(self.prefix)
        for meta in self.store.list(self.prefix):
            if is_lease_key(meta.key):
                continue
            seen[0] += 1
            rel = meta.key[n:]
            if not rel or (rel.endswith("/") and meta.size == 0):
                continue
            if direction is Direction.DOWN:
                fs.check_rel(rel, meta.key)
            yield RemoteEntry(rel, meta)

    def local_entries(self, direction: Direction) -> Iterator[fs.LocalEntry]:
        entries = fs.walk(self.local, self.exclude, clean_temp=direction is Direction.DOWN)
        return (e for e in entries if not is_lease_key(e.rel))  # never uploaded over a lease

    # -- the pipeline -------------------------------------------------------

    def sync(
        self,
        direction: Direction,
        *,
        delete: bool,
        max_workers: int,
        show_progress: bool,
        missing_ok: bool = False,
    ) -> Summary:
        """Make the destination match the source.

        One run at a time per root in this process, and per local path across
        processes (``lock_path``): ranks of one job sharing a cache take turns,
        and the later ones find the work done. A download of a remote with no
        objects raises `FileNotFoundError` (or, with ``missing_ok``, does
        nothing) and deletes nothing.
        """
        with self.lock, RootLock(self.lock_path) if self.lock_path else contextlib.nullcontext():
            try:
                return self._run(direction, delete, max_workers, show_progress, missing_ok)
            except UnsortedListing as exc:
                if exc.stream != "remote" or self.sort_remote:
                    raise
                # Some servers (SeaweedFS) list a directory's objects before its
                # siblings that sort earlier ("a/b" before "a-b"). Nothing was
                # deleted; what was copied is recorded. Plan again from a sorted copy.
                log.info("pos3: %s is not listed in byte order; sorting its listing in memory", self.url)
                self.sort_remote = True
                return self._run(direction, delete, max_workers, show_progress, missing_ok)

    def _run(
        self, direction: Direction, delete: bool, max_workers: int, show_progress: bool, missing_ok: bool
    ) -> Summary:
        seen = [0]
        remote = self.remote_entries(direction, seen)
        if self.sort_remote:
            remote = iter(sorted(remote, key=lambda e: e.rel))
        if direction is Direction.DOWN:
            remote = _prefetched(remote)  # learn whether the remote exists before planning
            if seen[0] == 0:
                if missing_ok:
                    return Summary()
                raise FileNotFoundError(f"No such remote: {self.url} (no object or prefix of that name)")
        actions = plan(
            direction,
            self.local_entries(direction),
            remote,
            self.state.records(),
            delete=delete,
            excluded=self.exclude.file if not self.single else (lambda rel: False),
        )
        ops = _Down(self) if direction is Direction.DOWN else _Up(self)
        what = f"{'↓' if direction is Direction.DOWN else '↑'} {self.url}"
        return execute(
            actions, ops.operations(), self.state, what=what, max_workers=max_workers, show_progress=show_progress
        )


def _prefetched(it: Iterator[RemoteEntry]) -> Iterator[RemoteEntry]:
    """Pull the first item now (so errors and emptiness surface early), then stream the rest."""
    try:
        first = next(it)
    except StopIteration:
        return iter(())

    def rest() -> Iterator[RemoteEntry]:
        yield first
        yield from it

    return rest()


def _changed_since(path: Path, before: os.stat_result) -> bool:
    """True if ``path`` was written to after ``before`` was taken (then an upload may be torn)."""
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        return False
    log.info("pos3: %s changed during its upload; sending it again", path)
    return True


def _record(rel: str, st: os.stat_result, meta: ObjectMeta) -> Record:
    entry = RemoteEntry(rel, meta)
    return Record(rel, st.st_size, st.st_mtime_ns, meta.size, entry.version)


class _Side:
    """The work of one direction; `verify` is shared: equal content hashes
    prove a file unchanged (and get recorded), anything else is copied."""

    def __init__(self, root: Root) -> None:
        self.root = root

    def operations(self) -> Operations:
        return Operations(self.copy, self.verify, self.delete, self.name, self.copy_async)

    def copy_async(self, action: Action) -> Future[Record] | None:
        """Start the copy on the store's own threads, or return ``None`` (then `copy` runs on a worker)."""
        return None

    def verify(self, action: Action) -> Record:
        assert action.remote is not None
        path = fs.target(self.root.local, action.rel)
        st = os.stat(path)
        md5 = action.remote.meta.md5
        if md5 is not None and fs.md5_digest(path).hex() == md5:
            return _record(action.rel, st, action.remote.meta)
        return self.copy(action)

    def copy(self, action: Action) -> Record:
        raise NotImplementedError

    def delete(self, actions: list[Action]) -> None:
        raise NotImplementedError

    def name(self, action: Action) -> str:
        raise NotImplementedError


class _Down(_Side):
    """Remote → local: atomic writes under the root, local deletes."""

    def __init__(self, root: Root) -> None:
        super().__init__(root)
        self._dirs: set[Path] = set()  # parents already created and checked in this run

    def name(self, action: Action) -> str:
        return str(fs.target(self.root.local, action.rel))

    def _prepare(self, action: Action) -> tuple[Path, Path]:
        """The final path and a fresh temporary path beside it, parents created and checked."""
        root = self.root
        dest = fs.target(root.local, action.rel)
        if dest.parent not in self._dirs:
            fs.prepare_parent(root.local, dest)
            self._dirs.add(dest.parent)
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(f"{dest} is a directory locally but a file remotely ({root.key(action.rel)})")
        return dest, fs.temp_beside(dest)

    def _finish(self, action: Action, dest: Path, tmp: Path, meta: ObjectMeta) -> Record:
        os.replace(tmp, dest)
        return _record(action.rel, os.stat(dest), meta)

    def copy(self, action: Action) -> Record:
        dest, tmp = self._prepare(action)
        try:
            meta = self.root.store.get(self.root.key(action.rel), tmp, action.size)
            return self._finish(action, dest, tmp, meta)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def copy_async(self, action: Action) -> Future[Record] | None:
        dest, tmp = self._prepare(action)
        started = self.root.store.start_get(self.root.key(action.rel), tmp, action.size)
        if started is None:
            return None

        def failed(exc: BaseException) -> BaseException:
            tmp.unlink(missing_ok=True)
            return exc

        return chain(started, lambda meta: self._finish(action, dest, tmp, meta), failed)

    def delete(self, actions: list[Action]) -> None:
        for action in actions:
            fs.remove_file(self.root.local, fs.target(self.root.local, action.rel))


class _Up(_Side):
    """Local → remote: whole-object puts, batched remote deletes."""

    def name(self, action: Action) -> str:
        return str(self.root.url.with_key(self.root.key(action.rel)))

    def copy(self, action: Action) -> Record:
        src = fs.target(self.root.local, action.rel)
        key = self.root.key(action.rel)
        for _ in range(UNSTABLE_RETRIES):
            before = os.stat(src)
            meta = self.root.store.put(key, src)
            if not _changed_since(src, before):
                break
        # Recorded as it was before the last attempt began: if it was still
        # changing, the next run sees a difference and uploads it again.
        return _record(action.rel, before, meta)

    def copy_async(self, action: Action) -> Future[Record] | None:
        src = fs.target(self.root.local, action.rel)
        key = self.root.key(action.rel)
        out: Future[Record] = Future()

        def attempt(n: int) -> bool:
            before = os.stat(src)
            started = self.root.store.start_put(key, src)
            if started is None:
                return False

            def sent(meta: ObjectMeta) -> None:
                if n + 1 < UNSTABLE_RETRIES and _changed_since(src, before) and attempt(n + 1):
                    return
                out.set_result(_record(action.rel, before, meta))

            chain(started, sent).add_done_callback(lambda f: f.exception() and out.set_exception(f.exception()))
            return True

        return out if attempt(0) else None

    def delete(self, actions: list[Action]) -> None:
        if self.root.lease is not None:
            self.root.lease.check()  # a writer whose lease was taken over deletes nothing
        self.root.store.delete(self.root.key(a.rel) for a in actions)
