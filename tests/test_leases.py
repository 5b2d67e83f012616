"""One writer with deletes per remote prefix (pos3.lease), across processes, on every server that
honours conditional writes: SeaweedFS and moto (S3), fake-gcs-server (GCS), Azurite (Azure), and file://.

The other writer is a real second process (``HOLDER`` below), killed with SIGKILL where the test
needs a holder that never releases.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import pos3
from pos3 import LeaseConflict, ObjectStore, Profile
from pos3.lease import LEASE_NAME, TTL_ENV, Holder, Lease, is_lease_key, lease_key, read
from pos3.plugins import store_spec
from pos3.testing.servers import moto
from pos3.urls import parse

pytest_plugins = ["emulator_fixtures"]

SOAK = int(os.environ.get("POS3_SOAK", "1"))

#: A second process that registers ``spec["mode"]`` on ``spec["url"]``, says "ready" and holds
#: its registration until its stdin closes (or it is killed).
HOLDER = r"""
import json, sys, pos3
spec = json.loads(sys.argv[1])
profile = pos3.Profile(**spec["profile"])
if spec.get("race"):
    print("waiting", flush=True)
    sys.stdin.readline()  # "go": every racer starts at once
with pos3.mirror(cache_root=spec["cache"], show_progress=False) as m:
    if spec["mode"] == "download":
        out = m.download(spec["url"], spec["local"], profile=profile)
        print(json.dumps(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())), flush=True)
    else:
        try:
            m.upload(spec["url"], spec["local"], interval=spec.get("interval"), delete=True, profile=profile)
        except pos3.LeaseConflict:
            print("conflict", flush=True)
            sys.exit(0)
        print("ready", flush=True)
        sys.stdin.readline()
"""


@dataclass
class Where:
    """One backend under test: a fresh bucket-level URL, its profile and a store to look inside."""

    name: str
    base: str  # scheme://bucket/ (ends in '/')
    profile: Profile
    store: ObjectStore
    env: dict[str, str]

    def url(self, rel: str = "") -> str:
        return self.base + rel

    def key(self, rel: str) -> str:
        return parse(self.base).key + rel

    def put(self, rel: str, data: bytes, scratch: Path) -> None:
        src = scratch / "put.tmp"
        src.write_bytes(data)
        self.store.put(self.key(rel), src)

    def keys(self, rel: str = "") -> list[str]:
        return sorted(m.key[len(self.key(rel)) :] for m in self.store.list(self.key(rel)))

    def holder(self, rel: str) -> Holder | None:
        """The holder named by the lease object of prefix ``rel``, if there is one."""
        found = read(self.store, lease_key(self.key(rel)))
        return found[0] if found is not None else None

    def move_holder_to_another_host(self, rel: str) -> Holder:
        """Rewrite the lease of ``rel`` as a lease of the same holder on another machine
        (another host name and boot id), the way a lease of a job on another node reads."""
        found = read(self.store, lease_key(self.key(rel)))
        assert found is not None
        elsewhere = replace(found[0], host="another-node", boot="another-boot-id")
        self.store.put_if(lease_key(self.key(rel)), elsewhere.encode(), found[1])
        return elsewhere


def _s3_where(name: str, server, bucket: str) -> Where:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    options = {"access_key_id": server.access_key, "secret_access_key": server.secret_key}
    profile = Profile(local_name=name, endpoint=server.endpoint, region="us-east-1", options=options)
    store = store_spec("s3").connect(profile, 4).store(bucket)
    return Where(name, f"s3://{bucket}/", profile, store, server.env())


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    with moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(params=["seaweedfs", "moto", "gcs", "azure", "file"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """Each backend with conditional writes, behind a fresh bucket."""
    bucket = f"lease-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    if request.param == "seaweedfs":
        return _s3_where("weed", request.getfixturevalue("s3_server"), bucket)
    if request.param == "moto":
        return _s3_where("moto", request.getfixturevalue("moto_server"), bucket)
    if request.param == "gcs":
        profile = request.getfixturevalue("gcs_profile")
        request.getfixturevalue("gcs").create_bucket(bucket)
        return Where("gcs", f"gs://{bucket}/", profile, store_spec("gs").connect(profile, 4).store(bucket), {})
    if request.param == "azure":
        profile = request.getfixturevalue("az_profile")
        request.getfixturevalue("az").create_container(bucket)
        return Where("azure", f"az://{bucket}/", profile, store_spec("az").connect(profile, 4).store(bucket), {})
    root = tmp_path / "remote"
    root.mkdir()
    url = f"file://{root}/"
    return Where("file", url, Profile(), store_spec("file").connect(Profile(), 4).store(parse(url).bucket), {})


def _environment(where: Where) -> dict[str, str]:
    """This process's environment without any cloud configuration, plus ``where``'s own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "AZURE_", "STORAGE_"))}
    return {**env, **where.env}


