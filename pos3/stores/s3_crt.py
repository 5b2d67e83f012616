"""Native bulk transfers for the S3 store, through the AWS Common Runtime (``awscrt``).

boto3 spends a few milliseconds of Python per request (building, signing,
parsing); the CRT keeps the request loop, signing, retries and multipart
splitting in native code, which is several times faster for small objects
and saturates the link for large ones. The S3 backend gives it the signing
region, the bucket URLs and the credentials (resolved natively, or from the
boto3 client and its session's chain, refreshed on demand); a public profile
sends unsigned requests.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode, urlsplit
from xml.etree import ElementTree

from ..integrity import IntegrityError, TransferInterrupted
from ..local import md5_digest, pwrite_all
from ..store import ObjectMeta, StoreError, Throttled, chain, retry_after
from .s3_config import Credentials

#: Objects above this size are split into parts by the CRT.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: The CRT's buffer budget (its minimum): large transfers stay fast without
#: holding a whole object in memory.
MEMORY_LIMIT = 256 * 1024 * 1024
_PROBE_KEY = "__pos3_probe__"
#: Seconds without an answer after which an HTTPS request's host is checked for a TLS problem.
DIAGNOSE_AFTER = 5.0


def presigned_base(client: Any, bucket: str) -> tuple[str, str]:
    """(host, path prefix) of ``bucket``'s objects, exactly as the boto3 ``client`` addresses them."""
    url = urlsplit(client.generate_presigned_url("get_object", {"Bucket": bucket, "Key": _PROBE_KEY}))
    if not url.path.endswith("/" + _PROBE_KEY):
        raise StoreError(f"cannot derive the object URL for bucket {bucket!r}")
    return url.netloc, url.path[: -len(_PROBE_KEY)]


class ConditionFailed(Exception):
    """A conditional request's condition did not hold (412, or 409 ConditionalRequestConflict)."""


