"""Leases: one writer with deletes per remote prefix, enforced by the store's conditional writes.

An upload or sync that deletes remote objects holds a lease on its prefix: the
object ``<prefix>.pos3-lease`` (`LEASE_NAME`), a few hundred bytes of JSON naming
the holder (host, pid, a random token, since when, and until when). It is
created with a conditional create (`ObjectStore.put_if`, ``If-None-Match: *``),
renewed every third of its time to live by a conditional update naming the
version last written (``If-Match``), and deleted when the registration ends.

* Overlaps: a lease on ``a/`` conflicts with one on ``a/b/`` and with one on
  ``""`` (the whole bucket). After creating its own lease object, a writer looks
  at the lease objects of every ancestor prefix (one HEAD/GET each) and of
  every descendant (one listing of its prefix); a live one held by anyone else
  makes it release its own and fail with `LeaseConflict` naming the holder.
  Two writers racing never both succeed: each checks after its own create is
  visible, so at least the later one sees the earlier.
* Expiry: a lease not renewed for `ttl` seconds (the holder was killed) is
  taken over by a conditional update of the version read; of several writers
  taking it over at once, exactly one succeeds. A lease whose holder is known
  to be dead is taken over at once, without waiting for expiry: on Linux a
  lease records the host's boot id, the holder's PID namespace and its process
  start time, so a writer on the same host and namespace sees that the holder's
  process is gone (a job restarted after a crash or SIGKILL on the same host). Expiry compares the holder's
  wall clock with the reader's: hosts must agree on the time within a
  fraction of `ttl`.
* One writer is one local tree: processes of one host that sync the *same
  local root* to the prefix (ranks of one job sharing a cache) are one writer
  and share the lease. The first takes it; the others join it (the lease
  records the local root) and take it over when its holder leaves or dies.
  Another local root, host or job is a second writer.
* A holder that finds its lease taken over (renewals failed for a whole
  `ttl`, and another writer took it) deletes nothing from then on: `check`
  raises `LeaseLost` before every remote delete.
* Lease objects never appear in downloads, plans, deletes or `ls`
  (`is_lease_key`); a local file of that name is never uploaded.

The time to live is `DEFAULT_TTL` (10 minutes), or the ``POS3_LEASE_TTL``
environment variable in seconds (short values for tests).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .store import ObjectStore, PreconditionFailed

log = logging.getLogger("pos3")

#: The name of a lease object, right under the prefix it covers.
LEASE_NAME = ".pos3-lease"
#: Seconds a lease lives without renewal; renewed every third of it.
DEFAULT_TTL = 600.0
TTL_ENV = "POS3_LEASE_TTL"
#: Attempts at creating or taking over a lease that others keep changing.
_ATTEMPTS = 5


class LeaseConflict(RuntimeError):
    """Another live writer with deletes holds a lease on the same or an overlapping prefix."""


class LeaseLost(LeaseConflict):
    """This writer's lease was taken over by another after it expired: no more remote deletes."""


def lease_key(prefix: str) -> str:
    """The key of the lease on ``prefix`` (``""`` or a prefix ending in ``/``)."""
    return prefix + LEASE_NAME


def is_lease_key(key: str) -> bool:
    """True for a lease object's key (or a relative path naming one)."""
    return key.rsplit("/", 1)[-1] == LEASE_NAME


