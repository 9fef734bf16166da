"""The gunicorn worker class ``littlestats serve`` runs: uvicorn's, with one fewer write per response
and answers that can be held back until the app releases them.

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

``Connection.hold_response`` lets a request finish at once while its answer stays in the worker
until the app calls ``release``: the beacon endpoint answers this way, releasing a group of
answers when their group commit is on disk, so a beacon's coroutine never suspends to wait for
the disk. Everything written on the connection meanwhile (a pipelined request's answer, a close)
waits behind the held answer, in order; ``release(error)`` closes the connection unanswered, or
after sending the answer a ``ReplacedAnswer`` error carries (the beacon endpoint's 503 when its
events could not be written).
``Connection.all_waiting`` tells the app when every connection of the worker waits for a held
answer, so that no request can arrive before one is released: the group commit then need not
wait out its pacing interval.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker

TRANSPORT_EXTENSION = "littlestats.transport"


class Connection:
    """``scope["extensions"]["littlestats.transport"]``: the connection a request came on."""

    __slots__ = ("transport", "_cycle", "_protocol")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle | None = None,
        protocol: CoalescingHttpToolsProtocol | None = None,
    ) -> None:
        self.transport = transport  # the socket's own transport: writes go out as they are
        # Weak: the cycle holds the scope that holds this, and a reference cycle per request
        # would leave every request's objects to the cyclic garbage collector.
        self._cycle = weakref.ref(cycle) if cycle is not None else None
        self._protocol = protocol

    def streaming_body(self) -> bool | None:
        """Whether the response body is chunked, once the response's head has been written and
        while its body is still streaming (the app may then write body bytes to ``transport``
        itself, framed accordingly); ``None`` otherwise, and for a WebSocket."""
        cycle = self._cycle() if self._cycle is not None else None
        if cycle is None or not cycle.response_started or cycle.response_complete or cycle.disconnected:
            return None
        if self._protocol is not None and self._protocol.holding:
            return None  # a held answer is ahead of it on this connection: write through ASGI
        return bool(cycle.chunked_encoding)

    def hold_response(self) -> Callable[[BaseException | None], None] | None:
        """Keep this request's answer in the worker until the returned ``release`` is called.

        From now on what the request writes (and whatever follows it on the connection) stays in
        memory; ``release(None)`` sends it, ``release(error)`` closes the connection without it.
        The app can finish the request at once, without waiting. ``None`` where the connection
        cannot hold (a WebSocket).
        """
        protocol = self._protocol
        return protocol.hold() if protocol is not None else None

    def all_waiting(self) -> bool:
        """Whether every connection this worker serves (HTTP and WebSocket) waits for an answer
        held back: until one is released, no client can send another request."""
        protocol = self._protocol
        if protocol is None:
            return False
        return protocol.waiting.held >= len(protocol.connections)


class ReplacedAnswer(Exception):
    """Given to ``release``: send ``response`` (a whole HTTP/1.1 response, which should say
    ``Connection: close``) instead of the held answer, then close the connection."""

    def __init__(self, response: bytes) -> None:
        super().__init__("the held answer was replaced")
        self.response = response


class _Waiting:
    """A worker's count of connections with answers held back (one per uvicorn server)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


_waiting: weakref.WeakKeyDictionary[Any, _Waiting] = weakref.WeakKeyDictionary()


def _waiting_of(server_state: Any) -> _Waiting:
    waiting = _waiting.get(server_state)
    if waiting is None:
        waiting = _waiting[server_state] = _Waiting()
    return waiting


def _with_connection(scope: Any, connection: Connection) -> None:
    scope.setdefault("extensions", {})[TRANSPORT_EXTENSION] = connection


def connection_of(scope: dict[str, Any] | None) -> Connection | None:
    """The request's connection from its ASGI scope; ``None`` under another ASGI server, where the
    app goes through the plain ASGI ``send``."""
    return ((scope or {}).get("extensions") or {}).get(TRANSPORT_EXTENSION)


