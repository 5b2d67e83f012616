"""The sync planner: a pure function from listings to actions.

Inputs are three streams sorted by relative path: the local files, the remote
objects and the records of the last successful transfer of each file. The
planner walks them together once (a sorted merge, so memory does not grow
with the number of files) and yields what must happen to make the
destination match the source:

* `Copy`   — the file is missing or provably different at the destination;
* `Verify` — both sides have the same size but nothing proves them equal
  (no record, or a record that one side no longer matches); the executor
  compares content hashes and copies only when they differ or are unknown;
* `Delete` — the file exists only at the destination and deletes are on;
* `Forget` — a record whose file is gone from both sides.

Files that still match their record on both sides produce nothing.
Excluded paths produce nothing at all: never copied, never deleted.
No I/O happens here; the same planner serves every direction and backend.

Directory markers (``rel`` ending in '/': an empty local directory, a remote
key ending in '/') flow through the same merge and actions, by presence only
(a marker has no content to compare): one at the source and absent at the
destination is copied (an empty directory made, an empty object put); one at
the destination only is deleted when deletes are on and the source has nothing
under that directory either (a directory that holds files needs no marker,
and a marker already there is left alone). A destination that has the
directory only through its contents counts as having it, unless deletes will
empty it: then the source's marker is copied, so the directory survives them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from .local import LocalEntry, is_marker
from .state import Record
from .store import ObjectMeta


class Direction(str, Enum):
    DOWN = "download"  # remote is the source, local the destination
    UP = "upload"  # local is the source, remote the destination


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """A remote object under the synced root: ``rel`` is its key minus the root prefix."""

    rel: str
    meta: ObjectMeta

    @property
    def version(self) -> str:
        """The change token compared with records (version, else size and mtime)."""
        m = self.meta
        return m.version if m.version is not None else f"{m.size}@{m.mtime}"


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan; ``size`` is the bytes a copy would move (0 otherwise).

    ``reason`` says why: ``new``, ``size differs``, ``changed since last sync``
    (a verify whose record one side no longer matches), ``no record`` (a verify
    with nothing recorded), ``deleted at source`` or ``gone`` (a forget).
    """

    kind: Literal["copy", "verify", "delete", "forget"]
    rel: str
    local: LocalEntry | None = None
    remote: RemoteEntry | None = None
    size: int = 0
    #: Why (see above): an explanation for plans, not part of an action's identity.
    reason: str = field(default="", compare=False)


@dataclass
class Tally:
    """Files a plan saw on each side (excluded paths not counted), filled in as it streams."""

    source: int = 0
    destination: int = 0


def plan(
    direction: Direction,
    local: Iterable[LocalEntry],
    remote: Iterable[RemoteEntry],
    records: Iterable[Record],
    *,
    delete: bool,
    excluded: Callable[[str], bool] = lambda rel: False,
    tally: Tally | None = None,
) -> Iterator[Action]:
    """Yield the actions that make the destination of ``direction`` match its source.

    ``tally``, if given, counts the files seen on each side as the plan streams
    (complete once the plan is exhausted), for `DeleteGuard.check`.

    Every input must be sorted by ``rel`` with no duplicates; a stream out of
    order raises `UnsortedListing` rather than risk a wrong delete. Actions
    yielded before that point are copies of the right content or deletes,
    which the executor only runs once the whole plan has been read.
    """
    for rel, loc, rem, rec, below in _merge(local, remote, records):
        if excluded(rel):
            continue
        if below is not None:
            action = _marker_action(direction, rel, loc, rem, below, delete)
            if action is not None:
                yield action
            continue
        if loc is None and rem is None:
            yield Action("forget", rel, reason="gone")
            continue
        src, dst = (rem, loc) if direction is Direction.DOWN else (loc, rem)
        if tally is not None and not rel.endswith("/"):  # directory markers are not files
            tally.source += src is not None
            tally.destination += dst is not None
        if src is None:
            if delete:
                yield Action("delete", rel, loc, rem, reason="deleted at source")
            continue
        size = src.meta.size if isinstance(src, RemoteEntry) else src.size
        if dst is None:
            yield Action("copy", rel, loc, rem, size, "new")
            continue
        assert loc is not None and rem is not None
        if rec is not None and _matches(rec, loc, rem):
            continue
        if loc.size != rem.meta.size:
            yield Action("copy", rel, loc, rem, size, "size differs")
        else:
            yield Action("verify", rel, loc, rem, size, "changed since last sync" if rec is not None else "no record")


def _marker_action(
    direction: Direction,
    rel: str,
    loc: LocalEntry | None,
    rem: RemoteEntry | None,
    below: tuple[bool, bool],
    delete: bool,
) -> Action | None:
    """What a directory marker needs (see the module docstring); records only get forgotten.
    ``below`` says whether the local and the remote side list anything inside its directory."""
    src, dst = (rem, loc) if direction is Direction.DOWN else (loc, rem)
    dst_below, src_below = below if direction is Direction.DOWN else below[::-1]
    if src is None and dst is None:
        return Action("forget", rel, reason="gone")
    if src is not None:
        if dst is not None or (dst_below and (src_below or not delete)):
            return None
        return Action("copy", rel, loc, rem, reason="new")
    if delete and not src_below:
        return Action("delete", rel, loc, rem, reason="deleted at source")
    return None


def _matches(rec: Record, loc: LocalEntry, rem: RemoteEntry) -> bool:
    return (
        rec.local_size == loc.size
        and rec.local_mtime_ns == loc.mtime_ns
        and rec.remote_size == rem.meta.size
        and rec.remote_version == rem.version
    )


_END = object()


_Row = tuple[str, LocalEntry | None, RemoteEntry | None, Record | None, tuple[bool, bool] | None]


def _merge(local: Iterable[LocalEntry], remote: Iterable[RemoteEntry], records: Iterable[Record]) -> Iterator[_Row]:
    """Join three sorted streams on ``rel``: one row per distinct path. A marker's row ends
    with whether the local and the remote side list anything inside its directory (the
    next entry of each sorted stream); other rows end with ``None``."""
    streams = [_checked(local, "local"), _checked(remote, "remote"), _checked(records, "records")]
    heads = [next(s, _END) for s in streams]
    while True:
        rels = [h.rel for h in heads if h is not _END]  # type: ignore[attr-defined]
        if not rels:
            return
        rel = min(rels)
        row: list = [None, None, None]
        for i, h in enumerate(heads):
            if h is not _END and h.rel == rel:  # type: ignore[attr-defined]
                row[i] = h
                heads[i] = next(streams[i], _END)
        below = (_inside(heads[0], rel), _inside(heads[1], rel)) if is_marker(rel) else None
        yield rel, row[0], row[1], row[2], below


def _inside(head: object, marker: str) -> bool:
    """True if a stream's next entry lies inside the marker's directory."""
    return head is not _END and head.rel.startswith(marker)  # type: ignore[attr-defined]


class UnsortedListing(ValueError):
    """An input stream was not strictly sorted; ``stream`` names it ("local", "remote" or "records")."""

    def __init__(self, stream: str, rel: str, prev: str) -> None:
        self.stream = stream
        super().__init__(f"The {stream} listing is not strictly sorted: {rel!r} came after {prev!r}")


def _checked(items: Iterable, name: str) -> Iterator:
    prev: str | None = None
    for item in items:
        if prev is not None and item.rel <= prev:
            raise UnsortedListing(name, item.rel, prev)
        prev = item.rel
        yield item
