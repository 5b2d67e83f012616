"""Pure unit tests of the planner: no I/O."""

from __future__ import annotations

import pytest

from pos3.local import LocalEntry
from pos3.patterns import Excluder
from pos3.planner import Direction, RemoteEntry, plan
from pos3.state import Record
from pos3.store import ObjectMeta

DOWN, UP = Direction.DOWN, Direction.UP


def L(rel: str, size: int = 1, mtime: int = 100) -> LocalEntry:
    return LocalEntry(rel, size, mtime)


def R(rel: str, size: int = 1, version: str = "v1", md5: str | None = None) -> RemoteEntry:
    return RemoteEntry(rel, ObjectMeta(rel, size, version, 1.0, md5))


def rec(rel: str, size: int = 1, mtime: int = 100, version: str = "v1") -> Record:
    return Record(rel, size, mtime, size, version)


def kinds(actions) -> list[tuple[str, str]]:
    return [(a.kind, a.rel) for a in actions]


def test_download_copies_missing_and_deletes_extra():
    actions = plan(DOWN, [L("b"), L("z")], [R("a"), R("b")], [rec("b")], delete=True)
    assert kinds(actions) == [("copy", "a"), ("delete", "z")]


def test_no_delete_when_disabled():
    assert kinds(plan(DOWN, [L("z")], [], [], delete=False)) == []
    assert kinds(plan(UP, [], [R("z")], [], delete=False)) == []


def test_unchanged_recorded_file_is_skipped():
    assert kinds(plan(DOWN, [L("a")], [R("a")], [rec("a")], delete=True)) == []
    assert kinds(plan(UP, [L("a")], [R("a")], [rec("a")], delete=True)) == []


@pytest.mark.parametrize("direction", [DOWN, UP])
def test_same_size_change_on_either_side_is_not_skipped(direction):
    remote_edit = plan(direction, [L("a")], [R("a", version="v2")], [rec("a")], delete=True)
    local_edit = plan(direction, [L("a", mtime=200)], [R("a")], [rec("a")], delete=True)
    assert kinds(remote_edit) == [("verify", "a")]
    assert kinds(local_edit) == [("verify", "a")]


def test_size_change_is_a_copy():
    assert kinds(plan(UP, [L("a", size=2)], [R("a")], [rec("a")], delete=True)) == [("copy", "a")]


def test_unrecorded_pair_of_equal_size_is_verified():
    assert kinds(plan(DOWN, [L("a")], [R("a")], [], delete=True)) == [("verify", "a")]


def test_upload_direction_mirrors_download():
    actions = list(plan(UP, [L("a"), L("b")], [R("b", size=5), R("c")], [], delete=True))
    assert kinds(actions) == [("copy", "a"), ("copy", "b"), ("delete", "c")]
    assert [a.size for a in actions if a.kind == "copy"] == [1, 1]


def test_copy_size_is_the_source_size():
    (down,) = plan(DOWN, [L("a", size=3)], [R("a", size=7)], [], delete=True)
    (up,) = plan(UP, [L("a", size=3)], [R("a", size=7)], [], delete=True)
    assert (down.size, up.size) == (7, 3)


def test_stale_records_are_forgotten():
    assert kinds(plan(DOWN, [], [], [rec("gone")], delete=True)) == [("forget", "gone")]


def test_excluded_paths_are_never_touched_on_either_side():
    ex = Excluder(["*.tmp", "cache/"])
    local = [L("cache/x"), L("keep"), L("x.tmp")]
    remote = [R("cache/y"), R("new"), R("y.tmp")]
    for direction in (DOWN, UP):
        actions = kinds(plan(direction, local, remote, [], delete=True, excluded=ex.file))
        assert actions == (
            [("delete", "keep"), ("copy", "new")] if direction is DOWN else [("copy", "keep"), ("delete", "new")]
        )


def test_merge_uses_plain_string_order_of_full_paths():
    # "a-b" < "a/b" < "a0" in byte order: a walk must produce exactly this order.
    rels = ["a-b", "a/b", "a0"]
    actions = plan(DOWN, [L(r) for r in rels], [R(r) for r in rels], [rec(r) for r in rels], delete=True)
    assert kinds(actions) == []


def test_unsorted_input_is_refused_before_any_delete():
    with pytest.raises(ValueError, match="not strictly sorted"):
        list(plan(DOWN, [L("b"), L("a")], [], [], delete=True))
    with pytest.raises(ValueError, match="remote"):
        list(plan(DOWN, [], [R("a"), R("a")], [], delete=True))


def test_plan_is_lazy():
    def remote():  # the merge looks one entry ahead, never further
        yield R("a")
        yield R("b")
        raise AssertionError("the planner read ahead of what it yielded")

    it = plan(DOWN, [], remote(), [], delete=True)
    assert next(it).rel == "a"


def test_remote_without_version_uses_size_and_mtime():
    e = RemoteEntry("a", ObjectMeta("a", 3, None, 12.5))
    assert e.version == "3@12.5"
