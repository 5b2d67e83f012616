"""Plans: what a download, upload or remote → remote copy would do, changing nothing.

A plan is the real pipeline's plan (`Root.preview`: the same listings, records
and planner as a sync), settled and listed instead of executed. Reading it
transfers nothing, deletes nothing, creates no directory and writes no record.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import locate
from .executor import DeleteGuard
from .mirror import Mirror, active
from .planner import Direction
from .profiles import Profile
from .sync import Root


@dataclass(frozen=True)
class PlannedAction:
    """One step of a plan.

    ``kind`` is ``download``, ``upload``, ``copy`` (store to store) or
    ``delete``; ``src`` is ``None`` for a delete, whose target is ``dst``.
    ``size`` is the bytes a copy moves (0 for a delete). ``reason`` is one of
    ``new``, ``size differs``, ``changed since last sync`` (same size, and a
    side no longer matches what the last sync recorded), ``content differs``
    (same size, no record, content hashes differ), ``unverified`` (same size,
    no record, and a side has no content hash, so it is copied to be sure) and
    ``deleted at source``.
    """

    kind: Literal["download", "upload", "copy", "delete"]
    src: str | None
    dst: str
    size: int
    reason: str

    def line(self) -> str:
        """The action as ``aws s3 sync --dryrun`` prints it: ``(dryrun) download: SRC to DST``."""
        if self.kind == "delete":
            return f"(dryrun) delete: {self.dst}"
        return f"(dryrun) {self.kind}: {self.src} to {self.dst}"

    def to_json(self) -> dict[str, Any]:
        return {"action": self.kind, "src": self.src, "dst": self.dst, "size": self.size, "reason": self.reason}


@dataclass(frozen=True)
class TransferPlan:
    """What a transfer would do: ``to_copy`` as ``(source, destination)`` pairs and ``to_delete`` as
    destinations (local paths or URLs), as in pos3 0.4.0; ``actions`` holds every step with its size
    and reason, copies first, in plan order."""

    to_copy: list[tuple[str, str]]
    to_delete: list[str]
    actions: list[PlannedAction] = field(default_factory=list)

    @classmethod
    def of(cls, actions: list[PlannedAction]) -> TransferPlan:
        copies = [a for a in actions if a.kind != "delete"]
        deletes = [a for a in actions if a.kind == "delete"]
        return cls([(a.src or "", a.dst) for a in copies], [a.dst for a in deletes], copies + deletes)

    @property
    def bytes(self) -> int:
        """The bytes the copies would move."""
        return sum(a.size for a in self.actions)


def preview(root: Root, direction: Direction, *, delete: bool, guard: DeleteGuard) -> TransferPlan:
    """The plan of ``root`` in ``direction`` (see `Root.preview`) as a `TransferPlan`."""
    side = root.operations(direction)
    out: list[PlannedAction] = []
    for action in root.preview(direction, delete=delete, guard=guard):
        if action.kind == "delete":
            out.append(PlannedAction("delete", None, side.name(action, qualified=True), 0, action.reason))
        else:
            verb: Any = side.verb
            src, dst = side.source(action, qualified=True), side.name(action, qualified=True)
            out.append(PlannedAction(verb, src, dst, action.size, action.reason))
    return TransferPlan.of(out)


def plan_download(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
    *,
    delete: bool = True,
) -> TransferPlan:
    """The plan `pos3.download` with the same arguments would execute now, changing nothing.

    A remote that does not exist raises `FileNotFoundError`, and deletes the mirror's delete
    guard would refuse raise `DeleteRefused`, as `download` does.
    """
    return download_plan(active(), remote, local, exclude, profile, delete=delete)


def plan_upload(
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] | None = None,
    profile: str | Profile | None = None,
    *,
    delete: bool = True,
) -> TransferPlan:
    """The plan a one-shot upload of ``local`` to ``remote`` would execute now, changing nothing.

    A local source that does not exist yet gives an empty plan (nothing to upload), as in pos3 0.4.0.
    """
    return upload_plan(active(), remote, local, exclude, profile, delete=delete)


def download_plan(
    m: Mirror,
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    *,
    delete: bool,
    guard: DeleteGuard | None = None,
) -> TransferPlan:
    """`plan_download` through the mirror ``m``, which need not be entered (``guard``: the mirror's by default)."""
    return _root_plan(m, Direction.DOWN, remote, local, exclude, profile, delete, guard)


def upload_plan(
    m: Mirror,
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    *,
    delete: bool,
    guard: DeleteGuard | None = None,
) -> TransferPlan:
    """`plan_upload` through the mirror ``m``, which need not be entered (``guard``: the mirror's by default)."""
    return _root_plan(m, Direction.UP, remote, local, exclude, profile, delete, guard)


def _root_plan(
    m: Mirror,
    direction: Direction,
    remote: str | os.PathLike[str],
    local: str | os.PathLike[str] | None,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    delete: bool,
    guard: DeleteGuard | None,
) -> TransferPlan:
    """The plan of one root in ``direction``; an upload of a local source that does not exist is empty."""
    root = locate.root(m, direction, _remote(remote, f"plan_{direction.value}"), local, exclude, profile)
    if direction is Direction.UP and not root.local.exists():
        root.state.close()
        return TransferPlan([], [], [])
    return _previewed(root, direction, delete, guard or DeleteGuard(m.max_delete))


def copy_plan(
    m: Mirror,
    src: str,
    dst: str,
    exclude: Sequence[str] | None,
    profile: str | Profile | None,
    *,
    delete: bool,
    guard: DeleteGuard | None = None,
) -> TransferPlan:
    """The plan of a remote → remote copy from ``src`` to ``dst`` (`pos3 sync URL URL`), changing nothing."""
    relay = locate.relay(m, _remote(src, "a copy"), _remote(dst, "a copy"), exclude, profile, readonly=True)
    return _previewed(relay, Direction.DOWN, delete, guard or DeleteGuard(m.max_delete))


def _previewed(root: Root, direction: Direction, delete: bool, guard: DeleteGuard) -> TransferPlan:
    try:
        return preview(root, direction, delete=delete, guard=guard)
    finally:
        root.state.close()


def _remote(value: str | os.PathLike[str], what: str) -> str:
    if not locate.is_url(value):
        raise ValueError(f"{what} needs a remote URL (scheme://bucket/key), got the local path {str(value)!r}")
    return str(value)


__all__ = ["PlannedAction", "TransferPlan", "copy_plan", "download_plan", "plan_download", "plan_upload", "upload_plan"]
