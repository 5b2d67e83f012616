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

from .errors import user_facing
from .executor import DeleteRefused, SyncError
from .hookspecs import StoreSpec, hookimpl
from .integrity import IntegrityError
from .lease import LeaseConflict, LeaseLost
from .local import UnsafeKeyError
from .mirror import DEFAULT_CACHE_ROOT, Mirror, active
from .plans import PlannedAction, TransferPlan, plan_download, plan_upload
from .profiles import Profile, register_profile
from .signals import Terminated
from .store import Backend, ObjectMeta, ObjectStore, PreconditionFailed, StoreError

#: pos3 0.4.0's name for a failed transfer, kept so that ``except pos3.TransferError`` still works.
TransferError = SyncError

__all__ = [
    "Backend",
    "DeleteRefused",
    "IntegrityError",
    "LeaseConflict",
    "LeaseLost",
    "Mirror",
    "ObjectMeta",
    "ObjectStore",
    "PlannedAction",
    "PreconditionFailed",
    "Profile",
    "StoreError",
    "StoreSpec",
    "SyncError",
    "TransferError",
    "Terminated",
    "TransferPlan",
    "UnsafeKeyError",
    "download",
    "hookimpl",
    "ls",
    "mirror",
    "plan_download",
    "plan_upload",
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
    max_delete: int | float | None = None,
    max_upload_bytes_per_second: float | None = None,
    max_download_bytes_per_second: float | None = None,
) -> Mirror:
    """Context manager activating the sync environment.

    On a clean exit every registered upload is synced (after any background
    sync in flight finished) and a failed upload raises; on an exception,
    ``KeyboardInterrupt`` or non-zero ``SystemExit`` only registrations with
    ``sync_on_error=True`` are synced and the original exception propagates.
    SIGTERM raises `Terminated` (a ``SystemExit`` with code 143) in the main
    thread: an error exit, so ``sync_on_error=True`` uploads still run.
    ``max_delete`` limits every sync's deletes (see `download`) unless a call sets its own.

    ``max_upload_bytes_per_second`` / ``max_download_bytes_per_second`` cap the
    total rate of object bodies in each direction: one limit shared by every
    worker, part, store and profile of the mirror (``None``: full speed).
    """
    return Mirror(
        cache_root,
        show_progress,
        max_workers,
        default_profile,
        max_delete,
        max_upload_bytes_per_second=max_upload_bytes_per_second,
        max_download_bytes_per_second=max_download_bytes_per_second,
    )


@overload
def with_mirror(func: F, /) -> F: ...
@overload
def with_mirror(
    *,
    cache_root: str | os.PathLike[str] = ...,
    show_progress: bool = ...,
    max_workers: int = ...,
    default_profile: str | Profile | None = ...,
    max_delete: int | float | None = ...,
    max_upload_bytes_per_second: float | None = ...,
    max_download_bytes_per_second: float | None = ...,
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


@user_facing
def download(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    delete: bool = True,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
    max_delete: int | float | None = None,
    allow_wipe: bool = False,
) -> Path:
    """Make a local copy of ``remote`` now and return its path.

    Only changed files move; with ``delete`` local files absent remotely are
    removed (after every copy succeeded). A missing remote raises
    `FileNotFoundError`. A local path is returned unchanged.

    Delete guards (`DeleteRefused`, nothing deleted): a remote with no files
    never empties a non-empty local directory unless ``allow_wipe``; more
    deletes than ``max_delete`` (an int: a count; a float: a fraction of the
    destination's files; None: the mirror's limit) are refused.
    """
    return active().download(remote, local, delete, exclude, profile, max_delete, allow_wipe)


@user_facing
def upload(
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
    """Register a local path to be mirrored to ``remote`` every ``interval`` seconds and on exit.

    One listing request checks at once that the bucket exists and is reachable.
    Delete guards as in `download` (an empty local root never empties the remote
    unless ``allow_wipe``). Given a local path instead of a URL, creates that
    directory (if it is not a file) and returns it.
    """
    return active().upload(remote, local, interval, delete, sync_on_error, exclude, profile, max_delete, allow_wipe)


@user_facing
def sync(
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
    """Download ``remote`` (if it exists) to resume from it, then register it for upload.

    Delete guards as in `download`, in both directions.
    """
    return active().sync(
        remote, local, interval, delete_local, delete_remote, sync_on_error, exclude, profile, max_delete, allow_wipe
    )


@user_facing
def ls(prefix: str | os.PathLike[str], recursive: bool = False, profile: str | Profile | None = None) -> list[str]:
    """List a remote prefix as full URLs, or a local directory as paths (strings either way).

    Sub-directories end in '/'; ``recursive`` lists every file and every empty
    directory (directory marker) instead. A single object or file lists itself.
    URLs keep the profile the prefix named (``s3://NAME@bucket/...``), so they round-trip.
    """
    return active().ls(prefix, recursive, profile)
