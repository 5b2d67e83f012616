"""The Azure Blob Storage store (azure-storage-blob) for ``az://container/key`` URLs.

Install with ``pip install pos3[azure]`` (azure-storage-blob and azure-identity).
With no profile settings the SDK's standard configuration is honoured:
``AZURE_STORAGE_CONNECTION_STRING`` when set, else nothing is guessed and the
profile must name the account.

Profile fields: ``endpoint`` is the account URL
(``https://ACCOUNT.blob.core.windows.net``, or ``http://127.0.0.1:10000/devstoreaccount1``
for Azurite); ``public=True`` sends no credential (anonymous reads of a public
container); ``region`` is unused. Profile options:

* ``connection_string``: a full connection string (account URL and credential);
* ``account_name``: the account (its URL is ``https://NAME.blob.core.windows.net``
  unless ``endpoint`` says otherwise);
* ``account_key``: a shared key for the account;
* ``sas_token``: a shared access signature;
* ``credential``: any credential object azure-storage-blob accepts
  (for example an ``azure.identity`` credential);
* ``page_size``: blobs per list request (default 5000, the service's maximum);
* ``timeout``: seconds one request may wait for the server (default 120);
* ``max_attempts``: tries per request, first one included (default 7);
* ``retry_backoff``: seconds before the first retry, doubling for each next one (default 1);
* ``transfer_client``: ``native`` (the default: downloads, and uploads up to 8 MiB, through
  `pos3_backends.azure_native`, one event loop with many requests in flight) or ``sdk``.

An account URL without ``account_key``, ``sas_token`` or ``credential`` is
used with ``azure.identity.DefaultAzureCredential`` (environment, workload or
managed identity, Azure CLI login ...).

Guarantees beyond `pos3.store.ObjectStore`: ``version`` is the blob's ETag and
``md5`` its Content-MD5, which every upload sets from the file; uploads are one
Put Blob up to 64 MiB and staged blocks committed in one Put Block List above,
so no partial blob is ever visible; downloads of large blobs fetch ranges in
parallel pinned to the first response's ETag; deletes go in batches of 256
(an account without batch support, such as one with a hierarchical
namespace, falls back to concurrent single deletes). Transient errors (5xx,
``ServerBusy``, resets, timeouts) are retried by the SDK's retry policy
with exponential back-off (1, 2, 4 ... 32 s: about a minute in all). Integrity: every upload
request carries the Content-MD5 of its bytes, which the service checks; a
download is compared with the blob's Content-MD5. A mismatch either way is
retried whole, then reported as `pos3.integrity.IntegrityError`.

Listings come out in UTF-8 byte order, as the sync engine prefers: the
service documents only "alphabetical order", and Azurite sorts by UTF-16 code
unit, which differs for keys with characters above U+FFFF; such keys are held
back just until every key that sorts before them has been listed (every other
key streams straight through). A listing in any other order is passed on as
it comes, for the sync engine to detect and sort.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.util
import os
import random
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pos3.hookspecs import StoreSpec, hookimpl
from pos3.integrity import IntegrityError, check_md5, retried, retried_async
from pos3.local import md5_digest
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

from ._common import MiB, b64_to_hex, checked_options, network_error, run_all, undeleted, utf8_order, widen_pool

if TYPE_CHECKING:
    from pos3.profiles import Profile

    from ._aio import Engine
    from ._http import SmallRequests
    from .azure_native import AzureNative

INSTALL = "pip install pos3[azure]"
LIST_PAGE = 5000
#: The Blob Batch API accepts at most this many sub-requests.
BATCH = 256
STORAGE_SCOPE = "https://storage.azure.com/.default"
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
OPTIONS = {
    "connection_string",
    "account_name",
    "account_key",
    "sas_token",
    "credential",
    "page_size",
    "timeout",
    "max_attempts",
    "retry_backoff",
    "transfer_client",
}
TIMEOUT = 120.0
MAX_ATTEMPTS = 7
RETRY_BACKOFF = 1.0
#: Error codes of an upload whose bytes did not match the Content-MD5 sent with them
#: (``InvalidOperation`` is Azurite's code for it).
INTEGRITY_CODES = frozenset({"Md5Mismatch", "Crc64Mismatch", "InvalidOperation"})
CREDENTIAL_OPTIONS = ("connection_string", "account_key", "sas_token", "credential")


@hookimpl
def pos3_register_stores(register) -> None:
    register(StoreSpec(scheme="az", connect=AzureBackend, extra="azure"))


def _sdk() -> Any:
    try:
        return importlib.import_module("azure.storage.blob")
    except ImportError as exc:
        raise ImportError(f"az:// URLs need azure-storage-blob: {INSTALL}") from exc


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status


def _code(exc: Exception) -> str:
    """The service's error code (``x-ms-error-code``), whether the SDK gives a str or a `StorageErrorCode`."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _map_error(exc: Exception, what: str) -> Exception:
    """Translate an azure-core error into FileNotFoundError / PermissionError / IntegrityError /
    Throttled / StoreError."""
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(exc, (FileNotFoundError, PermissionError, StoreError)):
        return exc
    code = _code(exc)
    status = _status(exc)
    reason = code or type(exc).__name__
    if status == 404 or code.endswith("NotFound"):
        return FileNotFoundError(f"{what}: not found ({reason})")
    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
        return PermissionError(f"{what}: access denied ({reason})")
    if status == 400 and code in INTEGRITY_CODES:
        return IntegrityError(f"{what}: the service received bytes that do not match their Content-MD5 ({code})")
    message = str(exc).splitlines()[0] if str(exc) else ""
    if status in (429, 503) or code == "ServerBusy":  # beyond the SDK's retries: pos3.wrappers.backoff paces the rest
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return Throttled(f"{what}: {reason}: the service asks to slow down", retry_after(headers))
    return StoreError(f"{what}: {reason}: {message}")


