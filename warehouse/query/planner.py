"""The table decider: pre-aggregates when they hold exactly the answer, fact tables otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from warehouse.query.facts import fact_sql
from warehouse.query.model import Query
from warehouse.query.preaggregates import coverage, preaggregate_sql
from warehouse.query.sql import SQL

PATHS = ("preaggregate", "facts")


@dataclass(frozen=True)
class Plan:
    """Which tables answer a query, the SQL, and why that path was taken."""

    path: str  # "preaggregate" | "facts"
    sql: SQL
    reason: str


def plan(q: Query, force: str | None = None) -> Plan:
    """Plan ``q``; ``force`` (``"facts"`` or ``"preaggregate"``) pins the path, for tests and
    benchmarks. Forcing the pre-aggregates for a question they do not cover is a ``ValueError``."""
    if force not in (None, *PATHS):
        raise ValueError(f"unknown path {force!r}")
    gap = coverage(q)
    if force == "facts" or (force is None and gap is not None):
        return Plan("facts", fact_sql(q), gap or "forced")
    if gap is not None:
        raise ValueError(f"the pre-aggregates do not cover this query: {gap}")
    return Plan("preaggregate", preaggregate_sql(q), "covered by pre-aggregates")
