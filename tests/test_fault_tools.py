"""The fault-injection tools themselves: `FaultProxy` framing and faults, `FaultyStore`, `CountingStore`."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pos3 import StoreError
from pos3.store import ObjectStore
from pos3.stores.file import FileStore
from pos3.testing.faultproxy import FaultProxy
from pos3.wrappers.counting import CountingStore
from pos3.wrappers.faults import FaultyStore, fail_first, fail_keys, fail_nth

BODY = bytes(range(256)) * 400  # 102,400 bytes


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[bytes] = []
    peers: set[tuple[str, int]] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).peers.add(self.client_address)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 30_000):
                piece = BODY[start : start + 30_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/redirect":
            self.send_response(308)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/len")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    def do_PUT(self) -> None:  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(data)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client the proxy reset mid-body is expected here


@pytest.fixture
def upstream() -> Iterator[str]:
    _Upstream.received, _Upstream.peers = [], set()
    server = _QuietServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _conn(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def test_keep_alive_through_the_proxy_with_both_framings(upstream: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        conn = _conn(proxy)
        assert _get(conn, "/len") == (200, BODY)
        assert _get(conn, "/chunked") == (200, BODY)
        conn.request("PUT", "/x", body=b"payload")
        r = conn.getresponse()
        assert (r.status, r.read()) == (201, b"")
        assert _get(conn, "/len") == (200, BODY)
        conn.close()
        assert proxy.requests == 4 and proxy.count(method="GET") == 3 and proxy.injected == 0
    assert len(_Upstream.peers) == 1  # one upstream connection carried every request
    assert _Upstream.received == [b"payload"]


def test_first_n_then_through_and_s3_slowdown_body(upstream: str) -> None:
    with FaultProxy(upstream, flavour="s3") as proxy:
        proxy.set("status", status=503, first=2)
        conn = _conn(proxy)
        for _ in range(2):
            status, body = _get(conn, "/len")
            assert status == 503 and b"<Code>SlowDown</Code>" in body
        assert _get(conn, "/len") == (200, BODY)
        assert proxy.count(fault="status") == 2


def test_rates_are_deterministic_for_a_seed(upstream: str) -> None:
    def statuses(seed: int) -> list[int]:
        with FaultProxy(upstream, flavour="gcs", seed=seed) as proxy:
            proxy.set("status", status=500, rate=0.5)
            conn = _conn(proxy)
            return [_get(conn, "/len")[0] for _ in range(20)]

    first = statuses(7)
    assert first == statuses(7)
    assert 500 in first and 200 in first


def test_corruption_keeps_the_length_and_flips_one_byte(upstream: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        conn = _conn(proxy)
        for path in ("/len", "/chunked"):
            proxy.set("corrupt", first=1)
            status, body = _get(conn, path)
            assert status == 200 and len(body) == len(BODY)
            assert sum(a != b for a, b in zip(body, BODY, strict=True)) == 1, path
        proxy.set("corrupt_request", first=1)
        conn.request("PUT", "/x", body=BODY)
        assert conn.getresponse().status == 201
    [got] = _Upstream.received
    assert len(got) == len(BODY) and sum(a != b for a, b in zip(got, BODY, strict=True)) == 1


@pytest.mark.parametrize("kind", ["cut", "reset", "drop"])
def test_broken_responses(upstream: str, kind: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        proxy.set(kind, first=1)
        conn = _conn(proxy)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            _get(conn, "/len")
        conn.close()
        assert _get(_conn(proxy), "/len") == (200, BODY)  # the next connection is clean


def test_a_stall_is_released_when_the_rules_change(upstream: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        proxy.set("stall", seconds=60)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.5)
        conn.request("GET", "/len")
        r = conn.getresponse()
        with pytest.raises(TimeoutError):
            r.read()
        proxy.clear()  # wakes the stalled connection, which is then reset
        assert _get(_conn(proxy), "/len") == (200, BODY)


def test_refuse_then_accept_on_the_same_port(upstream: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        port = proxy.port
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            _get(_conn(proxy), "/len")
        proxy.accept()
        assert proxy.port == port and _get(_conn(proxy), "/len") == (200, BODY)


def test_location_headers_point_at_the_proxy(upstream: str) -> None:
    with FaultProxy(upstream, flavour="plain") as proxy:
        conn = _conn(proxy)
        conn.request("GET", "/redirect")
        r = conn.getresponse()
        r.read()
        assert r.getheader("Location") == f"{proxy.endpoint}/len"


def test_deny_answers_403_in_each_flavour(upstream: str) -> None:
    for flavour, marker in (("s3", b"AccessDenied"), ("gcs", b"forbidden"), ("azure", b"AuthorizationFailure")):
        with FaultProxy(upstream, flavour=flavour) as proxy:
            proxy.set("deny")
            status, body = _get(_conn(proxy), "/len")
            assert status == 403 and marker in body


# -- wrapper stores ---------------------------------------------------------------


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    """The built-in file store over a fresh directory (its bucket)."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    return FileStore(bucket)


def test_faulty_store_hooks(file_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"data")
    store = FaultyStore(file_store, put=fail_keys({"bad"}), get=fail_nth(2), delete=fail_first(1))
    with pytest.raises(StoreError, match="injected failure for bad"):
        store.put("bad", src)
    store.put("good", src)
    store.get("good", tmp_path / "d1")
    with pytest.raises(StoreError):
        store.get("good", tmp_path / "d2")  # the second call
    store.get("good", tmp_path / "d3")
    with pytest.raises(StoreError):
        store.delete(["good"])
    assert [m.key for m in store.list("")] == ["good"]
    store.delete(["good"])
    assert list(file_store.list("")) == []
    failed = FaultyStore(file_store, put=fail_keys({"k"})).start_put("k", src)
    assert failed is not None and isinstance(failed.exception(), StoreError)


def test_counting_store_counts_each_verb_across_threads(file_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    store = CountingStore(file_store)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(f"k{i:03d}", src), range(200)))
        list(pool.map(lambda i: store.head(f"k{i:03d}"), range(50)))
    assert len(list(store.list(""))) == 200
    store.delete(f"k{i:03d}" for i in range(10))
    assert store.counts == {"put": 200, "head": 50, "list": 1, "delete": 1}
    assert store.keys_deleted == 10 and store.total == 252
