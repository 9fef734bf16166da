"""Slow, oversized and malformed requests against a real ``littlestats serve``, over raw sockets:
each gets a 4xx and a closed connection at once (or when its deadline passes), never a hang, a
500 or a traceback; ordinary keep-alive traffic is not affected."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, add_site, running_server

pytestmark = pytest.mark.slow

TIMEOUT = 3  # the server's header and body timeouts in these tests (the default is 10 s)
SWEEP = 1  # deadlines are checked once a second


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict]]:
    data_dir = tmp_path_factory.mktemp("limits") / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "limits.example.com")
    env = {"LITTLESTATS_REQUEST_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
           "LITTLESTATS_REQUEST_BODY_TIMEOUT_SECONDS": str(TIMEOUT)}
    with running_server(data_dir, 1, "--dev", env=env) as server:
        server.wait_ready()
        yield server, site


def connect(server: LiveServer, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return sock


_leftover: dict[int, bytes] = {}  # bytes read past a response, per socket (pipelined answers)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    data = _leftover.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response; got {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if body[length:]:
        _leftover[sock.fileno()] = body[length:]
    return status, headers, body[:length]


def closed_after(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) once its answer was read."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def exchange(server: LiveServer, raw: bytes) -> tuple[int, dict[str, str], bytes, float, bool]:
    with connect(server) as sock:
        started = time.monotonic()
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read the answer
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - started
        return status, headers, body, elapsed, closed_after(sock)


def test_a_one_megabyte_header_is_refused_with_431_at_once(served: tuple[LiveServer, dict]) -> None:
    server, _ = served
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    status, _, body, elapsed, closed = exchange(server, raw)
    assert status == 431 and "32768 bytes" in json.loads(body)["error"]
    assert elapsed < 2 and closed


def test_two_hundred_headers_are_refused_with_431(served: tuple[LiveServer, dict]) -> None:
    server, _ = served
    headers = b"".join(b"X-Header-%d: 1\r\n" % i for i in range(200))
    status, _, body, elapsed, closed = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431 and "at most 100 headers" in json.loads(body)["error"]
    assert elapsed < 2 and closed
    # 99 headers (and Host) are fine
    headers = b"".join(b"X-Header-%d: 1\r\n" % i for i in range(99))
    status, _, _, _, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 200


def test_a_header_byte_a_second_is_cut_off_at_the_header_timeout(served: tuple[LiveServer, dict]) -> None:
    """Slowloris: the client keeps the request coming, a byte a second, and never finishes it."""
    server, _ = served
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 60 + b"\r\n\r\n"
    sent = []
    with connect(server, timeout=TIMEOUT + 10) as sock:
        started = time.monotonic()

        def trickle() -> None:
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return
                sent.append(byte)
                time.sleep(1)

        threading.Thread(target=trickle, daemon=True).start()
        status, _, body = read_response(sock)
        elapsed = time.monotonic() - started
        assert status == 408 and "headers not received" in json.loads(body)["error"]
        assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + SWEEP + 1.5
        assert closed_after(sock)
    assert len(sent) < len(request)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(served: tuple[LiveServer, dict]) -> None:
    server, _ = served
    with connect(server, timeout=TIMEOUT + 10) as sock:
        started = time.monotonic()
        status, _, _ = read_response(sock)
        assert status == 408 and time.monotonic() - started <= TIMEOUT + SWEEP + 1.5
        assert closed_after(sock)


@pytest.mark.parametrize("path", ["/api/v2/track/{site}", "/api/v2/sites/{site}/query", "/api/v2/nowhere"])
def test_an_impossible_content_length_gets_413_at_once(served: tuple[LiveServer, dict], path: str) -> None:
    server, site = served
    raw = (f"POST {path.format(site=site['id'])} HTTP/1.1\r\nHost: x\r\n"
           "Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n").encode()
    status, _, body, elapsed, closed = exchange(server, raw)
    assert status == 413 and "99999999999 bytes" in json.loads(body)["error"]
    assert elapsed < 1 and closed


def test_a_body_sent_after_the_413_is_read_and_dropped_not_reset(served: tuple[LiveServer, dict]) -> None:
    """A proxy (nginx) sends the whole body before it reads the answer. The server reads and
    drops what comes after its 413 and then closes cleanly: closing with the body unread would
    reset the connection, and the proxy would see the reset (a 502) instead of the answer."""
    server, site = served
    body = b"x" * 200_000
    head = (f"POST /api/v2/track/{site['id']} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with connect(server) as sock:
        sock.sendall(head)
        status, headers, answer = read_response(sock)
        assert status == 413 and "the limit is 65536" in json.loads(answer)["error"]
        assert headers["connection"] == "close"
        time.sleep(0.2)  # the server has finished its answer: without lingering it has closed
        for offset in range(0, len(body), 16384):  # a reset would fail one of these sends
            sock.sendall(body[offset:offset + 16384])
            time.sleep(0.01)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # a clean end of stream, not ECONNRESET


def test_a_chunked_body_past_the_limit_gets_413(served: tuple[LiveServer, dict]) -> None:
    server, site = served
    chunk = b"x" * 16384
    raw = (f"POST /api/v2/track/{site['id']} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    raw += (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 8 + b"0\r\n\r\n"  # 128 KiB
    status, _, body, _, closed = exchange(server, raw)
    assert status == 413 and "limit" in json.loads(body)["error"] and closed


def test_a_stalled_body_gets_408(served: tuple[LiveServer, dict]) -> None:
    server, site = served
    raw = (f"POST /api/v2/track/{site['id']} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: 100\r\n\r\n{\"type\":").encode()
    status, _, body, elapsed, closed = exchange(server, raw)
    assert status == 408 and "body" in json.loads(body)["error"]
    assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + SWEEP + 1.5 and closed


@pytest.mark.parametrize("line", [b"GET /\r\n\r\n", b"GET /healthz HTTP/0.9\r\n\r\n", b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
                                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"])
def test_malformed_requests_get_400_and_no_traceback(served: tuple[LiveServer, dict], line: bytes) -> None:
    server, _ = served
    status, _, _, elapsed, closed = exchange(server, line)
    assert status == 400 and elapsed < 2 and closed
    assert "Traceback" not in server.log() and " 500 " not in server.log()


def test_keep_alive_still_carries_several_requests(served: tuple[LiveServer, dict]) -> None:
    server, site = served
    beacon = json.dumps({"type": "pageview", "url": "https://limits.example.com/a"}).encode()
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
            sock.sendall(f"POST /api/v2/track/{site['id']} HTTP/1.1\r\nHost: x\r\n"
                         f"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36\r\n"
                         f"Content-Type: text/plain\r\nContent-Length: {len(beacon)}\r\n\r\n".encode() + beacon)
            status, _, body = read_response(sock)
            assert status in (200, 202), body
        # two pipelined requests, each answered in order on the same connection
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["status"] == "ready"
        # idle for longer than the header timeout, within keep-alive (5 s): the connection stays open
        time.sleep(TIMEOUT + 1)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_the_default_limits_are_settings(tmp_path: Path) -> None:
    from littlestats.config import load_settings
    from littlestats.worker import RequestLimits

    limits = RequestLimits.from_settings(load_settings({"data_dir": tmp_path}, environ={}))
    assert (limits.header_timeout, limits.body_timeout, limits.max_header_bytes, limits.max_header_count,
            limits.max_body_bytes) == (10.0, 10.0, 32768, 100, 65536)
