"""Stats resources: the general query endpoint and the named dashboard views over it.

Each resource only authorises, parses the query string into one ``Query`` (``api.params``), runs
it through ``warehouse.query`` and renders the answer; no metric is computed here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import falcon
import falcon.asgi
import orjson

from api.auth import authorize
from api.params import (
    CAMEL,
    _one,
    bad_request,
    currency_of,
    parse_metrics,
    query_from_params,
    segment_lookup,
)
from littlestats.controlplane import Site
from littlestats.http import json_response, read_body
from warehouse.client import WarehouseClient
from warehouse.query import compare, eventlist
from warehouse.query.model import (
    GOAL,
    GRANULARITIES,
    GoalSpec,
    Query,
    QueryError,
    check_buckets,
    parse_query,
)
from warehouse.query.runner import Answer, run

log = logging.getLogger(__name__)

SESSION_METRICS = ("visitors", "visits", "views", "bounce_rate", "visit_duration")
STATS_METRICS = ("visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit")
# Percentage-point change for rates; relative change (%) for counts and durations.
POINT_CHANGE = {"bounce_rate", "conversion_rate"}


def warehouse(services: Any) -> WarehouseClient:
    """The worker's warehouse client (one per worker, created on first use)."""
    wh = services.extras.get("warehouse")
    if wh is None:
        wh = services.extras["warehouse"] = WarehouseClient(services.settings)
    return wh  # type: ignore[no-any-return]


def goals_of(services: Any, site: Site) -> list[GoalSpec]:
    """The site's goals as the query engine takes them."""
    return services.control.goal_specs(site.id)  # type: ignore[no-any-return]


async def execute(services: Any, q: Query) -> Answer:
    """Run ``q`` on the warehouse; 503 when the warehouse process does not answer."""
    try:
        return await run(q, warehouse(services))
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise warehouse_unavailable(exc) from None


