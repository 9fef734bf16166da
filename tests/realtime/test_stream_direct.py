"""An SSE stream's two ways out: straight to the connection when the server hands it over
(``littlestats.transport``, as ``littlestats.worker`` does), else through the ASGI ``send``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from api.live import LiveBuffer
from api.live_feed import LIVE_EVENTS, WalTail
from api.stream import ALL, LiveHub
from littlestats.worker import TRANSPORT_EXTENSION


class Transport:
    """What an asyncio transport offers the stream (the server's side of a connection)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Connection:
    def __init__(self, chunked: bool | None) -> None:
        self.transport = Transport()
        self.chunked = chunked

    def streaming_body(self) -> bool | None:
        return self.chunked


async def stream(tmp_path: Path, scope: dict[str, Any] | None) -> list[bytes]:
    hub = LiveHub(LiveBuffer(), WalTail(tmp_path / "wal", records=LIVE_EVENTS))
    sub = hub.subscribe("s1", ALL, "sse")
    body = sub.sse([b"first\n\n"], scope)
    chunks = [(await anext(body)).serialize()]
    pending = asyncio.ensure_future(anext(body))
    await asyncio.sleep(0)
    hub.deliver([sub], b"second\n\n", 8)
    await asyncio.sleep(0)
    if not pending.done():
        hub.unsubscribe(sub)  # written directly: the response task only waits for the end
    try:
        chunks.append((await pending).serialize())
    except StopAsyncIteration:
        pass
    await body.aclose()
    hub.stop()
    return chunks


def test_a_stream_writes_its_chunks_to_the_connection_it_was_handed(tmp_path: Path) -> None:
    conn = Connection(chunked=True)
    chunks = asyncio.run(stream(tmp_path, {"extensions": {TRANSPORT_EXTENSION: conn}}))
    assert chunks == [b"first\n\n"]  # only the first goes through the ASGI send
    assert conn.transport.writes == [b"8\r\nsecond\n\n\r\n"]  # framed as an HTTP/1.1 chunk


def test_without_the_extension_or_a_streaming_body_a_stream_uses_the_asgi_send(tmp_path: Path) -> None:
    for scope in (None, {"type": "http"}, {"extensions": {TRANSPORT_EXTENSION: Connection(chunked=None)}}):
        assert asyncio.run(stream(tmp_path, scope)) == [b"first\n\n", b"second\n\n"]