def _container_missing(exc: Exception) -> bool:
    return _code(exc) == "ContainerNotFound"


def _etag(value: str | None) -> str | None:
    return value.strip('"') or None if value else None


def _meta(key: str, props: Any) -> ObjectMeta:
    modified = props.last_modified
    return ObjectMeta(
        key,
        int(props.size or 0),
        _etag(props.etag),
        modified.timestamp() if modified is not None else None,
        b64_to_hex(props.content_settings.content_md5 if props.content_settings else None),
    )


class AzureBackend(Backend):
    """One `BlobServiceClient` per profile over one requests session, pooled for every worker."""

    def __init__(self, profile: Profile, max_workers: int) -> None:
        if importlib.util.find_spec("azure.storage.blob") is None:
            _sdk()  # raises the ImportError naming the extra
        opts = checked_options(profile, OPTIONS, "Azure")
        self.page_size = int(opts.pop("page_size", LIST_PAGE))
        timeout = float(opts.pop("timeout", TIMEOUT))
        attempts = int(opts.pop("max_attempts", MAX_ATTEMPTS))
        backoff = float(opts.pop("retry_backoff", RETRY_BACKOFF))
        if timeout <= 0 or attempts < 1 or backoff < 0:
            raise ValueError("Azure profile options timeout, max_attempts and retry_backoff must be positive")
        transfer_client = opts.pop("transfer_client", "native")
        if transfer_client not in ("native", "sdk"):
            raise ValueError(f"Azure profile option transfer_client must be 'native' or 'sdk', got {transfer_client!r}")
        self._engine: Engine | None = None
        self._small: SmallRequests | None = None
        self._native_lock = threading.Lock()
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_workers = max_workers
        self.batch_ok = True
        self._batch_lock = threading.Lock()
        self._profile, self._opts = profile, opts
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._native_wanted = transfer_client == "native"
        # (account URL, auth) when the native path can serve the profile without the SDK's help:
        # the SDK is then imported only when a verb needs it.
        self.native_config = _native_config(profile, opts) if self._native_wanted else None
        if self.native_config is None:
            self.client  # noqa: B018 - built now: configuration errors surface at connect

    @property
    def client(self) -> Any:
        """The SDK's `BlobServiceClient` (built on first use) over one pooled requests session."""
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> Any:
        blob = _sdk()
        import requests
        from azure.core.pipeline.transport import RequestsTransport

        timeout = self.timeout
        self.session = requests.Session()
        widen_pool(self.session, max(10, 2 * self.max_workers))
        config: dict[str, Any] = {
            # Timeouts go to the transport itself: a given transport ignores the client's.
            "transport": RequestsTransport(
                session=self.session,
                session_owner=False,
                connection_timeout=min(20, timeout),
                read_timeout=timeout,
            ),
            "retry_policy": _retry_policy(blob, self.attempts, self.backoff),
            "connection_timeout": min(20, timeout),
            "read_timeout": timeout,
            "max_block_size": 8 * MiB,
            "max_chunk_get_size": 8 * MiB,
        }
        return _service_client(blob, self._profile, self._opts, config)

    def store(self, bucket: str) -> AzureStore:
        return AzureStore(self, bucket)

    def container_url(self, container: str) -> str:
        """The container's URL without any SAS query."""
        if self.native_config is not None:
            return f"{self.native_config[0]}/{container}"
        return str(self.client.get_container_client(container).url).split("?", 1)[0].rstrip("/")

    def native(self, container: str) -> AzureNative | None:
        """Native transfers for ``container`` (the engine starts on first use), or None when the
        profile asks for the SDK or its credential is of a kind only the SDK can use."""
        if not self._native_wanted:
            return None
        from .azure_native import API_VERSION, AzureNative, native_auth

        if self.native_config is not None:
            auth, version = self.native_config[1], API_VERSION
        else:
            auth, version = native_auth(self.client.credential), self.client.api_version
            query = urlsplit(self.client.get_container_client(container).url).query
            if auth == "" and query:
                auth = query  # a SAS in the account URL
        if auth is None:
            return None
        from ._aio import Engine
        from ._http import RetryPolicy, SmallRequests

        policy = RetryPolicy(attempts=self.attempts, deadline=float("inf"), first=self.backoff, cap=60.0)
        with self._native_lock:
            if self._engine is None or self._small is None:
                self._engine = Engine(max(10, 2 * self.max_workers), self.timeout)
                self._small = SmallRequests(self.timeout, policy)
            engine, small = self._engine, self._small
        return AzureNative(engine, small, auth, version, policy)

    def close(self) -> None:
        with self._native_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
            if self._small is not None:
                self._small.close()
                self._small = None
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self.session.close()


