"""Real time (SPEC §8): ``/api/v2/stats/{site}``, ``/api/v2/realtime/{site}`` (SSE and WebSocket)
and ``POST /api/v2/realtime/{site}/token`` (a stream token for ``?token=``).

Under ``littlestats serve``, one live service per machine (``api.live_service``) follows every
worker's WAL segments, keeps the buffer and serialises each message once; each worker's
``EdgeHub`` (``api.live_edge``) relays it to its own clients, so a client sees every accepted event
whichever worker serves it. See docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any

import falcon
import falcon.asgi
import orjson

from api import stream_token
from api.auth import Principal, authorize, role_on
from api.live_edge import EdgeHub, LiveServiceUnavailable
from api.live_service import build_hub, socket_path
from api.live_service import expected as live_service_expected
from api.stream import (
    ALL,
    EventFilter,
    FilterError,
    LiveHub,
    Subscriber,
    close_quietly,
    limit_websocket_buffer,
    quiet_drops,
)
from littlestats.controlplane import Site
from littlestats.http import json_response
from littlestats.worker import connection_of

log = logging.getLogger(__name__)


async def live_hub(services: Any, scope: dict[str, Any] | None = None) -> LiveHub | EdgeHub:
    """The worker's hub, made by the first real-time request (until then a worker pays nothing
    for real time): a connection to the live service when ``serve`` runs one, else (the app
    served some other way) its own ``LiveHub`` following the WAL in this process.

    Under ``serve`` (its worker class hands the request's connection through ``scope``) the live
    service may still be starting when the first request comes: the worker waits for its socket
    rather than follow the WAL itself, which would hold a second buffer in the worker for good."""
    hub: LiveHub | EdgeHub | None = services.extras.get("live_hub")
    if hub is not None and not (isinstance(hub, EdgeHub) and hub.broken):
        return hub
    lock = services.extras.setdefault("live_hub_lock", asyncio.Lock())
    async with lock:
        hub = services.extras.get("live_hub")
        if hub is None or (isinstance(hub, EdgeHub) and hub.broken):
            path = socket_path(services.settings)
            if path.exists() or live_service_expected(services.settings) or connection_of(scope) is not None:
                try:
                    hub = await EdgeHub.connect(path)
                except LiveServiceUnavailable as exc:
                    raise falcon.HTTPServiceUnavailable(description=f"{exc}; retry in a few seconds", retry_after=2) from None
            else:
                # Reading Parquet and the WAL's backlog takes a while: not on the event loop.
                hub = await asyncio.to_thread(build_hub, services.settings)
                hub.start()
            services.extras["live_hub"] = hub
            if "revocation_watch" not in services.extras:
                watch = RevocationWatch(services)
                services.extras["revocation_watch"] = asyncio.get_running_loop().create_task(watch.run())
    return hub


REVOCATION_CHECK_SECONDS = 2.0


class RevocationWatch:
    """Ends the worker's streams whose API token was revoked (``DELETE /api/v2/tokens/{id}``, or
    its user deleted), or whose user is no longer a member of the site (docs/access.md), within
    ``REVOCATION_CHECK_SECONDS``: each stream remembers the API token that authorised it (directly,
    or through the stream token minted with it) and the user, and every two seconds the worker asks
    the control plane which of its streams' tokens still exist and which users still have a role:
    one indexed lookup per distinct token and per distinct (user, site), however many streams
    share them."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REVOCATION_CHECK_SECONDS)
            try:
                self.check()
            except Exception:  # the control plane busy or gone for a moment: try again next time
                log.exception("could not check the live streams' tokens")

    def check(self) -> int:
        hub = self.services.extras.get("live_hub")
        if hub is None:
            return 0
        control = self.services.control
        gone = {token_id for token_id in hub.token_ids() if control.get_token(token_id) is None}
        left = {(user_id, site_id) for user_id, site_id in hub.members() if not self._member(user_id, site_id)}
        ended = hub.revoke(gone, left) if gone or left else 0
        if ended:
            log.info("ended %d live streams whose API token was revoked or whose user lost the site", ended)
        return ended

    def _member(self, user_id: str, site_id: str) -> bool:
        control = self.services.control
        user = control.get_user(user_id)
        return user is not None and (user.is_admin or control.role_of(user_id, site_id) is not None)


@contextlib.contextmanager
def _service_errors() -> Iterator[None]:
    try:
        yield
    except LiveServiceUnavailable as exc:
        raise falcon.HTTPServiceUnavailable(description=f"{exc}; retry in a few seconds", retry_after=2) from None


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
        return self.grant(req, site_ref)[0]

    def grant(self, req: Any, site_ref: str) -> tuple[Site, str | None]:
        """The site the request may follow, and the id of the API token that allows it (directly
        or through a stream token; ``None`` in dev mode without a token)."""
        token = req.get_param("token")
        if not token:
            principal, site = authorize(req, self.services, site_ref, allow_query_token=True)
            req.context.stream_user = principal.user_id if not principal.dev else None
            return site, self.api_token_id(req)
        try:
            grant = stream_token.verify(self.secret, token)
        except stream_token.StreamTokenError as exc:
            raise falcon.HTTPUnauthorized(description=str(exc), challenges=["Bearer"]) from None
        control = self.services.control
        site = control.get_site(grant.site_id)
        if site is None or site_ref not in (site.id, site.domain_key):
            raise falcon.HTTPForbidden(description="this stream token is for another site")
        if grant.user_id is not None:
            user = control.get_user(grant.user_id)
            if user is None or role_on(Principal(user), site, control) is None:
                raise falcon.HTTPUnauthorized(description="stream token no longer valid; mint a new one")
        if grant.token_id is not None and control.get_token(grant.token_id) is None:
            raise falcon.HTTPUnauthorized(
                description="the API token this stream token was minted with was revoked; "
                            "mint a new one with a valid API token", challenges=["Bearer"])
        req.context.stream_user = grant.user_id if not self.services.settings.dev else None
        return site, grant.token_id

    def api_token_id(self, req: Any) -> str | None:
        """The id of the API token the request carries (``Authorization`` or ``access_token``)."""
        scheme, _, plain = (req.get_header("Authorization") or "").strip().partition(" ")
        plain = (plain.strip() if scheme.lower() == "bearer" else "") or req.get_param("access_token") or ""
        found = self.services.control.find_token(plain) if plain else None
        return found.id if found is not None else None


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
        hub = await live_hub(self.services, req.scope)
        with _service_errors():
            data = await hub.stats_json(found.id)
        resp.set_header("Cache-Control", "no-store")
        resp.content_type = falcon.MEDIA_JSON
        resp.data = data


