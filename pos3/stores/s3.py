"""The S3 store (boto3): any S3-compatible service.

Configuration follows boto3's standard chain unless the profile says
otherwise: ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_REGION``, ``~/.aws/config`` and ``~/.aws/credentials``. Profile
options: ``aws_profile``, ``access_key_id``, ``secret_access_key``,
``session_token``, ``addressing_style`` (``path``/``virtual``/``auto``),
``part_size`` (bytes, for multipart transfers), ``transfer_client``
(``"crt"``, the default when ``awscrt`` is installed, or ``"boto3"``).

Requests go through the native CRT client (`s3_crt`): listings, HEADs, object bodies up to the
multipart threshold, conditional writes and deletes. Its endpoint and credentials are resolved
natively when the configuration is plain (`s3_config` states the rule; boto3 is then not even
imported on a no-op sync), else taken from the boto3 client. boto3 moves large and paced bodies.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import io
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..hookspecs import StoreSpec, hookimpl
from ..integrity import (
    IntegrityError,
    TransferInterrupted,
    check_md5,
    multipart_etag,
    retried,
    retried_async,
)
from ..store import (
    PACE_CHUNK,
    Backend,
    ObjectMeta,
    ObjectStore,
    Pace,
    PreconditionFailed,
    StoreError,
    Throttled,
    batches,
    retry_after,
    settle,
)
from . import ranged
from .s3_config import native_config
from .s3_crt import ConditionFailed, EmptyObject, ListPage, md5_from_etag, presigned_base

if TYPE_CHECKING:
    from ..profiles import Profile
    from .s3_crt import CrtTransfers

MiB = 1024 * 1024
#: Objects up to this size move in one request; larger ones in parallel parts.
MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 8 * MiB
#: Attempts per request (boto3's standard retry mode and the CRT's retry strategy), and the
#: seconds a connection may stay silent before the request is abandoned and retried.
MAX_ATTEMPTS = 8
TIMEOUT = 120.0
MAX_PARTS = 10_000
#: Large downloads fetch ranges of at least this size in parallel, streaming each to its offset.
RANGE_PART = 32 * MiB
#: S3 returns at most this many keys a page; a "last" page this full is re-checked.
LIST_PAGE = 1000
#: Error codes saying the bytes the server received do not match the checksum sent with them.
#: Answers that mean "slow down" (retried by `pos3.wrappers.backoff.BackoffStore`).
THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"})
INTEGRITY_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch"})
#: Error codes of a missing bucket / of a missing object.
MISSING_BUCKET = "NoSuchBucket"
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchUpload", "404", "NotFound"})
DENIED_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)


@hookimpl
def pos3_register_stores(register) -> None:
    register(StoreSpec(scheme="s3", connect=S3Backend))


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore `ClientError` ("" for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _throttling_paced(client: Any, max_attempts: int) -> None:
    """Let botocore's standard retries (full jitter, capped at 20 s, with a retry quota) handle every
    error but throttling (429/503), which is retried up to ``max_attempts`` with pos3's policy
    (`pos3.wrappers.backoff.Backoff`: ``Retry-After`` honoured, else full jitter) and no quota; beyond
    that `_map_error` raises `Throttled`, which the mirror's `BackoffStore` keeps pacing."""
    from botocore.retries import standard

    from ..wrappers.backoff import Backoff

    events, uid = client.meta.events, "retry-config-s3"
    events.unregister("needs-retry.s3", unique_id=uid)
    handler = standard.register_retry_handler(client, max_attempts)  # botocore's own, re-created
    events.unregister("needs-retry.s3", unique_id=uid)
    policy = Backoff.from_env()

    def needs_retry(**kwargs: Any) -> float | None:
        response = kwargs.get("response")
        http = response[0] if response else None
        if http is not None and getattr(http, "status_code", None) in (429, 503):
            attempts = int(kwargs.get("attempts") or 1)
            return None if attempts >= max_attempts else policy.delay(attempts - 1, retry_after(http.headers))
        return handler.needs_retry(**kwargs)

    events.register("needs-retry.s3", needs_retry, unique_id=uid)


