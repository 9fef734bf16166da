"""A report's numbers, asked of the one query engine (``warehouse.query``), never of SQL here.

``compose`` runs four questions for a period — the headline metrics, the same for the period
before (for the change), the top pages and the top sources — plus each goal's conversions, through
anything with ``query_sync`` (the warehouse process's ``Warehouse``, a ``WarehouseClient`` or a
``LocalWarehouse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from littlestats.controlplane import Site
from notify.periods import Period
from warehouse.query import Filter, Query, parse_query, run_sync
from warehouse.query.model import GoalSpec
from warehouse.query.runner import SyncWarehouse

HEADLINE = ("visitors", "visits", "views", "bounce_rate", "visit_duration")
#: Rates change by percentage points; counts and durations by a percentage.
POINT_CHANGE = {"bounce_rate"}
TOP = 5


@dataclass
class Report:
    """What a report says about one site and period."""

    site: Site
    period: Period
    totals: dict[str, float]
    previous: dict[str, float]
    top_pages: list[dict[str, Any]] = field(default_factory=list)  # {page, visitors, views}
    top_sources: list[dict[str, Any]] = field(default_factory=list)  # {source, visitors}
    goals: list[dict[str, Any]] = field(default_factory=list)  # {goal, conversions, visitors}

    def change(self, metric: str) -> float | None:
        """The change against the previous period: percentage points for rates, else percent
        (``None`` when the previous period had none)."""
        now, before = float(self.totals[metric]), float(self.previous[metric])
        if metric in POINT_CHANGE:
            return round(now - before, 1)
        if not before:
            return None
        return round(100.0 * (now - before) / before, 1)

    def public(self) -> dict[str, Any]:
        """The report as JSON (``--dry-run``, the API's test send)."""
        return {"siteId": self.site.id, "domain": self.site.domain, "frequency": self.period.frequency,
                "period": {"start": self.period.start.isoformat(), "end": self.period.last_day.isoformat(),
                           "timezone": self.site.timezone},
                "totals": self.totals, "previous": self.previous,
                "change": {m: self.change(m) for m in HEADLINE},
                "topPages": self.top_pages, "topSources": self.top_sources, "goals": self.goals}


def period_query(site: Site, period: Period, goals: list[GoalSpec], **body: Any) -> Query:
    """A query over the whole site-local days of ``period``."""
    return parse_query(site.id, site.timezone,
                       {"date_range": [period.start.isoformat(), period.last_day.isoformat()], **body},
                       goals=goals)


def compose(site: Site, period: Period, goals: list[GoalSpec], warehouse: SyncWarehouse) -> Report:
    """Ask the query engine everything a report shows."""

    def headline(p: Period) -> dict[str, float]:
        rows = run_sync(period_query(site, p, goals, metrics=list(HEADLINE)), warehouse).rows
        return {m: rows[0][m] if rows else 0 for m in HEADLINE}

    pages = run_sync(period_query(site, period, goals, metrics=["visitors", "views"], dimensions=["page"],
                                  order_by=[["visitors", "desc"], ["page", "asc"]], limit=TOP), warehouse)
    sources = run_sync(period_query(site, period, goals, metrics=["visitors"], dimensions=["source"],
                                    order_by=[["visitors", "desc"], ["source", "asc"]], limit=TOP), warehouse)
    report = Report(site, period, headline(period), headline(period.previous()),
                    [{"page": r["page"], "visitors": r["visitors"], "views": r["views"]} for r in pages.rows],
                    [{"source": r["source"], "visitors": r["visitors"]} for r in sources.rows])
    base = period_query(site, period, goals, metrics=["visitors", "events", "views"])
    for goal in goals:
        q = replace(base, filters=(Filter("is", "goal", (goal.name,)),))
        rows = run_sync(q, warehouse).rows
        row = rows[0] if rows else {"visitors": 0, "events": 0, "views": 0}
        report.goals.append({"goal": goal.name, "kind": goal.kind, "visitors": row["visitors"],
                             "conversions": row["events"] if goal.kind == "event" else row["views"]})
    return report