class _HeadHoldingTransport:
    """The cycle's view of the connection: holds the response head until the body's first write,
    and writes through the protocol (which holds the connection's output while an answer waits)."""

    __slots__ = ("_protocol", "_cycle", "_head", "_head_seen")

    def __init__(self, protocol: CoalescingHttpToolsProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        # The cycle refers to this transport: the reference is dropped once the head is seen, so
        # that a request leaves no reference cycle behind (its objects are freed at once, not by
        # the cyclic garbage collector).
        self._cycle: RequestResponseCycle | None = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._head_seen and self._cycle is not None and self._cycle.response_started:
            # The first write after the response started is its head (an earlier one can only be
            # "100 Continue"). uvicorn has parsed the headers by now: hold the head only when a
            # body of known, non-zero length must follow.
            self._head_seen = True
            cycle, self._cycle = self._cycle, None
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = data
                return
        self._protocol.write(data)

    def close(self) -> None:
        self._protocol.close_when_sent()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._protocol.transport, name)


class _Held:
    """An answer waiting for ``release``: the bytes written on the connection since it began."""

    __slots__ = ("data", "released", "error")

    def __init__(self) -> None:
        self.data = bytearray()
        self.released = False
        self.error: BaseException | None = None


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: deque[_Held] = deque()  # answers held back, oldest first
        self._close_when_sent = False
        self.waiting = _waiting_of(self.server_state)
        self._counted = False  # counted in ``waiting.held``: open, with an answer held back

    def _count_waiting(self, waits: bool) -> None:
        if waits != self._counted:
            self._counted = waits
            self.waiting.held += 1 if waits else -1

    def connection_lost(self, exc: Exception | None) -> None:
        self._count_waiting(False)  # no longer one of the worker's connections
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.transport = _HeadHoldingTransport(self, cycle)  # type: ignore[assignment]
        _with_connection(cycle.scope, Connection(self.transport, cycle, self))
        super()._start_asgi_task(cycle, app)

    # answers held back (Connection.hold_response) ---------------------------------------------
    @property
    def holding(self) -> bool:
        return bool(self._held)

    def write(self, data: bytes) -> None:
        if self._held:
            self._held[-1].data += data
        else:
            self.transport.write(data)

    def hold(self) -> Callable[[BaseException | None], None]:
        held = _Held()
        self._held.append(held)
        if not self.transport.is_closing():
            self._count_waiting(True)

        def release(error: BaseException | None) -> None:
            held.released, held.error = True, error
            self._send_released()

        return release

    def _send_released(self) -> None:
        # In order: an answer leaves only after every answer held before it on this connection.
        held, transport = self._held, self.transport
        while held and held[0].released:
            first = held.popleft()
            if transport.is_closing():
                continue
            if first.error is not None:
                # Not answered as the app first meant: the client gets the replacement answer if
                # there is one, else sees the connection end, as it would after a crash.
                held.clear()
                self._count_waiting(False)
                if isinstance(first.error, ReplacedAnswer):
                    transport.write(first.error.response)
                transport.close()
                return
            if first.data:
                transport.write(first.data)
        if not held:
            self._count_waiting(False)
            if self._close_when_sent and not transport.is_closing():
                transport.close()

    def close_when_sent(self) -> None:
        if self._held:
            self._close_when_sent = True
        else:
            self.transport.close()

    def shutdown(self) -> None:
        if self._held:
            self._close_when_sent = True  # graceful: once the held answers are out
        else:
            super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        if self._held:  # an answer is still waiting: the connection is not idle
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        else:
            super().timeout_keep_alive_handler()


class ConnectionWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the one ``ws="auto"`` picks), with the connection in the scope."""

    async def run_asgi(self) -> None:
        _with_connection(self.scope, Connection(self.transport))
        await super().run_asgi()


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol,
                     "ws": ConnectionWebSocketProtocol}
