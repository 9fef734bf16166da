"""The wire format between API workers and the warehouse process over its Unix socket.

A frame is a 4-byte big-endian length, one kind byte and a payload:

* ``J`` — JSON: a request ``{"op": "query", "sql": ..., "params": ...}`` or an operation's answer;
* ``A`` — a query result as an Arrow IPC stream (types survive: timestamps, dates, decimals; an
  analyst query's answer carries ``truncated`` and ``types`` in its schema metadata);
* ``E`` — an error ``{"type": ..., "message": ...}``.

Parameters are JSON; ``datetime``, ``date`` and ``Decimal`` values are tagged so that they reach
DuckDB with their type rather than as text.
"""

from __future__ import annotations

import socket
import struct
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

HEADER = struct.Struct(">IB")
KIND_JSON = ord("J")
KIND_ARROW = ord("A")
KIND_ERROR = ord("E")
MAX_FRAME = 1 << 31


class WarehouseError(RuntimeError):
    """A query or operation failed in the warehouse process; the message says why."""

    def __init__(self, message: str, kind: str = "Error") -> None:
        super().__init__(message)
        self.kind = kind


def _tag(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, (list, tuple)):
        return [_tag(v) for v in value]
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$date" in value:
            return date.fromisoformat(value["$date"])
        if "$decimal" in value:
            return Decimal(value["$decimal"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def encode_params(params: list[Any] | dict[str, Any] | None) -> Any:
    """Parameters as JSON-able values with typed tags."""
    if params is None:
        return None
    if isinstance(params, dict):
        return {k: _tag(v) for k, v in params.items()}
    return [_tag(v) for v in params]


def decode_params(raw: Any) -> list[Any] | dict[str, Any] | None:
    """The inverse of :func:`encode_params`."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        return {k: _untag(v) for k, v in raw.items()}
    return [_untag(v) for v in raw]


def frame(kind: int, payload: bytes) -> bytes:
    """One frame: header and payload."""
    return HEADER.pack(len(payload), kind) + payload


def json_frame(data: Any) -> bytes:
    """A ``J`` frame."""
    return frame(KIND_JSON, orjson.dumps(data, default=str))


def arrow_frame(table: pa.Table, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """An ``A`` frame holding ``table`` (``metadata`` rides on its schema)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return frame(KIND_ARROW, sink.getvalue().to_pybytes())


def error_frame(exc: BaseException) -> bytes:
    """An ``E`` frame describing ``exc``."""
    return frame(KIND_ERROR, orjson.dumps({"type": type(exc).__name__, "message": str(exc)}))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("warehouse socket closed mid-frame")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Read one frame from a blocking socket."""
    length, kind = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if length > MAX_FRAME:
        raise ConnectionError("frame too large")
    return kind, _recv_exact(sock, length)
