# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""The pre-aggregate path: a ``Query`` answered from ``hourly_rollup``, ``hourly_props`` and
``daily_visitor_counts``, when they hold exactly the answer.

``coverage(q)`` says whether they do (and if not, why); ``preaggregate_sql(q)`` builds the SQL.
The numbers must equal the fact path's (``facts.py``) to the last digit — a test asserts it on
generated data — so this path only takes questions whose building blocks are sums of hourly rows
or exact distinct counts over whole site-local days:

* no filters, or filters only on the one visit attribute the query breaks down by;
* no dimension, one visit attribute, ``page``, ``event`` or ``props:<name>``, optionally by time;
* the range starts and ends on UTC hour boundaries, and the site's UTC offset is whole hours
  (so every rollup hour lies inside one local day);
* ``visitors`` needs hourly buckets (exact per hour) or whole local days (``daily_visitor_counts``:
  a visitor counts on its first day in the range or bucket, so the distinct count is a sum);
* by page / event only ``visitors``, ``views``, ``events``; by property only ``events``
  (their hourly visit counts cannot be added up across hours).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from warehouse.query.model import PROP_PREFIX, Query
from warehouse.query.sql import (
    SESSION_COLUMNS,
    SQL,
    Params,
    bucket,
    date_bucket,
    final_select,
    predicate,
)
from warehouse.tables import SESSION_DIMENSIONS

#: Visit attributes the pre-aggregates hold (region and city are answered from the facts only).
ROLLUP_SESSION_COLUMNS = SESSION_COLUMNS & frozenset(SESSION_DIMENSIONS)
#: Visit attributes ``daily_visitor_counts`` holds (exact visitors by attribute).
DAILY_SESSION_COLUMNS = ROLLUP_SESSION_COLUMNS - {"browser_version", "os_version"}
_EVENT_DIMS = ("page", "event")
_SESSION_METRICS = {"visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit"}


def _whole_hours(q: Query) -> bool:
    r = q.date_range
    if any(t.minute or t.second or t.microsecond for t in (r.start, r.end)):
        return False
    zone = r.zone
    probes = [r.start, r.end]
    for year in range(r.start.year, r.end.year + 1):
        probes += [datetime(year, 1, 15, tzinfo=UTC), datetime(year, 7, 15, tzinfo=UTC)]
    for t in probes:
        offset = t.astimezone(zone).utcoffset() or timedelta(0)
        if offset.total_seconds() % 3600:
            return False
    return True


def _whole_local_days(q: Query) -> bool:
    r = q.date_range
    return all(t.astimezone(r.zone).time() == datetime.min.time() for t in (r.start, r.end))


def _filters_on_breakdown(q: Query) -> bool:
    """Every filter is on the one visit attribute the query breaks down by (``country==DE`` by
    country: what a click on a panel's row asks of that panel). By a visit attribute every metric
    is over the visits with that value, so the answer is the unfiltered breakdown's rows whose
    value passes the filters."""
    dims = q.plain_dimensions
    return (len(dims) == 1 and dims[0] in ROLLUP_SESSION_COLUMNS
            and all(f.dimension == dims[0] for f in q.filters))


def coverage(q: Query) -> str | None:
    """``None`` when the pre-aggregates answer ``q`` exactly, else the reason they do not."""
    dims = q.plain_dimensions
    if q.filters and not _filters_on_breakdown(q):
        return "filters need the fact tables"
    if len(dims) > 1:
        return "more than one non-time dimension"
    if not _whole_hours(q):
        return "range or time zone not aligned to whole UTC hours"
    metrics = set(q.metrics)
    dim = dims[0] if dims else None
    if dim is None or dim in ROLLUP_SESSION_COLUMNS:
        allowed = _SESSION_METRICS
    elif dim in _EVENT_DIMS:
        allowed = {"visitors", "views", "events"}
    elif dim.startswith(PROP_PREFIX):
        allowed = {"events"}
    else:
        return f"no pre-aggregate by {dim}"
    if not metrics <= allowed:
        return f"metrics {sorted(metrics - allowed)} by {dim or 'total'} need the fact tables"
    if "visitors" in metrics and q.granularity != "hour":
        if not _whole_local_days(q):
            return "unique visitors over a range that is not whole site-local days"
        if dim is not None and dim in ROLLUP_SESSION_COLUMNS and dim not in DAILY_SESSION_COLUMNS:
            return f"no daily visitor table by {dim}"
    return None


