"""The table decider: pre-aggregates when they hold exactly the answer; else, under visit-attribute
filters, the visit rows (a total or time series) or the daily page visitors (a breakdown by page over
whole days); else the fact tables."""

from __future__ import annotations

from dataclasses import dataclass

from warehouse.query.facts import fact_sql
from warehouse.query.model import Query
from warehouse.query.preaggregates import coverage, preaggregate_sql
from warehouse.query.sql import SQL
from warehouse.query.visitor_days import coverage as visitor_days_coverage
from warehouse.query.visitor_days import visitor_days_sql
from warehouse.query.visits import coverage as visit_coverage
from warehouse.query.visits import visit_sql

PATHS = ("preaggregate", "visits", "facts")


@dataclass(frozen=True)
class Plan:
    """Which tables answer a query, the SQL, and why that path was taken."""

    path: str  # "preaggregate" | "visits" | "facts"
    sql: SQL
    reason: str


def plan(q: Query, force: str | None = None) -> Plan:
    """Plan ``q``; ``force`` (one of ``PATHS``) pins the path, for tests and benchmarks. Forcing a
    path that does not cover the question is a ``ValueError``."""
    if force not in (None, *PATHS):
        raise ValueError(f"unknown path {force!r}")
    gap = coverage(q)
    if force == "preaggregate" or (force is None and gap is None):
        if gap is not None:
            raise ValueError(f"the pre-aggregates do not cover this query: {gap}")
        return Plan("preaggregate", preaggregate_sql(q), "covered by pre-aggregates")
    visit_gap = visit_coverage(q)
    days_gap = visitor_days_coverage(q)
    if force == "visits" or (force is None and (visit_gap is None or days_gap is None)):
        if visit_gap is None:
            return Plan("visits", visit_sql(q), "visit-attribute filter: matching visits, boundary visits' events")
        if days_gap is None:
            return Plan("visits", visitor_days_sql(q),
                        "visit-attribute filter by page: whole visitors' days, mixed visitors' pageviews")
        raise ValueError(f"the visit path does not cover this query: {visit_gap}; {days_gap}")
    return Plan("facts", fact_sql(q), gap or "forced")
