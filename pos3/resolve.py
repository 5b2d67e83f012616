"""One path from a location to a store: the Python API, plans and the command line all resolve here.

A location is a local path or a URL (the rule is in `pos3.urls`). A URL resolves to a `Location`:
its profile (the URL's ``NAME@``, else the call's ``profile=``, else the mirror's default), the store
for its bucket, and its local path (the one given, else the cache path). Every store a mirror uses is
created by `Resolver.store`: one backend client per (scheme, profile), one store per bucket, each
passed through the resolver's ``wrap`` (the place for wrapper stores).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import local as fs
from . import plugins, profiles
from .profiles import Profile
from .store import Backend, ObjectStore
from .urls import RemoteURL, is_url, parse


@dataclass(frozen=True)
class Location:
    """A resolved URL: where it is, with which profile, through which store, and its local path."""

    url: RemoteURL
    profile: Profile
    store: ObjectStore
    local_path: Path


class Resolver:
    """Resolves locations for one mirror and owns the backends it connects (closed by `close`)."""

    def __init__(
        self,
        cache_root: Path,
        max_workers: int,
        default_profile: str | Profile | None = None,
        wrap: Callable[[ObjectStore], ObjectStore] | None = None,
    ) -> None:
        self.cache_root = cache_root
        self.max_workers = max_workers
        self.wrap = wrap
        self._lock = threading.RLock()
        self._backends: dict[tuple[str, Profile], Backend] = {}
        self._stores: dict[tuple[str, Profile, str], ObjectStore] = {}
        #: Each name is looked up once per mirror (code registrations, then the profiles file).
        self._named: dict[str, Profile] = {}
        #: The profile using each cache directory in this mirror: two different ones never share one.
        self._local_names: dict[str, Profile] = {profiles.DEFAULT_LOCAL_NAME: profiles.DEFAULT}
        self.default_profile = profiles.DEFAULT
        self.default_profile = self.profile(default_profile)

    def locate(
        self,
        value: str | os.PathLike[str],
        profile: str | Profile | None = None,
        local: str | os.PathLike[str] | None = None,
    ) -> Location | Path:
        """A `Location` for a URL, or the local path unchanged (``Path(value)``) for a local path.

        An empty or malformed location raises `ValueError` before any request.
        """
        if not is_url(value, plugins.schemes()):
            return Path(value)
        return self.resolve(os.fspath(value), profile, local)

    def resolve(
        self, url: str, profile: str | Profile | None = None, local: str | os.PathLike[str] | None = None
    ) -> Location:
        """Resolve a URL (`ValueError` if it is not one, or is malformed; no request is made)."""
        parsed = parse(url)
        prof = self.profile(profile, parsed.profile)
        store = self.store(parsed, prof)
        path = Path(local).expanduser().absolute() if local is not None else self.cache_path(parsed, prof)
        return Location(parsed, prof, store, path)

    def profile(self, arg: str | Profile | None, url_profile: str | None = None) -> Profile:
        """The profile in effect: the URL's name wins over ``arg``, which wins over the mirror's default.

        An unknown name raises `ValueError`; a profile whose ``local_name`` another profile of this
        mirror already uses raises `ValueError` (they would share a cache directory).
        """
        chosen = url_profile if url_profile is not None else arg
        if chosen is None:
            return self.default_profile
        with self._lock:
            if isinstance(chosen, str):
                if chosen not in self._named:
                    self._named[chosen] = profiles.resolve(chosen)
                prof = self._named[chosen]
            else:
                prof = profiles.resolve(chosen)
            self._claim(prof)
            return prof

    def _claim(self, prof: Profile) -> None:
        other = self._local_names.setdefault(prof.local_name, prof)
        if other != prof:
            what = (
                "is reserved for the default profile"
                if prof.local_name == profiles.DEFAULT_LOCAL_NAME
                else f"is already used in this mirror by {other!r} ({profiles.differences(other, prof)})"
            )
            raise ValueError(f"{prof!r}: local_name {prof.local_name!r} {what}; give each profile its own local_name")

    def store(self, url: RemoteURL, profile: Profile) -> ObjectStore:
        """The store for ``url``'s bucket under ``profile``: the one place a mirror creates stores."""
        with self._lock:
            self._claim(profile)
            skey = (url.scheme, profile, url.bucket)
            if skey not in self._stores:
                bkey = (url.scheme, profile)
                if bkey not in self._backends:
                    spec = plugins.store_spec(url.scheme)
                    self._backends[bkey] = spec.connect(profile, self.max_workers)
                store = self._backends[bkey].store(url.bucket)
                self._stores[skey] = self.wrap(store) if self.wrap is not None else store
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

    def is_single(self, loc: Location) -> bool:
        """True when the URL names one existing object (one HEAD), not a prefix or a key ending in '/'."""
        key = loc.url.key
        if not key or key.endswith("/"):
            return False
        return loc.store.head(key) is not None

    def close(self) -> None:
        """Close every backend this resolver connected."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
