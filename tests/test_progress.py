"""What a user sees: the progress bar, log lines and the errors of failed transfers."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import pos3
from pos3 import executor
from pos3.executor import Operations, execute
from pos3.planner import Action
from pos3.state import Record, StateDB

PERCENT = re.compile(r"(\d+)%\|[^|]*\| *([\d.]+\w*)/([\d.]+\w*)")


def frames(stderr: str) -> list[str]:
    """Every state the bar was drawn in."""
    return [f.strip() for f in re.split(r"[\r\n]", stderr) if f.strip()]


def _ops() -> Operations:
    def copy(action: Action) -> Record:
        return Record(action.rel, action.size, 0, action.size, "v")

    return Operations(copy=copy, verify=copy, delete=lambda actions: None, name=lambda a: a.rel)


def test_total_is_marked_as_counting_until_the_plan_is_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan longer than the read-ahead: no percentage until the plan ends, then one fixed total, ending at 100%."""
    monkeypatch.setattr(executor, "READ_AHEAD", 5)
    monkeypatch.setattr(executor._Progress, "__init__", _unthrottled(executor._Progress.__init__))
    plan = [Action("copy", f"f{i:03}", size=1000 + i) for i in range(60)]
    state = StateDB(tmp_path / "state.db")
    try:
        summary = execute(iter(plan), _ops(), state, what="↓ s3://b/p", max_workers=2, show_progress=True)
    finally:
        state.close()
    assert summary.copied == 60
    drawn = frames(capsys.readouterr().err)
    counting = [f for f in drawn if "listing…" in f]
    assert counting, drawn
    assert all("%" not in f for f in counting)
    totals = {m.group(3) for f in drawn if (m := PERCENT.search(f))}
    assert len(totals) == 1, totals  # once a percentage shows, its total never changes
    assert "100%" in drawn[-1] and "60/60 files" in drawn[-1]


def _unthrottled(init):  # type: ignore[no-untyped-def]
    """Draw every update (tqdm skips redraws within ``mininterval``), so the test sees each state."""

    def wrapped(self, enabled: bool, desc: str) -> None:
        init(self, enabled, desc)
        original = self.add

        def add(size: int) -> None:
            original(size)
            if self.bar is not None:
                self.bar.mininterval = 0
                self.bar.miniters = 1

        self.add = add

    return wrapped


def test_download_bar_counts_files_and_bytes_to_100_percent(
    s3, bucket: str, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=f"d/f{i:02}", Body=b"x" * (1000 * (i + 1)))
    with pos3.mirror(cache_root=cache):
        pos3.download(f"s3://{bucket}/d/")
    drawn = frames(capsys.readouterr().err)
    assert "100%" in drawn[-1] and "30/30 files" in drawn[-1]
    totals = {m.group(3) for f in drawn if (m := PERCENT.search(f))}
    assert len(totals) == 1, totals


def _own_frames(exc: BaseException) -> list[str]:
    """The frames of pos3's modules in ``exc``'s printed traceback (the API boundary excepted)."""
    return [
        line
        for line in traceback.format_exception(exc)
        if "/pos3/" in line and "File" in line and "errors.py" not in line
    ]


def test_missing_bucket_error_is_short_and_names_the_bucket(s3_server, cache: Path) -> None:
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(FileNotFoundError) as info:
            pos3.download("s3://no-such-bucket-here/data/")
    assert "no-such-bucket-here" in str(info.value)
    assert info.value.__cause__ is None and _own_frames(info.value) == []
    assert len(traceback.format_exception(info.value)) <= 6


def test_wrong_key_is_a_short_permission_error(s3_server, bucket: str, cache: Path) -> None:
    bad = pos3.Profile(
        local_name="bad",
        endpoint=s3_server.endpoint,
        region="us-east-1",
        options={"access_key_id": s3_server.access_key, "secret_access_key": "wrong"},
    )
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(PermissionError) as info:
            pos3.download(f"s3://{bucket}/x/", profile=bad)
    assert bucket in str(info.value) and _own_frames(info.value) == []


def test_unreachable_endpoint_is_a_store_error_not_a_raw_sdk_error(cache: Path) -> None:
    nowhere = pos3.Profile(local_name="nowhere", endpoint="http://127.0.0.1:9", region="us-east-1", public=True)
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(pos3.StoreError) as info:
            pos3.download("s3://data/x/", profile=nowhere)
    assert "s3://data/x/" in str(info.value) and _own_frames(info.value) == []


