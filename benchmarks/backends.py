"""Storage backends the benchmark runs against.

A backend knows three things: the environment that points every tool at the
store (``env``), how rclone names a remote path (``rclone_path``), and the
harness's own untimed operations (create buckets, seed a prefix, list and read
objects for verification, edit objects remotely). S3 runs on SeaweedFS on
loopback; GCS on fake-gcs-server and Azure on Azurite (both started through
`pos3.testing.emulators`), where only rclone with 32 transfers and pos3
run (see `Backend.supports` and `Backend.only_tools`). ``s3-gcs`` is both at once,
SeaweedFS as the source and fake-gcs-server as the destination of store-to-store
syncs (`CrossBackend`); each side is an rclone remote of its own name.
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
    rclone_name: str = RCLONE_REMOTE

    @property
    def url(self) -> str:
        """The URL pos3 takes, with a trailing slash (always a prefix, never one object)."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}/"

    @property
    def rclone(self) -> str:
        return f"{self.rclone_name}:{self.bucket}/{self.prefix}"

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
    #: when set, only the tool rows of these names run here (the others are left out of its table)
    only_tools: frozenset[str] | None = None
    #: the small-file count when ``--small-files`` is not given
    default_small_files = 5000
    #: the workloads (see `workloads.Workload.name`) that run here
    workloads: frozenset[str] = frozenset({"small", "large", "listing"})
    #: the rclone remote (``RCLONE_CONFIG_<NAME>_*``) that `env` configures and `remote` names
    rclone_name = RCLONE_REMOTE

    def env(self) -> dict[str, str]:
        """Variables that point rclone, s5cmd, aws and pos3 at this store."""
        raise NotImplementedError

    def remote(self, bucket: str, prefix: str) -> Remote:
        return Remote(self.scheme, bucket, prefix.strip("/"), self.rclone_name)

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
        prefix = f"RCLONE_CONFIG_{self.rclone_name.upper()}_"
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


class _EmulatorBackend(Backend):
    """What the GCS and Azure emulator backends share: rclone-32 and pos3 only, threaded seeding and deletes."""

    supports = frozenset({"rclone", "pos3"})
    only_tools = frozenset({"rclone-32", "pos3"})
    workloads = frozenset({"small", "large"})
    threads = 16

    def seed(self, local: Path, remote: Remote) -> None:
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda p: self.put(remote, p.relative_to(local).as_posix(), p.read_bytes()), files))

    def md5_of(self, remote: Remote, rel: str) -> str:
        digest = hashlib.md5()
        for chunk in self.chunks(remote, rel):
            digest.update(chunk)
        return digest.hexdigest()

    def chunks(self, remote: Remote, rel: str) -> Iterator[bytes]:
        """An object's content in pieces of a few MiB (a 512 MiB object is never held whole)."""
        raise NotImplementedError


class GCSBackend(_EmulatorBackend):
    """GCS through google-cloud-storage (anonymous, as emulators take it); fake-gcs-server in practice.

    A listed object's ``etag`` is its ``md5Hash`` in hex, which fake-gcs-server
    computes from the stored bytes; an object without one is read back.
    pos3 finds the emulator through ``STORAGE_EMULATOR_HOST`` (the SDK's own
    setting), rclone through a ``google cloud storage`` remote whose endpoint
    is the emulator's ``/storage/v1/``.
    """

    name = "gcs"
    scheme = "gs"
    #: fake-gcs-server slows down as a bucket fills: rclone-32 took 41 s to upload 5,000 files (1.7 s for 300)
    default_small_files = 1000

    def __init__(self, endpoint: str, project: str) -> None:
        import requests
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.endpoint = endpoint
        self.project = project
        self.client: Any = storage.Client(
            project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
        )
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.threads * 2)
        self.client._http.mount("http://", adapter)

    def env(self) -> dict[str, str]:
        prefix = f"RCLONE_CONFIG_{self.rclone_name.upper()}_"
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
            prefix + "TYPE": "google cloud storage",
            prefix + "ENDPOINT": self.endpoint + "/storage/v1/",
            prefix + "ANONYMOUS": "true",
        }

    def create_bucket(self, bucket: str) -> None:
        from google.api_core.exceptions import Conflict

        with contextlib.suppress(Conflict):
            self.client.create_bucket(bucket)

    def list(self, remote: Remote) -> Iterator[RemoteObject]:
        import base64

        base = remote.prefix + "/"
        for blob in self.client.list_blobs(remote.bucket, prefix=base, page_size=1000):
            md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else f"no-md5:{blob.etag}"
            yield RemoteObject(blob.name[len(base) :], blob.size or 0, md5, blob.updated.timestamp())

    def read(self, remote: Remote, rel: str) -> bytes:
        return self.client.bucket(remote.bucket).blob(remote.key(rel)).download_as_bytes()

    def chunks(self, remote: Remote, rel: str) -> Iterator[bytes]:
        with self.client.bucket(remote.bucket).blob(remote.key(rel)).open("rb", chunk_size=8 << 20) as f:
            yield from iter(lambda: f.read(8 << 20), b"")

    def put(self, remote: Remote, rel: str, data: bytes) -> None:
        self.client.bucket(remote.bucket).blob(remote.key(rel)).upload_from_string(data)

    def delete(self, remote: Remote, rels: list[str]) -> None:
        bucket = self.client.bucket(remote.bucket)  # fake-gcs-server has no batch requests: one DELETE each
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda rel: bucket.blob(remote.key(rel)).delete(), rels))


