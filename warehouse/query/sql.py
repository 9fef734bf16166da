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

from warehouse.query.model import DIMENSIONS, PROP_PREFIX, DateRange, Filter, Query

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
    """``column <op> values``; ``is_not`` / ``not_contains`` keep unknown (null) values."""
    if f.op in ("is", "is_not"):
        match = f"{column} IN ({', '.join(p(v) for v in f.values)})"
        return match if f.op == "is" else f"({column} IS NULL OR NOT ({match}))"
    parts = " OR ".join(f"contains(lower({column}), lower({p(v)}))" for v in f.values)
    return f"coalesce({parts}, false)" if f.op == "contains" else f"NOT coalesce({parts}, false)"


def goal_predicate(f: Filter, goals: tuple[tuple[str, str], ...], p: Params, a: str) -> str:
    """Events completing any goal named in a goal filter (by ``value`` or ``kind:value``)."""
    parts = []
    for kind, value in goals:
        if value in f.values or f"{kind}:{value}" in f.values:
            if kind == "event":
                parts.append(f"({a}type = 'event' AND {a}name = {p(value)})")
            else:
                parts.append(f"({a}type = 'pageview' AND {a}pathname = {p(value)})")
    return "(" + (" OR ".join(parts) or "false") + ")"


def event_predicates(q: Query, p: Params, alias: str) -> list[str]:
    """Predicates on ``events`` rows (alias ``alias``) for the event-level filters of ``q``."""
    a = f"{alias}."
    out = []
    for f in q.filters:
        if f.dimension == "goal":
            out.append(goal_predicate(f, q.goals, p, a))
        elif f.dimension.startswith(PROP_PREFIX):
            positive = Filter("contains" if f.op in ("contains", "not_contains") else "is", f.dimension, f.values)
            sub = (
                f"{a}event_id IN (SELECT event_id FROM event_props WHERE site_id = {p(q.site_id)}"
                f" AND key = {p(f.dimension[len(PROP_PREFIX):])} AND {predicate('value', positive, p)})"
            )
            out.append(sub if f.op in ("is", "contains") else f"NOT ({sub})")
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


def full_join(left: str, right: str, n_keys: int) -> str:
    """``left`` (visitors, views, events, top_*) ⟗ ``right`` (visits, bounces, duration_ms)."""
    blocks = [("l", "visitors"), ("r", "visits"), ("l", "views"), ("l", "events"),
              ("r", "bounces"), ("r", "duration_ms"), ("l", "top_ms"), ("l", "top_n"),
              ("l", "sd_sum"), ("l", "sd_n")]
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
