"""Storage backends the benchmark runs against.

A backend knows three things: the environment that points every tool at the
store (``env``), how rclone names a remote path (``rclone_path``), and the
harness's own untimed operations (create buckets, seed a prefix, list and read
objects for verification, edit objects remotely). Only S3 (SeaweedFS on
loopback) exists today. A GCS (fake-gcs-server) or Azure (Azurite) backend is
one more subclass here plus one entry in `BACKENDS`; its ``tools`` would be
rclone (and pos3 once it speaks that scheme) — see `Backend.supports`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: rclone remote name configured through RCLONE_CONFIG_<NAME>_* variables.
RCLONE_REMOTE = "bench"


@dataclass(frozen=True)
class Remote:
    """One remote location: a bucket and a prefix (no leading or trailing slash)."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """The URL pos3 takes, with a trailing slash (always a prefix, never one object)."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}/"

    @property
    def rclone(self) -> str:
        return f"{RCLONE_REMOTE}:{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"


@dataclass(frozen=True)
class RemoteObject:
    """What a listing says about one object under a `Remote` (``rel`` is relative to its prefix)."""

    rel: str
    size: int
    etag: str
    mtime: float  # seconds since the epoch


class Backend:
    """A store and the harness's untimed access to it."""

    name = ""
    scheme = ""
    #: tool kinds (see `tools.Tool.kind`) that can run against this backend
    supports: frozenset[str] = frozenset()

    def env(self) -> dict[str, str]:
        """Variables that point rclone, s5cmd, aws and pos3 at this store."""
        raise NotImplementedError

    def remote(self, bucket: str, prefix: str) -> Remote:
        return Remote(self.scheme, bucket, prefix.strip("/"))

    def create_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    def list(self, remote: Remote) -> Iterator[RemoteObject]:
        raise NotImplementedError

    def read(self, remote: Remote, rel: str) -> bytes:
        raise NotImplementedError

    def md5_of(self, remote: Remote, rel: str) -> str:
        """Hex MD5 of an object's content, streamed (for objects too big to read at once)."""
        raise NotImplementedError

    def same_content(self, remote: Remote, obj: RemoteObject, local: Path, md5: str) -> bool:
        """Whether ``obj`` holds the bytes of ``local`` (whose MD5 is ``md5``): here by reading it back."""
        return self.md5_of(remote, obj.rel) == md5

    def put(self, remote: Remote, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def delete(self, remote: Remote, rels: list[str]) -> None:
        raise NotImplementedError

    def delete_prefix(self, remote: Remote) -> None:
        """Remove everything under ``remote`` (to free space after a step)."""
        self.delete(remote, [obj.rel for obj in self.list(remote)])

    def seed(self, local: Path, remote: Remote) -> None:
        """Upload the tree ``local`` to an empty ``remote`` as fast as possible (untimed set-up)."""
        raise NotImplementedError


class S3Backend(Backend):
    """S3 through boto3 for the harness; SeaweedFS on loopback in practice."""

    name = "s3"
    scheme = "s3"
    supports = frozenset({"rclone", "s5cmd", "aws", "pos3"})

    def __init__(self, endpoint: str, access_key: str, secret_key: str, s5cmd: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.s5cmd = s5cmd  # a fast seeder when installed; boto3 threads otherwise
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(max_pool_connections=32, retries={"mode": "standard", "max_attempts": 5}),
        )

    def env(self) -> dict[str, str]:
        prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Other",
            prefix + "ENDPOINT": self.endpoint,
            prefix + "ACCESS_KEY_ID": self.access_key,
            prefix + "SECRET_ACCESS_KEY": self.secret_key,
            prefix + "REGION": "us-east-1",
            prefix + "FORCE_PATH_STYLE": "true",
        }

    def create_bucket(self, bucket: str) -> None:
        with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(Bucket=bucket)

    def list(self, remote: Remote) -> Iterator[RemoteObject]:
        """Every object under ``remote``, paging by hand.

        A full page that claims to be the last is asked once more with
        ``StartAfter`` (SeaweedFS 4.48 can end a listing early after a
        directory-marker key), so a tool that writes markers is not judged
        on a truncated listing.
        """
        base = remote.prefix + "/"
        start_after = ""
        while True:
            kwargs: dict[str, Any] = {"Bucket": remote.bucket, "Prefix": base}
            if start_after:
                kwargs["StartAfter"] = start_after
            page = self.client.list_objects_v2(**kwargs)
            contents = page.get("Contents", [])
            for obj in contents:
                yield RemoteObject(
                    obj["Key"][len(base) :], obj["Size"], obj["ETag"].strip('"'), obj["LastModified"].timestamp()
                )
            if not contents:
                return
            start_after = contents[-1]["Key"]
            if not page.get("IsTruncated") and len(contents) < 1000:
                return

    def read(self, remote: Remote, rel: str) -> bytes:
        return self.client.get_object(Bucket=remote.bucket, Key=remote.key(rel))["Body"].read()

    def md5_of(self, remote: Remote, rel: str) -> str:
        body = self.client.get_object(Bucket=remote.bucket, Key=remote.key(rel))["Body"]
        digest = hashlib.md5()
        for chunk in iter(lambda: body.read(8 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def same_content(self, remote: Remote, obj: RemoteObject, local: Path, md5: str) -> bool:
        """A multipart ETag is the MD5 of the parts' MD5s: rebuild it from ``local`` cut at the object's
        own part boundaries (one HEAD per part); anything else is read back."""
        etag, _, count = obj.etag.partition("-")
        if count.isdigit() and obj.size == local.stat().st_size:
            sizes = []
            for n in range(1, int(count) + 1):
                head = self.client.head_object(Bucket=remote.bucket, Key=remote.key(obj.rel), PartNumber=n)
                sizes.append(head["ContentLength"])
            if sum(sizes) == obj.size and _multipart_md5(local, tuple(sizes), md5) == etag:
                return True
        return super().same_content(remote, obj, local, md5)

    def put(self, remote: Remote, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=remote.bucket, Key=remote.key(rel), Body=data)

    def delete(self, remote: Remote, rels: list[str]) -> None:
        for i in range(0, len(rels), 1000):
            batch = [{"Key": remote.key(rel)} for rel in rels[i : i + 1000]]
            self.client.delete_objects(Bucket=remote.bucket, Delete={"Objects": batch, "Quiet": True})

    def seed(self, local: Path, remote: Remote) -> None:
        if self.s5cmd and shutil.which(self.s5cmd):
            env = {**_clean_env(), **self.env()}
            cmd = [self.s5cmd, "--endpoint-url", self.endpoint, "--log", "error", "cp", f"{local}/", remote.url]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            return
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: self.put(remote, p.relative_to(local).as_posix(), p.read_bytes()), files))


