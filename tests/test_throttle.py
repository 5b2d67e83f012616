"""Bandwidth limits: the token bucket's arithmetic, and the limit held over real transfers (SeaweedFS)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import pos3
from pos3.wrappers.throttle import ThrottledStore, TokenBucket, throttled

MiB = 1024 * 1024
#: Time a run may take beyond bytes / rate: connecting, listing, HEADs, a loaded 2-core machine.
STARTUP = 2.0


class FakeClock:
    """A clock that advances only when the bucket sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_paces_a_stream_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=100, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        bucket.take(100)
    assert clock.now == pytest.approx((5000 - 100) / 1000)


def test_bucket_refills_only_up_to_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=100, clock=clock, sleep=clock.sleep)
    clock.now = 60.0  # a long idle time does not save up a minute of bytes
    bucket.take(1100)
    assert clock.now == pytest.approx(61.0)


def test_bucket_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_unlimited_directions_leave_the_store_alone(tmp_path: Path) -> None:
    from pos3.stores.file import FileStore

    store = FileStore(tmp_path)
    assert throttled(store, None, None) is store
    wrapped = throttled(store, None, TokenBucket(MiB))
    assert isinstance(wrapped, ThrottledStore) and not wrapped.per_object


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for start in range(0, size, 8 * MiB):
            f.write(os.urandom(min(8 * MiB, size - start)))


def _check_rate(total: int, rate: int, elapsed: float) -> None:
    ideal = total / rate
    measured = total / elapsed / MiB
    print(f"{total / MiB:.1f} MiB in {elapsed:.2f}s: {measured:.2f} MiB/s for a limit of {rate / MiB} MiB/s")
    assert 0.9 * ideal <= elapsed <= 1.1 * ideal + STARTUP


#: Mixed sizes: small single-request objects and one that moves in parts.
SIZES = {"a.bin": 300 * 1024, "b.bin": 1 * MiB, "c.bin": 2 * MiB + 17, "d/e.bin": 3 * MiB, "d/f.bin": 512 * 1024}


def test_download_limit_holds_across_workers_parts_and_profiles(s3_server, s3, bucket: str, tmp_path: Path) -> None:
    """Two profiles download at once on 8 workers each, one object in parallel ranges:
    together they stay within 10% of the one shared limit."""
    rate = 6 * MiB
    sizes = dict(SIZES, **{"big.bin": 34 * MiB})  # > 32 MiB: fetched in parallel ranges
    src = tmp_path / "src"
    for rel, size in sizes.items():
        _write(src / rel, size)
        s3.upload_file(str(src / rel), bucket, f"one/{rel}")
        if rel != "big.bin":
            s3.upload_file(str(src / rel), bucket, f"two/{rel}")
    total = sum(sizes.values()) + sum(size for rel, size in sizes.items() if rel != "big.bin")
    keys = {"access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key}
    one = pos3.Profile(local_name="one", endpoint=s3_server.endpoint, region="us-east-1", options=keys)
    two = pos3.Profile(local_name="two", endpoint=s3_server.endpoint, region="us-east-1", options=keys)
    errors: list[BaseException] = []

    def download(prefix: str, profile: pos3.Profile) -> None:
        try:
            pos3.download(f"s3://{bucket}/{prefix}/", tmp_path / "out" / prefix, profile=profile)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
            errors.append(exc)

    with pos3.mirror(cache_root=tmp_path / "cache", max_workers=8, max_download_bytes_per_second=rate):
        start = time.monotonic()
        threads = [threading.Thread(target=download, args=(p, prof)) for p, prof in (("one", one), ("two", two))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    assert not errors, errors
    for rel in sizes:
        assert (tmp_path / "out" / "one" / rel).read_bytes() == (src / rel).read_bytes()
    _check_rate(total, rate, elapsed)


def test_upload_limit_holds_for_multipart_and_small_files(s3, bucket: str, tmp_path: Path) -> None:
    """Eight workers upload one multipart object (> 64 MiB) and several small ones within 10% of the limit."""
    rate = 10 * MiB
    sizes = dict(SIZES, **{"big.bin": 66 * MiB})
    local = tmp_path / "local"
    for rel, size in sizes.items():
        _write(local / rel, size)
    with pos3.mirror(cache_root=tmp_path / "cache", max_workers=8, max_upload_bytes_per_second=rate):
        pos3.upload(f"s3://{bucket}/up/", local, interval=None)
        start = time.monotonic()
    elapsed = time.monotonic() - start
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="up/")["Contents"]}
    assert listed == {f"up/{rel}": size for rel, size in sizes.items()}
    assert s3.head_object(Bucket=bucket, Key="up/big.bin")["ETag"].strip('"').endswith("-9")  # multipart
    _check_rate(sum(sizes.values()), rate, elapsed)


def test_file_store_uploads_are_paced_under_with_mirror(tmp_path: Path) -> None:
    """The file:// store moves bodies in paced chunks too; `with_mirror` takes the same limits."""
    rate = 8 * MiB
    remote = tmp_path / "remote"
    remote.mkdir()
    local = tmp_path / "local"
    for i in range(4):
        _write(local / f"f{i}.bin", 3 * MiB)

    @pos3.with_mirror(cache_root=tmp_path / "cache", max_workers=4, max_upload_bytes_per_second=rate)
    def job() -> float:
        pos3.upload(f"file://{remote}/", local, interval=None)
        return time.monotonic()  # the upload itself runs as the mirror exits

    start = job()
    _check_rate(12 * MiB, rate, time.monotonic() - start)
    assert sorted(p.name for p in remote.iterdir()) == [f"f{i}.bin" for i in range(4)]
