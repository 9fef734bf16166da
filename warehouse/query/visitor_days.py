# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""Breakdowns by page under visit-attribute filters, from ``daily_page_visitors``.

A visit-attribute filter (``country==DE``) keeps the matching visits and their events. By page
the fact path finds those events by joining every pageview of the range to the
matching visits, then counts distinct visitors per page over the joined rows — two passes over
~0.5 M rows per 10 M events. Most visitors' visits all match or all do not (one country, one
device, often one source), and for them the filter keeps all of their events or none:

* a *whole* visitor has a matching visit with a pageview overlapping the range and no non-matching
  one: all of its pageviews in the range count. Over whole site-local days those are its
  ``daily_page_visitors`` rows of the range's days; it counts as a visitor of a page on its first day there in the
  range (``prev_date`` null or before the range), so unique visitors are a count, not a distinct;
* a *mixed* visitor (matching and non-matching visits overlap the range) has its events joined to
  its matching visits one by one, as on the fact path.

The two sets of visitors are disjoint, so visitors and views add up across the parts. The numbers
equal the fact path's to the last digit (a test asserts it, mixed visitors included).

Covers: visit-attribute filters only, one dimension ``page``, metrics ``visitors`` and ``views``,
no time dimension, a range of whole site-local days. By event name the same split is slower than
the fact path (custom events are few, so its join is small; on 10 M events 148 against 107 ms
with ``country==DE``), so event breakdowns stay there.
"""

from __future__ import annotations

from datetime import datetime

from warehouse.query.model import Query
from warehouse.query.sql import (
    SQL,
    Params,
    final_select,
    has_event_filters,
    has_session_filters,
    session_predicates,
    where,
)

METRICS = frozenset({"visitors", "views"})


def _whole_local_days(q: Query) -> bool:
    r = q.date_range
    return all(t.astimezone(r.zone).time() == datetime.min.time() for t in (r.start, r.end))


def coverage(q: Query) -> str | None:
    """``None`` when this path answers ``q``, else why it does not."""
    if not has_session_filters(q) or has_event_filters(q):
        return "not visit-attribute filters only"
    if q.time_dimension or q.plain_dimensions != ("page",):
        return "not a breakdown by page alone"
    if not set(q.metrics) <= METRICS:
        return f"metrics {sorted(set(q.metrics) - METRICS)} by page need the fact tables"
    if not _whole_local_days(q):
        return "range is not whole site-local days"
    return None


def visitor_days_sql(q: Query) -> SQL:
    """Answer ``q`` (``coverage(q)`` is ``None``): whole visitors from the daily table, mixed
    visitors' events joined to their matching visits."""
    p = Params()
    r = q.date_range
    site, start, end = p(q.site_id), p(r.start), p(r.end)
    first_day, end_day = p(r.start.astimezone(r.zone).date()), p(r.end.astimezone(r.zone).date())
    overlapping = [f"s.site_id = {site}", f"s.started_at < {end}", f"s.ended_at >= {start}", "s.pageviews > 0"]
    match = where(session_predicates(q, p, "s"))
    ctes = [
        # matching visits with a pageview overlapping the range
        f"fs AS (SELECT s.visitor_key, s.started_at, s.ended_at FROM sessions s"
        f" WHERE {where([*overlapping, f'({match})'])})",
        # their visitors' other visits: such a visitor is mixed (an unknown attribute never matches)
        f"other AS (SELECT s.visitor_key FROM sessions s WHERE {where(overlapping)}"
        f" AND NOT coalesce(({match}), false) AND s.visitor_key IN (SELECT visitor_key FROM fs))",
        # whole visitors: their rows of the range's days
        "whole AS (SELECT d.pathname AS k0,"
        f" count(*) FILTER (WHERE d.prev_date IS NULL OR d.prev_date < {first_day}) AS visitors,"
        " CAST(sum(d.pageviews) AS BIGINT) AS views FROM daily_page_visitors d"
        " SEMI JOIN fs ON fs.visitor_key = d.visitor_key ANTI JOIN other ON other.visitor_key = d.visitor_key"
        f" WHERE d.site_id = {site} AND d.local_date >= {first_day} AND d.local_date < {end_day} GROUP BY ALL)",
        # mixed visitors: their events in their matching visits
        "mixed AS (SELECT k0, count(*) AS visitors, CAST(sum(n) AS BIGINT) AS views FROM ("
        "SELECT e.pathname AS k0, e.visitor_key, count(*) AS n FROM events e"
        " JOIN (SELECT * FROM fs SEMI JOIN other ON other.visitor_key = fs.visitor_key) m"
        " ON m.visitor_key = e.visitor_key AND e.ts >= m.started_at AND e.ts <= m.ended_at"
        f" WHERE e.site_id = {site} AND e.ts >= {start} AND e.ts < {end} AND e.type = 'pageview'"
        " GROUP BY ALL) GROUP BY k0)",
        "base AS (SELECT k0, CAST(sum(visitors) AS BIGINT) AS visitors, 0 AS visits,"
        " CAST(sum(views) AS BIGINT) AS views, 0 AS events, 0 AS bounces, 0 AS duration_ms, 0 AS top_ms,"
        " 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM (SELECT * FROM whole UNION ALL SELECT * FROM mixed) GROUP BY k0)",
    ]
    return final_select(q, ctes, p)
