# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""SQL pieces both query paths share: bound parameters, filter predicates, time buckets and the
final SELECT.

Each path (``facts.py``, ``rollups.py``) produces a CTE named ``base`` with the same columns — the
group keys ``k0..kn`` (the time bucket first when the query has a time dimension) and the additive
building blocks ``visitors, visits, views, events, bounces, duration_ms, top_ms, top_n, sd_sum,
sd_n`` — and
``final_select`` derives the ratio metrics from them, applies ``q``, orders and pages. So the two
paths can differ only in where the building blocks come from, and a test asserts they never do.
Every value a client sends is a named, bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from warehouse.query.model import (
    DIMENSIONS,
    NEGATED,
    PROP_PREFIX,
    REVENUE_METRICS,
    DateRange,
    Filter,
    GoalSpec,
    Query,
)
from warehouse.query.patterns import is_pattern, pattern_regex

#: Visit attributes: columns of ``sessions`` (and dimensions of the rollups).
SESSION_COLUMNS = frozenset(d for d, level in DIMENSIONS.items() if level == "session")
#: Event attributes: API name → ``events`` column.
EVENT_COLUMNS = {"page": "pathname", "hostname": "hostname", "event": "name"}
BASE_COLUMNS = ("visitors", "visits", "views", "events", "bounces", "duration_ms", "top_ms", "top_n",
                "sd_sum", "sd_n")
#: The page-metric blocks as zeros, for paths that do not compute them.
NO_PAGE_BLOCKS = "0 AS top_ms, 0 AS top_n, 0 AS sd_sum, 0 AS sd_n"


@dataclass
class SQL:
    """A statement and its named parameters."""

    text: str
    params: dict[str, Any] = field(default_factory=dict)


