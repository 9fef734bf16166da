"""``LiveHub``: feeds a worker's ``LiveBuffer`` and fans events and stats out to its subscribers.

One asyncio task per worker does everything on a fixed beat, never per event:

* every ``poll_ms`` it takes the new events from the ``LiveFeed`` into the buffer;
* it sends each subscriber the new events its filter accepts as one chunk, at most every
  ``flush_ms`` per site (the first events after a quiet spell go at the next beat), at most
  ``max_events`` of them (the newest, after a ``skipped`` count of the others); subscribers with
  the same filter and transport share one serialised chunk;
* at most every ``stats_ms`` (only when something changed, or ``stats_idle_ms`` passed) it sends
  one ``stats_update`` per site, computed once and shared by that site's subscribers, together
  with the events when there are any — so a busy subscriber is woken and written to at most
  twice a second;
* every ``ping_ms`` it sends a ``ping`` (the SSE heartbeat).

Subscribers have bounded queues (for an SSE connection written directly, its transport's buffer).
Ingest never waits for them: the hub only appends to queues or hands bytes to transports, and a
subscriber whose queue is full, or has not been empty for ``stall_ms``, is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from falcon.asgi import SSEvent
from prometheus_client import Counter

from api.live import LiveBuffer, LiveEvent, iso_ms, parse_cursor
from api.live_feed import LiveFeed
from littlestats.worker import connection_of

log = logging.getLogger(__name__)

DROP_REASON = "littlestats: slow real-time client dropped"
SSE_RETRY_MS = 3000
# Kernel send buffer of a real-time connection: a few flushes of a busy site. (Left to itself the
# kernel grows it to megabytes per connection, and a client that stopped reading would be noticed
# only once those were full.)
SSE_SEND_BUFFER = 64 * 1024
# At most this many ``event`` messages per subscriber per flush (and per resumption): when a site
# is busier, the newest ones go, after one ``skipped`` message that counts the others. A dashboard
# cannot show more than a few dozen events a second; the stats stay exact.
MAX_EVENTS_PER_FLUSH = 20

CLIENTS_DROPPED = Counter(
    "littlestats_realtime_clients_dropped_total",
    "Real-time subscribers disconnected for not keeping up.", ["transport"]
)

FILTER_FIELDS = ("page", "type", "name", "country", "device", "browser", "os", "source", "hostname")


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants: every given field must match one of its values.

    Values are exact, except ``page`` values ending in ``*``, which match by prefix.
    """

    fields: tuple[tuple[str, frozenset[str]], ...] = ()
    page_prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: dict[str, Any]) -> EventFilter:
        fields: list[tuple[str, frozenset[str]]] = []
        prefixes: list[str] = []
        for key, value in sorted(data.items()):
            if key not in FILTER_FIELDS:
                raise FilterError(f"unknown filter {key!r}; use one of {', '.join(FILTER_FIELDS)}")
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and 0 < len(v) <= 500 for v in values) or len(values) > 50:
                raise FilterError(f"filter {key!r} takes a non-empty string or a list of them")
            exact = frozenset(v for v in values if not (key == "page" and v.endswith("*")))
            if key == "page":
                prefixes += sorted(v[:-1] for v in values if v.endswith("*"))
                if exact or not prefixes:
                    fields.append((key, exact))
            else:
                fields.append((key, exact))
        return cls(tuple(fields), tuple(prefixes))

    def matches(self, e: LiveEvent) -> bool:
        for key, values in self.fields:
            value = getattr(e, key)
            if value in values:
                continue
            if key == "page" and self.page_prefixes and e.page.startswith(self.page_prefixes):
                continue
            return False
        if self.page_prefixes and not any(k == "page" for k, _ in self.fields):
            return e.page.startswith(self.page_prefixes)
        return True

    def describe(self) -> dict[str, list[str]]:
        out = {k: sorted(v) for k, v in self.fields}
        if self.page_prefixes:
            out["page"] = sorted(out.get("page", [])) + [p + "*" for p in self.page_prefixes]
        return out


ALL = EventFilter()


def sse_frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"


