"""Issue 8, point 2: process death. SIGKILL at random points, SIGTERM as an error exit, a second signal.

Every scenario runs real child processes against the session's SeaweedFS and
checks, after each death: no partial file under a final name (local or
remote), no temporary file uploaded, records that never claim a file that
differs, a state database that passes SQLite's integrity check, and a next
run that converges to an exact mirror.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from child_jobs import forked, transfer
from mirror_checks import assert_records_honest, md5, poll, remote_listing

import pos3
from helpers import local_tree, remote_tree, write
from pos3.local import TMP_PREFIX
from pos3.signals import SignalGuard

MiB = 1024 * 1024
SOAK = int(os.environ.get("POS3_SOAK", "1"))
#: SIGKILLs per direction (a full run with POS3_SOAK=N kills N times as often).
KILLS = 6 * SOAK


# -- trees and their checks ------------------------------------------------------


def make_tree(rng: random.Random) -> dict[str, bytes]:
    """Many small files (some empty) in nested directories, and some multi-MiB ones."""
    files = {}
    for i in range(60):
        sub = f"d{i % 6}/" + ("deep/er/" if i % 9 == 0 else "")
        files[f"{sub}f{i:03d}.bin"] = rng.randbytes(rng.choice([0, 1, 700, 4096, 20_000]))
    for i in range(3):
        files[f"big/b{i}.bin"] = rng.randbytes(rng.randint(1, 3) * MiB + rng.randint(0, 4096))
    return files


def mutate(rng: random.Random, files: dict[str, bytes], step: int) -> dict[str, bytes]:
    """A third of the files rewritten (half of them at the same size), one removed, two added,
    and two multi-MiB files rewritten at the same size."""
    new = dict(files)
    small = sorted(k for k in new if not k.startswith("big/"))
    for rel in rng.sample(small, len(small) // 3):
        size = len(new[rel]) if rng.random() < 0.5 else rng.choice([0, 5, 3000, 40_000])
        new[rel] = rng.randbytes(size)
    del new[rng.choice(small)]
    for j in range(2):
        new[f"d{j}/new-{step}-{j}.bin"] = rng.randbytes(rng.choice([0, 10, 9000]))
    for big in rng.sample(sorted(k for k in new if k.startswith("big/")), 2):
        new[big] = rng.randbytes(len(new[big]))
    return new


def _lease_expired(s3, bucket: str, prefix: str) -> bool:
    """True when no live lease (pos3.lease) is left on ``prefix``."""
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + ".pos3-lease")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return True
    return json.loads(body)["expires"] < time.time()


def assert_remote_is_one_of(listing: dict[str, tuple[int, str]], *versions: dict[str, bytes]) -> None:
    """Every object is complete: it holds exactly one of the given versions of its file."""
    for rel, (size, etag) in listing.items():
        assert TMP_PREFIX not in rel, f"a temporary file was uploaded: {rel}"
        allowed = {(len(v[rel]), md5(v[rel])) for v in versions if rel in v}
        assert (size, etag) in allowed, f"{rel} holds none of its versions (torn or foreign): {size} bytes {etag}"


def assert_local_is_one_of(root: Path, *versions: dict[str, bytes]) -> None:
    """Every file under its final name holds exactly one of the given versions; temporary files may remain."""
    for rel, body in local_tree(root).items():
        if Path(rel).name.startswith(TMP_PREFIX):
            continue
        assert any(v.get(rel) == body for v in versions), f"{rel} holds none of its versions (partial or torn)"


def progress(state: dict[str, bytes], old: dict[str, bytes], new: dict[str, bytes]) -> str:
    """Where a kill landed, from the destination's state: how many of the step's changes it holds
    (a temporary file counts as a transfer in flight)."""
    changed = {rel for rel in old.keys() | new.keys() if old.get(rel) != new.get(rel)}
    done = sum(1 for rel in changed if state.get(rel) == new.get(rel))
    if 0 < done < len(changed) or any(Path(rel).name.startswith(TMP_PREFIX) for rel in state):
        return "mid-transfer"
    return "before any change" if done == 0 else "after every change"


def apply_local(root: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    for rel in old.keys() - new.keys():
        (root / rel).unlink()
    write(root, {rel: body for rel, body in new.items() if old.get(rel) != body})


def apply_remote(s3, bucket: str, prefix: str, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    for rel in old.keys() - new.keys():
        s3.delete_object(Bucket=bucket, Key=prefix + rel)
    for rel, body in new.items():
        if old.get(rel) != body:
            s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)


# -- SIGKILL at random points ----------------------------------------------------


class Killer:
    """Runs `child_jobs.transfer` in forked children and kills each at a random point."""

    def __init__(self, env: dict[str, str], cache: Path, url: str, local: Path, kind: str) -> None:
        self.ctx = forked()
        self.args = (kind, env, cache, url, local)
        self.killed = self.finished = self.honest = 0
        self.landed: Counter[str] = Counter()
        #: The shortest transfer seen from start to end: kills land uniformly inside it.
        self.window = float("inf")

    def report(self) -> str:
        where = ", ".join(f"{n} {k}" for k, n in sorted(self.landed.items()))
        return (
            f"{self.killed} children killed ({where}), {self.finished} finished first; "
            f"{self.honest} records matching both sides checked equal"
        )

    def run_and_kill(self, rng: random.Random) -> bool:
        """One child, killed at a random point of its transfer; False if it finished first."""
        return self.run(rng.uniform(0, self.window))

    def run(self, kill_after: float | None) -> bool:
        """One child; kill it ``kill_after`` seconds after its transfer began (None: let it finish).
        Returns whether it was killed."""
        ready = self.ctx.Event()
        proc = self.ctx.Process(target=transfer, args=(*self.args, ready))
        proc.start()
        try:
            assert ready.wait(60), "the child never started its transfer"
            began = time.monotonic()
            if kill_after is not None:
                proc.join(kill_after)  # the random point; returns early if the child ended by itself
                proc.kill()
            proc.join(120)
            took = time.monotonic() - began
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
        if proc.exitcode == -signal.SIGKILL:
            self.killed += 1
            return True
        assert proc.exitcode == 0, f"the child failed with exit code {proc.exitcode}"
        self.finished += 1
        self.window = min(self.window, took)
        return False


@pytest.mark.reliability("SIGKILL at random points of an upload: the next run converges", group="Process death")
def test_sigkill_during_upload(s3, s3_server, bucket, cache, tmp_path, reliability):
    rng = random.Random(f"upload-{os.getpid()}")
    local, prefix = tmp_path / "out", "out/"
    files = make_tree(rng)
    write(local, files)
    write(local, {f"d1/{TMP_PREFIX}f000.bin.1a2b3c4d": b"leftover of a killed download"})
    # A killed upload leaves its lease (pos3.lease) until it expires: a short one lets the next run take it over.
    env = {**s3_server.env(), "POS3_LEASE_TTL": "0.3"}
    killer = Killer(env, cache, f"s3://{bucket}/out", local, "upload")
    killer.run(None)  # the first upload, whole
    for step in range(KILLS + 1):
        new = mutate(rng, files, step)
        apply_local(local, files, new)
        killed = killer.run(None) if step == 0 else killer.run_and_kill(rng)  # step 0: how long a step takes
        listing = remote_listing(s3, bucket, prefix)
        assert_remote_is_one_of(listing, files, new)
        remote = {
            rel: new[rel] if rel in new and listing[rel] == (len(new[rel]), md5(new[rel])) else files[rel]
            for rel in listing
        }
        killer.landed[progress(remote, files, new)] += killed
        killer.honest += assert_records_honest(cache, local, listing)
        poll(lambda: _lease_expired(s3, bucket, prefix))  # a killed run's lease (0.3 s) before the next writer
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.upload(f"s3://{bucket}/out", local=local, interval=None)
        listing = remote_listing(s3, bucket, prefix)
        assert listing == {rel: (len(body), md5(body)) for rel, body in new.items()}  # exact, no temporary file
        killer.honest += assert_records_honest(cache, local, listing)
        files = new
    print(f"\nupload: {killer.report()}")
    assert killer.killed >= KILLS // 2  # most kills landed inside a run
    reliability.runs(KILLS)


@pytest.mark.reliability("SIGKILL at random points of a download: the next run converges", group="Process death")
def test_sigkill_during_download(s3, s3_server, bucket, cache, tmp_path, reliability):
    rng = random.Random(f"download-{os.getpid()}")
    dest, prefix = tmp_path / "in", "in/"
    files = make_tree(rng)
    apply_remote(s3, bucket, prefix, {}, files)
    killer = Killer(s3_server.env(), cache, f"s3://{bucket}/in", dest, "download")
    killer.run(None)
    assert local_tree(dest) == files
    leftovers = 0
    for step in range(KILLS + 1):
        new = mutate(rng, files, step)
        apply_remote(s3, bucket, prefix, files, new)
        killed = killer.run(None) if step == 0 else killer.run_and_kill(rng)
        assert_local_is_one_of(dest, files, new)
        tree = local_tree(dest)
        leftovers += sum(1 for rel in tree if Path(rel).name.startswith(TMP_PREFIX))
        killer.landed[progress(tree, files, new)] += killed
        listing = remote_listing(s3, bucket, prefix)
        killer.honest += assert_records_honest(cache, dest, listing)
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.download(f"s3://{bucket}/in", local=dest)
        assert local_tree(dest) == new  # exact: nothing missing, nothing extra, no temporary file
        killer.honest += assert_records_honest(cache, dest, listing)
        files = new
    print(f"\ndownload: {killer.report()}; {leftovers} temporary files left by kills, removed by the next run")
    assert killer.killed >= KILLS // 2
    reliability.runs(KILLS)


# -- SIGTERM: an error exit that still uploads ------------------------------------

CHILD = """
import sys, time
import pos3

