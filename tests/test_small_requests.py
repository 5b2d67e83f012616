"""`pos3_backends._http.SmallRequests` against a scripted HTTP server on loopback: retries, the
errors left after them, and kept-alive connections the server closed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from pos3.integrity import TransferInterrupted
from pos3.store import StoreError
from pos3_backends._http import RetryPolicy, SmallRequests, Transient

FAST = RetryPolicy(attempts=3, deadline=5.0, first=0.01, cap=0.02)


class Script:
    """What the server answers, one entry per request: (status, body) or "cut" (a body cut short)."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.seen: list[tuple[str, str, str | None]] = []
        self.connections: set[int] = set()


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            script.connections.add(id(self.connection))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            script.seen.append((self.command, self.path, body.decode() if body else None))
            answer = script.answers.pop(0) if script.answers else (200, b"ok")
            if answer == "cut":
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"short")
                self.close_connection = True
                return
            if answer == "drop":  # closes the kept-alive connection without an answer
                self.close_connection = True
                return
            status, data = answer
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_HEAD = do_DELETE = _answer

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def fail(status: int, headers: Any, body: bytes, what: str) -> NoReturn:
    if status >= 500:
        raise Transient(StoreError(f"{what}: HTTP {status}"))
    raise FileNotFoundError(f"{what}: HTTP {status}")


def plain(url: str) -> Any:
    return lambda: (url, {"X-Try": "1"})


def test_answer_whole_and_connection_kept_alive(server: tuple[str, Script]) -> None:
    url, script = server
    small = SmallRequests(5.0, FAST)
    try:
        got = [small.send("GET", plain(f"{url}/o?prefix=a%2Fb"), "Listing", (200,), fail) for _ in range(3)]
        put = small.send("PUT", plain(f"{url}/k"), "Writing", (200,), fail, b"data")
    finally:
        small.close()
    assert [g.body for g in got] == [b"ok"] * 3 and put.status == 200
    assert script.seen[0] == ("GET", "/o?prefix=a%2Fb", None) and script.seen[3] == ("PUT", "/k", "data")
    assert len(script.connections) == 1


def test_transient_answers_are_retried_then_succeed(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, b"busy"), (500, b"oops")]
    small = SmallRequests(5.0, FAST)
    try:
        assert small.send("GET", plain(f"{url}/x"), "Reading", (200,), fail).body == b"ok"
    finally:
        small.close()
    assert len(script.seen) == 3


def test_last_transient_failure_and_mapped_errors_pass_through(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, b"")] * 3
    small = SmallRequests(5.0, FAST)
    try:
        with pytest.raises(StoreError, match="Reading: HTTP 503"):
            small.send("GET", plain(f"{url}/x"), "Reading", (200,), fail)
        assert len(script.seen) == 3  # attempts=3
        script.answers = [(404, b"")]
        with pytest.raises(FileNotFoundError):
            small.send("GET", plain(f"{url}/x"), "Reading", (200,), fail)
        assert len(script.seen) == 4  # not retried
        assert small.send("HEAD", plain(f"{url}/x"), "Reading", (200, 404), fail).status == 200
    finally:
        small.close()


def test_a_body_cut_short_is_retried_and_then_reported(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = ["cut"]
    small = SmallRequests(5.0, FAST)
    try:
        assert small.send("GET", plain(f"{url}/x"), "Listing", (200,), fail).body == b"ok"
        script.answers = ["cut"] * 3
        with pytest.raises(TransferInterrupted, match="Listing: the body was cut short"):
            small.send("GET", plain(f"{url}/x"), "Listing", (200,), fail)
    finally:
        small.close()


def test_a_closed_kept_alive_connection_is_reopened_without_a_retry(server: tuple[str, Script]) -> None:
    url, script = server
    small = SmallRequests(5.0, RetryPolicy(attempts=1))
    try:
        small.send("GET", plain(f"{url}/1"), "Reading", (200,), fail)
        script.answers = ["drop"]  # the server closes the connection the client keeps
        small.send("GET", plain(f"{url}/2"), "Reading", (200,), fail)
        assert small.send("GET", plain(f"{url}/3"), "Reading", (200,), fail).body == b"ok"
    finally:
        small.close()
    assert [p for _, p, _ in script.seen] == ["/1", "/2", "/2", "/3"]


def test_refused_connection_is_a_store_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    small = SmallRequests(5.0, FAST)
    with pytest.raises(StoreError, match="Listing gs://b/: ConnectionRefusedError"):
        small.send("GET", plain(f"http://127.0.0.1:{port}/o"), "Listing gs://b/", (200,), fail)


def test_each_try_is_prepared_afresh(server: tuple[str, Script]) -> None:
    """Signatures carry the time: every try asks ``prepare`` again."""
    url, script = server
    script.answers = [(503, b"")]
    tries: list[int] = []

    def prepare() -> tuple[str, dict[str, str]]:
        tries.append(len(tries))
        return f"{url}/x", {"X-Try": str(len(tries))}

    small = SmallRequests(5.0, FAST)
    try:
        small.send("GET", prepare, "Reading", (200,), fail)
    finally:
        small.close()
    assert tries == [0, 1]
