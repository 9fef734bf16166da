"""The live service: one process per machine follows the WAL, keeps the ``LiveBuffer`` and
serialises every message once; the gunicorn workers relay its ready-made chunks to their clients.

``littlestats serve`` starts it beside the workers (``spawn``). It listens on ``run/live.sock``
and does nothing until a worker connects; then it loads the recent past (``build_hub``) and runs a
``LiveHub`` whose subscribers are *groups*: one per worker, site, filter and transport
(``GroupProxy``). Each flush is one frame per group; the frames a beat of the hub makes for one
worker go out in one write once the beat is over (``WorkerConnection.send``), and the worker
(``api.live_edge.EdgeHub``) hands the same bytes to every client in the group. So each
event is read, decoded, counted and serialised once per machine, whatever the number of workers,
and the workers' event loops (ingest) carry neither the buffer nor its garbage collection.

Frames, both ways: ``<u32 header length><u32 body length><header: JSON object><body>``.

worker → service: ``{"op": "open", "r", "g", "new", "site", "filter", "transport", "cursor"}``
(a subscriber's first messages; ``new`` also subscribes group ``g``), ``{"op": "sub", "g", ...}``,
``{"op": "unsub", "g"}``, ``{"op": "stats", "r", "site"}``.
service → worker: ``{"g": gid}`` + a group's chunk (SSE bytes; for WebSocket groups ``"l"`` gives
the byte lengths of its texts), ``{"r": rid, "l": [...]}`` + a reply.

The service runs at the workers' CPU priority (``LIVE_NICENESS``): at a lower one it fell behind
on saturated cores.

On a cluster node (``broker_url`` set), ``cluster.broker.ClusterLive`` publishes this machine's
accepted events to the broker from the start, and the hub is fed by the broker (every node's
events) instead of the ``WalTail``; the workers do not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from api.live import LiveBuffer
from api.live_feed import LIVE_EVENTS, Source, WalTail, in_cursor_order, parquet_sources
from api.stream import EventFilter, LiveHub, Subscriber
from littlestats.config import Settings

log = logging.getLogger(__name__)

FRAME = struct.Struct("<II")
SOCKET_NAME = "live.sock"
# A worker whose connection has this much unread is stuck; drop it (its clients reconnect).
MAX_WORKER_BACKLOG = 64 * 1024 * 1024
# The service's CPU priority: the workers' own. At a lower one (nice 10, the warehouse
# process's) it fell behind once its buffer was at its caps on saturated cores (p95 latency
# 1.9-2.2 s under the benchmark, against ~0.55 s at nice 0), for no throughput it gave back:
# the CPU it needs per event is the same either way. See docs/realtime.md, "Priority".
LIVE_NICENESS = 0


def socket_path(settings: Settings) -> Path:
    return settings.run_dir / SOCKET_NAME


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return FRAME.pack(len(head), len(body)) + head + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    head_len, body_len = FRAME.unpack(await reader.readexactly(FRAME.size))
    data = await reader.readexactly(head_len + body_len)
    return orjson.loads(data[:head_len]), data[head_len:]


def pack_items(transport: str, items: list[Any]) -> tuple[list[int], bytes]:
    """Items for one subscriber as one body: SSE bytes joined; WebSocket texts with their lengths."""
    if transport == "sse":
        return [], b"".join(items)
    encoded = [t.encode() for t in items]
    return [len(b) for b in encoded], b"".join(encoded)


def unpack_texts(lengths: list[int], body: bytes) -> list[str]:
    texts, pos = [], 0
    for n in lengths:
        texts.append(body[pos:pos + n].decode())
        pos += n
    return texts


def build_hub(settings: Settings) -> LiveHub:
    """A hub whose buffer holds the last 90 minutes: from raw Parquet and the WAL segments not
    sealed yet (a segment found in both is read from the WAL), merged in cursor order and fed to
    the buffer a batch at a time (``in_cursor_order``), so the load holds little more than the
    buffer's bound however busy the recent past was; then followed live."""
    buffer = LiveBuffer()
    now = int(time.time() * 1000)
    tail = WalTail(settings.wal_dir, records=LIVE_EVENTS)
    tail.open_segments()  # open every segment first, so one sealed meanwhile is read from the WAL
    in_wal = set(tail.tails)
    try:
        sources = parquet_sources(settings.raw_dir, now, skip_segments=in_wal)
    except Exception:
        log.exception("could not list recent events in Parquet; the live buffer starts without them")
        sources = []
    unsealed = tail.poll()
    if unsealed:
        sources.append(Source(unsealed[0][0][0], lambda: (unsealed, None)))
    try:
        for batch in in_cursor_order(sources):
            buffer.extend(batch, now)
    except Exception:
        log.exception("could not load the recent events; the live buffer starts with what it has")
    return LiveHub(buffer, tail)


