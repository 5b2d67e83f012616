"""Plans from Python: `pos3.plan_download` / `plan_upload` against SeaweedFS (and file://), changing nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write


def mirror(cache: Path) -> pos3.Mirror:
    return pos3.mirror(cache_root=cache, show_progress=False)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` (files and directories) with its mtime, inode and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[p.relative_to(root).as_posix()] = (st.st_mtime_ns, st.st_ino, p.read_bytes() if p.is_file() else b"")
    return out


def reasons(plan: pos3.TransferPlan) -> dict[str, tuple[str, str]]:
    """{file name: (kind, reason)} of every action."""
    return {Path(a.dst).name: (a.kind, a.reason) for a in plan.actions}


def test_plan_download_lists_each_copy_and_delete_with_its_reason(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"d/same": b"1111", "d/edited": b"aaaa", "d/longer": b"12345", "d/new": b"n", "d/changed": b"cc"})
    local = tmp_path / "local"
    with mirror(cache):
        pos3.download(f"s3://{bucket}/d", local=local)
    put(s3, bucket, {"d/changed": b"CC"})  # same size, new ETag: the record no longer matches
    write(local, {"edited": b"bbbb", "longer": b"1234", "extra": b"x"})  # same-size edit without a matching record
    (local / "edited").touch()
    (local / "new").unlink(missing_ok=True)
    os.utime(local / "same", ns=(1, 1))  # mtime moved, content equal: proven equal by hash, not copied
    before = snapshot(local), remote_tree(s3, bucket), snapshot(cache)

    with mirror(cache):
        plan = pos3.plan_download(f"s3://{bucket}/d", local=local)

    assert reasons(plan) == {
        "edited": ("download", "content differs"),
        "changed": ("download", "content differs"),
        "longer": ("download", "size differs"),
        "new": ("download", "new"),
        "extra": ("delete", "deleted at source"),
    }
    assert sorted(plan.to_copy) == sorted(
        (f"s3://{bucket}/d/{n}", str(local / n)) for n in ("changed", "edited", "longer", "new")
    )
    assert plan.to_delete == [str(local / "extra")]
    sizes = {Path(a.dst).name: a.size for a in plan.actions}
    assert sizes == {"edited": 4, "changed": 2, "longer": 5, "new": 1, "extra": 0}
    assert plan.bytes == 12
    assert (snapshot(local), remote_tree(s3, bucket), snapshot(cache)) == before

    with mirror(cache):
        pos3.download(f"s3://{bucket}/d", local=local)
        assert pos3.plan_download(f"s3://{bucket}/d", local=local).actions == []
    assert local_tree(local) == {"same": b"1111", "edited": b"aaaa", "longer": b"12345", "new": b"n", "changed": b"CC"}


def test_plan_download_creates_nothing(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"d/a": b"a", "d/sub/b": b"b"})
    cache.mkdir()
    with mirror(cache):
        plan = pos3.plan_download(f"s3://{bucket}/d")  # into the cache path, which does not exist yet
        temp = tmp_path / "dir" / ".pos3-tmp-leftover"
        temp.parent.mkdir()
        temp.write_bytes(b"partial")
        other = pos3.plan_download(f"s3://{bucket}/d", local=tmp_path / "dir")
    assert plan.to_copy == [
        (f"s3://{bucket}/d/a", str(cache / "_" / bucket / "d" / "a")),
        (f"s3://{bucket}/d/sub/b", str(cache / "_" / bucket / "d" / "sub" / "b")),
    ]
    assert plan.to_delete == []
    assert sorted(p.name for p in cache.iterdir()) == []  # no directory, no state file
    assert temp.exists()  # a real download would remove it; a plan does not
    assert [a.reason for a in other.actions] == ["new", "new"]


def test_plan_upload_and_its_delete_switch(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"out/gone": b"g", "out/same": b"s"})
    write(tmp_path / "out", {"same": b"s", "fresh.txt": b"f", "skip.tmp": b"t"})
    with mirror(cache):
        # 0.4.0's positional order: remote, local, exclude, profile.
        plan = pos3.plan_upload(f"s3://{bucket}/out", tmp_path / "out", ["*.tmp"])
        kept = pos3.plan_upload(f"s3://{bucket}/out", tmp_path / "out", ["*.tmp"], delete=False)
        missing = pos3.plan_upload(f"s3://{bucket}/out", tmp_path / "nothing-here")
    assert reasons(plan) == {"fresh.txt": ("upload", "new"), "gone": ("delete", "deleted at source")}
    assert plan.to_copy == [(str(tmp_path / "out" / "fresh.txt"), f"s3://{bucket}/out/fresh.txt")]
    assert plan.to_delete == [f"s3://{bucket}/out/gone"]
    assert kept.to_delete == [] and kept.to_copy == plan.to_copy
    assert missing == pos3.TransferPlan([], [], [])  # nothing to upload yet, as in 0.4.0
    assert not (tmp_path / "nothing-here").exists()
    assert remote_tree(s3, bucket) == {"out/gone": b"g", "out/same": b"s"}


def test_unverified_when_the_store_has_no_hash(cache, tmp_path):
    """file:// reports no MD5: a same-size file without a record would be copied, and the plan says why."""
    remote = tmp_path / "remote"
    write(remote, {"d/a": b"one", "d/b": b"two"})
    local = tmp_path / "local"
    write(local, {"a": b"one"})
    with mirror(cache):
        plan = pos3.plan_download(f"file://{remote}/d", local=local)
        pos3.download(f"file://{remote}/d", local=local)
        write(local, {"b": b"TWO"})
        again = pos3.plan_download(f"file://{remote}/d", local=local)
    assert reasons(plan) == {"a": ("download", "unverified"), "b": ("download", "new")}
    assert reasons(again) == {"b": ("download", "changed since last sync")}


def test_plans_need_a_mirror_and_a_remote(s3, bucket, cache, tmp_path):
    with pytest.raises(RuntimeError, match="active"):
        pos3.plan_download(f"s3://{bucket}/d")
    with mirror(cache):
        with pytest.raises(FileNotFoundError, match="No such remote"):
            pos3.plan_download(f"s3://{bucket}/missing", local=tmp_path / "x")
        with pytest.raises(ValueError, match="remote URL"):
            pos3.plan_upload(str(tmp_path))
    assert not (tmp_path / "x").exists()


def test_plan_lines_and_json():
    a = pos3.PlannedAction("download", "s3://b/k", "./data/k", 3, "new")
    d = pos3.PlannedAction("delete", None, "s3://b/old", 0, "deleted at source")
    assert a.line() == "(dryrun) download: s3://b/k to ./data/k"
    assert d.line() == "(dryrun) delete: s3://b/old"
    assert a.to_json() == {"action": "download", "src": "s3://b/k", "dst": "./data/k", "size": 3, "reason": "new"}
