"""The fault matrix: pos3's API against SeaweedFS, fake-gcs-server and Azurite through a `FaultProxy`.

Every scenario holds the same promises: a sync either completes after retries
or raises one `pos3.SyncError` naming every failed path; no partial file under
a final local name, no truncated or corrupted object under a final remote
key; no delete from a plan whose copies failed; and a rerun without faults
converges to an exact mirror. Stores are built with short timeouts and few
attempts (profile options), so stalls and permanent faults fail fast.
Repetitions are multiplied by ``POS3_SOAK``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import pos3
from pos3 import Profile
from pos3.local import TMP_PREFIX
from pos3.plugins import store_spec
from pos3.store import ObjectStore
from pos3.testing.faultproxy import FaultProxy

pytest_plugins = ["emulator_fixtures"]

SOAK = int(os.environ.get("POS3_SOAK", "1"))
BACKENDS = ["s3", "gcs", "azure"]
MiB = 1024 * 1024
#: Object sizes that take each store's multipart / ranged / resumable path.
LARGE = {"s3": 64 * MiB + 4096, "gcs": 8 * MiB + 4096, "azure": 64 * MiB + 4096}


@dataclass
class Env:
    """One server behind a fault proxy: a profile through the proxy, a store around it for checks."""

    backend: str
    scheme: str
    bucket: str
    proxy: FaultProxy
    profile: Profile
    direct: ObjectStore
    scratch: Path

    def url(self, prefix: str) -> str:
        return f"{self.scheme}://{self.bucket}/{prefix}"

    def put(self, files: dict[str, bytes]) -> None:
        for key, data in files.items():
            src = self.scratch / secrets.token_hex(6)
            src.write_bytes(data)
            self.direct.put(key, src)
            src.unlink()

    def tree(self, prefix: str) -> dict[str, bytes]:
        out = {}
        for meta in self.direct.list(prefix):
            dest = self.scratch / secrets.token_hex(6)
            self.direct.get(meta.key, dest, meta.size)
            out[meta.key[len(prefix) :]] = dest.read_bytes()
            dest.unlink()
        return out


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    backend = request.param
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bucket = f"faults-{secrets.token_hex(4)}"
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        upstream, scheme, flavour = server.endpoint, "s3", "s3"
    elif backend == "gcs":
        request.getfixturevalue("clean_cloud_env")
        server = request.getfixturevalue("gcs_server")
        upstream, scheme, flavour = server.endpoint, "gs", "gcs"
    else:
        request.getfixturevalue("clean_cloud_env")
        server = request.getfixturevalue("azure_server")
        upstream, scheme, flavour = server.endpoint.rsplit("/", 1)[0], "az", "azure"
    with FaultProxy(upstream, flavour=flavour, seed=zlib.crc32(request.node.name.encode())) as proxy:
        direct_profile = _profile(backend, server, None)
        proxied_profile = _profile(backend, server, proxy.endpoint)
        direct_backend = store_spec(scheme).connect(direct_profile, 8)
        _create_bucket(backend, direct_backend, bucket)
        yield Env(backend, scheme, bucket, proxy, proxied_profile, direct_backend.store(bucket), scratch)
        direct_backend.close()


def _profile(backend: str, server, proxy_endpoint: str | None, **extra: object) -> Profile:
    """A profile for the server, through the proxy when given one; short timeouts and few attempts."""
    name = f"faults-{backend}-{'proxied' if proxy_endpoint else 'direct'}"
    if backend == "s3":
        opts = {"access_key_id": server.access_key, "secret_access_key": server.secret_key}
        return Profile(
            local_name=name,
            endpoint=proxy_endpoint or server.endpoint,
            region="us-east-1",
            options={**opts, "timeout": 2, "max_attempts": 3, **extra},
        )
    if backend == "gcs":
        opts = {"timeout": 2, "retry_deadline": 3, **extra} if proxy_endpoint else {}
        return Profile(local_name=name, endpoint=proxy_endpoint or server.endpoint, public=True, options=opts)
    account = server.endpoint.rsplit("/", 1)[1]
    endpoint = f"{proxy_endpoint}/{account}" if proxy_endpoint else server.endpoint
    opts = {
        "account_key": server.account_key,
        **({"timeout": 2, "max_attempts": 3, "retry_backoff": 0.2} if proxy_endpoint else {}),
    }
    return Profile(local_name=name, endpoint=endpoint, options={**opts, **extra})


def _create_bucket(backend: str, direct, bucket: str) -> None:
    if backend == "s3":
        direct.client.create_bucket(Bucket=bucket)
    elif backend == "gcs":
        direct.client.create_bucket(bucket)
    else:
        direct.client.create_container(bucket)


def _mirror(cache: Path) -> pos3.Mirror:
    return pos3.mirror(cache_root=cache, show_progress=False, max_workers=4)


def _local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def _files(rng: random.Random, n: int, prefix: str = "") -> dict[str, bytes]:
    """``n`` files of 0..150 KB with random content (one empty, so that empty bodies meet faults too)."""
    out = {f"{prefix}f{i:02d}.bin": rng.randbytes(rng.randrange(1, 150_000)) for i in range(1, n)}
    out[f"{prefix}f00.bin"] = b""
    return out


def _failed_paths(err: pos3.SyncError) -> set[str]:
    return {path for path, _ in err.failures}


def _mixed_faults(proxy: FaultProxy, upload: bool) -> None:
    """Every kind of transient fault at once: one stall, then resets, cut bodies, 503 SlowDown
    and 500 at a combined rate of about one request in three."""
    proxy.set("stall", first=1, method="PUT" if upload else "GET", seconds=30)
    proxy.add("reset", rate=0.1)
    proxy.add("cut", rate=0.1)
    proxy.add("status", status=503, rate=0.1)
    proxy.add("status", status=500, rate=0.05)


def _room_for_a_stall(env: Env) -> Profile:
    """GCS bounds its retries by time (``retry_deadline``), not by count. 3 s let a stalled first
    request (the listing: 2 s to time out) be followed by one more try only, and only when the
    backoff's jitter allowed, so a second fault failed the listing about one run in three. 7 s admit
    the stall and two more tries (waits of at most 1.25 s and 2.5 s), as ``max_attempts=3`` does on
    the other stores."""
    if env.backend != "gcs":
        return env.profile
    return replace(env.profile, options={**env.profile.options, "retry_deadline": 7})


def _upload_method(env: Env) -> str:
    return "POST" if env.backend == "gcs" else "PUT"  # GCS uploads small objects with one POST


# -- Faults ---------------------------------------------------------------------------


@pytest.mark.reliability(
    "Download under resets, stalls, cut bodies, 500 and 503 SlowDown completes or names every failed path ({env})",
    group="Faults",
)
def test_download_under_faults(env: Env, tmp_path: Path, reliability) -> None:
    reps = SOAK
    for rep in range(reps):
        rng = random.Random(f"{env.backend}-down-{rep}")
        prefix = f"down-{rep}/"
        files = _files(rng, 8)
        env.put({prefix + k: v for k, v in files.items()})
        local = tmp_path / f"down-{rep}"
        local.mkdir()
        (local / "stale.txt").write_bytes(b"not in the remote")
        # Two objects fail for good (503 SlowDown; resets), so the run must fail and name them.
        doomed = {"f03.bin", "f06.bin"}
        _mixed_faults(env.proxy, upload=False)
        env.proxy.add("status", status=503, path="f03.bin", method="GET")
        env.proxy.add("reset", path="f06.bin", method="GET")
        with pytest.raises(pos3.SyncError) as info, _mirror(tmp_path / "cache"):
            pos3.download(env.url(prefix), local, profile=_room_for_a_stall(env))
        env.proxy.clear()
        assert env.proxy.count(fault="stall") == 1 and env.proxy.count(fault="cut") >= 1
        got = _local_tree(local)
        assert not _temp_files(local)
        for rel, data in got.items():  # nothing partial or corrupted under a final name
            assert rel == "stale.txt" or data == files[rel], rel
        assert {str(local / name) for name in doomed} <= _failed_paths(info.value)
        assert not doomed & set(got)
        assert got["stale.txt"] == b"not in the remote"  # no delete from a plan whose copies failed
        with _mirror(tmp_path / "cache"):
            pos3.download(env.url(prefix), local, profile=env.profile)
        assert _local_tree(local) == files  # the rerun converges to an exact mirror
    reliability.runs(reps)


@pytest.mark.reliability(
    "Upload under resets, stalls, cut bodies, 500 and 503 SlowDown completes or names every failed path ({env})",
    group="Faults",
)
@pytest.mark.parametrize("mode", ["transient", "refused"])
def test_upload_under_faults(env: Env, mode: str, tmp_path: Path, reliability) -> None:
    """Transient faults: the upload completes, or names what failed. Refused: every upload
    request answers 503 SlowDown, so every file is named and nothing is deleted."""
    reps = SOAK
    for rep in range(reps):
        rng = random.Random(f"{env.backend}-up-{mode}-{rep}")
        prefix = f"up-{mode}-{rep}/"
        files = _files(rng, 8)
        old = {"f05.bin": b"the previous version", "stale.bin": b"not local"}
        env.put({prefix + k: v for k, v in old.items()})
        local = tmp_path / f"up-{rep}"
        for rel, data in files.items():
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            (local / rel).write_bytes(data)
        if mode == "refused":
            env.proxy.set("status", status=503, method=_upload_method(env))
        else:
            _mixed_faults(env.proxy, upload=True)
        try:
            with _mirror(tmp_path / "cache"):
                pos3.upload(env.url(prefix), local, interval=None, profile=env.profile)
            error = None
        except pos3.SyncError as exc:
            error = exc
        finally:
            env.proxy.clear()
        remote = env.tree(prefix)
        for rel, data in remote.items():  # every object whole: the new content, or the old one
            assert data in (files.get(rel), old.get(rel)), rel
        assert env.proxy.injected >= 1
        if error is None:
            assert mode == "transient"
            assert remote == files
        else:
            named = _failed_paths(error)
            if mode == "refused":
                assert named == {env.url(prefix + rel) for rel in files}
            assert remote["stale.bin"] == old["stale.bin"]  # no delete from a plan whose copies failed
            assert {rel for rel, data in remote.items() if data == files.get(rel)} >= {
                rel for rel in files if env.url(prefix + rel) not in named
            }
        with _mirror(tmp_path / "cache"):
            pos3.upload(env.url(prefix), local, interval=None, profile=env.profile)
        assert env.tree(prefix) == files  # the rerun converges to an exact mirror
    reliability.runs(reps)


# -- Integrity ------------------------------------------------------------------------


@pytest.mark.reliability(
    "Throttling beyond the SDK's own retries is paced, never fatal: a rate-limited round trip completes ({env})",
    group="Faults",
)
def test_throttling_beyond_the_sdk_retries(env: Env, tmp_path: Path, reliability) -> None:
    """The profiles give the SDKs few, quick retries, so a rate limit far below what 4 workers ask for
    reaches pos3 as `Throttled` on every store, and `BackoffStore` keeps pacing until all is done."""
    files = _files(random.Random(f"{env.backend}-throttled"), 24)
    local = tmp_path / "up"
    local.mkdir()
    for rel, data in files.items():
        (local / rel).write_bytes(data)
    rule = env.proxy.set("ratelimit", per_second=15, burst=4, retry_after=1)
    with _mirror(tmp_path / "cache"):
        pos3.upload(env.url("throttled/"), local, interval=None, profile=env.profile)
    with _mirror(tmp_path / "cache2"):
        down = pos3.download(env.url("throttled/"), tmp_path / "down", profile=env.profile)
    env.proxy.clear()
    assert rule.fired > 0, "the rate limit never bit: the scenario tested nothing"
    assert _local_tree(down) == files
    assert env.tree("throttled/") == files
    reliability.runs(1)


@pytest.mark.reliability("A corrupted download is retried, then reported; never kept ({env})", group="Integrity")
def test_corrupted_download(env: Env, tmp_path: Path, reliability) -> None:
    data = os.urandom(200_000)
    prefix = "corrupt-down/"
    env.put({prefix + "obj.bin": data})
    local = tmp_path / "local"
    local.mkdir()
    (local / "stale.txt").write_bytes(b"stale")
    env.proxy.set("corrupt", first=1, method="GET", path="obj.bin")
    with _mirror(tmp_path / "cache"):
        pos3.download(env.url(prefix), local, profile=env.profile)
    assert env.proxy.count(fault="corrupt") == 1  # one bad body seen, detected, read again
    assert _local_tree(local) == {"obj.bin": data}
    # Every attempt corrupted: reported, no file kept, nothing deleted.
    (local / "obj.bin").unlink()
    (local / "stale.txt").write_bytes(b"stale")
    env.proxy.set("corrupt", method="GET", path="obj.bin")
    with pytest.raises(pos3.SyncError) as info, _mirror(tmp_path / "cache2"):
        pos3.download(env.url(prefix), local, profile=env.profile)
    env.proxy.clear()
    assert _failed_paths(info.value) == {str(local / "obj.bin")}
    assert "IntegrityError" in str(info.value)
    assert _local_tree(local) == {"stale.txt": b"stale"} and not _temp_files(local)
    reliability.runs(2)


@pytest.mark.reliability("A corrupted upload is rejected or redone; never kept ({env})", group="Integrity")
def test_corrupted_upload(env: Env, tmp_path: Path, reliability) -> None:
    local = tmp_path / "local"
    local.mkdir()
    data = os.urandom(200_000)
    (local / "obj.bin").write_bytes(data)
    prefix = "corrupt-up/"
    env.proxy.set("corrupt_request", first=1, method=_upload_method(env))
    with _mirror(tmp_path / "cache"):
        pos3.upload(env.url(prefix), local, interval=None, profile=env.profile)
    env.proxy.clear()
    assert env.proxy.count(fault="corrupt_request") == 1
    assert env.tree(prefix) == {"obj.bin": data}
    # Every attempt corrupted: reported, and the object is never replaced by a bad copy.
    (local / "obj.bin").write_bytes(os.urandom(200_000))
    env.proxy.set("corrupt_request", method=_upload_method(env))
    with pytest.raises(pos3.SyncError) as info, _mirror(tmp_path / "cache"):
        pos3.upload(env.url(prefix), local, interval=None, profile=env.profile)
    env.proxy.clear()
    assert _failed_paths(info.value) == {env.url(prefix + "obj.bin")}
    assert env.tree(prefix) in ({"obj.bin": data}, {})  # the old object, or (GCS: deleted) none
    reliability.runs(2)


@pytest.mark.reliability(
    "A large object corrupted once each way (multipart/ranged/resumable) is redone, exact ({env})", group="Integrity"
)
def test_corrupted_large_round_trip(env: Env, tmp_path: Path, reliability) -> None:
    """Above the single-request size: S3 multipart upload (one part corrupted) and parallel
    ranged download checked against the multipart ETag; Azure staged blocks and ranged
    download checked against Content-MD5; GCS resumable upload and streamed download."""
    local = tmp_path / "up"
    local.mkdir()
    with open(local / "big.bin", "wb") as f:
        f.write(os.urandom(LARGE[env.backend]))
    prefix = "corrupt-large/"
    env.proxy.set("corrupt_request", first=1, method="PUT")
    with _mirror(tmp_path / "cache"):
        pos3.upload(env.url(prefix), local, interval=None, profile=env.profile)
    assert env.proxy.count(fault="corrupt_request") == 1
    env.proxy.set("corrupt", first=1, method="GET", path="big.bin")
    down = tmp_path / "down"
    with _mirror(tmp_path / "cache"):
        pos3.download(env.url(prefix), down, profile=env.profile)
    env.proxy.clear()
    assert env.proxy.count(fault="corrupt") == 1
    assert (down / "big.bin").read_bytes() == (local / "big.bin").read_bytes()
    reliability.runs(2)


@pytest.mark.reliability(
    "A parallel ranged download cut mid-body is redone exact, or fails leaving no file ({env})", group="Faults"
)
def test_ranged_download_cut(env: Env, tmp_path: Path, reliability) -> None:
    """The ranges stream into one file while hashers follow them: a body cut short once is
    redone (S3: the whole file; GCS and Azure: that range) and exact; bodies cut every time fail
    the file (no hasher left waiting) and leave neither a final nor a temporary file."""
    data = os.urandom(LARGE[env.backend] + 40 * MiB)  # S3: three ranges of 32 MiB; GCS/Azure: 16 MiB ones
    env.put({"ranged/big.bin": data})
    _faulty_big_download(env, tmp_path, "ranged/", data, "cut", "TransferInterrupted")
    reliability.runs(2)


def _faulty_big_download(env: Env, tmp_path: Path, prefix: str, data: bytes, fault: str, error: str) -> None:
    """``prefix`` holds only ``big.bin`` (``data``): with ``fault`` on its first GET the download is
    exact; with it on every GET it fails naming ``error``, leaving neither a final nor a temporary file."""
    down = tmp_path / "down"
    env.proxy.set(fault, first=1, method="GET", path="big.bin")
    with _mirror(tmp_path / "cache"):
        pos3.download(env.url(prefix), down, profile=env.profile)
    assert env.proxy.count(fault=fault) == 1
    assert (down / "big.bin").read_bytes() == data
    (down / "big.bin").unlink()
    env.proxy.set(fault, method="GET", path="big.bin")  # every GET of it
    with pytest.raises(pos3.SyncError) as info, _mirror(tmp_path / "cache2"):
        pos3.download(env.url(prefix), down, profile=env.profile)
    env.proxy.clear()
    assert _failed_paths(info.value) == {str(down / "big.bin")}
    assert error in str(info.value)
    assert not (down / "big.bin").exists() and not _temp_files(down)


@pytest.mark.reliability(
    "A ranged download of a blob without a Content-MD5 checks each range's MD5: corrupted once, redone exact;"
    " always, reported with no file ({env})",
    group="Integrity",
)
@pytest.mark.parametrize("env", ["azure"], indirect=True)
def test_ranges_of_a_blob_without_md5(env: Env, tmp_path: Path, reliability) -> None:
    """A blob committed from blocks has no whole-blob Content-MD5: each 4 MiB range is checked
    against the MD5 the service computes for it (``x-ms-range-get-content-md5``)."""
    blocks = [os.urandom(4 * MiB) for _ in range(3)] + [os.urandom(12345)]
    blob = env.direct.container.get_blob_client("nomd5/big.bin")  # type: ignore[attr-defined]
    ids = [f"{n:08d}" for n in range(len(blocks))]
    for block_id, block in zip(ids, blocks, strict=True):
        blob.stage_block(block_id, block)
    blob.commit_block_list(ids)
    assert blob.get_blob_properties().content_settings.content_md5 is None
    _faulty_big_download(env, tmp_path, "nomd5/", b"".join(blocks), "corrupt", "IntegrityError")
    reliability.runs(2)


@pytest.mark.reliability(
    "A store closed during a ranged download ends it: its future completes, no hasher thread is left ({env})",
    group="Faults",
)
@pytest.mark.parametrize("env", ["gcs", "azure"], indirect=True)
def test_close_during_a_ranged_download(env: Env, tmp_path: Path, reliability) -> None:
    """Closing the engine cancels its requests, and a cancelled ranged download releases its hashers
    (they would otherwise wait for bytes that never land)."""
    data = os.urandom(LARGE[env.backend] + 8 * MiB)
    env.put({"closing/big.bin": data})
    patient = dataclasses.replace(env.profile, options={**env.profile.options, "timeout": 60})
    backend = store_spec(env.scheme).connect(patient, 4)
    env.proxy.set("stall", method="GET", path="big.bin", seconds=60)
    started = backend.store(env.bucket).start_get("closing/big.bin", tmp_path / "big.bin", len(data))
    assert started is not None
    _poll(lambda: env.proxy.count(fault="stall") >= 1, "a stalled range")
    backend.close()
    futures.wait([started], timeout=30)
    env.proxy.clear()
    assert started.done()
    _poll(lambda: not [t for t in threading.enumerate() if t.name.startswith("pos3-hash")], "hashers to stop")
    reliability.runs(1)


def _poll(ready: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not ready():
        assert time.monotonic() < end, f"waited {deadline} s for {what}"
        time.sleep(0.05)


# -- Errors ---------------------------------------------------------------------------

CANARY = "pos3CanarySecret" + "Zq7"


@pytest.mark.reliability(
    "A canary secret never appears in logs, errors or reprs under faults ({backend})", group="Errors"
)
@pytest.mark.parametrize("backend", ["s3", "azure-key", "azure-sas"])
def test_canary_secret_never_leaks(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture, reliability
) -> None:
    """The secret is a wrong credential (an S3 secret key, an Azure account key, or the signature
    of an Azure SAS, which travels in every URL): the servers refuse every request, through a proxy
    answering 503 and resetting connections at random, then refusing connections.
    fake-gcs-server takes no credential."""
    import base64

    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        upstream, flavour, scheme = server.endpoint, "s3", "s3"
        extra: dict[str, object] = {"secret_access_key": CANARY}
    else:
        request.getfixturevalue("clean_cloud_env")
        server = request.getfixturevalue("azure_server")
        upstream, flavour, scheme = server.endpoint.rsplit("/", 1)[0], "azure", "az"
        if backend == "azure-key":
            extra = {"account_key": base64.b64encode(CANARY.encode() * 2).decode()}
        else:
            extra = {"sas_token": f"sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2031-01-01T00:00:00Z&sig={CANARY}"}
    local = tmp_path / "out"
    local.mkdir()
    (local / "a.txt").write_bytes(b"a")
    seen: list[str] = []
    caplog.set_level(logging.DEBUG, logger="pos3")
    calls = [
        lambda: pos3.upload(f"{scheme}://canary-bkt/x", local, interval=None, profile=profile),
        lambda: pos3.download(f"{scheme}://canary-bkt/x", profile=profile),
        lambda: pos3.ls(f"{scheme}://canary-bkt/", profile=profile),
    ]
    with FaultProxy(upstream, flavour=flavour, seed=3) as proxy:
        profile = _profile("s3" if backend == "s3" else "azure", server, proxy.endpoint, **extra)
        if backend == "azure-sas":
            profile = Profile(profile.local_name, profile.endpoint, options={**_without_key(profile.options)})
        proxy.set("status", status=503, rate=0.4)
        proxy.add("reset", rate=0.3)
        for n, call in enumerate([*calls, *calls]):
            if n == len(calls):
                proxy.refuse()
            with pytest.raises(Exception) as info, _mirror(tmp_path / "cache") as m:  # noqa: PT011
                seen += [repr(m), repr(profile)]
                call()
            exc: BaseException | None = info.value
            while exc is not None:  # the error and everything chained to it
                seen += [str(exc), repr(exc)]
                seen += [f"{path}: {err!r} {err}" for path, err in getattr(exc, "failures", [])]
                exc = exc.__cause__ or exc.__context__
    seen += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert len(seen) > 12 and not [s for s in seen if CANARY in s]
    reliability.runs(2 * len(calls))


def _without_key(options: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k != "account_key"}