class GroupProxy(Subscriber):
    """A worker's subscribers of one site, filter and transport, as one subscriber of the hub."""

    def __init__(self, hub: LiveHub, conn: WorkerConnection, gid: int, site_id: str,
                 flt: EventFilter, transport: str) -> None:
        super().__init__(hub, site_id, flt, transport)
        self.conn = conn
        self.gid = gid

    def offer(self, item: Any, size: int) -> bool:
        if self.closed:
            return False
        if self.transport == "sse":
            self.conn.send({"g": self.gid}, item)
        else:
            lengths, body = pack_items("ws", item)
            self.conn.send({"g": self.gid, "l": lengths}, body)
        return True


class WorkerConnection:
    def __init__(self, service: LiveService, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.groups: dict[int, GroupProxy] = {}
        self.closed = False
        self.outgoing: list[bytes] = []  # frames of the running hub beat, written once it ends

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        """Queue a frame; the frames of one beat (every group's flush) go out as one write, once
        the beat is over, so the worker is woken once per beat, not once per group."""
        if self.closed:
            return
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self._write)
        self.outgoing.append(frame(header, body))

    def _write(self) -> None:
        frames, self.outgoing = self.outgoing, []
        if self.closed or not frames:
            return
        self.writer.write(b"".join(frames))
        if self.writer.transport.get_write_buffer_size() > MAX_WORKER_BACKLOG:
            log.warning("a worker does not read its live feed; disconnecting it")
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        hub = self.service.hub
        for proxy in self.groups.values():
            if hub is not None:
                hub.unsubscribe(proxy)
        self.groups.clear()
        self.writer.close()

    async def serve(self) -> None:
        try:
            while True:
                header, _ = await read_frame(self.reader)
                await self.handle(header)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("live service: bad request from a worker")
        finally:
            self.close()

    async def handle(self, req: dict[str, Any]) -> None:
        hub = await self.service.get_hub()
        op = req.get("op")
        if op in ("open", "sub") and (op == "sub" or req.get("new")):
            proxy = GroupProxy(hub, self, int(req["g"]), str(req["site"]),
                               EventFilter.parse(req["filter"]), str(req["transport"]))
            self.groups[proxy.gid] = proxy
            hub.attach(proxy)
        if op == "open":
            items = hub.initial(str(req["site"]), EventFilter.parse(req["filter"]),
                                str(req["transport"]), req.get("cursor"))
            lengths, body = pack_items(str(req["transport"]), items)
            self.send({"r": req["r"], "l": lengths}, body)
        elif op == "unsub":
            gone = self.groups.pop(int(req["g"]), None)
            if gone is not None:
                hub.unsubscribe(gone)
        elif op == "stats":
            self.send({"r": req["r"]}, await hub.stats_json(str(req["site"])))


class LiveService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: LiveHub | None = None
        self._lock = asyncio.Lock()
        self.connections: set[WorkerConnection] = set()
        self.cluster: Any = None  # cluster.broker.ClusterLive on a cluster node

    async def get_hub(self) -> LiveHub:
        """Built on the first request, so an unused live service costs nothing."""
        if self.hub is None:
            async with self._lock:
                if self.hub is None:
                    if self.cluster is not None:
                        hub = await self.cluster.build_hub()
                    else:
                        hub = await asyncio.to_thread(build_hub, self.settings)
                    # The buffer is long-lived and free of cycles: freeze what the backfill made
                    # and collect young objects rarely, so the collector does not keep walking it.
                    gc.collect()
                    gc.freeze()
                    gc.set_threshold(50_000, 20, 100)
                    hub.start(watch_signals=False)
                    self.hub = hub
        return self.hub

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = WorkerConnection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def run(self) -> None:
        path = socket_path(self.settings)
        self.settings.ensure_dirs()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a service that did not stop cleanly
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.settings.broker_url:  # a cluster node: it publishes whether anyone listens or not
            from cluster.broker import ClusterLive

            self.cluster = ClusterLive(self.settings)
            self.cluster.start()
        server = await asyncio.start_unix_server(self.on_connect, path=str(path))
        log.info("live service on %s", path)
        parent = os.getppid()
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if os.getppid() != parent:
                    break  # ``serve`` is gone
        finally:
            server.close()
            for conn in list(self.connections):
                conn.close()
            if self.hub is not None:
                self.hub.stop()
            if self.cluster is not None:
                await self.cluster.stop()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def expected(settings: Settings) -> bool:
    """Whether ``serve`` runs a live service for this data directory (its supervisor's state file
    names one), even if it is not listening yet: starting, or being restarted."""
    from littlestats.server import STATE_FILE

    try:
        return b'"live"' in (settings.run_dir / STATE_FILE).read_bytes()
    except OSError:
        return False


def spawn(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the live service (``littlestats serve`` does, beside the warehouse process, and
    starts it again when it stops: ``littlestats.server.Supervisor``)."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "api.live_service"], env=env)


def main() -> None:
    from littlestats.config import load_settings
    from littlestats.logs import configure as configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    os.nice(LIVE_NICENESS)
    try:
        import uvloop
    except ImportError:
        asyncio.run(LiveService(settings).run())
    else:
        uvloop.run(LiveService(settings).run())


if __name__ == "__main__":
    main()
