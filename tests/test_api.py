"""Every parameter of the seed API, over real HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3.testing.servers import seaweedfs
from pos3.urls import parse

Q = {"show_progress": False}


def test_download_options(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"d/a.csv": b"a", "d/sub/b.csv": b"b", "d/skip.log": b"x", "d/logs/c": b"c"})
    local = tmp_path / "explicit"
    write(local, {"mine.txt": b"local only", "keep.log": b"excluded, so kept"})
    with pos3.mirror(cache_root=cache, **Q):
        p = pos3.download(f"s3://{bucket}/d", local=local, delete=False, exclude=["*.log", "logs"])
        assert p == local
        assert local_tree(local) == {
            "a.csv": b"a",
            "sub/b.csv": b"b",
            "mine.txt": b"local only",
            "keep.log": b"excluded, so kept",
        }
    with pos3.mirror(cache_root=cache, **Q):
        pos3.download(f"s3://{bucket}/d", local=local, exclude=["*.log", "logs"])
    assert local_tree(local) == {"a.csv": b"a", "sub/b.csv": b"b", "keep.log": b"excluded, so kept"}


def test_download_single_object_and_whole_bucket(s3, bucket, cache):
    put(s3, bucket, {"one.txt": b"1", "dir/two.txt": b"2"})
    with pos3.mirror(cache_root=cache, **Q):
        f = pos3.download(f"s3://{bucket}/dir/two.txt")
        assert f == cache / "_" / bucket / "dir" / "two.txt" and f.read_bytes() == b"2"
        whole = pos3.download(f"s3://{bucket}/", local=cache / "whole")
        assert local_tree(whole) == {"one.txt": b"1", "dir/two.txt": b"2"}


def test_upload_options(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"out/old": b"old", "out/x.tmp": b"remote excluded"})
    local = tmp_path / "out"
    write(local, {"new": b"new", "scratch.tmp": b"local excluded", "cache/big": b"excluded dir"})
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(f"s3://{bucket}/out", local=local, interval=None, delete=False, exclude=["*.tmp", "cache/"])
    assert remote_tree(s3, bucket, "out/") == {"old": b"old", "new": b"new", "x.tmp": b"remote excluded"}
    with pos3.mirror(cache_root=cache, **Q):
        pos3.upload(f"s3://{bucket}/out", local=local, interval=None, exclude=["*.tmp", "cache/"])
    assert remote_tree(s3, bucket, "out/") == {"new": b"new", "x.tmp": b"remote excluded"}


def test_upload_single_file(s3, bucket, cache, tmp_path):
    f = tmp_path / "result.json"
    f.write_text("{}")
    with pos3.mirror(cache_root=cache, **Q):
        assert pos3.upload(f"s3://{bucket}/results/result.json", local=f, interval=None) == f
        f.write_text('{"acc": 1}')
    assert remote_tree(s3, bucket, "results/") == {"result.json": b'{"acc": 1}'}


def test_upload_creates_the_cache_directory(s3, bucket, cache):
    with pos3.mirror(cache_root=cache, **Q):
        logs = pos3.upload(f"s3://{bucket}/logs", interval=None)
        assert logs == cache / "_" / bucket / "logs" and logs.is_dir()


def test_sync_resumes_and_keeps_history(s3, bucket, cache):
    put(s3, bucket, {"ckpt/epoch1.pt": b"e1", "ckpt/epoch2.pt": b"e2"})
    with pos3.mirror(cache_root=cache, **Q):
        ck = pos3.sync(f"s3://{bucket}/ckpt", interval=None, delete_remote=False)
        assert local_tree(ck) == {"epoch1.pt": b"e1", "epoch2.pt": b"e2"}
        (ck / "epoch1.pt").unlink()  # rotate old checkpoints locally
        write(ck, {"epoch3.pt": b"e3"})
    assert remote_tree(s3, bucket, "ckpt/") == {"epoch1.pt": b"e1", "epoch2.pt": b"e2", "epoch3.pt": b"e3"}


def test_sync_delete_flags(s3, bucket, cache):
    put(s3, bucket, {"s/remote": b"r"})
    local = cache / "_" / bucket / "s"
    write(local, {"stray": b"local"})
    with pos3.mirror(cache_root=cache, **Q):
        pos3.sync(f"s3://{bucket}/s", interval=None, delete_local=False)
        assert local_tree(local) == {"remote": b"r", "stray": b"local"}
        (local / "remote").unlink()
    assert remote_tree(s3, bucket, "s/") == {"stray": b"local"}  # delete_remote=True by default


def test_sync_of_a_new_prefix_starts_empty(s3, bucket, cache):
    with pos3.mirror(cache_root=cache, **Q):
        ck = pos3.sync(f"s3://{bucket}/fresh", interval=None)
        assert ck.is_dir() and not any(ck.iterdir())
        write(ck, {"a": b"1"})
    assert remote_tree(s3, bucket, "fresh/") == {"a": b"1"}


def test_local_paths_pass_through(cache, tmp_path):
    with pos3.mirror(cache_root=cache, **Q):
        assert pos3.download(str(tmp_path)) == tmp_path
        assert pos3.upload(tmp_path / "x") == tmp_path / "x"  # created: see tests/test_markers.py
        assert pos3.sync(str(tmp_path)) == tmp_path


def test_ls(s3, bucket, cache):
    put(s3, bucket, {"p/a": b"1", "p/sub/b": b"2", "p/sub/c/d": b"3", "p_other/x": b"4"})
    base = f"s3://{bucket}/"
    with pos3.mirror(cache_root=cache, **Q):
        assert pos3.ls(f"{base}p") == [f"{base}p/a", f"{base}p/sub/"]
        assert pos3.ls(f"{base}p/", recursive=True) == [f"{base}p/a", f"{base}p/sub/b", f"{base}p/sub/c/d"]
        assert pos3.ls(f"{base}p/a") == [f"{base}p/a"]
        assert pos3.ls(f"{base}nothing") == []
        local = pos3.download(f"{base}p")
        assert pos3.ls(local) == [f"{local}/a", f"{local}/sub/"]
        assert pos3.ls(str(local), recursive=True) == [f"{local}/a", f"{local}/sub/b", f"{local}/sub/c/d"]


def test_with_mirror_decorator(s3, bucket, cache):
    put(s3, bucket, {"d/f": b"1"})

    @pos3.with_mirror(cache_root=cache, show_progress=False)
    def job() -> Path:
        return pos3.download(f"s3://{bucket}/d")

    @pos3.with_mirror
    def bare() -> bool:
        return True

    assert (job() / "f").read_bytes() == b"1"
    assert bare.__name__ == "bare"
    with pytest.raises(RuntimeError):  # only active while the function runs
        pos3.download(f"s3://{bucket}/d")


def test_show_progress_draws_a_bar(s3, bucket, cache, capsys):
    put(s3, bucket, {"d/f": b"x" * 5000})
    with pos3.mirror(cache_root=cache, show_progress=True):
        pos3.download(f"s3://{bucket}/d")
    assert f"s3://{bucket}/d" in capsys.readouterr().err
    with pos3.mirror(cache_root=cache, show_progress=True):
        pos3.download(f"s3://{bucket}/d")  # nothing to move: no bar
    assert capsys.readouterr().err == ""


def test_max_workers_sizes_the_connection_pool(s3, bucket, cache):
    with pos3.mirror(cache_root=cache, max_workers=37, **Q) as m:
        store = m.store(parse(f"s3://{bucket}/x"), pos3.Profile())
        assert store.client.meta.config.max_pool_connections >= 37
        assert m.store(parse(f"s3://{bucket}/y"), pos3.Profile()).client is store.client  # one client per profile
    with pytest.raises(ValueError):
        pos3.mirror(max_workers=0)


def test_public_profile_never_signs(s3, s3_server, public_bucket, cache, monkeypatch):
    put(s3, s3_server.public_bucket, {"ds/x": b"public"})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")  # a signed request would now fail
    anon = pos3.Profile(local_name="anon", endpoint=s3_server.endpoint, region="us-east-1", public=True)
    with pos3.mirror(cache_root=cache, **Q):
        p = pos3.download(f"s3://{s3_server.public_bucket}/ds", profile=anon)
        assert p == cache / "anon" / s3_server.public_bucket / "ds"
        assert local_tree(p) == {"x": b"public"}
        with pytest.raises(PermissionError):
            pos3.download(f"s3://{s3_server.public_bucket}/ds", local=cache / "signed")


def test_two_profiles_on_two_endpoints(s3, s3_server, bucket, cache, tmp_path):
    put(s3, bucket, {"d/f": b"from first"})
    with seaweedfs(tmp_path / "second") as other:
        c2 = boto3.client(
            "s3",
            endpoint_url=other.endpoint,
            aws_access_key_id=other.access_key,
            aws_secret_access_key=other.secret_key,
            region_name="us-east-1",
        )
        c2.create_bucket(Bucket=bucket)
        put(c2, bucket, {"d/f": b"from second"})
        pos3.register_profile(
            "second",
            endpoint=other.endpoint,
            region="us-east-1",
            access_key_id=other.access_key,
            secret_access_key=other.secret_key,
        )
        with pos3.mirror(cache_root=cache, **Q):
            a = pos3.download(f"s3://{bucket}/d")
            b = pos3.download(f"s3://{bucket}/d", profile="second")
            out = pos3.upload(f"s3://{bucket}/out", profile="second", interval=None)
            write(out, {"r": b"result"})
        assert (a / "f").read_bytes() == b"from first" and (b / "f").read_bytes() == b"from second"
        assert b == cache / "second" / bucket / "d"
        assert remote_tree(c2, bucket, "out/") == {"r": b"result"}
        assert remote_tree(s3, bucket, "out/") == {}
        with pos3.mirror(cache_root=cache, default_profile="second", **Q):
            assert pos3.download(f"s3://{bucket}/d") == b


def test_secrets_stay_out_of_reprs_logs_and_errors(s3_server, bucket, cache, caplog):
    secret = "S3CR3T-never-print-me"
    prof = pos3.Profile(
        local_name="bad",
        endpoint=s3_server.endpoint,
        region="us-east-1",
        options={"access_key_id": s3_server.access_key, "secret_access_key": secret},
    )
    with caplog.at_level(logging.DEBUG, logger="pos3"), pytest.raises(PermissionError) as info:
        with pos3.mirror(cache_root=cache, **Q) as m:
            pos3.download(f"s3://{bucket}/d", profile=prof)
    assert secret not in repr(prof) and secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in caplog.text and secret not in repr(m)
    with pos3.mirror(cache_root=cache, **Q) as m2:
        store = m2.store(parse(f"s3://{bucket}/d"), prof)
        assert secret not in repr(store) and secret not in repr(store.client)


def test_unknown_scheme_names_the_available_ones(cache):
    with pos3.mirror(cache_root=cache, **Q), pytest.raises(RuntimeError, match=r"nope://.*s3://"):
        pos3.download("nope://bucket/key")


def test_each_scheme_has_its_own_cache_directory(cache, tmp_path):
    shared = tmp_path / "nfs" / "data"
    write(shared, {"f": b"on the share"})
    url = f"file://{shared}"
    with pos3.mirror(cache_root=cache, **Q):
        p = pos3.download(url)
        assert p == cache / "_.file" / shared.relative_to("/")
        assert local_tree(p) == {"f": b"on the share"}
        assert pos3.ls(url) == [f"file://{shared}/f"]


def test_transfer_error_is_the_0_4_0_name_of_sync_error() -> None:
    """Code written for pos3 0.4.0 catches failed transfers as ``pos3.TransferError``."""
    with pytest.raises(pos3.TransferError):
        raise pos3.SyncError("upload", [("s3://b/k", OSError("boom"))])
