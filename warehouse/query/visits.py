# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""The visit path: totals and time series under visit-attribute filters, from ``sessions`` rows.

A visit-attribute filter (``country==DE``, ``source==Google`` …) keeps the matching visits and
their events (SPEC §5/§10). The fact path finds those events by joining every event of the range
to the matching visits; this path reads the visits and touches events only where it must:

* a matching visit lying wholly inside the range and inside one time bucket contributes its
  ``sessions`` row — ``pageviews``, ``custom_events`` and its visitor, all in the bucket of its
  start — exactly what its events would contribute;
* a visit that straddles a bucket boundary (local midnight, an hour, a range edge) has its events
  counted one by one, each in its own bucket: the visitor's events from the visit's start to its
  end (one visitor's visits never overlap).

Visits, bounces and durations are over the visits that started in the range, as on the fact path;
visitors are distinct over both parts per bucket. So the numbers equal the fact path's to the last
digit (a test asserts it, boundary visits included), and the events read are only the boundary
visits' instead of the range's. Straddlers of a few boundaries (a total has two: the range's start
and end) are joined per boundary, so each join's time bounds let DuckDB skip the row groups
outside them.

A time series by day, week or month over whole local days that counts no events per bucket
(visitors, visits, bounce rate, duration: the dashboard's chart) reads no events at all: a visit
has events on the local days it started and ended, and on a day strictly between them every event
of its visitor is its own, so the visitor's ``daily_visitors`` row says whether it had one then
(``_visitors_by_day``).

Covers: visit-attribute filters only (no event-level filter), no breakdown dimension, optionally
by time, metrics ``visitors``, ``visits``, ``views``, ``events``, ``bounce_rate``,
``visit_duration``, ``views_per_visit``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from warehouse.query.model import Query
from warehouse.query.sql import (
    SQL,
    Params,
    bucket,
    date_bucket,
    final_select,
    full_join,
    has_event_filters,
    has_session_filters,
    session_predicates,
    where,
)

METRICS = frozenset({"visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit"})
#: Up to this many boundaries (range edges and bucket starts), straddling visits are joined to
#: their events once per boundary, so every join reads only the row groups around its boundary.
MAX_SPLIT_BOUNDARIES = 8


def coverage(q: Query) -> str | None:
    """``None`` when the visit path answers ``q``, else why it does not."""
    if not has_session_filters(q):
        return "no visit-attribute filter"
    if has_event_filters(q):
        return "event-level filters need the events"
    if q.plain_dimensions:
        return "breakdowns need the fact tables"
    if not set(q.metrics) <= METRICS:
        return f"metrics {sorted(set(q.metrics) - METRICS)} need the events"
    return None


def _next_bucket(day: date, granularity: str) -> date:
    if granularity == "day":
        return day + timedelta(days=1)
    if granularity == "week":
        return day + timedelta(days=7 - day.weekday())
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _straddler_groups(q: Query, p: Params) -> list[str]:
    """Predicates on ``ms`` splitting the straddling visits into the joins to run: by the first
    boundary each crosses (the range's start, a bucket start inside it, its end) when there are
    few boundaries, else one join for all. Any split is exact; it only decides what is read."""
    r = q.date_range
    inner: list[datetime] = []
    if q.granularity == "hour":
        return ["true"]
    if q.granularity is not None:
        day = r.start.astimezone(r.zone).date()
        while len(inner) + 2 <= MAX_SPLIT_BOUNDARIES:
            day = _next_bucket(day, q.granularity)
            t = datetime.combine(day, time(0), tzinfo=r.zone).astimezone(UTC)
            if t >= r.end:
                break
            inner.append(t)
        else:
            return ["true"]
    marks = [p(t) for t in (r.start, *inner)]
    groups = [f"started_at < {marks[0]}"]
    groups += [f"started_at >= {a} AND started_at < {b}" for a, b in zip(marks, marks[1:], strict=False)]
    groups.append(f"started_at >= {marks[-1]}")
    return groups


def _whole_local_days(q: Query) -> bool:
    r = q.date_range
    return all(t.astimezone(r.zone).time() == time(0) for t in (r.start, r.end))


def _reads_no_events(q: Query) -> bool:
    """Whether a time series' visitors come from the visit rows and ``daily_visitors`` alone
    (``_visitors_by_day``): by day, week or month over whole site-local days, with no metric that
    counts events per bucket."""
    return (q.granularity in ("day", "week", "month") and _whole_local_days(q)
            and not set(q.metrics) & {"views", "events", "views_per_visit"})


def _visitors_by_day(q: Query, p: Params, site: str, start: str, end: str) -> list[str]:
    """CTEs ``ms`` (the matching visits overlapping the range) and ``em`` (distinct visitors per
    bucket) that read no events.

    A visit's events lie between its first (``started_at``) and last (``ended_at``) event, and one
    visitor's visits never overlap. So a visit has events on the local day it started and on the
    day it ended, and on a day strictly between those two every event of its visitor is the
    visit's own: the visitor's ``daily_visitors`` row of such a day says whether the visit had an
    event then. The range is whole local days, so a day is either wholly inside it or outside."""
    r = q.date_range
    gran = q.granularity
    assert gran is not None
    first, last = r.start.astimezone(r.zone).date(), r.end.astimezone(r.zone).date()
    first_day, end_day, before = p(first), p(last), p(first - timedelta(days=1))

    def day(ts: str) -> str:
        return bucket("day", ts, p, r.timezone, r)

    def b(d: str) -> str:
        return date_bucket(gran, d)

    return [
        # d0 / d1: the local days of the visit's first and last event, or the day before / after
        # the range for a visit that starts / ends outside it (every range day up to its last
        # event / from its first event is then strictly between)
        "ms AS (SELECT s.visitor_key, s.started_at, s.ended_at, s.is_bounce, s.duration_ms,"
        f" CASE WHEN s.started_at < {start} THEN {before} ELSE {day('s.started_at')} END AS d0,"
        f" CASE WHEN s.ended_at >= {end} THEN {end_day} ELSE {day('s.ended_at')} END AS d1 FROM sessions s WHERE "
        + where([f"s.site_id = {site}", f"s.started_at < {end}", f"s.ended_at >= {start}",
                 *session_predicates(q, p, "s")])
        + ")",
        f"vd AS (SELECT {b('d0')} AS k0, visitor_key FROM ms WHERE started_at >= {start}"
        f" UNION ALL SELECT {b('d1')}, visitor_key FROM ms WHERE ended_at < {end} AND d1 <> d0"
        f" UNION ALL SELECT {b('d.local_date')}, d.visitor_key FROM daily_visitors d"
        " JOIN (SELECT visitor_key, d0, d1 FROM ms WHERE d1 - d0 >= 2) l ON l.visitor_key = d.visitor_key"
        " AND d.local_date > l.d0 AND d.local_date < l.d1"
        f" WHERE d.site_id = {site} AND d.local_date >= {first_day} AND d.local_date < {end_day})",
        "em AS (SELECT k0, count(DISTINCT visitor_key) AS visitors, 0 AS views, 0 AS events,"
        " 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM vd GROUP BY k0)",
    ]


def visit_sql(q: Query) -> SQL:
    """Answer ``q`` (``coverage(q)`` is ``None``) from the matching visits and the events of the
    visits that straddle a boundary."""
    p = Params()
    r = q.date_range
    site, start, end = p(q.site_id), p(r.start), p(r.end)
    gran = q.granularity
    if _reads_no_events(q):
        ctes = _visitors_by_day(q, p, site, start, end)
        return _finish(q, p, ctes, start, "visitors" in q.metrics, date_bucket(gran or "day", "d0"))

    def b(ts: str) -> str:
        assert gran is not None
        return bucket(gran, ts, p, r.timezone, r)

    whole = f"s.started_at >= {start} AND s.ended_at < {end}"
    if gran:
        whole += f" AND {b('s.started_at')} = {b('s.ended_at')}"
    key = f"{b('s.started_at')} AS b0, " if gran else ""
    ctes = [
        f"ms AS (SELECT s.visitor_key, s.started_at, s.ended_at, s.pageviews, s.custom_events, s.is_bounce,"
        f" s.duration_ms, {key}({whole}) AS whole FROM sessions s WHERE "
        + where([f"s.site_id = {site}", f"s.started_at < {end}", f"s.ended_at >= {start}",
                 *session_predicates(q, p, "s")])
        + ")"
    ]
    k = "k0, " if gran else ""
    group = " GROUP BY k0" if gran else ""
    need_events = bool(set(q.metrics) & {"visitors", "views", "events", "views_per_visit"})
    if need_events:
        joins = [
            f"SELECT {b('e.ts') + ' AS k0, ' if gran else ''}e.visitor_key, e.type FROM events e"
            f" JOIN (SELECT visitor_key, started_at, ended_at FROM ms WHERE NOT whole AND {g}) st"
            " ON st.visitor_key = e.visitor_key AND e.ts >= st.started_at AND e.ts <= st.ended_at"
            f" WHERE e.site_id = {site} AND e.ts >= {start} AND e.ts < {end}"
            for g in _straddler_groups(q, p)
        ]
        ctes.append(f"sev AS ({' UNION ALL '.join(joins)})")
        ctes.append(
            f"em AS (SELECT {k}count(DISTINCT visitor_key) AS visitors, CAST(sum(v) AS BIGINT) AS views,"
            " CAST(sum(c) AS BIGINT) AS events, 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM ("
            f"SELECT {'b0 AS k0, ' if gran else ''}visitor_key, pageviews AS v, custom_events AS c FROM ms WHERE whole"
            f" UNION ALL SELECT {k}visitor_key, CAST(type = 'pageview' AS INTEGER),"
            f" CAST(type = 'event' AS INTEGER) FROM sev){group})"
        )
    return _finish(q, p, ctes, start, need_events, "b0")


def _finish(q: Query, p: Params, ctes: list[str], start: str, need_events: bool, visit_bucket: str) -> SQL:
    """Visit counts (``sm``) from ``ms`` (``visit_bucket``: the bucket a visit started in), joined
    with the event counts ``em`` into ``base``."""
    gran = q.granularity
    k = "k0, " if gran else ""
    group = " GROUP BY k0" if gran else ""
    need_visits = bool(set(q.metrics) & {"visits", "bounce_rate", "visit_duration", "views_per_visit"})
    if need_visits:
        ctes.append(
            f"sm AS (SELECT {visit_bucket + ' AS k0, ' if gran else ''}count(*) AS visits, count(*) FILTER (WHERE is_bounce) AS bounces,"
            f" coalesce(sum(duration_ms), 0) AS duration_ms FROM ms WHERE started_at >= {start}{group})"
        )
    n = 1 if gran else 0
    if need_events and need_visits:
        ctes.append(f"base AS ({full_join('em', 'sm', n)})")
    elif need_events:
        ctes.append(f"base AS (SELECT {k}visitors, 0 AS visits, views, events, 0 AS bounces, 0 AS duration_ms,"
                    " 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM em)")
    else:
        ctes.append(f"base AS (SELECT {k}0 AS visitors, visits, 0 AS views, 0 AS events, bounces, duration_ms,"
                    " 0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n FROM sm)")
    return final_select(q, ctes, p)

