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
from multiprocessing.synchronize import Event
from pathlib import Path

PRELOAD = ["pos3", "pos3.stores.s3", "pos3.stores.s3_crt", "boto3", "awscrt.s3", "child_jobs"]


def forked() -> ForkServerContext:
    """The fork-server context whose server has pos3 imported (started on first use)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def transfer(kind: str, env: dict[str, str], cache: Path, url: str, local: Path, ready: Event) -> None:
    """One ``pos3.download`` or one exit-time ``pos3.upload`` of ``url`` to/from ``local``;
    ``ready`` is set just before the transfer starts."""
    os.environ.update(env)
    import pos3

    with pos3.mirror(cache_root=cache, show_progress=False, max_workers=4):
        if kind == "download":
            ready.set()
            pos3.download(url, local=local)
        else:
            pos3.upload(url, local=local, interval=None)
            ready.set()


def shared_root(
    kind: str, env: dict[str, str], cache: Path, url: str, go: Event, rounds: int, writer: str | None
) -> None:
    """A rank of a job sharing one cache root: ``rounds`` downloads, or one sync whose
    background uploads run while (with ``writer``) this rank writes files named after it."""
    os.environ.update(env)
    import pos3

    go.wait(60)
    with pos3.mirror(cache_root=cache, show_progress=False, max_workers=4):
        if kind == "download":
            for _ in range(rounds):
                pos3.download(url)
            return
        path = pos3.sync(url, interval=0.05, delete_remote=False)
        for i in range(rounds):
            if writer is not None:
                (path / f"{writer}-{i:03d}.bin").write_bytes(os.urandom(4096 + i))
            time.sleep(0.01)  # simulated work between checkpoints, not synchronisation
