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
* ``retry_deadline``: seconds within which a failing request is retried (default 120).

Guarantees beyond `pos3.store.ObjectStore`: ``version`` is the object's
generation and ``md5`` its ``md5Hash`` (absent for composite objects);
uploads are single requests up to 8 MiB and resumable uploads above, so no
partial object is ever visible. Integrity: a download is checked by the SDK
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
import importlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pos3.hookspecs import StoreSpec, hookimpl
from pos3.integrity import IntegrityError, md5_hex, retried
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

INSTALL = "pip install pos3[gcs]"
#: The JSON API returns at most this many objects a page.
LIST_PAGE = 1000
#: The JSON API accepts at most this many calls in one batch request.
BATCH = 100
LIST_FIELDS = "items(name,size,generation,md5Hash,updated),nextPageToken"
OPTIONS = {"project", "credentials_file", "page_size", "timeout", "retry_deadline"}
TIMEOUT = 60.0
RETRY_DEADLINE = 120.0


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
        storage = _sdk()
        opts = checked_options(profile, OPTIONS, "GCS")
        self.page_size = int(opts.get("page_size", LIST_PAGE))
        self.timeout = float(opts.get("timeout", TIMEOUT))
        self.retry_deadline = float(opts.get("retry_deadline", RETRY_DEADLINE))
        self.max_workers = max_workers
        self.batch_ok = True  # cleared when the service turns out not to support batch requests
        self._batch_lock = threading.Lock()
        kwargs = self._client_kwargs(profile, opts)
        try:
            self.client = storage.Client(**kwargs)
        except Exception as exc:
            raise _map_error(exc, "Connecting to Google Cloud Storage") from exc
        http = self.client._http  # the client's requests session (created on first access)
        if not getattr(http, "is_mtls", False):
            widen_pool(http, max(10, 2 * max_workers))

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

    def close(self) -> None:
        self.client.close()


class GCSStore(ObjectStore):
    delete_batch_size = BATCH

    def __init__(self, backend: GCSBackend, bucket: str) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.backend = backend
        self.client = backend.client
        self.bucket = backend.client.bucket(bucket)
        deadline = backend.retry_deadline
        # The SDK's backoff (1 s, doubling), started shorter when the deadline is short.
        self.retry = DEFAULT_RETRY.with_timeout(deadline).with_delay(initial=min(1.0, deadline / 10))
        self.timeout = backend.timeout

    def _url(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{key}"

    # -- listing --------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        """Page through the listing (the JSON API lists in UTF-8 byte order);
        a full last page is re-checked once from its last key."""
        size = self.backend.page_size
        start: str | None = None
        last: str | None = None
        while True:
            full = False
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
                for page in it.pages:
                    n = 0
                    for blob in page:
                        n += 1
                        if last is not None and start is not None and blob.name <= last:
                            continue  # start_offset is inclusive
                        last = blob.name
                        yield _meta(blob)
                    full = n >= size
            except Exception as exc:
                raise _map_error(exc, f"Listing {self._url(prefix)}") from exc
            if not full or last is None or start == last:
                return
            start = last  # some servers end early on a full page: ask once more after it

    def head(self, key: str) -> ObjectMeta | None:
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
        try:
            it = self.client.list_blobs(self.bucket, max_results=1, retry=self.retry, timeout=self.timeout)
            next(iter(it), None)
        except Exception as exc:
            err = _map_error(exc, f"Reading gs://{self.bucket.name}")
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(f"No such bucket: gs://{self.bucket.name}") from exc
            raise err from exc

    # -- transfers ------------------------------------------------------------

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        """Stream the object to ``dest`` as stored (no transcoding), checked against its hash.

        A retry resumes from the bytes received, pinned to the first
        response's generation; a checksum mismatch is retried whole.
        ``mtime`` is not reported.
        """
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
        return retried(lambda: self._put(key, src), f"Uploading {self._url(key)}")

    def _put(self, key: str, src: Path) -> ObjectMeta:
        blob = self.bucket.blob(key)
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
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.delete_blob(key, retry=self.retry, timeout=self.timeout)
        except NotFound:
            return  # already gone (or deleted by an earlier attempt of a retry)
        except Exception as exc:
            raise _map_error(exc, f"Deleting {self._url(key)}") from exc
