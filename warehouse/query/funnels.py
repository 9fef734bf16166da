# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""Funnels: how many visitors went through an ordered list of steps, and where they dropped off.

A funnel is 2-8 steps, each a page pattern (``{"page": "/blog/*"}``, the patterns of
``warehouse.query.patterns``), a custom event (``{"event": "Signup"}``) or one of the site's goals
(``{"goal": "<id>"}``: kept by id and matched, when answered, by the goal's whole current definition
— ``sql.goal_match``, property condition included), counted in one of two windows:

* ``per="visit"`` — the steps must happen in one visit. A visitor reached step *k* when one of
  their visits in the range did;
* ``per="visitor"`` — the steps may span the visitor's visits, all within ``days`` × 24 hours of
  the event that matched the first step. Of the visitor's attempts (one per event matching the
  first step) the one reaching most steps counts; among equals, the earliest.

The order rule, exactly: a visit's (or visitor's) events in the range are ordered by ``(ts,
event_id)``, and step *k* is matched by an event that comes strictly after the event that matched
step *k−1* in that order — never by the same event, so two steps in the same millisecond count
when their events' ids are in order. Matching is greedy (each step takes the earliest event that
can match it), which reaches the most steps any matching could.

Only pageview and custom events inside the range count. Filters are those of every query
(``Query.filters``); they choose the *visits* a funnel looks at: a visit-attribute filter keeps
visits with that attribute, an event filter (page, event, property, goal) keeps visits that had
such an event in the range; the funnel then runs over those visits' events. A breakdown
(``Query.plain_dimensions``, at most one) groups visitors by the value of the attempt's visit
(per visitor: the visit of the first step) for visit attributes, and by the value of the event
that matched the first step for event dimensions (page, hostname, event, ``props:<name>``).

One pass over the range's pageview/custom events of the site computes, per event, a bitmask of
the steps it matches; per visit (or per attempt) ``list_reduce`` walks the masks in order with the
number of steps reached so far as its state, advancing when the next step's bit is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.query.model import PROP_PREFIX, GoalSpec, Query, QueryError
from warehouse.query.patterns import check_pattern, is_pattern, pattern_regex
from warehouse.query.runner import AsyncWarehouse, SyncWarehouse
from warehouse.query.sql import (
    EVENT_COLUMNS,
    SESSION_COLUMNS,
    SQL,
    Params,
    event_predicates,
    goal_match,
    has_event_filters,
    has_session_filters,
    session_predicates,
    where,
)

MIN_STEPS, MAX_STEPS = 2, 8
MAX_WINDOW_DAYS = 90
MAX_NAME = 100
MAX_EVENT_NAME = 500
WINDOWS = ("visit", "visitor")


@dataclass(frozen=True)
class Step:
    """One step: a page pattern (``kind="page"``), a custom event name (``kind="event"``) or a site
    goal by id (``kind="goal"``, ``value`` the goal's id)."""

    kind: str
    value: str
    label: str | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.value}
        if self.label is not None:
            out["label"] = self.label
        return out


class MissingGoal(Exception):
    """A goal step names a goal the site no longer has (the API answers 409)."""

    def __init__(self, index: int, goal_id: str) -> None:
        self.index, self.goal_id = index, goal_id
        super().__init__(f"step {index + 1} (steps[{index}]) is the goal {goal_id!r}, which was deleted;"
                         " replace the step (PUT the funnel) to answer it")


@dataclass(frozen=True)
class Funnel:
    """A funnel's definition: its steps and its window (``per`` visit, or visitor within ``days``)."""

    steps: tuple[Step, ...]
    per: str = "visit"
    days: int | None = None


