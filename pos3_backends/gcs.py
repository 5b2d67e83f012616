"""The Google Cloud Storage store (google-cloud-storage) for ``gs://bucket/key`` URLs.

Install with ``pip install pos3[gcs]``. With no profile settings the SDK's
standard configuration is honoured unchanged: ``GOOGLE_APPLICATION_CREDENTIALS``
(or any other Application Default Credentials), ``GOOGLE_CLOUD_PROJECT`` and
``STORAGE_EMULATOR_HOST`` (an emulator, used with anonymous credentials).

Profile fields: ``endpoint`` is the JSON API endpoint (``client_options.api_endpoint``);
``public=True`` sends no credentials (`AnonymousCredentials`), for public
buckets and for emulators reached through ``endpoint``; ``region`` is unused.
Profile options:

* ``project``: the project id (billing and defaults; not needed for objects);
* ``credentials_file``: a service-account or other credentials JSON file,
  used instead of Application Default Credentials;
* ``page_size``: objects per list request (default 1000, the service's maximum);
* ``timeout``: seconds one request may wait for the server (default 60);
* ``retry_deadline``: seconds within which a failing request is retried (default 120);
* ``transfer_client``: ``native`` (the default: listings and object bodies through
  `pos3_backends.gcs_native`, one event loop with many requests in flight) or ``sdk``.

Without credentials to load (``public=True``, or ``STORAGE_EMULATOR_HOST`` as the SDK treats
it) the SDK client is built only when a verb needs it (HEAD, deletes, conditional writes,
uploads above 8 MiB, or ``transfer_client="sdk"``).

Guarantees beyond `pos3.store.ObjectStore`: ``version`` is the object's
generation and ``md5`` its ``md5Hash`` (absent for composite objects);
uploads are single requests up to 8 MiB and resumable uploads above, in
`UPLOAD_CHUNK` pieces (16 MiB, as rclone's; the SDK's default, 100 MiB, is
held in memory per upload), so no partial object is ever visible. Integrity: a download is checked by the SDK
against the object's ``x-goog-hash`` (CRC32C, else MD5) and raises on a
mismatch; an upload sends the file's MD5 for the service to check, and the
MD5 the service reports for the stored object is compared with the file's
(an emulator may not check): a mismatching object is deleted (if still that
generation). Either mismatch is retried whole (`pos3.integrity.retried`),
then reported as `pos3.integrity.IntegrityError`. Transient errors (5xx,
429, resets, timeouts) are retried with the SDK's ``DEFAULT_RETRY`` with
backoff; uploads are given it explicitly (the SDK retries uploads only with
a precondition by default). Deletes go in JSON batch requests of 100; a service without batch
support (fake-gcs-server) is detected on first use and served by concurrent
single deletes.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pos3.hookspecs import StoreSpec, hookimpl
from pos3.integrity import IntegrityError, md5_hex, retried, retried_async
from pos3.store import (
    Backend,
    ObjectMeta,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    Throttled,
    batches,
    retry_after,
)

from ._common import b64_to_hex, checked_options, network_error, run_all, undeleted, widen_pool

if TYPE_CHECKING:
    from pos3.profiles import Profile

    from .gcs_native import GCSNative

INSTALL = "pip install pos3[gcs]"
#: The JSON API returns at most this many objects a page.
LIST_PAGE = 1000
#: The JSON API accepts at most this many calls in one batch request.
BATCH = 100
OPTIONS = {"project", "credentials_file", "page_size", "timeout", "retry_deadline", "transfer_client"}
TIMEOUT = 60.0
#: Bytes per request of a resumable upload (a multiple of 256 KiB). Measured on fake-gcs-server with
#: 512 MiB: 100 MiB (the SDK's default) 16.4 s, 250 MiB peak RSS; 32 MiB 17.0 s, 114 MiB; 16 MiB 23.7 s,
#: 82 MiB (rclone-32, 16 MiB chunks: 27 s, 99 MiB).
UPLOAD_CHUNK = 16 * 1024 * 1024
RETRY_DEADLINE = 120.0
DEFAULT_BASE = "https://storage.googleapis.com"


@hookimpl
def pos3_register_stores(register) -> None:
    register(StoreSpec(scheme="gs", connect=GCSBackend, extra="gcs"))


def _sdk() -> Any:
    try:
        return importlib.import_module("google.cloud.storage")
    except ImportError as exc:
        raise ImportError(f"gs:// URLs need google-cloud-storage: {INSTALL}") from exc


def _map_error(exc: Exception, what: str) -> Exception:
    """Translate a google-cloud-storage error into FileNotFoundError / PermissionError / IntegrityError /
    Throttled / StoreError."""
    from google.auth.exceptions import DefaultCredentialsError, RefreshError
    from google.resumable_media.common import DataCorruption

    if isinstance(exc, (FileNotFoundError, PermissionError, StoreError)):
        return exc
    if isinstance(exc, (DefaultCredentialsError, RefreshError)):
        return PermissionError(f"{what}: no usable Google credentials ({exc})")
    if isinstance(exc, DataCorruption):
        return IntegrityError(f"{what}: the bytes received do not match the object's checksum")
    status = getattr(exc, "code", None)
    if not isinstance(status, int):
        status = getattr(getattr(exc, "response", None), "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    if status == 404:
        return FileNotFoundError(f"{what}: not found ({message})")
    if status in (401, 403):
        return PermissionError(f"{what}: access denied ({message})")
    if status in (429, 503):  # beyond the SDK's retries: pos3.wrappers.backoff paces the rest
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return Throttled(f"{what}: HTTP {status}: the service asks to slow down", retry_after(headers))
    return StoreError(f"{what}: {type(exc).__name__}: {message}")


def _meta(blob: Any, key: str | None = None) -> ObjectMeta:
    updated = blob.updated
    return ObjectMeta(
        key if key is not None else blob.name,
        int(blob.size or 0),
        str(blob.generation) if blob.generation is not None else None,
        updated.timestamp() if updated is not None else None,
        b64_to_hex(blob.md5_hash),
    )


class GCSBackend(Backend):
    """One `google.cloud.storage.Client` per profile, with a pool wide enough for every worker."""

    def __init__(self, profile: Profile, max_workers: int) -> None:
        if importlib.util.find_spec("google.cloud.storage") is None:
            _sdk()  # raises the ImportError naming the extra
        opts = checked_options(profile, OPTIONS, "GCS")
        self.page_size = int(opts.get("page_size", LIST_PAGE))
        self.timeout = float(opts.get("timeout", TIMEOUT))
        self.retry_deadline = float(opts.get("retry_deadline", RETRY_DEADLINE))
        self.max_workers = max_workers
        self.batch_ok = True  # cleared when the service turns out not to support batch requests
        self._batch_lock = threading.Lock()
        transfer_client = opts.get("transfer_client", "native")
        if transfer_client not in ("native", "sdk"):
            raise ValueError(f"GCS profile option transfer_client must be 'native' or 'sdk', got {transfer_client!r}")
        self._native_wanted = transfer_client == "native"
        self._native: GCSNative | None = None
        self._native_lock = threading.Lock()
        self._kwargs = self._client_kwargs(profile, opts)
        self._client: Any = None
        self._client_lock = threading.Lock()
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        # Without credentials to load (a public profile, or an emulator as the SDK treats it) the SDK is
        # imported only when a verb needs it: native listings and transfers need no client.
        self.anonymous = profile.public or (emulator is not None and "credentials" not in self._kwargs)
        self.base = _base_url(profile.endpoint or emulator or os.environ.get("API_ENDPOINT_OVERRIDE"))
        if not (self.anonymous and self._native_wanted):
            self.base = _base_url(self.client._connection.API_BASE_URL)

    @property
    def client(self) -> Any:
        """The SDK client (built on first use), its requests pool wide enough for every worker."""
        with self._client_lock:
            if self._client is None:
                storage = _sdk()
                try:
                    client = storage.Client(**self._kwargs)
                except Exception as exc:
                    raise _map_error(exc, "Connecting to Google Cloud Storage") from exc
                http = client._http  # the client's requests session (created on first access)
                if not getattr(http, "is_mtls", False):
                    widen_pool(http, max(10, 2 * self.max_workers))
                self._client = client
            return self._client

    def token(self) -> str | None:
        """A valid OAuth access token for the native path (``None``: anonymous), refreshed when due."""
        if self.anonymous:
            return None
        creds = self.client._credentials
        if not creds.valid:
            from google.auth.transport.requests import Request

            with self._client_lock:
                if not creds.valid:
                    creds.refresh(Request())
        return getattr(creds, "token", None)

    @staticmethod
    def _client_kwargs(profile: Profile, opts: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if "project" in opts:
            kwargs["project"] = opts["project"]
        if profile.endpoint:
            kwargs["client_options"] = {"api_endpoint": profile.endpoint}
        if profile.public:
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
            kwargs.setdefault("project", "<none>")
        elif "credentials_file" in opts:
            import google.auth

            creds, project = google.auth.load_credentials_from_file(str(opts["credentials_file"]))
            kwargs["credentials"] = creds
            if project:
                kwargs.setdefault("project", project)
        return kwargs

    def store(self, bucket: str) -> GCSStore:
        return GCSStore(self, bucket)

    def native(self) -> GCSNative | None:
        """The native transfer engine (started on first use), or None when the profile asks for the SDK."""
        if not self._native_wanted:
            return None
        with self._native_lock:
            if self._native is None:
                from ._http import RetryPolicy
                from .gcs_native import GCSNative

                deadline = self.retry_deadline
                policy = RetryPolicy(attempts=1 << 30, deadline=deadline, first=min(1.0, deadline / 10), cap=60.0)
                connections = max(10, 2 * self.max_workers)
                self._native = GCSNative(self.base, self.token, connections, self.timeout, policy)
            return self._native

    def close(self) -> None:
        with self._native_lock:
            if self._native is not None:
                self._native.close()
                self._native = None
        with self._client_lock:
            if self._client is not None:
                self._client.close()


def _base_url(endpoint: str | None) -> str:
    """The JSON API's base URL (the SDK's rules: a bare ``host:port`` means http)."""
    if not endpoint:
        return DEFAULT_BASE
    return (endpoint if "://" in endpoint else f"http://{endpoint}").rstrip("/")


class GCSStore(ObjectStore):
    delete_batch_size = BATCH

    def __init__(self, backend: GCSBackend, bucket: str) -> None:
        self.backend = backend
        self.name = bucket
        self.timeout = backend.timeout

    @functools.cached_property
    def client(self) -> Any:
        return self.backend.client

    @functools.cached_property
    def bucket(self) -> Any:
        return self.backend.client.bucket(self.name)

    @functools.cached_property
    def retry(self) -> Any:
        """The SDK's backoff (1 s, doubling), started shorter when the deadline is short."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        deadline = self.backend.retry_deadline
        return DEFAULT_RETRY.with_timeout(deadline).with_delay(initial=min(1.0, deadline / 10))

    def _url(self, key: str) -> str:
        return f"gs://{self.name}/{key}"

    # -- listing --------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        """Page through the listing (the JSON API lists in UTF-8 byte order);
        a full last page is re-checked once from its last key."""
        size = self.backend.page_size
        start: str | None = None
        last: str | None = None
        while True:
            full = False
            for page in self._pages(prefix, start, size):
                n = 0
                for meta in page:
                    n += 1
                    if last is not None and start is not None and meta.key <= last:
                        continue  # start_offset is inclusive
                    last = meta.key
                    yield meta
                full = n >= size
            if not full or last is None or start == last:
                return
            start = last  # some servers end early on a full page: ask once more after it

    def _pages(self, prefix: str, start: str | None, size: int) -> Iterator[builtins.list[ObjectMeta]]:
        """The listing's pages from ``start`` (inclusive): natively, else through the SDK."""
        what = f"Listing {self._url(prefix)}"
        native = self.backend.native()
        if native is not None:
            token: str | None = None
            while True:
                page, token = native.list_page(self.name, prefix, size, start, token, what)
                yield page
                if not token:
                    return
        from .gcs_native import LIST_FIELDS

        try:
            it = self.client.list_blobs(
                self.bucket,
                prefix=prefix or None,
                page_size=size,
                start_offset=start,
                fields=LIST_FIELDS,
                timeout=self.timeout,
                retry=self.retry,
            )
            for blobs in it.pages:
                yield [_meta(blob) for blob in blobs]
        except Exception as exc:
            raise _map_error(exc, what) from exc

    def head(self, key: str) -> ObjectMeta | None:
        native = self.backend.native()
        if native is not None:
            meta = native.head(self.name, key, f"Reading {self._url(key)}")
            if meta is None:
                self._check_bucket()  # a missing key is an answer; a missing bucket is an error
            return meta
        blob = self.bucket.blob(key)
        try:
            blob.reload(retry=self.retry, timeout=self.timeout)
        except Exception as exc:
            err = _map_error(exc, f"Reading {self._url(key)}")
            if isinstance(err, FileNotFoundError):
                self._check_bucket()  # a missing key is an answer; a missing bucket is an error
                return None
            raise err from exc
        return _meta(blob, key)

    def _check_bucket(self) -> None:
        """Raise `FileNotFoundError` if the bucket does not exist: a one-object listing answers
        404 then (and needs only the object-listing permission a sync needs anyway)."""
        native = self.backend.native()
        if native is not None:
            try:
                native.list_page(self.name, "", 1, None, None, f"Reading gs://{self.name}")
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"No such bucket: gs://{self.name}") from exc
            return
        try:
            it = self.client.list_blobs(self.bucket, max_results=1, retry=self.retry, timeout=self.timeout)
            next(iter(it), None)
        except Exception as exc:
            err = _map_error(exc, f"Reading gs://{self.name}")
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(f"No such bucket: gs://{self.name}") from exc
            raise err from exc

    # -- transfers ------------------------------------------------------------

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        """A native download (`pos3_backends.gcs_native`): one GET up to 8 MiB, parallel ranges
        above; a checksum mismatch or a changed object is retried whole."""
        native = self.backend.native()
        if native is None:
            return None
        return retried_async(lambda: native.start_get(self.name, key, dest, size))

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        """One native multipart upload for files up to `NATIVE_MAX`; larger ones go through the SDK."""
        native = self.backend.native()
        if native is None:
            return None
        from .gcs_native import NATIVE_MAX  # imported with `native`

        if os.stat(src).st_size > NATIVE_MAX:
            return None
        return retried_async(lambda: native.start_put(self.name, key, src))

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        """Stream the object to ``dest`` as stored (no transcoding), checked against its hash.

        Natively (`start_get`) unless the profile asks for the SDK; through the SDK a
        retry resumes from the bytes received, pinned to the first response's generation.
        A checksum mismatch is retried whole. ``mtime`` is not reported.
        """
        native = self.backend.native() if size is None else None
        if native is not None:  # unknown size (a lease read): small requests, no event loop
            what = f"Downloading {self._url(key)}"
            got = retried(lambda: native.get_now(self.name, key, dest, what), what)
            if got is not None:
                return got
        started = self.start_get(key, dest, size)
        if started is not None:
            return started.result()
        return retried(lambda: self._get(key, dest), f"Downloading {self._url(key)}")

    def _get(self, key: str, dest: Path) -> ObjectMeta:
        blob = self.bucket.blob(key)
        what = f"Downloading {self._url(key)}"
        try:
            with open(dest, "wb") as f:
                blob.download_to_file(f, raw_download=True, retry=self.retry, timeout=self.timeout, checksum="auto")
                size = f.tell()
        except OSError as exc:
            if not network_error(exc):
                raise  # a local disk error
            raise _map_error(exc, what) from exc
        except Exception as exc:
            raise _map_error(exc, what) from exc
        gen = blob.generation
        return ObjectMeta(key, size, str(gen) if gen is not None else None, None, b64_to_hex(blob.md5_hash))

    def put(self, key: str, src: Path) -> ObjectMeta:
        """Upload, then compare the MD5 the service reports with the file's; retried whole on a mismatch."""
        started = self.start_put(key, src)
        if started is not None:
            return started.result()
        return retried(lambda: self._put(key, src), f"Uploading {self._url(key)}")

    def _put(self, key: str, src: Path) -> ObjectMeta:
        blob = self.bucket.blob(key, chunk_size=UPLOAD_CHUNK)
        what = f"Uploading {self._url(key)}"
        md5 = md5_hex(src)
        try:
            blob.upload_from_filename(str(src), checksum="md5", retry=self.retry, timeout=self.timeout)
        except Exception as exc:
            if isinstance(exc, OSError) and not network_error(exc):
                raise  # a local disk error
            err = _map_error(exc, what)
            if isinstance(err, IntegrityError):  # the SDK saw the stored MD5 differ
                self._discard(key, md5)
            raise err from exc
        meta = _meta(blob, key)
        if meta.md5 is not None and meta.md5 != md5:
            self._discard(key, md5)
            raise IntegrityError(f"{what}: the stored object's MD5 {meta.md5} does not match the file (removed)")
        return meta

    def _discard(self, key: str, md5: str) -> None:
        """Delete the object at ``key`` if its MD5 is not ``md5`` (a bad upload), only if
        that generation is still the live one."""
        from google.api_core.exceptions import GoogleAPICallError

        blob = self.bucket.blob(key)
        with contextlib.suppress(GoogleAPICallError):  # gone, or rewritten meanwhile: not ours to remove
            blob.reload(retry=self.retry, timeout=self.timeout)
            if b64_to_hex(blob.md5_hash) != md5:
                blob.delete(if_generation_match=blob.generation, retry=self.retry, timeout=self.timeout)

    conditional_put = True

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """One upload with ``ifGenerationMatch`` (0 for a create, else the generation ``version``)."""
        from google.api_core.exceptions import PreconditionFailed as Refused

        try:
            generation = 0 if version is None else int(version)
        except ValueError:
            raise PreconditionFailed(f"{self._url(key)}: {version!r} is not a generation") from None
        native = self.backend.native()
        if native is not None:
            return native.put_now(self.name, key, data, f"Uploading {self._url(key)}", if_generation=generation)
        blob = self.bucket.blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=generation, checksum="md5", retry=self.retry)
        except Refused:
            raise PreconditionFailed.of(self._url(key), version) from None
        except Exception as exc:
            raise _map_error(exc, f"Uploading {self._url(key)}") from exc
        return _meta(blob, key)

    # -- deletes --------------------------------------------------------------

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in batches; a missing bucket raises `FileNotFoundError` (a missing key does not)."""
        for n, batch in enumerate(batches(keys, BATCH)):
            if n == 0:
                self._check_bucket()  # single deletes would take its 404 for "already gone"
            self._delete_batch(batch)

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        """One batch request; every key it did not clearly delete is deleted on its own."""
        left = self._try_batch(keys) if self.backend.batch_ok and len(keys) > 1 else keys
        run_all(self._delete_one, left, self.backend.max_workers)

    def _try_batch(self, keys: builtins.list[str]) -> builtins.list[str]:
        """Send ``keys`` in one batch request; return the keys still to delete one by one."""
        try:
            with self.client.batch(raise_exception=False) as batch:
                for key in keys:
                    self.bucket.delete_blob(key)
        except Exception:  # noqa: BLE001 - no batch support (or a failed batch): fall back
            with self.backend._batch_lock:
                self.backend.batch_ok = False
            return keys
        responses = getattr(batch, "_responses", None)
        if not isinstance(responses, list) or len(responses) != len(keys):
            return keys
        return undeleted(keys, [r.status_code for r in responses])

    def _delete_one(self, key: str) -> None:
        native = self.backend.native()
        if native is not None:
            native.delete(self.name, key, f"Deleting {self._url(key)}")
            return
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.delete_blob(key, retry=self.retry, timeout=self.timeout)
        except NotFound:
            return  # already gone (or deleted by an earlier attempt of a retry)
        except Exception as exc:
            raise _map_error(exc, f"Deleting {self._url(key)}") from exc
