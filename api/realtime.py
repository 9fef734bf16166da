"""Real time (SPEC §8): ``/api/v2/stats/{site}``, ``/api/v2/realtime/{site}`` (SSE and WebSocket)
and ``POST /api/v2/realtime/{site}/token`` (a stream token for ``?token=``).

Each worker runs one ``LiveHub`` over its own ``LiveBuffer``, fed from every worker's WAL segments
(``api.live_feed.WalTail``), so a client sees every accepted event whichever worker serves it.
See docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import falcon
import falcon.asgi
import orjson

from api import stream_token
from api.auth import Principal, authorize
from api.live import LiveBuffer, parse_cursor
from api.live_feed import WalTail, backfill_from_parquet
from api.stream import (
    ALL,
    EventFilter,
    FilterError,
    LiveHub,
    Subscriber,
    close_quietly,
    event_sse,
    quiet_drops,
    sse_frame,
    stats_message,
)
from littlestats.controlplane import Site
from littlestats.http import json_response

log = logging.getLogger(__name__)

SSE_RETRY_MS = 3000


async def live_hub(services: Any) -> LiveHub:
    """The worker's hub, started by the first real-time request (until then a worker does not
    follow the WAL and pays nothing for real time)."""
    hub: LiveHub | None = services.extras.get("live_hub")
    if hub is not None:
        return hub
    lock = services.extras.setdefault("live_hub_lock", asyncio.Lock())
    async with lock:
        hub = services.extras.get("live_hub")
        if hub is None:
            # Reading Parquet and the WAL's backlog takes a while: not on the event loop.
            hub = await asyncio.to_thread(_build_hub, services)
            hub.start()
            services.extras["live_hub"] = hub
    return hub


def _build_hub(services: Any) -> LiveHub:
    """A hub whose buffer holds the last 90 minutes: first from raw Parquet, then from the WAL
    segments not sealed yet (skipping events found in both), then followed live."""
    buffer = LiveBuffer()
    now = int(time.time() * 1000)
    tail = WalTail(services.settings.wal_dir)
    tail.open_segments()  # open every segment first, so one sealed meanwhile is read from Parquet
    try:
        items, ids = backfill_from_parquet(services.settings.raw_dir, now)
    except Exception:
        log.exception("could not load recent events from Parquet; the live buffer starts empty")
        items, ids = [], set()
    tail.skip_ids = ids
    items += tail.poll()  # the two sources interleave: feed them in one order
    tail.skip_ids = set()
    items.sort(key=lambda item: item[0])
    buffer.extend(items, now)
    return LiveHub(buffer, tail)


class RealtimeAuth:
    """Either a stream token (``?token=``), or what every API resource accepts (``api.auth``)."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self._secret: bytes | None = None

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self.services.control.server_secret(stream_token.SECRET_NAME)
        return self._secret

    def site(self, req: Any, site_ref: str) -> Site:
        token = req.get_param("token")
        if not token:
            return authorize(req, self.services, site_ref, allow_query_token=True)[1]
        try:
            grant = stream_token.verify(self.secret, token)
        except stream_token.StreamTokenError as exc:
            raise falcon.HTTPUnauthorized(description=str(exc), challenges=["Bearer"]) from None
        site = self.services.control.get_site(grant.site_id)
        if site is None or site_ref not in (site.id, site.domain_key):
            raise falcon.HTTPForbidden(description="this stream token is for another site")
        if grant.user_id is not None:
            user = self.services.control.get_user(grant.user_id)
            if user is None or not Principal(user).can_see(site):
                raise falcon.HTTPUnauthorized(description="stream token no longer valid; mint a new one")
        return site


def _filter_from_query(req: Any) -> EventFilter:
    data: dict[str, Any] = {}
    for key in req.params:
        if key in ("token", "access_token", "lastEventId"):
            continue
        values = req.get_param_as_list(key) or []
        data[key] = values if len(values) != 1 else values[0]
    try:
        return EventFilter.parse(data)
    except FilterError as exc:
        raise falcon.HTTPBadRequest(description=str(exc)) from None


class StatsResource:
    """``GET /api/v2/stats/{site}``: current stats from the live buffer."""

    def __init__(self, services: Any, auth: RealtimeAuth) -> None:
        self.services = services
        self.auth = auth

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        found = self.auth.site(req, site)
        hub = await live_hub(self.services)
        hub.poll()  # include what was accepted up to now
        resp.set_header("Cache-Control", "no-store")
        json_response(resp, hub.buffer.stats(found.id, hub.now_ms()))