def parse_step(raw: Any, param: str, goals: Mapping[str, GoalSpec] | None = None) -> Step:
    """``{"page": pattern}``, ``{"event": name}`` or ``{"goal": id}`` (+ optional ``label``) → ``Step``.

    ``goals`` maps the site's goal ids to their definitions; a step naming a goal keeps its id (with
    ``event``/``page`` given too, they must agree with the goal's kind and value)."""
    if not isinstance(raw, Mapping):
        raise QueryError(param, 'each step is {"page": pattern} or {"event": name}')
    unknown = sorted(set(raw) - {"page", "event", "goal", "label"})
    if unknown:
        raise QueryError(param, f"unknown step field {unknown[0]!r}; use page or event, goal, label")
    label = raw.get("label")
    if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= MAX_NAME):
        raise QueryError(param, f"a step label is 1-{MAX_NAME} characters")
    kinds = [k for k in ("page", "event") if k in raw]
    goal_id = raw.get("goal")
    if goal_id is not None:
        if not isinstance(goal_id, str) or goals is None or goal_id not in goals:
            raise QueryError(param, f"{goal_id!r} is not a goal of this site")
        goal = goals[goal_id]
        if kinds and (kinds != [goal.kind] or raw[goal.kind] != goal.value):
            raise QueryError(param, f"goal {goal_id!r} is the {goal.kind} {goal.value!r}, not what the step says")
        return Step("goal", goal_id, label)
    if len(kinds) != 1:
        raise QueryError(param, 'each step is exactly one of {"page": pattern} or {"event": name}')
    kind = kinds[0]
    value = raw[kind]
    if not isinstance(value, str):
        raise QueryError(param, f"a {kind} step's value must be a string")
    if kind == "page":
        if not value.startswith("/"):
            raise QueryError(param, f"{value!r}: a page pattern starts with /")
        problem = check_pattern(value)
        if problem:
            raise QueryError(param, f"{value!r}: {problem}")
    elif not 1 <= len(value) <= MAX_EVENT_NAME or "\x00" in value:
        raise QueryError(param, f"an event name is 1-{MAX_EVENT_NAME} characters, without NUL")
    return Step(kind, value, label)


def parse_funnel(raw: Mapping[str, Any], goals: Mapping[str, GoalSpec] | None = None) -> Funnel:
    """Validate a funnel definition's ``steps``, ``per`` and ``days`` (``QueryError`` names the field)."""
    steps = raw.get("steps")
    if not isinstance(steps, Sequence) or isinstance(steps, (str, bytes)):
        raise QueryError("steps", f"a list of {MIN_STEPS}-{MAX_STEPS} steps")
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise QueryError("steps", f"a funnel has {MIN_STEPS}-{MAX_STEPS} steps, not {len(steps)}")
    parsed = tuple(parse_step(s, f"steps[{i}]", goals) for i, s in enumerate(steps))
    per = raw.get("per", "visit")
    if per not in WINDOWS:
        raise QueryError("per", "count per 'visit' (steps in one visit) or 'visitor' (within days)")
    days = raw.get("days")
    if per == "visit":
        if days is not None:
            raise QueryError("days", "a window of days applies only to per='visitor'")
        return Funnel(parsed, "visit", None)
    if days is None:
        days = 7
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WINDOW_DAYS:
        raise QueryError("days", f"the window is 1-{MAX_WINDOW_DAYS} days")
    return Funnel(parsed, "visitor", days)


def check_breakdown(q: Query) -> str | None:
    """The one dimension ``q`` breaks a funnel down by (``None``: no breakdown)."""
    if q.time_dimension:
        raise QueryError("dimension", "a funnel is broken down by a page, event or visit attribute, not by time")
    if len(q.plain_dimensions) > 1:
        raise QueryError("dimension", "a funnel is broken down by at most one dimension")
    return q.plain_dimensions[0] if q.plain_dimensions else None


def goals_of_steps(funnel: Funnel, goals: Mapping[str, GoalSpec] | None) -> dict[str, GoalSpec]:
    """The definitions of the goals ``funnel``'s steps name, by id (``MissingGoal``: one is gone)."""
    out = {}
    for i, step in enumerate(funnel.steps):
        if step.kind == "goal":
            if goals is None or step.value not in goals:
                raise MissingGoal(i, step.value)
            out[step.value] = goals[step.value]
    return out


def step_predicate(step: Step, p: Params, site: str, goals: Mapping[str, GoalSpec], alias: str = "e") -> str:
    """Events (alias ``alias``) that complete ``step``; a goal step's are those of ``goal_match``."""
    if step.kind == "goal":
        return goal_match(goals[step.value], site, p, f"{alias}.")
    if step.kind == "event":
        return f"({alias}.type = 'event' AND {alias}.name = {p(step.value)})"
    if is_pattern(step.value):
        return f"({alias}.type = 'pageview' AND regexp_full_match({alias}.pathname, {p(pattern_regex(step.value))}))"
    return f"({alias}.type = 'pageview' AND {alias}.pathname = {p(step.value)})"


def _reached(a: str) -> str:
    """Steps reached: walk the step masks of ``a``'s events in order, starting from 0 steps and
    advancing by one whenever an event's mask has the next step's bit."""
    return f"list_reduce(list({a}.m ORDER BY {a}.ts, {a}.event_id), lambda acc, x: acc + ((x >> acc) & 1), 0)"


