"""One synced root: a remote location paired with a local path.

`Root.sync` is the whole pipeline for one direction: list both sides and
the records, plan (`Root.plan`), execute (`Root.execute`); `Root.preview`
is the same plan, settled and listed without executing it. Data flows one way:
listings → `planner.plan` → `executor.execute` → the store / the local disk.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from . import local as fs
from .cachelock import RootLock
from .executor import DeleteGuard, Operations, Summary, execute
from .handoff import Turns
from .lease import Lease, is_lease_key
from .patterns import Excluder
from .planner import Action, Direction, RemoteEntry, Tally, UnsortedListing, plan
from .state import Record, StateDB
from .store import ObjectMeta, ObjectStore, chain
from .urls import RemoteURL

log = logging.getLogger("pos3")

#: Uploads of a file that keeps changing while it is sent are retried this many times.
UNSTABLE_RETRIES = 3
#: A download reads this many remote entries (one S3 page) and checks their keys before its first transfer.
LOOKAHEAD = 1000

T = TypeVar("T")


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
    #: Streams seen listed out of byte order ("remote", or for a `Relay` also "local"): later runs sort them first.
    sorted_streams: set[str] = field(default_factory=set)
    #: The lease on the remote prefix, held by an upload or sync with remote deletes.
    lease: Lease | None = None
    #: The local filesystem's naming rules: limits before the first download's listing, then probed in full.
    names: fs.NameRules | None = None
    _probed: bool = False
    #: Keys of directory markers with a body already warned about (once per marker).
    warned_markers: set[str] = field(default_factory=set)
    #: The streams this root may sort in memory; any other stream out of order is an error.
    sortable: ClassVar[frozenset[str]] = frozenset({"remote"})
    #: False for a `Relay`, whose "local" side is a second store: no local path checks apply.
    has_local: ClassVar[bool] = True

    # -- listings -------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.url.key if self.single else self.url.dir_prefix

    def key(self, rel: str) -> str:
        return self.prefix + rel if not self.single else self.url.key

    def remote_entries(self, direction: Direction, seen: list[int]) -> Iterator[RemoteEntry]:
        """The remote side, sorted by ``rel``; counts raw entries into ``seen[0]``.

        Directory markers (keys ending in '/') are entries like files; the
        root's own marker (the prefix itself) and lease objects are skipped. A marker with a body
        is still a marker: its content is ignored, with one warning per key.
        On download every key must map inside the local root under
        ``self.names``, or
        `UnsafeKeyError` names it.
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
            if not rel:
                continue
            marker = fs.is_marker(rel)
            if marker and meta.size:
                self._warn_marker_body(meta)
            if direction is Direction.DOWN:
                fs.check_rel(rel[:-1] if marker else rel, meta.key, self.names)
            yield RemoteEntry(rel, meta)

    def _warn_marker_body(self, meta: ObjectMeta) -> None:
        if meta.key not in self.warned_markers:
            self.warned_markers.add(meta.key)
            log.warning(
                "%s is a directory marker (its key ends in '/') but holds %d bytes; "
                "treating it as a directory and ignoring its content",
                self.url.with_key(meta.key),
                meta.size,
            )

    def local_entries(self, direction: Direction, clean_temp: bool = False) -> Iterator[fs.LocalEntry]:
        entries = fs.walk(self.local, self.exclude, clean_temp=clean_temp)
        return (e for e in entries if not is_lease_key(e.rel))  # never uploaded over a lease

    def operations(self, direction: Direction) -> _Side:
        """The side-specific work of ``direction`` (copies, verifies, deletes)."""
        return _Down(self) if direction is Direction.DOWN else _Up(self)

    def label(self, direction: Direction) -> str:
        """How progress bars and errors name a run of this root."""
        return f"{'↓' if direction is Direction.DOWN else '↑'} {self.url}"

    # -- the pipeline: plan, then execute -------------------------------------

    def plan(
        self,
        direction: Direction,
        *,
        delete: bool,
        missing_ok: bool = False,
        dry_run: bool = False,
        tally: Tally | None = None,
    ) -> Iterator[Action]:
        """The actions making the destination match the source, as a lazy stream.

        A local path of the wrong kind (a file for a prefix, a directory for one
        object) raises; a download checks its first `LOOKAHEAD` keys before it
        returns, and a download of a remote with no objects raises
        `FileNotFoundError` (with ``missing_ok``, plans nothing). A stream out of
        byte order raises `UnsortedListing` while the plan is read. A real run
        removes leftover temporary downloads and probes the local filesystem
        (creating the root directory of a prefix); with ``dry_run`` planning
        changes nothing, so names the filesystem would fold together are not
        looked for.
        """
        what = self.label(direction)
        writes_local = self.has_local and direction is Direction.DOWN
        if self.has_local:
            fs.check_shape(self.local, self.single, what)
        local = self.local_entries(direction, clean_temp=writes_local and not dry_run)
        if "local" in self.sorted_streams:
            local = iter(sorted(local, key=lambda e: e.rel))
        if writes_local and self.names is None:
            self.names = fs.probe_limits(self.local.parent if self.single else self.local)
        seen = [0]
        remote = self.remote_entries(direction, seen)
        if "remote" in self.sorted_streams:
            remote = iter(sorted(remote, key=lambda e: e.rel))
        if direction is Direction.DOWN:
            if writes_local:
                remote = fs.without_file_dir_clashes(remote, lambda e: e.rel, lambda e: e.meta.key)
            head = list(itertools.islice(remote, LOOKAHEAD))  # keys checked before any transfer
            if seen[0] == 0:
                if missing_ok:
                    return iter(())
                raise FileNotFoundError(f"No such remote: {self.url} (no object or prefix of that name)")
            if writes_local and not dry_run and self._probe_names().folds:
                head += remote  # all keys, to find the names this filesystem folds together
                local = self._check_folds(head, local)
            remote = itertools.chain(head, remote)
        return plan(
            direction,
            local,
            remote,
            self.state.records(),
            delete=delete,
            excluded=self.exclude.file if not self.single else (lambda rel: False),
            tally=tally,
        )

    def execute(
        self,
        direction: Direction,
        actions: Iterable[Action],
        *,
        max_workers: int,
        show_progress: bool,
        guard: DeleteGuard,
        tally: Tally,
    ) -> Summary:
        """Run ``actions`` (see `executor.execute`): deletes run only after every copy
        succeeded, and only if ``guard`` allows them for what ``tally`` counted."""
        what = self.label(direction)
        return execute(
            actions,
            self.operations(direction).operations(),
            self.state,
            what=what,
            max_workers=max_workers,
            show_progress=show_progress,
            before_delete=lambda n: guard.check(what, n, tally),
        )

    def sync(
        self,
        direction: Direction,
        *,
        delete: bool,
        max_workers: int,
        show_progress: bool,
        missing_ok: bool = False,
        guard: DeleteGuard | None = None,
    ) -> Summary:
        """Make the destination match the source: `plan`, then `execute`.

        One run at a time per root in this process, and per local path across
        processes (``lock_path``): ranks of one job sharing a cache take turns.
        A process that waited while another completed the same sync, from a
        listing taken after this one asked, returns that result without
        listing again (`Summary.satisfied_by`; see `pos3.handoff`). A download of a remote with no
        objects raises `FileNotFoundError` (or, with ``missing_ok``, does
        nothing) and deletes nothing. A local path of the wrong kind (a file
        for a prefix, a directory for one object) raises before any transfer;
        deletes run only if ``guard`` allows them (`DeleteRefused` otherwise).
        """

        def run() -> Summary:
            tally = Tally()
            actions = self.plan(direction, delete=delete, missing_ok=missing_ok, tally=tally)
            return self.execute(
                direction,
                actions,
                max_workers=max_workers,
                show_progress=show_progress,
                guard=guard or DeleteGuard(),
                tally=tally,
            )

        turns = Turns(self.lock_path) if self.lock_path else None
        asked = turns.ask() if turns else 0
        identity = self._identity(direction, delete, missing_ok, guard)
        lock = RootLock(self.lock_path, fs.file_mode()) if self.lock_path else contextlib.nullcontext()
        with self.lock, lock:
            if turns is None:
                return self._sorting_retry(run)
            done = turns.reusable(identity, asked)
            if done is not None:  # another process synced the same, from a listing taken after we asked
                log.info("%s: completed by %s while this process waited", self.label(direction), done)
                return Summary(satisfied_by=str(done))
            generation = turns.start()
            # Nothing is deleted before the whole plan was read; what was copied is recorded.
            summary = self._sorting_retry(run)
            turns.complete(identity, generation)
            return summary

    def _identity(self, direction: Direction, delete: bool, missing_ok: bool, guard: DeleteGuard | None) -> str:
        """What makes two syncs of this root interchangeable (see `pos3.handoff`)."""
        return repr((direction.value, str(self.state.path), delete, missing_ok, self.exclude.patterns, guard))

    def preview(
        self, direction: Direction, *, delete: bool, missing_ok: bool = False, guard: DeleteGuard | None = None
    ) -> list[Action]:
        """What `sync` would do, changing nothing: its copies and deletes, in plan order.

        A verify (same size, no matching record) is settled as `sync` settles
        it: content hashes are compared (a local file is read to hash it) and
        the file is left out when they match; otherwise it becomes a copy with
        reason ``content differs``, or, when a side has no hash, ``changed
        since last sync`` (a record no longer matches) or ``unverified`` (no
        record). Forgets (records of files gone from both sides) are left out.
        Deletes that ``guard`` would refuse raise `DeleteRefused`, as in `sync`.
        """

        def run() -> list[Action]:
            ops = self.operations(direction)
            tally = Tally()
            out: list[Action] = []
            for action in self.plan(direction, delete=delete, missing_ok=missing_ok, dry_run=True, tally=tally):
                if action.kind == "verify":
                    same = ops.equal_content(action)
                    if same is True:
                        continue
                    if same is False:
                        reason = "content differs"
                    else:  # no hash to compare: copied to be sure
                        reason = action.reason if action.reason == "changed since last sync" else "unverified"
                    action = dataclasses.replace(action, kind="copy", reason=reason)
                if action.kind != "forget":
                    out.append(action)
            (guard or DeleteGuard()).check(self.label(direction), sum(a.kind == "delete" for a in out), tally)
            return out

        return self._sorting_retry(run)

    def _sorting_retry(self, run: Callable[[], T]) -> T:
        """Run ``run``; if a sortable stream came out of byte order, sort it in memory and run once more.

        Some servers (SeaweedFS) list a directory's objects before its
        siblings that sort earlier ("a/b" before "a-b"). Nothing was deleted;
        what was copied is recorded.
        """
        try:
            return run()
        except UnsortedListing as exc:
            if exc.stream not in self.sortable or exc.stream in self.sorted_streams:
                raise
            log.info("the %s listing of %s is not in byte order; sorting it in memory", exc.stream, self.url)
            self.sorted_streams.add(exc.stream)
            return run()

    def _probe_names(self) -> fs.NameRules:
        """Probe, once per root, what names the local filesystem accepts and folds
        (creating the root directory of a prefix, which the download needs anyway)."""
        if self.names is None or not self._probed:
            if not self.single:
                fs.make_dirs(self.local)
                self.names, self._probed = fs.probe(self.local), True
            else:
                self.names, self._probed = fs.probe_limits(self.local.parent), True
        return self.names

    def _check_folds(self, remote: list[RemoteEntry], local: Iterator[fs.LocalEntry]) -> Iterator[fs.LocalEntry]:
        """Refuse remote keys (or a remote key and a local path) that this filesystem folds to one name."""
        assert self.names is not None
        local_entries = list(local)
        pairs = [(e.rel, e.meta.key) for e in remote]
        pairs += [(e.rel, str(fs.target(self.local, e.rel))) for e in local_entries]
        clash = fs.fold_clashes(pairs, self.names)
        if clash is not None:
            raise fs.UnsafeKeyError(
                f"Refusing {clash[0]!r} and {clash[1]!r}: they differ only by case or Unicode normalisation, "
                f"which the filesystem of {self.local} treats as one name"
            )
        return iter(local_entries)


