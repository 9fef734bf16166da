"""Run a ``Query``: plan it, execute the SQL on the warehouse, shape the rows.

``run`` (async, for API workers) and ``run_sync`` (tests, benchmarks, CLI) return an ``Answer``:
one dict per row with the dimension values under their names (``time:day`` …) and the metrics,
plus which path answered. Time buckets are rendered in the site's time zone; time-only queries get
every bucket of the range, zeros where nothing happened. ``conversion_rate`` runs the query a
second time without the goal filter and the ``goal`` dimension (the visitors who could have
converted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from warehouse.query import compare
from warehouse.query.model import GOAL, MAX_LIMIT, Query
from warehouse.query.planner import Plan, plan
from warehouse.query.sql import key_dimensions

ROUNDING = {"bounce_rate": 1, "visit_duration": 1, "views_per_visit": 2, "time_on_page": 1, "scroll_depth": 1,
            "conversion_rate": 2,
            "total_revenue": 2, "average_revenue": 2}
INTEGER_METRICS = ("visitors", "visits", "views", "events", "revenue_unconverted")


class Rows(Protocol):
    columns: list[str]
    rows: list[tuple[Any, ...]]


class SyncWarehouse(Protocol):
    def query_sync(self, sql: str, params: Any = None) -> Any: ...


class AsyncWarehouse(Protocol):
    async def query(self, sql: str, params: Any = None) -> Any: ...


@dataclass
class Answer:
    """The rows of a query and how it was answered."""

    query: Query
    rows: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""
    reason: str = ""
    imported: dict[str, Any] | None = None  # whether imported aggregates were added, and how
    comparison: Answer | None = None  # the comparison range's own answer, when ``q.compare`` is set


def _plans(q: Query, force: str | None) -> list[Plan]:
    plans = [plan(q, force)]
    if "conversion_rate" in q.metrics:
        plans.append(plan(conversion_totals(q), force))
    return plans


def conversion_totals(q: Query) -> Query:
    """The visitors who could have converted: ``q`` without goal filter and ``goal`` dimension."""
    return replace(q.without_goal_filters(), dimensions=tuple(d for d in q.dimensions if d != GOAL),
                   metrics=("visitors",), order_by=(), limit=MAX_LIMIT, offset=0, search=None)


async def run(q: Query, warehouse: AsyncWarehouse, force: str | None = None) -> Answer:
    """Answer ``q`` through an async warehouse (``WarehouseClient``)."""
    if q.compare is not None:
        # Both ranges at once: the warehouse process answers each request on its own cursor.
        now, then = await asyncio.gather(run(compare.base_query(q), warehouse, force),
                                         run(compare.comparison_query(q), warehouse, force))
        return _compared(q, now, then)
    if q.imported is not None:
        from warehouse.query import imported  # adds imported aggregates: its own module

        return await imported.run(q, warehouse, force)
    plans = _plans(q, force)
    results = [await warehouse.query(p.sql.text, p.sql.params) for p in plans]
    return assemble(q, plans, results)


def run_sync(q: Query, warehouse: SyncWarehouse, force: str | None = None) -> Answer:
    """Answer ``q`` through a blocking warehouse (``LocalWarehouse`` or ``WarehouseClient``)."""
    if q.compare is not None:
        return _compared(q, run_sync(compare.base_query(q), warehouse, force),
                         run_sync(compare.comparison_query(q), warehouse, force))
    if q.imported is not None:
        from warehouse.query import imported  # adds imported aggregates: its own module

        return imported.run_sync(q, warehouse, force)
    plans = _plans(q, force)
    results = [warehouse.query_sync(p.sql.text, p.sql.params) for p in plans]
    return assemble(q, plans, results)


def run_with(q: Query, execute: Callable[[str, dict[str, Any]], Rows], force: str | None = None) -> Answer:
    """Answer ``q`` with any ``execute(sql, params)`` returning ``.columns``/``.rows``."""
    if q.compare is not None:
        return _compared(q, run_with(compare.base_query(q), execute, force),
                         run_with(compare.comparison_query(q), execute, force))
    plans = _plans(q, force)
    return assemble(q, plans, [execute(p.sql.text, p.sql.params) for p in plans])


@dataclass
class FetchedRows:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class OnConnection:
    """An open DuckDB connection as the runner's ``execute`` (call it) and as a ``SyncWarehouse``
    (``query_sync``), each query on its own cursor: for tests, benchmarks and tools that hold the
    warehouse file themselves."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def query_sync(self, sql: str, params: Any = None) -> FetchedRows:
        cur = self.con.cursor()
        try:
            res = cur.execute(sql, params)
            return FetchedRows([c[0] for c in res.description], res.fetchall())
        finally:
            cur.close()

    def __call__(self, sql: str, params: dict[str, Any]) -> FetchedRows:
        return self.query_sync(sql, params)