def test_failed_transfers_raise_one_short_sync_error_keeping_each_cause(
    s3_server, s3, cache: Path, tmp_path: Path
) -> None:
    """Anonymous uploads to a publicly readable bucket are refused: the error lists each file,
    and the files' tracebacks stay out of the way."""
    public = s3_server.public_bucket
    created = public not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if created:
        s3.create_bucket(Bucket=public)
    local = tmp_path / "up"
    local.mkdir()
    for i in range(3):
        (local / f"f{i}.txt").write_text("x")
    anon = pos3.Profile(local_name="anon", endpoint=s3_server.endpoint, region="us-east-1", public=True)
    try:
        with pytest.raises(pos3.SyncError) as info:
            with pos3.mirror(cache_root=cache, show_progress=False):
                pos3.upload(f"s3://{public}/{tmp_path.name}/", local, interval=None, profile=anon)
    finally:
        if created:  # other tests create the shared public bucket themselves
            s3.delete_bucket(Bucket=public)
    err = info.value
    first = str(err).splitlines()
    assert "3 file(s) failed" in first[0] and all("PermissionError" in line for line in first[1:4])
    assert [line.split(": ")[0].strip()[-6:] for line in first[1:4]] == ["f0.txt", "f1.txt", "f2.txt"]  # in order
    assert traceback.format_exception_only(err)[0].startswith("pos3.SyncError: ")
    assert err.__cause__ is None and _own_frames(err) == []
    assert [type(exc) for _, exc in err.failures] == [PermissionError] * 3
    assert all(exc.__traceback__ is not None for _, exc in err.failures)  # kept for debugging


@pytest.mark.parametrize("client", ["crt", "boto3"])
def test_a_local_file_that_cannot_be_written_fails_as_an_os_error(
    s3_server, s3, bucket: str, cache: Path, client
) -> None:
    """Both S3 transfer paths report it as Python's open() would (the CRT raised a bare RuntimeError)."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"k")
    profile = pos3.Profile(
        local_name="p",
        endpoint=s3_server.endpoint,
        region="us-east-1",
        options={
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
            "transfer_client": client,
        },
    )
    with pytest.raises(pos3.SyncError) as info:
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.download(f"s3://{bucket}/k", "/proc/pos3-cannot-write-here", profile=profile)
    [(path, exc)] = info.value.failures
    assert str(path) == "/proc/pos3-cannot-write-here"
    assert type(exc) is FileNotFoundError and str(exc.filename).startswith("/proc/")
    assert "FileNotFoundError" in str(info.value).splitlines()[1]


def test_log_lines_do_not_repeat_the_logger_name(
    s3, bucket: str, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Boom(Exception):
        pass

    local = tmp_path / "up"
    local.mkdir()
    (local / "f.txt").write_text("x")
    with pytest.raises(Boom), caplog.at_level(logging.ERROR, logger="pos3"):
        with pos3.mirror(cache_root=cache, show_progress=False):
            # delete=False: no lease object, so the bucket stays empty and can be deleted
            pos3.upload(f"s3://{bucket}/out/", local, interval=None, delete=False, sync_on_error=True)
            s3.delete_bucket(Bucket=bucket)  # the final upload fails (registration checked the bucket)
            raise Boom
    messages = [r.getMessage() for r in caplog.records if r.name == "pos3"]
    assert messages and all(bucket in m and not m.startswith("pos3") for m in messages)


def test_retry_warnings_do_not_repeat_the_logger_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pos3 import integrity

    monkeypatch.setattr(integrity, "_backoff", lambda attempt: 0.0)
    failures = [integrity.IntegrityError("s3://b/k: content MD5 1 does not match the store's 2")]

    def attempt() -> str:
        if failures:
            raise failures.pop()
        return "done"

    with caplog.at_level(logging.WARNING, logger="pos3"):
        assert integrity.retried(attempt, "s3://b/k") == "done"
    messages = [r.getMessage() for r in caplog.records if r.name == "pos3"]
    assert messages == ["s3://b/k: content MD5 1 does not match the store's 2; trying again"]


def test_errors_of_bugs_keep_their_traceback() -> None:
    """Only pos3's own error types are shortened: an unexpected exception shows where it came from."""
    from pos3.errors import user_facing

    @user_facing
    def broken() -> Iterator[int]:
        raise KeyError("internal")

    with pytest.raises(KeyError) as info:
        broken()
    assert any("broken" in line for line in traceback.format_exception(info.value))
