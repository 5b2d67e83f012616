"""Runs a plan: copies on a thread pool with progress bars, then deletes.

Guarantees: deletes start only after every copy of the plan succeeded, and
only if the plan's `DeleteGuard` allows them all;
every failure is collected and reported together in one `SyncError`;
each completed transfer is recorded at once, so a later run does not redo
it even when the run as a whole failed.
"""

from __future__ import annotations

import contextlib
import queue
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .planner import Action, Tally
from .state import Record, StateDB


class SyncError(RuntimeError):
    """One or more files failed to transfer; ``failures`` maps each path to its cause.

    The message lists the failed paths in order, each with its cause's type and message.
    """

    __module__ = "pos3"  # shown as pos3.SyncError, the name users import

    def __init__(self, what: str, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        lines = [f"{what}: {len(failures)} file(s) failed"]
        shown = sorted(failures, key=lambda failure: failure[0])[:50]
        lines += [f"  {path}: {type(exc).__name__}: {exc}" for path, exc in shown]
        if len(failures) > 50:
            lines.append(f"  ... and {len(failures) - 50} more")
        super().__init__("\n".join(lines))


class DeleteRefused(SyncError):
    """A delete guard refused a plan's deletes; nothing was deleted (the copies did run).

    ``count`` is how many files the plan would have deleted.
    """

    def __init__(self, what: str, count: int, reason: str) -> None:
        self.failures = []
        self.count = count
        RuntimeError.__init__(self, f"{what}: refusing to delete {count} file(s): {reason}")


@dataclass(frozen=True)
class DeleteGuard:
    """Limits on a plan's deletes, checked after its copies and before any delete.

    * A source with no files never wipes a non-empty destination unless
      ``allow_wipe`` (``delete=True`` alone is not such a request).
    * ``max_delete``: an ``int`` is the most files one run may delete; a
      ``float`` in ``[0, 1]`` the most as a fraction of the destination's
      files. ``None`` sets no limit.
    """

    max_delete: int | float | None = None
    allow_wipe: bool = False

    def __post_init__(self) -> None:
        check_max_delete(self.max_delete)

    def check(self, what: str, deletes: int, tally: Tally) -> None:
        """Raise `DeleteRefused` if running ``deletes`` deletes would break a limit."""
        if deletes == 0:
            return
        if tally.source == 0 and not self.allow_wipe:
            reason = "the source has no files, so this would empty the destination (pass allow_wipe=True to allow it)"
            raise DeleteRefused(what, deletes, reason)
        limit = self.max_delete
        if isinstance(limit, float):
            allowed = int(limit * tally.destination)
            if deletes > allowed:
                share = f"{deletes / max(tally.destination, 1):.0%}"
                reason = f"that is {share} of the {tally.destination} at the destination, above max_delete={limit}"
                raise DeleteRefused(what, deletes, reason)
        elif limit is not None and deletes > limit:
            raise DeleteRefused(what, deletes, f"above max_delete={limit}")


def check_max_delete(value: object) -> None:
    """Raise `ValueError` unless ``value`` is None, a count >= 0 or a fraction in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"max_delete must be a count (int), a fraction (float) or None, got {value!r}")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"max_delete as a fraction must be within [0.0, 1.0], got {value}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"max_delete as a count must be >= 0, got {value}")


@dataclass
class Summary:
    """What a run did."""

    copied: int = 0
    bytes: int = 0
    verified: int = 0
    deleted: int = 0
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    #: Set when another process completed the same sync while this one waited (see `pos3.handoff`).
    satisfied_by: str | None = None


@dataclass
class Operations:
    """The side-specific work an executor calls; ``copy`` and ``verify`` return the new record.

    ``copy`` and ``verify`` run on worker threads; ``delete`` runs once with
    every pending delete after all copies succeeded.
    """

    copy: Callable[[Action], Record]
    verify: Callable[[Action], Record]
    delete: Callable[[list[Action]], None]
    name: Callable[[Action], str]
    #: Starts a copy on the store's own threads (no worker held), or returns None.
    copy_async: Callable[[Action], Future[Record] | None] = lambda action: None


#: Planned transfers read ahead of the workers, so that the plan (and the bar's total) is
#: complete early: whole for plans up to this many transfers, at the cost of ~1 KiB each.
READ_AHEAD = 10_000


class _Progress:
    """A tqdm bar of bytes and files that appears with the first transfer.

    While the plan still streams in, the bar shows no percentage and says so
    (``listing…``, files as ``3/17+``); once the plan is complete its total is
    exact, so a successful run ends at 100%.
    """

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc = enabled, desc
        self.bar: Any = None  # a tqdm bar once the first transfer is planned
        self.files = self.files_done = self.bytes = 0
        self.complete = False

    def add(self, size: int) -> None:
        """Count one more planned transfer of ``size`` bytes."""
        if not self.enabled:
            return
        self.files += 1
        self.bytes += size
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                desc=self.desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.2, postfix=self._files()
            )

    def planned(self) -> None:
        """The plan is complete: fix the total."""
        self.complete = True
        if self.bar is not None:
            self.bar.total = self.bytes
            self._postfix(refresh=True)

    def done(self, size: int) -> None:
        if self.bar is not None:
            self.files_done += 1
            self._postfix(refresh=False)
            self.bar.update(size)

    def _files(self) -> str:
        if self.complete:
            return f"{self.files_done}/{self.files} files"
        return f"{self.files_done}/{self.files}+ files, listing…"

    def _postfix(self, refresh: bool) -> None:
        assert self.bar is not None
        self.bar.set_postfix_str(self._files(), refresh=refresh)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _start(action: Action, ops: Operations, pool: ThreadPoolExecutor) -> Future[Record]:
    """Start one copy or verify: natively asynchronous where the store offers it, else on a worker."""
    if action.kind == "copy":
        try:
            started = ops.copy_async(action)
        except Exception as exc:  # noqa: BLE001 - reported like any failed copy
            started = Future()
            started.set_exception(exc)
        if started is not None:
            return started
        return pool.submit(ops.copy, action)
    return pool.submit(ops.verify, action)


def execute(
    actions: Iterable[Action],
    ops: Operations,
    state: StateDB,
    *,
    what: str,
    max_workers: int,
    show_progress: bool,
    before_delete: Callable[[int], None] | None = None,
) -> Summary:
    """Run ``actions``; raise `SyncError` listing every failed path, after recording the successes.

    ``before_delete`` is called with the number of pending deletes once every
    copy succeeded; if it raises, nothing is deleted and the error propagates.
    """
    summary = Summary()
    deletes: list[Action] = []
    forgets: list[str] = []
    records: list[Record] = []
    progress = _Progress(show_progress, what)
    pending: dict[Future[Record], Action] = {}
    finished: queue.SimpleQueue[Future[Record]] = queue.SimpleQueue()  # O(1) per completion
    limit = max_workers * 4  # bounded in-flight work keeps memory flat on huge plans

    def collect_one() -> None:
        fut = finished.get()
        action = pending.pop(fut)
        try:
            records.append(fut.result())
        except Exception as exc:  # noqa: BLE001 - every failure is reported at the end
            summary.failures.append((ops.name(action), exc))
            return
        progress.done(action.size)
        if action.kind == "copy":
            summary.copied += 1
            summary.bytes += action.size
        else:
            summary.verified += 1
        if len(records) >= 512:
            state.write(records)
            records.clear()

    def start(action: Action) -> None:
        fut = _start(action, ops, pool)
        pending[fut] = action
        fut.add_done_callback(finished.put)

    plan = iter(actions)
    queued: deque[Action] = deque()  # planned, not started yet
    planning = True
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pos3")
    try:
        while True:
            while not finished.empty():
                collect_one()
            while queued and len(pending) < limit:
                start(queued.popleft())
            if planning and len(queued) < READ_AHEAD:
                action = next(plan, None)
                if action is None:
                    planning = False
                    progress.planned()
                elif action.kind == "forget":
                    forgets.append(action.rel)
                elif action.kind == "delete":
                    deletes.append(action)
                else:
                    progress.add(action.size)
                    queued.append(action)
            elif pending:
                collect_one()
            else:
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # On an interrupt, still record whatever finished.
        records.extend(f.result() for f in pending if not f.cancelled() and f.exception() is None)
        with contextlib.suppress(Exception):
            state.write(records, forgets)
        progress.close()
    if summary.failures:
        raise SyncError(what, summary.failures)
    if deletes:
        if before_delete is not None:
            before_delete(len(deletes))
        ops.delete(deletes)
        summary.deleted = len(deletes)
        state.write((), (a.rel for a in deletes))
    return summary
