"""Every node's accepted events in every node's live buffer: the live feed through NATS JetStream.

On one machine the live service follows the write-ahead log (``api.live_feed.WalTail``). On a
cluster node (``broker_url`` set) it does two more things, in the same process and event loop:

* **publish** (``Publisher``): it follows this node's WAL with a ``WalTail`` of raw records and
  publishes what the tail hands out to the stream ``LITTLESTATS_LIVE``, subject
  ``littlestats.live.<node_name>``: the records' bytes exactly as the WAL holds them, with each
  record's segment id and index (its cursor). So an event is published only once the WAL has made
  it durable, and the beacon path does no work for the broker at all: a slow or absent broker
  cannot slow or block it. What the broker has not taken yet waits in a bounded backlog
  (``MAX_BACKLOG_EVENTS``); past it the oldest events are left out of the live feed (still
  stored) and counted in ``littlestats_broker_events_dropped_total``.
* **consume** (``BrokerFeed``, a ``LiveFeed``): one ordered JetStream consumer of
  ``littlestats.live.>`` gives the hub every node's events, its own included.

Cursors are the WAL's: ``(received_at, segment id, record index)``, so an event has the same
cursor on every node and across restarts, and an SSE client resumes (``Last-Event-ID``) on any
node. A JetStream sequence number would identify a *message* (a batch of events, published in
the order nodes happen to publish), not an event in acceptance order.

Ordering across nodes is the WAL tail's rule, extended: every message carries its node's *mark*,
the start time of the tail pass after which it was sent. A tail pass that starts at ``T`` sees
every record written before ``T``, so once a node's mark is ``T`` every event that node accepted
(and acknowledged) before ``T`` is in the stream ahead of the mark. An event received at ``r`` on
one node can only be caused by events acknowledged earlier on another, so the feed hands events
out, sorted by cursor, once ``received_at`` is below every node's mark. An idle node sends its
mark alone every ``MARK_MS``; a node whose mark falls more than ``STALE_MS`` behind the newest
(stopped, cut off) is not waited for, and its events go out as they come. (Received times come
from each node's clock: the nodes' clocks must agree, as NTP keeps them, to well under the time
between two beacons of one browser.)

Resumption: a restarted live service replays the stream from ``RETAIN_MS`` ago into its buffer (it
needs nothing from other nodes' disks), and its publisher resumes after the last cursor its node
published (carried by every message), reading the WAL segments not sealed yet.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import Counter, Gauge

from api.live import (
    RETAIN_MS,
    Cursor,
    LiveBuffer,
    LiveEvent,
    cursor_text,
    decode_event,
    parse_cursor,
)
from api.live_feed import RecordFormat, WalTail
from ingest.wal import HEADER, add_record
from littlestats.config import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from api.stream import LiveHub

log = logging.getLogger(__name__)

STREAM = "LITTLESTATS_LIVE"
SUBJECT_PREFIX = "littlestats.live"
# What the stream keeps: enough for a restarted live service's 90 minutes (``RETAIN_MS``).
STREAM_MAX_AGE_S = 2 * 3600
STREAM_MAX_BYTES = 1 << 30
DUPLICATE_WINDOW_S = 120  # a publish retried after a lost acknowledgement is stored once

READ_MS = 50  # how often the publisher reads the WAL
MARK_MS = 200  # an idle node's mark goes out this often
STALE_MS = 2000  # a node whose mark is this far behind the newest one is not waited for
MAX_MESSAGE_BYTES = 512 * 1024  # under the server's default max_payload (1 MB)
MAX_BACKLOG_EVENTS = 100_000  # events read from the WAL and not yet taken by the broker
PUBLISH_TIMEOUT_S = 2.0
RETRY_S = 0.5
CATCH_UP_TIMEOUT_S = 15  # the longest a starting live service waits for the stream's replay

NODE_HEADER = "Ls-Node"
MARK_HEADER = "Ls-Mark"
LAST_HEADER = "Ls-Last"  # the newest cursor its node had published, this message included
ID_HEADER = "Nats-Msg-Id"

NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

EVENTS_PUBLISHED = Counter(
    "littlestats_broker_events_published_total",
    "Accepted events of this node published to the broker for every node's live feed.")
EVENTS_DROPPED = Counter(
    "littlestats_broker_events_dropped_total",
    "Accepted events left out of the live feed because the broker did not take them in time "
    "(they are stored all the same).")
PUBLISH_ERRORS = Counter(
    "littlestats_broker_publish_errors_total", "Failed publishes to the broker (each retried).")
BACKLOG = Gauge(
    "littlestats_broker_backlog_events",
    "Events read from the write-ahead log and waiting for the broker.", multiprocess_mode="livesum")
EVENTS_RECEIVED = Counter(
    "littlestats_broker_events_received_total", "Events of every node received from the broker.")


def now_ms() -> int:
    return int(time.time() * 1000)


def subject_of(node: str) -> str:
    return f"{SUBJECT_PREFIX}.{node}"


def check_node_name(node: str) -> str:
    """A node's name is a subject token: letters, digits, ``-`` and ``_``."""
    if not NODE_NAME.fullmatch(node):
        raise ValueError(f"node_name {node!r}: use 1 to 64 letters, digits, '-' or '_'")
    return node