class CrtTransfers:
    """Native S3 requests (GET to a file, PUT from a file or bytes, HEAD, list, delete) for one backend."""

    def __init__(
        self,
        region: str,
        https: bool,
        credentials: Credentials | Callable[[], Credentials] | None,
        bucket_base: Callable[[str], tuple[str, str]],
        part_size: int,
        max_attempts: int = 8,
        timeout: float = 120,
        ca_bundle: str | None = None,
    ) -> None:
        """``credentials``: fixed keys, a function giving the current ones, or None (unsigned);
        ``bucket_base(bucket)``: the (host, path prefix ending in '/') of its objects; ``ca_bundle``:
        the certificates to trust instead of the system's (botocore's ``AWS_CA_BUNDLE``/``ca_bundle``)."""
        from awscrt.auth import AwsCredentials, AwsCredentialsProvider
        from awscrt.s3 import S3Client, S3RequestTlsMode, S3RetryConfig, create_default_s3_signing_config

        signing = None
        if credentials is not None:
            if callable(credentials):
                get = credentials

                def current() -> AwsCredentials:
                    return AwsCredentials(*get())

                provider = AwsCredentialsProvider.new_delegate(current)
            else:
                provider = AwsCredentialsProvider.new_static(*credentials)
            signing = create_default_s3_signing_config(region=region, credential_provider=provider)
        tls = None
        if https and ca_bundle:
            from awscrt.io import ClientTlsContext, TlsContextOptions

            options = TlsContextOptions()
            options.override_default_trust_store_from_path(ca_filepath=ca_bundle)
            tls = ClientTlsContext(options).new_connection_options()
        self.crt = S3Client(
            region=region,
            tls_mode=S3RequestTlsMode.ENABLED if https else S3RequestTlsMode.DISABLED,
            tls_connection_options=tls,
            signing_config=signing,
            part_size=part_size,
            multipart_upload_threshold=max(part_size, MULTIPART_THRESHOLD),
            throughput_target_gbps=10.0,
            memory_limit=max(MEMORY_LIMIT, 8 * part_size),
            connect_timeout_ms=int(min(10, timeout) * 1000),  # as the boto3 client's connect_timeout
            # As boto3's max_attempts, from 50 ms (botocore's base for errors other than throttling): the CRT
            # cannot read Retry-After, so throttling it did not absorb soon goes to pos3.wrappers.backoff.
            retry_config=S3RetryConfig(max_retries=max(1, max_attempts - 1), backoff_scale_factor_ms=50),
        )
        self._bucket_base = bucket_base
        self._bases: dict[str, tuple[str, str]] = {}
        self._ca_bundle = ca_bundle
        self._tls_problems: dict[str, str | None] = {}
        self._watchdog = _Watchdog(timeout, self._tls_problem if https else None)

    def _tls_problem(self, host: str) -> str | None:
        """Why a TLS handshake with ``host`` fails under the trust the CRT was given (the system's
        CAs, or the CA bundle), or None when it succeeds or fails otherwise; asked once per host."""
        if host not in self._tls_problems:
            self._tls_problems[host] = tls_problem(host, self._ca_bundle)
        return self._tls_problems[host]

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        """(host, path) of ``key``."""
        base = self._bases.get(bucket)
        if base is None:
            base = self._bases[bucket] = self._bucket_base(bucket)
        host, prefix = base
        return host, prefix + quote(key, safe="/~")

    def _bucket_target(self, bucket: str) -> tuple[str, str]:
        """(host, path) of the bucket itself (no trailing '/' after a path-style bucket name)."""
        host, path = self._target(bucket, "")
        return host, path[:-1] if path.endswith("/") and path != "/" else path

    def _start(
        self,
        kind: str,
        path: str,
        host: str,
        headers: list[tuple[str, str]],
        what: str,
        result: Callable[[dict[str, str]], Any] = lambda got: got,
        **kwargs: Any,
    ) -> Future:
        """Start one request of ``kind`` (GET_OBJECT, PUT_OBJECT or DEFAULT); its future gives
        ``result(response headers)`` (run on the completing CRT thread, so it must be short)."""
        from awscrt.http import HttpHeaders, HttpRequest
        from awscrt.s3 import S3RequestType

        got: dict[str, str] = {}
        watch = _Watch(host)
        body_cb = kwargs.pop("on_body", None)

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            watch.touch()
            watch.answered = True
            got.update((k.lower(), v) for k, v in headers)

        def on_body(chunk: bytes, **kw: Any) -> None:
            watch.touch()
            if body_cb is not None:
                body_cb(chunk, **kw)

        method = kwargs.pop("method", None) or ("PUT" if kind == "PUT_OBJECT" else "GET")
        body = kwargs.pop("body", None)
        request = HttpRequest(method, path, HttpHeaders([("Host", host), *headers]), body)
        callbacks: dict[str, Any] = {"on_headers": on_headers}
        if body_cb is not None or kind == "DEFAULT":
            callbacks["on_body"] = on_body
        if kind == "PUT_OBJECT":  # a body received reports progress through on_body (one callback less)
            callbacks["on_progress"] = lambda _n: watch.touch()
        try:
            done = self.crt.make_request(type=S3RequestType[kind], request=request, **callbacks, **kwargs)
        except RuntimeError as exc:  # refused before sending: a local file it cannot open
            file = kwargs.get("send_filepath")
            if file is None:
                raise
            raise _file_error(exc, what, file) from None
        self._watchdog.add(watch, done)
        return _then(done.finished_future, lambda _: result(got), what, watch)

    def list_page(self, bucket: str, prefix: str, token: str | None, start_after: str | None) -> ListPage:
        """One ListObjectsV2 page, parsed natively (no per-key Python objects beyond the results)."""
        host, path = self._bucket_target(bucket)
        query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url")]
        if token is not None:
            query.append(("continuation-token", token))
        if start_after is not None:
            query.append(("start-after", start_after))
        body = bytearray()

        def on_body(chunk: bytes, **_: Any) -> None:
            body.extend(chunk)

        target = path + "?" + urlencode(query, quote_via=quote)
        what = f"Listing s3://{bucket}/{prefix}"
        self._start("DEFAULT", target, host, [], what, on_body=on_body, operation_name="ListObjectsV2").result()
        try:
            return _parse_list(bytes(body))
        except (ElementTree.ParseError, ValueError) as exc:
            raise TransferInterrupted(f"{what}: unreadable listing page ({exc})") from exc

    def head(self, bucket: str, key: str) -> ObjectMeta:
        """One HeadObject (`FileNotFoundError` if there is no such object, or no such bucket)."""
        host, path = self._target(bucket, key)
        what = f"Reading s3://{bucket}/{key}"
        got = self._start("DEFAULT", path, host, [], what, method="HEAD", operation_name="HeadObject").result()
        return _meta(key, int(got.get("content-length", 0)), got)

    def head_bucket(self, bucket: str) -> None:
        """One HeadBucket (`FileNotFoundError` if the bucket does not exist)."""
        host, path = self._bucket_target(bucket)
        what = f"Reading s3://{bucket}"
        self._start("DEFAULT", path, host, [], what, method="HEAD", operation_name="HeadBucket").result()

    def put_bytes(self, bucket: str, key: str, data: bytes, conditions: Iterable[tuple[str, str]] = ()) -> ObjectMeta:
        """One PutObject of ``data`` with its Content-MD5 and the given conditional headers
        (`ConditionFailed` if the server refuses on a condition)."""
        host, path = self._target(bucket, key)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        headers = [("Content-Length", str(len(data))), ("Content-MD5", md5), *conditions]
        what = f"Uploading s3://{bucket}/{key}"
        got = self._start("PUT_OBJECT", path, host, headers, what, body=io.BytesIO(data)).result()
        return _meta(key, len(data), got)

    def delete_objects(self, bucket: str, keys: list[str]) -> list[tuple[str, str]]:
        """One quiet DeleteObjects of up to 1,000 ``keys``: the (key, code) of each key not deleted."""
        host, path = self._bucket_target(bucket)
        objects = "".join(f"<Object><Key>{_xml_text(k)}</Key></Object>" for k in keys)
        data = f'<Delete xmlns="{_NS[1:-1]}"><Quiet>true</Quiet>{objects}</Delete>'.encode()
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        headers = [("Content-Length", str(len(data))), ("Content-MD5", md5), ("Content-Type", "application/xml")]
        body = bytearray()

        def on_body(chunk: bytes, **_: Any) -> None:
            body.extend(chunk)

        what = f"Deleting {len(keys)} objects from s3://{bucket}"
        self._start(
            "DEFAULT",
            path + "?delete",
            host,
            headers,
            what,
            method="POST",
            body=io.BytesIO(data),
            on_body=on_body,
            operation_name="DeleteObjects",
        ).result()
        try:
            root = ElementTree.fromstring(bytes(body))
        except ElementTree.ParseError as exc:
            raise TransferInterrupted(f"{what}: unreadable answer ({exc})") from exc
        ns = _NS if root.tag.startswith(_NS) else ""
        return [(e.findtext(f"{ns}Key") or "", e.findtext(f"{ns}Code") or "") for e in root.iterfind(f"{ns}Error")]

    def start_get(self, bucket: str, key: str, dest: Path) -> Future:
        """Download ``key`` into ``dest``, hashing the body as it is written; the future gives
        its `ObjectMeta` and the hex MD5 of the bytes written (None if they did not arrive in
        order, so only reading the file back tells).

        The body comes through the CRT's body callback, written with ``pwrite`` at its offset
        (short writes completed), so the MD5 check needs no second read of the file and no hop to
        another thread, as it would if the CRT wrote the file itself (``recv_filepath``).
        """
        host, path = self._target(bucket, key)
        what = f"Downloading s3://{bucket}/{key}"
        sink = _HashingSink(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))

        def landed(got: dict[str, str]) -> tuple[ObjectMeta, str | None]:
            return _meta(key, sink.close(), got), sink.md5

        try:
            started = self._start("GET_OBJECT", path, host, [], what, landed, on_body=sink.write)
        except BaseException:
            sink.close()
            raise
        started.add_done_callback(lambda _: sink.close())  # also on failure
        return started

    def start_put(self, bucket: str, key: str, src: Path, size: int) -> Future:
        """Upload ``src`` (of ``size`` bytes) to ``key``; the future gives its `ObjectMeta`."""
        host, path = self._target(bucket, key)
        from awscrt.s3 import S3ChecksumAlgorithm, S3ChecksumConfig, S3ChecksumLocation

        headers = [("Content-Length", str(size))]
        extra: dict[str, Any] = {}
        if size <= MULTIPART_THRESHOLD:  # one request: let the server check the bytes it got
            headers.append(("Content-MD5", base64.b64encode(md5_digest(src)).decode()))
        else:  # parts: each sent with a CRC32C the server checks (the caller checks the ETag after)
            extra["checksum_config"] = S3ChecksumConfig(
                algorithm=S3ChecksumAlgorithm.CRC32C, location=S3ChecksumLocation.HEADER
            )
        what = f"Uploading s3://{bucket}/{key}"
        started = self._start("PUT_OBJECT", path, host, headers, what, send_filepath=str(src), **extra)
        return _then(started, lambda got: _meta(key, size, got), what)


