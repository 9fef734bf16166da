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

It also refuses slow and oversized requests before the app sees them (``RequestLimits``, from the
settings): a request line and headers over ``max_header_bytes`` or with more than
``max_header_count`` headers get 431; a ``Content-Length`` above the largest body any route reads
gets 413 at once, without waiting for the body (Falcon would otherwise wait for its first bytes
before calling the app); a request whose headers have not all arrived within
``request_header_timeout_seconds`` of its first byte (or of the connection's opening), or whose
body pauses longer than ``request_body_timeout_seconds``, gets 408. Each of these answers closes
the connection, gracefully: the server stops writing, then reads and drops what the client still
sends (for at most ``LINGER_SECONDS`` and ``LINGER_BYTES``) before it closes. Closing with the
body unread would reset the connection, and a client or proxy still sending the body (nginx
sends the whole of it before it reads the answer) would see the reset instead of the answer:
nginx turns it into a 502. A request that is not HTTP/1.0 or 1.1 (an HTTP/0.9 request line) gets 400 instead
of reaching the app, which cannot serve it. The deadlines cost a request only a clock read: one
sweep a second per worker checks them, instead of a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
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


@dataclass(frozen=True)
class RequestLimits:
    """What a request may take before the app sees it (see the module docstring)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    max_body_bytes: int = 64 * 1024
    #: an import's upload (``POST /api/v2/sites/{site}/imports``) streams to a file: its own limit
    max_import_bytes: int = 4 * 1024**3

    def body_limit(self, method: bytes, url: bytes) -> int:
        """The largest body this request may send."""
        if method == b"POST" and _IMPORT_UPLOAD.match(url):
            return self.max_import_bytes
        return self.max_body_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> RequestLimits:
        from littlestats.http import API_BODY_LIMIT

        return cls(
            header_timeout=settings.request_header_timeout_seconds,
            body_timeout=settings.request_body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            max_body_bytes=max(settings.max_body_bytes, API_BODY_LIMIT),
        )


_IMPORT_UPLOAD = re.compile(rb"^/api/v2/sites/[^/?]+/imports/?(\?|$)")


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Waiting:
    """Per uvicorn server (one per worker): the count of connections with answers held back, and
    the sweep that enforces the request deadlines."""

    __slots__ = ("held", "sweeping")

    def __init__(self) -> None:
        self.held = 0
        self.sweeping = False


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


SWEEP_SECONDS = 1.0

# How long, and how many bytes, a refused request's connection keeps reading what the client still
# sends after the refusal (see ``refuse``): enough for a proxy to finish sending a body under its
# own limit (1 MiB in deploy/nginx.conf) on a slow link, bounded so that it costs little.
LINGER_SECONDS = 5.0
LINGER_BYTES = 4 * 1024 * 1024


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Answer 408 on every connection of the worker past its deadline; again in a second."""
    now = loop.time()
    for protocol in list(connections):
        deadline = getattr(protocol, "deadline", 0.0)
        if deadline and deadline < now:
            protocol.time_out()
    loop.call_later(SWEEP_SECONDS, _sweep, loop, connections)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    limits = RequestLimits()  # the worker's, set from the settings when it starts (``Worker``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: deque[_Held] = deque()  # answers held back, oldest first
        self._close_when_sent = False
        self.waiting = _waiting_of(self.server_state)
        self._counted = False  # counted in ``waiting.held``: open, with an answer held back
        # Request limits: the loop time by which the current request's headers (or the next
        # piece of its body) must have arrived, 0 when nothing is awaited from the client.
        self.deadline = 0.0
        self._reading_head = True  # the bytes that come next belong to a request's head
        self._began_in_feed = False  # a request began inside the chunk being parsed
        self._head_bytes = 0
        self._body_bytes = 0
        self._content_length: bytes | None = None
        self._body_limit = self.limits.max_body_bytes  # the current request's (``body_limit``)
        self._lingering = False  # refused: what the client still sends is read and dropped
        self._dropped = 0
        if not self.waiting.sweeping:
            self.waiting.sweeping = True
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.connections)

    # request limits -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.deadline = self.loop.time() + self.limits.header_timeout  # it may send nothing at all

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        in_head, self._began_in_feed = self._reading_head, False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__ if isinstance(exc.__context__, _Refused) else exc.__cause__
            if isinstance(refused, _Refused):
                self.refuse(refused.status, refused.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except _Refused as refused:
            self.refuse(refused.status, refused.message)
            return
        # Only whole chunks of one request's head are counted (a chunk in which a request began
        # may hold the end of the previous one): at most one chunk fewer than the true size.
        if in_head and self._reading_head and not self._began_in_feed:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self.refuse(431, f"request headers exceed {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began_in_feed = True
        self._reading_head = True
        self._head_bytes = self._body_bytes = 0
        self._content_length = None
        self.deadline = self.loop.time() + self.limits.header_timeout

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing OWS, which RFC 9110 §5.5 excludes from the value (as uvicorn).
        value = value.rstrip(b" \t")
        if name == b"content-length":
            self._content_length = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if len(self.headers) > self.limits.max_header_count:
            raise _Refused(431, f"a request may have at most {self.limits.max_header_count} headers")

    def on_headers_complete(self) -> None:
        limits = self.limits
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(400, f"HTTP/{version} is not supported; send HTTP/1.1")
        self._body_limit = limits.body_limit(self.parser.get_method(), self.url)
        if self._content_length is not None and int(self._content_length) > self._body_limit:
            raise _Refused(413, f"request body is {int(self._content_length)} bytes; "
                                f"the limit is {self._body_limit}")
        self._reading_head = False
        self.deadline = self.loop.time() + limits.body_timeout
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_bytes += len(body)
        if self._body_bytes > self._body_limit:  # a chunked body with no length
            raise _Refused(413, f"request body exceeds the limit of {self._body_limit} bytes")
        self.deadline = self.loop.time() + self.limits.body_timeout

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # what comes next is the next request's head
        self._head_bytes = 0
        self.deadline = 0.0

    def time_out(self) -> None:
        """The client has not sent what it owes within its deadline (see ``_sweep``)."""
        if self._reading_head:
            self.refuse(408, f"request headers not received within {self.limits.header_timeout:g} s")
        else:
            self.refuse(408, f"request body not received: nothing came for {self.limits.body_timeout:g} s")

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"error": message}`` and close the connection; the app never
        sees the request. When an answer to an earlier request is still being written, the
        connection is closed without one (it cannot be put in the middle of that answer)."""
        self.deadline = 0.0
        self._reading_head = False
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            transport.close()
            return
        body = orjson.dumps({"error": message})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                 b"\r\nconnection: close\r\n\r\n", body]
        self.write(b"".join(head))
        if self._held or not transport.can_write_eof():
            self.close_when_sent()
            return
        # Lingering close: the answer goes out, then a FIN; the client's remaining bytes are
        # dropped until it closes its side (``eof_received``) or the linger ends.
        self._lingering = True
        self._unset_keepalive_if_required()
        if cycle is not None and not cycle.response_complete:  # the app, if it has the request,
            cycle.disconnected = True  # sees the client gone: its answer is not written
            cycle.message_event.set()
        transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

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
        if self._lingering:  # the refusal was the connection's last answer
            return
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
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For/-Proto from loopback
    # (gunicorn's forwarded_allow_ips) whatever ``trusted_proxies`` says; the app reads them itself,
    # only from the proxies that setting names (ingest.geo.client_ip).
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol,
                     "ws": ConnectionWebSocketProtocol, "proxy_headers": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None)  # ``littlestats.server.GunicornServer``'s
        if settings is not None:
            CoalescingHttpToolsProtocol.limits = RequestLimits.from_settings(settings)

    def init_process(self) -> None:
        raise_open_files_limit()
        super().init_process()  # runs the worker until it stops


# Every live stream holds a socket: a worker serving thousands of viewers needs more descriptors
# than the usual soft limit of 1,024.
OPEN_FILES_WANTED = 65536


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files toward its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