# messages ---------------------------------------------------------------------------------
# Body: <u16 segments> (<u8 length> segment id)*, then per event <u16 segment number><u32 index>
# and the WAL record as the WAL holds it (<u32 length><u32 crc32><payload>).
_COUNT = struct.Struct("<H")
_NAME = struct.Struct("<B")
_ENTRY = struct.Struct("<HI")


class _Received(msgspec.Struct):
    received_at: int


_decode_received = msgspec.json.Decoder(_Received).decode


def _raw_record(payload: memoryview) -> tuple[int, bytes]:
    return _decode_received(payload).received_at, bytes(payload)


# The publisher's tail: each record's received time (for the tail's ordering) and its bytes.
RAW_RECORDS: RecordFormat[tuple[int, bytes]] = RecordFormat(_raw_record, itemgetter(0))

Raw = tuple[Cursor, tuple[int, bytes]]


def encode_events(items: list[Raw]) -> bytes:
    """A message's body: the records with their cursors (see above)."""
    numbers: dict[str, int] = {}
    body = bytearray()
    for (_, segment, index), (_, payload) in items:
        number = numbers.get(segment)
        if number is None:
            number = numbers[segment] = len(numbers)
        body += _ENTRY.pack(number, index)
        add_record(body, payload)
    head = bytearray(_COUNT.pack(len(numbers)))
    for segment in numbers:
        name = segment.encode()
        head += _NAME.pack(len(name)) + name
    return bytes(head + body)


def decode_events(data: bytes) -> Iterator[tuple[str, int, memoryview]]:
    """``(segment, index, payload)`` of every intact record of a message's body."""
    view = memoryview(data)
    (count,), pos = _COUNT.unpack_from(data, 0), _COUNT.size
    segments = []
    for _ in range(count):
        (length,) = _NAME.unpack_from(data, pos)
        pos += _NAME.size
        segments.append(bytes(view[pos:pos + length]).decode())
        pos += length
    entry, header, size = _ENTRY.size, HEADER.size, len(data)
    while pos + entry + header <= size:
        number, index = _ENTRY.unpack_from(data, pos)
        length, crc = HEADER.unpack_from(data, pos + entry)
        start = pos + entry + header
        payload = view[start:start + length]
        pos = start + length
        if len(payload) != length or zlib.crc32(payload) != crc:
            return  # a damaged message: nothing after this point can be trusted
        yield segments[number], index, payload


def split_batches(items: list[Raw], limit: int = MAX_MESSAGE_BYTES) -> Iterator[list[Raw]]:
    """Items in runs whose message stays under ``limit`` bytes (one oversized record alone)."""
    run: list[Raw] = []
    size = 0
    for item in items:
        n = len(item[1][1]) + 64
        if run and size + n > limit:
            yield run
            run, size = [], 0
        run.append(item)
        size += n
    if run:
        yield run