class Process:
    """A `HOLDER` process: started, read line by line, stopped or killed by its PID."""

    def __init__(self, where: Where, mode: str, rel: str, local: Path, cache: Path, **extra) -> None:
        profile = {
            "local_name": where.profile.local_name,
            "endpoint": where.profile.endpoint,
            "region": where.profile.region,
            "public": where.profile.public,
            "options": dict(where.profile.options),
        }
        spec = {"mode": mode, "url": where.url(rel), "local": str(local), "cache": str(cache), "profile": profile}
        spec.update(extra)
        env = _environment(where)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def line(self) -> str:
        """The next line the process prints (``readline`` returns at its exit at the latest)."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline().strip()
        if not out:
            self.proc.wait(60)
            raise AssertionError(f"the holder exited ({self.proc.returncode}): {self.proc.stderr.read()}")  # type: ignore[union-attr]
        return out

    def stop(self) -> None:
        """Let it leave its mirror normally (releasing its lease) and wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(120) == 0, self.proc.stderr.read()  # type: ignore[union-attr]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()


def _hold(where: Where, rel: str, tmp_path: Path, processes: list[Process], **extra) -> Process:
    local = tmp_path / f"holder-{len(processes)}"
    local.mkdir()
    (local / "theirs.txt").write_bytes(b"theirs")
    p = Process(where, "upload", rel, local, tmp_path / f"holder-cache-{len(processes)}", **extra)
    processes.append(p)
    assert p.line() == "ready"
    return p


def _mirror(tmp_path: Path) -> pos3.Mirror:
    return pos3.mirror(cache_root=tmp_path / "cache", show_progress=False)


@pytest.mark.parametrize(
    "held, wanted",
    [("ckpt/", "ckpt/"), ("ckpt/", "ckpt/rank0/"), ("ckpt/rank0/", "ckpt/"), ("ckpt/", "")],
    ids=["same", "inside", "around", "bucket"],
)
@pytest.mark.reliability(
    "A second writer with deletes on the same or an overlapping prefix fails, naming the holder ({where})",
    group="Leases",
)
def test_second_writer_with_deletes_fails_naming_the_holder(
    where: Where, held: str, wanted: str, tmp_path: Path, processes: list[Process], reliability
) -> None:
    where.put(held + "theirs.txt", b"theirs", tmp_path)
    holder = _hold(where, held, tmp_path, processes)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.txt").write_bytes(b"mine")  # without theirs.txt: with deletes, it would delete it
    for register in (
        lambda m: m.upload(where.url(wanted), mine, interval=None, delete=True, profile=where.profile),
        lambda m: m.sync(where.url(wanted), mine, interval=None, profile=where.profile),
    ):
        with pytest.raises(LeaseConflict) as err, _mirror(tmp_path) as m:
            register(m)
        message = str(err.value)
        assert f"host {socket.gethostname()}, pid {holder.proc.pid}, since " in message
        assert where.url(held) in message
    assert where.keys(held) == [LEASE_NAME, "theirs.txt"]  # nothing deleted, the lease still there
    holder.stop()
    assert where.keys() == [held + "theirs.txt"]  # released at the holder's exit
    with _mirror(tmp_path) as m:  # now the prefix is free
        m.upload(where.url(wanted), mine, interval=None, delete=True, profile=where.profile)
    assert where.keys(wanted) == ["mine.txt"]  # it deleted what it did not have, and released its lease
    reliability.runs(2)