def _native_config(profile: Profile, opts: dict[str, Any]) -> tuple[str, Any] | None:
    """The account URL and native auth (`azure_native.SharedKey`, a SAS query, ``""`` for anonymous)
    the profile describes by the same rules as `_service_client`, or None when only the SDK can
    serve it (a credential object, `DefaultAzureCredential`, a URL with a query, an odd connection string)."""
    from .azure_native import SharedKey

    conn = opts.get("connection_string")
    url = profile.endpoint or _account_url(opts.get("account_name"))
    if conn is None and url is None and not any(k in opts for k in CREDENTIAL_OPTIONS):
        conn = os.environ.get(CONNECTION_STRING_ENV)
    if conn is not None:
        if profile.endpoint is not None:
            return None  # the SDK path raises the configuration error
        try:
            url = _connection_string_url(conn)
        except ValueError:
            return None
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        if "?" in url:
            return None
        if profile.public:
            return url, ""
        if "AccountName" in parts and "AccountKey" in parts:
            return url, SharedKey(parts["AccountName"], parts["AccountKey"])
        if "SharedAccessSignature" in parts:
            return url, parts["SharedAccessSignature"].lstrip("?")
        return None
    if url is None or "?" in url:
        return None
    url = url.rstrip("/")
    if profile.public:
        return url, ""
    if "account_key" in opts and "credential" not in opts:
        name = opts.get("account_name") or _account_from_url(url)
        return (url, SharedKey(name, str(opts["account_key"]))) if name else None
    if "sas_token" in opts and "credential" not in opts:
        return url, str(opts["sas_token"]).lstrip("?")
    return None