class StreamTokenResource:
    """``POST /api/v2/realtime/{site}/token``: a short-lived token for ``EventSource`` URLs."""

    def __init__(self, services: Any, auth: RealtimeAuth) -> None:
        self.services = services
        self.auth = auth

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        ttl = req.get_param_as_int("ttl", min_value=stream_token.MIN_TTL, max_value=stream_token.MAX_TTL)
        token, expires = stream_token.mint(
            self.auth.secret, found.id, principal.user_id, ttl or stream_token.DEFAULT_TTL,
            token_id=self.auth.api_token_id(req),
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

    async def _subscribe(self, req: falcon.asgi.Request, site: str, kind: str,
                         last_event_id: str | None) -> tuple[Any, Any, Any]:
        """Authorise the request, subscribe it to its site's feed and open it from
        ``last_event_id``: the hub, the subscription and the messages it starts with."""
        found, token_id = self.auth.grant(req, site)
        flt = _filter_from_query(req)
        hub = await live_hub(self.services, req.scope)
        sub = hub.subscribe(found.id, flt, kind)
        sub.token_id = token_id
        sub.user_id = getattr(req.context, "stream_user", None)
        with _service_errors():
            initial = await hub.open(sub, last_event_id)
        return hub, sub, initial

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _hub, sub, initial = await self._subscribe(
            req, site, "sse", req.get_header("Last-Event-ID") or req.get_param("lastEventId"))
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        resp.content_type = "text/event-stream"
        resp.sse = sub.sse(initial, req.scope)

    async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket, site: str) -> None:
        try:
            # An HTTPError here closes with 3000 + status, which `websocket_refusals` turns into
            # that HTTP status (401, 403, 404, ...) with this description.
            hub, sub, initial = await self._subscribe(req, site, "ws", req.get_param("lastEventId"))
        except falcon.HTTPError as exc:
            req.scope[REFUSAL_KEY] = exc.description or exc.title
            raise
        await ws.accept()
        limit_websocket_buffer(req.scope)
        sender = asyncio.get_running_loop().create_task(self._send(ws, sub, initial))
        sub.task = sender
        code = None
        try:
            while not sub.closed:
                receive = asyncio.ensure_future(ws.receive_text())
                done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                try:
                    text = receive.result()
                except falcon.errors.PayloadTypeError:
                    code = 1003  # "unsupported data": messages are JSON text, not binary frames
                    break
                self._on_message(hub, sub, text)
        except (falcon.WebSocketDisconnected, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(sub)
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            if not ws.closed:
                # 1013 "try again later": dropped for not keeping up; 1008: its token was revoked;
                # 1001: the worker is stopping.
                if code is None:
                    code = 1013 if sub.dropped else 1008 if sub.revoked else 1001 if hub.closing else 1000
                await close_quietly(ws.close(code))

    def _on_message(self, hub: LiveHub | EdgeHub, sub: Subscriber, text: str) -> None:
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
                hub.refilter(sub, EventFilter.parse(raw) if raw else ALL)
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


REFUSAL_KEY = "littlestats.websocket_refusal"
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def websocket_refusals(app: Asgi, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Run ``app`` for a WebSocket request, answering a refused upgrade with its HTTP status.

    Falcon refuses an upgrade by closing before accepting, with code 3000 + the HTTP status; ASGI
    servers turn any close before accepting into ``403``, so a client could not tell a missing
    token (401) from an unknown site (404). Where the server offers the ``websocket.http.response``
    extension (uvicorn does), the refusal becomes that HTTP status with a JSON ``{"error": ...}``
    body, as the same request over plain HTTP gets. Elsewhere the close is passed on unchanged.
    """
    if "websocket.http.response" not in scope.get("extensions", {}):
        await app(scope, receive, send)
        return
    state = {"accepted": False, "refused": False}

    async def send_or_refuse(message: dict[str, Any]) -> None:
        if state["refused"]:
            return  # the HTTP answer is sent: nothing may follow it
        kind = message["type"]
        if kind == "websocket.accept":
            state["accepted"] = True
        elif kind == "websocket.close" and not state["accepted"] and 3100 <= message.get("code", 1000) < 3600:
            state["refused"] = True
            status = message["code"] - 3000
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Refused"
            body = orjson.dumps({"error": scope.get(REFUSAL_KEY) or phrase})
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send(message)

    await app(scope, receive, send_or_refuse)


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    quiet_drops()
    auth = RealtimeAuth(services)
    app.add_route("/api/v2/stats/{site}", StatsResource(services, auth))
    app.add_route("/api/v2/realtime/{site}", RealtimeResource(services, auth))
    app.add_route("/api/v2/realtime/{site}/token", StreamTokenResource(services, auth))
