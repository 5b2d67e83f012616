"""Run one pos3 mirror operation as a whole process (used by the benchmark for both pos3 versions).

    python pos3_driver.py download s3://bucket/prefix/ LOCAL_DIR --cache CACHE [--workers N]
    python pos3_driver.py upload   s3://bucket/prefix/ LOCAL_DIR --cache CACHE [--workers N]
    python pos3_driver.py --version

It imports whichever ``pos3`` the interpreter running it has (ours, or 0.4.0
from its own venv) and uses only the API both share: ``pos3.mirror`` with
``cache_root``, ``show_progress=False`` and ``max_workers``, then
``pos3.download(url, local=...)`` or ``pos3.upload(url, local=..., interval=None)``
(which uploads when the block exits).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", nargs="?", choices=["download", "upload"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("local", nargs="?")
    parser.add_argument("--cache", help="cache_root for pos3.mirror")
    parser.add_argument("--workers", type=int, default=0, help="max_workers (0: the library default)")
    parser.add_argument("--version", action="store_true", help="print which pos3 this interpreter imports")
    args = parser.parse_args(argv)

    import pos3

    if args.version:
        from importlib.metadata import version

        print(f"pos3 {version('pos3')} ({pos3.__file__})")
        return 0
    if not (args.op and args.url and args.local and args.cache):
        parser.error("op, url, local and --cache are required")
    options = {"cache_root": args.cache, "show_progress": False}
    if args.workers:
        options["max_workers"] = args.workers
    with pos3.mirror(**options):
        if args.op == "download":
            pos3.download(args.url, local=args.local)
        else:
            pos3.upload(args.url, local=args.local, interval=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
