"""The live service and its workers' ``EdgeHub``s over a real Unix socket, fed by a real WAL
segment: each event is serialised once, and every subscriber of a group gets the same bytes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from api.live_edge import EdgeHub
from api.live_service import LiveService, socket_path
from api.stream import ALL, MAX_EVENTS_PER_FLUSH, EventFilter, Subscriber
from ingest.wal import encode_record
from littlestats.config import Settings


def record(n: int, etype: str = "pageview", visitor: int = 1) -> bytes:
    now = int(time.time() * 1000)
    return encode_record(orjson.dumps({
        "event_id": f"e{n}", "site_id": "s1", "ts": now, "received_at": now, "type": etype,
        "name": "signup" if etype == "event" else None, "visitor_key": visitor,
        "pathname": f"/p/{n}", "hostname": "example.com", "source": "Google", "country": "DE",
        "device": "desktop", "browser": "Firefox", "os": "Linux",
    }))


async def until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def live_service(tmp_path: Path) -> AsyncIterator[tuple[LiveService, asyncio.Task[None], Path, Path]]:
    """A running live service following an empty WAL segment: ``(service, its task, the
    segment, its socket)``."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    service = LiveService(settings)
    running = asyncio.get_running_loop().create_task(service.run())
    segment = settings.wal_dir / "20261125T000000-1-000000-aaaaaa.seg"
    segment.write_bytes(b"")
    try:
        await until(socket_path(settings).exists)
        yield service, running, segment, socket_path(settings)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def messages_in(sub: Subscriber) -> list[dict]:
    found: list[dict] = []
    for item in sub.queue:
        texts = item if isinstance(item, list) else [
            line[6:] for line in item.decode().split("\n") if line.startswith("data: ")]
        found += list(map(orjson.loads, texts))
    return found


def events_in(sub: Subscriber) -> list[dict]:
    return [m["event"] for m in messages_in(sub) if m["type"] == "event"]


def test_two_workers_share_one_follower_and_one_serialisation(tmp_path: Path) -> None:
    asyncio.run(_two_workers(tmp_path))


async def _two_workers(tmp_path: Path) -> None:
    async with live_service(tmp_path) as (service, running, segment, sock):
        one = await EdgeHub.connect(sock)
        two = await EdgeHub.connect(sock)
        a, b = one.subscribe("s1", ALL, "sse"), one.subscribe("s1", ALL, "sse")
        ws = two.subscribe("s1", EventFilter.parse({"type": "event"}), "ws")
        for edge, sub in ((one, a), (one, b), (two, ws)):
            first = await edge.open(sub, None)
            assert b"stats_update" in first[0] if sub.transport == "sse" else '"stats_update"' in first[0]
        assert len(one.groups) == 1 and len(two.groups) == 1  # a and b are one group
        assert service.hub is not None and sum(len(s) for s in service.hub.subscribers.values()) == 2

        with segment.open("ab") as f:
            f.write(record(1) + record(2, "event") + record(3))
        await until(lambda: len(events_in(a)) == 3 and len(events_in(ws)) == 1)
        assert [e["page"] for e in events_in(a)] == ["/p/1", "/p/2", "/p/3"]
        assert events_in(ws)[0]["name"] == "signup"
        # one serialisation, handed as is to every subscriber of the group
        assert all(x is y for x, y in zip(a.queue, b.queue, strict=True))
        assert events_in(a) == events_in(b)

        # a WebSocket filter change moves the subscriber to another group
        two.refilter(ws, ALL)
        ws.take()
        with segment.open("ab") as f:
            f.write(record(4))
        await until(lambda: len(events_in(ws)) == 1)
        assert events_in(ws)[0]["page"] == "/p/4"

        # the last subscriber of a group leaving unsubscribes the group from the service
        one.unsubscribe(a)
        one.unsubscribe(b)
        await until(lambda: sum(len(s) for s in service.hub.subscribers.values()) == 1)  # type: ignore[union-attr]

        # stats come from the one buffer
        stats = orjson.loads(await two.stats_json("s1"))
        assert stats["hour"]["views"] == 3 and stats["hour"]["events"] == 1

        # the service going away ends the workers' streams (their clients reconnect)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await until(lambda: two.broken and ws.closed)
        one.stop()
        two.stop()




def test_a_busy_flush_sends_the_newest_events_and_counts_the_others(tmp_path: Path) -> None:
    asyncio.run(_busy_flush(tmp_path))


async def _busy_flush(tmp_path: Path) -> None:
    async with live_service(tmp_path) as (_, _, segment, sock):
        edge = await EdgeHub.connect(sock)
        sse, ws = edge.subscribe("s1", ALL, "sse"), edge.subscribe("s1", ALL, "ws")
        for sub in (sse, ws):
            await edge.open(sub, None)
        busy = MAX_EVENTS_PER_FLUSH + 30
        with segment.open("ab") as f:
            f.write(b"".join(record(n, visitor=n) for n in range(busy)))
        for sub in (sse, ws):
            await until(lambda sub=sub: len(events_in(sub)) == MAX_EVENTS_PER_FLUSH)
            messages = messages_in(sub)
            # one flush: "skipped" first, then the newest events in order
            assert messages[0] == {"type": "skipped", "count": 30}
            assert [m["event"]["page"] for m in messages[1:] if m["type"] == "event"] == [
                f"/p/{n}" for n in range(30, busy)]
        # the stats count every event
        stats = orjson.loads(await edge.stats_json("s1"))
        assert stats["hour"]["views"] == busy and stats["hour"]["visitors"] == busy

        # resuming gives at most as many, with the same count of the others
        first = messages_in(sse)[1]["id"]
        late = edge.subscribe("s1", ALL, "sse")
        initial = b"".join(await edge.open(late, None))
        assert b"event: skipped" not in initial
        old = edge.subscribe("s1", ALL, "sse")
        initial = b"".join(await edge.open(old, "0.x.0"))
        assert b'{"type":"skipped","count":30}' in initial and initial.count(b"event: event") == MAX_EVENTS_PER_FLUSH
        assert first.encode() in initial
        edge.stop()


def test_a_flush_right_behind_the_open_reply_reaches_the_new_subscriber(tmp_path: Path) -> None:
    asyncio.run(_flush_behind_reply(tmp_path))


async def _flush_behind_reply(tmp_path: Path) -> None:
    """The service answers an ``open`` and flushes the group's next events in one write (what its
    beat does when events are polled during the open): the worker reads both frames before the
    opening coroutine runs again, and the events must still reach the subscriber, after its
    first messages."""
    from api.live_service import frame, read_frame

    sock = tmp_path / "live.sock"
    flushed = b"event: event\ndata: {\"type\":\"event\"}\n\n"

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                req, _ = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return
            if req.get("op") == "open":
                writer.write(frame({"r": req["r"], "l": []}, b"event: stats_update\ndata: {}\n\n")
                             + frame({"g": req["g"]}, flushed))

    server = await asyncio.start_unix_server(service, str(sock))
    try:
        edge = await EdgeHub.connect(sock)
        sub = edge.subscribe("s1", ALL, "sse")
        first = await edge.open(sub, None)
        assert first == [b"event: stats_update\ndata: {}\n\n"]
        await until(lambda: bool(sub.queue))
        assert list(sub.queue) == [flushed]
        # a second subscriber of the same group gets the next flush, not the ones before it
        again = edge.subscribe("s1", ALL, "sse")
        await edge.open(again, None)
        await until(lambda: len(sub.queue) == 2 and bool(again.queue))
        assert list(again.queue) == [flushed]
        edge.stop()
    finally:
        server.close()
        await server.wait_closed()