@functools.lru_cache(maxsize=16)
def _multipart_md5(local: Path, sizes: tuple[int, ...], whole_md5: str) -> str:
    """The hex MD5 of the concatenated binary MD5s of ``local``'s consecutive parts of ``sizes``.

    ``whole_md5`` (the file's own MD5) is only part of the cache key: the same
    path with other content is computed afresh.
    """
    digests = b""
    with open(local, "rb") as f:
        for size in sizes:
            part = hashlib.md5()
            while size:
                chunk = f.read(min(size, 8 << 20))
                if not chunk:
                    return ""
                part.update(chunk)
                size -= len(chunk)
            digests += part.digest()
    return hashlib.md5(digests).hexdigest()


def _clean_env() -> dict[str, str]:
    """The current environment without any AWS_/RCLONE_ variable (no developer credentials leak in)."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}


@contextlib.contextmanager
def start(name: str, workdir: Path, s5cmd: str | None = None) -> Iterator[Backend]:
    """Start the server behind backend ``name`` on loopback and yield the backend."""
    if name not in BACKENDS:
        raise SystemExit(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    with BACKENDS[name](workdir, s5cmd) as backend:
        yield backend


@contextlib.contextmanager
def _seaweedfs(workdir: Path, s5cmd: str | None) -> Iterator[Backend]:
    from pos3.testing.servers import seaweedfs

    with seaweedfs(workdir) as server:
        yield S3Backend(server.endpoint, server.access_key, server.secret_key, s5cmd)


@contextlib.contextmanager
def _not_yet(workdir: Path, s5cmd: str | None) -> Iterator[Backend]:
    raise SystemExit(
        "GCS and Azure rows are not implemented yet: add a Backend subclass (fake-gcs-server / Azurite, "
        "rclone remote of type 'google cloud storage' / 'azureblob') and register its start-up here"
    )
    yield  # pragma: no cover


BACKENDS = {"s3": _seaweedfs, "gcs": _not_yet, "azure": _not_yet}