def funnel_sql(q: Query, funnel: Funnel, goals: Mapping[str, GoalSpec] | None = None) -> SQL:
    """Rows ``(total, k0, s1..sN)``: visitors who reached each step, the totals (``total`` true, ``k0``
    null) first, then one row per breakdown value when ``q`` has a dimension. ``goals``: the site's
    goals by id, for goal steps (``MissingGoal`` when a step's goal is gone)."""
    dim = check_breakdown(q)
    defined = goals_of_steps(funnel, goals)
    p = Params()
    site, start, end = p(q.site_id), p(q.date_range.start), p(q.date_range.end)
    preds = [step_predicate(s, p, q.site_id, defined) for s in funnel.steps]
    mask = " | ".join(f"(CASE WHEN {pr} THEN {1 << i} ELSE 0 END)" for i, pr in enumerate(preds))
    ev_where = [f"e.site_id = {site}", f"e.ts >= {start}", f"e.ts < {end}", "e.type IN ('pageview', 'event')"]
    if has_session_filters(q):
        ev_where.append(
            "e.session_id IN (SELECT s.session_id FROM sessions s WHERE "
            + where([f"s.site_id = {site}", f"s.started_at < {end}", f"s.ended_at >= {start}",
                     *session_predicates(q, p, "s")])
            + ")")
    if has_event_filters(q):
        ev_where.append(
            "e.session_id IN (SELECT f.session_id FROM events f WHERE "
            + where([f"f.site_id = {site}", f"f.ts >= {start}", f"f.ts < {end}", *event_predicates(q, p, "f")])
            + ")")
    # Only visitors with an event matching step 1 can reach any step: an integer semi-join that
    # keeps every other visitor's events out of the ordering and grouping below (and lets the scan
    # skip them before reading their ids).
    ev_where.append(f"e.visitor_key IN (SELECT f1.visitor_key FROM events f1 WHERE f1.site_id = {site}"
                    f" AND f1.ts >= {start} AND f1.ts < {end} AND {step_predicate(funnel.steps[0], p, q.site_id, defined, 'f1')})")
    ctes = [f"ev AS (SELECT e.session_id, e.visitor_key, e.ts, e.event_id, {mask} AS m FROM events e"
            f" WHERE {where(ev_where)} AND ({' OR '.join(preds)}))"]
    if funnel.per == "visit":
        # One attempt per visit; its start is the visit's first event matching step 1.
        ctes.append(
            f"units AS (SELECT session_id, any_value(visitor_key) AS visitor_key, {_reached('ev')} AS reached,"
            " arg_min(event_id, (ts, event_id)) FILTER (WHERE m & 1 = 1) AS start_id"
            " FROM ev GROUP BY session_id)")
    else:
        # One attempt per event matching step 1: that visitor's events from it to days later.
        days = int(funnel.days or 1)
        ctes.append(
            "starts AS (SELECT visitor_key, session_id, event_id, ts FROM ev WHERE m & 1 = 1)")
        ctes.append(
            "attempts AS (SELECT s.visitor_key, s.session_id, s.event_id AS start_id, s.ts AS start_ts,"
            f" {_reached('e')} AS reached"
            " FROM starts s JOIN ev e ON e.visitor_key = s.visitor_key AND e.ts >= s.ts"
            f" AND e.ts <= s.ts + INTERVAL {days} DAY AND (e.ts > s.ts OR e.event_id >= s.event_id)"
            " GROUP BY s.visitor_key, s.session_id, s.event_id, s.ts)")
        ctes.append(
            "units AS (SELECT * FROM attempts QUALIFY row_number() OVER (PARTITION BY visitor_key"
            " ORDER BY reached DESC, start_ts, start_id) = 1)")
    joins, key = "", ""
    if dim is not None:
        if dim in SESSION_COLUMNS:
            # the attempt's visit (per visitor: the visit of its first step)
            joins = f" LEFT JOIN sessions ds ON ds.site_id = {site} AND ds.session_id = u.session_id"
            key = f"ds.{dim}"
        elif dim.startswith(PROP_PREFIX):
            joins = (f" LEFT JOIN event_props dp ON dp.site_id = {site} AND dp.event_id = u.start_id"
                     f" AND dp.key = {p(dim[len(PROP_PREFIX):])}")
            key = "dp.value"
        else:
            joins = (f" LEFT JOIN events de ON de.site_id = {site} AND de.event_id = u.start_id"
                     f" AND de.ts >= {start} AND de.ts < {end}")
            key = f"de.{EVENT_COLUMNS[dim]}"
    # Per visitor (and breakdown value) the most steps any of its attempts reached, then counts.
    ctes.append(f"best AS (SELECT {key + ' AS k0, ' if key else ''}u.visitor_key, max(u.reached) AS reached"
                f" FROM units u{joins} WHERE u.reached >= 1 GROUP BY ALL)")
    counts = ", ".join(f"count(*) FILTER (WHERE reached >= {k}) AS s{k}" for k in range(1, len(funnel.steps) + 1))
    # The totals row first (``total`` true), then the breakdown's rows: one statement, so the
    # events are read and ordered once. A visitor in two groups counts once in the totals.
    select = f"SELECT true AS total, NULL AS k0, {counts} FROM best"
    if key:
        ctes.append("overall AS (SELECT visitor_key, max(reached) AS reached FROM best GROUP BY visitor_key)")
        select = (f"SELECT true AS total, NULL AS k0, {counts} FROM overall UNION ALL"
                  f" (SELECT false AS total, k0, {counts} FROM best GROUP BY k0 ORDER BY s1 DESC, k0 ASC NULLS FIRST"
                  f" LIMIT {int(q.limit)} OFFSET {int(q.offset)})")
    text = f"WITH {', '.join(ctes)} {select}"
    return SQL(text, p.values)


