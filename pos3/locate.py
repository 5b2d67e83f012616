"""Unregistered roots for plans and the command line, resolved as the Python API resolves.

Every location goes through the mirror's `Resolver` (`pos3.resolve`): whether it is a URL,
its profile (the URL's ``NAME@``, else the argument, else the mirror's default), its store
and its local path. The roots built here share their records and cross-process locks with
the roots `pos3.download`/`upload` register, so a plan sees what the API recorded and a
command-line run and a job never sync one local path at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import plugins
from .mirror import STATE_DIR, Mirror
from .patterns import Excluder
from .planner import Direction
from .profiles import Profile
from .relay import STAGING_DIR, Relay
from .resolve import Location
from .state import StateDB, state_path
from .sync import Root
from .urls import is_url as _is_url

__all__ = ["Location", "is_single", "is_url", "overlap", "relay", "release", "resolve", "root"]


def is_url(value: str | os.PathLike[str]) -> bool:
    """True if ``value`` is meant as a URL rather than a local path (`ValueError` if empty)."""
    return _is_url(value, plugins.schemes())


def resolve(
    m: Mirror, url: str, profile: str | Profile | None = None, local: str | os.PathLike[str] | None = None
) -> Location:
    """Resolve ``url`` in mirror ``m``; its local path is ``local``, else its cache path.

    A malformed URL, an unknown profile or an unknown scheme raises (`ValueError`,
    `PluginError`) before any request; the mirror need not be entered.
    """
    return m.resolver.resolve(url, profile, local)


def is_single(m: Mirror, loc: Location) -> bool:
    """True when ``loc`` names one existing object (one HEAD), not a prefix."""
    return m.resolver.is_single(loc)


def release(m: Mirror) -> None:
    """Close the clients of a mirror that was used without being entered (plans, listings)."""
    m._close()


def root(
    m: Mirror,
    direction: Direction,
    remote: str,
    local: str | os.PathLike[str] | None,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    readonly: bool = True,
) -> Root:
    """An unregistered root between ``remote`` and its local path, for a plan or a one-shot run.

    It shares its records and its cross-process lock with the root `pos3.download`/`upload`
    would register, and is single (one object, one file) exactly when they would make it so.
    With ``readonly`` (plans) nothing is created; otherwise the caller closes ``root.state``.
    """
    loc = resolve(m, remote, profile, local)
    single = is_single(m, loc) if direction is Direction.DOWN else loc.local_path.is_file()
    state = StateDB(m.state_file(loc.url, loc.profile, loc.local_path, single), readonly=readonly)
    lock = None if readonly else m.lock_file(loc.local_path)
    return Root(loc.url, loc.store, loc.local_path, single, Excluder(exclude), state, lock)


def relay(
    m: Mirror,
    src: str,
    dst: str,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    readonly: bool,
) -> Relay:
    """A remote → remote root from ``src`` to ``dst`` (see `pos3.relay`).

    Single when ``src`` names one object; then ``dst`` is its new key (or, for a ``dst``
    ending in '/', the directory it goes into). Overlapping locations raise `ValueError`.
    With ``readonly`` (plans) nothing is created; otherwise the caller closes ``relay.state``.
    Copies to one destination take turns across processes.
    """
    a, b = resolve(m, src, profile), resolve(m, dst, profile)
    if overlap(a, b):
        raise ValueError(f"{src} and {dst} overlap: one would be copied into itself")
    single = is_single(m, a)
    state_dir = m.cache_root / STATE_DIR
    identity = "|".join(f"{x.url.scheme}|{x.profile.local_name}|{x.profile.endpoint}|{x.url}" for x in (a, b))
    state = StateDB(state_path(state_dir, f"relay|{identity}|{single}"), readonly=readonly)
    lock = None if readonly else state_path(state_dir, f"relay-dest|{b.url}").with_suffix(".lock")
    staging = m.cache_root / STAGING_DIR
    return Relay(a.url, a.store, staging, single, Excluder(exclude), state, lock, dest_url=b.url, dest=b.store)


def overlap(a: Location, b: Location) -> bool:
    """True when ``a`` and ``b`` are in the same bucket of the same service and one contains the other."""
    same = (a.url.scheme, a.url.bucket, a.profile.endpoint) == (b.url.scheme, b.url.bucket, b.profile.endpoint)
    ka, kb = a.url.key.rstrip("/"), b.url.key.rstrip("/")
    nested = ka == kb or not ka or not kb or kb.startswith(ka + "/") or ka.startswith(kb + "/")
    return same and nested
