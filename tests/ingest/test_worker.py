"""The worker's HTTP protocol: a response with a fixed-length body leaves in one socket write.

Drives uvicorn's real httptools protocol (as ``littlestats serve`` configures it) with raw HTTP
bytes; the transport records what the protocol writes. The end-to-end tests exercise the same
protocol over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from api import stream
from littlestats.worker import TRANSPORT_EXTENSION, CoalescingHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def exchange(app: Any, request: bytes) -> RecordingTransport:
    config = Config(app=app, http=CoalescingHttpToolsProtocol, log_config=None, access_log=False)
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
        if protocol.cycle is not None and protocol.cycle.response_complete:
            break
    for task in list(protocol.server_state.tasks):
        await task
    protocol.connection_lost(None)
    return transport


def app_answering(status: int, body: bytes, headers: list[tuple[bytes, bytes]], chunks: int = 1) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if chunks == 1:
            await send({"type": "http.response.body", "body": body})
            return
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})

    return app


POST = b"POST /api/v2/track/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"


def test_a_small_fixed_length_response_is_one_write() -> None:
    body = b'{"success":true}'
    app = app_answering(200, body, [(b"content-type", b"application/json"), (b"content-length", b"16")])
    transport = asyncio.run(exchange(app, POST))
    assert len(transport.writes) == 1
    head, _, sent = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 16" in head
    assert sent == body


def test_a_bodiless_answer_is_written_at_once() -> None:
    transport = asyncio.run(exchange(app_answering(204, b"", []), POST))
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 204")


@pytest.mark.parametrize("method", [b"HEAD", b"GET"])
def test_head_requests_and_streams_get_their_head_before_the_body(method: bytes) -> None:
    request = method + b" /stream HTTP/1.1\r\nHost: a\r\n\r\n"
    if method == b"HEAD":
        app = app_answering(200, b"", [(b"content-length", b"10")])
    else:  # chunked (no length), like a server-sent event stream
        app = app_answering(200, b"data: 1\n\n", [(b"content-type", b"text/event-stream")], chunks=2)
    transport = asyncio.run(exchange(app, request))
    assert transport.writes[0].startswith(b"HTTP/1.1 200") and transport.writes[0].endswith(b"\r\n\r\n")
    if method == b"GET":
        assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]


def test_the_app_gets_the_connection_and_may_write_a_streamed_body_itself() -> None:
    """The ``littlestats.transport`` extension (what ``api.stream`` writes SSE clients through)."""
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        conn = scope["extensions"][TRANSPORT_EXTENSION]
        await receive()
        seen.append(conn.streaming_body())  # nothing started yet
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        seen.append(conn.streaming_body())  # chunked, streaming
        conn.transport.write(b"9\r\ndata: 2\n\n\r\n")  # the app's own chunk, straight to the socket
        await send({"type": "http.response.body", "body": b""})
        seen.append(conn.streaming_body())  # complete

    transport = asyncio.run(exchange(app, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert seen == [None, True, None]
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n", b"0\r\n\r\n"]


def test_the_extension_is_the_one_the_stream_looks_for() -> None:
    assert TRANSPORT_EXTENSION == stream.TRANSPORT_EXTENSION