class SSEChunk(SSEvent):
    """Pre-serialised SSE bytes (one or more messages) for Falcon's ``resp.sse`` loop."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: bytes) -> None:
        super().__init__()
        self.chunk = chunk

    def serialize(self, handler: Any = None) -> bytes:
        return self.chunk


class Subscriber:
    """One client. ``transport`` is ``sse`` (queue of bytes) or ``ws`` (queue of JSON texts).

    An SSE subscriber whose server hands the app its connection (``littlestats.worker``, through
    the ``littlestats.transport`` scope extension) is written *directly*: once its first chunk is out, what
    the hub offers it goes straight to its connection's transport (HTTP chunk framing done here,
    once per group and flush), with no queue, no task wake-up and no ASGI message per write; its
    response task only waits for the stream to end. Its queue is then the transport's buffer.
    Anything else (WebSocket, another server) takes its items from the queue in its own task.
    """

    def __init__(self, hub: Fanout, site_id: str, flt: EventFilter, transport: str) -> None:
        self.hub = hub
        self.site_id = site_id
        self.filter = flt
        self.transport = transport
        self.queue: deque[Any] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.dropped = False
        self.token_id: str | None = None  # the API token that authorised it (``revoke``)
        self.user_id: str | None = None  # whose role on the site allowed it (``revoke``)
        self.revoked = False
        self.waiting = False
        self.last_take = time.monotonic()
        self.task: asyncio.Task[Any] | None = None  # cancelled when dropped while stuck sending
        self.direct: Any = None  # the connection's transport, once written directly
        self.chunked = True

    def offer(self, item: Any, size: int) -> bool:
        if self.closed:
            return False
        if self.direct is not None:
            if self.direct.is_closing():
                return True  # gone; the hub's beat unsubscribes it
            if self.direct.get_write_buffer_size() + size > self.hub.max_queue_bytes:
                return False
            self.direct.write(self.hub.http_chunk(item) if self.chunked else item)
            return True
        if len(self.queue) >= self.hub.max_queue or self.queued_bytes + size > self.hub.max_queue_bytes:
            return False
        self.queue.append(item)
        self.queued_bytes += size
        self.wake.set()
        return True

    def pending(self) -> bool:
        """Something is waiting for the client to read it."""
        if self.direct is not None:
            return bool(self.direct.get_write_buffer_size())
        return bool(self.queue)

    def take(self) -> list[Any]:
        items = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        self.wake.clear()
        self.last_take = time.monotonic()
        return items

    async def next_items(self) -> list[Any]:
        """Wait for queued items; ``[]`` once the subscriber is closed."""
        while not self.queue and not self.closed:
            self.waiting = True
            try:
                await self.wake.wait()
            finally:
                self.waiting = False
            self.wake.clear()
        return [] if self.closed else self.take()

    def go_direct(self, transport: Any, chunked: bool) -> None:
        """From now on, write offers straight to ``transport`` (what is queued first)."""
        limit_send_buffer(transport)
        self.chunked = chunked
        queued = self.take()
        self.direct = transport
        if queued:
            self.offer(b"".join(queued), sum(map(len, queued)))

    async def sse(self, initial: list[bytes], scope: dict[str, Any] | None = None) -> AsyncIterator[SSEvent]:
        """The stream's body for Falcon's ``resp.sse``; ``scope``: the request's ASGI scope, whose
        ``littlestats.transport`` extension (see ``littlestats.worker.connection_of``) lets it write directly."""
        self.task = asyncio.current_task()
        try:
            yield SSEChunk(b"".join(initial))
            # The response's head and first chunk are written: the connection is ours to write.
            found = connection_of(scope)
            chunked = found.streaming_body() if found is not None else None
            if found is not None and chunked is not None and not self.closed:
                self.go_direct(found.transport, chunked)
                self.waiting = True
                while not self.closed:
                    await self.wake.wait()
                    self.wake.clear()
                return
            while True:
                items = await self.next_items()
                if not items:
                    return
                yield SSEChunk(b"".join(items))
        finally:
            self.hub.unsubscribe(self)


def limit_send_buffer(transport: Any) -> None:
    """Hold the kernel's send buffer for this connection to ``SSE_SEND_BUFFER``."""
    with contextlib.suppress(OSError, AttributeError):
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SEND_BUFFER)


def limit_websocket_buffer(scope: dict[str, Any]) -> None:
    """The same for a WebSocket (when the server hands the app its connection)."""
    found = connection_of(scope)
    if found is not None:
        limit_send_buffer(found.transport)


