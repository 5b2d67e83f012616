"""The mirror lifecycle: one `Mirror` per ``with pos3.mirror():`` block.

It owns the stores (one backend client per profile), the registered roots,
the background upload threads, and the exit rules:

* a clean exit (no exception, or ``SystemExit`` with code 0/None) waits for
  in-flight background syncs, then syncs every registered upload; a failed
  final upload raises;
* any other exit (an exception, ``KeyboardInterrupt``, a non-zero
  ``SystemExit``) syncs only registrations with ``sync_on_error=True``, logs
  their failures, and lets the original exception through.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import local as fs
from . import plugins, profiles
from .executor import Summary, SyncError
from .lease import Lease, is_lease_key
from .patterns import Excluder
from .planner import Direction
from .profiles import Profile
from .state import StateDB, state_path
from .store import Backend, ObjectStore
from .sync import Root
from .urls import RemoteURL, is_remote, parse

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
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.cache_root = Path(cache_root).expanduser().absolute()
        self.show_progress = show_progress
        self.max_workers = max_workers
        self.default_profile = profiles.resolve(default_profile)
        self._lock = threading.RLock()
        self._backends: dict[tuple[str, Profile], Backend] = {}
        self._stores: dict[tuple[str, Profile, str], ObjectStore] = {}
        self._registrations: list[Registration] = []
        self._states: list[StateDB] = []

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> Mirror:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("A pos3.mirror() block is already active; nested mirrors are not supported")
            _active = self
        self.cache_root.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        global _active
        failed = exc_type is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        try:
            self._stop_background()
            self._final_uploads(failed)
        finally:
            self._close()
            with _active_lock:
                _active = None

    def _stop_background(self) -> None:
        """Stop every background thread, waiting for a sync in flight to finish."""
        for reg in self._registrations:
            reg.stop.set()
        for reg in self._registrations:
            if reg.thread is not None:
                reg.thread.join()

    def _final_uploads(self, failed: bool) -> None:
        errors: list[tuple[str, BaseException]] = []
        for reg in self._registrations:
            if not reg.uploads or (failed and not reg.sync_on_error):
                continue
            try:
                self._upload_now(reg)
            except Exception as exc:  # noqa: BLE001 - gathered and raised (or logged) below
                errors.append((str(reg.root.url), exc))
                log.error("pos3: final upload of %s failed: %s", reg.root.url, exc)
        if errors and not failed:
            if len(errors) == 1:
                raise errors[0][1]
            raise SyncError("Final uploads", errors) from errors[0][1]

    def _close(self) -> None:
        for reg in self._registrations:
            if reg.root.lease is not None:
                reg.root.lease.release()
        for state in self._states:
            state.close()
        for backend in self._backends.values():
            backend.close()

    # -- stores and roots -----------------------------------------------------

    def store(self, url: RemoteURL, profile: Profile) -> ObjectStore:
        """The store for ``url``'s bucket under ``profile`` (one backend client per profile)."""
        with self._lock:
            skey = (url.scheme, profile, url.bucket)
            if skey not in self._stores:
                bkey = (url.scheme, profile)
                if bkey not in self._backends:
                    spec = plugins.store_spec(url.scheme)
                    self._backends[bkey] = spec.connect(profile, self.max_workers)
                self._stores[skey] = self._backends[bkey].store(url.bucket)
            return self._stores[skey]

    def cache_path(self, url: RemoteURL, profile: Profile) -> Path:
        """``cache_root / <profile local_name> / <bucket> / <key>`` for ``s3://``;
        other schemes use ``<local_name>.<scheme>`` so that ``gs://data`` and
        ``s3://data`` never share a directory."""
        key = url.key.rstrip("/")
        if key:
            fs.check_rel(key, url.key)
        top = profile.local_name if url.scheme == "s3" else f"{profile.local_name}.{url.scheme}"
        return fs.target(self.cache_root / top / url.bucket, key)

    def _resolve(
        self, remote: str, local: str | os.PathLike[str] | None, profile: str | Profile | None
    ) -> tuple[RemoteURL, Profile, Path]:
        url = parse(remote)
        prof = profiles.resolve(profile, self.default_profile)
        path = Path(local).expanduser().absolute() if local is not None else self.cache_path(url, prof)
        return url, prof, path

    def _register(
        self,
        kind: str,
        url: RemoteURL,
        prof: Profile,
        path: Path,
        args: tuple[Any, ...],
        single: bool,
        exclude: Sequence[str] | None,
        **options: Any,
    ) -> tuple[Registration, bool]:
        """Register a root, or return the identical earlier one (with ``False``); raise on a conflict."""
        for reg in self._registrations:
            if reg.root.local == path and reg.kind == kind and reg.args == args:
                return reg, False
            _check_conflict(reg, kind, url, prof, path)
        state_dir = self.cache_root / STATE_DIR
        identity = f"{url.scheme}|{prof.local_name}|{prof.endpoint}|{url}|{path}|{single}"
        state = StateDB(state_path(state_dir, identity))
        self._states.append(state)
        lock = state_path(state_dir, str(path)).with_suffix(".lock")
        root = Root(url, self.store(url, prof), path, single, Excluder(exclude), state, lock)
        reg = Registration(kind, root, prof, args, **options)
        if reg.uploads and reg.delete_remote and not single:  # one writer with deletes per prefix
            root.lease = Lease.acquire(root.store, root.prefix, str(url))
        self._registrations.append(reg)
        return reg, True

    def _is_single_remote(self, url: RemoteURL, prof: Profile) -> bool:
        """True when ``url`` names one object (not a prefix ending in '/')."""
        if not url.key or url.key.endswith("/"):
            return False
        return self.store(url, prof).head(url.key) is not None

    # -- the API --------------------------------------------------------------

    def download(
        self,
        remote: str | os.PathLike[str],
        local: str | os.PathLike[str] | None = None,
        delete: bool = True,
        exclude: Sequence[str] | None = None,
        profile: str | Profile | None = None,
    ) -> Path:
        if not is_remote(remote):
            return Path(remote)
        url, prof, path = self._resolve(str(remote), local, profile)
        args = (str(url), prof, delete, tuple(exclude or ()))
        with self._lock:
            single = self._is_single_remote(url, prof)
            reg, _ = self._register("download", url, prof, path, args, single, exclude)
        reg.root.sync(Direction.DOWN, delete=delete, max_workers=self.max_workers, show_progress=self.show_progress)
        if not single:
            path.mkdir(parents=True, exist_ok=True)  # a prefix holding only directory markers
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
    ) -> Path:
        if not is_remote(remote):
            return Path(remote)
        url, prof, path = self._resolve(str(remote), local, profile)
        _check_interval(interval)
        args = (str(url), prof, interval, delete, sync_on_error, tuple(exclude or ()))
        options = {"interval": interval, "delete_remote": delete, "sync_on_error": sync_on_error}
        with self._lock:
            single = path.is_file()
            reg, new = self._register("upload", url, prof, path, args, single, exclude, **options)
            if new and not single:
                path.mkdir(parents=True, exist_ok=True)
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
    ) -> Path:
        if not is_remote(remote):
            return Path(remote)
        url, prof, path = self._resolve(str(remote), local, profile)
        _check_interval(interval)
        args = (str(url), prof, interval, delete_local, delete_remote, sync_on_error, tuple(exclude or ()))
        options = {"interval": interval, "delete_remote": delete_remote, "sync_on_error": sync_on_error}
        with self._lock:
            single = self._is_single_remote(url, prof) or path.is_file()
            reg, new = self._register("sync", url, prof, path, args, single, exclude, **options)
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
            )
        except BaseException:
            with self._lock:
                self._registrations.remove(reg)
            if reg.root.lease is not None:
                reg.root.lease.release()
            raise
        (path.parent if single else path).mkdir(parents=True, exist_ok=True)
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
                        "pos3: background upload of %s: %d copied, %d deleted",
                        reg.root.url,
                        summary.copied,
                        summary.deleted,
                    )
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                log.warning(
                    "pos3: background upload of %s failed (retrying in %ss): %s", reg.root.url, reg.interval, exc
                )

    def _upload_now(self, reg: Registration, show_progress: bool | None = None) -> Summary:
        root = reg.root
        if not root.local.exists():
            raise FileNotFoundError(f"Cannot upload {root.local} to {root.url}: the local path no longer exists")
        progress = self.show_progress if show_progress is None else show_progress
        return root.sync(Direction.UP, delete=reg.delete_remote, max_workers=self.max_workers, show_progress=progress)

    # -- listing --------------------------------------------------------------

    def ls(self, prefix: str | os.PathLike[str], recursive: bool = False, profile: str | Profile | None = None) -> list:
        if not is_remote(prefix):
            return _ls_local(Path(prefix).expanduser(), recursive)
        url = parse(str(prefix))
        prof = profiles.resolve(profile, self.default_profile)
        store = self.store(url, prof)
        dir_prefix = url.dir_prefix
        out: list[str] = []
        for meta in store.list(dir_prefix):
            rel = meta.key[len(dir_prefix) :]
            if not rel or fs.is_temp(rel.rsplit("/", 1)[-1]) or is_lease_key(rel):
                continue
            if not recursive and "/" in rel:
                child = str(url.with_key(dir_prefix + rel.split("/", 1)[0] + "/"))
                if not out or out[-1] != child:
                    out.append(child)
                continue
            if rel.endswith("/"):
                continue
            out.append(str(url.with_key(meta.key)))
        if not out and url.key and not url.key.endswith("/") and store.head(url.key) is not None:
            out.append(str(url))
        return out


def _ls_local(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"No such local path: {path}")
    if recursive:
        return [fs.target(path, e.rel) for e in fs.walk(path)]
    return sorted(p for p in path.iterdir() if not fs.is_temp(p.name))


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
