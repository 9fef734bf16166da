"""``EdgeHub``: a worker's side of the live service (``api.live_service``).

The worker keeps its own subscribers, their bounded queues and the slow-client rules
(``api.stream.Fanout``); everything else — the buffer, stats, serialisation — happens once, in
the live service. Subscribers with the same site, filter and transport form a *group*, which the
service sees as one subscriber: each flush arrives as one frame per group, and its bytes go as
they are to every subscriber of the group (written straight to each SSE connection, queued for
WebSocket senders; see ``api.stream.Subscriber``). A worker does no work per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.live_service import frame, read_frame, unpack_texts
from api.stream import EventFilter, Fanout, Subscriber

log = logging.getLogger(__name__)


class LiveServiceUnavailable(RuntimeError):
    pass


@dataclass(eq=False)
class _Group:
    gid: int
    key: tuple[str, EventFilter, str]
    subs: set[Subscriber] = field(default_factory=set)
    opening: int = 0  # subscribers waiting for their first messages


class EdgeHub(Fanout):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, **limits: Any) -> None:
        super().__init__(**limits)
        self.reader = reader
        self.writer = writer
        self.groups: dict[tuple[str, EventFilter, str], _Group] = {}
        self.by_gid: dict[int, _Group] = {}
        self.group_of: dict[Subscriber, _Group] = {}
        # request id -> its reply's future, and what to do as the reply is read
        self.replies: dict[int, tuple[asyncio.Future[tuple[dict[str, Any], bytes]], Callable[[], None] | None]] = {}
        self.ids = itertools.count(1)
        self.broken = False
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def connect(cls, path: Path, timeout: float = 10.0) -> EdgeHub:
        """Connect to the live service, waiting for it while it starts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise LiveServiceUnavailable(f"the live service is not answering on {path}") from exc
                await asyncio.sleep(0.2)
                continue
            hub = cls(reader, writer)
            hub.start()
            return hub

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name="live-edge-read"),
                       loop.create_task(self._beat(), name="live-edge-beat")]
        self._watch_exit_signals()

    # requests ------------------------------------------------------------------------------
    async def _request(self, header: dict[str, Any],
                       on_reply: Callable[[], None] | None = None) -> tuple[dict[str, Any], bytes]:
        """The service's reply; ``on_reply`` runs as the reply is read, before any later frame."""
        if self.broken:
            raise LiveServiceUnavailable("the connection to the live service was lost")
        rid = next(self.ids)
        future: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = future, on_reply
        self.writer.write(frame({**header, "r": rid}))
        try:
            return await future
        finally:
            self.replies.pop(rid, None)

    async def stats_json(self, site_id: str) -> bytes:
        return (await self._request({"op": "stats", "site": site_id}))[1]

    # subscriptions -------------------------------------------------------------------------
    def subscribe(self, site_id: str, flt: EventFilter, transport: str) -> Subscriber:
        """A subscriber; it joins its group (and gets messages) with ``open``."""
        return Subscriber(self, site_id, flt, transport)

    def _group(self, sub: Subscriber) -> tuple[_Group, bool]:
        key = (sub.site_id, sub.filter, sub.transport)
        group = self.groups.get(key)
        if group is not None:
            return group, False
        group = _Group(next(self.ids), key)
        self.groups[key] = group
        self.by_gid[group.gid] = group
        return group, True

    def _describe(self, group: _Group) -> dict[str, Any]:
        site, flt, transport = group.key
        return {"g": group.gid, "site": site, "filter": flt.describe(), "transport": transport}

    async def open(self, sub: Subscriber, cursor_text: str | None) -> list[Any]:
        """Join the subscriber's group; its first messages (stats, and what it missed since the
        cursor). Flushes sent after the reply reach it through the group, none before: no gap,
        no duplicate. It joins as the reply is read — the flushes behind the reply may already
        be read too before this coroutine runs again — and what they bring waits in its queue
        behind its first messages."""
        group, new = self._group(sub)

        def join() -> None:
            if not sub.closed:
                group.subs.add(sub)
                self.group_of[sub] = group
                self.attach(sub)

        group.opening += 1
        try:
            header, body = await self._request(
                {"op": "open", "new": new, "cursor": cursor_text, **self._describe(group)}, join)
        finally:
            group.opening -= 1
        if sub.closed:  # gone while waiting
            self.unsubscribe(sub)
            self._leave(group)
            return []
        return unpack_texts(header["l"], body) if sub.transport == "ws" else [body]

    def refilter(self, sub: Subscriber, flt: EventFilter) -> None:
        old = self.group_of.pop(sub, None)
        if old is not None:
            old.subs.discard(sub)
            self._leave(old)
        sub.filter = flt
        group, new = self._group(sub)
        if new and not self.broken:
            self.writer.write(frame({"op": "sub", **self._describe(group)}))
        group.subs.add(sub)
        self.group_of[sub] = group

    def unsubscribe(self, sub: Subscriber) -> None:
        super().unsubscribe(sub)
        group = self.group_of.pop(sub, None)
        if group is not None:
            group.subs.discard(sub)
            self._leave(group)

    def _leave(self, group: _Group) -> None:
        if group.subs or group.opening or self.groups.get(group.key) is not group:
            return
        del self.groups[group.key]
        del self.by_gid[group.gid]
        if not self.broken:
            self.writer.write(frame({"op": "unsub", "g": group.gid}))

    # the feed ------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            while True:
                header, body = await read_frame(self.reader)
                gid = header.get("g")
                if gid is not None:
                    group = self.by_gid.get(gid)
                    if group is None or not group.subs:
                        continue
                    if "l" in header:
                        texts = unpack_texts(header["l"], body)
                        self.deliver(group.subs, texts, len(body))
                    else:
                        self.deliver(group.subs, body, len(body))
                    continue
                future, on_reply = self.replies.get(header.get("r", 0), (None, None))
                if future is not None and not future.done():
                    if on_reply is not None:
                        on_reply()
                    future.set_result((header, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("lost the connection to the live service; ending this worker's streams")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live feed from the live service failed")
        finally:
            self._break()

    def _break(self) -> None:
        self.broken = True
        for future, _ in self.replies.values():
            if not future.done():
                future.set_exception(LiveServiceUnavailable("the connection to the live service was lost"))
        self.close_all()  # clients reconnect (EventSource does by itself) and get a new connection
        with contextlib.suppress(Exception):
            self.writer.close()

    async def _beat(self) -> None:
        last_stall_check = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            if self.closing:
                self.close_all()
                continue
            if time.monotonic() - last_stall_check >= 1.0:
                last_stall_check = time.monotonic()
                self.check_stalls()

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