class Fanout:
    """A set of subscribers per site with bounded queues: what a worker's hub (``LiveHub`` in
    process, or ``api.live_edge.EdgeHub`` fed by the live service) does for its clients."""

    def __init__(self, max_queue: int = 200, max_queue_bytes: int = 4 * 1024 * 1024,
                 stall_ms: int = 30000) -> None:
        self.max_queue, self.max_queue_bytes, self.stall_ms = max_queue, max_queue_bytes, stall_ms
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.dropped = 0
        self.closing = False  # the worker is shutting down: end every stream
        self._chunk_of: tuple[bytes, bytes] = (b"", b"")

    def http_chunk(self, item: bytes) -> bytes:
        """``item`` in HTTP/1.1 chunked framing, framed once for all the subscribers it is
        offered to in a row (a group's flush)."""
        source, framed = self._chunk_of
        if source is not item:
            framed = b"%x\r\n%s\r\n" % (len(item), item)
            self._chunk_of = (item, framed)
        return framed

    def _watch_exit_signals(self) -> None:
        """End every stream when the worker is told to stop.

        uvicorn waits for open responses before it shuts down, and a stream never ends by itself:
        without this, gunicorn would wait out its graceful timeout and then kill the worker.
        The server's own handlers stay in charge; this only notes the signal first.
        """
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def note(signum: int, frame: Any, previous: Any = previous) -> None:
                self.closing = True
                previous(signum, frame)

            try:
                signal.signal(sig, note)
            except ValueError:  # not the main thread (e.g. embedded in a test); nothing to do
                return

    def close_all(self) -> None:
        for subs in list(self.subscribers.values()):
            for sub in list(subs):
                self.unsubscribe(sub)
                if not sub.waiting and sub.task is not None and not sub.task.done():
                    sub.task.cancel(DROP_REASON)

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def attach(self, sub: Subscriber) -> Subscriber:
        self.subscribers.setdefault(sub.site_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        sub.wake.set()
        subs = self.subscribers.get(sub.site_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.site_id]
                self.forget_site(sub.site_id)

    def forget_site(self, site_id: str) -> None:
        """The site's last subscriber left."""

    def drop(self, sub: Subscriber, why: str) -> None:
        """Disconnect a subscriber that cannot keep up; nobody else waits for it."""
        if sub.closed:
            return
        self.dropped += 1
        sub.dropped = True
        CLIENTS_DROPPED.labels(transport=sub.transport).inc()
        log.info("dropping a %s subscriber of site %s: %s", sub.transport, sub.site_id, why)
        self.unsubscribe(sub)
        sub.queue.clear()
        if sub.direct is not None:
            sub.direct.abort()  # what it has not read is dropped with the connection
        elif not sub.waiting and sub.task is not None and not sub.task.done():
            sub.task.cancel(DROP_REASON)  # it is blocked writing to a client that does not read

    def revoke(self, token_ids: set[str], members: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset()
               ) -> int:
        """End the streams authorised by these (revoked) API tokens, or opened by these (user id,
        site id) pairs (the user lost their role on the site): an SSE response completes, a
        WebSocket is closed with 1008. Returns how many ended."""
        ended = 0
        for subs in list(self.subscribers.values()):
            for sub in list(subs):
                if ((sub.token_id is not None and sub.token_id in token_ids)
                        or (sub.user_id is not None and (sub.user_id, sub.site_id) in members)):
                    sub.revoked = True
                    self.unsubscribe(sub)
                    ended += 1
        return ended

    def token_ids(self) -> set[str]:
        """The API tokens that authorised the open streams."""
        return {sub.token_id for subs in self.subscribers.values() for sub in subs if sub.token_id is not None}

    def members(self) -> set[tuple[str, str]]:
        """The (user id, site id) pairs whose role allowed the open streams."""
        return {(sub.user_id, sub.site_id) for subs in self.subscribers.values() for sub in subs
                if sub.user_id is not None}

    def deliver(self, subs: Iterable[Subscriber], item: Any, size: int) -> None:
        for sub in list(subs):
            if not sub.offer(item, size):
                self.drop(sub, "its queue is full")

    def check_stalls(self) -> None:
        now = time.monotonic()
        limit = now - self.stall_ms / 1000
        for subs in list(self.subscribers.values()):
            for sub in list(subs):
                if (sub.task is not None and sub.task.done()) or (
                        sub.direct is not None and sub.direct.is_closing()):
                    self.unsubscribe(sub)  # its connection is gone; its stream was not closed
                elif not sub.pending():
                    sub.last_take = now  # it has read everything so far
                elif sub.last_take < limit:
                    self.drop(sub, f"it took nothing for {self.stall_ms / 1000:.0f} s")


class LiveHub(Fanout):
    def __init__(
        self,
        buffer: LiveBuffer,
        feed: LiveFeed,
        poll_ms: int = 50,
        flush_ms: int = 500,
        stats_ms: int = 1000,
        stats_idle_ms: int = 5000,
        ping_ms: int = 15000,
        max_queue: int = 200,
        max_queue_bytes: int = 4 * 1024 * 1024,
        stall_ms: int = 30000,
        max_events: int = MAX_EVENTS_PER_FLUSH,
    ) -> None:
        super().__init__(max_queue, max_queue_bytes, stall_ms)
        self.buffer = buffer
        self.feed = feed
        self.poll_ms, self.flush_ms, self.stats_ms = poll_ms, flush_ms, stats_ms
        self.max_events = max_events
        self.stats_idle_ms, self.ping_ms = stats_idle_ms, ping_ms
        self.unsent: dict[str, list[LiveEvent]] = {}
        self.stats_sent: dict[str, tuple[int, int]] = {}  # site -> (time, buffer version)
        self._task: asyncio.Task[None] | None = None
        self.flushed: dict[str, int] = {}  # site -> when its events were last sent
        self._last_ping = self._last_expire = self._last_stall_check = 0

    # lifecycle -----------------------------------------------------------------------------
    def start(self, watch_signals: bool = True) -> None:
        if self._task is None:
            self._last_ping = self.now_ms()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-hub")
            if watch_signals:
                self._watch_exit_signals()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_ms / 1000)
            try:
                self.tick()
            except Exception:
                log.exception("live hub tick failed")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.feed.close()

    # subscriptions -------------------------------------------------------------------------
    def subscribe(self, site_id: str, flt: EventFilter, transport: str) -> Subscriber:
        """A new subscriber; ``open`` gives it its first messages."""
        return self.attach(Subscriber(self, site_id, flt, transport))

    def attach(self, sub: Subscriber) -> Subscriber:
        """Its first ``stats_update`` comes from ``initial``, so the site's next broadcast waits
        for the usual interval."""
        if sub.site_id not in self.stats_sent:
            live = self.buffer.sites.get(sub.site_id)
            self.stats_sent[sub.site_id] = (self.now_ms(), live.version if live is not None else 0)
        return super().attach(sub)

    def forget_site(self, site_id: str) -> None:
        self.unsent.pop(site_id, None)
        self.stats_sent.pop(site_id, None)
        self.flushed.pop(site_id, None)

    def initial(self, site_id: str, flt: EventFilter, transport: str, cursor_text: str | None) -> list[Any]:
        """A subscriber's first messages: a ``stats_update`` and, when it resumes, the events it
        missed since the cursor (``retry`` first on SSE). Events polled but not flushed yet reach
        it with the next flush."""
        self.poll()
        stats = stats_message(self.buffer.stats(site_id, self.now_ms()))
        missed: list[LiveEvent] = []
        cursor = parse_cursor(cursor_text)
        live = self.buffer.sites.get(site_id)
        if cursor is not None and live is not None:
            pending = {id(e) for e in self.unsent.get(site_id, ())}
            missed = [e for e in live.since(cursor) if id(e) not in pending and flt.matches(e)]
        skipped, missed = self.newest(missed)
        head = [("stats_update", stats)] + ([("skipped", skipped_message(skipped))] if skipped else [])
        if transport == "sse":
            return [f"retry: {SSE_RETRY_MS}\n\n".encode()] + [sse_frame(t, m) for t, m in head] + [
                event_sse(e) for e in missed
            ]
        return [m.decode() for _, m in head] + [e.message().decode() for e in missed]

    def newest(self, events: list[LiveEvent]) -> tuple[int, list[LiveEvent]]:
        """At most ``max_events`` of them, the newest, and how many were left out."""
        skipped = len(events) - self.max_events
        return (skipped, events[skipped:]) if skipped > 0 else (0, events)

    async def open(self, sub: Subscriber, cursor_text: str | None) -> list[Any]:
        return self.initial(sub.site_id, sub.filter, sub.transport, cursor_text)

    def refilter(self, sub: Subscriber, flt: EventFilter) -> None:
        sub.filter = flt

    async def stats_json(self, site_id: str) -> bytes:
        self.poll()  # include what was accepted up to now
        return orjson.dumps(self.buffer.stats(site_id, self.now_ms()))

    # the beat -------------------------------------------------------------------------------
    def poll(self) -> None:
        items = self.feed.poll()
        if not items:
            return
        now = self.now_ms()
        subscribed, unsent = self.subscribers, self.unsent
        for site_id, events in self.buffer.extend(items, now).items():
            if site_id in subscribed:
                waiting = unsent.get(site_id)
                if waiting is None:
                    unsent[site_id] = events
                else:
                    waiting += events

    def tick(self) -> None:
        if self.closing:
            self.close_all()
            return
        self.poll()
        now = self.now_ms()
        if now - self._last_expire >= 1000:
            self._last_expire = now
            self.buffer.expire(now)
        for site_id, subs in list(self.subscribers.items()):
            self.flush_site(site_id, subs, now)
        if now - self._last_stall_check >= 1000:
            self._last_stall_check = now
            self.check_stalls()
        if now - self._last_ping >= self.ping_ms:
            self._last_ping = now
            self.ping(now)

    def flush_site(self, site_id: str, subs: set[Subscriber], now: int) -> None:
        """Send a site's subscribers its new events (at most every ``flush_ms``: the first events
        after a quiet spell go at once) and its stats (at most every ``stats_ms``), in one go, so
        that each subscriber is woken — and written to — once."""
        events = self.unsent.get(site_id)
        flush_due = bool(events) and now - self.flushed.get(site_id, 0) >= self.flush_ms
        live = self.buffer.sites.get(site_id)
        version = live.version if live is not None else 0
        sent_at, sent_version = self.stats_sent.get(site_id, (0, -1))
        stats_due = now - sent_at >= self.stats_ms and (
            version != sent_version or now - sent_at >= self.stats_idle_ms)
        if stats_due and events and not flush_due:
            stats_due = False  # it goes with the events, a moment later
        stats = None
        if stats_due:
            self.stats_sent[site_id] = (now, version)
            stats = stats_message(self.buffer.stats(site_id, now))
        if flush_due and events:
            del self.unsent[site_id]
            self.flushed[site_id] = now
            self.flush_events(subs, events, stats)
        elif stats is not None:
            self.broadcast(subs, stats, "stats_update")

    def flush_events(self, subs: set[Subscriber], events: list[LiveEvent],
                     stats: bytes | None = None) -> None:
        """The events to each subscriber (what its filter accepts), then ``stats`` when given:
        one item per subscriber, so one write to each client."""
        shared: dict[tuple[str, EventFilter], tuple[Any, int] | None] = {}
        sent: list[LiveEvent] = []
        for sub in list(subs):
            key = (sub.transport, sub.filter)
            if key not in shared:
                flt = sub.filter
                accepted = events if flt == ALL else [e for e in events if flt.matches(e)]
                shared[key] = self._encode(sub.transport, accepted, sent, stats)
            item = shared[key]
            if item is not None and not sub.offer(*item):
                self.drop(sub, "its queue is full")
        for e in sent:
            e.serialised = None  # shared for this flush only; resumption re-serialises

    def _encode(self, transport: str, events: list[LiveEvent], sent: list[LiveEvent],
                stats: bytes | None = None) -> tuple[Any, int] | None:
        """One subscriber's share of a flush, serialised once for everyone with its filter and
        transport: at most ``max_events`` events, the newest, after a ``skipped`` message when
        some were left out, then the ``stats_update`` when there is one. The events serialised
        are added to ``sent``."""
        if not events and stats is None:
            return None
        skipped, events = self.newest(events)
        sent += events
        if transport == "sse":
            chunk = b"".join(event_sse(e) for e in events)
            if skipped:
                chunk = sse_frame("skipped", skipped_message(skipped)) + chunk
            if stats is not None:
                chunk += sse_frame("stats_update", stats)
            return chunk, len(chunk)
        texts = [e.message().decode() for e in events]
        if skipped:
            texts.insert(0, skipped_message(skipped).decode())
        if stats is not None:
            texts.append(stats.decode())
        return texts, sum(len(t) for t in texts)

    def broadcast(self, subs: Iterable[Subscriber], message: bytes, sse_event: str = "") -> None:
        sse = sse_frame(sse_event or orjson.loads(message)["type"], message)
        text = message.decode()
        for sub in list(subs):
            ok = sub.offer(sse, len(sse)) if sub.transport == "sse" else sub.offer([text], len(text))
            if not ok:
                self.drop(sub, "its queue is full")

    def ping(self, now: int) -> None:
        message = orjson.dumps({"type": "ping", "time": iso_ms(now)})
        for subs in list(self.subscribers.values()):
            self.broadcast(subs, message, "ping")


def event_sse(e: LiveEvent) -> bytes:
    return e.sse()


def stats_message(stats: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "stats_update", "stats": stats})


def skipped_message(count: int) -> bytes:
    """Said before the newest events of a flush when ``count`` older ones were left out."""
    return orjson.dumps({"type": "skipped", "count": count})


class _DropFilter(logging.Filter):
    """Keeps uvicorn from logging our deliberate cancellation of a stuck client as an app error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) and DROP_REASON in exc.args:
            return False
        return True


def quiet_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


async def close_quietly(coro: Any, timeout: float = 2.0) -> None:
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(coro, timeout)
