"""Turns at one local root shared by several processes, and the result a waiter may reuse.

Beside each root's lock lies a small JSON file, written only by the process
holding the lock (by an atomic rename, so a reader never sees half of it):

* ``started``: how many syncs of this local root have started (a generation);
* ``done``: the last sync that completed, as ``{"identity", "generation",
  "pid", "host", "at"}``.

A process reads ``started`` *before* it waits for the lock (`Turns.ask`).
Once it holds the lock, a completed sync may stand in for its own
(`Turns.reusable`) when all of these hold: it had the same identity
(remote, local root, direction, delete, exclude and guard options); it
started after this process asked (its generation is greater than the one
read before waiting), so its listing was taken after the request; and no
other sync of this root started since it completed (its generation is the
latest), so nothing has touched the tree after it. A sync that fails leaves
``started`` ahead of ``done``: the next holder then runs in full.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import local as fs


@dataclass(frozen=True)
class Completion:
    """A completed sync that a waiter reuses: who ran it and when (Unix seconds)."""

    pid: int
    host: str
    at: float
    generation: int

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host} (generation {self.generation}, {time.ctime(self.at)})"


class Turns:
    """The turn record of the local root whose lock is ``lock_path`` (see the module)."""

    def __init__(self, lock_path: Path) -> None:
        self.path = lock_path.with_suffix(".turns.json")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, fs.file_mode())
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def ask(self) -> int:
        """The generation of the last sync started so far (read before waiting for the lock)."""
        started = self._read().get("started", 0)
        return started if isinstance(started, int) else 0

    def reusable(self, identity: str, asked: int) -> Completion | None:
        """The completed sync that stands in for one of ``identity`` asked at ``asked``, if any.
        Call it holding the lock."""
        data = self._read()
        done = data.get("done")
        if not isinstance(done, dict) or done.get("identity") != identity:
            return None
        gen = done.get("generation")
        if not isinstance(gen, int) or gen <= asked or gen != data.get("started"):
            return None
        return Completion(int(done.get("pid", 0)), str(done.get("host", "")), float(done.get("at", 0)), gen)

    def start(self) -> int:
        """Record that a sync starts now, returning its generation. Call it holding the lock."""
        data = self._read()
        gen = int(data.get("started", 0) or 0) + 1
        data["started"] = gen
        self._write(data)
        return gen

    def complete(self, identity: str, generation: int) -> None:
        """Record that the sync of ``identity`` started as ``generation`` completed. Call it holding the lock."""
        data = self._read()
        data["started"] = generation
        data["done"] = {
            "identity": identity,
            "generation": generation,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "at": time.time(),
        }
        self._write(data)
