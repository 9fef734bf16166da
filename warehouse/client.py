"""How API workers and the CLI read the warehouse.

DuckDB lets one process open the database file for writing, so the warehouse process
(``jobs.daemon``, started by ``littlestats serve``) owns it: it runs the loads and answers read
queries from every API worker over a Unix socket (``settings.warehouse_socket``). Each request runs
on its own DuckDB cursor, so it sees one consistent snapshot (MVCC) even while a load commits.

Interface (the same for both implementations)::

    wh = WarehouseClient(settings)          # one per API worker; cheap, holds no connection
    result = await wh.query("SELECT count(*) FROM events WHERE site_id = ?", [site_id])
    result.columns  # ['count_star()']
    result.rows     # [(42,)]
    wh.query_sync(sql, params)              # the same, blocking

``LocalWarehouse`` has the same interface but opens the DuckDB file in this process: for tests and
CLI commands when no daemon runs. ``open_warehouse(settings)`` picks the right one. Only our own
parameterised SQL goes over the socket; values always travel as parameters, never in the SQL text.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa

from littlestats.config import Settings
from warehouse.protocol import (
    HEADER,
    KIND_ARROW,
    KIND_ERROR,
    KIND_JSON,
    WarehouseError,
    encode_params,
    frame,
    read_frame,
)
from warehouse.sql import SqlAnswer

Params = list[Any] | dict[str, Any] | None


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows (tuples of Python values) of one query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    @classmethod
    def from_arrow(cls, table: pa.Table) -> QueryResult:
        """Build from an Arrow table (timestamps become aware ``datetime`` in UTC)."""
        cols = [c.to_pylist() for c in table.columns]
        return cls(list(table.column_names), list(zip(*cols, strict=True)) if cols else [])

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        return self.rows[0][0] if self.rows else None


def _sql_answer(table: Any) -> SqlAnswer:
    if not isinstance(table, pa.Table):
        raise WarehouseError("the warehouse answered an analyst query without rows")
    meta = table.schema.metadata or {}
    types = tuple(orjson.loads(meta[b"types"])) if b"types" in meta else ()
    return SqlAnswer(table.replace_schema_metadata(None), meta.get(b"truncated") == b"true", types)


class Warehouse(Protocol):
    """What the query API needs from the warehouse."""

    async def query(self, sql: str, params: Params = None) -> QueryResult: ...

    def query_sync(self, sql: str, params: Params = None) -> QueryResult: ...


def _decode(kind: int, payload: bytes, raw_arrow: bool = False) -> Any:
    if kind == KIND_ERROR:
        err = orjson.loads(payload)
        raise WarehouseError(err["message"], err["type"])
    if kind == KIND_ARROW:
        with pa.ipc.open_stream(payload) as reader:
            table = reader.read_all()
        return table if raw_arrow else QueryResult.from_arrow(table)
    if kind == KIND_JSON:
        return orjson.loads(payload)
    raise WarehouseError(f"unknown frame kind {kind}")


class WarehouseClient:
    """Talks to the warehouse process over its Unix socket. One per API worker; thread-safe."""

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        self.path: Path = settings.warehouse_socket
        self.timeout = timeout

    def _request(self, request: dict[str, Any]) -> bytes:
        return frame(KIND_JSON, orjson.dumps(request))

    async def query(self, sql: str, params: Params = None) -> QueryResult:
        """Run a read query in the warehouse process without blocking the event loop."""
        result = await self._call_async({"op": "query", "sql": sql, "params": encode_params(params)})
        assert isinstance(result, QueryResult)
        return result

    def query_sync(self, sql: str, params: Params = None) -> QueryResult:
        """Run a read query in the warehouse process (blocking)."""
        result = self.call({"op": "query", "sql": sql, "params": encode_params(params)})
        assert isinstance(result, QueryResult)
        return result

    async def sql(self, text: str, sites: list[str] | None, *, time_limit: float | None = None,
                  max_rows: int | None = None) -> SqlAnswer:
        """An analyst's read-only query, run by the warehouse process (``warehouse.sql``):
        ``sites`` the caller may see (``None``: all). A refused or failed query raises
        ``WarehouseError`` whose ``kind`` is ``SqlRefused``, ``SqlFailed`` or ``SqlTimeLimit``."""
        request = {"op": "sql", "sql": text, "sites": sites, "time_limit": time_limit, "max_rows": max_rows}
        wait = max(self.timeout, (time_limit or 0) + 30)  # the query's own limit, then the answer
        return _sql_answer(await self._call_async(request, raw_arrow=True, timeout=wait))

    def sql_sync(self, text: str, sites: list[str] | None, *, time_limit: float | None = None,
                 max_rows: int | None = None) -> SqlAnswer:
        """The same as :meth:`sql`, blocking."""
        request = {"op": "sql", "sql": text, "sites": sites, "time_limit": time_limit, "max_rows": max_rows}
        return _sql_answer(self.call(request, timeout=max(self.timeout, (time_limit or 0) + 30), raw_arrow=True))

    def call(self, request: dict[str, Any], timeout: float | None = None, raw_arrow: bool = False) -> Any:
        """Send one request (``op`` = ``query``, ``sql``, ``load``, ``purge_site``, ``erase``, ``retention``,
        ``ping``, ``import_aggregates``, ``delete_aggregates``, ``delete_import``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout or self.timeout)
            sock.connect(str(self.path))
            sock.sendall(self._request(request))
            kind, payload = read_frame(sock)
        return _decode(kind, payload, raw_arrow)

    def erase(self, site_id: str, visitor_keys: list[int], user_id: str | None = None,
              timeout: float = 3600.0) -> dict[str, Any]:
        """Erase one person in the warehouse process (``warehouse.erase``); its summary."""
        request = {"op": "erase", "site_id": site_id, "visitor_keys": visitor_keys, "user_id": user_id}
        return dict(self.call(request, timeout=timeout))

    async def _call_async(self, request: dict[str, Any], raw_arrow: bool = False,
                          timeout: float | None = None) -> Any:
        wait = timeout or self.timeout
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.path)), self.timeout
        )
        try:
            writer.write(self._request(request))
            await writer.drain()
            header = await asyncio.wait_for(reader.readexactly(HEADER.size), wait)
            length, kind = HEADER.unpack(header)
            payload = await asyncio.wait_for(reader.readexactly(length), wait)
        finally:
            writer.close()
        return _decode(kind, payload, raw_arrow)

    def available(self) -> bool:
        """Whether a warehouse process answers on the socket."""
        try:
            return bool(self.call({"op": "ping"}, timeout=2.0) == "pong")
        except (OSError, WarehouseError):
            return False


