"""``POST /api/v2/sql``: an analyst's read-only SQL over the live warehouse (docs/export.md).

Body ``{"sql": "SELECT …", "maxRows": 1000, "timeLimit": 5}`` (both limits optional, at most the
server's ``sql_max_rows`` / ``sql_time_limit_seconds``). The warehouse process runs it
(``warehouse.sql``): one read statement over the documented tables, only the caller's sites unless
the token is an admin's. Answer ``{"columns": [{"name", "type"}], "rows": [[…]], "rowCount",
"truncated"}``; ``?format=csv`` (or ``Accept: text/csv``) gives CSV and ``?format=parquet`` (or
``Accept: application/vnd.apache.parquet``) a Parquet file. A refused or failing query is a 400
saying why, one that runs over the time limit a 400 naming the limit.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import falcon
import falcon.asgi
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from api.auth import authenticate, visible_sites
from api.export import CSV, PARQUET, aiter_chunks, csv_chunks
from api.params import _one
from api.stats import warehouse, warehouse_unavailable
from littlestats.http import read_body
from warehouse.protocol import WarehouseError

FORMATS = ("json", "csv", "parquet")
#: Errors of the analyst's own query (``warehouse.sql``): answered 400 with DuckDB's message.
USER_ERRORS = {"SqlRefused", "SqlFailed", "SqlTimeLimit"}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def column_values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; one Python cannot hold (a date of ``infinity``, …) as text."""
    try:
        return column.to_pylist()  # type: ignore[no-any-return]
    except (OverflowError, ValueError, pa.ArrowException):
        return column.cast(pa.string()).to_pylist()  # type: ignore[no-any-return]


def python_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """The rows of an answer as tuples of Python values."""
    return list(zip(*(column_values(c) for c in table.columns), strict=True))


def _positive(body: dict[str, Any], name: str, limit: float, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and not isinstance(value, int)):
        raise falcon.HTTPBadRequest(description=f"invalid field '{name}': expected a positive {kind.__name__}")
    if value > limit:
        raise falcon.HTTPBadRequest(description=f"invalid field '{name}': at most {limit:g} on this server")
    return value


def _output(req: Any) -> str:
    fmt = _one(req, "format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise falcon.HTTPBadRequest(
                description=f"invalid parameter 'format': {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    preferred = req.client_prefers([falcon.MEDIA_JSON, CSV, PARQUET])
    return {CSV: "csv", PARQUET: "parquet"}.get(preferred or "", "json")


class SqlResource:
    """``POST /api/v2/sql``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        fmt = _output(req)
        raw = await read_body(req, 64 * 1024)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise falcon.HTTPBadRequest(description="invalid body: not JSON; send {\"sql\": \"SELECT …\"}") from None
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            raise falcon.HTTPBadRequest(description="invalid field 'sql': send {\"sql\": \"SELECT …\"}")
        settings = self.services.settings
        max_rows = _positive(body, "maxRows", settings.sql_max_rows, int)
        time_limit = _positive(body, "timeLimit", settings.sql_time_limit_seconds, float) \
            or settings.sql_time_limit_seconds
        sites = None if principal.is_admin and principal.sites is None else [
            s.id for s in visible_sites(principal, self.services)]
        try:
            answer = await warehouse(self.services).sql(body["sql"], sites, time_limit=time_limit,
                                                        max_rows=max_rows)
        except WarehouseError as exc:
            if exc.kind in USER_ERRORS:
                raise falcon.HTTPBadRequest(description=f"invalid field 'sql': {exc}") from None
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise warehouse_unavailable(exc) from None
        table = answer.table
        resp.set_header("X-Truncated", "true" if answer.truncated else "false")
        if fmt == "parquet":
            sink = io.BytesIO()
            pq.write_table(_plain_strings(table), sink, compression="zstd")
            resp.content_type = PARQUET
            resp.downloadable_as = "littlestats-sql.parquet"
            resp.data = sink.getvalue()
            return
        if fmt == "csv":
            resp.content_type = f"{CSV}; charset=utf-8; header=present"
            resp.downloadable_as = "littlestats-sql.csv"
            resp.stream = aiter_chunks(csv_chunks(table.column_names, python_rows(table)))
            return
        values = [list(r) for r in python_rows(table)]
        resp.status = falcon.HTTP_200
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps({
            "columns": [{"name": name, "type": kind} for name, kind in
                        zip(table.column_names, answer.types or [str(f.type) for f in table.schema], strict=True)],
            "rows": values,
            "rowCount": len(values),
            "truncated": answer.truncated,
        }, default=_json_default)


def _plain_strings(table: pa.Table) -> pa.Table:
    """String views as plain strings (every Parquet reader knows those)."""
    fields = [pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))

