"""The gunicorn worker class ``littlestats serve`` runs: uvicorn's, with one fewer write per response.

uvicorn (httptools) writes a response's status line and headers to the socket as soon as the app
sends ``http.response.start``, and the body with a second write when ``http.response.body``
follows. For a small answer such as a beacon's ``{"success": true, ...}`` that is two ``send``
system calls and two TCP segments, and the client wakes up for each: on loopback under ``wrk``
the second write cost the worker about as much CPU as the whole beacon pipeline, and doubled the
load generator's work per request.

``CoalescingHttpToolsProtocol`` holds the head of a response that has a fixed-length body and
writes it together with the body's first chunk, so such a response leaves in one write. Nothing
else changes: bodiless answers (204, 304, ``HEAD``) and chunked or streamed ones (SSE) are written
exactly as before, and a response whose body never comes (the app failed after starting it) ends
with the connection closed, as uvicorn already does.

It also hands the app its connection through the ASGI scope: ``scope["extensions"]
["littlestats.transport"]`` is a ``Connection`` (HTTP requests and WebSockets), so that the
real-time stream (``api.stream``) can write a streamed body straight to the socket and bound its
send buffer. This module is the only place that knows uvicorn's internals; without the extension
(another server) the app uses the plain ASGI ``send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker

TRANSPORT_EXTENSION = "littlestats.transport"


class Connection:
    """``scope["extensions"]["littlestats.transport"]``: the connection a request came on."""

    __slots__ = ("transport", "_cycle")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle | None = None) -> None:
        self.transport = transport  # the socket's own transport: writes go out as they are
        self._cycle = cycle

    def streaming_body(self) -> bool | None:
        """Whether the response body is chunked, once the response's head has been written and
        while its body is still streaming (the app may then write body bytes to ``transport``
        itself, framed accordingly); ``None`` otherwise, and for a WebSocket."""
        cycle = self._cycle
        if cycle is None or not cycle.response_started or cycle.response_complete or cycle.disconnected:
            return None
        return bool(cycle.chunked_encoding)


def _with_connection(scope: Any, connection: Connection) -> None:
    scope.setdefault("extensions", {})[TRANSPORT_EXTENSION] = connection


class _HeadHoldingTransport:
    """The cycle's view of the connection: holds the response head until the body's first write."""

    __slots__ = ("_transport", "_cycle", "_head", "_head_seen")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._head_seen and self._cycle.response_started:
            # The first write after the response started is its head (an earlier one can only be
            # "100 Continue"). uvicorn has parsed the headers by now: hold the head only when a
            # body of known, non-zero length must follow.
            self._head_seen = True
            cycle = self._cycle
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = data
                return
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:  # close, is_closing, get_extra_info, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.transport = _HeadHoldingTransport(self.transport, cycle)  # type: ignore[assignment]
        _with_connection(cycle.scope, Connection(self.transport, cycle))
        super()._start_asgi_task(cycle, app)


class ConnectionWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the one ``ws="auto"`` picks), with the connection in the scope."""

    async def run_asgi(self) -> None:
        _with_connection(self.scope, Connection(self.transport))
        await super().run_asgi()


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol,
                     "ws": ConnectionWebSocketProtocol}
