"""Point 9 of the core issue: paged, verified listings; retries and pools."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pos3
from helpers import local_tree, remote_tree, write
from pos3.urls import parse


def test_listing_past_a_full_last_page(s3, bucket, cache, tmp_path):
    """SeaweedFS 4.48 ends a listing early when a full page ends on a directory marker;
    the objects after it must still be downloaded, and with deletes on, kept."""
    keys = [f"p/a{i:04d}" for i in range(999)] + ["p/b/"] + [f"p/b/x{i:03d}" for i in range(50)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"" if k.endswith("/") else k.encode()), keys))
    expected = {k[2:]: k.encode() for k in keys if not k.endswith("/")}
    local = tmp_path / "p"
    write(local, {f"b/x{i:03d}": f"p/b/x{i:03d}".encode() for i in range(50)})  # a matching local copy
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        pos3.download(f"s3://{bucket}/p", local=local)
        assert local_tree(local) == expected
        listed = list(m.store(parse(f"s3://{bucket}/p"), pos3.Profile()).list("p/"))
    assert len(listed) == len(keys)


def test_client_retries_transient_errors(s3_server, bucket, cache):
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        client = m.store(parse(f"s3://{bucket}/x"), pos3.Profile()).client
        retries = client.meta.config.retries
        assert retries["mode"] in ("standard", "adaptive") and retries["total_max_attempts"] >= 5


def test_server_listing_out_of_byte_order(s3, bucket, cache, tmp_path):
    """SeaweedFS lists "run/ckpt/…" before "run/ckpt.json" (directory first); pos3 sorts and still mirrors exactly."""
    files = {"run/ckpt/model.bin": b"m", "run/ckpt.json": b"{}", "run/ckpt-old": b"o", "run/ckpt/z/deep": b"d"}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    local = tmp_path / "run"
    write(local, {"stale": b"x"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/run/", local=local)
        assert local_tree(local) == {k[4:]: v for k, v in files.items()}
    with pos3.mirror(cache_root=cache, show_progress=False):
        ck = pos3.sync(f"s3://{bucket}/run", local=tmp_path / "again", interval=None)
        (ck / "ckpt.json").write_bytes(b'{"step": 2}')
        (ck / "ckpt-old").unlink()
    assert remote_tree(s3, bucket, "run/") == {"ckpt/model.bin": b"m", "ckpt.json": b'{"step": 2}', "ckpt/z/deep": b"d"}