def ttl_from_env() -> float:
    """`DEFAULT_TTL`, or ``POS3_LEASE_TTL`` seconds when set."""
    raw = os.environ.get(TTL_ENV)
    if not raw:
        return DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        raise ValueError(f"{TTL_ENV} must be a number of seconds, got {raw!r}") from None
    if ttl <= 0:
        raise ValueError(f"{TTL_ENV} must be positive, got {raw!r}")
    return ttl


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _identity(pid: int) -> tuple[str, str, str]:
    """(boot id, PID namespace, start time) of process ``pid`` on Linux; '' for what is unknown
    (the start time is '' when no such process exists)."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    try:
        pidns = str(os.stat(f"/proc/{os.getpid()}/ns/pid").st_ino)
    except OSError:
        pidns = ""
    stat = _read_text(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[-1].split()
    started = fields[19] if len(fields) > 19 else ""  # field 22 of /proc/PID/stat: start time in ticks
    return boot, pidns, started


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Holder:
    """What a lease object says about the writer holding it."""

    url: str
    host: str
    pid: int
    token: str
    since: float
    expires: float
    #: Where and which process: the host's boot id, the PID namespace and the process start time
    #: (Linux; empty elsewhere). They let a writer on the same host tell that the holder is gone.
    boot: str = ""
    pidns: str = ""
    started: str = ""
    #: The local root the holder syncs: processes of one host syncing one root are one writer.
    root: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder:
        fields = json.loads(data)
        return cls(
            str(fields["url"]),
            str(fields["host"]),
            int(fields["pid"]),
            str(fields["token"]),
            float(fields["since"]),
            float(fields["expires"]),
            str(fields.get("boot", "")),
            str(fields.get("pidns", "")),
            str(fields.get("started", "")),
            str(fields.get("root", "")),
        )

    def same_writer(self, other: Holder) -> bool:
        """True when ``other`` syncs the same local root on the same host (and boot): one writer."""
        return bool(self.root and self.boot) and (self.root, self.host, self.boot) == (
            other.root,
            other.host,
            other.boot,
        )

    def live(self, now: float) -> bool:
        """Not expired, and not a process of this host and namespace that is gone."""
        return self.expires > now and not self._gone()

    def _gone(self) -> bool:
        here = _identity(os.getpid())
        if not self.boot or (self.boot, self.pidns) != (here[0], here[1]) or self.host != socket.gethostname():
            return False  # another host or namespace: only expiry tells
        return _identity(self.pid)[2] != self.started  # the pid is free, or reused by another process

    def describe(self) -> str:
        return (
            f"{self.url} is leased by host {self.host}, pid {self.pid}, since {_when(self.since)} "
            f"(the lease expires at {_when(self.expires)} unless that process renews it)"
        )


def read(store: ObjectStore, key: str) -> tuple[Holder, str | None] | None:
    """The holder named by the lease object at ``key`` and the object's version, or ``None``."""
    with tempfile.TemporaryDirectory(prefix="pos3-lease-") as tmp:
        dest = Path(tmp, "lease")
        try:
            meta = store.get(key, dest)
        except FileNotFoundError:
            return None
        data = dest.read_bytes()
    try:
        return Holder.decode(data), meta.version
    except (ValueError, KeyError, TypeError):
        raise LeaseConflict(
            f"The lease object {key!r} is not one pos3 wrote: delete it if no job writes to that prefix"
        ) from None