def _account_from_url(url: str) -> str | None:
    """The account an account URL names, as the SDK reads it: the first label of
    ``NAME.blob.core.windows.net``, else (an IP or localhost, as Azurite) the first path segment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    segment = parts.path.strip("/").split("/", 1)[0]
    return segment or None


def _retry_policy(blob: Any, attempts: int, first: float) -> Any:
    """The storage SDK's retry policy (which retries 5xx, ``ServerBusy``, timeouts and broken
    connections), waiting ``first`` seconds before the first retry and doubling, ±25%."""

    class DoublingRetry(blob.ExponentialRetry):
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            wait = min(60.0, first * 2 ** settings["count"])
            return random.uniform(0.75 * wait, 1.25 * wait)

    return DoublingRetry(retry_total=attempts - 1)


def _service_client(blob: Any, profile: Profile, opts: dict[str, Any], config: dict[str, Any]) -> Any:
    """The `BlobServiceClient` the profile describes (see the module docstring for the rules)."""
    conn = opts.get("connection_string")
    url = profile.endpoint or _account_url(opts.get("account_name"))
    if conn is None and url is None and not any(k in opts for k in CREDENTIAL_OPTIONS):
        conn = os.environ.get(CONNECTION_STRING_ENV)  # the SDK's standard configuration
    if conn is not None and profile.endpoint is not None:
        raise ValueError("An Azure profile takes either endpoint or connection_string, not both")
    if conn is not None and profile.public:
        url = _connection_string_url(conn)
    elif conn is not None:
        return blob.BlobServiceClient.from_connection_string(conn, **config)
    if url is None:
        raise ValueError(
            "No Azure account configured: set AZURE_STORAGE_CONNECTION_STRING, or give the profile "
            "endpoint='https://ACCOUNT.blob.core.windows.net' (or account_name=...)"
        )
    return blob.BlobServiceClient(url, credential=_credential(blob, profile, opts), **config)


def _account_url(name: str | None) -> str | None:
    return f"https://{name}.blob.core.windows.net" if name else None


def _connection_string_url(conn: str) -> str:
    """The blob account URL a connection string names (for anonymous access through it)."""
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    if "BlobEndpoint" in parts:
        return parts["BlobEndpoint"].rstrip("/")
    if "AccountName" not in parts:
        raise ValueError("The Azure connection string names neither BlobEndpoint nor AccountName")
    scheme = parts.get("DefaultEndpointsProtocol", "https")
    return f"{scheme}://{parts['AccountName']}.blob.{parts.get('EndpointSuffix', 'core.windows.net')}"


def _credential(blob: Any, profile: Profile, opts: dict[str, Any]) -> Any:
    if profile.public:
        return None
    if "credential" in opts:
        return opts["credential"]
    if "account_key" in opts:
        if "account_name" in opts:
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(opts["account_name"], opts["account_key"])
        return opts["account_key"]  # the SDK takes the account name from the URL
    if "sas_token" in opts:
        from azure.core.credentials import AzureSasCredential

        return AzureSasCredential(str(opts["sas_token"]).lstrip("?"))
    return _default_credential()


def _default_credential() -> Any:
    """``DefaultAzureCredential``, checked once now: without any usable identity every
    request would otherwise be retried for a minute before failing."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ImportError(f"Azure account URLs without a key need azure-identity: {INSTALL}") from exc
    from azure.core.exceptions import ClientAuthenticationError

    credential = DefaultAzureCredential()
    try:
        credential.get_token(STORAGE_SCOPE)
    except ClientAuthenticationError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PermissionError(
            f"No usable Azure credential for the account URL ({first}); log in (az login), set "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or give the profile account_key or sas_token"
        ) from exc
    return credential