class StreamTokenResource:
    """``POST /api/v2/realtime/{site}/token``: a short-lived token for ``EventSource`` URLs."""

    def __init__(self, services: Any, auth: RealtimeAuth) -> None:
        self.services = services
        self.auth = auth

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        ttl = req.get_param_as_int("ttl", min_value=stream_token.MIN_TTL, max_value=stream_token.MAX_TTL)
        token, expires = stream_token.mint(
            self.auth.secret, found.id, principal.user_id, ttl or stream_token.DEFAULT_TTL
        )
        resp.set_header("Cache-Control", "no-store")
        json_response(resp, {
            "token": token,
            "siteId": found.id,
            "expiresAt": expires,
            "expiresIn": expires - int(time.time()),
            "url": f"/api/v2/realtime/{found.id}?token={token}",
        })


class RealtimeResource:
    """``GET /api/v2/realtime/{site}``: an SSE stream, or a WebSocket on an upgrade request."""

    def __init__(self, services: Any, auth: RealtimeAuth) -> None:
        self.services = services
        self.auth = auth

    def _initial(self, hub: LiveHub, sub: Subscriber, cursor_text: str | None) -> list[Any]:
        """A first ``stats_update`` and, when resuming, the events missed since the cursor."""
        now = hub.now_ms()
        hub.poll()
        stats = stats_message(hub.buffer.stats(sub.site_id, now))
        missed = []
        cursor = parse_cursor(cursor_text)
        live = hub.buffer.sites.get(sub.site_id)
        if cursor is not None and live is not None:
            # Events polled but not flushed yet reach this subscriber with the next flush.
            pending = {id(e) for e in hub.unsent.get(sub.site_id, ())}
            missed = [e for e in live.since(cursor) if id(e) not in pending and sub.filter.matches(e)]
        if sub.transport == "sse":
            return [f"retry: {SSE_RETRY_MS}\n\n".encode(), sse_frame("stats_update", stats)] + [
                event_sse(e) for e in missed
            ]
        return [stats.decode()] + [e.message().decode() for e in missed]

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        found = self.auth.site(req, site)
        flt = _filter_from_query(req)
        hub = await live_hub(self.services)
        sub = hub.subscribe(found.id, flt, "sse")
        initial = self._initial(hub, sub, req.get_header("Last-Event-ID") or req.get_param("lastEventId"))
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        resp.content_type = "text/event-stream"
        resp.sse = sub.sse(initial)

    async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket, site: str) -> None:
        found = self.auth.site(req, site)  # an HTTPError here closes with 3000 + status (3401, 3403, 3404)
        flt = _filter_from_query(req)
        hub = await live_hub(self.services)
        await ws.accept()
        sub = hub.subscribe(found.id, flt, "ws")
        sender = asyncio.get_running_loop().create_task(self._send(ws, sub, self._initial(
            hub, sub, req.get_param("lastEventId"))))
        sub.task = sender
        try:
            while not sub.closed:
                receive = asyncio.ensure_future(ws.receive_text())
                done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                self._on_message(sub, receive.result())
        except (falcon.WebSocketDisconnected, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(sub)
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            if not ws.closed:
                # 1013 "try again later": dropped for not keeping up; 1001: the worker is stopping.
                code = 1013 if sub.dropped else 1001 if hub.closing else 1000
                await close_quietly(ws.close(code))

    def _on_message(self, sub: Subscriber, text: str) -> None:
        try:
            message = orjson.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except orjson.JSONDecodeError:
            kind, message = None, None
        if kind == "ping":
            sub.offer([orjson.dumps({"type": "pong", "time": int(time.time() * 1000)}).decode()], 64)
        elif kind == "pong":
            pass
        elif kind == "filter":
            raw = message.get("filter") or {}
            try:
                if not isinstance(raw, dict):
                    raise FilterError("'filter' must be an object such as {\"page\": \"/pricing\"}")
                sub.filter = EventFilter.parse(raw) if raw else ALL
                reply = {"type": "filter", "filter": sub.filter.describe()}
            except FilterError as exc:
                reply = {"type": "error", "error": str(exc)}
            sub.offer([orjson.dumps(reply).decode()], 256)
        else:
            sub.offer([orjson.dumps({"type": "error", "error":
                       "messages are JSON objects with type 'filter', 'ping' or 'pong'"}).decode()], 128)

    async def _send(self, ws: falcon.asgi.WebSocket, sub: Subscriber, initial: list[str]) -> None:
        for text in initial:
            await ws.send_text(text)
        while True:
            items = await sub.next_items()
            if not items:
                return
            for item in items:
                for text in item:
                    await ws.send_text(text)


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    quiet_drops()
    auth = RealtimeAuth(services)
    app.add_route("/api/v2/stats/{site}", StatsResource(services, auth))
    app.add_route("/api/v2/realtime/{site}", RealtimeResource(services, auth))
    app.add_route("/api/v2/realtime/{site}/token", StreamTokenResource(services, auth))