def _changed_since(path: Path, before: os.stat_result) -> bool:
    """True if ``path`` was written to after ``before`` was taken (then an upload may be torn,
    or refused by the store's checksum of a body that changed while it was read)."""
    after = os.stat(path)
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def _send_again(path: Path, before: os.stat_result, attempt: int) -> bool:
    """Whether to send ``path`` once more after send number ``attempt`` (from 0) ended, sent or failed."""
    if attempt + 1 >= UNSTABLE_RETRIES or not _changed_since(path, before):
        return False
    log.info("%s changed during its upload; sending it again", path)
    return True


def _record(rel: str, st: os.stat_result, meta: ObjectMeta) -> Record:
    entry = RemoteEntry(rel, meta)
    return Record(rel, st.st_size, st.st_mtime_ns, meta.size, entry.version)


class _Side:
    """The work of one direction; `verify` is shared: equal content hashes
    prove a file unchanged (and get recorded), anything else is copied."""

    #: How a plan line names this side's copies ("download", "upload", "copy").
    verb = "copy"

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
        if self.equal_content(action):
            return _record(action.rel, st, action.remote.meta)
        return self.copy(action)

    def equal_content(self, action: Action) -> bool | None:
        """Whether both sides of a verify hold the same content; ``None`` when the remote has no hash."""
        assert action.remote is not None
        md5 = action.remote.meta.md5
        if md5 is None:
            return None
        return fs.md5_digest(fs.target(self.root.local, action.rel)).hex() == md5

    def copy(self, action: Action) -> Record:
        raise NotImplementedError

    def delete(self, actions: list[Action]) -> None:
        raise NotImplementedError

    def name(self, action: Action, qualified: bool = False) -> str:
        """The destination of ``action`` (a local path or a URL), as errors name it; ``qualified``:
        a URL keeps its ``NAME@`` profile (plans, which pos3 returns, round-trip as `ls` output does)."""
        raise NotImplementedError

    def source(self, action: Action, qualified: bool = False) -> str:
        """The source of a copy (a URL or a local path); ``qualified`` as for `name`."""
        raise NotImplementedError


