"""Data out over HTTP: CSV answers of every stats endpoint, and a site's raw events as Parquet.

**CSV** (docs/export.md). ``csv_answers(resource, endpoint)`` wraps each stats resource (``stats``,
``timeseries``, the named breakdowns, ``utm``, ``events``, ``events/properties``, ``conversions``,
``query``; ``api.routes`` registers them so, under ``/api/v2`` and a share's routes alike): when the
request says ``?format=csv`` (or ``Accept: text/csv`` without a format), the endpoint's JSON answer
is turned into CSV rows here — the resources know nothing of it, and no other route pays for it. Each row
of the answer's list becomes a CSV row with the same fields; nested objects are flattened with dots
(``period.start``, ``change.views``, ``props.plan``), lists become JSON text, ``null`` an empty
field. Quoting follows RFC 4180 (``,`` ``"`` and line breaks quoted, ``"`` doubled, CRLF line ends).
The body is streamed in chunks, with ``Content-Disposition: attachment`` and a file name naming
the site, the endpoint and the period.

**Raw events**: ``GET /api/v2/sites/{site}/export/raw?start=&end=`` streams the site's raw events
(``interop.export_raw``) as one Parquet file of the documented raw schema.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from typing import Any

import falcon
import falcon.asgi
import orjson

from api.auth import authorize
from api.params import CAMEL, _one, bad_request
from interop.export_raw import hours_of, parquet_stream
from warehouse.query.model import QueryError, parse_date_range

log = logging.getLogger(__name__)

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
FORMATS = ("json", "csv")
#: Rows per streamed CSV chunk.
CHUNK_ROWS = 1000

#: Stats endpoint (path after ``/sites/{site}/``) → key of its list of rows in the JSON answer
#: (``None``: the whole answer is one row).
_LISTS: dict[str, str | None] = {
    "stats": None,
    "timeseries": "data",
    "utm": "utm",
    "events": "events",
    "conversions": "goals",
    "query": "results",
}
#: Columns of an empty list (rows name their own columns otherwise).
_EVENT_COLUMNS = ("id", "timestamp", "name", "page", "hostname", "visitId", "source", "country",
                  "device", "browser", "os")
_GOAL_COLUMNS = ("id", "name", "kind", "value", "property", "revenue", "createdAt", "visitors", "conversions",
                 "conversionRate")


def _breakdowns() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    from api.routes import BREAKDOWNS  # the one table of named breakdowns

    return {name: (key, field, metrics) for name, (_, key, field, metrics) in BREAKDOWNS.items()}


def stats_endpoint(path: str) -> str | None:
    """The stats endpoint a request path names (``pages``, ``events/properties`` …), else None."""
    match = re.fullmatch(r"/api/v2/sites/[^/]+/([a-z-]+(?:/properties)?)", path)
    if match is None:
        return None
    name = match.group(1)
    if name in _LISTS or name == "events/properties" or name in _breakdowns():
        return name
    return None


def wants_csv(req: Any, allowed: tuple[str, ...] = FORMATS) -> bool:
    """Whether the client asked for CSV: ``?format=csv``, or ``Accept`` preferring ``text/csv``
    when no format is given. A format outside ``allowed`` is a 400 naming the allowed ones."""
    fmt = _format(req, allowed)
    if fmt is not None:
        return fmt == "csv"
    return bool(req.client_prefers([falcon.MEDIA_JSON, CSV]) == CSV)


def _format(req: Any, allowed: tuple[str, ...]) -> str | None:
    fmt = _one(req, "format")
    if fmt is not None and fmt not in allowed:
        raise falcon.HTTPBadRequest(
            description=f"invalid parameter 'format': {fmt!r} is not one of {', '.join(allowed)}")
    return fmt


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One level of fields: nested objects as ``outer.inner``; lists as JSON text."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(flatten(item, f"{name}."))
        elif isinstance(item, list):
            out[name] = orjson.dumps(item).decode()
        else:
            out[name] = item
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_chunks(columns: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[bytes]:
    """RFC 4180 CSV: a header and the rows, as UTF-8 chunks of ``CHUNK_ROWS`` rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for n, row in enumerate(rows, 1):
        writer.writerow([_cell(v) for v in row])
        if n % CHUNK_ROWS == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