def _map_error(exc: Exception, what: str) -> Exception:
    """Translate a botocore error into FileNotFoundError / PermissionError / IntegrityError /
    TransferInterrupted / StoreError, by error type and code (never by message); pos3's
    own errors and local disk errors are returned unchanged."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, (FileNotFoundError, PermissionError, StoreError)):
        return exc
    if isinstance(exc, OSError) and not isinstance(exc, (BotoCoreError, ConnectionError)):
        return exc  # a local disk error passes through unchanged
    if isinstance(exc, NoCredentialsError):
        return PermissionError(f"{what}: no AWS credentials found (set AWS_PROFILE or keys, or use a public profile)")
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in NOT_FOUND_CODES or status == 404:
            return FileNotFoundError(f"{what}: not found ({code})")
        if code in DENIED_CODES or status == 403:
            return PermissionError(f"{what}: access denied ({code})")
        if code in INTEGRITY_CODES:
            return IntegrityError(f"{what}: the server received bytes that do not match their checksum ({code})")
        if code in THROTTLE_CODES or status in (429, 503):
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return Throttled(f"{what}: {code or status}: the service asks to slow down", retry_after(headers))
        return StoreError(f"{what}: {code or status}: {exc.response.get('Error', {}).get('Message', '')}")
    if _broken_body(exc):
        return TransferInterrupted(f"{what}: connection broken mid-body ({type(exc).__name__})")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


def _isolated_session(public: bool) -> Any:
    """A botocore session that reads no AWS_* configuration variable (``AWS_PROFILE``,
    ``AWS_REGION``, ``AWS_CONFIG_FILE``...) and no ``~/.aws`` file, and whose only credential
    source is ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (none for a public profile): for
    profiles that set an endpoint, credentials or ``public``. Explicit keys replace the source."""
    import botocore.session
    from botocore.credentials import CredentialResolver, EnvProvider

    blank = {
        name: (config_key, None, os.devnull if name in ("config_file", "credentials_file") else default, convert)
        for name, (config_key, _env, default, convert) in botocore.session.Session.SESSION_VARIABLES.items()
    }
    session = botocore.session.Session(session_vars=blank)
    session.register_component("credential_provider", CredentialResolver([] if public else [EnvProvider()]))
    return session


def _broken_body(exc: Exception) -> bool:
    """A body read that failed after botocore's retries (which cover only the request, not the stream)."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    return isinstance(exc, (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionError))


