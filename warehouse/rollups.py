"""Pre-aggregates: recomputed from the fact tables for exactly the buckets a load touched.

* ``hourly_rollup`` and ``hourly_props`` — per (site, UTC hour): every hour whose events or visits
  changed is deleted and rebuilt from ``events`` / ``sessions`` / ``event_props``.
* ``daily_visitors`` and the other ``daily_*`` tables — per (site, visitor, site-local date): the
  rows of every visitor-day a load touched are deleted and rebuilt.

Rebuilding from facts (instead of adding deltas) keeps the pre-aggregates equal to a rebuild from
scratch whatever order the data arrived in, which is what makes loads idempotent. The callers
provide two temporary tables on the same connection:

* ``affected_hours(site_id, hour)``;
* ``affected_days(site_id, visitor_key, local_date)``;

plus ``site_tz(site_id, tz)`` naming each site's IANA time zone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from warehouse.tables import DAILY_SESSION_VISITORS, SESSION_DIMENSIONS

# Identifiers below come from warehouse.tables, never from input; values are always parameters.
# Distinct counts are done as two plain aggregations (first per visitor, then per value): DuckDB's
# hash aggregates are much faster than count(DISTINCT ...) for these shapes.
_SESSIONS_IN_HOURS = """
    SELECT s.*, date_trunc('hour', s.started_at) AS hour
    FROM sessions s SEMI JOIN affected_hours h
        ON s.site_id = h.site_id AND date_trunc('hour', s.started_at) = h.hour
    WHERE s.started_at >= $lo AND s.started_at < $hi
"""
def _per_dimension(dimensions: tuple[str, ...]) -> str:
    return "\n    UNION ALL\n".join(
        f"    SELECT site_id, hour, '{d}' AS dimension, {d}::VARCHAR AS value, visitor_key, pageviews, is_bounce, duration_ms, custom_events FROM s"  # noqa: S608
        for d in dimensions
    )


_DIM_COLUMNS = ", ".join(f"s.{d}" for d in SESSION_DIMENSIONS)


def _hourly_sessions_sql(dimensions: tuple[str, ...]) -> str:
    return f"""
INSERT INTO hourly_rollup
WITH s AS (
    SELECT s.site_id, date_trunc('hour', s.started_at) AS hour, s.visitor_key, s.pageviews,
        s.is_bounce, s.duration_ms, s.custom_events, {_DIM_COLUMNS}
    FROM sessions s SEMI JOIN affected_hours h
        ON s.site_id = h.site_id AND date_trunc('hour', s.started_at) = h.hour
    WHERE s.started_at >= $lo AND s.started_at < $hi
),
per_visitor AS (
    SELECT site_id, hour, dimension, value, visitor_key, count(*) AS visits,
        sum(pageviews) AS views, count(*) FILTER (WHERE is_bounce) AS bounces,
        sum(duration_ms) AS duration_ms, sum(custom_events) AS events
    FROM (
{_per_dimension(dimensions)}
    )
    GROUP BY site_id, hour, dimension, value, visitor_key
)
SELECT site_id, hour, dimension, value, count(*), sum(visits), sum(views), sum(bounces),
    sum(duration_ms), sum(events)
FROM per_visitor
GROUP BY site_id, hour, dimension, value
"""  # noqa: S608


# A few dimensions per statement keeps the aggregation's memory bounded on big loads.
_HOURLY_SESSIONS_SQL = [
    _hourly_sessions_sql(SESSION_DIMENSIONS[i:i + 6]) for i in range(0, len(SESSION_DIMENSIONS), 6)
]

_EVENTS_IN_HOURS = """
    SELECT e.*, date_trunc('hour', e.ts) AS hour
    FROM events e SEMI JOIN affected_hours h
        ON e.site_id = h.site_id AND date_trunc('hour', e.ts) = h.hour
    WHERE e.ts >= $lo AND e.ts < $hi
"""

_HOURLY_TOTAL_SQL = f"""
INSERT INTO hourly_rollup
WITH per_visitor AS (
    SELECT site_id, hour, visitor_key, count(*) FILTER (WHERE type = 'pageview') AS views,
        count(*) FILTER (WHERE type = 'event') AS events
    FROM ({_EVENTS_IN_HOURS}) GROUP BY site_id, hour, visitor_key
),
e AS (
    SELECT site_id, hour, count(*) AS visitors, sum(views) AS views, sum(events) AS events
    FROM per_visitor GROUP BY site_id, hour
),
s AS (
    SELECT site_id, hour, count(*) AS visits, count(*) FILTER (WHERE is_bounce) AS bounces,
        sum(duration_ms) AS duration_ms
    FROM ({_SESSIONS_IN_HOURS}) GROUP BY site_id, hour
)
SELECT coalesce(e.site_id, s.site_id), coalesce(e.hour, s.hour), 'total', '',
    coalesce(e.visitors, 0), coalesce(s.visits, 0), coalesce(e.views, 0), coalesce(s.bounces, 0),
    coalesce(s.duration_ms, 0), coalesce(e.events, 0)