class LocalWarehouse:
    """The same interface over a DuckDB file opened in this process (tests, CLI without a daemon).

    Pass ``read_only=True`` to read a file that no other process holds for writing.
    """

    def __init__(self, settings: Settings, read_only: bool = False) -> None:
        from warehouse.database import connect

        self.con = connect(settings.warehouse_db, read_only=read_only)
        self._lock = threading.Lock()

    def query_sync(self, sql: str, params: Params = None) -> QueryResult:
        """Run a query on a fresh cursor (its own snapshot)."""
        with self._lock:
            cur = self.con.cursor()
        try:
            return QueryResult.from_arrow(cur.sql(sql, params=params).to_arrow_table())
        except Exception as exc:
            raise WarehouseError(str(exc), type(exc).__name__) from exc
        finally:
            cur.close()

    async def query(self, sql: str, params: Params = None) -> QueryResult:
        """Run a query in a thread so the event loop stays free."""
        return await asyncio.to_thread(self.query_sync, sql, params)

    def close(self) -> None:
        """Close the database."""
        self.con.close()


def open_warehouse(settings: Settings) -> WarehouseClient | LocalWarehouse:
    """The warehouse process's client when it runs, else the DuckDB file opened here."""
    client = WarehouseClient(settings)
    if client.available():
        return client
    return LocalWarehouse(settings)
