"""Points 5, 6 and 8 of the core issue: exit semantics, background uploads, registrations."""

from __future__ import annotations

import logging
import time

import pytest

import pos3
from helpers import remote_tree, write


def poll(condition, timeout: float = 10.0, every: float = 0.05):
    """Wait until ``condition()`` is truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(every)
    return result


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("raised", "uploaded"),
    [
        (Boom("x"), False),
        (KeyboardInterrupt(), False),
        (SystemExit(1), False),
        (SystemExit("fatal"), False),
        (SystemExit(0), True),
        (SystemExit(None), True),
    ],
)
def test_exit_kinds(s3, bucket, cache, raised, uploaded):
    with pytest.raises(type(raised)) as info, pos3.mirror(cache_root=cache, show_progress=False):
        out = pos3.upload(f"s3://{bucket}/out", interval=None)
        write(out, {"f": b"1"})
        raise raised
    assert info.value is raised  # the caller sees the original exception
    assert remote_tree(s3, bucket, "out/") == ({"f": b"1"} if uploaded else {})


def test_sync_on_error_uploads_and_keeps_the_original_exception(s3, bucket, cache):
    with pytest.raises(Boom, match="original"), pos3.mirror(cache_root=cache, show_progress=False):
        a = pos3.upload(f"s3://{bucket}/a", interval=None, sync_on_error=True)
        b = pos3.upload(f"s3://{bucket}/b", interval=None)
        write(a, {"f": b"a"})
        write(b, {"f": b"b"})
        raise Boom("original")
    assert remote_tree(s3, bucket, "a/") == {"f": b"a"}
    assert remote_tree(s3, bucket, "b/") == {}


def test_failing_final_upload_raises(cache, s3_server):
    with pytest.raises(FileNotFoundError, match="no-such-bucket-final"):
        with pos3.mirror(cache_root=cache, show_progress=False):
            out = pos3.upload("s3://no-such-bucket-final/out", interval=None)
            write(out, {"f": b"1"})


def test_failing_upload_on_error_is_logged_not_raised(cache, caplog, s3, bucket):
    with pytest.raises(Boom), caplog.at_level(logging.ERROR, logger="pos3"):
        with pos3.mirror(cache_root=cache, show_progress=False):
            # delete=False: no lease object, so the bucket stays empty and can be deleted
            out = pos3.upload(f"s3://{bucket}/out", interval=None, delete=False, sync_on_error=True)
            s3.delete_bucket(Bucket=bucket)  # gone after registration: the final upload fails
            write(out, {"f": b"1"})
            raise Boom()
    assert bucket in caplog.text


def test_background_upload_waits_one_interval_then_repeats(s3, bucket, cache):
    with pos3.mirror(cache_root=cache, show_progress=False):
        started = time.monotonic()
        out = pos3.upload(f"s3://{bucket}/bg", interval=1.0)
        write(out, {"first": b"1"})
        assert remote_tree(s3, bucket, "bg/") == {}  # not at once
        poll(lambda: remote_tree(s3, bucket, "bg/") == {"first": b"1"})
        assert time.monotonic() - started >= 1.0
        write(out, {"second": b"2"})
        poll(lambda: "second" in remote_tree(s3, bucket, "bg/"))


def test_failing_background_upload_is_logged_and_retried(s3, cache, caplog):
    name = "pos3-late-bucket"
    s3.create_bucket(Bucket=name)
    with caplog.at_level(logging.WARNING, logger="pos3"), pos3.mirror(cache_root=cache, show_progress=False):
        out = pos3.upload(f"s3://{name}/out", interval=0.2, delete=False)  # no lease object: the bucket stays empty
        s3.delete_bucket(Bucket=name)  # an outage after registration
        write(out, {"f": b"1"})
        poll(lambda: "background upload" in caplog.text and name in caplog.text)
        s3.create_bucket(Bucket=name)  # the outage ends
        poll(lambda: remote_tree(s3, name, "out/") == {"f": b"1"})


def test_final_sync_sees_everything_written_while_background_runs(s3, bucket, cache):
    with pos3.mirror(cache_root=cache, show_progress=False):
        out = pos3.upload(f"s3://{bucket}/busy", interval=0.05)
        for i in range(30):
            write(out, {f"f{i:02d}": bytes([i]) * 1000})
            time.sleep(0.01)  # simulated work between checkpoint writes, not synchronisation
    assert remote_tree(s3, bucket, "busy/") == {f"f{i:02d}": bytes([i]) * 1000 for i in range(30)}


def test_same_registration_returns_same_path(s3, bucket, cache, tmp_path):
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        a = pos3.upload(f"s3://{bucket}/x", interval=None)
        assert pos3.upload(f"s3://{bucket}/x", interval=None) == a
        s = pos3.sync(f"s3://{bucket}/s", interval=None)
        assert pos3.sync(f"s3://{bucket}/s", interval=None) == s
        assert len(m._registrations) == 2


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (("download", "s3://{b}/in", "L"), ("download", "s3://{b}/other", "L"), "both use the local path"),
        (("download", "s3://{b}/in", None), ("upload", "s3://{b}/in", None), "both use the local path"),
        (("download", "s3://{b}/in", None), ("upload", "s3://{b}/in/sub", None), "nested"),
        (("upload", "s3://{b}/out", "L"), ("download", "s3://{b}/in", "L/inner"), "nested"),
        (("download", "s3://{b}/in", "A"), ("upload", "s3://{b}/in/x", "B"), "remote locations are nested"),
        (("upload", "s3://{b}/out", None), ("upload", "s3://{b}/out", None, 5), "both use the local path"),
    ],
)
def test_conflicting_registrations(s3, bucket, cache, tmp_path, first, second, message):
    s3.put_object(Bucket=bucket, Key="in/f", Body=b"1")

    def call(spec):
        kind, url, local, *interval = spec
        local = str(tmp_path / local) if local else None
        fn = getattr(pos3, kind)
        extra = {"interval": interval[0] if interval else None} if kind != "download" else {}
        return fn(url.format(b=bucket), local=local, **extra)

    with pos3.mirror(cache_root=cache, show_progress=False):
        call(first)
        with pytest.raises(ValueError, match=message):
            call(second)


def test_two_downloads_of_one_remote_to_two_places_are_fine(s3, bucket, cache, tmp_path):
    s3.put_object(Bucket=bucket, Key="in/f", Body=b"1")
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/in", local=tmp_path / "a")
        pos3.download(f"s3://{bucket}/in/", local=tmp_path / "b")
    assert (tmp_path / "a/f").read_bytes() == (tmp_path / "b/f").read_bytes() == b"1"


def test_nested_mirrors_are_refused(cache):
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(RuntimeError, match="already active"):
        with pos3.mirror(cache_root=cache):
            pass
    with pos3.mirror(cache_root=cache, show_progress=False):  # the handle was released
        pass
