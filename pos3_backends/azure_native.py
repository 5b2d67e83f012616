"""Native Azure Blob transfers on one event loop (`pos3_backends._aio`), for `AzureStore`.

A download up to `NATIVE_MAX` is one GET streamed to the file and compared with the blob's
Content-MD5 (when it has one). A larger one is parallel range GETs pinned to the first
answer's ETag (``If-Match``), written with ``pwrite`` into the preallocated file and hashed as
they land (`pos3.stores.ranged`): checked against the whole blob's Content-MD5 (sent with every
range as ``x-ms-blob-content-md5``), or, for a blob without one (uploaded in blocks without it),
each 4 MiB range against the MD5 the service computes for it (``x-ms-range-get-content-md5``).
An upload is one Put Blob carrying the file's Content-MD5, which
the service checks, and storing it as the blob's Content-MD5. Either mismatch raises
`IntegrityError`. The account URL, API version and credential are the SDK client's:
a shared key (signed here, as the SDK signs), a SAS, a token credential (its tokens
are fetched on a worker thread) or none (anonymous). Another credential type is not
served natively (`native_auth` answers None and the store uses the SDK). Listings, HEADs,
deletes and conditional writes are small requests on the calling thread (`pos3_backends._http`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from concurrent.futures import Future
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.etree import ElementTree

from pos3.integrity import IntegrityError, TransferInterrupted
from pos3.store import ObjectMeta, PreconditionFailed, StoreError, Throttled, retry_after

from ._aio import Engine, get_ranges, guard, retrying
from ._common import b64_to_hex
from ._http import TRANSIENT_STATUS, RetryPolicy, SmallRequests, Transient
from .azure import INTEGRITY_CODES

#: Blobs up to this size move in one request each; larger downloads as ranges, larger uploads through the SDK.
NATIVE_MAX = 8 * 1024 * 1024
CHUNK = 1 << 20
#: The largest blob of unknown size `AzureNative.get_now` reads whole as a small request.
SMALL_GET = 256 * 1024
#: The largest range the service sends an MD5 for (``x-ms-range-get-content-md5``); the first range's size.
MD5_RANGE = 4 * 1024 * 1024
#: The size of the other ranges of a blob with a whole-blob Content-MD5.
RANGE = 16 * 1024 * 1024
#: The Blob service API version of native requests when no SDK client names one.
API_VERSION = "2021-12-02"
STORAGE_SCOPE = "https://storage.azure.com/.default"
_SIGNED = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def map_status(status: int, headers: Any, body: bytes, what: str) -> Exception:
    """An HTTP error answer as the SDK path maps it: FileNotFoundError / PermissionError /
    IntegrityError / Throttled / StoreError."""
    code = str(headers.get("x-ms-error-code") or "")
    reason = code or f"HTTP {status}"
    if status == 404 or code.endswith("NotFound"):
        return FileNotFoundError(f"{what}: not found ({reason})")
    if status in (401, 403):
        return PermissionError(f"{what}: access denied ({reason})")
    if status == 400 and code in INTEGRITY_CODES:
        return IntegrityError(f"{what}: the service received bytes that do not match their Content-MD5 ({code})")
    if status in (429, 503) or code == "ServerBusy":
        return Throttled(f"{what}: {reason}: the service asks to slow down", retry_after(headers))
    message = _message(body)
    return StoreError(f"{what}: {reason}: {message}")


def _message(body: bytes) -> str:
    text = body[:2000].decode("utf-8", "replace")
    if "<Message>" in text:
        text = text.split("<Message>", 1)[1].split("</Message>", 1)[0]
    return text.strip().splitlines()[0] if text.strip() else ""


class SharedKey:
    """Signs requests with an account's shared key (the Blob service's Shared Key scheme)."""

    def __init__(self, account: str, key: str) -> None:
        self.account = account
        self.key = base64.b64decode(key)

    def sign(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> str:
        """The ``Authorization`` value for a request of these parts (``path`` as sent, percent-encoded)."""
        low = {k.lower(): v for k, v in headers.items()}
        if low.get("content-length") == "0":
            del low["content-length"]
        lines = [method, *(low.get(h, "") for h in _SIGNED)]
        canon = "".join(f"{k}:{v}\n" for k, v in sorted((k, v) for k, v in low.items() if k.startswith("x-ms-")))
        resource = f"/{self.account}{path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        text = "\n".join(lines) + "\n" + canon + resource
        digest = hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account}:{base64.b64encode(digest).decode()}"


def native_auth(credential: Any) -> Any | None:
    """What the native path signs with for the SDK client's ``credential``: a `SharedKey`, a SAS
    query string, a token credential, ``""`` (anonymous), or None (not served natively)."""
    if credential is None:
        return ""
    if hasattr(credential, "account_key") and hasattr(credential, "account_name"):
        return SharedKey(credential.account_name, credential.account_key)
    if hasattr(credential, "signature"):  # AzureSasCredential
        return str(credential.signature).lstrip("?")
    if hasattr(credential, "get_token"):
        return credential
    return None


class AzureNative:
    """Starts downloads and uploads for one container's blobs on an engine."""

    def __init__(self, engine: Engine, small: SmallRequests, auth: Any, api_version: str, policy: RetryPolicy) -> None:
        self.engine = engine
        self.small = small
        self.auth = auth
        self.version = api_version
        self.policy = policy
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    # -- authentication -------------------------------------------------------

    def _fresh_token(self) -> str:
        with self._token_lock:
            if self._token is None or self._token[1] - time.time() < 300:
                got = self.auth.get_token(STORAGE_SCOPE)
                self._token = (got.token, float(got.expires_on))
            return self._token[0]

    def _sign(self, method: str, url: str, headers: dict[str, str], token: str | None) -> str:
        """Add the date, version and authorization (``token`` for a token credential) to
        ``headers``; return the URL to request."""
        headers["x-ms-date"] = formatdate(usegmt=True)
        headers["x-ms-version"] = self.version
        auth = self.auth
        if isinstance(auth, SharedKey):
            parts = urlsplit(url)
            query = {k: unquote(v) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)}
            headers["Authorization"] = auth.sign(method, parts.path, query, headers)
        elif isinstance(auth, str):
            if auth:
                url = f"{url}{'&' if '?' in url else '?'}{auth}"
        else:
            headers["Authorization"] = f"Bearer {token}"
        return url

    def _needs_token(self) -> bool:
        if isinstance(self.auth, (SharedKey, str)):
            return False
        token = self._token
        return token is None or token[1] - time.time() < 300

    def _authorize_now(self, method: str, url: str, headers: dict[str, str]) -> str:
        """`_sign`, asking for a token on this thread if one is due (it may block)."""
        token = self._fresh_token() if self._needs_token() else (self._token[0] if self._token else None)
        return self._sign(method, url, headers, token)

    async def _authorize(self, method: str, url: str, headers: dict[str, str]) -> str:
        """`_sign` on the event loop: a token due is asked for on a worker thread."""
        if self._needs_token():
            await asyncio.to_thread(self._fresh_token)
        return self._sign(method, url, headers, self._token[0] if self._token else None)

    # -- small requests -------------------------------------------------------

    def call(
        self,
        method: str,
        url: str,
        what: str,
        ok: tuple[int, ...],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, bytes]:
        """One small request (retried like every other) on the calling thread: status (one of ``ok``), headers, body."""

        def prepare() -> tuple[str, dict[str, str]]:
            sent = dict(headers or {})
            if data is not None:
                sent["Content-Length"] = str(len(data))
            return self._authorize_now(method, url, sent), sent

        got = self.small.send(method, prepare, what, ok, _fail, data)
        return got.status, got.headers, got.body

    def list_page(
        self, base: str, prefix: str, size: int, marker: str | None, what: str
    ) -> tuple[list[ObjectMeta], str | None]:
        """One List Blobs page under the container URL ``base`` and the next page's marker.
        A body that cannot be read raises `TransferInterrupted`."""
        query = {"comp": "list", "restype": "container", "maxresults": str(size)}
        if prefix:
            query["prefix"] = prefix
        if marker:
            query["marker"] = marker
        _, _, body = self.call("GET", f"{base}?{urlencode(query, quote_via=quote)}", what, (200,))
        try:
            root = ElementTree.fromstring(body)
            metas = [_blob_meta(b) for b in root.iterfind("Blobs/Blob")]
        except (ElementTree.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise TransferInterrupted(f"{what}: unreadable listing page ({exc})") from exc
        return metas, root.findtext("NextMarker") or None

    def head(self, base: str, key: str, what: str) -> ObjectMeta | None:
        """The blob's properties, or None if it does not exist (a missing container raises)."""
        status, headers, _ = self.call("HEAD", f"{base}/{quote(key, safe='/~')}", what, (200, 404))
        if status == 404:
            if headers.get("x-ms-error-code") == "ContainerNotFound":
                raise FileNotFoundError(f"{what}: not found (ContainerNotFound)")
            return None
        return _header_meta(key, headers)

    def delete(self, base: str, key: str, what: str) -> None:
        """Delete one blob; a missing one is not an error."""
        self.call("DELETE", f"{base}/{quote(key, safe='/~')}", what, (200, 202, 404))

    def put_if(self, base: str, key: str, data: bytes, version: str | None, what: str) -> ObjectMeta:
        """One Put Blob only if no blob exists (``version`` None) or its ETag is ``version``."""
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        md5 = base64.b64encode(digest).decode()
        headers = {
            "Content-MD5": md5,
            "Content-Type": "application/octet-stream",
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-md5": md5,
            "x-ms-blob-content-type": "application/octet-stream",
        }
        if version is None:
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = f'"{version}"'
        url = f"{base}/{quote(key, safe='/~')}"
        status, got, _ = self.call("PUT", url, what, (200, 201, 404, 409, 412), headers, data)
        code = got.get("x-ms-error-code") or ""
        if status in (409, 412) or (status == 404 and version is not None and code != "ContainerNotFound"):
            raise PreconditionFailed.of(what.split(" ", 1)[-1], version)
        if status == 404:
            raise FileNotFoundError(f"{what}: not found ({code or 'HTTP 404'})")
        return ObjectMeta(key, len(data), _etag(got.get("ETag")), _mtime(got.get("Last-Modified")), digest.hex())

    # -- transfers ------------------------------------------------------------

    def start_get(self, base: str, key: str, dest: Path, what: str, size: int | None = None) -> Future[ObjectMeta]:
        """Download the blob ``key`` under the container URL ``base`` into ``dest``: one GET, or
        ranges when ``size`` is above `NATIVE_MAX`."""
        url = f"{base}/{quote(key, safe='/~')}"
        if size is not None and size > NATIVE_MAX:
            return self.engine.run(guard(self._get_ranged(url, key, dest, what), what))
        return self.engine.run(guard(retrying(lambda: self._get_once(url, key, dest, what), self.policy), what))

    async def _open_range(self, url: str, start: int, end: int, etag: str | None, what: str) -> Any:
        """The answer to a GET of ``[start, end)`` with the range's MD5 asked for when the service
        gives one (``etag``: only of that blob; another raises `TransferInterrupted`). The caller
        releases it. A 416 (an empty blob) is returned as it is."""
        import yarl

        headers = {"x-ms-range": f"bytes={start}-{end - 1}"}
        if end - start <= MD5_RANGE:
            headers["x-ms-range-get-content-md5"] = "true"
        if etag is not None:
            headers["If-Match"] = f'"{etag}"'
        target = await self._authorize("GET", url, headers)
        r = await self.engine.session.get(yarl.URL(target, encoded=True), headers=headers)
        if r.status in (200, 206, 416):
            return r
        body = await r.read()
        r.release()
        if r.status == 412:
            raise TransferInterrupted(f"{what}: the blob changed during the download")
        _fail(r.status, r.headers, body, what)

    async def _get_ranged(self, url: str, key: str, dest: Path, what: str) -> ObjectMeta:
        """Ranges in parallel into ``dest`` (see the module's docstring): 16 MiB ones checked against
        the blob's Content-MD5, else 4 MiB ones each checked against the service's MD5 of it."""
        first = await retrying(lambda: self._open_range(url, 0, MD5_RANGE, None, what), self.policy)
        if first.status == 416:  # emptied since it was listed: one plain GET
            first.release()
            return await retrying(lambda: self._get_once(url, key, dest, what), self.policy)
        h = first.headers
        total = int(h["Content-Range"].rsplit("/", 1)[1]) if first.status == 206 else int(h["Content-Length"])
        etag = _etag(h.get("ETag"))
        whole = h.get("x-ms-blob-content-md5") if first.status == 206 else h.get("Content-MD5")
        meta = ObjectMeta(key, total, etag, _mtime(h.get("Last-Modified")), b64_to_hex(whole))
        got = await get_ranges(
            first,
            total,
            lambda start, end: self._open_range(url, start, end, etag, what),
            dest,
            RANGE if whole else MD5_RANGE,
            not whole,
            self.policy,
            what,
        )
        expected = [whole] if whole else [got.headers[start].get("Content-MD5") for start, _ in got.ranges]
        for digest, stored in zip(got.digests, expected, strict=True):
            if stored is not None and base64.b64decode(stored) != digest:  # none sent: unverifiable, as with the SDK
                raise IntegrityError(f"{what}: the bytes received do not match the blob's MD5")
        return meta

    async def _get_once(self, url: str, key: str, dest: Path, what: str) -> ObjectMeta:
        import yarl

        headers: dict[str, str] = {}
        target = await self._authorize("GET", url, headers)
        async with self.engine.session.get(yarl.URL(target, encoded=True), headers=headers) as r:
            if r.status != 200:
                _fail(r.status, r.headers, await r.read(), what)
            md5 = hashlib.md5(usedforsecurity=False)
            size = 0
            with open(dest, "wb") as f:
                async for chunk in r.content.iter_chunked(CHUNK):
                    f.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            return _checked(key, size, r.headers, md5, what)

    def get_now(self, base: str, key: str, dest: Path, what: str) -> ObjectMeta | None:
        """Download a blob of unknown size as small requests on the calling thread (no event loop,
        for a lease read): a HEAD (missing: `FileNotFoundError`), then, up to `SMALL_GET` bytes, one GET
        of that ETag checked as `start_get` checks; None when larger (start a transfer instead). The
        blob replaced between the two raises `TransferInterrupted`."""
        head = self.head(base, key, what)
        if head is None:
            raise FileNotFoundError(f"{what}: not found")
        if head.size > SMALL_GET:
            return None
        url = f"{base}/{quote(key, safe='/~')}"
        pin = {} if head.version is None else {"If-Match": f'"{head.version}"'}

        def fail(status: int, headers: Any, body: bytes, what: str) -> NoReturn:
            if status in (404, 412) and pin:
                raise TransferInterrupted(f"{what}: the blob changed during the download")
            _fail(status, headers, body, what)

        def prepare() -> tuple[str, dict[str, str]]:
            headers = dict(pin)
            return self._authorize_now("GET", url, headers), headers

        got = self.small.send("GET", prepare, what, (200,), fail)
        meta = _checked(key, len(got.body), got.headers, hashlib.md5(got.body, usedforsecurity=False), what)
        with open(dest, "wb") as f:
            f.write(got.body)
        return meta

    def start_put(self, base: str, key: str, src: Path, what: str) -> Future[ObjectMeta]:
        """Upload ``src`` (read whole, at most `NATIVE_MAX` bytes) as the blob ``key`` in one Put Blob."""
        data = src.read_bytes()
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        url = f"{base}/{quote(key, safe='/~')}"
        return self.engine.run(guard(retrying(lambda: self._put_once(url, key, data, digest, what), self.policy), what))

    async def _put_once(self, url: str, key: str, data: bytes, digest: bytes, what: str) -> ObjectMeta:
        import yarl

        md5 = base64.b64encode(digest).decode()
        headers = {
            "Content-Length": str(len(data)),
            "Content-MD5": md5,
            "Content-Type": "application/octet-stream",
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-md5": md5,
            "x-ms-blob-content-type": "application/octet-stream",
        }
        target = await self._authorize("PUT", url, headers)
        async with self.engine.session.put(yarl.URL(target, encoded=True), data=data, headers=headers) as r:
            body = await r.read()
            if r.status not in (200, 201):
                _fail(r.status, r.headers, body, what)
            etag, modified = _etag(r.headers.get("ETag")), _mtime(r.headers.get("Last-Modified"))
        return ObjectMeta(key, len(data), etag, modified, digest.hex())


def _blob_meta(blob: ElementTree.Element) -> ObjectMeta:
    """One ``<Blob>`` of a List Blobs answer (a name marked ``Encoded`` is percent-encoded)."""
    name_el = blob.find("Name")
    if name_el is None or name_el.text is None:
        raise ValueError("a blob without a name")
    name = unquote(name_el.text) if name_el.get("Encoded") == "true" else name_el.text
    props = blob.find("Properties")
    if props is None:
        raise ValueError(f"{name}: no properties")
    md5 = props.findtext("Content-MD5")
    return ObjectMeta(
        name,
        int(props.findtext("Content-Length") or 0),
        _etag(props.findtext("Etag")),
        _mtime(props.findtext("Last-Modified")),
        b64_to_hex(md5),
    )


def _header_meta(key: str, headers: Any) -> ObjectMeta:
    md5 = headers.get("Content-MD5")
    return ObjectMeta(
        key,
        int(headers.get("Content-Length") or 0),
        _etag(headers.get("ETag")),
        _mtime(headers.get("Last-Modified")),
        b64_to_hex(md5),
    )


def _etag(value: str | None) -> str | None:
    return value.strip('"') or None if value else None


def _mtime(value: str | None) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def _checked(key: str, size: int, headers: Any, md5: Any, what: str) -> ObjectMeta:
    """The downloaded blob's `ObjectMeta`; `IntegrityError` if the bytes hashed into ``md5`` do not
    match the blob's Content-MD5 (a blob without one is not checked)."""
    meta = ObjectMeta(key, size, _etag(headers.get("ETag")), _mtime(headers.get("Last-Modified")))
    stored = headers.get("Content-MD5")
    if not stored:
        return meta
    if base64.b64decode(stored) != md5.digest():
        raise IntegrityError(f"{what}: content MD5 {md5.hexdigest()} does not match the store's")
    return ObjectMeta(meta.key, meta.size, meta.version, meta.mtime, md5.hexdigest())


def _fail(status: int, headers: Any, body: bytes, what: str) -> NoReturn:
    """Raise the error an answer of ``status`` means (`Transient` when worth another try)."""
    err = map_status(status, headers, body, what)
    if status in TRANSIENT_STATUS or isinstance(err, Throttled):
        raise Transient(err, retry_after(headers))
    raise err
