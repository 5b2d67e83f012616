"""Native GCS transfers over the JSON API on one event loop (`pos3_backends._aio`), for `GCSStore`.

A download is one ``alt=media`` GET streamed to the file and checked against the
``x-goog-hash`` the service sends (MD5, else CRC32C), as the SDK's ``checksum="auto"``
does; above `NATIVE_MAX`, parallel range GETs pinned to the first answer's generation,
written with ``pwrite`` into the preallocated file and hashed as they land
(`pos3.stores.ranged`), checked against the same whole-object hash. An upload is one
multipart upload whose metadata carries the file's MD5 (which the service checks) and
whose answer's ``md5Hash`` is compared with the file's (an emulator may not check): a
mismatching object is deleted if still that generation. Either mismatch raises
`IntegrityError`. Endpoint and credentials are the SDK client's. Listings, HEADs and deletes are
small requests on the calling thread (`pos3_backends._http`): a no-op starts no event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from pos3.integrity import IntegrityError, TransferInterrupted
from pos3.store import ObjectMeta, PreconditionFailed, StoreError, Throttled, retry_after

from ._aio import Engine, get_ranges, guard, retrying
from ._common import b64_to_hex
from ._http import TRANSIENT_STATUS, RetryPolicy, SmallRequests, Transient

#: Objects up to this size move in one request each; larger downloads as ranges, larger uploads through the SDK.
NATIVE_MAX = 8 * 1024 * 1024
#: The size of each range of a larger download.
RANGE = 16 * 1024 * 1024
CHUNK = 1 << 20
#: The largest object of unknown size `GCSNative.get_now` reads whole as a small request.
SMALL_GET = 256 * 1024
#: Seconds between two asks for the access token (google-auth refreshes it ahead of expiry).
TOKEN_RECHECK = 30.0
OBJECT_FIELDS = "name,size,generation,md5Hash,updated"
LIST_FIELDS = f"items({OBJECT_FIELDS}),nextPageToken"


def map_status(status: int, headers: Any, body: bytes, what: str) -> Exception:
    """An HTTP error answer as the SDK path maps it: FileNotFoundError / PermissionError /
    IntegrityError (a checksum the service refused) / Throttled / StoreError."""
    try:
        message = str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    if status == 404:
        return FileNotFoundError(f"{what}: not found ({message})")
    if status in (401, 403):
        return PermissionError(f"{what}: access denied ({message})")
    if status == 400 and any(w in message.lower() for w in ("md5", "crc32c", "hash", "checksum")):
        return IntegrityError(f"{what}: the service received bytes that do not match their MD5 ({message})")
    if status in (429, 503):
        return Throttled(f"{what}: HTTP {status}: the service asks to slow down", retry_after(headers))
    return StoreError(f"{what}: HTTP {status}: {message}")


def _hashes(header: str | None) -> dict[str, str]:
    """``x-goog-hash: crc32c=...,md5=...`` as {algorithm: base64 digest}."""
    out = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if value:
            out[name.lower()] = value
    return out


def _mtime(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class GCSNative:
    """Starts downloads and uploads for one `google.cloud.storage.Client` on its own engine."""

    def __init__(
        self, base: str, token: Callable[[], str | None], connections: int, timeout: float, policy: RetryPolicy
    ) -> None:
        self.base = base
        self.token = token
        self.policy = policy
        self.engine = Engine(connections, timeout)
        self.small = SmallRequests(timeout, policy)
        self._auth: tuple[dict[str, str], float] | None = None

    def close(self) -> None:
        self.engine.close()
        self.small.close()

    def _cached_auth(self) -> dict[str, str] | None:
        cached = self._auth
        if cached is None or time.monotonic() - cached[1] > TOKEN_RECHECK:
            return None
        return dict(cached[0])

    def _auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header (none when anonymous); the token is asked for again (it
        may refresh, and block) at most once every `TOKEN_RECHECK` seconds."""
        cached = self._cached_auth()
        if cached is not None:
            return cached
        token = self.token()
        self._auth = ({"Authorization": f"Bearer {token}"} if token else {}, time.monotonic())
        return dict(self._auth[0])

    async def _headers(self) -> dict[str, str]:
        """`_auth_headers` for the event loop: a token asked for again on a worker thread."""
        cached = self._cached_auth()
        return cached if cached is not None else await asyncio.to_thread(self._auth_headers)

    def call(
        self, method: str, url: str, params: dict[str, str], what: str, ok: tuple[int, ...] = (200,)
    ) -> tuple[int, bytes]:
        """One small request (retried like every other) on the calling thread: its status (one of ``ok``) and body."""
        target = f"{url}?{urlencode(params, quote_via=quote)}" if params else url
        got = self.small.send(method, lambda: (target, self._auth_headers()), what, ok, _fail)
        return got.status, got.body

    def list_page(
        self, bucket: str, prefix: str, size: int, start: str | None, token: str | None, what: str
    ) -> tuple[list[ObjectMeta], str | None]:
        """One page of the listing (from ``start``, inclusive) and the next page's token.
        A body that cannot be read (cut short) raises `TransferInterrupted`."""
        params = {"maxResults": str(size), "fields": LIST_FIELDS, "projection": "noAcl"}
        if prefix:
            params["prefix"] = prefix
        if start:
            params["startOffset"] = start
        if token:
            params["pageToken"] = token
        _, body = self.call("GET", f"{self.base}/storage/v1/b/{quote(bucket, safe='')}/o", params, what)
        try:
            got = json.loads(body)
            return [_object_meta(o) for o in got.get("items", ())], got.get("nextPageToken") or None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TransferInterrupted(f"{what}: unreadable listing page ({exc})") from exc

    def head(self, bucket: str, key: str, what: str) -> ObjectMeta | None:
        """The object's metadata, or None on a 404 (a missing key, or a missing bucket)."""
        status, body = self.call("GET", self._object(bucket, key), {"fields": OBJECT_FIELDS}, what, (200, 404))
        if status == 404:
            return None
        try:
            return _object_meta(json.loads(body))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TransferInterrupted(f"{what}: unreadable answer ({exc})") from exc

    def delete(self, bucket: str, key: str, what: str) -> None:
        """Delete one object; a missing one is not an error."""
        self.call("DELETE", self._object(bucket, key), {}, what, (200, 204, 404))

    # -- transfers ------------------------------------------------------------

    def _object(self, bucket: str, key: str) -> str:
        return f"{self.base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"

    def start_get(self, bucket: str, key: str, dest: Path, size: int | None = None) -> Future[ObjectMeta]:
        """Download ``key`` into ``dest`` (created or truncated): one GET, or ranges when ``size`` is
        above `NATIVE_MAX`; the future gives its `ObjectMeta`."""
        what = f"Downloading gs://{bucket}/{key}"
        url = f"{self.base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        if size is not None and size > NATIVE_MAX:
            return self.engine.run(guard(self._get_ranged(url, key, dest, what), what))
        return self.engine.run(guard(retrying(lambda: self._get_once(url, key, dest, what), self.policy), what))

    async def _open_range(self, url: str, start: int, end: int, generation: str | None, what: str) -> Any:
        """The answer to a GET of ``[start, end)`` as stored (of ``generation`` only: another raises
        `TransferInterrupted`); the caller releases it. A 416 (an empty object) is returned as it is."""
        params = {"alt": "media"} if generation is None else {"alt": "media", "generation": generation}
        headers = {**await self._headers(), "Accept-Encoding": "gzip", "Range": f"bytes={start}-{end - 1}"}
        r = await self.engine.session.get(url, params=params, headers=headers)
        if r.status in (200, 206, 416):
            return r
        body = await r.read()
        r.release()
        if r.status == 404 and generation is not None:
            raise TransferInterrupted(f"{what}: the object changed during the download")
        _fail(r.status, r.headers, body, what)

    async def _get_ranged(self, url: str, key: str, dest: Path, what: str) -> ObjectMeta:
        """Ranges in parallel into ``dest``, checked against the object's MD5 (else its CRC32C)."""
        first = await retrying(lambda: self._open_range(url, 0, RANGE, None, what), self.policy)
        h = first.headers
        if first.status == 416 or (first.status == 200 and h.get("Content-Encoding")):
            first.release()  # emptied since listed, or served whole (transcoded): one plain GET
            return await retrying(lambda: self._get_once(url, key, dest, what), self.policy)
        total = int(h["Content-Range"].rsplit("/", 1)[1]) if first.status == 206 else int(h["Content-Length"])
        generation = h.get("x-goog-generation")
        sent = _hashes(h.get("x-goog-hash"))
        use_crc = "md5" not in sent and "crc32c" in sent and _crc32c() is not None  # a composite object
        got = await get_ranges(
            first,
            total,
            lambda start, end: self._open_range(url, start, end, generation, what),
            dest,
            RANGE,
            False,
            self.policy,
            what,
            _crc32c if use_crc else None,
        )
        expected = sent["crc32c"] if use_crc else sent.get("md5")
        if expected is not None and base64.b64decode(expected) != got.digests[0]:
            raise IntegrityError(f"{what}: the bytes received do not match the object's checksum")
        return ObjectMeta(key, total, generation, None, b64_to_hex(sent.get("md5")))

    async def _get_once(self, url: str, key: str, dest: Path, what: str) -> ObjectMeta:
        headers = {**await self._headers(), "Accept-Encoding": "gzip"}
        async with self.engine.session.get(url, params={"alt": "media"}, headers=headers) as r:
            if r.status != 200:
                _fail(r.status, r.headers, await r.read(), what)
            md5 = hashlib.md5(usedforsecurity=False)
            crc = _crc32c()
            size = 0
            with open(dest, "wb") as f:
                async for chunk in r.content.iter_chunked(CHUNK):
                    f.write(chunk)
                    md5.update(chunk)
                    if crc is not None:
                        crc.update(chunk)
                    size += len(chunk)
            sent = _hashes(r.headers.get("x-goog-hash"))
            generation = r.headers.get("x-goog-generation")
        _check_received(sent, md5, crc, what)
        return ObjectMeta(key, size, generation, None, b64_to_hex(sent.get("md5")))

    def get_now(self, bucket: str, key: str, dest: Path, what: str) -> ObjectMeta | None:
        """Download an object of unknown size as small requests on the calling thread (no event loop,
        for a lease read): a HEAD (missing: `FileNotFoundError`), then, up to `SMALL_GET` bytes, one GET
        of that generation checked as `start_get` checks; None when larger (start a transfer instead).
        The object replaced between the two raises `TransferInterrupted`."""
        head = self.head(bucket, key, what)
        if head is None:
            raise FileNotFoundError(f"{what}: not found")
        if head.size > SMALL_GET:
            return None
        params = {"alt": "media"} if head.version is None else {"alt": "media", "generation": str(head.version)}
        url = f"{self.base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        target = f"{url}?{urlencode(params, quote_via=quote)}"

        def fail(status: int, headers: Any, body: bytes, what: str) -> NoReturn:
            if status == 404 and head.version is not None:
                raise TransferInterrupted(f"{what}: the object changed during the download")
            _fail(status, headers, body, what)

        def prepare() -> tuple[str, dict[str, str]]:
            return target, {**self._auth_headers(), "Accept-Encoding": "gzip"}

        got = self.small.send("GET", prepare, what, (200,), fail)
        md5, crc = hashlib.md5(got.body, usedforsecurity=False), _crc32c()
        if crc is not None:
            crc.update(got.body)
        sent = _hashes(got.headers.get("x-goog-hash"))
        _check_received(sent, md5, crc, what)
        with open(dest, "wb") as f:
            f.write(got.body)
        return ObjectMeta(key, len(got.body), got.headers.get("x-goog-generation"), None, b64_to_hex(sent.get("md5")))

    def start_put(self, bucket: str, key: str, src: Path) -> Future[ObjectMeta]:
        """Upload ``src`` (read whole, at most `NATIVE_MAX` bytes) to ``key``; the future gives its `ObjectMeta`."""
        return self.start_upload(bucket, key, src.read_bytes(), f"Uploading gs://{bucket}/{key}")

    def start_upload(
        self, bucket: str, key: str, data: bytes, what: str, if_generation: int | None = None
    ) -> Future[ObjectMeta]:
        """One multipart upload of ``data`` carrying its MD5 (``if_generation``: only if the live
        generation is that one, 0 for none); a refused condition raises `PreconditionFailed`."""
        url, params, body, ctype, digest = self._upload_request(bucket, key, data, if_generation)

        async def once() -> ObjectMeta:
            return await self._put_once(url, params, bucket, key, body, ctype, digest, len(data), what)

        return self.engine.run(guard(retrying(once, self.policy), what))

    def put_now(self, bucket: str, key: str, data: bytes, what: str, if_generation: int | None = None) -> ObjectMeta:
        """`start_upload` of a few bytes (a lease) as a small request on the calling thread: no event loop."""
        url, params, body, ctype, digest = self._upload_request(bucket, key, data, if_generation)
        target = f"{url}?{urlencode(params, quote_via=quote)}"

        def fail(status: int, headers: Any, answer: bytes, what: str) -> NoReturn:
            _refused(status, params, bucket, key)
            _fail(status, headers, answer, what)

        def prepare() -> tuple[str, dict[str, str]]:
            return target, {**self._auth_headers(), "Content-Type": ctype}

        got = self.small.send("POST", prepare, what, (200,), fail, body)
        try:
            meta = _uploaded(got.body, key, len(data), what)
        except Transient as exc:  # not retried here: the condition may already have been used up
            raise exc.final from exc
        if meta.md5 is not None and meta.md5 != digest.hex():
            live = {"ifGenerationMatch": str(meta.version)}
            with contextlib.suppress(Exception):  # gone or rewritten meanwhile: not ours to remove
                self.call("DELETE", self._object(bucket, key), live, what, (200, 204))
            raise IntegrityError(f"{what}: the stored object's MD5 {meta.md5} does not match the file (removed)")
        return ObjectMeta(key, len(data), meta.version, meta.mtime, meta.md5 or digest.hex())

    def _upload_request(
        self, bucket: str, key: str, data: bytes, if_generation: int | None
    ) -> tuple[str, dict[str, str], bytes, str, bytes]:
        """URL, query, body, content type and MD5 of a multipart upload of ``data``."""
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        boundary = secrets.token_hex(16)
        meta = json.dumps({"name": key, "md5Hash": base64.b64encode(digest).decode()})
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n".encode(),
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        url = f"{self.base}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        params = {"uploadType": "multipart", "fields": OBJECT_FIELDS}
        if if_generation is not None:
            params["ifGenerationMatch"] = str(if_generation)
        return url, params, body, f'multipart/related; boundary="{boundary}"', digest

    async def _put_once(
        self,
        url: str,
        params: dict[str, str],
        bucket: str,
        key: str,
        body: bytes,
        ctype: str,
        digest: bytes,
        size: int,
        what: str,
    ) -> ObjectMeta:
        headers = {**await self._headers(), "Content-Type": ctype}
        async with self.engine.session.post(url, params=params, data=body, headers=headers) as r:
            answer = await r.read()
            _refused(r.status, params, bucket, key)
            if r.status != 200:
                _fail(r.status, r.headers, answer, what)
        got = _uploaded(answer, key, size, what)
        if got.md5 is not None and got.md5 != digest.hex():
            await self._discard(bucket, key, str(got.version))
            raise IntegrityError(f"{what}: the stored object's MD5 {got.md5} does not match the file (removed)")
        return ObjectMeta(key, size, got.version, got.mtime, got.md5 or digest.hex())

    async def _discard(self, bucket: str, key: str, generation: str) -> None:
        """Delete a bad upload, only while it is still the live generation (best effort)."""
        try:
            url = self._object(bucket, key)
            params = {"ifGenerationMatch": generation}
            async with self.engine.session.delete(url, params=params, headers=await self._headers()) as r:
                await r.read()
        except Exception:  # noqa: BLE001, S110 - gone or rewritten meanwhile: not ours to remove
            pass