FROM e FULL OUTER JOIN s ON e.site_id = s.site_id AND e.hour = s.hour
"""  # noqa: S608

# Pages and custom events: per visit, then per visitor, then per value — three plain aggregates.
_HOURLY_EVENT_DIMS_SQL = f"""
INSERT INTO hourly_rollup
WITH per_visit AS (
    SELECT site_id, hour, CASE WHEN type = 'pageview' THEN 'page' ELSE 'event' END AS dimension,
        CASE WHEN type = 'pageview' THEN pathname ELSE name END AS value, visitor_key, session_id,
        count(*) AS n
    FROM ({_EVENTS_IN_HOURS}) WHERE type IN ('pageview', 'event')
    GROUP BY ALL
),
per_visitor AS (
    SELECT site_id, hour, dimension, value, visitor_key, count(*) AS visits, sum(n) AS n
    FROM per_visit GROUP BY ALL
)
SELECT site_id, hour, dimension, value, count(*), sum(visits),
    CASE WHEN dimension = 'page' THEN sum(n) ELSE 0 END, 0, 0,
    CASE WHEN dimension = 'event' THEN sum(n) ELSE 0 END
FROM per_visitor GROUP BY site_id, hour, dimension, value
"""  # noqa: S608

_HOURLY_PROPS_SQL = """
INSERT INTO hourly_props
SELECT site_id, hour, event_name, key, value, sum(n), count(*)
FROM (
    SELECT p.site_id, date_trunc('hour', p.ts) AS hour, p.event_name, p.key, p.value,
        p.visitor_key, count(*) AS n
    FROM event_props p SEMI JOIN affected_hours h
        ON p.site_id = h.site_id AND date_trunc('hour', p.ts) = h.hour
    WHERE p.ts >= $lo AND p.ts < $hi
    GROUP BY ALL
)
GROUP BY site_id, hour, event_name, key, value
"""

# Events and visits of the affected visitor-days, with their site-local date.
_DAY_EVENTS = """
    SELECT * FROM (
        SELECT e.*, timezone(z.tz, e.ts)::DATE AS local_date
        FROM events e SEMI JOIN affected_visitors v
            ON e.site_id = v.site_id AND e.visitor_key = v.visitor_key
        JOIN site_tz z ON e.site_id = z.site_id
        WHERE e.ts >= $lo AND e.ts < $hi
    ) x SEMI JOIN affected_days a
        ON x.site_id = a.site_id AND x.visitor_key = a.visitor_key AND x.local_date = a.local_date
