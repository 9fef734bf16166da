"""A brute-force funnel count over generated traffic, sharing nothing with ``warehouse.query.funnels``.

It has its own page-pattern matcher, finds the deepest step by trying every increasing sequence of
events (not greedily), and takes visits, their attributes and the filters' meaning from the
generator's truth.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from tests.generator import Traffic


def page_matches(pattern: str, path: str) -> bool:
    """``*`` is any run of characters but ``/``; ``**`` any run at all; ``/**/`` also a single ``/``."""
    if not pattern:
        return not path
    if pattern.startswith("/**/") and path.startswith("/") and page_matches(pattern[3:], path):
        return True
    if pattern.startswith("**"):
        return any(page_matches(pattern[2:], path[i:]) for i in range(len(path) + 1))
    if pattern.startswith("*"):
        stop = path.find("/") if "/" in path else len(path)
        return any(page_matches(pattern[1:], path[i:]) for i in range(stop + 1))
    return bool(path) and path[0] == pattern[0] and page_matches(pattern[1:], path[1:])


def step_matches(step: dict[str, Any], event: dict[str, Any]) -> bool:
    """``{"page": pattern}``, ``{"event": name}``, or an event with property conditions
    ``{"event": name, "props": {key: value}}`` (what a goal with a property condition means)."""
    if "event" in step:
        return (event["type"] == "event" and event["name"] == step["event"]
                and all(event.get(f"_prop_{k}") == v for k, v in step.get("props", {}).items()))
    return event["type"] == "pageview" and page_matches(step["page"], event["pathname"])


def deepest(events: list[dict[str, Any]], steps: list[dict[str, Any]], start: int) -> int:
    """The most steps matched by events ``start, …`` in strictly increasing positions, the event at
    ``start`` matching step 1 — by trying every sequence (memoised), not greedily."""

    @cache
    def depth(pos: int, step: int) -> int:  # event ``pos`` matched ``step``; how many more?
        if step + 1 == len(steps):
            return 1
        return 1 + max((depth(q, step + 1) for q in range(pos + 1, len(events))
                        if step_matches(steps[step + 1], events[q])), default=0)

    return depth(start, 0)


def brute_force(traffic: Traffic, site: str, days_range: tuple[str, str], steps: list[dict[str, Any]],
                per: str = "visit", days: int = 7, keep_visit: Any = None, by: str | None = None,
                ) -> dict[Any, list[int]]:
    """Visitors reaching each step, per breakdown value (``None`` for the total), over the site-local
    days ``days_range`` (first and last, inclusive). ``keep_visit(visit, its events in range)``
    says which visits the filters keep; ``by`` is a visit column (the attempt's visit) or an event
    column (the event that matched step 1)."""
    tz = ZoneInfo(traffic.spec.timezones[site])
    start = datetime.fromisoformat(days_range[0]).replace(tzinfo=tz).astimezone(UTC)
    end = (datetime.fromisoformat(days_range[1]).replace(tzinfo=tz) + timedelta(days=1)).astimezone(UTC)
    visits = {v["visit_id"]: v for v in traffic.visits.filter(pl.col("site_id") == site).to_dicts()}
    events = (traffic.events.filter((pl.col("site_id") == site) & (pl.col("ts") >= start) & (pl.col("ts") < end))
              .unique("event_id").sort("ts", "event_id").to_dicts())
    chosen = {vid for vid, v in visits.items()
              if keep_visit is None or keep_visit(v, [e for e in events if e["visit_id"] == vid])}
    events = [e for e in events if e["visit_id"] in chosen and e["type"] in ("pageview", "event")]
    units: dict[Any, list[dict[str, Any]]] = {}
    for e in events:
        units.setdefault(e["visit_id"] if per == "visit" else e["visitor_key"], []).append(e)
    reached: dict[Any, dict[Any, int]] = {}  # group → visitor → most steps
    for unit in units.values():
        attempts = []
        for i, e in enumerate(unit):
            if step_matches(steps[0], e):
                window = unit if per == "visit" else [x for x in unit if x["ts"] <= e["ts"] + timedelta(days=days)]
                attempts.append((deepest(window, steps, i), i))
        if not attempts:
            continue
        best = max(attempts, key=lambda a: (a[0], -a[1]))
        first = unit[best[1]] if per == "visitor" else next(e for e in unit if step_matches(steps[0], e))
        group = None if by is None else (visits[first["visit_id"]][by] if by in visits[first["visit_id"]]
                                         else first[by])
        if per == "visit":  # a visit's first step-1 event starts its attempt; every visit counts
            best = (max(a[0] for a in attempts), 0)
        seen = reached.setdefault(group, {})
        seen[first["visitor_key"]] = max(seen.get(first["visitor_key"], 0), best[0])
    return {g: [sum(1 for n in seen.values() if n >= k) for k in range(1, len(steps) + 1)]
            for g, seen in reached.items()}