def _refused(status: int, params: dict[str, str], bucket: str, key: str) -> None:
    """Raise `PreconditionFailed` for a conditional upload the service refused (412)."""
    if status == 412 and "ifGenerationMatch" in params:
        generation = int(params["ifGenerationMatch"])
        raise PreconditionFailed.of(f"gs://{bucket}/{key}", None if generation == 0 else str(generation))


def _uploaded(answer: bytes, key: str, size: int, what: str) -> ObjectMeta:
    """The object resource an upload answered with (unreadable: `Transient`, worth another try)."""
    try:
        return _object_meta({"name": key, "size": size, **json.loads(answer)})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Transient(StoreError(f"{what}: unreadable answer from the service")) from exc


def _object_meta(o: dict[str, Any]) -> ObjectMeta:
    """An object resource of the JSON API as `ObjectMeta`."""
    return ObjectMeta(
        o["name"],
        int(o.get("size") or 0),
        str(o["generation"]) if "generation" in o else None,
        _mtime(o["updated"]) if "updated" in o else None,
        b64_to_hex(o.get("md5Hash")),
    )


def _fail(status: int, headers: Any, body: bytes, what: str) -> NoReturn:
    """Raise the error an answer of ``status`` means (`Transient` when worth another try)."""
    err = map_status(status, headers, body, what)
    if status in TRANSIENT_STATUS:
        raise Transient(err, retry_after(headers))
    raise err


def _check_received(sent: dict[str, str], md5: Any, crc: Any, what: str) -> None:
    """Raise `IntegrityError` unless the bytes hashed into ``md5`` (and ``crc``, a CRC32C or None)
    match the ``x-goog-hash`` the service ``sent``: its MD5, else its CRC32C (a composite object)."""
    if "md5" in sent:
        ok = base64.b64decode(sent["md5"]) == md5.digest()
    else:
        ok = "crc32c" not in sent or crc is None or base64.b64decode(sent["crc32c"]) == crc.digest()
    if not ok:
        raise IntegrityError(f"{what}: the bytes received do not match the object's checksum")


def _crc32c() -> Any:
    try:
        import google_crc32c
    except ImportError:  # pragma: no cover - installed with google-cloud-storage
        return None
    return google_crc32c.Checksum()