"""

_DAILY_VISITORS_SQL = f"""
INSERT INTO daily_visitors
SELECT site_id, local_date, visitor_key, count(*) FILTER (WHERE type = 'pageview'), count(*)
FROM ({_DAY_EVENTS}) GROUP BY site_id, local_date, visitor_key
"""  # noqa: S608

_DAILY_PAGES_SQL = f"""
INSERT INTO daily_page_visitors
SELECT site_id, local_date, pathname, visitor_key, count(*)
FROM ({_DAY_EVENTS}) WHERE type = 'pageview' GROUP BY site_id, local_date, pathname, visitor_key
"""  # noqa: S608

_DAILY_EVENTS_SQL = f"""
INSERT INTO daily_event_visitors
SELECT site_id, local_date, name, visitor_key, count(*)
FROM ({_DAY_EVENTS}) WHERE type = 'event' GROUP BY site_id, local_date, name, visitor_key
"""  # noqa: S608

_SESSION_DIM_COLUMNS = [
    c.name for c in DAILY_SESSION_VISITORS.columns
    if c.name not in ("site_id", "local_date", "visitor_key", "visits")
]
_DAILY_SESSIONS_SQL = f"""
INSERT INTO daily_session_visitors
SELECT site_id, local_date, visitor_key, {", ".join(_SESSION_DIM_COLUMNS)}, count(*)
FROM (
    SELECT * FROM (
        SELECT s.*, timezone(z.tz, s.started_at)::DATE AS local_date
        FROM sessions s SEMI JOIN affected_visitors v
            ON s.site_id = v.site_id AND s.visitor_key = v.visitor_key
        JOIN site_tz z ON s.site_id = z.site_id
        WHERE s.started_at >= $lo AND s.started_at < $hi
    ) x SEMI JOIN affected_days a
        ON x.site_id = a.site_id AND x.visitor_key = a.visitor_key AND x.local_date = a.local_date
)
GROUP BY ALL
"""  # noqa: S608

_HOURLY_TABLES = ("hourly_rollup", "hourly_props")
_DAILY_TABLES = ("daily_visitors", "daily_session_visitors", "daily_page_visitors",
                 "daily_event_visitors")


def rebuild_hours(con: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> None:
    """Rebuild ``hourly_rollup`` and ``hourly_props`` for the rows of ``affected_hours``.

    ``lo`` / ``hi`` bound the affected hours (``lo`` ≤ every hour < ``hi``) so that scans of the
    fact tables skip everything else.
    """
    for table in _HOURLY_TABLES:
        con.execute(
            f"DELETE FROM {table} t USING affected_hours h"  # noqa: S608
            " WHERE t.site_id = h.site_id AND t.hour = h.hour"
        )
    params = {"lo": lo, "hi": hi}
    for sql in (_HOURLY_TOTAL_SQL, *_HOURLY_SESSIONS_SQL, _HOURLY_EVENT_DIMS_SQL, _HOURLY_PROPS_SQL):
        con.execute(sql, params)


def rebuild_days(con: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> None:
    """Rebuild the ``daily_*`` tables for the visitor-days in ``affected_days``.

    ``lo`` / ``hi`` must cover every UTC instant of those local days (a day's margin either side).
    """
    for table in _DAILY_TABLES:
        con.execute(
            f"DELETE FROM {table} t USING affected_days a"  # noqa: S608
            " WHERE t.site_id = a.site_id AND t.visitor_key = a.visitor_key"
            " AND t.local_date = a.local_date"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE affected_visitors AS"
        " SELECT DISTINCT site_id, visitor_key FROM affected_days"
    )
    params = {"lo": lo, "hi": hi}
    for sql in (_DAILY_VISITORS_SQL, _DAILY_PAGES_SQL, _DAILY_EVENTS_SQL, _DAILY_SESSIONS_SQL):
        con.execute(sql, params)


def reaggregate(
    con: duckdb.DuckDBPyConnection, site_tz: dict[str, str], start: datetime, end: datetime
) -> tuple[int, int]:
    """Rebuild every pre-aggregate bucket with data in ``[start, end)`` from the facts.

    Returns ``(hours, visitor_days)`` rebuilt. One transaction. Rollup rows whose facts are gone
    (older than retention) are kept, not rebuilt.
    """
    con.begin()
    try:
        import polars as pl

        tz = pl.DataFrame({"site_id": list(site_tz), "tz": list(site_tz.values())},
                          schema={"site_id": pl.String, "tz": pl.String})
        con.register("tz_in", tz.to_arrow())
        con.execute("CREATE OR REPLACE TEMP TABLE site_tz AS SELECT * FROM tz_in")
        con.execute(
            "INSERT INTO site_tz SELECT DISTINCT site_id, 'UTC' FROM events"
            " WHERE site_id NOT IN (SELECT site_id FROM site_tz)"
        )
        params = {"lo": start, "hi": end}
        con.execute("""
            CREATE OR REPLACE TEMP TABLE affected_hours AS
            SELECT DISTINCT site_id, date_trunc('hour', ts) AS hour FROM events
            WHERE ts >= $lo AND ts < $hi
        """, params)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE affected_days AS
            SELECT DISTINCT e.site_id, e.visitor_key, timezone(z.tz, e.ts)::DATE AS local_date
            FROM events e JOIN site_tz z ON e.site_id = z.site_id
            WHERE e.ts >= $lo AND e.ts < $hi
        """, params)
        hours = con.execute("SELECT count(*) FROM affected_hours").fetchall()[0][0]
        days = con.execute("SELECT count(*) FROM affected_days").fetchall()[0][0]
        rebuild_hours(con, start - timedelta(hours=1), end + timedelta(hours=1))
        rebuild_days(con, start - timedelta(days=2), end + timedelta(days=2))
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.unregister("tz_in")
    return int(hours), int(days)