cache, bucket, mode, shards, dest = sys.argv[1:6]
with pos3.mirror(cache_root=cache, show_progress=False, max_workers=1):
    ckpt = pos3.sync(f"s3://{bucket}/ckpt", interval=None, sync_on_error=True, delete_remote=False)
    logs = pos3.upload(f"s3://{bucket}/logs", interval=None)
    (ckpt / "step-1.pt").write_bytes(b"checkpoint 1")
    (logs / "log.txt").write_bytes(b"a log line")
    for i in range(int(shards)):  # a final upload long enough to be interrupted
        (ckpt / f"shard-{i:04d}.bin").write_bytes(i.to_bytes(4, "big") * 256)
    print("ready", flush=True)
    if mode == "computing":
        n = 0
        while True:
            n += 1
    elif mode == "downloading":
        pos3.download(f"s3://{bucket}/big", local=dest)
    if mode != "exiting":
        while True:
            time.sleep(1)
"""


def start_child(tmp_path: Path, s3_server, *args: str) -> tuple[subprocess.Popen, Path]:
    """Run `CHILD` in a fresh interpreter; returns it (ready to be signalled) and its stderr file."""
    err = tmp_path / "child.stderr"
    env = {**os.environ, **s3_server.env()}
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=f
        )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n", err.read_text()
    return proc, err


def wait(proc: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.reliability("SIGTERM while {mode}: sync_on_error uploads run, status 143", group="Process death")
@pytest.mark.parametrize("mode", ["sleeping", "computing", "downloading"])
def test_sigterm_uploads_sync_on_error_roots_and_exits_143(s3, s3_server, bucket, cache, tmp_path, mode):
    size = 40 * MiB
    if mode == "downloading":  # a large download in flight when SIGTERM arrives
        s3.put_object(Bucket=bucket, Key="big/file.bin", Body=b"\1" * size)
    dest = tmp_path / "dest"
    proc, err = start_child(tmp_path, s3_server, cache, bucket, mode, 0, dest)
    if mode == "downloading":
        poll(lambda: any(p.name.startswith(TMP_PREFIX) for p in dest.glob("*")) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    assert wait(proc) == 128 + signal.SIGTERM, err.read_text()
    assert "Traceback" not in err.read_text()
    assert remote_tree(s3, bucket, "ckpt/") == {"step-1.pt": b"checkpoint 1"}
    assert remote_tree(s3, bucket, "logs/") == {}  # not sync_on_error: an error exit skips it
    if mode == "downloading":
        # A copy either finished (then whole, under its name) or left only a temporary file.
        final = [p for p in dest.glob("*") if not p.name.startswith(TMP_PREFIX)]
        assert all(p.name == "file.bin" and p.stat().st_size == size for p in final)


@pytest.mark.reliability("A second {second} during the final upload stops at once, nothing torn", group="Process death")
@pytest.mark.parametrize("second", ["SIGTERM", "SIGINT"])
def test_second_signal_during_the_final_upload_stops_at_once(s3, s3_server, bucket, cache, tmp_path, second):
    n = 400
    proc, err = start_child(tmp_path, s3_server, cache, bucket, "sleeping", n, "-")
    proc.send_signal(signal.SIGTERM)
    poll(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/", MaxKeys=1).get("KeyCount", 0) > 0)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, second))
    code = wait(proc)
    stopped = time.monotonic() - sent
    assert code == -getattr(signal, second), err.read_text()  # ended by the signal's default action
    assert stopped < 5, f"the child took {stopped:.1f}s to stop"
    assert "another SIGTERM or Ctrl-C stops at once" in err.read_text()
    local = cache / "_" / bucket / "ckpt"
    files = local_tree(local)
    listing = remote_listing(s3, bucket, "ckpt/")
    assert 0 < len(listing) < len(files), "the second signal did not land during the upload"
    assert_remote_is_one_of(listing, files)  # every object whole, no temporary file
    assert_records_honest(cache, local, listing)  # and the state database passes its integrity check
    print(f"\n{second}: stopped {stopped * 1000:.0f} ms after the signal, {len(listing)} of {len(files)} uploaded")
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/ckpt", interval=None)
    assert remote_listing(s3, bucket, "ckpt/") == {rel: (len(b), md5(b)) for rel, b in files.items()}


@pytest.mark.reliability("SIGTERM during a clean exit's upload: it finishes, status 143", group="Process death")
def test_sigterm_during_a_clean_exit_lets_the_final_upload_finish(s3, s3_server, bucket, cache, tmp_path):
    n = 400
    proc, err = start_child(tmp_path, s3_server, cache, bucket, "exiting", n, "-")
    poll(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/", MaxKeys=1).get("KeyCount", 0) > 0)
    proc.send_signal(signal.SIGTERM)
    assert wait(proc) == 128 + signal.SIGTERM, err.read_text()
    assert remote_tree(s3, bucket, "logs/") == {"log.txt": b"a log line"}  # a clean exit uploads everything
    assert len(remote_listing(s3, bucket, "ckpt/")) == 1 + n


# -- the handler's lifecycle, in this process ------------------------------------


def sigterm_here() -> None:
    """Send SIGTERM to this (the test) process, refusing to when nothing would catch it."""
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "SIGTERM would end the test run"
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # never reached: the handler raises in this thread first


@pytest.mark.reliability("SIGTERM raises pos3.Terminated in the main thread; handler restored", group="Process death")
def test_sigterm_in_this_process_raises_terminated_and_restores_the_handler(s3, bucket, cache):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(pos3.Terminated) as info, pos3.mirror(cache_root=cache, show_progress=False):
        ckpt = pos3.upload(f"s3://{bucket}/ckpt", interval=None, sync_on_error=True)
        logs = pos3.upload(f"s3://{bucket}/logs", interval=None)
        write(ckpt, {"model.pt": b"weights"})
        write(logs, {"log.txt": b"log"})
        sigterm_here()
    assert isinstance(info.value, SystemExit) and info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert remote_tree(s3, bucket, "ckpt/") == {"model.pt": b"weights"}
    assert remote_tree(s3, bucket, "logs/") == {}


def test_a_programs_own_sigterm_handler_stays_in_charge(s3, bucket, cache):
    calls = []

    def own(signum, frame):
        calls.append(signum)
        raise pos3.Terminated()  # what a handler does to get pos3's exit rules

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with pytest.raises(pos3.Terminated), pos3.mirror(cache_root=cache, show_progress=False):
            assert signal.getsignal(signal.SIGTERM) is own
            ckpt = pos3.upload(f"s3://{bucket}/ckpt", interval=None, sync_on_error=True)
            write(ckpt, {"model.pt": b"weights"})
            sigterm_here()
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is own
        assert remote_tree(s3, bucket, "ckpt/") == {"model.pt": b"weights"}
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_installed_inside_the_block_is_kept(cache):
    def own(signum, frame):
        pass

    try:
        with pos3.mirror(cache_root=cache, show_progress=False):
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, own)
            signal.signal(signal.SIGTERM, own)
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_ignored_sigterm_stays_ignored(cache):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with pos3.mirror(cache_root=cache, show_progress=False):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_mirror_outside_the_main_thread_installs_nothing(cache):
    seen = []

    def job():
        with pos3.mirror(cache_root=cache, show_progress=False):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(60)
    assert seen == [signal.SIG_DFL]


def test_a_sigterm_landing_in_the_exit_code_is_deferred_until_the_uploads_ran():
    """The handler never raises inside the mirror's ``__exit__`` (before its uploads could run):
    it arms the stop-at-once default and `exiting` raises `Terminated` after the uploads."""

    def fake_exit() -> None:
        sigterm_here_deferred()

    def sigterm_here_deferred() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # lands in fake_exit's frame: deferred, nothing raised
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the next one would stop at once

    guard = SignalGuard(fake_exit.__code__)
    guard.enter()
    try:
        fake_exit()
        assert guard.received
        uploads_ran = []
        with pytest.raises(pos3.Terminated):
            with guard.exiting(None, 1):
                uploads_ran.append(True)
        assert uploads_ran == [True]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