# the connection ---------------------------------------------------------------------------
class Broker:
    """One connection to NATS for the live service, made again and again until it succeeds; the
    client reconnects by itself after that."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.nc: NATS | None = None
        self.ready = asyncio.Event()
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect(), name="broker-connect")

    async def _connect(self) -> None:
        import nats

        warned = False
        while True:
            try:
                nc = await nats.connect(
                    self.url, name=self.name, connect_timeout=2, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    error_cb=self._error, disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected)
                js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
                await js.stream_info(STREAM)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await nc.close()
                if not warned:
                    log.warning("broker %s: %s; the live feed waits for it (is the stream made? "
                                "`littlestats cluster init`)", self.url, exc or type(exc).__name__)
                    warned = True
                await asyncio.sleep(RETRY_S)
                continue
            self.nc = nc
            self.ready.set()
            log.info("broker %s connected", self.url)
            return

    async def _error(self, exc: Exception) -> None:
        log.debug("broker: %s", exc)

    async def _disconnected(self) -> None:
        if not self.closing:
            log.warning("broker %s: disconnected; reconnecting", self.url)

    async def _reconnected(self) -> None:
        log.info("broker %s: reconnected", self.url)

    async def jetstream(self) -> JetStreamContext:
        await self.ready.wait()
        assert self.nc is not None
        return self.nc.jetstream(timeout=PUBLISH_TIMEOUT_S)

    async def close(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


# publishing -------------------------------------------------------------------------------
@dataclass
class Batch:
    items: list[Raw]
    mark: int  # the start of the tail pass that read them


class Publisher:
    """This node's accepted events, from its WAL to the stream (see the module docstring)."""

    def __init__(self, settings: Settings, broker: Broker,
                 max_backlog: int = MAX_BACKLOG_EVENTS) -> None:
        self.node = check_node_name(settings.node_name)
        self.subject = subject_of(self.node)
        self.broker = broker
        self.max_backlog = max_backlog
        self.tail: WalTail[tuple[int, bytes]] = WalTail(settings.wal_dir, records=RAW_RECORDS)
        self.tail.open_segments()  # kept open: a segment sealed while the broker is away is read
        self.backlog: deque[Batch] = deque()
        self.queued = 0
        self.mark = 0  # the start of the latest tail pass
        self.last: Cursor | None = None  # the newest cursor published
        self.resumed = False
        self.sent_at = 0.0  # monotonic time of the last message
        self.wake = asyncio.Event()
        self.published = 0
        self.dropped = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name="broker-read-wal"),
                       loop.create_task(self._send(), name="broker-publish")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tail.close()

    def read_once(self) -> None:
        """One tail pass: what it hands out joins the backlog, and its start is the new mark."""
        started = now_ms()
        items = self.tail.poll()
        if items:
            for run in split_batches(items):
                self.backlog.append(Batch(run, started))
                self.queued += len(run)
            while self.queued > self.max_backlog and len(self.backlog) > 1:
                gone = self.backlog.popleft()
                self.queued -= len(gone.items)
                self.dropped += len(gone.items)
                EVENTS_DROPPED.inc(len(gone.items))
            BACKLOG.set(self.queued)
        self.mark = started
        self.wake.set()

    def _after_last(self, items: list[Raw]) -> list[Raw]:
        last = self.last
        return items if last is None else [item for item in items if item[0] > last]

    async def _read(self) -> None:
        while True:
            try:
                self.read_once()
            except Exception:
                log.exception("broker publisher: reading the write-ahead log failed")
            await asyncio.sleep(READ_MS / 1000)

    async def _send(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), MARK_MS / 1000)
            self.wake.clear()
            js = await self.broker.jetstream()
            try:
                if not self.resumed:
                    await self._resume(js)
                while self.backlog:
                    batch = self.backlog[0]
                    await self._publish(js, batch.items, batch.mark)
                    if self.backlog and self.backlog[0] is batch:  # not dropped meanwhile
                        self.backlog.popleft()
                        self.queued -= len(batch.items)
                    BACKLOG.set(self.queued)
                if time.monotonic() - self.sent_at >= MARK_MS / 1000 and self.mark:
                    await self._publish(js, [], self.mark)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                PUBLISH_ERRORS.inc()
                if not failing:
                    log.warning("broker publisher: %s; retrying (%d events waiting)",
                                exc or type(exc).__name__, self.queued)
                failing = True
                await asyncio.sleep(RETRY_S)
                continue
            if failing:
                log.info("broker publisher: publishing again")
                failing = False

    async def _resume(self, js: JetStreamContext) -> None:
        """Start after the newest cursor this node published before (a restarted service)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await js.get_last_msg(STREAM, self.subject)
        except NotFoundError:
            self.last = None
        else:
            self.last = parse_cursor((msg.headers or {}).get(LAST_HEADER))
        if self.last is not None:
            kept: deque[Batch] = deque()
            for batch in self.backlog:
                batch.items = self._after_last(batch.items)
                if batch.items:
                    kept.append(batch)
            self.backlog = kept
            self.queued = sum(len(b.items) for b in kept)
        self.resumed = True

    async def _publish(self, js: JetStreamContext, items: list[Raw], mark: int) -> None:
        last = self.last
        if items and (last is None or items[-1][0] > last):
            last = items[-1][0]  # a run is in cursor order
        headers = {NODE_HEADER: self.node, MARK_HEADER: str(mark)}
        if last is not None:
            headers[LAST_HEADER] = cursor_text(last)
        msg_id = f"{self.node}.{cursor_text(items[0][0])}" if items else f"{self.node}.m{mark}"
        headers[ID_HEADER] = msg_id
        await js.publish(self.subject, encode_events(items), headers=headers)
        self.last = last
        self.sent_at = time.monotonic()
        if items:
            self.published += len(items)
            EVENTS_PUBLISHED.inc(len(items))


# consuming --------------------------------------------------------------------------------
class BrokerFeed:
    """A ``LiveFeed`` of every node's accepted events, from the stream (see the module
    docstring for the order)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.inbox: list[Msg] = []
        self.marks: dict[str, int] = {}  # node -> its newest mark
        self.pending: list[tuple[Cursor, LiveEvent]] = []
        self.stream_seq = 0  # the newest stream sequence received
        self.target: int | None = None  # the stream's last sequence when subscribed
        self.since_ms = 0
        self.records = 0
        self.bad_records = 0
        self._sub: Any = None
        self._task: asyncio.Task[int] | None = None

    async def subscribe(self, since_ms: int) -> int:
        """Follow the stream from ``since_ms`` on; the stream's last sequence at that moment
        (what a replay has to reach to be caught up, if it holds anything that recent)."""
        from nats.js import api

        self.since_ms = since_ms
        while True:
            js = await self.broker.jetstream()
            try:
                info = await js.stream_info(STREAM)
                start = datetime.fromtimestamp(since_ms / 1000, UTC)
                self._sub = await js.subscribe(
                    f"{SUBJECT_PREFIX}.>", cb=self._on_message, ordered_consumer=True,
                    idle_heartbeat=0.5,
                    deliver_policy=api.DeliverPolicy.BY_START_TIME,
                    config=api.ConsumerConfig(opt_start_time=start))
                _forget_start_time(self._sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker: could not follow the stream (%s); retrying", exc)
                await asyncio.sleep(RETRY_S)
                continue
            self.target = int(info.state.last_seq)
            return self.target

    def start(self, since_ms: int) -> None:
        """``subscribe`` in the background (the broker may be away for a while)."""
        self._task = asyncio.get_running_loop().create_task(self.subscribe(since_ms),
                                                            name="broker-subscribe")

    async def replayed(self) -> bool:
        """Whether the consumer has nothing more to deliver and everything delivered is in."""
        if self._sub is None or self.inbox:
            return False
        try:
            info = await self._sub.consumer_info()
        except Exception:
            return False
        return not info.num_pending

    async def _on_message(self, msg: Msg) -> None:
        try:
            meta = msg.metadata
        except Exception:
            return
        if meta.timestamp is not None and meta.timestamp.timestamp() * 1000 < self.since_ms:
            return  # replayed from the stream's start by a consumer re-created before any delivery
        self.inbox.append(msg)
        self.stream_seq = meta.sequence.stream

    def poll(self) -> list[tuple[Cursor, LiveEvent]]:
        """Events received so far whose turn has come: every node's mark is past them (nodes
        ``STALE_MS`` behind the newest are not waited for)."""
        inbox, self.inbox = self.inbox, []
        pending, marks = self.pending, self.marks
        count = len(pending)
        for msg in inbox:
            headers = msg.headers or {}
            node = headers.get(NODE_HEADER, "")
            for segment, index, payload in decode_events(msg.data):
                try:
                    event = decode_event(payload)
                except msgspec.DecodeError:
                    self.bad_records += 1
                    continue
                pending.append(((event.received_at, segment, index), event))
            try:
                mark = int(headers.get(MARK_HEADER, "0"))
            except ValueError:
                mark = 0
            if mark > marks.get(node, 0):
                marks[node] = mark
        if len(pending) > count:
            EVENTS_RECEIVED.inc(len(pending) - count)
            self.records += len(pending) - count
        if not pending:
            return []
        newest = max(marks.values(), default=0)
        bound = min((m for m in marks.values() if m >= newest - STALE_MS), default=0)
        pending.sort(key=itemgetter(0))
        cut = bisect.bisect_left(pending, bound, key=_received)
        ready, self.pending = pending[:cut], pending[cut:]
        return ready

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(_quietly(sub.unsubscribe()))


def _forget_start_time(sub: Any) -> None:
    """After a server restart nats-py re-creates an ordered consumer from the stream sequence
    after the last one delivered, but keeps the start time of its first request, which the server
    refuses ("deliver by start sequence, but optional start time is also set"): once the consumer
    exists, drop the start time from the request kept for that."""
    request = getattr(getattr(getattr(sub, "_sub", None), "_jsi", None), "_ccreq", None)
    if request is not None:
        request.opt_start_time = None


def _received(item: tuple[Cursor, LiveEvent]) -> int:
    return item[0][0]


async def _quietly(coro: Any) -> None:
    with contextlib.suppress(Exception):
        await coro


# the live service's side ------------------------------------------------------------------
class ClusterLive:
    """What a cluster node's live service adds: the publisher from its start, and a hub fed by the
    broker (``api.live_service.LiveService`` uses these when ``broker_url`` is set)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        node = check_node_name(settings.node_name)
        self.broker = Broker(settings.broker_url, f"littlestats-{node}")
        self.publisher = Publisher(settings, self.broker)

    def start(self) -> None:
        self.broker.start()
        self.publisher.start()

    async def build_hub(self) -> LiveHub:
        """A hub whose buffer holds the last 90 minutes of every node's events, replayed from the
        stream; then followed live."""
        from api.stream import LiveHub

        buffer = LiveBuffer()
        feed = BrokerFeed(self.broker)
        feed.start(now_ms() - RETAIN_MS)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        idle = 0  # consecutive checks that found nothing left to replay
        while True:
            caught_up = feed.target is not None and feed.stream_seq >= feed.target
            items = feed.poll()
            if items:
                buffer.extend(items, now_ms())
            # Nothing recent enough in the stream: the replay is caught up without reaching it.
            if caught_up or idle >= 2:
                break
            if time.monotonic() > deadline:
                log.warning("the broker's replay is not done after %d s; the live buffer starts "
                            "with what it has, the rest follows", CATCH_UP_TIMEOUT_S)
                break
            await asyncio.sleep(0.1)
            idle = idle + 1 if feed.target is not None and await feed.replayed() else 0
        log.info("live buffer: %d events of the last %d minutes from the broker",
                 buffer.size, RETAIN_MS // 60_000)
        return LiveHub(buffer, feed)

    async def stop(self) -> None:
        await self.publisher.stop()
        await self.broker.close()


# `littlestats cluster init` --------------------------------------------------------------
def init(settings: Settings) -> dict[str, Any]:
    """Create the stream of live events on ``settings.broker_url`` (or bring an existing one to
    this configuration); what it is now."""
    return asyncio.run(_init(settings.broker_url))


def init_step(settings: Settings) -> str:
    """``init`` as a step of ``littlestats cluster init`` (``cluster.cli.InitStep``)."""
    if not settings.broker_url:
        return "skipped: no broker_url"
    made = init(settings)
    what = "created" if made["created"] else "updated"
    return (f"{what} stream {STREAM} at {settings.broker_url} (max age {made['maxAgeSeconds']:.0f} s,"
            f" max {made['maxBytes'] // (1 << 20)} MiB, {made['messages']} messages)")


async def _init(url: str) -> dict[str, Any]:
    import nats
    from nats.js import api
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=10)
        config = api.StreamConfig(
            name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD,
            max_age=STREAM_MAX_AGE_S, max_bytes=STREAM_MAX_BYTES,
            max_msg_size=MAX_MESSAGE_BYTES * 2, duplicate_window=DUPLICATE_WINDOW_S)
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            info, created = await js.add_stream(config), True
        else:
            info, created = await js.update_stream(config), False
        return {
            "stream": STREAM,
            "created": created,
            "subjects": info.config.subjects,
            "maxAgeSeconds": info.config.max_age,
            "maxBytes": info.config.max_bytes,
            "messages": info.state.messages,
        }
    finally:
        await nc.close()