def preaggregate_sql(q: Query) -> SQL:
    """SQL answering ``q`` from the pre-aggregates (call only when ``coverage(q)`` is ``None``)."""
    p = Params()
    r = q.date_range
    site, tz, gran = q.site_id, r.timezone, q.granularity
    dim = q.plain_dimensions[0] if q.plain_dimensions else None
    keys = []
    if gran:
        keys.append(bucket(gran, "hour", p, tz, r))
    ctes: list[str] = []
    visitors_from_hours = gran == "hour"
    if dim is not None and dim.startswith(PROP_PREFIX):
        sel = "".join(f"{k} AS k{i}, " for i, k in enumerate([*keys, "value"]))
        ctes.append(
            f"base AS (SELECT {sel}0 AS visitors, 0 AS visits, 0 AS views, sum(events) AS events,"
            " 0 AS bounces, 0 AS duration_ms, 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM hourly_props"
            f" WHERE site_id = {p(site)} AND key = {p(dim[len(PROP_PREFIX):])}"
            f" AND event_name IS NOT NULL AND hour >= {p(r.start)} AND hour < {p(r.end)} GROUP BY ALL)"
        )
        return final_select(q, ctes, p)

    dimension = dim or "total"
    value_col = "value" if dim else None
    # filters on the breakdown's own dimension (``_filters_on_breakdown``): its rows whose value passes
    values = "".join(f" AND {predicate('value', f, p)}" for f in q.filters)
    if value_col:
        keys.append(value_col)
    n = len(keys)
    sel = "".join(f"{k} AS k{i}, " for i, k in enumerate(keys))
    hourly_visitors = "sum(visitors)" if visitors_from_hours else "0"
    page_like = dim in _EVENT_DIMS
    ctes.append(
        f"r AS (SELECT {sel}{hourly_visitors} AS visitors,"
        f" {'0' if page_like else 'sum(visits)'} AS visits, sum(views) AS views, sum(events) AS events,"
        " sum(bounces) AS bounces, sum(duration_ms) AS duration_ms"
        f" FROM hourly_rollup WHERE site_id = {p(site)} AND dimension = {p(dimension)}"
        f" AND hour >= {p(r.start)} AND hour < {p(r.end)}{values}{' GROUP BY ALL' if n else ''})"
    )
    if "visitors" in q.metrics and not visitors_from_hours:
        # Each visitor counts once per bucket: on its first day there (no earlier day with the
        # same value since the bucket's start, or the range's if later).
        d0 = p(r.start.astimezone(r.zone).date())
        d1 = p(r.end.astimezone(r.zone).date())
        vkeys = ([date_bucket(gran, "local_date")] if gran else []) + (["value"] if value_col else [])
        since = d0 if gran is None else f"greatest({date_bucket(gran, 'local_date')}, {d0})"
        first = "" if gran == "day" else f" AND (prev_date IS NULL OR prev_date < {since})"
        vsel = "".join(f"{k} AS k{i}, " for i, k in enumerate(vkeys))
        ctes.append(
            f"v AS (SELECT {vsel}CAST(sum(visitors) AS BIGINT) AS visitors FROM daily_visitor_counts"
            f" WHERE site_id = {p(site)} AND dimension = {p(dimension)} AND local_date >= {d0}"
            f" AND local_date < {d1}{first}{values}{' GROUP BY ALL' if n else ''})"
        )
        rest = ("coalesce(v.visitors, 0) AS visitors, coalesce(r.visits, 0) AS visits,"
                " coalesce(r.views, 0) AS views, coalesce(r.events, 0) AS events,"
                " coalesce(r.bounces, 0) AS bounces, coalesce(r.duration_ms, 0) AS duration_ms,"
                " 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n")
        if n:
            on = " AND ".join(f"r.k{i} IS NOT DISTINCT FROM v.k{i}" for i in range(n))
            kc = "".join(f"coalesce(r.k{i}, v.k{i}) AS k{i}, " for i in range(n))
            ctes.append(f"base AS (SELECT {kc}{rest} FROM r FULL OUTER JOIN v ON {on})")
        else:
            ctes.append(f"base AS (SELECT {rest} FROM r, v)")
    else:
        kc = "".join(f"k{i}, " for i in range(n))
        ctes.append(
            f"base AS (SELECT {kc}coalesce(visitors, 0) AS visitors, coalesce(visits, 0) AS visits,"
            " coalesce(views, 0) AS views, coalesce(events, 0) AS events, coalesce(bounces, 0) AS bounces,"
            " coalesce(duration_ms, 0) AS duration_ms, 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM r)"
        )
    return final_select(q, ctes, p)
