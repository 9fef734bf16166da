# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""The fact path: any ``Query`` answered from ``events``, ``sessions`` and ``event_props``.

Definitions (SPEC §5; ``docs/api.md`` says the same in prose):

* without a dimension, or by time / page / event / property: ``visitors`` = distinct visitors with
  any event in the range (by page: with a pageview of it; by event: with that custom event),
  ``views`` = pageview events in the range, ``events`` = custom events in the range, and ``visits``,
  ``bounce_rate``, ``visit_duration`` are over the visits that *started* in the range (by page /
  event / property value: the visits that had such an event);
* by a visit attribute (source, country, entry page, …): every metric is over the visits that
  started in the range with that attribute (views = their pageviews).

Filters narrow what is counted and never change what a metric means (SPEC §10): an event filter
keeps matching events and the visits that contain one; a visit-attribute filter keeps matching
visits and their events.
"""

from __future__ import annotations

from warehouse.query.model import GOAL, PAGE_METRICS, PROP_PREFIX, REVENUE_METRICS, Query
from warehouse.query.sql import (
    EVENT_COLUMNS,
    NO_PAGE_BLOCKS,
    SESSION_COLUMNS,
    SQL,
    Params,
    bucket,
    event_predicates,
    final_select,
    full_join,
    goal_events,
    has_event_filters,
    has_session_filters,
    revenue_blocks,
    session_predicates,
    where,
)


def _event_keys(q: Query, p: Params, prefix: str) -> tuple[str, list[str], list[str]]:
    """Joins, key expressions and type restrictions to group ``events e`` by the plain dimensions."""
    joins = ""
    exprs: list[str] = []
    types: set[str] = set()
    if any(d in SESSION_COLUMNS for d in q.plain_dimensions):
        joins += f" JOIN sessions {prefix}s ON {prefix}s.session_id = e.session_id AND {prefix}s.site_id = e.site_id"
    for i, d in enumerate(q.plain_dimensions):
        if d in SESSION_COLUMNS:
            exprs.append(f"{prefix}s.{d}")
        elif d == GOAL:
            exprs.append("e.goal")  # ``e`` is ``goal_events`` then
        elif d.startswith(PROP_PREFIX):
            a = f"{prefix}p{i}"
            joins += (
                f" JOIN event_props {a} ON {a}.event_id = e.event_id AND {a}.site_id = e.site_id"
                f" AND {a}.key = {p(d[len(PROP_PREFIX):])}"
            )
            exprs.append(f"{a}.value")
        else:
            exprs.append(f"e.{EVENT_COLUMNS[d]}")
            if d == "event":
                types.add("e.type = 'event'")
            elif GOAL not in q.plain_dimensions and not any(
                    f.dimension in ("event", GOAL) or f.dimension.startswith(PROP_PREFIX) for f in q.filters):
                # By page: pageviews — unless the question is about custom events (a goal, an
                # event name, a property), then the pages those events happened on.
                types.add("e.type = 'pageview'")
    return joins, exprs, sorted(types)


def _time_on_page(q: Query, p: Params) -> str:
    """``top``: time on page of each pageview (``event_id``, ``top_ms``) of the site around the range.

    Time on page of a pageview = the largest engagement the tracker reported for it (``page_exit``
    / ``engagement`` events before the visit's next pageview), else the time until the visit's next
    pageview; unknown (null) for a last pageview without engagement, which the average skips. A
    report in the same millisecond as the next pageview is still the page's: the tracker sends a
    page's exit just before the next page's view (``warehouse.sessionize`` decides the same way).
    """
    site, start, end = p(q.site_id), p(q.date_range.start), p(q.date_range.end)
    return (
        "tp0 AS (SELECT session_id, event_id, ts, type, engagement_ms,"
        " sum(CASE WHEN type = 'pageview' THEN 1 ELSE 0 END) OVER (PARTITION BY session_id"
        " ORDER BY ts, (type = 'pageview'), event_id ROWS UNBOUNDED PRECEDING) AS seq"
        f" FROM events WHERE site_id = {site} AND ts >= {start} - INTERVAL 1 DAY"
        f" AND ts < {end} + INTERVAL 1 DAY),"
        " tp1 AS (SELECT session_id, seq, arg_min(event_id, ts) FILTER (WHERE type = 'pageview') AS event_id,"
        " min(ts) FILTER (WHERE type = 'pageview') AS view_ts,"
        " max(engagement_ms) FILTER (WHERE type IN ('page_exit', 'engagement')) AS eng"
        " FROM tp0 WHERE seq > 0 GROUP BY session_id, seq),"
        " top AS (SELECT event_id, coalesce(eng, epoch_ms(lead(view_ts) OVER (PARTITION BY session_id"
        " ORDER BY seq)) - epoch_ms(view_ts)) AS top_ms FROM tp1)"
    )


def _scroll_depth(q: Query, p: Params) -> str:
    """``sd``: per visit and page of the site around the range, the deepest scroll reported
    (``depth``, percent), on the visit's first pageview of that page (``event_id``), so each visit
    counts once per page (Plausible's definition: the average of the visits' maxima)."""
    site, start, end = p(q.site_id), p(q.date_range.start), p(q.date_range.end)
    return (
        "sd AS (SELECT arg_min(event_id, ts) FILTER (WHERE type = 'pageview') AS event_id,"
        " max(scroll_depth) FILTER (WHERE type IN ('page_exit', 'engagement')) AS depth"
        f" FROM events WHERE site_id = {site} AND ts >= {start} - INTERVAL 1 DAY"
        f" AND ts < {end} + INTERVAL 1 DAY GROUP BY session_id, pathname)"
    )


def fact_sql(q: Query) -> SQL:
    """Answer ``q`` from the fact tables (handles every question the model allows)."""
    p = Params()
    site, start, end, tz = q.site_id, q.date_range.start, q.date_range.end, q.date_range.timezone
    gran = q.granularity
    dims = q.plain_dimensions
    ctes: list[str] = [goal_events(q, p)] if GOAL in dims else []
    source = "goal_events" if GOAL in dims else "events"  # by goal: each goal's events, with it
    revenue = bool(set(q.metrics) & set(REVENUE_METRICS))

    ses_where = [f"s.site_id = {p(site)}", f"s.started_at >= {p(start)}", f"s.started_at < {p(end)}",
                 *session_predicates(q, p, "s")]
    if has_event_filters(q):
        ses_where.append(
            "s.session_id IN (SELECT e.session_id FROM events e WHERE "
            + where([f"e.site_id = {p(site)}", f"e.ts >= {p(start)}", *event_predicates(q, p, "e")])
            + ")"
        )

    if dims and all(d in SESSION_COLUMNS for d in dims):
        # Every metric over the visits that started in the range with these attributes.
        exprs = ([bucket(gran, "s.started_at", p, tz, q.date_range)] if gran else []) + [f"s.{d}" for d in dims]
        sel = ", ".join(f"{e} AS k{i}" for i, e in enumerate(exprs))
        visits = (
            f"SELECT {sel}, count(DISTINCT s.visitor_key) AS visitors, count(*) AS visits,"
            " sum(s.pageviews) AS views, sum(s.custom_events) AS events,"
            " count(*) FILTER (WHERE s.is_bounce) AS bounces, sum(s.duration_ms) AS duration_ms,"
            f" {NO_PAGE_BLOCKS} FROM sessions s WHERE {where(ses_where)} GROUP BY ALL"
        )
        if not revenue:
            ctes.append(f"base AS ({visits})")
            return final_select(q, ctes, p)
        # Revenue: of the events of those visits that match the event filters (a goal's events).
        keys = [f"k{i}" for i in range(len(exprs))]
        ctes.append(f"sv AS ({visits})")
        ctes.append(
            f"rv AS (SELECT {sel}, {revenue_blocks(q, p, 'e.')} FROM sessions s JOIN events e"
            " ON e.session_id = s.session_id AND e.site_id = s.site_id AND e.revenue_amount IS NOT NULL"
            f" WHERE {where([*ses_where, *event_predicates(q, p, 'e')])} GROUP BY ALL)"
        )
        on = " AND ".join(f"sv.{k} IS NOT DISTINCT FROM rv.{k}" for k in keys)
        ctes.append(
            f"base AS (SELECT {', '.join('sv.' + k for k in keys)}, visitors, visits, views, events, bounces,"
            " duration_ms, top_ms, top_n, sd_sum, sd_n, coalesce(rv.revenue, 0) AS revenue, coalesce(rv.revenue_n, 0) AS revenue_n,"
            f" coalesce(rv.unconverted, 0) AS unconverted FROM sv LEFT JOIN rv ON {on})"
        )
        return final_select(q, ctes, p)

    # Only the halves the metrics need: event counts (em) and/or visit counts (sm).
    need_events = bool(set(q.metrics) & {"visitors", "views", "events", *PAGE_METRICS, "conversion_rate",
                                          "views_per_visit", *REVENUE_METRICS})
    need_visits = bool(set(q.metrics) & {"visits", "bounce_rate", "visit_duration", "views_per_visit"})

    # Event metrics, grouped by event time and event-level values.
    joins, exprs, types = _event_keys(q, p, "j")
    if gran:
        exprs.insert(0, bucket(gran, "e.ts", p, tz, q.date_range))
    n = len(exprs)
    sel = "".join(f"{e} AS k{i}, " for i, e in enumerate(exprs))
    ev_where = [f"e.site_id = {p(site)}", f"e.ts >= {p(start)}", f"e.ts < {p(end)}",
                *event_predicates(q, p, "e"), *types]
    if has_session_filters(q):
        # Visits overlapping the range that match the visit filters: their events in range count.
        # A visit's events are exactly its visitor's events from its start to its end (one
        # visitor's visits never overlap): a join on integers and times, cheaper than on ids.
        # When only pageviews (or custom events) are counted, visits without any cannot add a
        # row, so they stay out of the join (fewer visitors pass its filter on the events).
        having = {"e.type = 'pageview'": "s.pageviews > 0", "e.type = 'event'": "s.custom_events > 0"}
        ctes.insert(0,
            "fs AS (SELECT s.visitor_key, s.started_at, s.ended_at FROM sessions s WHERE "
            + where([f"s.site_id = {p(site)}", f"s.started_at < {p(end)}", f"s.ended_at >= {p(start)}",
                     *session_predicates(q, p, "s"), *(having[t] for t in types if t in having)])
            + ")"
        )
        joins += (" JOIN fs ON fs.visitor_key = e.visitor_key AND e.ts >= fs.started_at"
                  " AND e.ts <= fs.ended_at")
    top = "0 AS top_ms, 0 AS top_n"
    # By goal, a goal's completions are its events: custom events, or pageviews of a page goal.
    counted_events = "count(*)" if GOAL in dims else "count(*) FILTER (WHERE e.type = 'event')"
    if "time_on_page" in q.metrics:
        ctes.append(_time_on_page(q, p))
        joins += " LEFT JOIN top ON top.event_id = e.event_id"
        top = "coalesce(sum(top.top_ms), 0) AS top_ms, count(top.top_ms) AS top_n"
    if "scroll_depth" in q.metrics:
        ctes.append(_scroll_depth(q, p))
        joins += " LEFT JOIN sd ON sd.event_id = e.event_id"
        top += ", coalesce(sum(sd.depth), 0) AS sd_sum, count(sd.depth) AS sd_n"
    else:
        top += ", 0 AS sd_sum, 0 AS sd_n"
    if revenue:
        top += ", " + revenue_blocks(q, p, "e.")
    if not need_visits:
        ctes.append(
            f"base AS (SELECT {sel}count(DISTINCT e.visitor_key) AS visitors, 0 AS visits,"
            " count(*) FILTER (WHERE e.type = 'pageview') AS views,"
            f" {counted_events} AS events, 0 AS bounces, 0 AS duration_ms, {top}"
            f" FROM {source} e{joins} WHERE {where(ev_where)}{' GROUP BY ALL' if n else ''})"
        )
        return final_select(q, ctes, p)
    ctes.append(
        f"em AS (SELECT {sel}count(DISTINCT e.visitor_key) AS visitors,"
        " count(*) FILTER (WHERE e.type = 'pageview') AS views,"
        f" {counted_events} AS events, {top}"
        f" FROM {source} e{joins} WHERE {where(ev_where)}{' GROUP BY ALL' if n else ''})"
    )

    # Visit metrics: visits started in the range, grouped by start time and, for event-level
    # values, by the values their events had.
    s_exprs = [bucket(gran, "s.started_at", p, tz, q.date_range)] if gran else []
    s_from = "sessions s"
    if dims:
        pjoins, pexprs, ptypes = _event_keys(q, p, "x")
        pair_sel = ", ".join(f"{e} AS v{i}" for i, e in enumerate(pexprs))
        pair_where = [f"e.site_id = {p(site)}", f"e.ts >= {p(start)}", *event_predicates(q, p, "e"), *ptypes]
        ctes.append(f"pairs AS (SELECT DISTINCT e.session_id, {pair_sel} FROM {source} e{pjoins}"
                    f" WHERE {where(pair_where)})")
        s_from += " JOIN pairs pr ON pr.session_id = s.session_id"
        s_exprs += [f"pr.v{i}" for i in range(len(pexprs))]
    s_sel = "".join(f"{e} AS k{i}, " for i, e in enumerate(s_exprs))
    ctes.append(
        f"sm AS (SELECT {s_sel}count(*) AS visits, count(*) FILTER (WHERE s.is_bounce) AS bounces,"
        f" coalesce(sum(s.duration_ms), 0) AS duration_ms FROM {s_from} WHERE {where(ses_where)}"
        f"{' GROUP BY ALL' if n else ''})"
    )
    if not need_events:
        ctes.append(f"base AS (SELECT {''.join(f'k{i}, ' for i in range(n))}0 AS visitors, visits, 0 AS views,"
                    f" 0 AS events, bounces, duration_ms, {NO_PAGE_BLOCKS} FROM sm)")
        ctes = [c for c in ctes if not c.startswith("em AS")]
        return final_select(q, ctes, p)
    ctes.append(f"base AS ({full_join('em', 'sm', n, revenue)})")
    return final_select(q, ctes, p)
