"""What the last successful transfer of each file recorded, per synced root.

A record pairs the local ``(size, mtime_ns)`` with the remote ``(size,
version)`` as they were right after a file was transferred (or proven equal).
A later plan trusts a file as unchanged only when both sides still match
their record. Records live in one SQLite file per (profile, remote, local)
root under the cache root; they are read as a stream sorted like listings.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .local import make_dirs


@dataclass(frozen=True, slots=True)
class Record:
    rel: str
    local_size: int
    local_mtime_ns: int
    remote_size: int
    remote_version: str


#: Seconds a connection waits for another process's lock on the same records.
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rel TEXT PRIMARY KEY,
    local_size INTEGER NOT NULL,
    local_mtime_ns INTEGER NOT NULL,
    remote_size INTEGER NOT NULL,
    remote_version TEXT NOT NULL
) WITHOUT ROWID
"""


def state_path(state_dir: Path, identity: str) -> Path:
    """The state file for a root identified by ``identity`` (profile, URL, local path)."""
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return state_dir / f"{digest}.sqlite"


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True if SQLite refused because another connection holds a lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (5, 6)  # primary codes of SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    return "locked" in str(exc) or "busy" in str(exc)  # Python 3.10 gives only the message


class StateDB:
    """The records of one root. Reads and writes may overlap (WAL mode):
    a reader sees the records as they were when its stream started.

    With ``readonly`` (for plans) nothing is created or written: a missing
    file reads as no records, and `write` raises.
    """

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if readonly:
            return
        make_dirs(path.parent)
        self._conn = self._connect()
        self._conn.execute(_SCHEMA)
        self._conn.commit()

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode (read-only for plans). Processes sharing a cache may open
        one new database at once: switching it to WAL, SQLite answers "locked" at once to
        all but one (its deadlock rule, no waiting), so opening is retried until `BUSY_TIMEOUT`."""
        if self.readonly:
            # A file with no write-ahead log open beside it is read as immutable, so that
            # reading creates no -wal/-shm files either.
            wal = self.path.with_name(self.path.name + "-wal").exists()
            mode = "mode=ro" if wal else "mode=ro&immutable=1"
            return sqlite3.connect(f"{self.path.as_uri()}?{mode}", uri=True, check_same_thread=False)
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def records(self) -> Iterator[Record]:
        """Every record sorted by ``rel`` (byte order, like store listings)."""
        if self.readonly and not self.path.exists():
            return
        conn = self._connect()
        try:
            cur = conn.execute(
                "SELECT rel, local_size, local_mtime_ns, remote_size, remote_version FROM records ORDER BY rel"
            )
            while rows := cur.fetchmany(4096):
                for row in rows:
                    yield Record(*row)
        finally:
            conn.close()

    def write(self, upserts: Iterable[Record], forgets: Iterable[str] = ()) -> None:
        """Apply a batch of changes in one transaction."""
        if self._conn is None:
            raise RuntimeError(f"{self.path} is open read-only")
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                    ((r.rel, r.local_size, r.local_mtime_ns, r.remote_size, r.remote_version) for r in upserts),
                )
                self._conn.executemany("DELETE FROM records WHERE rel = ?", ((rel,) for rel in forgets))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