class _Down(_Side):
    """Remote → local: atomic writes under the root, local deletes."""

    def __init__(self, root: Root) -> None:
        super().__init__(root)
        self._dirs: set[Path] = set()  # parents already created and checked in this run
        #: The umask lets world-write through: create each temporary file first, without it.
        self._precreate = not fs.umask() & stat.S_IWOTH
        self._made: set[Path] = set()  # directories of markers copied in this run: deletes keep them

    verb = "download"

    def name(self, action: Action, qualified: bool = False) -> str:
        return str(fs.target(self.root.local, action.rel))

    def source(self, action: Action, qualified: bool = False) -> str:
        return self.root.url.with_key(self.root.key(action.rel)).shown(qualified)

    def _prepare(self, action: Action) -> tuple[Path, Path]:
        """The final path and a fresh temporary path beside it, parents created and checked."""
        root = self.root
        dest = fs.target(root.local, action.rel)
        if dest.parent not in self._dirs:
            fs.prepare_parent(root.local, dest)
            self._dirs.add(dest.parent)
        tmp = fs.temp_beside(dest)
        if self._precreate:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, fs.file_mode()))
        return dest, tmp

    def _finish(self, action: Action, dest: Path, tmp: Path, meta: ObjectMeta) -> Record:
        """Move the verified temporary file to its final name (never over a directory)."""
        try:
            os.replace(tmp, dest)
        except IsADirectoryError:
            key = self.root.key(action.rel)
            raise IsADirectoryError(f"{dest} is a directory locally but a file remotely ({key})") from None
        st = os.stat(dest)
        if st.st_mode & stat.S_IWOTH:  # only under a umask that lets world-write through
            fs.not_world_writable(dest, st.st_mode)
            st = os.stat(dest)
        return _record(action.rel, st, meta)

    def _mkdir(self, action: Action) -> Record:
        """A marker: make its (empty) directory, inside the root."""
        assert action.remote is not None
        dest = fs.target(self.root.local, action.rel)
        fs.prepare_parent(self.root.local, dest)
        fs.make_dirs(dest)
        self._made.add(dest)
        return _record(action.rel, os.stat(dest), action.remote.meta)

    def copy(self, action: Action) -> Record:
        if fs.is_marker(action.rel):
            return self._mkdir(action)
        dest, tmp = self._prepare(action)
        try:
            meta = self.root.store.get(self.root.key(action.rel), tmp, action.size)
            return self._finish(action, dest, tmp, meta)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def copy_async(self, action: Action) -> Future[Record] | None:
        if fs.is_marker(action.rel):
            return None
        dest, tmp = self._prepare(action)
        started = self.root.store.start_get(self.root.key(action.rel), tmp, action.size)
        if started is None:
            return None

        def failed(exc: BaseException) -> BaseException:
            tmp.unlink(missing_ok=True)
            return exc

        return chain(started, lambda meta: self._finish(action, dest, tmp, meta), failed)

    def delete(self, actions: list[Action]) -> None:
        """Delete files, and the empty directories of stale markers (never a non-empty one);
        directories left empty go too, except those of markers copied in this run."""
        for action in actions:
            remove = fs.remove_dir if fs.is_marker(action.rel) else fs.remove_file
            remove(self.root.local, fs.target(self.root.local, action.rel), self._made)


