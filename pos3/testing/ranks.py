"""One "rank" of a multi-process run, for tests and benchmarks: ``python -m pos3.testing.ranks``.

Each rank opens a mirror on ``--cache``, counts its store calls with
`CountingStore`, runs one ``download`` or ``sync`` (``interval=None``: its
upload runs at the block's exit) of ``url``, and prints one JSON line::

    {"pid": ..., "seconds": ..., "seconds_call": ..., "counts": {...}, "files": {rel: md5}}

``seconds_call``: from the start to the call's return; ``seconds``: to the block's exit.

A rank that reused another's completed download made no ``list`` call.

``files`` is the local tree as the rank saw it when its call returned (read
after the call, before the block's exit), so a caller can check that every
rank saw a complete mirror. With ``--go FILE`` the rank waits (polling) until
FILE exists before it starts, so that several ranks start together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import pos3
from pos3.store import ObjectStore
from pos3.wrappers.counting import CountingStore


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its MD5 (hex)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def _wait_for(go: Path, deadline: float) -> None:
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} did not appear")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pos3.testing.ranks")
    parser.add_argument("verb", choices=("download", "sync"))
    parser.add_argument("url")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--go", help="wait until this file exists before starting")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    if args.go:
        Path(f"{args.go}.{os.getpid()}.ready").touch()
        _wait_for(Path(args.go), time.monotonic() + 120)
    counters: list[CountingStore] = []

    def wrap(store: ObjectStore) -> ObjectStore:
        counting = CountingStore(store)
        counters.append(counting)
        return counting

    start = time.monotonic()
    with pos3.mirror(cache_root=args.cache, show_progress=False, max_workers=args.workers) as m:
        inner = m.resolver.wrap
        m.resolver.wrap = lambda s: wrap(inner(s) if inner else s)
        path = m.download(args.url) if args.verb == "download" else m.sync(args.url, interval=None)
        seconds_call = time.monotonic() - start
        files = _tree(path)
    counts: dict[str, int] = {}
    for c in counters:
        for verb, n in c.counts.items():
            counts[verb] = counts.get(verb, 0) + n
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "seconds": time.monotonic() - start,
                "seconds_call": seconds_call,
                "counts": counts,
                "files": files,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