class AzureBackend(_EmulatorBackend):
    """Azure Blob through azure-storage-blob; Azurite in practice.

    A listed blob's ``etag`` is its Content-MD5 in hex when it has one (Azurite
    computes it for a single-shot upload and checks one sent with it); a blob
    without one is read back. pos3 finds the emulator through
    ``AZURE_STORAGE_CONNECTION_STRING``, rclone through an ``azureblob`` remote
    with the account URL as its endpoint and the development account's key.
    """

    name = "azure"
    scheme = "az"
    #: at 5,000 files one repetition of the two tools took about 100 s here (both uploads 16-20 s, downloads 22-29 s)
    default_small_files = 1000

    def __init__(self, endpoint: str, account: str, key: str, connection_string: str) -> None:
        from azure.storage.blob import BlobServiceClient

        self.endpoint = endpoint
        self.account = account
        self.key = key
        self.connection_string = connection_string
        self.service: Any = BlobServiceClient.from_connection_string(connection_string)

    def env(self) -> dict[str, str]:
        prefix = f"RCLONE_CONFIG_{self.rclone_name.upper()}_"
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
            prefix + "TYPE": "azureblob",
            prefix + "ACCOUNT": self.account,
            prefix + "KEY": self.key,
            prefix + "ENDPOINT": self.endpoint,
        }

    def _container(self, remote: Remote) -> Any:
        return self.service.get_container_client(remote.bucket)

    def create_bucket(self, bucket: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(bucket)

    def list(self, remote: Remote) -> Iterator[RemoteObject]:
        base = remote.prefix + "/"
        for blob in self._container(remote).list_blobs(name_starts_with=base, results_per_page=1000):
            md5 = blob.content_settings.content_md5
            etag = bytes(md5).hex() if md5 else f"no-md5:{blob.etag}"
            yield RemoteObject(blob.name[len(base) :], blob.size, etag, blob.last_modified.timestamp())

    def read(self, remote: Remote, rel: str) -> bytes:
        return self._container(remote).download_blob(remote.key(rel)).readall()

    def chunks(self, remote: Remote, rel: str) -> Iterator[bytes]:
        yield from self._container(remote).download_blob(remote.key(rel)).chunks()

    def put(self, remote: Remote, rel: str, data: bytes) -> None:
        self._container(remote).upload_blob(remote.key(rel), data, overwrite=True)

    def delete(self, remote: Remote, rels: list[str]) -> None:
        container = self._container(remote)
        for i in range(0, len(rels), 256):
            container.delete_blobs(*[remote.key(rel) for rel in rels[i : i + 256]])


class CrossBackend(Backend):
    """Two stores for store-to-store syncs: ``src`` (read) and ``dst`` (written), each its own rclone remote.

    `env` points every tool at both (pos3 takes S3 from ``AWS_*`` and GCS from
    ``STORAGE_EMULATOR_HOST``; rclone gets the remotes ``src`` and ``dst``); the
    workload seeds ``src`` and verifies ``dst`` through their own backends.
    """

    supports = frozenset({"rclone", "pos3"})
    only_tools = frozenset({"rclone-32", "pos3"})
    workloads = frozenset({"cross"})

    def __init__(self, name: str, src: Backend, dst: Backend) -> None:
        self.name = name
        self.src, self.dst = src, dst
        src.rclone_name, dst.rclone_name = "src", "dst"

    def env(self) -> dict[str, str]:
        return {**self.src.env(), **self.dst.env()}

    def create_bucket(self, bucket: str) -> None:
        self.src.create_bucket(bucket)
        self.dst.create_bucket(bucket)


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
def _fake_gcs(workdir: Path, s5cmd: str | None) -> Iterator[Backend]:
    """fake-gcs-server as the tests run it (in memory; see benchmarks/README.md for why not on disk)."""
    from pos3.testing.emulators import fake_gcs

    with fake_gcs(workdir) as server:
        backend = GCSBackend(server.endpoint, server.project)
        try:
            yield backend
        finally:
            backend.client.close()


@contextlib.contextmanager
def _azurite(workdir: Path, s5cmd: str | None) -> Iterator[Backend]:
    from pos3.testing.emulators import azurite

    with azurite(workdir) as server:
        backend = AzureBackend(server.endpoint, server.account_name, server.account_key, server.connection_string)
        try:
            yield backend
        finally:
            backend.service.close()


@contextlib.contextmanager
def _s3_to_gcs(workdir: Path, s5cmd: str | None) -> Iterator[Backend]:
    with _seaweedfs(workdir / "s3", s5cmd) as src, _fake_gcs(workdir / "gcs", s5cmd) as dst:
        yield CrossBackend("s3-gcs", src, dst)


BACKENDS = {"s3": _seaweedfs, "gcs": _fake_gcs, "azure": _azurite, "s3-gcs": _s3_to_gcs}
