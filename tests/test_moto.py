"""A user's test suite that runs pos3 under moto's in-process ``mock_aws`` works unchanged.

This is the one place where mocking is the point: it is the user's set-up. No server runs;
every request must reach moto through botocore (the native CRT path would bypass it).
"""

from __future__ import annotations

from pathlib import Path

import boto3
import moto  # a test extra: `pip install -e '.[test]'` installs it

import pos3


def test_download_upload_sync_and_ls_under_mock_aws(tmp_path: Path) -> None:
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        s3.put_object(Bucket="data", Key="in/a.txt", Body=b"alpha")
        s3.put_object(Bucket="data", Key="in/sub/b.txt", Body=b"beta" * 1000)

        with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
            got = pos3.download("s3://data/in/")
            assert (got / "a.txt").read_bytes() == b"alpha"
            assert (got / "sub" / "b.txt").read_bytes() == b"beta" * 1000
            assert pos3.ls("s3://data/in/") == ["s3://data/in/a.txt", "s3://data/in/sub/"]
            assert pos3.ls("s3://data/in/", recursive=True) == ["s3://data/in/a.txt", "s3://data/in/sub/b.txt"]

            out = pos3.upload("s3://data/out/", interval=None)
            (out / "result.txt").write_text("done")

            both = pos3.sync("s3://data/both/", interval=None)
            (both / "log.txt").write_text("synced")

        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]}
        assert keys == {"in/a.txt", "in/sub/b.txt", "out/result.txt", "both/log.txt"}
        assert s3.get_object(Bucket="data", Key="out/result.txt")["Body"].read() == b"done"
        assert s3.get_object(Bucket="data", Key="both/log.txt")["Body"].read() == b"synced"


def test_native_transfers_resume_once_the_mock_ends(tmp_path: Path) -> None:
    """Importing moto alone (no active mock) leaves the native transfer path in place."""
    from pos3.stores.s3 import BotocoreIntercepts

    intercepted = BotocoreIntercepts()
    with moto.mock_aws():
        assert intercepted()
    assert not intercepted()