class AzureStore(ObjectStore):
    delete_batch_size = BATCH

    def __init__(self, backend: AzureBackend, container: str) -> None:
        self.backend = backend
        self.name = container
        self._native: AzureNative | None = None
        self._native_checked = False

    @functools.cached_property
    def container(self) -> Any:
        """The SDK's container client (the SDK is imported on first use)."""
        return self.backend.client.get_container_client(self.name)

    @functools.cached_property
    def _base(self) -> str:
        return self.backend.container_url(self.name)

    def _native_for(self, size: int | None) -> AzureNative | None:
        """The native transfers for a request of ``size`` bytes (larger puts go through the SDK), or None."""
        from .azure_native import NATIVE_MAX

        if size is not None and size > NATIVE_MAX:
            return None
        return self._native_engine()

    def _native_engine(self) -> AzureNative | None:
        """The native transfers, or None when the profile asks for the SDK (or only it can sign)."""
        if not self._native_checked:
            self._native = self.backend.native(self.name)
            self._native_checked = True
        return self._native

    def start_get(self, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta] | None:
        """A native download (`pos3_backends.azure_native`): one GET up to 8 MiB, parallel ranges
        above; a mismatch or a changed blob is retried whole."""
        native = self._native_engine()
        if native is None:
            return None
        what = f"Downloading {self._url(key)}"
        return retried_async(lambda: native.start_get(self._base, key, dest, what, size))

    def start_put(self, key: str, src: Path) -> Future[ObjectMeta] | None:
        """One native Put Blob for files up to 8 MiB; larger ones go through the SDK (staged blocks)."""
        native = self._native_for(os.stat(src).st_size)
        if native is None:
            return None
        what = f"Uploading {self._url(key)}"
        return retried_async(lambda: native.start_put(self._base, key, src, what))

    def _url(self, key: str) -> str:
        return f"az://{self.name}/{key}"

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        return utf8_order(self._list(prefix))

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        native = self._native_for(0)
        if native is not None:
            what, marker = f"Listing {self._url(prefix)}", None
            while True:
                page, marker = native.list_page(self._base, prefix, self.backend.page_size, marker, what)
                yield from page
                if not marker:
                    return
        try:
            pages = self.container.list_blobs(
                name_starts_with=prefix or None, results_per_page=self.backend.page_size
            ).by_page()
            for page in pages:
                for props in page:
                    yield _meta(props.name, props)
        except Exception as exc:
            raise _map_error(exc, f"Listing {self._url(prefix)}") from exc

    def head(self, key: str) -> ObjectMeta | None:
        native = self._native_for(0)
        if native is not None:
            return native.head(self._base, key, f"Reading {self._url(key)}")
        try:
            props = self.container.get_blob_client(key).get_blob_properties()
        except Exception as exc:
            err = _map_error(exc, f"Reading {self._url(key)}")
            if isinstance(err, FileNotFoundError) and not _container_missing(exc):
                return None  # a missing key is an answer; a missing container is an error
            raise err from exc
        return _meta(key, props)

    def get(self, key: str, dest: Path, size: int | None = None) -> ObjectMeta:
        """Download, then compare with the blob's Content-MD5 (when it has one); retried whole on a mismatch.
        Natively (`start_get`) unless the profile asks for the SDK."""
        native = self._native_engine() if size is None else None
        if native is not None:  # unknown size (a lease read): small requests, no event loop
            what = f"Downloading {self._url(key)}"
            got = retried(lambda: native.get_now(self._base, key, dest, what), what)
            if got is not None:
                return got
        started = self.start_get(key, dest, size)
        if started is not None:
            return started.result()
        return retried(lambda: self._get(key, dest), f"Downloading {self._url(key)}")

    def _get(self, key: str, dest: Path) -> ObjectMeta:
        what = f"Downloading {self._url(key)}"
        try:
            with open(dest, "wb") as f:
                stream = self.container.get_blob_client(key).download_blob(max_concurrency=self._concurrency)
                stream.readinto(f)
        except OSError as exc:
            if not network_error(exc):
                raise  # a local disk error
            raise _map_error(exc, what) from exc
        except Exception as exc:
            raise _map_error(exc, what) from exc
        meta = _meta(key, stream.properties)
        if meta.md5 is not None:
            check_md5(dest, meta.md5, what)
        return meta

    def put(self, key: str, src: Path) -> ObjectMeta:
        """Upload with a Content-MD5 on every request (checked by the service); retried whole on a mismatch."""
        started = self.start_put(key, src)
        if started is not None:
            return started.result()
        return retried(lambda: self._put(key, src), f"Uploading {self._url(key)}")

    def _put(self, key: str, src: Path) -> ObjectMeta:
        from azure.storage.blob import ContentSettings

        what = f"Uploading {self._url(key)}"
        try:
            size = os.stat(src).st_size
            digest = md5_digest(src)
            settings = ContentSettings(content_type="application/octet-stream", content_md5=bytearray(digest))
            with open(src, "rb") as f:
                r = self.container.get_blob_client(key).upload_blob(
                    f,
                    length=size,
                    overwrite=True,
                    content_settings=settings,
                    validate_content=True,
                    max_concurrency=self._concurrency,
                )
        except OSError as exc:
            if not network_error(exc):
                raise  # a local disk error
            raise _map_error(exc, what) from exc
        except Exception as exc:
            raise _map_error(exc, what) from exc
        modified = r.get("last_modified")
        mtime = modified.timestamp() if modified is not None else None
        return ObjectMeta(key, size, _etag(r.get("etag")), mtime, digest.hex())

    conditional_put = True

    def put_if(self, key: str, data: bytes, version: str | None = None) -> ObjectMeta:
        """One Put Blob with ``If-None-Match: *`` (create) or ``If-Match: <etag>`` (update)."""
        native = self._native_for(len(data))
        if native is not None:
            return native.put_if(self._base, key, data, version, f"Uploading {self._url(key)}")
        import hashlib

        from azure.core import MatchConditions
        from azure.storage.blob import ContentSettings

        md5 = bytearray(hashlib.md5(data, usedforsecurity=False).digest())
        settings = ContentSettings(content_type="application/octet-stream", content_md5=md5)
        cond: dict[str, Any] = {"overwrite": False}
        if version is not None:
            cond = {"overwrite": True, "etag": f'"{version}"', "match_condition": MatchConditions.IfNotModified}
        try:
            r = self.container.get_blob_client(key).upload_blob(
                data, length=len(data), content_settings=settings, validate_content=True, **cond
            )
        except Exception as exc:
            code = str(getattr(exc, "error_code", None) or "")
            if (
                _status(exc) == 412
                or code in ("BlobAlreadyExists", "ConditionNotMet")
                or (version is not None and _status(exc) == 404 and not _container_missing(exc))
            ):
                raise PreconditionFailed.of(self._url(key), version) from None
            raise _map_error(exc, f"Uploading {self._url(key)}") from exc
        modified = r.get("last_modified")
        mtime = modified.timestamp() if modified is not None else None
        return ObjectMeta(key, len(data), _etag(r.get("etag")), mtime, md5.hex())

    @property
    def _concurrency(self) -> int:
        return max(1, min(8, self.backend.max_workers))

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in batches; a missing container raises `FileNotFoundError` (a missing key does not)."""
        for n, batch in enumerate(batches(keys, BATCH)):
            if n == 0:
                self._check_container()  # sub-requests would take its 404 for "already gone"
            self._delete_batch(batch)

    def _check_container(self) -> None:
        """Raise `FileNotFoundError` if the container does not exist: a one-blob listing answers
        404 then (and needs only the list permission a sync needs anyway)."""
        native = self._native_for(0)
        if native is not None:
            try:
                native.list_page(self._base, "", 1, None, f"Reading az://{self.name}")
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"No such container: az://{self.name}") from exc
            return
        try:
            next(iter(self.container.list_blobs(results_per_page=1).by_page()), None)
        except Exception as exc:
            err = _map_error(exc, f"Reading az://{self.name}")
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(f"No such container: az://{self.name}") from exc
            raise err from exc

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        left = self._try_batch(keys) if self.backend.batch_ok and len(keys) > 1 else keys
        run_all(self._delete_one, left, self.backend.max_workers)

    def _try_batch(self, keys: builtins.list[str]) -> builtins.list[str]:
        """One Blob Batch request; return the keys to delete one by one (failed or never sent)."""
        try:
            responses = list(self.container.delete_blobs(*keys, raise_on_any_failure=False))
        except Exception as exc:
            err = _map_error(exc, f"Deleting {len(keys)} blobs from az://{self.name}")
            if isinstance(err, PermissionError):
                raise err from exc
            with self.backend._batch_lock:
                self.backend.batch_ok = False  # e.g. hierarchical-namespace accounts
            return keys
        if len(responses) != len(keys):
            return keys
        return undeleted(keys, [r.status_code for r in responses])

    def _delete_one(self, key: str) -> None:
        native = self._native_for(0)
        if native is not None:
            native.delete(self._base, key, f"Deleting {self._url(key)}")
            return
        try:
            self.container.delete_blob(key)
        except Exception as exc:
            err = _map_error(exc, f"Deleting {self._url(key)}")
            if isinstance(err, FileNotFoundError):
                return  # already gone
            raise err from exc
