"""A fault-injecting HTTP/1.1 proxy for tests and benchmarks.

`FaultProxy` listens on ``127.0.0.1`` and relays every connection to one
upstream server (SeaweedFS, fake-gcs-server, Azurite, or any HTTP/1.1
service). Point a store's endpoint at `FaultProxy.endpoint` and program
faults at run time from the test::

    with FaultProxy("http://127.0.0.1:8333", flavour="s3", seed=7) as proxy:
        backend = connect(endpoint=proxy.endpoint)
        proxy.set("status", status=503, first=3)    # the next three requests: 503 SlowDown
        proxy.set("reset", rate=0.2, method="GET")  # then: one GET in five is reset mid-body
        proxy.add("corrupt", path="/bucket/key")    # ... and that object's body has one byte flipped
        proxy.clear()                               # back to a transparent proxy
        proxy.count(method="PUT")                   # requests seen so far

Faults (the ``kind`` of a rule):

``reset``
    Relay the response head and half its body, then reset the connection (RST).
``cut``
    Relay the head (with its original ``Content-Length``) and half the body,
    then close cleanly: the client sees a body shorter than announced.
``stall``
    Relay the head and half the body, then send nothing for ``seconds``
    (or until the rule set changes or the proxy stops), then reset.

    These three strike before the head when the response has no body (the
    request has then reached the server, but the client never learns so).
``status``
    Answer ``status`` (500 or 503 ...) without asking upstream, with a body the
    flavour's clients parse: S3 ``SlowDown``/``InternalError`` XML, a GCS JSON
    error, an Azure ``ServerBusy``/``InternalError`` XML error.
``deny``
    Answer 403 without asking upstream (S3 ``AccessDenied``, GCS ``forbidden``,
    Azure ``AuthorizationFailure``).
``corrupt``
    Flip one byte in the middle of a successful response's body, length unchanged.
``corrupt_request``
    Flip one byte in the middle of the request body before relaying it (uploads).
``drop``
    Reset the connection as soon as the request is read, without an answer.
``ratelimit``
    Admit at most ``per_second`` matching requests a second (a token bucket
    holding up to ``burst`` tokens, full at the start); a request finding no
    token is answered ``status`` (503: S3 ``SlowDown``) with a ``Retry-After``
    header of ``retry_after`` seconds (an integer, as HTTP requires) and the
    same in milliseconds as ``x-amz-retry-after``, without asking upstream.
    ``first`` and ``rate`` do not apply; ``fired`` counts the refusals.

A rule fires for the first ``first`` matching requests, or else for each
matching request with probability ``rate`` (drawn from a generator seeded
with ``seed``, so a run of requests in one order always sees the same
faults). ``method`` and ``path`` (a substring of the request target) restrict
which requests match. Rules are tried in the order they were added; the
first that fires applies. `refuse` closes the listening socket (clients then
get "connection refused") until `accept` opens it again on the same port.

Framing: requests and responses with ``Content-Length``, ``chunked``
transfer coding, bodiless answers (HEAD, 1xx, 204, 304) and bodies ended by
closing are understood, so pooled keep-alive connections work through the
proxy. ``Expect: 100-continue`` is answered by the proxy itself, and a
``Location`` header naming the upstream is rewritten to name the proxy
(resumable-upload sessions stay on it). Bodies are streamed, never held
whole in memory.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "Rule", "Seen"]

KINDS = ("reset", "cut", "stall", "status", "deny", "corrupt", "corrupt_request", "drop", "ratelimit")
FLAVOURS = ("s3", "gcs", "azure", "plain")
CHUNK = 64 * 1024
_MAX_LINE = 65536


@dataclass
class Rule:
    """One programmed fault (see the module docstring for each ``kind``)."""

    kind: str
    rate: float = 1.0
    first: int | None = None
    method: str | None = None
    path: str | None = None
    status: int = 503
    seconds: float = 30.0
    per_second: float = 100.0
    burst: float = 10.0
    retry_after: int = 1
    fired: int = 0
    _tokens: float | None = None
    _refilled: float = 0.0

    def admit(self) -> bool:
        """Take a token of a ``ratelimit`` rule if one is left (call it under the proxy's lock)."""
        now = time.monotonic()
        if self._tokens is None:
            self._tokens = self.burst
        else:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and method.upper() != self.method.upper():
            return False
        return self.path is None or self.path in target


@dataclass(frozen=True)
class Seen:
    """One request the proxy read: its method, target, and the fault applied (or ``None``)."""

    method: str
    target: str
    fault: str | None


@dataclass
class _Message:
    """A request or response head, and how its body is framed."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]

    def encode(self, headers: list[tuple[str, str]] | None = None) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in (self.headers if headers is None else headers))]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.get("Transfer-Encoding") or "").lower()

    @property
    def length(self) -> int | None:
        value = self.get("Content-Length")
        return int(value) if value is not None else None


class _Closed(Exception):
    """The peer closed its connection."""


class _Reader:
    """Buffered reads from a socket (not ``socket.makefile``, whose open file would keep
    the descriptor alive after `FaultProxy.refuse` closes the socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(CHUNK)
        self.buf += data
        return bool(data)

    def readline(self, limit: int) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0 or len(self.buf) >= limit:
                n = end + 1 if end >= 0 else limit
                line = bytes(self.buf[:n])
                del self.buf[:n]
                return line
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read(self, n: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


def _read_head(f: _Reader) -> _Message:
    line = f.readline(_MAX_LINE)
    while line in (b"\r\n", b"\n"):
        line = f.readline(_MAX_LINE)
    if not line:
        raise _Closed
    msg = _Message(line.decode("latin-1").rstrip("\r\n"))
    while True:
        h = f.readline(_MAX_LINE)
        if not h:
            raise _Closed
        if h in (b"\r\n", b"\n"):
            return msg
        k, _, v = h.decode("latin-1").partition(":")
        msg.headers.append((k.strip(), v.strip()))


def _body(f: _Reader, msg: _Message, until_close: bool) -> Iterator[bytes]:
    """The decoded body of ``msg`` in pieces (chunked, by length, or until the peer closes)."""
    if msg.chunked:
        while True:
            size_line = f.readline(_MAX_LINE)
            if not size_line:
                raise _Closed
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while f.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are dropped
                return
            yield from _exactly(f, size)
            f.readline(_MAX_LINE)
    elif msg.length is not None:
        yield from _exactly(f, msg.length)
    elif until_close:
        while data := f.read(CHUNK):
            yield data


def _exactly(f: _Reader, n: int) -> Iterator[bytes]:
    """``n`` bytes of ``f`` in chunks; `_Closed` if the stream ends first."""
    while n:
        data = f.read(min(CHUNK, n))
        if not data:
            raise _Closed
        n -= len(data)
        yield data


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


_REASONS = {403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}


def _error_answer(flavour: str, status: int, head_request: bool, retry_after: int | None = None) -> bytes:
    """A complete error response the flavour's clients recognise (with ``Retry-After`` if given)."""
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers += [("Retry-After", str(retry_after)), ("x-amz-retry-after", str(retry_after * 1000))]
    if flavour == "gcs":
        reason = {403: "forbidden", 503: "backendError"}.get(status, "internalError")
        body = json.dumps(
            {"error": {"code": status, "message": f"injected {reason}", "errors": [{"reason": reason}]}}
        ).encode()
        headers.append(("Content-Type", "application/json; charset=UTF-8"))
    elif flavour in ("s3", "azure"):
        if flavour == "s3":
            code = {403: "AccessDenied", 503: "SlowDown"}.get(status, "InternalError")
        else:
            code = {403: "AuthorizationFailure", 503: "ServerBusy"}.get(status, "InternalError")
            headers.append(("x-ms-error-code", code))
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected {code}</Message></Error>"
        ).encode()
        headers.append(("Content-Type", "application/xml"))
    else:
        body = b"injected error"
        headers.append(("Content-Type", "text/plain"))
    headers.append(("Content-Length", str(len(body))))
    head = _Message(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers).encode()
    return head if head_request else head + body


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A fresh self-signed certificate for 127.0.0.1 (written to ``directory/cert.pem``, the CA
    bundle a client must trust) and a server context serving it, for ``FaultProxy(tls=...)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return cert_path, ctx


class FaultProxy:
    """A programmable fault-injecting proxy in front of ``upstream`` (``http://host:port``).

    Use it as a context manager (or call `start` and `close`). ``flavour``
    (``s3``, ``gcs``, ``azure`` or ``plain``) selects the error bodies of
    ``status`` and ``deny`` faults; ``seed`` makes ``rate`` draws repeatable.
    Thread-safe: rules may change while requests are in flight.
    """

    def __init__(self, upstream: str, *, flavour: str = "s3", seed: int = 0, tls: ssl.SSLContext | None = None) -> None:
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname or not url.port:
            raise ValueError(f"FaultProxy needs an http://host:port upstream, got {upstream!r}")
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
        self.upstream = (url.hostname, url.port)
        self.flavour = flavour
        self.tls = tls  # a server context: clients speak HTTPS to the proxy (see `self_signed`)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._socks: set[socket.socket] = set()
        self._changed = threading.Event()  # wakes stalls when the rules change or the proxy stops
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """The proxy's URL (``http://127.0.0.1:<port>``, or ``https://`` with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, wake every stall and drop every connection."""
        self._stopped.set()
        self._changed.set()
        self.refuse()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def refuse(self) -> None:
        """Close the listening socket and every open connection: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
        if listener is not None:
            with contextlib.suppress(OSError):  # stop listening now, even while accept() waits on it
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in socks:
            _reset(s)

    def accept(self) -> None:
        """Listen again (on the same port) after `refuse`."""
        with self._lock:
            if self._listener is None:
                self._listen()

    # -- programming ----------------------------------------------------------

    def set(self, kind: str, **options: object) -> Rule:
        """Replace every rule by one rule of ``kind``; see `Rule` for ``options``."""
        rule = self._rule(kind, options)
        with self._lock:
            self._rules = [rule]
        self._wake()
        return rule

    def add(self, kind: str, **options: object) -> Rule:
        """Add a rule after the existing ones."""
        rule = self._rule(kind, options)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (stalled responses are released and reset)."""
        with self._lock:
            self._rules = []
        self._wake()

    @staticmethod
    def _rule(kind: str, options: dict[str, object]) -> Rule:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {KINDS}")
        return Rule(kind, **options)  # type: ignore[arg-type]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = threading.Event()

    # -- counting -------------------------------------------------------------

    @property
    def seen(self) -> list[Seen]:
        """Every request read so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    def count(self, method: str | None = None, path: str | None = None, fault: str | None = None) -> int:
        """How many requests matched ``method``, ``path`` (substring) and ``fault`` (applied kind)."""
        return sum(
            1
            for s in self.seen
            if (method is None or s.method == method.upper())
            and (path is None or path in s.target)
            and (fault is None or s.fault == fault)
        )

    @property
    def requests(self) -> int:
        return len(self.seen)

    @property
    def injected(self) -> int:
        """How many faults were applied."""
        return sum(1 for s in self.seen if s.fault is not None)

    # -- relaying -------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                self._stopped.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            with self._lock:
                self._socks.add(client)
            threading.Thread(target=self._serve, args=(client,), name="faultproxy-conn", daemon=True).start()

    def _decide(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, target):
                    continue
                if rule.kind == "ratelimit":
                    fire = not rule.admit()
                elif rule.first is not None:
                    fire = rule.fired < rule.first
                else:
                    fire = rule.rate >= 1.0 or self._rng.random() < rule.rate
                if fire:
                    rule.fired += 1
                    return rule
            return None

    def _note(self, method: str, target: str, fault: str | None) -> None:
        with self._lock:
            self._seen.append(Seen(method, target, fault))

    def _serve(self, client: socket.socket) -> None:
        if self.tls is not None:
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except OSError:  # a client that does not trust the certificate, or went away
                _reset(client)
                return
            with self._lock:
                self._socks.add(client)
        upstream: socket.socket | None = None
        up_file: _Reader | None = None
        cin = _Reader(client)
        try:
            while True:
                try:
                    req = _read_head(cin)
                except (_Closed, OSError, ValueError):
                    return
                method, target = (req.start.split(" ") + ["", ""])[:2]
                rule = self._decide(method, target)
                self._note(method, target, rule.kind if rule else None)
                if (req.get("Expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                kind = rule.kind if rule else None
                if kind in ("status", "deny", "drop", "ratelimit"):
                    for _ in _body(cin, req, until_close=False):
                        pass
                    if kind == "drop":
                        return
                    assert rule is not None
                    status = 403 if kind == "deny" else rule.status
                    after = rule.retry_after if kind == "ratelimit" else None
                    client.sendall(_error_answer(self.flavour, status, method == "HEAD", after))
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=300)
                    with self._lock:
                        self._socks.add(upstream)
                    up_file = _Reader(upstream)
                assert up_file is not None
                self._send_request(upstream, cin, req, corrupt=kind == "corrupt_request")
                keep = self._relay_response(client, up_file, method, rule)
                if not keep:
                    return
                if (req.get("Connection") or "").lower() == "close":
                    return
        except (_Closed, OSError, ValueError):
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._socks.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()

    @staticmethod
    def _send_request(upstream: socket.socket, cin: _Reader, req: _Message, corrupt: bool) -> None:
        """Relay the request (without ``Expect``), flipping one body byte when ``corrupt``."""
        headers = req.without("Expect")
        if req.chunked:
            upstream.sendall(req.encode(headers))
            flip = corrupt
            for data in _body(cin, req, until_close=False):
                if flip and data:
                    data, flip = _flip(data, len(data) // 2), False
                upstream.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            upstream.sendall(b"0\r\n\r\n")
            return
        upstream.sendall(req.encode(headers))
        at = (req.length or 0) // 2 if corrupt and req.length else -1
        pos = 0
        for data in _body(cin, req, until_close=False):
            if 0 <= at - pos < len(data):
                data = _flip(data, at - pos)
            pos += len(data)
            upstream.sendall(data)

    def _relay_response(self, client: socket.socket, up: _Reader, method: str, rule: Rule | None) -> bool:
        """Relay one response, applying ``rule``; return whether the connection stays open."""
        resp = _read_head(up)
        while resp.start.split(" ")[1:2] and resp.start.split(" ")[1].startswith("1"):
            resp = _read_head(up)  # interim answers are not relayed (Expect was answered here)
        status = int(resp.start.split(" ")[1])
        bodiless = method == "HEAD" or status in (204, 304)
        closing = (resp.get("Connection") or "").lower() == "close"
        until_close = not bodiless and not resp.chunked and resp.length is None
        kind = rule.kind if rule else None
        if kind == "corrupt" and not (200 <= status < 300):
            kind = None
        length = resp.length if not resp.chunked else None
        if kind in ("reset", "cut", "stall") and (bodiless or length == 0):
            self._strike(client, kind, rule)  # no body to break: strike before the head
            return False
        # Where a mid-body fault strikes: half way, or in the first piece when the length is unknown.
        at = length // 2 if length else 0
        client.sendall(resp.encode(self._rewritten(resp)))
        if bodiless:
            return not closing
        pos = 0
        for data in _body(up, resp, until_close=until_close):
            if kind in ("reset", "cut", "stall") and pos + len(data) > at:
                keep = max(0, at - pos) if length else len(data) // 2
                self._send_piece(client, data[:keep], resp.chunked)
                self._strike(client, kind, rule)
                return False
            if kind == "corrupt" and 0 <= at - pos < len(data):
                data = _flip(data, at - pos if length else len(data) // 2)
                kind = None
            self._send_piece(client, data, resp.chunked)
            pos += len(data)
        if kind in ("reset", "cut", "stall"):  # an empty body: strike right after the head
            self._strike(client, kind, rule)
            return False
        if resp.chunked:
            client.sendall(b"0\r\n\r\n")
        return not (closing or until_close)

    def _rewritten(self, resp: _Message) -> list[tuple[str, str]]:
        """The response headers, with a ``Location`` on the upstream pointed at the proxy
        (so resumable-upload sessions keep going through it)."""
        host, port = self.upstream
        origins = (f"http://{host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}")
        out = []
        for k, v in resp.headers:
            if k.lower() == "location":
                for origin in origins:
                    if v.startswith(origin):
                        v = self.endpoint + v[len(origin) :]
                        break
            out.append((k, v))
        return out

    @staticmethod
    def _send_piece(client: socket.socket, data: bytes, chunked: bool) -> None:
        if not data:
            return
        client.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    def _strike(self, client: socket.socket, kind: str, rule: Rule | None) -> None:
        if kind == "stall":
            assert rule is not None
            changed = self._changed
            changed.wait(rule.seconds)
            _reset(client)
        elif kind == "reset":
            _reset(client)
        else:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
