"""The mirror lifecycle: one `Mirror` per ``with pos3.mirror():`` block.

It owns the registered roots, the background upload threads, the exit rules,
and a `Resolver` (`pos3.resolve`) that turns locations into stores and paths:

* a clean exit (no exception, or ``SystemExit`` with code 0/None) syncs
  every registered upload, each after its own background sync in flight; a
  failed final upload raises;
* any other exit (an exception, ``KeyboardInterrupt``, a non-zero
  ``SystemExit``) syncs only registrations with ``sync_on_error=True``, logs
  their failures, and lets the original exception through;
* SIGTERM (preemption) raises `pos3.Terminated` in the main thread, a
  ``SystemExit`` with code 143: an error exit as above, after which an
  uncaught `Terminated` ends the process with status 143 (128 + SIGTERM). A
  SIGTERM that arrives during the final uploads lets them finish, then raises
  `Terminated`. After a SIGTERM, a second SIGTERM or a SIGINT ends the process
  at once. The handler is installed only by a mirror entered from the main
  thread while SIGTERM has its default action; a program's own handler is
  left in charge (`pos3.signals` states every rule);
* either way, every background thread has ended when the block exits.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import local as fs
from .errors import user_facing
from .executor import DeleteGuard, Summary, SyncError, check_max_delete
from .lease import Lease, is_lease_key
from .patterns import Excluder
from .planner import Direction
from .profiles import Profile
from .resolve import Location, Resolver
from .signals import SignalGuard
from .state import StateDB, state_path
from .store import ObjectStore
from .sync import Root
from .urls import RemoteURL
from .wrappers.backoff import BackoffStore
from .wrappers.throttle import TokenBucket, throttled

log = logging.getLogger("pos3")

DEFAULT_CACHE_ROOT = "~/.cache/positronic/s3/"
STATE_DIR = ".pos3-state"

_active: Mirror | None = None
_active_lock = threading.Lock()


def active() -> Mirror:
    """The mirror of the enclosing ``with pos3.mirror():`` block."""
    m = _active
    if m is None:
        raise RuntimeError("pos3 operations must run inside an active `with pos3.mirror():` block")
    return m


@dataclass
class Registration:
    """A root registered by download/upload/sync and the arguments it was registered with."""

    kind: str  # "download", "upload" or "sync"
    root: Root
    profile: Profile
    args: tuple[Any, ...]
    interval: float | None = None
    delete_remote: bool = True
    sync_on_error: bool = False
    guard: DeleteGuard = DeleteGuard()
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def uploads(self) -> bool:
        return self.kind in ("upload", "sync")


class Mirror:
    """The sync environment of one ``with`` block (see `pos3.mirror`)."""

    def __init__(
        self,
        cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT,
        show_progress: bool = True,
        max_workers: int = 10,
        default_profile: str | Profile | None = None,
        max_delete: int | float | None = None,
        max_upload_bytes_per_second: float | None = None,
        max_download_bytes_per_second: float | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        check_max_delete(max_delete)
        self.max_delete = max_delete
        self.cache_root = Path(cache_root).expanduser().absolute()
        self.show_progress = show_progress
        self.max_workers = max_workers
        # One bucket per direction, shared by every store of this mirror.
        up = TokenBucket(max_upload_bytes_per_second) if max_upload_bytes_per_second is not None else None
        down = TokenBucket(max_download_bytes_per_second) if max_download_bytes_per_second is not None else None
        self.resolver = Resolver(
            self.cache_root, max_workers, default_profile, wrap=lambda s: BackoffStore(throttled(s, down, up))
        )
        self.default_profile = self.resolver.default_profile
        self._lock = threading.RLock()
        self._registrations: list[Registration] = []
        self._states: list[StateDB] = []
        self._signals = SignalGuard(inspect.unwrap(Mirror.__exit__).__code__)

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> Mirror:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("A pos3.mirror() block is already active; nested mirrors are not supported")
            _active = self
        try:
            fs.make_dirs(self.cache_root)
        except BaseException:
            with _active_lock:
                _active = None
            raise
        self._signals.enter()
        return self

    @user_facing
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Apply the exit rules (module docstring); SIGTERM meanwhile never interrupts them."""
        global _active
        failed = exc_type is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        final = [reg for reg in self._registrations if reg.uploads and (reg.sync_on_error or not failed)]
        with self._signals.exiting(exc, len(final)):
            try:
                for reg in self._registrations:
                    reg.stop.set()
                self._final_uploads(final, failed)
            finally:
                try:
                    self._join_background(self._registrations)
                finally:
                    self._close()
                    with _active_lock:
                        _active = None

    def _join_background(self, regs: list[Registration]) -> None:
        """Wait for the stopped background threads of ``regs``; a sync in flight finishes first."""
        for reg in regs:
            if reg.thread is not None:
                reg.thread.join()

    def _final_uploads(self, final: list[Registration], failed: bool) -> None:
        """Upload each registration of ``final`` (those the exit rules select), after its own background
        sync in flight (other roots' background syncs meanwhile finish on their threads)."""
        errors: list[tuple[str, BaseException]] = []
        for reg in final:
            try:
                self._join_background([reg])
                self._upload_now(reg)
            except Exception as exc:  # noqa: BLE001 - gathered and raised (or logged) below
                errors.append((str(reg.root.url), exc))
                if failed:  # the block's own exception propagates: this one is only logged
                    log.error("final upload of %s failed: %s", reg.root.url, exc)
        if errors and not failed:
            if len(errors) == 1:
                raise errors[0][1]
            raise SyncError("Final uploads", errors)

    def _close(self) -> None:
        for reg in self._registrations:
            if reg.root.lease is not None:
                reg.root.lease.release()
        for state in self._states:
            state.close()
        self.resolver.close()

    # -- stores and roots -----------------------------------------------------

    def store(self, url: RemoteURL, profile: Profile) -> ObjectStore:
        """The store for ``url``'s bucket under ``profile`` (see `Resolver.store`)."""
        return self.resolver.store(url, profile)

    def state_file(self, url: RemoteURL, profile: Profile, path: Path, single: bool) -> Path:
        """Where the records of the root (``url`` under ``profile``, local ``path``) live."""
        identity = f"{url.scheme}|{profile.local_name}|{profile.endpoint}|{url}|{path}|{single}"
        return state_path(self.cache_root / STATE_DIR, identity)

    def lock_file(self, path: Path) -> Path:
        """The lock that serialises syncs of the local ``path`` across processes."""
        return state_path(self.cache_root / STATE_DIR, str(path)).with_suffix(".lock")

    def _register(
        self,
        kind: str,
        loc: Location,
        path: Path,
        args: tuple[Any, ...],
        single: bool,
        exclude: Sequence[str] | None,
        **options: Any,
    ) -> tuple[Registration, bool]:
        """Register a root, or return the identical earlier one (with ``False``); raise on a conflict."""
        url, prof = loc.url, loc.profile
        for reg in self._registrations:
            if reg.root.local == path and reg.kind == kind and reg.args == args:
                return reg, False
            _check_conflict(reg, kind, url, prof, path)
        state = StateDB(self.state_file(url, prof, path, single))
        self._states.append(state)
        root = Root(url, loc.store, path, single, Excluder(exclude), state, self.lock_file(path))
        reg = Registration(kind, root, prof, args, **options)
        if reg.uploads and reg.delete_remote and not single:  # one writer with deletes per prefix
            root.lease = Lease.acquire(root.store, root.prefix, str(url), root=str(path))
        self._registrations.append(reg)
        return reg, True

    def _guard(self, max_delete: int | float | None, allow_wipe: bool) -> DeleteGuard:
        """The delete guard of one call: its own ``max_delete``, else the mirror's."""
        return DeleteGuard(self.max_delete if max_delete is None else max_delete, allow_wipe)

    def _check_destination(self, loc: Location, single: bool) -> None:
        """One listing request, at registration: the bucket exists and is reachable
        (`FileNotFoundError` / `PermissionError` now rather than at exit), and an
        upload would not make one key both an object and a prefix."""
        url = loc.url
        probe = url.key + "/" if single else url.key.rstrip("/")
        if single and (not url.key or url.key.endswith("/")):
            raise IsADirectoryError(f"Cannot upload a file to {url}: a URL ending in '/' names a prefix")
        listing = loc.store.list(probe)
        try:
            first = next(iter(listing), None)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"Cannot upload to {url}: bucket {url.bucket!r} not found ({exc})") from exc
        except PermissionError as exc:
            raise PermissionError(f"Cannot upload to {url}: listing bucket {url.bucket!r} was refused ({exc})") from exc
        finally:
            close = getattr(listing, "close", None)
            if close is not None:
                close()
        if first is None:
            return
        if single:
            raise IsADirectoryError(f"Cannot upload a file to {url}: {url.dir_prefix} is a prefix holding objects")
        if probe and first.key == probe:
            raise NotADirectoryError(f"Cannot upload a directory to {url}: an object exists at exactly that key")

    # -- the API --------------------------------------------------------------

    def download(
        self,
        remote: str | os.PathLike[str],
        local: str | os.PathLike[str] | None = None,
        delete: bool = True,
        exclude: Sequence[str] | None = None,
        profile: str | Profile | None = None,
        max_delete: int | float | None = None,
        allow_wipe: bool = False,
    ) -> Path:
        loc = self.resolver.locate(remote, profile, local)
        if isinstance(loc, Path):
            return loc
        path = loc.local_path
        guard = self._guard(max_delete, allow_wipe)  # per call: a refused download may be retried with a wider one
        args = (str(loc.url), loc.profile, delete, tuple(exclude or ()))
        with self._lock:
            single = self.resolver.is_single(loc)
            reg, _ = self._register("download", loc, path, args, single, exclude)
        reg.root.sync(
            Direction.DOWN, delete=delete, max_workers=self.max_workers, show_progress=self.show_progress, guard=guard
        )
        if not single:
            fs.make_dirs(path)  # a prefix holding only directory markers
        return path

    def upload(
        self,
        remote: str | os.PathLike[str],
        local: str | os.PathLike[str] | None = None,
        interval: float | None = 300,
        delete: bool = True,
        sync_on_error: bool = False,
        exclude: Sequence[str] | None = None,
        profile: str | Profile | None = None,
        max_delete: int | float | None = None,
        allow_wipe: bool = False,
    ) -> Path:
        loc = self.resolver.locate(remote, profile, local)
        if isinstance(loc, Path):
            path = loc.expanduser()
            if not path.is_file():
                fs.make_dirs(path)  # where the job writes its outputs
            return path
        path = loc.local_path
        _check_interval(interval)
        guard = self._guard(max_delete, allow_wipe)
        args = (str(loc.url), loc.profile, interval, delete, sync_on_error, tuple(exclude or ()), guard)
        options = {"interval": interval, "delete_remote": delete, "sync_on_error": sync_on_error, "guard": guard}
        with self._lock:
            single = path.is_file()
            if not any(r.args == args and r.root.local == path for r in self._registrations):
                self._check_destination(loc, single)
            reg, new = self._register("upload", loc, path, args, single, exclude, **options)
            if new and not single:
                fs.make_dirs(path)
        if new:
            self._start_background(reg)
        return path

    def sync(
        self,
        remote: str | os.PathLike[str],
        local: str | os.PathLike[str] | None = None,
        interval: float | None = 300,
        delete_local: bool = True,
        delete_remote: bool = True,
        sync_on_error: bool = False,
        exclude: Sequence[str] | None = None,
        profile: str | Profile | None = None,
        max_delete: int | float | None = None,
        allow_wipe: bool = False,
    ) -> Path:
        loc = self.resolver.locate(remote, profile, local)
        if isinstance(loc, Path):
            return loc
        path = loc.local_path
        _check_interval(interval)
        guard = self._guard(max_delete, allow_wipe)
        args = (
            str(loc.url),
            loc.profile,
            interval,
            delete_local,
            delete_remote,
            sync_on_error,
            tuple(exclude or ()),
            guard,
        )
        options = {"interval": interval, "delete_remote": delete_remote, "sync_on_error": sync_on_error, "guard": guard}
        with self._lock:
            single = self.resolver.is_single(loc) or path.is_file()
            if not any(r.args == args and r.root.local == path for r in self._registrations):
                self._check_destination(loc, single)
            reg, new = self._register("sync", loc, path, args, single, exclude, **options)
        if not new:
            return path
        try:
            # A remote that does not exist yet (a first run) is fine: there is nothing to resume.
            reg.root.sync(
                Direction.DOWN,
                delete=delete_local,
                max_workers=self.max_workers,
                show_progress=self.show_progress,
                missing_ok=True,
                guard=guard,
            )
        except BaseException:
            with self._lock:
                self._registrations.remove(reg)
            if reg.root.lease is not None:
                reg.root.lease.release()
            raise
        fs.make_dirs(path.parent if single else path)
        self._start_background(reg)
        return path

    # -- uploads --------------------------------------------------------------

    def _start_background(self, reg: Registration) -> None:
        if reg.interval is not None:
            name = f"pos3-upload {reg.root.url}"
            reg.thread = threading.Thread(target=self._background, args=(reg,), name=name, daemon=True)
            reg.thread.start()

    def _background(self, reg: Registration) -> None:
        """Sync ``reg`` every ``interval`` seconds (the first one interval after registering);
        a failure is logged and retried at the next interval."""
        assert reg.interval is not None
        while not reg.stop.wait(reg.interval):
            try:
                summary = self._upload_now(reg, show_progress=False)  # no bars in the middle of the job's output
                if summary.copied or summary.deleted:
                    log.info(
                        "background upload of %s: %d copied, %d deleted",
                        reg.root.url,
                        summary.copied,
                        summary.deleted,
                    )
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                log.warning("background upload of %s failed (retrying in %ss): %s", reg.root.url, reg.interval, exc)

    def _upload_now(self, reg: Registration, show_progress: bool | None = None) -> Summary:
        root = reg.root
        if not root.local.exists():
            raise FileNotFoundError(f"Cannot upload {root.local} to {root.url}: the local path no longer exists")
        progress = self.show_progress if show_progress is None else show_progress
        return root.sync(
            Direction.UP,
            delete=reg.delete_remote,
            max_workers=self.max_workers,
            show_progress=progress,
            guard=reg.guard,
        )

    # -- listing --------------------------------------------------------------

    def ls(
        self, prefix: str | os.PathLike[str], recursive: bool = False, profile: str | Profile | None = None
    ) -> list[str]:
        """Full URLs, or local paths as strings; directories end in '/' (see `pos3.ls`)."""
        loc = self.resolver.locate(prefix, profile)
        if isinstance(loc, Path):
            return _ls_local(loc.expanduser(), recursive)
        url, store = loc.url, loc.store
        dir_prefix = url.dir_prefix
        out: list[str] = []
        rels = (meta.key[len(dir_prefix) :] for meta in store.list(dir_prefix))
        for rel in _empty_markers_only(rels) if recursive else rels:
            if not rel or fs.is_temp(rel.rstrip("/").rsplit("/", 1)[-1]) or is_lease_key(rel):
                continue
            if not recursive and "/" in rel:
                rel = rel.split("/", 1)[0] + "/"
                if out and out[-1] == url.with_key(dir_prefix + rel).qualified:
                    continue
            out.append(url.with_key(dir_prefix + rel).qualified)
        if not out and url.key and not url.key.endswith("/") and store.head(url.key) is not None:
            out.append(url.qualified)
        return out