@pytest.mark.parametrize("where", ["seaweedfs", "gcs"], indirect=True)
@pytest.mark.reliability(
    "Processes of one host syncing the same local root share the lease; it passes on when its holder leaves ({where})",
    group="Leases",
)
def test_processes_syncing_one_local_root_share_the_lease(
    where: Where, tmp_path: Path, processes: list[Process], reliability
) -> None:
    holder = _hold(where, "ckpt/", tmp_path, processes)  # uploads tmp_path/holder-0 with deletes
    shared = tmp_path / "holder-0"
    (shared / "mine.txt").write_bytes(b"mine")
    with _mirror(tmp_path) as m:  # the same local root: a rank of the same job, not a second writer
        m.upload(where.url("ckpt/"), shared, interval=None, delete=True, profile=where.profile)
        assert where.holder("ckpt/").pid == holder.proc.pid  # joined, not taken
        holder.stop()  # the holder leaves and releases the lease; this process deletes at exit: it takes it
    assert where.keys("ckpt/") == ["mine.txt", "theirs.txt"]  # uploaded; the lease released in turn
    other = tmp_path / "other-root"
    other.mkdir()
    (other / "x.txt").write_bytes(b"x")
    second = _hold(where, "ckpt/", tmp_path, processes)  # holder-1: another local root
    with pytest.raises(LeaseConflict, match=f"pid {second.proc.pid}"), _mirror(tmp_path) as m:
        m.upload(where.url("ckpt/"), other, interval=None, delete=True, profile=where.profile)
    second.stop()
    reliability.runs(2)


