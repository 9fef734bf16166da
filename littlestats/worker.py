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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn_worker import UvicornWorker


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
        super()._start_asgi_task(cycle, app)


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol}
