"""Jobs run in child processes by the process-death and concurrency tests.

Children are forked from a fork server that has already imported pos3 and
the SDKs (`forked`), so a child starts in milliseconds and the tests can
kill many of them. Each job sets the environment it is given (the test
server's endpoint and keys) before it builds a mirror.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

PRELOAD = ["pos3", "pos3.stores.s3", "pos3.stores.s3_crt", "boto3", "awscrt.s3", "child_jobs"]


def forked() -> ForkServerContext:
    """The fork-server context whose server has pos3 imported (started on first use)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def transfer(kind: str, env: dict[str, str], cache: Path, url: str, local: Path, ready: Event) -> None:
    """One ``pos3.download`` or one exit-time ``pos3.upload`` of ``url`` to/from ``local``;
    ``ready`` is set just before the transfer starts, once the store's clients exist."""
    os.environ.update(env)
    import pos3

    with pos3.mirror(cache_root=cache, show_progress=False, max_workers=1):  # a long transfer phase
        pos3.ls(url)  # connects: kill points then fall in the transfer itself
        if kind == "download":
            ready.set()
            pos3.download(url, local=local)
        else:
            pos3.upload(url, local=local, interval=None)
            ready.set()


def wave(env: dict[str, str], cache: Path, jobs: list[tuple[str, str]], rounds: int, go: Event) -> None:
    """One process of a wave sharing a cache root: after ``go``, ``rounds`` times each of ``jobs``
    (``("download", url)``, or ``("sync", url)``: registered once, then background uploads)."""
    os.environ.update(env)
    import pos3

    assert go.wait(60)
    with pos3.mirror(cache_root=cache, show_progress=False, max_workers=4):
        for _ in range(rounds):
            for kind, url in jobs:
                if kind == "download":
                    pos3.download(url)
                else:
                    pos3.sync(url, interval=0.05, delete_remote=False)


def rank(env: dict[str, str], cache: Path, ckpt: str, dataset: str, me: int, steps: int, go: Barrier) -> None:
    """A rank of a job whose ranks share one cache: every rank syncs ``ckpt`` (background uploads
    every 0.05 s); ranks 0 and 1 write checkpoints under ``r<rank>/`` (new files, and a ``latest.pt``
    rewritten in place); the others download ``dataset`` meanwhile."""
    os.environ.update(env)
    import pos3

    with pos3.mirror(cache_root=cache, show_progress=False, max_workers=4):
        path = pos3.sync(ckpt, interval=0.05, delete_remote=False)
        go.wait(60)  # every rank registered (and resumed) before any writes
        mine = path / f"r{me}"
        for step in range(steps):
            if me < 2:
                mine.mkdir(exist_ok=True)
                (mine / f"step-{step:03d}.pt").write_bytes(os.urandom(1000 * (step % 7)))
                (mine / "latest.pt").write_bytes(os.urandom(50_000 + 10_000 * (step % 5)))
            else:
                pos3.download(dataset)
            time.sleep(0.01)  # simulated work between checkpoints, not synchronisation


def open_records(path: Path, cycles: int, go: Event) -> None:
    """Open one root's records (a new database at first), write, read and close, ``cycles`` times."""
    from pos3.state import Record, StateDB

    assert go.wait(60)
    for k in range(cycles):
        db = StateDB(path)
        db.write([Record(f"{os.getpid()}-{k}", 1, 1, 1, "v")])
        sum(1 for _ in db.records())
        db.close()