class Params:
    """Collects named parameters while SQL text is assembled; ``p(value)`` returns ``$pN``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "$" + name


def where(parts: list[str]) -> str:
    return " AND ".join(parts) if parts else "true"


def predicate(column: str, f: Filter, p: Params) -> str:
    """``column <op> values``; the negative operators (``NEGATED``) keep unknown (null) values.

    Regular expressions and wildcard patterns are bound parameters like every value: DuckDB
    compiles a constant pattern once per query (RE2, linear time)."""
    positive = NEGATED.get(f.op, f.op)
    if positive == "is":
        match = f"{column} IN ({', '.join(p(v) for v in f.values)})"
    elif positive == "contains":
        match = " OR ".join(f"contains(lower({column}), lower({p(v)}))" for v in f.values)
    elif positive == "matches":
        match = " OR ".join(f"regexp_matches({column}, {p(v)})" for v in f.values)
    else:  # matches_wildcard: an exact value stays an equality (dictionary and zone-map friendly)
        match = " OR ".join(
            f"regexp_full_match({column}, {p(pattern_regex(v))})" if is_pattern(v) else f"{column} = {p(v)}"
            for v in f.values
        )
    if positive != "is":  # NULL IN (...) is already not true; the others may yield null
        match = f"coalesce({match}, false)"
    return match if f.op == positive else f"({column} IS NULL OR NOT ({match}))"


def goal_match(goal: GoalSpec, site: str, p: Params, a: str) -> str:
    """Events (alias prefix ``a``) completing ``goal``: a pageview of a matching path (a pattern
    through ``regexp_full_match`` with its regular expression bound), or a custom event of that
    name, with the property value when the goal names one."""
    if goal.kind == "page":
        path = (f"regexp_full_match({a}pathname, {p(pattern_regex(goal.value))})" if is_pattern(goal.value)
                else f"{a}pathname = {p(goal.value)}")
        return f"({a}type = 'pageview' AND {path})"
    match = f"{a}type = 'event' AND {a}name = {p(goal.value)}"
    if goal.prop_key is not None:
        match += (f" AND {a}event_id IN (SELECT event_id FROM event_props WHERE site_id = {p(site)}"
                  f" AND event_type = 'event' AND key = {p(goal.prop_key)} AND value = {p(goal.prop_value)})")
    return f"({match})"


def goal_predicate(q: Query, p: Params, a: str) -> str:
    """Events completing any goal the goal filter names."""
    return "(" + (" OR ".join(goal_match(g, q.site_id, p, a) for g in q.selected_goals()) or "false") + ")"


def goal_events(q: Query, p: Params) -> str:
    """CTE ``goal_events``: the site's events from the range's start on that complete a selected
    goal (``Query.selected_goals``), each with the ``goal`` it completes, for the ``goal``
    dimension: it stands in for ``events``. An event completing two goals is there twice."""
    goals = q.selected_goals()
    if not goals:
        return "goal_events AS (SELECT *, CAST(NULL AS VARCHAR) AS goal FROM events WHERE false)"
    site, start = p(q.site_id), p(q.date_range.start)
    parts = [f"SELECT e.*, {p(g.name)} AS goal FROM events e WHERE e.site_id = {site} AND e.ts >= {start}"
             f" AND {goal_match(g, q.site_id, p, 'e.')}" for g in goals]
    return f"goal_events AS ({' UNION ALL '.join(parts)})"


def revenue_value(q: Query, p: Params, a: str) -> str:
    """An event's revenue in the site's currency: its amount times the rate of its currency (1 for
    the site's own); null for no revenue and for a currency without a rate."""
    cur = q.currency
    if cur is None:
        return "CAST(NULL AS DOUBLE)"
    cases = f" WHEN {p(cur.code)} THEN {a}revenue_amount"
    cases += "".join(f" WHEN {p(code)} THEN {a}revenue_amount * {p(rate)}" for code, rate in cur.rates
                     if code != cur.code)
    return f"(CASE WHEN {a}type = 'event' THEN CASE {a}revenue_currency{cases} END END)"


def revenue_blocks(q: Query, p: Params, a: str) -> str:
    """The revenue building blocks over events (alias prefix ``a``): ``revenue`` (converted sum),
    ``revenue_n`` (events converted), ``unconverted`` (events with revenue no rate converts)."""
    value = revenue_value(q, p, a)
    return (f"coalesce(sum({value}), 0) AS revenue, count({value}) AS revenue_n,"
            f" count(*) FILTER (WHERE {a}type = 'event' AND {a}revenue_amount IS NOT NULL AND {value} IS NULL)"
            " AS unconverted")



def event_predicates(q: Query, p: Params, alias: str) -> list[str]:
    """Predicates on ``events`` rows (alias ``alias``) for the event-level filters of ``q``."""
    a = f"{alias}."
    out = []
    for f in q.filters:
        if f.dimension == "goal":
            out.append(goal_predicate(q, p, a))
        elif f.dimension.startswith(PROP_PREFIX):
            # An event passes a negative property filter when no value of the property matches
            # (so events without the property pass too).
            positive = Filter(NEGATED.get(f.op, f.op), f.dimension, f.values)
            sub = (
                f"{a}event_id IN (SELECT event_id FROM event_props WHERE site_id = {p(q.site_id)}"
                f" AND key = {p(f.dimension[len(PROP_PREFIX):])} AND {predicate('value', positive, p)})"
            )
            out.append(sub if f.op == positive.op else f"NOT ({sub})")
        elif f.dimension in EVENT_COLUMNS:
            out.append(predicate(a + EVENT_COLUMNS[f.dimension], f, p))
    return out


def session_predicates(q: Query, p: Params, alias: str) -> list[str]:
    """Predicates on ``sessions`` rows (alias ``alias``) for the visit-attribute filters of ``q``."""
    return [predicate(f"{alias}.{f.dimension}", f, p) for f in q.filters if f.dimension in SESSION_COLUMNS]


def has_session_filters(q: Query) -> bool:
    return any(f.dimension in SESSION_COLUMNS for f in q.filters)


def has_event_filters(q: Query) -> bool:
    return any(f.dimension not in SESSION_COLUMNS for f in q.filters)


def _offsets(r: DateRange) -> list[tuple[datetime, int]]:
    """The site's UTC offset in ms over ``r``: ``[(since, offset), ...]``, each until the next."""
    zone = r.zone

    def offset(seconds: int) -> int:
        moment = datetime.fromtimestamp(seconds, UTC).astimezone(zone)
        return int((moment.utcoffset() or timedelta(0)).total_seconds() * 1000)

    t, end = int(r.start.timestamp()), int(r.end.timestamp()) + 1
    out = [(datetime.fromtimestamp(t, UTC), offset(t))]
    while t < end:
        step = t + 6 * 3600  # a zone changes its offset at most once in 6 hours
        if offset(step) == out[-1][1]:
            t = step
            continue
        lo, hi = t, step  # the first whole second with the new offset (transitions are on seconds)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == out[-1][1] else (lo, mid)
        out.append((datetime.fromtimestamp(hi, UTC), offset(hi)))
        t = hi
    return out


def bucket(granularity: str, ts: str, p: Params, tz: str, date_range: DateRange | None = None) -> str:
    """The time bucket of a TIMESTAMPTZ: the UTC hour for ``hour`` (a repeated local hour at a DST
    change never merges two hours), else the site-local day / week (Monday) / month as a DATE.

    Given the range ``ts`` lies in, the local day is plain arithmetic — days since 1970 of the UTC
    time plus the zone's offset, which changes only at the few instants ``_offsets`` lists — much
    cheaper than a time-zone conversion per row."""
    if granularity == "hour":
        return f"date_trunc('hour', {ts})"
    if date_range is None:
        return f"CAST(date_trunc('{granularity}', timezone({p(tz)}, {ts})) AS DATE)"
    pieces = _offsets(date_range)
    offset = str(pieces[-1][1])
    for (_, value), (until, _) in reversed(list(zip(pieces, pieces[1:], strict=False))):
        offset = f"CASE WHEN {ts} < {p(until)} THEN {value} ELSE {offset} END"
    day = f"(DATE '1970-01-01' + CAST((epoch_ms({ts}) + {offset}) // 86400000 AS INTEGER))"
    return day if granularity == "day" else f"CAST(date_trunc('{granularity}', {day}) AS DATE)"


def date_bucket(granularity: str, col: str) -> str:
    """The same bucket for a site-local DATE column (the daily tables)."""
    return col if granularity == "day" else f"CAST(date_trunc('{granularity}', {col}) AS DATE)"


def key_dimensions(q: Query) -> list[str]:
    """The group keys in order: time dimension first, then the others."""
    return ([q.time_dimension] if q.time_dimension else []) + list(q.plain_dimensions)


def full_join(left: str, right: str, n_keys: int, revenue: bool = False) -> str:
    """``left`` (visitors, views, events, top_*, and with ``revenue`` the revenue blocks) ⟗
    ``right`` (visits, bounces, duration_ms)."""
    blocks = [("l", "visitors"), ("r", "visits"), ("l", "views"), ("l", "events"),
              ("r", "bounces"), ("r", "duration_ms"), ("l", "top_ms"), ("l", "top_n"),
              ("l", "sd_sum"), ("l", "sd_n")]
    if revenue:
        blocks += [("l", "revenue"), ("l", "revenue_n"), ("l", "unconverted")]
    rest = ", ".join(f"coalesce({side}.{c}, 0) AS {c}" for side, c in blocks)
    if not n_keys:
        return f"SELECT {rest} FROM {left} l, {right} r"
    keys = [f"k{i}" for i in range(n_keys)]
    on = " AND ".join(f"l.{k} IS NOT DISTINCT FROM r.{k}" for k in keys)
    key_cols = ", ".join(f"coalesce(l.{k}, r.{k}) AS {k}" for k in keys)
    return f"SELECT {key_cols}, {rest} FROM {left} l FULL OUTER JOIN {right} r ON {on}"


DERIVED = {
    "visitors": "visitors",
    "visits": "visits",
    "views": "views",
    "events": "events",
    "bounce_rate": "CASE WHEN visits > 0 THEN 100.0 * bounces / visits END",
    "visit_duration": "CASE WHEN visits > 0 THEN duration_ms / 1000.0 / visits END",
    "views_per_visit": "CASE WHEN visits > 0 THEN views * 1.0 / visits END",
    "time_on_page": "CASE WHEN top_n > 0 THEN top_ms / 1000.0 / top_n END",
    "scroll_depth": "CASE WHEN sd_n > 0 THEN sd_sum * 1.0 / sd_n END",
    "conversion_rate": "visitors",  # completed by the runner (needs visitors without the goal)
    "total_revenue": "revenue",
    "average_revenue": "CASE WHEN revenue_n > 0 THEN revenue / revenue_n END",
    "revenue_unconverted": "unconverted",
}


def final_select(q: Query, ctes: list[str], p: Params) -> SQL:
    """Derived metrics, search, order and paging over the ``base`` CTE (shared by both paths)."""
    names = key_dimensions(q)
    keys = [f"k{i}" for i in range(len(names))]
    cols = [*keys, *(f"{DERIVED[m]} AS {m}" for m in q.metrics)]
    time_keys = 1 if q.time_dimension else 0
    conditions = []
    if q.search is not None and len(keys) > time_keys:
        conditions.append(f"contains(lower(CAST(k{time_keys} AS VARCHAR)), lower({p(q.search)}))")
    # Groups where none of the requested counts happened are no answer (e.g. a visit that
    # started in the range but viewed the page only after it, when visits are not asked for).
    counted = {"visitors", "views", "events"} & set(q.metrics)
    if set(q.metrics) & {"visits", "bounce_rate", "visit_duration", "views_per_visit"}:
        counted.add("visits")
    if set(q.metrics) & {"time_on_page", "scroll_depth"}:
        counted.add("views")
    if set(q.metrics) & set(REVENUE_METRICS):
        counted |= {"revenue_n", "unconverted"}
    counted = counted or {"visitors"}
    conditions.append("(" + " OR ".join(f"{c} <> 0" for c in sorted(counted)) + ")")
    by_name = dict(zip(names, keys, strict=True))
    order = [f"{by_name.get(n, n)} {d.upper()} NULLS LAST" for n, d in q.order_by]
    if not order:
        if q.time_dimension:
            order.append("k0 ASC")
        if len(keys) > time_keys:
            order.append(f"{q.metrics[0]} DESC NULLS LAST")
    order += [f"{k} ASC NULLS FIRST" for k in keys]
    paging = f" LIMIT {int(q.limit)} OFFSET {int(q.offset)}" if q.plain_dimensions else ""
    text = (
        f"WITH {', '.join(ctes)} SELECT {', '.join(cols)} FROM base"
        f" WHERE {' AND '.join(conditions)}{' ORDER BY ' + ', '.join(order) if order else ''}{paging}"
    )
    used = set(re.findall(r"\$(p\d+)\b", text))  # parts of the SQL a path left out bind nothing
    return SQL(text, {k: v for k, v in p.values.items() if k in used})
