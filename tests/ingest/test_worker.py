"""The worker's HTTP protocol: a response with a fixed-length body leaves in one socket write.

Drives uvicorn's real httptools protocol (as ``littlestats serve`` configures it) with raw HTTP
bytes; the transport records what the protocol writes. The end-to-end tests exercise the same
protocol over real sockets.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from api import stream
from littlestats.worker import TRANSPORT_EXTENSION, CoalescingHttpToolsProtocol, Connection


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
    protocol, transport = await connect(app)
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
    conn = object()
    assert stream.connection_of({"extensions": {TRANSPORT_EXTENSION: conn}}) is conn


# Held answers: the beacon endpoint answers at once but its answer leaves only after the commit.


def holding_app(releases: list[Any], body: bytes = b'{"success":true}') -> Any:
    """Holds its answer (``Connection.hold_response``) and finishes; ``releases`` gets the release."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        releases.append(scope["extensions"][TRANSPORT_EXTENSION].hold_response())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


async def connect(app: Any) -> tuple[CoalescingHttpToolsProtocol, RecordingTransport]:
    config = Config(app=app, http=CoalescingHttpToolsProtocol, log_config=None, access_log=False)
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def settle(protocol: CoalescingHttpToolsProtocol) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    for task in list(protocol.server_state.tasks):
        await task


async def post_held(request: bytes = POST) -> tuple[CoalescingHttpToolsProtocol, RecordingTransport, list[Any]]:
    """A connection to ``holding_app`` that has received ``request`` and run it: its answer is held
    until ``releases[0]`` is called."""
    releases: list[Any] = []
    protocol, transport = await connect(holding_app(releases))
    protocol.data_received(request)
    await settle(protocol)
    return protocol, transport, releases


def test_a_held_answer_leaves_only_when_released_and_the_request_ends_before() -> None:
    async def run() -> None:
        protocol, transport, releases = await post_held()
        assert protocol.cycle is not None and protocol.cycle.response_complete  # the app is done
        assert transport.writes == []  # ... but nothing has left
        releases[0](None)
        assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200")
        assert transport.writes[0].endswith(b'{"success":true}') and not transport.closed

    asyncio.run(run())


def test_a_failed_commit_closes_the_connection_without_the_answer() -> None:
    async def run() -> None:
        _, transport, releases = await post_held()
        releases[0](OSError("disk full"))
        assert transport.writes == [] and transport.closed

    asyncio.run(run())


def test_answers_on_one_connection_leave_in_order() -> None:
    # Two pipelined requests: the second (not held itself) must not overtake the first.
    releases: list[Any] = []
    held = holding_app(releases)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            await held(scope, receive, send)
            return
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> None:
        protocol, transport = await connect(app)
        protocol.data_received(POST + b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle(protocol)
        await settle(protocol)
        assert transport.writes == []
        releases[0](None)
        sent = b"".join(transport.writes)
        assert sent.startswith(b"HTTP/1.1 200") and sent.index(b"HTTP/1.1 204") > sent.index(b'{"success"')

    asyncio.run(run())


def test_a_connection_to_close_after_a_held_answer_closes_once_it_is_sent() -> None:
    async def run() -> None:
        protocol, transport, releases = await post_held(
            POST.replace(b"Host: a\r\n", b"Host: a\r\nConnection: close\r\n"))
        assert not transport.closed and transport.writes == []
        protocol.shutdown()  # a graceful shutdown waits for it too
        assert not transport.closed
        releases[0](None)
        assert len(transport.writes) == 1 and transport.closed

    asyncio.run(run())


def test_a_stream_behind_a_held_answer_is_not_written_directly() -> None:
    async def run() -> None:
        protocol, _, releases = await post_held()
        assert protocol.cycle is not None
        conn: Any = protocol.cycle.scope["extensions"][TRANSPORT_EXTENSION]  # type: ignore[typeddict-item]
        assert conn.streaming_body() is None
        releases[0](None)

    asyncio.run(run())


def test_all_waiting_says_when_every_connection_of_the_worker_waits_for_a_held_answer() -> None:
    # The beacon endpoint commits at once when it is true: no other request can join the group.
    releases: list[Any] = []
    seen: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        conn = scope["extensions"][TRANSPORT_EXTENSION]
        await holding_app(releases)(scope, receive, send)
        seen.append(conn.all_waiting())

    async def run() -> None:
        config = Config(app=app, http=CoalescingHttpToolsProtocol, log_config=None, access_log=False)
        config.load()
        state = ServerState()  # one worker, three connections
        protocols = [CoalescingHttpToolsProtocol(config, state, app_state={}) for _ in range(3)]
        transports = [RecordingTransport() for _ in protocols]
        for protocol, transport in zip(protocols, transports, strict=True):
            protocol.connection_made(transport)
        for protocol in protocols[:2]:
            protocol.data_received(POST)
            await settle(protocol)
        assert seen == [False, False]  # the third connection may still send a request
        protocols[2].data_received(POST)
        await settle(protocols[2])
        assert seen == [False, False, True]  # now nobody can
        releases[0](None)  # the first client has its answer and may send again
        assert protocols[0].waiting.held == 2
        protocols[0].data_received(POST)
        await settle(protocols[0])
        assert seen[-1] is True
        protocols[1].connection_lost(None)  # a waiting client went away: it is no longer counted
        assert protocols[1].waiting.held == 2 and len(state.connections) == 2
        releases[1](None)  # its answer is dropped; the count does not go down twice
        assert protocols[1].waiting.held == 2
        for release in releases[2:]:
            release(None)
        assert protocols[0].waiting.held == 0
        assert [len(t.writes) for t in transports] == [2, 0, 1]

    asyncio.run(run())


@pytest.mark.parametrize("held", [False, True])
def test_a_finished_request_leaves_no_reference_cycle(held: bool) -> None:
    """A request's objects (its cycle, scope, connection) are freed as soon as it ends, not left
    for the cyclic garbage collector: with a reference cycle per request that was ~5 % of a busy
    worker's CPU."""

    async def garbage_of_three_requests() -> list[Any]:
        releases: list[Any] = []
        app = holding_app(releases) if held else app_answering(200, b"{}", [(b"content-length", b"2")])
        protocol, _ = await connect(app)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(3):
                protocol.data_received(POST)
                await settle(protocol)
                for release in releases:
                    release(None)
                releases.clear()
            gc.collect()
            return [o for o in gc.garbage if isinstance(o, (RequestResponseCycle, Connection))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    assert asyncio.run(garbage_of_three_requests()) == []