async def run_async_with(
    q: Query, execute: Callable[[str, dict[str, Any]], Awaitable[Rows]], force: str | None = None
) -> Answer:
    if q.compare is not None:
        return _compared(q, await run_async_with(compare.base_query(q), execute, force),
                         await run_async_with(compare.comparison_query(q), execute, force))
    plans = _plans(q, force)
    return assemble(q, plans, [await execute(p.sql.text, p.sql.params) for p in plans])


def _compared(q: Query, now: Answer, then: Answer) -> Answer:
    """The answer for ``q`` with ``comparison`` and ``change`` on every row (``compare.merge``)."""
    rows = compare.merge(q, now.rows, then.rows, then.query)
    return replace(now, query=q, rows=rows, comparison=then)


def assemble(q: Query, plans: list[Plan], results: list[Rows]) -> Answer:
    """Shape raw result rows into an ``Answer`` (rounding, time rendering, gaps, conversions)."""
    names = key_dimensions(q)
    n = len(names)
    main = results[0]
    rows: list[dict[str, Any]] = []
    for raw in main.rows:
        row: dict[str, Any] = {}
        for i, name in enumerate(names):
            row[name] = raw[i]
        for j, metric in enumerate(q.metrics):
            row[metric] = raw[n + j]
        rows.append(row)
    if "conversion_rate" in q.metrics:
        by = key_dimensions(conversion_totals(q))
        totals = {tuple(r[:len(by)]): r[len(by)] for r in results[1].rows}
        for row in rows:
            total = totals.get(tuple(row[k] for k in by), 0)
            # (sums may come back as Decimal: HUGEINT crosses the warehouse socket as decimal128)
            row["conversion_rate"] = 100.0 * float(row["conversion_rate"]) / float(total) if total else 0.0
    if q.time_dimension and not q.plain_dimensions:
        rows = _fill_gaps(q, rows)
    for row in rows:
        for metric in q.metrics:
            value = row[metric]
            if metric in INTEGER_METRICS:
                row[metric] = int(value or 0)
            else:
                row[metric] = round(float(value or 0), ROUNDING[metric])
        if q.time_dimension:
            row[q.time_dimension] = render_bucket(row[q.time_dimension], q)
    return Answer(q, rows, plans[0].path, plans[0].reason)


def buckets(q: Query) -> list[Any]:
    """Every time bucket of the range, as the SQL returns them (UTC hours or local dates)."""
    r = q.date_range
    gran = q.granularity
    out: list[Any] = []
    if gran == "hour":
        t = r.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while t < r.end:
            out.append(t)
            t += timedelta(hours=1)
        return out
    first = r.start.astimezone(r.zone).date()
    last = (r.end - timedelta(microseconds=1)).astimezone(r.zone).date()
    if gran == "week":
        first -= timedelta(days=first.weekday())
    elif gran == "month":
        first = first.replace(day=1)
    d = first
    while d <= last:
        out.append(d)
        if gran == "day":
            d += timedelta(days=1)
        elif gran == "week":
            d += timedelta(days=7)
        else:
            d = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _fill_gaps(q: Query, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key = q.time_dimension
    assert key is not None
    by_bucket = {_norm(r[key]): r for r in rows}
    out = []
    for b in buckets(q):
        row = by_bucket.get(_norm(b))
        out.append(row if row is not None else {key: b, **{m: 0 for m in q.metrics}})
    return out


def render_bucket(value: Any, q: Query) -> str:
    """A bucket as ISO 8601: an hour with the site's UTC offset, a day/week/month as its date."""
    if isinstance(value, datetime):
        return value.astimezone(q.date_range.zone).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