async def sql_rows(services: Any, text: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    try:
        return (await warehouse(services).query(text, params)).rows
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise warehouse_unavailable(exc) from None


#: Seconds a client is asked to wait when the warehouse process does not answer (``serve``
#: restarts it within seconds; see docs/faults.md).
WAREHOUSE_RETRY_AFTER = 5


def warehouse_unavailable(exc: BaseException) -> falcon.HTTPServiceUnavailable:
    """The 503 for a query the warehouse process did not answer."""
    return falcon.HTTPServiceUnavailable(
        description=f"the warehouse is not available ({exc}); it is restarted automatically: "
                    f"retry in {WAREHOUSE_RETRY_AFTER} s",
        retry_after=WAREHOUSE_RETRY_AFTER,
    )


def period_of(q: Query) -> dict[str, str]:
    r = q.date_range
    return {"start": r.local_start().isoformat(), "end": r.local_end().isoformat(), "timezone": r.timezone}


def camel_metrics(row: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    return {CAMEL[m]: row[m] for m in metrics}


def comparison_of(q: Query) -> dict[str, Any]:
    """``{"comparisonPeriod": {...}}`` when ``q`` compares with another range, else nothing."""
    if q.compare is None:
        return {}
    r = q.compare
    return {"comparisonPeriod": {"start": r.local_start().isoformat(), "end": r.local_end().isoformat(),
                                 "timezone": r.timezone, "mode": r.period}}


def compared(row: dict[str, Any], metrics: tuple[str, ...], time_key: str | None = None) -> dict[str, Any]:
    """A row's ``comparison`` (``warehouse.query.compare``) in the named endpoints' shape: the
    metrics' values in the comparison range (camelCase; a series' ``timestamp``), and ``change``
    per metric as ``{absolute, percent}``. Nothing when the query does not compare."""
    if "comparison" not in row:
        return {}
    then = row["comparison"]
    out: dict[str, Any] = {"timestamp": then[time_key]} if time_key else {}
    return {"comparison": {**out, **camel_metrics(then, metrics),
                           "change": {CAMEL[m]: row["change"][m] for m in metrics}}}


def imported_of(answer: Answer) -> dict[str, Any]:
    """``{"imported": {...}}`` when the request asked about imported data (``imported=``), else
    nothing: whether they were added, which metrics are approximate, or why they were not."""
    return {"imported": answer.imported} if answer.imported is not None else {}


def change(now: Any, before: Any, metric: str) -> float | None:
    if metric in POINT_CHANGE:
        return round(float(now) - float(before), 1)
    if not before:
        return None
    return round(100.0 * (float(now) - float(before)) / float(before), 1)


class QueryResource:
    """``POST /api/v2/sites/{site}/query``: the general query (Plausible Stats API v2 spirit)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        raw = await read_body(req, 64 * 1024)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise falcon.HTTPBadRequest(description="invalid parameter 'body': not JSON") from None
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(description="invalid parameter 'body': expected a JSON object")
        try:
            q = parse_query(found.id, found.timezone, body, goals=goals_of(self.services, found),
                            currency=currency_of(found), segments=segment_lookup(self.services, found))
        except QueryError as exc:
            raise bad_request(exc) from None
        answer = await execute(self.services, q)
        dims = [d for d in ([q.time_dimension] if q.time_dimension else []) + list(q.plain_dimensions)]
        json_response(resp, {
            "results": [
                {"dimensions": [row[d] for d in dims], "metrics": [row[m] for m in q.metrics],
                 **({"comparison": {
                     "dimensions": [row["comparison"].get(d, row[d]) for d in dims],
                     "metrics": [row["comparison"][m] for m in q.metrics],
                     "change": [row["change"][m] for m in q.metrics]}} if "comparison" in row else {})}
                for row in answer.rows
            ],
            "meta": {"path": answer.path, "reason": answer.reason, "period": period_of(q),
                     **comparison_of(q), **imported_of(answer)},
            "query": {"siteId": found.id, "metrics": list(q.metrics), "dimensions": dims,
                      "filters": [[f.op, f.dimension, list(f.values)] for f in q.filters],
                      **({"segment": q.segment} if q.segment else {})},
        })


class StatsResource:
    """``GET /api/v2/sites/{site}/stats``: aggregate numbers with change vs the previous period."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        metrics = parse_metrics(req, STATS_METRICS)
        q = query_from_params(req, found, goals_of(self.services, found), metrics, [], paged=False,
                              segments=segment_lookup(self.services, found))
        if q.compare is None:  # the aggregate numbers always compare: by default with the previous period
            q = replace(q, compare=replace(q.date_range.previous(), period="previous_period"))
        now = await execute(self.services, q)
        cur = now.rows[0]
        prev = cur["comparison"]
        json_response(resp, {
            "siteId": found.id,
            "period": period_of(q),
            **camel_metrics(cur, q.metrics),
            "change": {CAMEL[m]: change(cur[m], prev[m], m) for m in q.metrics},
            "previous": camel_metrics(prev, q.metrics),
            **comparison_of(q),
            **compared(cur, q.metrics),
            **imported_of(now),
        })


class TimeseriesResource:
    """``GET /api/v2/sites/{site}/timeseries?granularity=hour|day|week|month``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        metrics = parse_metrics(req, ("views", "visits", "visitors"))
        granularity = _one(req, "granularity") or _one(req, "interval")
        period = _one(req, "period")
        if granularity is None:
            granularity = "hour" if period in ("today", "yesterday", "24h") else "day"
        if granularity not in GRANULARITIES:
            raise falcon.HTTPBadRequest(
                description=f"invalid parameter 'granularity': use one of {', '.join(GRANULARITIES)}"
            )
        q = query_from_params(req, found, goals_of(self.services, found), metrics, [], paged=False, segments=segment_lookup(self.services, found))
        try:
            check_buckets(q.date_range, granularity, "granularity")
        except QueryError as exc:
            raise bad_request(exc) from None
        q = query_from_params(req, found, goals_of(self.services, found), metrics, [f"time:{granularity}"], paged=False, segments=segment_lookup(self.services, found))
        answer = await execute(self.services, q)
        key = f"time:{granularity}"
        json_response(resp, {
            "siteId": found.id,
            "granularity": granularity,
            "period": period_of(q),
            **comparison_of(q),
            "data": [{"timestamp": row[key], **camel_metrics(row, q.metrics), **compared(row, q.metrics, key)}
                     for row in answer.rows],
            **imported_of(answer),
        })


#: Dimensions whose rows also carry a display name: dimension → (name dimension, row field). The
#: name depends on the value alone, so grouping by both gives the same rows.
LABELS = {"city": ("city_name", "cityName")}


class BreakdownResource:
    """A top-N list by one dimension: ``/referrers``, ``/pages``, ``/countries`` …"""

    def __init__(self, services: Any, dimension: str | None, key: str, field: str,
                 default_metrics: tuple[str, ...]) -> None:
        self.services = services
        self.dimension = dimension
        self.key = key
        self.field = field
        self.default_metrics = default_metrics

    def dimension_for(self, req: Any) -> str:
        assert self.dimension is not None
        return self.dimension

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        dimension = self.dimension_for(req)
        metrics = parse_metrics(req, self.default_metrics)
        label = LABELS.get(dimension)
        q = query_from_params(req, found, goals_of(self.services, found), metrics,
                              [dimension, label[0]] if label else [dimension],
                              segments=segment_lookup(self.services, found))
        if _one(req, "metrics") is None and q.goal_filter() is not None:
            # Under a goal filter every breakdown says how each row converts, and what it earned.
            extra = ["conversion_rate"]
            if q.currency is not None and any(g.revenue for g in q.selected_goals()):
                extra += ["total_revenue", "average_revenue"]
            q = replace(q, metrics=tuple(dict.fromkeys([*q.metrics, *extra])))
        answer = await execute(self.services, q)
        json_response(resp, {
            "siteId": found.id,
            "period": period_of(q),
            **comparison_of(q),
            self.key: [{self.field: row[dimension], **({label[1]: row[label[0]]} if label else {}),
                        **camel_metrics(row, q.metrics), **compared(row, q.metrics)} for row in answer.rows],
            **imported_of(answer),
        })


UTM_DIMENSIONS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


class UtmResource(BreakdownResource):
    """``/utm?type=utm_source|utm_medium|utm_campaign|utm_term|utm_content`` (default utm_source)."""

    def dimension_for(self, req: Any) -> str:
        raw = _one(req, "type") or "utm_source"
        name = raw if raw.startswith("utm_") else f"utm_{raw}"
        if name not in UTM_DIMENSIONS:
            raise falcon.HTTPBadRequest(
                description=f"invalid parameter 'type': use one of {', '.join(UTM_DIMENSIONS)}"
            )
        return name


class EventsResource:
    """``GET /api/v2/sites/{site}/events``: custom event names with counts and the raw list."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        goals = goals_of(self.services, found)
        q = query_from_params(req, found, goals, ["visitors", "events"], ["event"], segments=segment_lookup(self.services, found))
        size = q.limit if req.params.get("limit") is not None else 50
        if size > 1000:
            raise falcon.HTTPBadRequest(description="invalid parameter 'limit': at most 1000 events per page")
        raw_cursor = _one(req, "cursor")
        try:
            cursor = eventlist.decode_cursor(raw_cursor) if raw_cursor else None
        except QueryError as exc:
            raise bad_request(exc) from None
        page = eventlist.event_list_sql(q, cursor, size)

        async def page_with_props() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            rows = await sql_rows(self.services, page.text, page.params)
            props = eventlist.props_sql(found.id, rows[:size])
            return rows, (await sql_rows(self.services, props.text, props.params) if props else [])

        names, (rows, props) = await asyncio.gather(execute(self.services, q), page_with_props())
        # The total is the engine's ``events`` metric under the same filters: the sum over the
        # names when they are all listed (every custom event has one name group), else asked.
        if q.offset == 0 and q.search is None and len(names.rows) < q.limit:
            total = sum(int(r["events"]) for r in names.rows)
        else:
            totals = replace(q, metrics=("events",), dimensions=(), order_by=(), offset=0, search=None)
            answer = await execute(self.services, totals)
            total = int(answer.rows[0]["events"]) if answer.rows else 0
        items, next_cursor = eventlist.shape_page(rows, props, size, q.date_range.zone)
        json_response(resp, {
            "siteId": found.id,
            "period": period_of(q),
            **comparison_of(q),
            "names": [{"name": r["event"], "events": r["events"], "visitors": r["visitors"],
                       **compared(r, ("events", "visitors"))} for r in names.rows],
            "events": items,
            "total": total,
            "nextCursor": next_cursor,
        })


class EventPropertiesResource:
    """``GET /api/v2/sites/{site}/events/properties[?property=plan][&event=Signup]``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        goals = goals_of(self.services, found)
        event, prop = _one(req, "event"), _one(req, "property")
        extra = (f"event=={event.replace('|', chr(92) + '|')}",) if event else ()
        if prop is None:
            q = query_from_params(req, found, goals, ["events"], [], extra_filters=extra, segments=segment_lookup(self.services, found))
            if q.compare is not None:
                raise falcon.HTTPBadRequest(description="invalid parameter 'compare': the list of property names"
                                                        " does not compare; ask for one property's values")
            sql = eventlist.property_keys_sql(q, q.limit)
            rows = await sql_rows(self.services, sql.text, sql.params)
            json_response(resp, {"siteId": found.id, "period": period_of(q),
                                 "properties": [{"property": k, "events": int(n)} for k, n in rows]})
            return
        metrics = parse_metrics(req, ("events", "visitors"))
        try:
            q = query_from_params(req, found, goals, metrics, [f"props:{prop}"], extra_filters=extra, segments=segment_lookup(self.services, found))
        except falcon.HTTPBadRequest as exc:
            if "dimensions" in (exc.description or ""):
                raise falcon.HTTPBadRequest(description="invalid parameter 'property': not a property name") from None
            raise
        answer = await execute(self.services, q)
        json_response(resp, {
            "siteId": found.id,
            "period": period_of(q),
            "property": prop,
            **comparison_of(q),
            "values": [{"value": r[f"props:{prop}"], **camel_metrics(r, q.metrics), **compared(r, q.metrics)}
                       for r in answer.rows],
        })


class ConversionsResource:
    """``GET /api/v2/sites/{site}/conversions``: every goal's conversions, conversion rate and, with
    the site's revenue currency set, revenue — one query by the ``goal`` dimension."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        goals = self.services.control.list_goals(found.id)
        metrics = ["visitors", "events", "conversion_rate"]
        if found.settings.currency is not None:
            metrics += ["total_revenue", "average_revenue", "revenue_unconverted"]
        base = query_from_params(req, found, goals_of(self.services, found), metrics, [GOAL], paged=False,
                                 segments=segment_lookup(self.services, found))
        # Every goal under the other filters: a goal filter would leave only its own goals.
        every = replace(base.without_goal_filters(), limit=len(goals) or 1, offset=0, search=None)
        ranges = [compare.base_query(every)] + ([compare.comparison_query(every)] if every.compare else [])
        answers = await asyncio.gather(*(execute(self.services, q) for q in ranges))
        by_goal = [{r[GOAL]: r for r in a.rows} for a in answers]
        out = []
        for g in goals:
            now = self.figures(by_goal[0].get(g.name, {}), found)
            item = {**g.public(), **now}
            if len(by_goal) > 1:
                then = self.figures(by_goal[1].get(g.name, {}), found)
                item["comparison"] = {**then, "change": {
                    k: compare.change(now[k], then[k], 2 if isinstance(now[k], float) else 0) for k in now}}
            if found.settings.currency is not None:
                item["currency"] = found.settings.currency
            out.append(item)
        json_response(resp, {"siteId": found.id, "period": period_of(base), **comparison_of(base), "goals": out})

    @staticmethod
    def figures(row: dict[str, Any], site: Site) -> dict[str, Any]:
        """A goal's numbers from its row of the ``goal`` breakdown (zeros when it had none)."""
        out = {"visitors": row.get("visitors", 0), "conversions": row.get("events", 0),
               "conversionRate": row.get("conversion_rate", 0.0)}
        if site.settings.currency is not None:
            out |= {"totalRevenue": row.get("total_revenue", 0.0), "averageRevenue": row.get("average_revenue", 0.0),
                    "revenueUnconverted": row.get("revenue_unconverted", 0)}
        return out