class S3Backend(Backend):
    """One S3 client per profile, with a pool wide enough for every worker.

    When `pos3.stores.s3_config.native_config` resolves the profile (plain configuration), the
    native CRT client sends listings, HEADs, transfers, conditional writes and deletes, and the boto3
    client is created only when something needs it (paced transfers, objects above the multipart
    threshold, multipart checks, moto). Otherwise the boto3 client is created at once, as the
    source of the endpoint and credentials of both clients."""

    def __init__(self, profile: Profile, max_workers: int) -> None:
        opts = dict(profile.options)
        keys: dict[str, Any] = {}
        for opt, arg in (
            ("access_key_id", "aws_access_key_id"),
            ("secret_access_key", "aws_secret_access_key"),
            ("session_token", "aws_session_token"),
        ):
            if opt in opts:
                keys[arg] = opts.pop(opt)
        aws_profile = opts.pop("aws_profile", None)
        isolated = aws_profile is None and (profile.public or profile.endpoint is not None or bool(keys))
        self.max_attempts = int(opts.pop("max_attempts", MAX_ATTEMPTS))
        self.timeout = float(opts.pop("timeout", TIMEOUT))
        if self.max_attempts < 1 or self.timeout <= 0:
            raise ValueError("S3 profile options max_attempts and timeout must be positive")
        addressing = opts.pop("addressing_style", "auto")
        self.part_size = int(opts.pop("part_size", DEFAULT_PART_SIZE))
        transfer_client = opts.pop("transfer_client", "crt")
        ca_bundle = opts.pop("ca_bundle", None)
        if ca_bundle is not None and not os.path.isfile(os.path.expanduser(str(ca_bundle))):
            raise ValueError(f"S3 profile option ca_bundle: no such file: {ca_bundle}")
        self.ca_bundle = os.path.expanduser(str(ca_bundle)) if ca_bundle is not None else None
        if transfer_client not in ("crt", "boto3"):
            raise ValueError(f"S3 profile option transfer_client must be 'crt' or 'boto3', got {transfer_client!r}")
        if opts:
            raise ValueError(f"Unknown S3 profile options: {', '.join(sorted(opts))}")
        self.max_workers = max_workers
        self._profile, self._keys, self._aws_profile = profile, keys, aws_profile
        self._isolated, self._addressing, self._public = isolated, addressing, profile.public
        self._client: Any = None
        self._session: Any = None
        self._client_lock = threading.Lock()
        self._crt_wanted = transfer_client == "crt"
        self.native = (
            native_config(profile.endpoint, profile.region, profile.public, profile.options, isolated)
            if self._crt_wanted
            else None
        )
        if self.native is None:
            self._connect()  # the source of configuration (and of the missing-credentials error)
        # Checksums of native downloads are computed here, not on the CRT's event-loop threads.
        self.verifier = ThreadPoolExecutor(max_workers=max(2, max_workers), thread_name_prefix="pos3-s3-verify")
        self._crt: CrtTransfers | None = None
        self._crt_lock = threading.Lock()
        self._intercepted = BotocoreIntercepts()

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use."""
        with self._client_lock:
            if self._client is None:
                self._connect()
            return self._client

    def _connect(self) -> None:
        """Create the boto3 session and client from the profile (botocore's chain unless isolated)."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        profile, isolated = self._profile, self._isolated
        session = boto3.session.Session(
            botocore_session=_isolated_session(profile.public) if isolated else None,
            profile_name=self._aws_profile,
            **({} if profile.public else self._keys),
        )
        if isolated and not profile.public and session.get_credentials() is None:
            raise ValueError(
                f"S3 profile {profile.local_name!r} (endpoint {profile.endpoint}) has no credentials: give "
                "access_key and secret_key (or a credentials_file), public=True or aws_profile, "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        config = Config(
            max_pool_connections=max(10, 2 * self.max_workers),
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            s3={"addressing_style": self._addressing},
            signature_version=UNSIGNED if profile.public else None,
            connect_timeout=min(10, self.timeout),
            read_timeout=self.timeout,
            tcp_keepalive=True,
            ignore_configured_endpoint_urls=True if isolated else None,
        )
        kwargs: dict[str, Any] = {"config": config}
        if self.ca_bundle:
            kwargs["verify"] = self.ca_bundle
        if profile.endpoint:
            kwargs["endpoint_url"] = profile.endpoint
        if profile.region:
            kwargs["region_name"] = profile.region
        client = session.client("s3", **kwargs)
        _throttling_paced(client, self.max_attempts)
        self._session, self._client = session, client

    def crt(self) -> CrtTransfers | None:
        """The native transfer client, created on first use; None when unavailable or not wanted,
        or while botocore's requests are answered in-process (moto's ``mock_aws``)."""
        if not self._crt_wanted or self._intercepted():
            return None
        with self._crt_lock:
            if self._crt is None and self._crt_wanted:
                try:
                    self._crt = self._new_crt()
                except ImportError:
                    self._crt_wanted = False  # boto3 does the transfers (and reports missing credentials)
            return self._crt

    def _new_crt(self) -> CrtTransfers:
        """The CRT client, configured natively or from the boto3 client (ImportError: not possible)."""
        from .s3_crt import CrtTransfers

        args = (self.part_size, self.max_attempts, self.timeout)
        if self.native is not None:
            native = self.native
            creds = native.credentials
            return CrtTransfers(native.region, native.https, creds, self._bucket_base, *args, native.ca_bundle)
        client = self.client
        https = urlsplit(client.meta.endpoint_url).scheme == "https"
        region = client.meta.region_name or "us-east-1"
        ca_bundle = self.ca_bundle or self._session._session.get_config_variable("ca_bundle")  # botocore's trust
        if self._public:
            return CrtTransfers(region, https, None, self._bucket_base, *args, ca_bundle)
        credentials = self._session.get_credentials()
        if credentials is None:
            raise ImportError("no credentials to sign with")

        def current() -> tuple[str, str, str | None]:
            frozen = credentials.get_frozen_credentials()  # refreshes expiring credentials
            return frozen.access_key, frozen.secret_key, frozen.token

        return CrtTransfers(region, https, current, self._bucket_base, *args, ca_bundle)

    def _bucket_base(self, bucket: str) -> tuple[str, str]:
        """(host, path prefix) of ``bucket``'s objects: natively when the rule allows, else as boto3 addresses them."""
        found = self.native.bucket_base(bucket) if self.native is not None else None
        return found if found is not None else presigned_base(self.client, bucket)

    def store(self, bucket: str) -> S3Store:
        return S3Store(self, bucket)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.verifier.shutdown(wait=False)


class BotocoreIntercepts:
    """Whether an enabled ``before-send`` handler is installed for every botocore client, as
    moto's ``mock_aws`` does to answer requests in-process: the CRT would bypass it (and reach the
    network), so boto3 moves the bytes instead. A handler with ``enabled = False`` (moto imported,
    no mock active) does not count; without botocore imported there is none. Asked once per
    request, so botocore's ~130 built-in handlers are searched again only when their list changes."""

    def __init__(self) -> None:
        self._seen = -1
        self._senders: builtins.list[Any] = []

    def __call__(self) -> bool:
        handlers = sys.modules.get("botocore.handlers")
        if handlers is None:
            return False
        builtin = handlers.BUILTIN_HANDLERS
        if len(builtin) != self._seen:
            self._senders = [h[1] for h in builtin if h[0].startswith("before-send")]
            self._seen = len(builtin)
        return any(getattr(h, "enabled", True) for h in self._senders)


class S3Store(ObjectStore):
    delete_batch_size = 1000

    def __init__(self, backend: S3Backend, bucket: str, down: Pace | None = None, up: Pace | None = None) -> None:
        self.backend = backend
        self.bucket = bucket
        self._down, self._up = down, up

    @property
    def client(self) -> Any:
        """The backend's boto3 client (created on first use)."""
        return self.backend.client

    def paced(self, down: Pace | None, up: Pace | None) -> S3Store:
        """A paced view: a paced direction moves bodies through boto3 in chunks (never the CRT)."""
        if up is not None:
            self.client.meta.events.register("before-send.s3", _arm_paced_body, unique_id="pos3-paced-body")
        return S3Store(self.backend, self.bucket, down, up)

    def _body(self, data: bytes) -> bytes | io.BytesIO:
        """A request body for ``data``: paced while it is sent when uploads are paced."""
        return data if self._up is None else _PacedBody(data, self._up)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        token: str | None = None
        start_after: str | None = None
        rechecked = False
        while True:
            page = self._list_page(prefix, token, start_after)
            yield from page.objects
            if page.truncated:
                token, start_after, rechecked = page.next_token, None, False
                continue
            # A full page that claims to be the last is not proof of the end
            # (some servers stop early): ask once more after its last key.
            if page.objects and len(page.objects) >= min(page.max_keys, LIST_PAGE) and not rechecked:
                token, start_after, rechecked = None, page.objects[-1].key, True
                continue
            return

    def _list_page(self, prefix: str, token: str | None, start_after: str | None) -> ListPage:
        crt = self.backend.crt()
        if crt is not None:
            return retried(
                lambda: crt.list_page(self.bucket, prefix, token, start_after), f"Listing {self._url(prefix)}"
            )
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if token is not None:
            args["ContinuationToken"] = token
        if start_after is not None:
            args["StartAfter"] = start_after
        try:
            page = self.client.list_objects_v2(**args)
        except Exception as exc:
            raise _map_error(exc, f"Listing {self._url(prefix)}") from exc
        objects = []
        for obj in page.get("Contents", []):
            etag = obj.get("ETag", "").strip('"') or None
            objects.append(
                ObjectMeta(obj["Key"], obj["Size"], etag, obj["LastModified"].timestamp(), md5_from_etag(etag))
            )
        return ListPage(
            objects, page.get("IsTruncated", False), page.get("NextContinuationToken"), page.get("MaxKeys", LIST_PAGE)
        )

    def head(self, key: str) -> ObjectMeta | None:
        crt = self.backend.crt()
        if crt is not None:
            try:
                return retried(lambda: crt.head(self.bucket, key), f"Reading {self._url(key)}")
            except FileNotFoundError:
                self._check_bucket()  # a missing key is an answer, a missing bucket an error
                return None
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            err = _map_error(exc, f"Reading {self._url(key)}")
            if isinstance(err, FileNotFoundError):
                # A missing key is an answer, a missing bucket an error. A HEAD answer has
                # no body, hence no error code: ask the bucket (raises if it is missing).
                self._check_bucket()
                return None
            raise err from exc
        etag = r.get("ETag", "").strip('"') or None
        return ObjectMeta(key, r["ContentLength"], etag, r["LastModified"].timestamp(), md5_from_etag(etag))

    def _check_bucket(self) -> None:
        """Raise `FileNotFoundError` if the bucket does not exist (or the mapped error of the request)."""
        crt = self.backend.crt()
        if crt is not None:
            try:
                retried(lambda: crt.head_bucket(self.bucket), f"Reading s3://{self.bucket}")
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"No such bucket: s3://{self.bucket} ({MISSING_BUCKET})") from exc
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            err = _map_error(exc, f"Reading s3://{self.bucket}")
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(f"No such bucket: s3://{self.bucket} ({MISSING_BUCKET})") from exc
            raise err from exc

    def _verify(self, key: str, dest: Path, meta: ObjectMeta) -> ObjectMeta:
        """Check a downloaded file against its ETag: the MD5 of a single-part object, or the
        MD5 of the parts' MD5s of a multipart one (its part size read with one HEAD)."""
        what = f"Downloading {self._url(key)}"
        if meta.md5 is not None:
            check_md5(dest, meta.md5, what)
        elif meta.version and _multipart(meta.version):
            part = self._part_size(key, meta.version)
            if part is not None and multipart_etag(dest, part) != meta.version.lower():
                raise IntegrityError(f"{what}: content does not match the multipart ETag {meta.version}")
        return meta

    def _part_size(self, key: str, etag: str) -> int | None:
        """The size of part 1 of the multipart object ``key`` (still at ``etag``), or None if
        unknown (a server without ``partNumber`` support, or the object rewritten meanwhile)."""
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key, PartNumber=1, IfMatch=f'"{etag}"')
        except Exception as exc:
            err = _map_error(exc, f"Reading {self._url(key)}")
            if isinstance(err, (FileNotFoundError, PermissionError)) or err is exc:
                raise err from exc
            return None
        return int(r["ContentLength"]) if r.get("PartsCount") else None

    def _native(self, size: int | None) -> CrtTransfers | None:
        """The CRT client for an object of this size: single-request sizes only; empty and large
        objects go through boto3 (one plain GET; parallel ranges that stream to disk)."""
        if size is None or not 0 < size <= MULTIPART_THRESHOLD or self._down is not None:
            return None
        return self.backend.crt()

    def _start_native_get(self, crt: CrtTransfers, key: str, dest: Path) -> Future[ObjectMeta]:
        """One native download, verified against the MD5 of its body as it was written, or
        (a multipart ETag, a body out of order) by reading the file on the verifier threads."""
        out: Future[ObjectMeta] = Future()

        def landed(got: Future[tuple[ObjectMeta, str | None]]) -> None:
            try:
                meta, md5 = got.result()
                if meta.md5 is None or md5 is None:
                    verified = self.backend.verifier.submit(self._verify, key, dest, meta)
                    verified.add_done_callback(lambda v: settle(out, v))
                    return
                if md5 != meta.md5:
                    what = f"Downloading {self._url(key)}"
                    raise IntegrityError(f"{what}: content MD5 {md5} does not match the store's {meta.md5}")
                out.set_result(meta)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting side
                out.set_exception(exc)

        crt.start_get(self.bucket, key, dest).add_done_callback(landed)
        return out

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        crt = self._native(size)
        if crt is None:
            return None
        return retried_async(lambda: self._start_native_get(crt, key, dest))

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        crt = self.backend.crt() if self._up is None else None
        size = os.stat(src).st_size
        if crt is None or size > MULTIPART_THRESHOLD:
            return None
        return retried_async(lambda: crt.start_put(self.bucket, key, src, size))

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        """Download and verify against the ETag; a mismatch or a cut body is retried whole."""
        return retried(lambda: self._get_verified(key, dest, size), f"Downloading {self._url(key)}")

    def _get_verified(self, key: str, dest: Path, size: int | None) -> ObjectMeta:
        if not size and self._down is None and self.backend.crt() is not None:
            # Unknown or empty: one native HEAD tells (an empty object needs no GET).
            head = self.head(key)
            if head is None:
                raise FileNotFoundError(f"Downloading {self._url(key)}: not found (NoSuchKey)")
            if head.size == 0:
                dest.write_bytes(b"")
                return self._verify(key, dest, head)
            size = head.size
        crt = self._native(size)
        if crt is not None:
            try:
                return self._start_native_get(crt, key, dest).result()
            except EmptyObject:
                pass  # emptied since it was listed: one plain GET below
        try:
            return self._get(key, dest)
        except Exception as exc:
            err = _map_error(exc, f"Downloading {self._url(key)}")
            if err is exc:
                raise
            raise err from exc

    def _get(self, key: str, dest: Path) -> ObjectMeta:
        """Download ``key`` into ``dest`` and check it against its ETag while it lands: ranges of a
        large object in parallel, pinned to the first answer's ETag (``If-Match``), written with
        ``pwrite`` into one preallocated descriptor (see `ranged`)."""
        part = max(self.backend.part_size, RANGE_PART)
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{part - 1}")
        except Exception as exc:
            if _code(exc) != "InvalidRange":  # an empty object has no byte 0
                raise
            r = self.client.get_object(Bucket=self.bucket, Key=key)
        etag = r.get("ETag", "").strip('"') or None
        total = int(r["ContentRange"].rsplit("/", 1)[1]) if "ContentRange" in r else r["ContentLength"]
        meta = ObjectMeta(key, total, etag, r["LastModified"].timestamp(), md5_from_etag(etag))
        pin = {"IfMatch": f'"{etag}"'} if etag else {}
        parts: list[int] = []  # the multipart part size, once known

        def fetch(start: int, end: int) -> Any:
            return self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}", **pin)["Body"]

        def segments() -> list[tuple[int, int]]:
            """The spans whose MD5s the ETag is made of (none when it cannot be checked)."""
            if meta.md5 is not None:
                return [(0, total)]
            size = self._part_size(key, etag) if etag and _multipart(etag) else None
            if not size:
                return []
            parts.append(size)
            return [(start, min(start + size, total)) for start in range(0, total, size)]

        fd = ranged.open_sized(dest, total)
        try:
            first = (r["Body"], r["ContentLength"])
            threads = min(8, self.backend.max_workers)
            digests = ranged.download(fd, total, first, fetch, part, threads, segments, self._down)
        finally:
            os.close(fd)
        _check_digests(f"Downloading {self._url(key)}", meta, digests, bool(parts))
        return meta

    def put(self, key: str, src: Path) -> ObjectMeta:
        """Upload with a checksum the server checks (Content-MD5, or per-part checksums);
        a multipart result is checked against its ETag. A mismatch is retried whole."""
        return retried(lambda: self._put(key, src), f"Uploading {self._url(key)}")

    def _put(self, key: str, src: Path) -> ObjectMeta:
        size = os.stat(src).st_size
        crt = self.backend.crt() if self._up is None else None
        if crt is not None:
            # The multipart ETag to expect, hashed while the parts travel (the CRT cuts them at part_size).
            parts = max(self.backend.part_size, -(-size // MAX_PARTS))
            expected = self.backend.verifier.submit(multipart_etag, src, parts) if size > MULTIPART_THRESHOLD else None
            try:
                meta = crt.start_put(self.bucket, key, src, size).result()
            except BaseException:
                if expected is not None:
                    expected.cancel()
                raise
            if meta.version is None:  # some servers answer a multipart completion without the header
                meta = self.head(key) or meta
            if expected is not None:
                self._check_uploaded(key, src, meta, expected.result())
            return meta
        try:
            if size <= MULTIPART_THRESHOLD:
                with open(src, "rb") as f:
                    data = f.read()
                md5 = hashlib.md5(data, usedforsecurity=False)
                checksum = base64.b64encode(md5.digest()).decode()
                r = self.client.put_object(Bucket=self.bucket, Key=key, Body=self._body(data), ContentMD5=checksum)
                etag = r["ETag"].strip('"')
            else:
                etag = self._put_multipart(key, src, size)
        except Exception as exc:
            err = _map_error(exc, f"Uploading {self._url(key)}")
            if err is exc:
                raise
            raise err from exc
        return ObjectMeta(key, size, etag, None, md5_from_etag(etag))

    def _put_multipart(self, key: str, src: Path, size: int) -> str:
        part = max(self.backend.part_size, -(-size // MAX_PARTS))
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

        def send(number: int) -> dict[str, Any]:
            with open(src, "rb") as f:
                f.seek((number - 1) * part)
                data = f.read(part)
            md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
            r = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=self._body(data),
                ContentMD5=md5,
            )
            return {"PartNumber": number, "ETag": r["ETag"]}

        try:
            with ThreadPoolExecutor(max_workers=min(8, self.backend.max_workers)) as pool:
                parts = list(pool.map(send, range(1, -(-size // part) + 1)))
            r = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return r["ETag"].strip('"')

    conditional_put = True

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """One PutObject with ``If-None-Match: *`` (create) or ``If-Match: "<etag>"`` (update)."""
        md5 = hashlib.md5(data, usedforsecurity=False)
        cond = {"IfNoneMatch": "*"} if version is None else {"IfMatch": f'"{version}"'}
        crt = self.backend.crt()
        if crt is not None:
            header = ("If-None-Match", "*") if version is None else ("If-Match", f'"{version}"')
            try:
                return crt.put_bytes(self.bucket, key, data, [header])
            except ConditionFailed:
                raise PreconditionFailed.of(self._url(key), version) from None
        try:
            r = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=base64.b64encode(md5.digest()).decode(), **cond
            )
        except Exception as exc:
            if _precondition_failed(exc):
                raise PreconditionFailed.of(self._url(key), version) from None
            raise _map_error(exc, f"Uploading {self._url(key)}") from exc
        etag = r["ETag"].strip('"')
        return ObjectMeta(key, len(data), etag, None, md5_from_etag(etag))

    def _check_uploaded(self, key: str, src: Path, meta: ObjectMeta, expected: str | None = None) -> None:
        """Compare a multipart upload's ETag with the file's (``expected``, if hashed already at the
        part size the upload should have used; else hashed at the stored part 1's size); a mismatch
        deletes the bad object (unless rewritten meanwhile) and raises `IntegrityError`."""
        if not meta.version or not _multipart(meta.version) or expected == meta.version.lower():
            return
        part = self._part_size(key, meta.version)
        if part is None or multipart_etag(src, part) == meta.version.lower():
            return
        with contextlib.suppress(Exception):
            head = self.head(key)
            if head is not None and head.version == meta.version:
                self._delete_batch([key])
        raise IntegrityError(f"Uploading {self._url(key)}: the stored object does not match the file (removed)")

    def delete(self, keys: Iterable[str]) -> None:
        for batch in batches(keys, self.delete_batch_size):
            self._delete_batch(batch)

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        crt = self.backend.crt()
        if crt is not None:
            what = f"Deleting {len(keys)} objects from s3://{self.bucket}"
            failed = retried(lambda: crt.delete_objects(self.bucket, keys), what)
            self._raise_undeleted([{"Key": k, "Code": c} for k, c in failed])
            return
        try:
            r = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        except Exception as exc:
            raise _map_error(exc, f"Deleting {len(keys)} objects from s3://{self.bucket}") from exc
        self._raise_undeleted(r.get("Errors", []))

    def _raise_undeleted(self, errors: builtins.list[dict[str, Any]]) -> None:
        """`StoreError` naming the keys a DeleteObjects did not delete, if any."""
        if errors:
            detail = "; ".join(f"{e.get('Key')}: {e.get('Code')}" for e in errors[:10])
            raise StoreError(f"Could not delete {len(errors)} objects from s3://{self.bucket}: {detail}")


def _precondition_failed(exc: Exception) -> bool:
    """True for a conditional write's refusal: 412, or 409 ConditionalRequestConflict (a concurrent one won)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


def _check_digests(what: str, meta: ObjectMeta, digests: builtins.list[bytes], multipart: bool) -> None:
    """Raise `IntegrityError` unless ``digests`` (the content's MD5, or its parts' MD5s when
    ``multipart``) make ``meta``'s ETag; nothing is checked when neither applies."""
    if meta.md5 is not None and digests[0].hex() != meta.md5:
        raise IntegrityError(f"{what}: content MD5 {digests[0].hex()} does not match the store's {meta.md5}")
    if multipart and meta.version:
        combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        if f"{combined}-{len(digests)}" != meta.version.lower():
            raise IntegrityError(f"{what}: content does not match the multipart ETag {meta.version}")


def _multipart(etag: str) -> bool:
    """An ETag of the form ``<md5 hex>-<parts>``."""
    digest, dash, parts = etag.partition("-")
    return bool(dash) and len(digest) == 32 and parts.isdigit()


class _PacedBody(io.BytesIO):
    """A request body that charges ``pace`` for each read once armed: botocore reads a body
    to hash it before sending, and `_arm_paced_body` arms it only when it is being sent."""

    def __init__(self, data: bytes, pace: Pace) -> None:
        super().__init__(data)
        self.pace, self.armed = pace, False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.armed:
            for start in range(0, len(data), PACE_CHUNK):
                self.pace(min(PACE_CHUNK, len(data) - start))
        return data


def _arm_paced_body(request: Any, **_: Any) -> None:
    """botocore's ``before-send`` hook: from now on a paced body is on the wire (a checksum
    wrapper around it keeps it as ``_raw``)."""
    body = request.body
    for _depth in range(3):
        if isinstance(body, _PacedBody):
            body.armed = True
            return
        body = getattr(body, "_raw", None)