@dataclass
class FunnelAnswer:
    """Visitors per step, overall and per breakdown value (``groups``: value → counts)."""

    query: Query
    funnel: Funnel
    totals: list[int]
    dimension: str | None = None
    groups: list[tuple[Any, list[int]]] | None = None
    goals: Mapping[str, GoalSpec] | None = None  # the goal steps' definitions, by id

    def _describe(self, step: Step) -> dict[str, Any]:
        """The step as defined; a goal step also with the goal's name (``goalName``)."""
        out = step.public()
        if step.kind == "goal" and self.goals and step.value in self.goals:
            out["goalName"] = self.goals[step.value].name
        return out

    def steps(self, counts: list[int]) -> list[dict[str, Any]]:
        """Each step's visitors, conversion from the previous and the first step (%), drop-off."""
        out = []
        first = counts[0] if counts else 0
        for i, (step, n) in enumerate(zip(self.funnel.steps, counts, strict=True)):
            prev = counts[i - 1] if i else n
            out.append({
                "step": i + 1, **self._describe(step), "visitors": n,
                "conversionFromPrevious": round(100.0 * n / prev, 2) if prev else 0.0,
                "conversionFromFirst": round(100.0 * n / first, 2) if first else 0.0,
                "dropOff": prev - n,
                "dropOffRate": round(100.0 * (prev - n) / prev, 2) if prev else 0.0,
            })
        return out


def _shape(q: Query, funnel: Funnel, rows: list[tuple[Any, ...]],
           goals: Mapping[str, GoalSpec] | None) -> FunnelAnswer:
    totals = next(([int(v or 0) for v in r[2:]] for r in rows if r[0]), [0] * len(funnel.steps))
    dim = check_breakdown(q)
    groups = [(r[1], [int(v or 0) for v in r[2:]]) for r in rows if not r[0]] if dim is not None else None
    return FunnelAnswer(q, funnel, totals, dim, groups, goals_of_steps(funnel, goals))


def run_funnel_sync(q: Query, funnel: Funnel, warehouse: SyncWarehouse,
                    goals: Mapping[str, GoalSpec] | None = None) -> FunnelAnswer:
    """Answer ``q`` (range, filters, optional breakdown) for ``funnel`` on a blocking warehouse;
    ``goals``: the site's goals by id, for goal steps."""
    sql = funnel_sql(q, funnel, goals)
    return _shape(q, funnel, warehouse.query_sync(sql.text, sql.params).rows, goals)


async def run_funnel(q: Query, funnel: Funnel, warehouse: AsyncWarehouse,
                     goals: Mapping[str, GoalSpec] | None = None) -> FunnelAnswer:
    """Answer ``q`` for ``funnel`` through an async warehouse (``WarehouseClient``)."""
    sql = funnel_sql(q, funnel, goals)
    return _shape(q, funnel, (await warehouse.query(sql.text, sql.params)).rows, goals)
