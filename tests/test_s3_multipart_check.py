"""A CRT multipart upload is checked against the file it came from: the ETag the parts should give is
hashed while they travel, and compared with the stored one when the upload completes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pos3.integrity import IntegrityError, multipart_etag
from pos3.profiles import Profile
from pos3.stores import s3 as s3_module
from pos3.stores.s3 import MULTIPART_THRESHOLD, S3Backend


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for i in range(MULTIPART_THRESHOLD // (1 << 20) + 6):  # 70 MiB: a multipart upload of 9 parts
            f.write(bytes([i % 251]) * (1 << 20))
    return path


def test_the_expected_etag_is_hashed_during_the_upload(
    s3, bucket: str, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No HEAD of part 1 and no boto3 afterwards: the ETag hashed at the configured part size matched."""
    asked: list[Any] = []
    monkeypatch.setattr(s3_module.S3Store, "_part_size", lambda self, *a: asked.append(a))
    backend = S3Backend(Profile(), 4)
    try:
        assert backend.native is not None
        meta = backend.store(bucket).put("k/big", big)
    finally:
        backend.close()
    assert asked == []
    etag = s3.head_object(Bucket=bucket, Key="k/big")["ETag"].strip('"')
    assert meta.version == etag == multipart_etag(big, backend.part_size)
    assert etag.endswith("-9")


def test_a_stored_object_unlike_the_file_is_removed(
    s3, bucket: str, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the file's hash never matches the stored ETag (as if the bytes had changed on the way), the
    part size is asked for, the file hashed again, and the object deleted: `IntegrityError` after the retries."""
    asked: list[Any] = []
    real = s3_module.S3Store._part_size

    def part_size(self: Any, key: str, etag: str) -> Any:
        asked.append(key)
        return real(self, key, etag)

    monkeypatch.setattr(s3_module.S3Store, "_part_size", part_size)
    monkeypatch.setattr(s3_module, "multipart_etag", lambda path, part: "0" * 32 + "-9")
    monkeypatch.setattr("pos3.integrity._backoff", lambda attempt: 0.0)
    backend = S3Backend(Profile(), 4)
    try:
        with pytest.raises(IntegrityError, match="does not match the file"):
            backend.store(bucket).put("k/big", big)
    finally:
        backend.close()
    assert asked == ["k/big"] * 3  # each of the 3 attempts fell back to the stored part size
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="k/")
