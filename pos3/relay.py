"""Remote → remote: a root whose destination is a second store (`pos3 sync s3://a/x gs://b/y`).

A `Relay` is a `Root` run in the download direction whose "local" side is
the destination store's listing, so the one planner and the one executor
serve it unchanged:

* the plan compares the source listing, the destination listing and the
  records: a file is unchanged when both sides still match what was recorded
  when it was copied; a same-size file without a matching record is verified
  by comparing the two listings' MD5 (no data moves when both stores know it
  and it matches) and copied otherwise;
* a copy gets the object into a temporary file under the staging directory
  (``<cache_root>/.pos3-relay/``), puts it, and removes the file: at most
  ``max_workers`` objects are in transit at once, so disk use is bounded by
  ``max_workers`` times the largest object;
* deletes (with ``delete``) remove destination objects absent at the
  source, only after every copy succeeded, and only while this relay holds
  the lease on the destination prefix (`hold_lease`, as an upload with
  deletes does): a second writer with deletes there fails at the start,
  naming the holder. Lease objects are never copied, listed or deleted.

Records pair the destination's ``(size, version)`` with the source's; the
destination version is stored as a 63-bit hash in the record's local-token
column (a wrong "unchanged" needs a hash collision on a same-size rewrite).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from . import local as fs
from .lease import Lease, is_lease_key
from .local import LocalEntry
from .planner import Action, Direction, RemoteEntry
from .state import Record
from .store import ObjectMeta, ObjectStore
from .sync import Root, _Side
from .urls import RemoteURL

#: The staging directory's name under the cache root.
STAGING_DIR = ".pos3-relay"


@dataclass(frozen=True, slots=True)
class DestEntry(LocalEntry):
    """A destination object in the planner's "local" stream; ``mtime_ns`` holds `token` of its version."""

    meta: ObjectMeta


def token(meta: ObjectMeta) -> int:
    """A 63-bit integer standing for the object's change token (version, else size and mtime)."""
    version = RemoteEntry("", meta).version
    return int.from_bytes(hashlib.blake2b(version.encode(), digest_size=8).digest(), "big") >> 1


@dataclass
class Relay(Root):
    """``url``/``store`` is the source, ``dest_url``/``dest`` the destination, ``local`` the staging directory.

    Always run with ``Direction.DOWN`` (the source is the planner's remote side).
    """

    dest_url: RemoteURL = field(kw_only=True)
    dest: ObjectStore = field(kw_only=True)
    #: Both listings come from stores, and either may be out of byte order.
    sortable: ClassVar[frozenset[str]] = frozenset({"remote", "local"})
    #: Keys go from store to store: no local path, name or shape checks apply.
    has_local: ClassVar[bool] = False

    def dest_key(self, rel: str) -> str:
        """The destination key of ``rel``; a single object sent to a key ending in '/' keeps its name."""
        if not self.single:
            return self.dest_url.dir_prefix + rel
        key = self.dest_url.key
        return key + self.url.key.rsplit("/", 1)[-1] if not key or key.endswith("/") else key

    def hold_lease(self) -> None:
        """Take the lease on the destination prefix (a relay with deletes over a prefix); `LeaseConflict`
        names a live writer with deletes on an overlapping prefix. The caller releases ``self.lease``."""
        if not self.single:
            self.lease = Lease.acquire(self.dest, self.dest_url.dir_prefix, str(self.dest_url), root=str(self.url))

    def remote_entries(self, direction: Direction, seen: list[int]) -> Iterator[RemoteEntry]:
        # Keys become keys, never local paths: no local-path check.
        return super().remote_entries(Direction.UP, seen)

    def local_entries(self, direction: Direction, clean_temp: bool = False) -> Iterator[DestEntry]:
        """The destination's objects (directory markers included, as the source's are), sorted by
        ``rel`` where the store lists so."""
        if self.single:
            meta = self.dest.head(self.dest_url.key)
            if meta is not None:
                yield DestEntry("", meta.size, token(meta), meta)
            return
        prefix = self.dest_url.dir_prefix
        for meta in self.dest.list(prefix):
            rel = meta.key[len(prefix) :]
            if rel and not is_lease_key(rel):  # another writer's lease is never deleted
                yield DestEntry(rel, meta.size, token(meta), meta)

    def operations(self, direction: Direction) -> _Side:
        return _Relayed(self)

    def label(self, direction: Direction) -> str:
        return f"{self.url} → {self.dest_url}"


class _Relayed(_Side):
    """Source store → temporary file → destination store; deletes at the destination."""

    root: Relay

    def name(self, action: Action, qualified: bool = False) -> str:
        return self.root.dest_url.with_key(self.root.dest_key(action.rel)).shown(qualified)

    def source(self, action: Action, qualified: bool = False) -> str:
        return self.root.url.with_key(self.root.key(action.rel)).shown(qualified)

    def _record(self, rel: str, src: ObjectMeta, dst: ObjectMeta) -> Record:
        return Record(rel, dst.size, token(dst), src.size, RemoteEntry(rel, src).version)

    def equal_content(self, action: Action) -> bool | None:
        assert action.remote is not None and isinstance(action.local, DestEntry)
        src, dst = action.remote.meta.md5, action.local.meta.md5
        return None if src is None or dst is None else src == dst

    def verify(self, action: Action) -> Record:
        assert action.remote is not None and isinstance(action.local, DestEntry)
        if self.equal_content(action):
            return self._record(action.rel, action.remote.meta, action.local.meta)
        return self.copy(action)

    def copy(self, action: Action) -> Record:
        staging = self.root.local
        fs.make_dirs(staging)
        fd, name = tempfile.mkstemp(prefix=".pos3-tmp-relay-", dir=staging)
        os.close(fd)
        try:
            tmp = staging / os.path.basename(name)
            src = self.root.store.get(self.root.key(action.rel), tmp, action.size)
            dst = self.root.dest.put(self.root.dest_key(action.rel), tmp)
            return self._record(action.rel, src, dst)
        finally:
            os.unlink(name)

    def delete(self, actions: list[Action]) -> None:
        if self.root.lease is not None:
            self.root.lease.check()  # a relay whose lease was taken over deletes nothing
        self.root.dest.delete(self.root.dest_key(a.rel) for a in actions)