@pytest.mark.reliability("An upload without deletes takes no lease and is not stopped by one ({where})", group="Leases")
def test_upload_without_deletes_needs_no_lease(where: Where, tmp_path: Path, processes: list[Process]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.txt").write_bytes(b"mine")
    with _mirror(tmp_path) as m:
        m.upload(where.url("out/"), mine, interval=None, delete=False, profile=where.profile)
        assert where.store.head(where.key("out/" + LEASE_NAME)) is None
    assert where.keys() == ["out/mine.txt"]
    holder = _hold(where, "out/", tmp_path, processes)
    with _mirror(tmp_path) as m:  # beside a writer with deletes
        m.upload(where.url("out/"), mine, interval=None, delete=False, profile=where.profile)
    assert where.keys("out/") == [LEASE_NAME, "mine.txt"]
    holder.stop()


@pytest.mark.reliability(
    "A SIGKILLed holder's lease on another host blocks until it expires, then is taken over ({where})",
    group="Leases",
)
def test_killed_holders_lease_is_taken_over_after_expiry(
    where: Where, tmp_path: Path, processes: list[Process], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    ttl = 4.0
    monkeypatch.setenv(TTL_ENV, str(ttl))
    holder = _hold(where, "job/", tmp_path, processes)
    holder.kill()  # no release: the lease object stays behind
    left = where.move_holder_to_another_host("job/")  # from here, nothing tells that the holder is gone
    assert left.pid == holder.proc.pid
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.txt").write_bytes(b"mine")
    if time.time() < left.expires - 1.0:  # still live (always, unless the machine stalled for seconds)
        with pytest.raises(LeaseConflict, match=f"pid {holder.proc.pid}"), _mirror(tmp_path) as m:
            m.upload(where.url("job/"), mine, interval=None, delete=True, profile=where.profile)
    _wait_until(lambda: time.time() > left.expires, deadline=3 * ttl)
    with caplog.at_level("WARNING", logger="pos3"), _mirror(tmp_path) as m:
        m.upload(where.url("job/"), mine, interval=None, delete=True, profile=where.profile)
        now = where.holder("job/")
        assert now is not None and now.pid == os.getpid() and now.token != left.token
    assert "took over the expired lease" in caplog.text
    assert where.keys() == ["job/mine.txt"]  # uploaded, and the lease released


@pytest.mark.reliability(
    "A job restarted on the same host takes over the lease its killed run left, at once ({where})", group="Leases"
)
def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    where: Where, tmp_path: Path, processes: list[Process], caplog
) -> None:
    holder = _hold(where, "job/", tmp_path, processes)  # the default lease time: 10 minutes
    holder.kill()  # no release: the lease object stays behind, far from expiry
    left = where.holder("job/")
    assert left is not None and left.pid == holder.proc.pid and left.expires > time.time() + 60
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mine.txt").write_bytes(b"mine")
    with caplog.at_level("WARNING", logger="pos3"), _mirror(tmp_path) as m:
        m.upload(where.url("job/"), mine, interval=None, delete=True, profile=where.profile)
        now = where.holder("job/")
        assert now is not None and now.pid == os.getpid() and now.token != left.token
    assert "left by a process that is gone" in caplog.text
    assert where.keys() == ["job/mine.txt"]


def test_a_live_process_on_this_host_is_not_gone() -> None:
    """A lease of this very process, or of a pid reused by another process, is judged by /proc."""
    me = Lease(None, "p/", "s3://b/p/", ttl=60).holder  # type: ignore[arg-type] # no request is made
    assert me.boot and me.started  # Linux: the identity is recorded
    assert me.live(time.time())
    assert not replace(me, started="1").live(time.time())  # the pid now belongs to another process
    assert replace(me, host="another-node", started="1").live(time.time())  # another host: expiry only
    assert not replace(me, expires=time.time() - 1).live(time.time())


@pytest.mark.reliability(
    "Lease objects never appear in downloads or ls and survive syncs with deletes ({where})", group="Leases"
)
def test_lease_object_is_invisible_and_never_deleted(
    where: Where, tmp_path: Path, processes: list[Process], caplog
) -> None:
    where.put("run/stale.txt", b"stale", tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kept.txt").write_bytes(b"kept")
    (mine / LEASE_NAME).write_bytes(b"a local file of that name is never uploaded")
    with _mirror(tmp_path) as m:
        m.upload(where.url("run/"), mine, interval=0.2, delete=True, profile=where.profile)
        _wait_until(lambda: where.keys("run/") == [LEASE_NAME, "kept.txt"], deadline=60)
        ours = where.holder("run/")
        assert ours is not None and ours.pid == os.getpid()  # the lease object is still the lease
        assert m.ls(where.url("run/"), recursive=True, profile=where.profile) == [where.url("run/kept.txt")]
        assert m.ls(where.url(), profile=where.profile) == [where.url("run/")]
        reader = Process(where, "download", "run/", tmp_path / "down", tmp_path / "reader-cache")
        processes.append(reader)
        assert json.loads(reader.line()) == ["kept.txt"]
        reader.proc.wait(60)
    assert where.keys() == ["run/kept.txt"]


@pytest.mark.reliability(
    "Writers with deletes racing for one or nested prefixes: never two overlapping winners ({where})",
    group="Leases",
)
def test_racing_writers_never_both_win(where: Where, tmp_path: Path, processes: list[Process], reliability) -> None:
    rounds = 2 * SOAK
    for n in range(rounds):
        same = n % 2 == 0  # one prefix: exactly one wins; nested prefixes: no two overlapping winners
        rels = [f"r{n}/"] * 4 if same else [f"r{n}/", f"r{n}/a/", f"r{n}/b/", f"r{n}/a/x/"]
        racers = []
        for i, rel in enumerate(rels):
            local = tmp_path / f"racer-{n}-{i}"
            local.mkdir()
            racers.append(Process(where, "upload", rel, local, tmp_path / f"racer-cache-{n}-{i}", race=True))
        processes.extend(racers)
        assert [r.line() for r in racers] == ["waiting"] * len(racers)
        for r in racers:
            assert r.proc.stdin is not None
            r.proc.stdin.write("go\n")
            r.proc.stdin.flush()
        outcomes = [r.line() for r in racers]
        assert set(outcomes) <= {"ready", "conflict"}
        won = [rel for rel, outcome in zip(rels, outcomes, strict=True) if outcome == "ready"]
        if same:
            assert len(won) == 1, outcomes
        else:
            assert not [(a, b) for a in won for b in won if a < b and b.startswith(a)], won
        for r in racers:
            r.stop()
        assert LEASE_NAME not in " ".join(where.keys(f"r{n}/"))  # every lease released or never kept
    reliability.runs(rounds)


@pytest.mark.reliability(
    "A holder stalled past expiry (SIGSTOP) whose lease was taken over deletes nothing when it wakes ({where})",
    group="Leases",
)
def test_stalled_holder_deletes_nothing_after_a_takeover(
    where: Where, tmp_path: Path, processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 3.0
    monkeypatch.setenv(TTL_ENV, str(ttl))
    stalled = _hold(where, "job/", tmp_path, processes, interval=0.3)
    os.kill(stalled.proc.pid, signal.SIGSTOP)
    try:
        left = where.holder("job/")
        assert left is not None and left.pid == stalled.proc.pid
        _wait_until(lambda: time.time() > left.expires, deadline=3 * ttl)
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "new-owner.txt").write_bytes(b"new")
        with _mirror(tmp_path) as m:
            m.upload(where.url("job/"), mine, interval=None, delete=True, profile=where.profile)
            where.put("job/new-owner.txt", b"new", tmp_path)  # what the stalled writer does not have
            os.kill(stalled.proc.pid, signal.SIGCONT)
            assert stalled.proc.stdin is not None
            stalled.proc.stdin.close()  # its exit: a final upload with deletes
            assert stalled.proc.wait(120) != 0  # that upload raised: it is no longer the writer
            assert "No longer the writer" in stalled.proc.stderr.read()  # type: ignore[union-attr]
            assert "new-owner.txt" in where.keys("job/")  # not deleted by the stalled writer
    finally:
        if stalled.proc.poll() is None:
            os.kill(stalled.proc.pid, signal.SIGCONT)
    assert where.keys("job/") == ["new-owner.txt"]  # the owner's own final sync removed the other's upload


def _wait_until(cond: Callable[[], bool], deadline: float) -> None:
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, "condition not reached before the deadline"
        time.sleep(0.05)


# -- pure logic ---------------------------------------------------------------------


def test_lease_keys() -> None:
    assert lease_key("a/b/") == "a/b/.pos3-lease" and lease_key("") == ".pos3-lease"
    assert is_lease_key("a/.pos3-lease") and is_lease_key(".pos3-lease")
    assert not is_lease_key("a/.pos3-lease.txt") and not is_lease_key("a/x.pos3-lease")


def test_holder_round_trip_and_description() -> None:
    h = Holder("s3://b/p/", "node7", 4242, "t0k", 0.0, 600.0)
    assert Holder.decode(h.encode()) == h
    assert h.describe().startswith("s3://b/p/ is leased by host node7, pid 4242, since 1970-01-01 00:00:00 UTC")


def test_ttl_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    from pos3.lease import DEFAULT_TTL, ttl_from_env

    monkeypatch.delenv(TTL_ENV, raising=False)
    assert ttl_from_env() == DEFAULT_TTL == 600
    monkeypatch.setenv(TTL_ENV, "2.5")
    assert ttl_from_env() == 2.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv(TTL_ENV, bad)
        with pytest.raises(ValueError, match=TTL_ENV):
            ttl_from_env()


def _cli_sync(where: Where, src: str, dst: str, cache: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = _environment(where)
    args = [sys.executable, "-m", "pos3", "sync", src, dst, "--cache-root", str(cache), "--no-progress", *flags]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.parametrize("where", ["seaweedfs", "file"], indirect=True)
@pytest.mark.reliability(
    "A store-to-store sync with deletes takes the destination's lease; a held one stops it first ({where})",
    group="Leases",
)
def test_relay_with_deletes_takes_the_destination_lease(
    where: Where, tmp_path: Path, processes: list[Process], reliability
) -> None:
    where.put("src/new.txt", b"new", tmp_path)
    where.put("ckpt/theirs.txt", b"theirs", tmp_path)
    holder = _hold(where, "ckpt/", tmp_path, processes)
    refused = _cli_sync(where, where.url("src/"), where.url("ckpt/"), tmp_path / "cache", "--delete")
    assert refused.returncode == 1, refused.stderr
    assert f"pid {holder.proc.pid}, since " in refused.stderr and "Traceback" not in refused.stderr
    assert where.keys("ckpt/") == [LEASE_NAME, "theirs.txt"]  # nothing copied or deleted
    copied = _cli_sync(where, where.url("src/"), where.url("ckpt/"), tmp_path / "cache")  # no deletes: no lease
    assert copied.returncode == 0, copied.stderr
    assert where.keys("ckpt/") == [LEASE_NAME, "new.txt", "theirs.txt"]
    holder.stop()
    where.put("src/" + LEASE_NAME, b"a source lease is never copied", tmp_path)
    mirrored = _cli_sync(where, where.url("src/"), where.url("ckpt/"), tmp_path / "cache", "--delete")
    assert mirrored.returncode == 0, mirrored.stderr
    assert where.keys("ckpt/") == ["new.txt"]  # theirs.txt deleted; the lease taken, then released
    reliability.runs(1)