class _HashingSink:
    """A body written at its offsets into an open descriptor, MD5-hashed while its chunks arrive in order."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self.size = 0  # bytes hashed: the next offset expected
        self.on_disk = 0  # the file's size, once closed
        self._md5: Any = hashlib.md5(usedforsecurity=False)

    def write(self, chunk: bytes, offset: int = 0, **_: Any) -> None:
        assert self.fd is not None
        pwrite_all(self.fd, chunk, offset)
        if offset == self.size and self._md5 is not None:
            self._md5.update(chunk)
            self.size += len(chunk)
        else:  # out of order (the CRT delivers in order; never trusted blindly)
            self._md5 = None

    @property
    def md5(self) -> str | None:
        """The hex MD5 of the body, if every chunk arrived in order."""
        return None if self._md5 is None else self._md5.hexdigest()

    def close(self) -> int:
        """Close the descriptor (once); the file's size."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                self.on_disk = os.fstat(fd).st_size
            finally:
                os.close(fd)
        return self.on_disk


def _then(fut: Future, fn: Any, what: str, watch: _Watch | None = None) -> Future:
    """A future of ``fn(fut.result())``; a CRT error becomes the matching Python exception."""
    return chain(fut, fn, lambda exc: _map_crt(exc, what, watch))


class _Watch:
    """When a request to ``host`` last made progress, whether it was answered, and whether (and
    why, when known) the watchdog cancelled it."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.last = time.monotonic()
        self.answered = False
        self.checked = False
        self.stalled = False
        self.why: str | None = None

    def touch(self) -> None:
        self.last = time.monotonic()


class _Watchdog:
    """Cancels a request that made no progress (no header, body byte or part) for ``timeout``
    seconds, as boto3's read timeout does; the caller retries it (`TransferInterrupted`).

    The CRT reports no TLS failure (it keeps trying): a request still unanswered after
    `DIAGNOSE_AFTER` seconds has ``diagnose(host)`` say why its host cannot be reached, if it
    can tell (an untrusted certificate), and is then cancelled with that reason at once."""

    def __init__(self, timeout: float, diagnose: Callable[[str], str | None] | None = None) -> None:
        self.timeout = timeout
        self.diagnose = diagnose
        self._lock = threading.Lock()
        self._active: dict[int, tuple[_Watch, Any]] = {}
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch, request: Any) -> None:
        with self._lock:
            self._active[id(watch)] = (watch, request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pos3-crt-watchdog", daemon=True)
                self._thread.start()
        request.finished_future.add_done_callback(lambda _: self._drop(watch))

    def _drop(self, watch: _Watch) -> None:
        with self._lock:
            self._active.pop(id(watch), None)

    def _run(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            with self._lock:
                active = [(w, r) for w, r in self._active.values() if not w.stalled]
            for watch, request in active:
                idle = now - watch.last
                diagnose = None if watch.answered or watch.checked else self.diagnose
                if diagnose is not None and min(self.timeout / 2, DIAGNOSE_AFTER) < idle <= self.timeout:
                    watch.checked = True
                    watch.why = diagnose(watch.host)
                if idle > self.timeout or watch.why is not None:
                    watch.stalled = True
                    request.cancel()


def tls_problem(host: str, ca_bundle: str | None, timeout: float = 10.0) -> str | None:
    """Why a TLS handshake with ``host`` (``name[:port]``) fails when trusting ``ca_bundle`` (else
    the system's CAs), or None when it succeeds or the connection fails for another reason."""
    import socket
    import ssl

    url = urlsplit(f"//{host}")
    name, port = url.hostname or host, url.port or 443
    trusting = f"the CA bundle {ca_bundle}" if ca_bundle else "the system's CAs"
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
        with (
            socket.create_connection((name, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=name),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return (
            f"TLS: the certificate of {host} is not trusted ({exc.verify_message}; trusting {trusting}): "
            "give the CA bundle that signed it (the S3 profile option ca_bundle, AWS_CA_BUNDLE, or ca_bundle "
            "in the AWS config file)"
        )
    except ssl.SSLError as exc:
        return f"TLS: the handshake with {host} failed ({exc.reason or exc}; trusting {trusting})"
    except OSError:
        return None


def _map_crt(exc: BaseException, what: str, watch: _Watch | None = None) -> BaseException:
    """An `S3ResponseError` by its status and code; any other CRT error (refused or broken
    connections after the CRT's retries) as a `StoreError` naming it; the rest unchanged."""
    from awscrt.exceptions import AwsCrtError
    from awscrt.s3 import S3ResponseError

    if watch is not None and watch.stalled:
        if watch.why is not None:
            return StoreError(f"{what}: {watch.why}")
        return TransferInterrupted(f"{what}: no progress for a whole timeout; cancelled")
    if isinstance(exc, S3ResponseError) and getattr(exc, "status_code", None) is not None:
        return _map(exc, what)
    if isinstance(exc, AwsCrtError):
        if exc.name in ("AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH", "AWS_ERROR_S3_CHECKSUM_CALCULATION_FAILED"):
            return IntegrityError(f"{what}: checksum mismatch ({exc.name})")
        if exc.name == "AWS_ERROR_S3_SLOW_DOWN":  # a throttling answer the CRT's retries did not absorb
            return Throttled(f"{what}: {exc.message} ({exc.name})")
        return StoreError(f"{what}: {exc.message} ({exc.name})")
    return exc


#: The CRT's names of the errors of opening a local file, and the errno Python reports for each.
_FILE_ERRNOS = {
    "AWS_ERROR_FILE_INVALID_PATH": errno.ENOENT,
    "AWS_ERROR_NO_PERMISSION": errno.EACCES,
    "AWS_ERROR_MAX_FDS_EXCEEDED": errno.EMFILE,
}


def _file_error(exc: RuntimeError, what: str, path: str) -> OSError:
    """A local file the CRT would not open (``'44 (AWS_ERROR_FILE_INVALID_PATH): ...'``) as the
    `OSError` Python's ``open`` raises (`FileNotFoundError`, `PermissionError`...), naming the file."""
    text = str(exc)
    for name, code in _FILE_ERRNOS.items():
        if name in text:
            return OSError(code, f"{what}: {os.strerror(code)}", path)  # OSError picks the subclass
    return OSError(f"{what}: {path}: {text}")


@dataclass
class ListPage:
    """One parsed ListObjectsV2 response."""

    objects: list[ObjectMeta]
    truncated: bool
    next_token: str | None
    max_keys: int


_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _parse_list(body: bytes) -> ListPage:
    """Parse a ListObjectsV2 body requested with ``encoding-type=url``."""
    root = ElementTree.fromstring(body)
    ns = _NS if root.tag.startswith(_NS) else ""
    encoded = (root.findtext(f"{ns}EncodingType") or "").lower() == "url"
    objects = []
    for c in root.iterfind(f"{ns}Contents"):
        key = c.findtext(f"{ns}Key") or ""
        etag = (c.findtext(f"{ns}ETag") or "").strip('"') or None
        modified = c.findtext(f"{ns}LastModified")
        objects.append(
            ObjectMeta(
                unquote_plus(key) if encoded else key,
                int(c.findtext(f"{ns}Size") or 0),
                etag,
                _iso_timestamp(modified) if modified else None,
                md5_from_etag(etag),
            )
        )
    token = root.findtext(f"{ns}NextContinuationToken")
    return ListPage(
        objects,
        (root.findtext(f"{ns}IsTruncated") or "").lower() == "true",
        token,
        int(root.findtext(f"{ns}MaxKeys") or 1000),
    )


def _iso_timestamp(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class EmptyObject(Exception):
    """The CRT's ranged GET cannot fetch an empty object; the caller falls back to one plain GET."""


def md5_from_etag(etag: str | None) -> str | None:
    """A single-part S3 ETag is the hex MD5 of the content; a multipart one is not."""
    return etag.lower() if etag and len(etag) == 32 and "-" not in etag else None


def _xml_text(value: str) -> str:
    """``value`` escaped for XML text (a carriage return kept as a reference, not normalised away)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _meta(key: str, size: int, headers: dict[str, str]) -> ObjectMeta:
    etag = headers.get("etag", "").strip('"') or None
    modified = headers.get("last-modified")
    mtime = parsedate_to_datetime(modified).timestamp() if modified else None
    return ObjectMeta(key, size, etag, mtime, md5_from_etag(etag))


def _map(exc: Any, what: str) -> Exception:
    status = getattr(exc, "status_code", None)
    body = (getattr(exc, "body", None) or b"")[:2000].decode("utf-8", "replace")
    code = body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else str(status)
    if status == 412 or code == "ConditionalRequestConflict":
        return ConditionFailed(f"{what}: HTTP {status} {code}")
    if status == 416:
        return EmptyObject(f"{what}: the object is empty (or was emptied while it was read)")
    if status == 404:
        return FileNotFoundError(f"{what}: not found ({code})")
    if status == 403:
        return PermissionError(f"{what}: access denied ({code})")
    from .s3 import INTEGRITY_CODES, THROTTLE_CODES

    if code in INTEGRITY_CODES:
        return IntegrityError(f"{what}: the server received bytes that do not match their checksum ({code})")
    if code in THROTTLE_CODES or status in (429, 503):
        return Throttled(f"{what}: HTTP {status} {code}", retry_after(getattr(exc, "headers", None)))
    return StoreError(f"{what}: HTTP {status} {code}")