def _empty_markers_only(rels: Iterator[str]) -> Iterator[str]:
    """Drop each directory marker that a key inside its directory follows (sorted input):
    a recursive listing shows files and empty directories, as the local walk does."""
    held: str | None = None
    for rel in rels:
        if held is not None and not rel.startswith(held):
            yield held
        held = None
        if fs.is_marker(rel):
            held = rel
        else:
            yield rel
    if held is not None:
        yield held


def _ls_local(path: Path, recursive: bool) -> list[str]:
    """``path`` itself if it is a file; else its children (recursive: files and empty
    directories), sorted like remote keys, directories ending in '/'."""
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"No such local path: {path}")
    if recursive:
        return [str(path / e.rel) + ("/" if fs.is_marker(e.rel) else "") for e in fs.walk(path)]
    children = (p for p in path.iterdir() if not fs.is_temp(p.name))
    return sorted(str(p) + ("/" if p.is_dir() else "") for p in children)


def _nested(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _nested_keys(a: RemoteURL, b: RemoteURL) -> bool:
    """True if one location contains the other (whole path segments only)."""
    ka, kb = a.key.rstrip("/"), b.key.rstrip("/")
    return ka == kb or not ka or not kb or kb.startswith(ka + "/") or ka.startswith(kb + "/")


def _check_interval(interval: float | None) -> None:
    if interval is not None and interval <= 0:
        raise ValueError(f"interval must be positive seconds or None, got {interval}")


def _check_conflict(reg: Registration, kind: str, url: RemoteURL, prof: Profile, path: Path) -> None:
    """Raise `ValueError` if a new ``kind`` registration collides with ``reg``."""
    new, old = f"{kind}({url})", f"{reg.kind}({reg.root.url})"
    if reg.root.local == path:
        raise ValueError(f"{new} conflicts with {old}: both use the local path {path}")
    if reg.kind == "download" and kind == "download":
        return  # two read-only copies never interfere
    if _nested(reg.root.local, path):
        raise ValueError(f"{new} overlaps {old}: the local paths {path} and {reg.root.local} are nested")
    here = (url.scheme, url.bucket, prof.endpoint)
    there = (reg.root.url.scheme, reg.root.url.bucket, reg.profile.endpoint)
    if here == there and _nested_keys(reg.root.url, url):
        raise ValueError(f"{new} overlaps {old}: the remote locations are nested")
