"""pos3: object storage as simple as local files.

``with pos3.mirror():`` opens a sync environment; inside it ``download``,
``upload``, ``sync`` and ``ls`` turn remote URLs (``s3://bucket/key``, and any
scheme a store plugin registers) into plain local paths.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from .executor import SyncError
from .hookspecs import StoreSpec, hookimpl
from .lease import LeaseConflict, LeaseLost
from .local import UnsafeKeyError
from .mirror import DEFAULT_CACHE_ROOT, Mirror, active
from .profiles import Profile, register_profile
from .store import Backend, ObjectMeta, ObjectStore, PreconditionFailed, StoreError

__all__ = [
    "Backend",
    "LeaseConflict",
    "LeaseLost",
    "Mirror",
    "ObjectMeta",
    "ObjectStore",
    "PreconditionFailed",
    "Profile",
    "StoreError",
    "StoreSpec",
    "SyncError",
    "UnsafeKeyError",
    "download",
    "hookimpl",
    "ls",
    "mirror",
    "register_profile",
    "sync",
    "upload",
    "with_mirror",
]

F = TypeVar("F", bound=Callable[..., Any])


def mirror(
    cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT,
    show_progress: bool = True,
    max_workers: int = 10,
    default_profile: str | Profile | None = None,
) -> Mirror:
    """Context manager activating the sync environment.

    On a clean exit every registered upload is synced (after any background
    sync in flight finished) and a failed upload raises; on an exception,
    ``KeyboardInterrupt`` or non-zero ``SystemExit`` only registrations with
    ``sync_on_error=True`` are synced and the original exception propagates.
    """
    return Mirror(cache_root, show_progress, max_workers, default_profile)


@overload
def with_mirror(func: F, /) -> F: ...
@overload
def with_mirror(
    *,
    cache_root: str | os.PathLike[str] = ...,
    show_progress: bool = ...,
    max_workers: int = ...,
    default_profile: str | Profile | None = ...,
) -> Callable[[F], F]: ...
def with_mirror(func: Callable[..., Any] | None = None, /, **kwargs: Any) -> Any:
    """Decorator form of `mirror`: each call of the function runs inside a fresh mirror.

    Usable bare (``@pos3.with_mirror``) or with `mirror`'s arguments.
    """

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kw: Any) -> Any:
            with mirror(**kwargs):
                return f(*args, **kw)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def download(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    delete: bool = True,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
) -> Path:
    """Make a local copy of ``remote`` now and return its path.

    Only changed files move; with ``delete`` local files absent remotely are
    removed (after every copy succeeded). A missing remote raises
    `FileNotFoundError`. A local path is returned unchanged.
    """
    return active().download(remote, local, delete, exclude, profile)


def upload(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    interval: float | None = 300,
    delete: bool = True,
    sync_on_error: bool = False,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
) -> Path:
    """Register a local path to be mirrored to ``remote`` every ``interval`` seconds and on exit."""
    return active().upload(remote, local, interval, delete, sync_on_error, exclude, profile)


def sync(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    interval: float | None = 300,
    delete_local: bool = True,
    delete_remote: bool = True,
    sync_on_error: bool = False,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
) -> Path:
    """Download ``remote`` (if it exists) to resume from it, then register it for upload."""
    return active().sync(remote, local, interval, delete_local, delete_remote, sync_on_error, exclude, profile)


def ls(prefix: str | os.PathLike[str], recursive: bool = False, profile: str | Profile | None = None) -> list[Any]:
    """List a remote prefix (full URLs; sub-prefixes end in '/' unless ``recursive``) or a local directory (paths)."""
    return active().ls(prefix, recursive, profile)