class _Up(_Side):
    """Local → remote: whole-object puts, batched remote deletes."""

    verb = "upload"

    def __init__(self, root: Root) -> None:
        super().__init__(root)
        self._markers: set[str] = set()  # markers put in this run

    def name(self, action: Action, qualified: bool = False) -> str:
        return self.root.url.with_key(self.root.key(action.rel)).shown(qualified)

    def source(self, action: Action, qualified: bool = False) -> str:
        return str(fs.target(self.root.local, action.rel))

    def _put_marker(self, rel: str) -> Record:
        """A marker: an empty object at ``prefix + rel`` (the key ends in '/')."""
        st = os.stat(fs.target(self.root.local, rel))
        fd, empty = tempfile.mkstemp(prefix=fs.TMP_PREFIX)
        os.close(fd)
        try:
            meta = self.root.store.put(self.root.key(rel), Path(empty))
        finally:
            os.unlink(empty)
        self._markers.add(rel)
        return _record(rel, st, meta)

    def copy(self, action: Action) -> Record:
        if fs.is_marker(action.rel):
            return self._put_marker(action.rel)
        src = fs.target(self.root.local, action.rel)
        key = self.root.key(action.rel)
        attempt = 0
        while True:
            before = os.stat(src)
            try:
                meta = self.root.store.put(key, src)
            except Exception:
                if _send_again(src, before, attempt):  # a put refused because the file changed under it
                    attempt += 1
                    continue
                raise
            if not _send_again(src, before, attempt):
                # Recorded as it was before this send began: if it was still
                # changing, the next run sees a difference and uploads it again.
                return _record(action.rel, before, meta)
            attempt += 1

    def copy_async(self, action: Action) -> Future[Record] | None:
        if fs.is_marker(action.rel):
            return None
        src = fs.target(self.root.local, action.rel)
        key = self.root.key(action.rel)
        out: Future[Record] = Future()

        def start(attempt: int) -> bool:
            """Start one send; False when the store has no native put for the file (as it is now)."""
            before = os.stat(src)
            started = self.root.store.start_put(key, src)
            if started is None:
                return False

            def ended(sent: Future[ObjectMeta]) -> None:  # on the store's thread: short
                try:
                    if _send_again(src, before, attempt) and start(attempt + 1):
                        return
                    exc = sent.exception()
                    if exc is not None:
                        out.set_exception(exc)
                    else:
                        out.set_result(_record(action.rel, before, sent.result()))
                except BaseException as err:  # noqa: BLE001 - the file vanished, or a send failed to start
                    out.set_exception(err)

            started.add_done_callback(ended)
            return True

        return out if start(0) else None

    def delete(self, actions: list[Action]) -> None:
        """Delete the keys; then put again each marker of this run that had keys deleted
        inside it (a store may drop a directory with its last object, as file:// does)."""
        if self.root.lease is not None:
            self.root.lease.check()  # a writer whose lease was taken over deletes nothing
        self.root.store.delete(self.root.key(a.rel) for a in actions)
        rels = [a.rel for a in actions]  # sorted: the plan's order
        for rel in sorted(self._markers):
            i = bisect.bisect_right(rels, rel)
            if i < len(rels) and rels[i].startswith(rel):
                self._put_marker(rel)