async def aiter_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def answer_rows(endpoint: str, data: dict[str, Any], req: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and flattened rows of a stats endpoint's JSON answer."""
    if endpoint == "query":
        query = data.get("query") or {}
        dims, metrics = list(query.get("dimensions") or []), list(query.get("metrics") or [])
        rows = [dict(zip(dims, r["dimensions"], strict=True)) | dict(zip(metrics, r["metrics"], strict=True))
                for r in data.get("results") or []]
        return [*dims, *metrics], [flatten(r) for r in rows]
    if endpoint == "events/properties":
        key = "properties" if "properties" in data else "values"
    elif endpoint in _LISTS:
        key = _LISTS[endpoint]  # type: ignore[assignment]
    else:
        key = _breakdowns()[endpoint][0]
    if key is None:
        rows = [flatten(data)]
    else:
        rows = [flatten(r) for r in data.get(key) or []]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if not rows:
        columns = dict.fromkeys(_empty_columns(endpoint, key, req))
    return list(columns), rows


def _metrics_param(req: Any, default: tuple[str, ...]) -> list[str]:
    raw = req.get_param("metrics")
    names = [m.strip() for m in raw.split(",")] if isinstance(raw, str) else list(default)
    return [CAMEL.get(m, m) for m in names]


def _empty_columns(endpoint: str, key: str | None, req: Any) -> list[str]:
    if endpoint == "timeseries":
        return ["timestamp", *_metrics_param(req, ("views", "visits", "visitors"))]
    if endpoint == "events":
        return list(_EVENT_COLUMNS)
    if endpoint == "conversions":
        return list(_GOAL_COLUMNS)
    if endpoint == "events/properties":
        if key == "properties":
            return ["property", "events"]
        return ["value", *_metrics_param(req, ("events", "visitors"))]
    if endpoint == "utm":
        return ["value", *_metrics_param(req, ("visitors", "visits", "views", "bounce_rate", "visit_duration"))]
    if endpoint in _breakdowns():
        _, field, metrics = _breakdowns()[endpoint]
        return [field, *_metrics_param(req, metrics)]
    return []


def filename(endpoint: str, data: dict[str, Any], ext: str = "csv") -> str:
    """``littlestats-<site>-<endpoint>-<start>-<end>.csv`` (dates of the answer's period)."""
    period = data.get("meta", {}).get("period") if endpoint == "query" else data.get("period")
    parts = ["littlestats", str(data.get("siteId") or (data.get("query") or {}).get("siteId") or "site"),
             endpoint.replace("/", "-")]
    if isinstance(period, dict):
        parts += [str(period.get("start", ""))[:10], str(period.get("end", ""))[:10]]
    name = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + f".{ext}"


class CsvAnswers:
    """A stats resource that answers CSV instead of JSON when the client asks for it."""

    def __init__(self, resource: Any, endpoint: str) -> None:
        self.resource, self.endpoint = resource, endpoint

    async def _respond(self, responder: Any, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                       params: dict[str, Any]) -> None:
        csv_wanted = wants_csv(req)  # a 400 on a bad format, before any work
        await responder(req, resp, **params)
        resp.vary = ("Accept",)
        if not csv_wanted or not str(resp.status).startswith("200"):
            return
        body = await resp.render_body()
        if body is None:  # a streamed answer: not one this wrapper knows how to turn into rows
            log.warning("CSV asked of %s, which answered with a stream: sent as it is", req.path)
            return
        data = orjson.loads(body)
        columns, rows = answer_rows(self.endpoint, data, req)
        resp.data = None
        resp.text = None
        resp.content_type = f"{CSV}; charset=utf-8; header=present"
        resp.downloadable_as = filename(self.endpoint, data)
        if self.endpoint == "events":  # the list's paging, which has no place in the rows
            resp.set_header("X-Total-Count", str(data.get("total", "")))
            if data.get("nextCursor"):
                resp.set_header("X-Next-Cursor", str(data["nextCursor"]))
        resp.stream = aiter_chunks(csv_chunks(columns, ([row.get(c) for c in columns] for row in rows)))


class _CsvGet(CsvAnswers):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any) -> None:
        await self._respond(self.resource.on_get, req, resp, params)


class _CsvPost(CsvAnswers):
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any) -> None:
        await self._respond(self.resource.on_post, req, resp, params)


def csv_answers(resource: Any, endpoint: str) -> CsvAnswers:
    """`resource` (a stats endpoint's, answering GET or POST) with CSV answers on request."""
    return _CsvPost(resource, endpoint) if hasattr(resource, "on_post") else _CsvGet(resource, endpoint)


class RawExportResource:
    """``GET /api/v2/sites/{site}/export/raw[?start=&end=]``: the site's raw events as Parquet."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        _format(req, ("parquet",))
        start_text, end_text = _one(req, "start"), _one(req, "end")
        start = end = None
        if start_text is not None or end_text is not None:
            try:
                period = parse_date_range(found.timezone, start=start_text, end=end_text)
            except QueryError as exc:
                raise bad_request(exc) from None
            start, end = period.start, period.end
        raw_dir = self.services.settings.raw_dir
        resp.content_type = PARQUET
        span = "all" if start is None or end is None else f"{start_text}-{end_text}"
        resp.downloadable_as = re.sub(r"[^A-Za-z0-9._-]", "_", f"littlestats-{found.id}-raw-{span}") + ".parquet"
        resp.stream = _parquet_body(raw_dir, found.id, start, end)


async def _parquet_body(raw_dir: Any, site_id: str, start: datetime | None,
                        end: datetime | None) -> AsyncIterator[bytes]:
    """The Parquet file hour by hour; reading and encoding run in a thread, off the event loop."""
    chunks = parquet_stream(table for _, table in hours_of(raw_dir, site_id, start, end))
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, chunks, done)
        if chunk is done:
            return
        assert isinstance(chunk, bytes)
        yield chunk
