"""Delete guards: an empty source never wipes a destination unless asked, and `max_delete` caps a run's deletes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3.executor import DeleteGuard, DeleteRefused, SyncError, check_max_delete
from pos3.local import LocalEntry
from pos3.planner import Direction, RemoteEntry, Tally, plan
from pos3.store import ObjectMeta


def poll(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


DATA = {f"f{i}": bytes([i]) * 10 for i in range(10)}


# -- the pure guard -------------------------------------------------------------


def test_guard_refuses_an_empty_source_unless_a_wipe_is_allowed():
    with pytest.raises(DeleteRefused, match="refusing to delete 3 file") as info:
        DeleteGuard().check("↑ x", 3, Tally(source=0, destination=3))
    assert info.value.count == 3 and isinstance(info.value, SyncError)
    assert "allow_wipe=True" in str(info.value)
    DeleteGuard(allow_wipe=True).check("↑ x", 3, Tally(source=0, destination=3))
    DeleteGuard().check("↑ x", 0, Tally(source=0, destination=0))  # nothing to delete: nothing to refuse


def test_guard_max_delete_as_count_and_fraction():
    tally = Tally(source=7, destination=10)
    DeleteGuard(max_delete=3).check("x", 3, tally)
    with pytest.raises(DeleteRefused, match="4 file.*max_delete=3"):
        DeleteGuard(max_delete=3).check("x", 4, tally)
    DeleteGuard(max_delete=0.3).check("x", 3, tally)
    with pytest.raises(DeleteRefused, match="40% of the 10 at the destination"):
        DeleteGuard(max_delete=0.3).check("x", 4, tally)
    with pytest.raises(DeleteRefused):
        DeleteGuard(max_delete=0).check("x", 1, tally)
    DeleteGuard(max_delete=1.0).check("x", 10, Tally(source=1, destination=10))


@pytest.mark.parametrize("bad", [-1, 1.5, -0.1, True, "3", [1]])
def test_max_delete_values_are_validated(bad):
    with pytest.raises(ValueError, match="max_delete"):
        check_max_delete(bad)


def test_tally_counts_files_per_side_not_markers_or_excluded():
    tally = Tally()
    local = [LocalEntry("a", 1, 1), LocalEntry("skip", 1, 1)]
    remote = [RemoteEntry(rel, ObjectMeta(rel, 0, "v")) for rel in ("d/", "e", "skip")]
    list(plan(Direction.DOWN, local, remote, [], delete=True, excluded=lambda rel: rel == "skip", tally=tally))
    assert (tally.source, tally.destination) == (1, 1)  # remote "e" (not the marker "d/"), local "a"


# -- scenarios against a real S3 server ------------------------------------------


@pytest.mark.reliability(
    "An upload from a missing or empty local root never wipes the remote (S3)", group="Delete guards"
)
@pytest.mark.parametrize("local_state", ["missing", "empty"])
def test_upload_from_an_empty_root_does_not_wipe_the_remote(s3, bucket, cache, tmp_path, local_state):
    put(s3, bucket, {f"out/{k}": v for k, v in DATA.items()})
    local = tmp_path / "out"
    if local_state == "empty":
        local.mkdir()
    with pytest.raises(DeleteRefused, match="refusing to delete 10 file.*allow_wipe=True"):
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.upload(f"s3://{bucket}/out", local=local, interval=None)
    assert remote_tree(s3, bucket, "out/") == DATA


@pytest.mark.reliability(
    "An explicit allow_wipe=True lets an empty source empty the destination (S3)", group="Delete guards"
)
def test_allow_wipe_is_the_explicit_switch(s3, bucket, cache, tmp_path):
    put(s3, bucket, {f"out/{k}": v for k, v in DATA.items()})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/out", local=tmp_path / "out", interval=None, allow_wipe=True)
    assert remote_tree(s3, bucket, "out/") == {}
    local = tmp_path / "down"
    write(local, DATA)
    s3.put_object(Bucket=bucket, Key="marker-only/", Body=b"")
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/marker-only", local=local, allow_wipe=True)
    assert local_tree(local) == {}


@pytest.mark.reliability(
    "A download of a prefix holding only a directory marker never wipes the local root (S3)", group="Delete guards"
)
def test_download_of_a_marker_only_prefix_does_not_wipe_local(s3, bucket, cache, tmp_path):
    s3.put_object(Bucket=bucket, Key="data/", Body=b"")
    local = tmp_path / "data"
    write(local, DATA)
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(DeleteRefused, match="refusing to delete 10 file"):
            pos3.download(f"s3://{bucket}/data", local=local)
        assert local_tree(local) == DATA
        pos3.download(f"s3://{bucket}/data", local=tmp_path / "fresh")  # an empty local root is fine
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(DeleteRefused):
        pos3.sync(f"s3://{bucket}/data", local=local, interval=None)  # the same guard in sync
    assert local_tree(local) == DATA
    assert (tmp_path / "fresh").is_dir()


@pytest.mark.reliability(
    "A download a guard refused is retried with allow_wipe or a higher max_delete in the same block (S3)",
    group="Delete guards",
)
def test_a_refused_download_can_be_retried_with_the_switch_in_the_same_block(s3, bucket, cache, tmp_path):
    """The refusal says "pass allow_wipe=True" (or a higher max_delete): doing so in the same
    mirror block is a new sync of the same root, not a conflicting registration."""
    s3.put_object(Bucket=bucket, Key="data/", Body=b"")
    put(s3, bucket, {"few/f0": DATA["f0"]})
    local, other = tmp_path / "data", tmp_path / "few"
    write(local, DATA)
    write(other, DATA)
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(DeleteRefused, match="allow_wipe=True"):
            pos3.download(f"s3://{bucket}/data", local=local)
        pos3.download(f"s3://{bucket}/data", local=local, allow_wipe=True)
        assert local_tree(local) == {}
        with pytest.raises(DeleteRefused, match="max_delete=2"):
            pos3.download(f"s3://{bucket}/few", local=other, max_delete=2)
        pos3.download(f"s3://{bucket}/few", local=other, max_delete=9)
        assert local_tree(other) == {"f0": DATA["f0"]}


@pytest.mark.reliability("max_delete stops a plan before it deletes more than allowed (S3)", group="Delete guards")
@pytest.mark.parametrize("where", ["call", "mirror"])
def test_max_delete_refuses_a_large_delete_and_deletes_nothing(s3, bucket, cache, tmp_path, where):
    put(s3, bucket, {f"d/{k}": v for k, v in DATA.items()})
    local = tmp_path / "d"
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/d", local=local)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"d/f{i}"} for i in range(4)]})
    s3.put_object(Bucket=bucket, Key="d/new", Body=b"new")
    call = {"max_delete": 3} if where == "call" else {}
    mirror_wide = {"max_delete": 0.3} if where == "mirror" else {}
    with pos3.mirror(cache_root=cache, show_progress=False, **mirror_wide):
        with pytest.raises(DeleteRefused, match="refusing to delete 4 file") as info:
            pos3.download(f"s3://{bucket}/d", local=local, **call)
    assert info.value.count == 4
    assert local_tree(local) == {**DATA, "new": b"new"}  # the copy ran, no delete did
    with pos3.mirror(cache_root=cache, show_progress=False, **mirror_wide):
        pos3.download(f"s3://{bucket}/d", local=local, max_delete=4)  # a call's own limit wins
    assert local_tree(local) == {**{k: v for k, v in DATA.items() if k not in {"f0", "f1", "f2", "f3"}}, "new": b"new"}


@pytest.mark.reliability("max_delete guards uploads, background and final (S3)", group="Delete guards")
def test_max_delete_on_upload(s3, bucket, cache, tmp_path, caplog):
    local = tmp_path / "u"
    write(local, DATA)
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/u", local=local, interval=None)
    for i in range(5):
        (local / f"f{i}").unlink()
    with caplog.at_level(logging.WARNING, logger="pos3"), pytest.raises(DeleteRefused, match="5 file.*max_delete=2"):
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.upload(f"s3://{bucket}/u", local=local, interval=0.2, max_delete=2)
            poll(lambda: "background upload" in caplog.text and "refusing to delete 5 file" in caplog.text)
            assert remote_tree(s3, bucket, "u/") == DATA
    assert remote_tree(s3, bucket, "u/") == DATA
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/u", local=local, interval=None, max_delete=5)
    assert remote_tree(s3, bucket, "u/") == {k: v for k, v in DATA.items() if k >= "f5"}


def test_delete_false_never_meets_a_guard(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"keep/a": b"1"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/keep", local=tmp_path / "empty", interval=None, delete=False, max_delete=0)
    assert remote_tree(s3, bucket, "keep/") == {"a": b"1"}
