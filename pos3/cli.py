"""The ``pos3`` command line: ``ls``, ``download``, ``upload`` and ``sync``, one shot each.

Every command runs in a short-lived mirror and resolves locations through
`pos3.locate`, exactly as the Python API does. Standard output carries only
results (listings, the downloaded path, plans); progress bars and logs go to
standard error. Exit codes: 0 success, 1 a failed operation (every failed
file listed on stderr), 2 a usage error (bad arguments, a malformed URL, an
unknown profile or scheme). Errors are one line, with no traceback unless
``--debug``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import locate, plans
from .executor import DeleteGuard, SyncError, check_max_delete
from .mirror import DEFAULT_CACHE_ROOT, Mirror
from .planner import Direction
from .plugins import PluginError

log = logging.getLogger("pos3")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

MAIN_EPILOG = """\
examples:
  pos3 ls s3://bucket/dataset/                 # one full URL per line
  pos3 ls -r gs://bucket/dataset/
  d=$(pos3 download s3://bucket/dataset/)      # stdout is only the local path
  pos3 download s3://bucket/dataset/ --local ./data --delete
  pos3 upload s3://bucket/results/ --local ./out
  pos3 sync s3://bucket/x gs://other/y         # store to store, through the cache root
  pos3 sync s3://aws@bucket/x s3://lab@b2/x    # NAME@ picks a profile per side
  pos3 sync ./out az://container/results --delete -n

Every command accepts the common options (--profile, --cache-root, --workers,
--progress/--no-progress, --max-*-bytes-per-second, --json, --debug, -v);
see `pos3 COMMAND --help`. Locations are local paths or URLs of any installed
store: s3://, gs://, az://, file:///path, and plugins' schemes.

exit codes: 0 success, 1 an operation failed (each failed file listed on
stderr), 2 usage error (bad arguments, malformed URL, unknown profile/scheme).
"""

TRANSFER_NOTE = (
    "--delete is OFF by default on the command line (the Python API deletes by default). "
    "-n/--dry-run prints one line per copy or delete in the style of `aws s3 sync --dryrun` "
    "(with --json, one object per line: action, src, dst, size, reason) and changes nothing: no "
    "transfer, no delete, no directory or record created. Like a real run, a dry run compares "
    "same-size files that have no matching record by content hash (it reads local files to hash "
    "them) and leaves out the equal ones; `unverified` marks a copy made because a side has no hash."
)


def _text(*paragraphs: str) -> str:
    """Help paragraphs wrapped to the terminal-friendly width argparse's raw formatter keeps."""
    return "\n\n".join(textwrap.fill(p, 79) for p in paragraphs)


class UsageError(Exception):
    """The command cannot be understood as given (exit code 2)."""


# -- the parser ------------------------------------------------------------------


def _common(json_help: str) -> argparse.ArgumentParser:
    """The options every command takes (after the command name)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--profile",
        metavar="NAME",
        help="profile (registered, or from profiles.toml) for URLs that name none; s3://NAME@bucket wins",
    )
    g.add_argument(
        "--cache-root",
        metavar="DIR",
        default=DEFAULT_CACHE_ROOT,
        help=f"cache root: default local paths, records, staging (default: {DEFAULT_CACHE_ROOT})",
    )
    g.add_argument("--workers", metavar="N", type=_positive_int, default=10, help="parallel transfers (default: 10)")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    g.add_argument(
        "--max-upload-bytes-per-second", metavar="N", type=_positive_int, help="limit on the total upload rate"
    )
    g.add_argument(
        "--max-download-bytes-per-second", metavar="N", type=_positive_int, help="limit on the total download rate"
    )
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--debug", action="store_true", help="debug logging, and a traceback with errors")
    g.add_argument("-v", "--verbose", action="store_true", help="log what each run did (INFO) on stderr")
    return p


def _transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--delete", action="store_true", help="delete destination files absent from the source (off)")
    p.add_argument(
        "--exclude",
        metavar="PATTERN",
        action="append",
        help="gitignore-style pattern (relative to the synced root) never copied or deleted; repeatable",
    )
    p.add_argument(
        "--max-delete",
        metavar="N",
        type=_max_delete,
        help="refuse the deletes of a run deleting more than N files (or, with a fraction such as 0.1, "
        "that share of the destination's files)",
    )
    p.add_argument(
        "--allow-wipe", action="store_true", help="let a source with no files empty the destination (refused)"
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="print the plan and change nothing")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with help and examples for every command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pos3",
        description="Mirror object-store prefixes and local directories, one shot at a time.",
        epilog=MAIN_EPILOG,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plan_json = "print plans as JSON lines (action, src, dst, size, reason)"

    p = sub.add_parser(
        "ls",
        parents=[_common("print JSON lines: {'url': ...}")],
        formatter_class=fmt,
        help="list a prefix, an object or a local directory",
        description=_text(
            "List a remote prefix as full URLs, one per line (sub-prefixes end in '/' unless -r), "
            "a single object, or a local directory."
        ),
        epilog="examples:\n  pos3 ls s3://bucket/dataset/\n  pos3 ls -r az://container/logs/\n"
        "  pos3 ls --json gs://bucket/ | jq -r .url\n  pos3 ls ./data",
    )
    p.add_argument("location", metavar="LOCATION", help="scheme://bucket/prefix, or a local path")
    p.add_argument("-r", "--recursive", action="store_true", help="list every object below, not one level")

    p = sub.add_parser(
        "download",
        parents=[_common(plan_json + "; without -n, {'path': ...}")],
        formatter_class=fmt,
        help="make a local copy of a remote prefix or object; print its path",
        description=_text(
            "Make a local copy of URL now (only changed files move) and print the local path on "
            "stdout, nothing else: d=$(pos3 download URL) works. A missing remote is an error.",
            TRANSFER_NOTE,
        ),
        epilog="examples:\n  d=$(pos3 download s3://bucket/dataset/)\n"
        "  pos3 download gs://bucket/model.bin --local ./model.bin\n"
        "  pos3 download -n s3://bucket/dataset/ --local ./data --delete\n"
        "  pos3 download s3://bucket/dataset/ --exclude '*.tmp' --exclude '/cache/'",
    )
    p.add_argument("url", metavar="URL", help="scheme://bucket/prefix (a directory) or scheme://bucket/key")
    p.add_argument("--local", metavar="PATH", help="destination (default: the cache path under --cache-root)")
    _transfer_options(p)

    p = sub.add_parser(
        "upload",
        parents=[_common(plan_json)],
        formatter_class=fmt,
        help="mirror a local directory or file to a remote URL",
        description=_text(
            "Mirror a local directory (or file) to URL now. The source defaults to the cache path "
            "`pos3 download URL` would use; a missing source is an error.",
            TRANSFER_NOTE,
        ),
        epilog="examples:\n  pos3 upload s3://bucket/results/ --local ./out\n"
        "  pos3 upload -n az://container/results/ --local ./out --delete\n"
        "  pos3 upload file:///mnt/nfs/backup --local ./out --exclude '*.ckpt'",
    )
    p.add_argument("url", metavar="URL", help="destination scheme://bucket/prefix")
    p.add_argument("--local", metavar="PATH", help="source (default: the cache path under --cache-root)")
    _transfer_options(p)

    p = sub.add_parser(
        "sync",
        parents=[_common(plan_json)],
        formatter_class=fmt,
        help="make DST a copy of SRC: local paths or URLs of any store, on either side",
        description=_text(
            "Make DST match SRC once. Either side is a local path or a URL of any store; two URLs "
            "may name different stores (s3:// to gs://). A local destination is written as "
            "`download` writes; a local source is read as `upload` reads.",
            "Store to store, each object is fetched into a temporary file under "
            "CACHE_ROOT/.pos3-relay and put (at most --workers at a time, so disk use stays below "
            "--workers times the largest object). An object is copied when it is new, when sizes "
            "differ, when both stores know the MD5s and they differ, or, where a store has no MD5, "
            "when either side changed since pos3 last copied it (records under CACHE_ROOT).",
            TRANSFER_NOTE,
        ),
        epilog="examples:\n  pos3 sync s3://bucket/dataset gs://mirror/dataset\n"
        "  pos3 sync gs://bucket/x az://container/x --delete\n"
        "  pos3 sync ./out s3://bucket/results        # = pos3 upload s3://bucket/results --local ./out\n"
        "  pos3 sync s3://bucket/data ./data          # = pos3 download s3://bucket/data --local ./data\n"
        "  pos3 sync -n ./a ./b --delete              # local to local",
    )
    p.add_argument("src", metavar="SRC", help="source: local path or scheme://bucket/prefix")
    p.add_argument("dst", metavar="DST", help="destination: local path or scheme://bucket/prefix")
    _transfer_options(p)
    return parser


def _max_delete(text: str) -> int | float:
    try:
        value: int | float = float(text) if "." in text else int(text)
        check_max_delete(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction in [0, 1], got {text!r}") from exc
    return value


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


# -- running ----------------------------------------------------------------------


def _mirror(args: argparse.Namespace, transfers: bool = True) -> Mirror:
    """The mirror a command runs in (entered only by commands that transfer)."""
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    kwargs: dict[str, Any] = {}
    for name in ("max_upload_bytes_per_second", "max_download_bytes_per_second"):
        value = getattr(args, name)
        if value is not None:
            if name not in inspect.signature(Mirror).parameters:
                raise UsageError(f"--{name.replace('_', '-')} is not supported by this pos3")
            kwargs[name] = value
    return Mirror(args.cache_root, show_progress=progress and transfers, max_workers=args.workers, **kwargs)


def _checked(
    args: argparse.Namespace, *locations: tuple[str, str | None], transfers: bool = True
) -> tuple[Mirror, list[locate.Location]]:
    """The command's mirror (not entered yet) and every location resolved as the operation
    will resolve it: a malformed URL, an unknown profile or scheme, or bad profile options
    are usage errors raised before anything is created or transferred."""
    m = _mirror(args, transfers)
    try:
        return m, [locate.resolve(m, location, args.profile, local) for location, local in locations]
    except (ValueError, PluginError) as exc:
        locate.release(m)
        raise UsageError(str(exc)) from exc
    except BaseException:
        locate.release(m)
        raise


def _guard(args: argparse.Namespace) -> DeleteGuard:
    return DeleteGuard(args.max_delete, args.allow_wipe)


def _is_url(value: str) -> bool:
    try:
        return locate.is_url(value)
    except ValueError as exc:  # an empty location
        raise UsageError(str(exc)) from exc


def _require_remote(value: str, what: str) -> str:
    if not _is_url(value):
        raise UsageError(f"{what} must be a URL (scheme://bucket/key), got {value!r}")
    return value


def _emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False) if args.json else text)


def _print_plan(args: argparse.Namespace, plan: plans.TransferPlan) -> None:
    for action in plan.actions:
        _emit(args, action.line(), action.to_json())
    copies = len(plan.to_copy)
    log.info("dry run: %d to copy (%d bytes), %d to delete", copies, plan.bytes, len(plan.to_delete))


def cmd_ls(args: argparse.Namespace) -> int:
    remote = [(args.location, None)] if _is_url(args.location) else []
    m, _ = _checked(args, *remote, transfers=False)
    try:
        for item in m.ls(args.location, recursive=args.recursive, profile=args.profile):
            _emit(args, str(item), {"url": str(item)})
    finally:
        locate.release(m)
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    url = _require_remote(args.url, "download's source")
    m, _ = _checked(args, (url, args.local), transfers=not args.dry_run)
    if args.dry_run:
        try:
            _print_plan(
                args,
                plans.download_plan(
                    m, url, args.local, args.exclude, args.profile, delete=args.delete, guard=_guard(args)
                ),
            )
        finally:
            locate.release(m)
        return EXIT_OK
    with m:
        path = m.download(url, args.local, args.delete, args.exclude, args.profile, args.max_delete, args.allow_wipe)
    _emit(args, str(path), {"path": str(path)})
    return EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:
    return _upload(args, _require_remote(args.url, "upload's destination"), args.local)


def _upload(args: argparse.Namespace, url: str, local: str | None) -> int:
    m, (loc,) = _checked(args, (url, local), transfers=not args.dry_run)
    source = loc.local_path
    if not source.exists():
        locate.release(m)
        raise FileNotFoundError(f"No such local source: {source}")
    if args.dry_run:
        try:
            _print_plan(
                args,
                plans.upload_plan(m, url, source, args.exclude, args.profile, delete=args.delete, guard=_guard(args)),
            )
        finally:
            locate.release(m)
        return EXIT_OK
    with m:
        root = locate.root(m, Direction.UP, url, source, args.exclude, args.profile, readonly=False)
        try:
            summary = root.sync(
                Direction.UP,
                delete=args.delete,
                max_workers=m.max_workers,
                show_progress=m.show_progress,
                guard=_guard(args),
            )
        finally:
            root.state.close()
    log.info("%s → %s: %d copied, %d deleted", source, loc.url, summary.copied, summary.deleted)
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    src, dst = args.src, args.dst
    if not _is_url(dst):
        if _is_url(src):  # remote → local: a download
            args.url, args.local = src, dst
            return cmd_download(args) if args.dry_run else _download_quietly(args)
        here, there = Path(src).expanduser().absolute(), Path(dst).expanduser().absolute()
        if here == there or here in there.parents or there in here.parents:
            raise UsageError(f"{src} and {dst} overlap: one would be copied into itself")
        dst = f"file://{there}"  # local → local: the file:// store is the destination
    if not _is_url(src):  # local → remote: an upload
        return _upload(args, dst, src)
    return _relay(args, src, dst)


def _download_quietly(args: argparse.Namespace) -> int:
    """`sync URL PATH`: a download that prints nothing on stdout."""
    with _checked(args, (args.url, args.local))[0] as m:
        m.download(args.url, args.local, args.delete, args.exclude, args.profile, args.max_delete, args.allow_wipe)
    return EXIT_OK


def _relay(args: argparse.Namespace, src: str, dst: str) -> int:
    """Store → store through the staging directory."""
    m, (a, b) = _checked(args, (src, None), (dst, None), transfers=not args.dry_run)
    if locate.overlap(a, b):
        locate.release(m)
        raise UsageError(f"{src} and {dst} overlap: one would be copied into itself")
    if args.dry_run:
        try:
            _print_plan(
                args, plans.copy_plan(m, src, dst, args.exclude, args.profile, delete=args.delete, guard=_guard(args))
            )
        finally:
            locate.release(m)
        return EXIT_OK
    with m:
        relay = locate.relay(m, src, dst, args.exclude, args.profile, readonly=False)
        try:
            if args.delete:  # one writer with deletes per destination prefix
                relay.hold_lease()
            summary = relay.sync(
                Direction.DOWN,
                delete=args.delete,
                max_workers=m.max_workers,
                show_progress=m.show_progress,
                guard=_guard(args),
            )
        finally:
            relay.state.close()
            if relay.lease is not None:
                relay.lease.release()
    log.info("%s → %s: %d copied, %d deleted", a.url, b.url, summary.copied, summary.deleted)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ls": cmd_ls,
    "download": cmd_download,
    "upload": cmd_upload,
    "sync": cmd_sync,
}


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pos3: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING)
    log.propagate = False


def _report(command: str, exc: BaseException) -> None:
    """One line per error on stderr (a `SyncError` lists each failed file on its own line)."""
    if isinstance(exc, SyncError):
        print(f"pos3 {command}: {exc}", file=sys.stderr)
        return
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename and str(exc.filename) not in text:
        text = f"{exc.strerror}: {exc.filename}"
    print(f"pos3 {command}: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"pos3 {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pos3 ls ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - every error becomes one message and an exit code
        if args.debug:
            traceback.print_exc()
        _report(args.command, exc)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