class Lease:
    """The lease of one registration on one prefix; `acquire` it, `release` it at the end."""

    def __init__(self, store: ObjectStore, prefix: str, url: str, ttl: float | None = None, root: str = "") -> None:
        self.store = store
        self.prefix = prefix
        self.key = lease_key(prefix)
        self.ttl = ttl if ttl is not None else ttl_from_env()
        now = time.time()
        boot, pidns, started = _identity(os.getpid())
        self.holder = Holder(
            url,
            socket.gethostname(),
            os.getpid(),
            secrets.token_hex(16),
            now,
            now + self.ttl,
            boot,
            pidns,
            started,
            root,
        )
        #: The holder of a lease this process joined (same host and local root), instead of holding its own.
        self.joined: Holder | None = None
        self.version: str | None = None
        self.lost: str | None = None  # why the lease was lost, once it was
        self._lock = threading.Lock()  # one write of the lease object at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, store: ObjectStore, prefix: str, url: str, ttl: float | None = None, root: str = "") -> Lease:
        """Take the lease on ``prefix`` and start renewing it; raise `LeaseConflict` if a live
        writer holds an overlapping one. A failed request (the bucket does not exist yet,
        the service is down) is logged and leaves the lease pending: `check`, called before
        every remote delete, takes it then."""
        lease = cls(store, prefix, url, ttl, root)
        try:
            lease._acquire()
        except LeaseConflict:
            raise
        except Exception as exc:  # noqa: BLE001 - retried by check() before the first delete
            log.warning("could not take the lease on %s now (retried before deleting): %s", url, exc)
        return lease

    def _acquire(self) -> None:
        # A missing bucket raises here, before any write (some servers create buckets on a write).
        next(iter(self.store.list(self.prefix)), None)
        if not self.store.conditional_put:
            log.warning(
                "%s has no conditional puts: the lease on %s is not atomic",
                type(self.store).__name__,
                self.holder.url,
            )
        self._take()
        if self.joined is not None:
            return  # its holder checked the overlaps and renews it
        try:
            self._check_overlaps()
        except BaseException:
            self._delete_own()
            raise
        self._thread = threading.Thread(target=self._renew_loop, name=f"pos3-lease {self.holder.url}", daemon=True)
        self._thread.start()

    # -- reading lease objects ------------------------------------------------

    def _read(self, key: str) -> tuple[Holder, str | None] | None:
        return read(self.store, key)

    def _conflict(self, other: Holder) -> LeaseConflict:
        return LeaseConflict(
            f"Cannot write with deletes to {self.holder.url}: {other.describe()}. Two writers deleting in "
            f"overlapping prefixes would delete each other's files: use one writer, a separate prefix per "
            f"writer, or no deletes (delete=False; on the command line, no --delete)."
        )

    # -- taking, renewing, releasing -----------------------------------------

    def _take(self) -> None:
        """Create the lease object, or take over an expired one; raise `LeaseConflict` if it is live."""
        for _ in range(_ATTEMPTS):
            try:
                self._write(None)
                return
            except PreconditionFailed:
                pass
            found = self._read(self.key)
            if found is None:
                continue  # released meanwhile: create it again
            other, version = found
            if other.token == self.holder.token:
                self.version = version  # a retried request of ours had succeeded
                return
            if other.live(time.time()):
                if other.same_writer(self.holder):
                    self.joined = other  # a sibling process syncing the same local root
                    return
                raise self._conflict(other)
            try:
                self._write(version)
            except PreconditionFailed:
                continue  # another writer took it over first: look again
            why = "expired" if other.expires <= time.time() else "left by a process that is gone"
            log.warning("took over the %s lease of %s (%s)", why, self.holder.url, other.describe())
            return
        raise LeaseConflict(f"Cannot take the lease on {self.holder.url}: other writers keep changing it")

    def _write(self, version: str | None) -> None:
        """Write the lease object with a renewed expiry, conditionally on ``version``."""
        holder = replace(self.holder, expires=time.time() + self.ttl)
        meta = self.store.put_if(self.key, holder.encode(), version)
        self.holder, self.version = holder, meta.version

    def _check_overlaps(self) -> None:
        """Raise `LeaseConflict` if a live lease of someone else covers an ancestor or a descendant."""
        ancestors = [""] + [self.prefix[: i + 1] for i, c in enumerate(self.prefix[:-1]) if c == "/"]
        keys = [lease_key(a) for a in ancestors if a != self.prefix]
        keys += [m.key for m in self.store.list(self.prefix) if is_lease_key(m.key) and m.key != self.key]
        now = time.time()
        for key in keys:
            try:
                found = self._read(key)
            except PermissionError:
                log.debug("cannot read %s to check for overlapping leases", key)
                continue
            if found is not None and found[0].token != self.holder.token and found[0].live(now):
                if found[0].same_writer(self.holder) and found[0].url == self.holder.url:
                    continue
                raise self._conflict(found[0])

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Extend the lease by `ttl`; False once it was lost (a failed request is logged and retried)."""
        with self._lock:
            if self.lost is not None or self._stop.is_set():
                return self.lost is None
            try:
                self._write(self.version)
                return True
            except PreconditionFailed:
                self._lost_or_ours()
            except Exception as exc:  # noqa: BLE001 - retried at the next renewal
                log.warning("renewing the lease on %s failed (retrying): %s", self.holder.url, exc)
                return True
            return self.lost is None

    def _lost_or_ours(self) -> None:
        """After a failed conditional update: adopt our own retried write, or record the loss."""
        found = self._read(self.key)
        if found is not None and found[0].token == self.holder.token:
            self.version = found[1]
            return
        who = found[0].describe() if found is not None else "its lease object was deleted"
        self.lost = who
        log.error("lost the lease on %s: %s; remote deletes stop", self.holder.url, who)

    def check(self) -> None:
        """Raise `LeaseLost` unless this writer still holds the lease (called before remote deletes);
        a pending lease is taken now (or `LeaseConflict` / the store's error raised). A joined
        lease must still be held by a live sibling, or this process takes it over."""
        if self.joined is not None:
            found = self._read(self.key)
            if found is not None and found[0].live(time.time()) and found[0].same_writer(self.holder):
                return
            with self._lock:
                self.joined = None
                self._acquire()
            return
        if self.lost is None and self.version is None:
            with self._lock:
                if self.version is None:
                    self._acquire()
            return
        if self.lost is None and self.holder.expires - time.time() < self.ttl / 3:
            self.renew()  # renewals are late (the store was unreachable): one more try before deleting
        if self.lost is not None:
            raise LeaseLost(f"No longer the writer of {self.holder.url}: {self.lost}")
        if self.holder.expires <= time.time():
            raise LeaseLost(f"The lease on {self.holder.url} expired and could not be renewed: no deletes for now")

    def release(self) -> None:
        """Stop renewing and delete the lease object if it is still ours (errors are logged:
        an undeleted lease expires after `ttl`)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self.lost is not None or self.version is None:
                return
            try:
                self._delete_own()
            except Exception as exc:  # noqa: BLE001 - the lease expires on its own
                log.warning("could not release the lease on %s: %s", self.holder.url, exc)

    def _delete_own(self) -> None:
        """Delete the lease object if it is still the version this writer last wrote (one HEAD)."""
        meta = self.store.head(self.key)
        if meta is not None and meta.version == self.version:
            self.store.delete([self.key])
        self.version = None
