"""Goals in the query engine, on generated traffic loaded by the real loader, against brute-force
counts in Python: page goals with patterns, event goals narrowed by a property, the ``goal``
dimension with conversion rates, revenue converted with the site's rates, and sources under a goal
filter. The pattern semantics come from ``patterns.matches`` (pinned by its own tests); everything
else is counted here from the generator's events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import polars as pl
import pytest

from tests.generator import REVENUE_EVENT, Traffic, TrafficSpec, generate
from tests.loaded import load_traffic
from warehouse.database import connect
from warehouse.load import load_pending
from warehouse.query.model import Currency, GoalSpec, QueryError, goal_name, parse_query
from warehouse.query.patterns import matches
from warehouse.query.runner import Answer, OnConnection, run_with
from warehouse.tables import EVENTS

SPEC = TrafficSpec(visitors=900, days=3, seed=23, loads=2)
SITE = "site-b"  # Europe/Berlin: local days are not UTC days
ZONE = SPEC.timezones[SITE]
NOW = datetime.fromisoformat("2026-03-10T12:00:00+00:00")
RANGE = ["2026-03-01", "2026-03-02"]


def _goal(kind: str, value: str, key: str | None = None, prop: str | None = None, revenue: bool = False) -> GoalSpec:
    return GoalSpec(goal_name(kind, value, key, prop), kind, value, key, prop, revenue)


GOALS = [
    _goal("page", "/page/1*"),  # /page/1, /page/10 … /page/19
    _goal("page", "/page/**"),
    _goal("page", "/pricing"),
    _goal("event", REVENUE_EVENT, revenue=True),
    _goal("event", REVENUE_EVENT, "plan", "pro", revenue=True),
    _goal("event", "Play"),
    _goal("page", "/nothing/*"),  # matches nothing: no row
]
# EUR is the site's; JPY has no rate, so its amounts are unconverted.
CURRENCY = Currency("EUR", (("USD", 0.92), ("GBP", 1.17)))
RATES = {"EUR": 1.0, **dict(CURRENCY.rates)}


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


@pytest.fixture(scope="module")
def warehouse(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(load_traffic(traffic, SPEC, tmp_path_factory.mktemp("goals")), read_only=True)
    yield con
    con.close()


def ask(con: duckdb.DuckDBPyConnection, body: dict[str, Any], force: str | None = None) -> Answer:
    q = parse_query(SITE, ZONE, {"date_range": RANGE, **body}, goals=GOALS, now=NOW, currency=CURRENCY)

    return run_with(q, OnConnection(con), force)


# --- brute force ------------------------------------------------------------------------------


def _local(ts: pl.Expr) -> pl.Expr:
    return ts.dt.convert_time_zone(ZONE).dt.replace_time_zone(None)


def _in_range(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    lo, hi = datetime.fromisoformat(RANGE[0]), datetime.fromisoformat("2026-03-03")
    local = _local(pl.col(column))
    return frame.filter((local >= lo) & (local < hi))


def _events(traffic: Traffic) -> list[dict[str, Any]]:
    return _in_range(traffic.events.filter(pl.col("site_id") == SITE), "ts").to_dicts()


def completes(goal: GoalSpec, e: dict[str, Any]) -> bool:
    if goal.kind == "page":
        return e["type"] == "pageview" and matches(goal.value, e["pathname"])
    if e["type"] != "event" or e["name"] != goal.value:
        return False
    return goal.prop_key is None or e[f"_prop_{goal.prop_key}"] == goal.prop_value


def converted(e: dict[str, Any]) -> float | None:
    if e["type"] != "event" or e["revenue_amount"] is None or e["revenue_currency"] not in RATES:
        return None
    return float(e["revenue_amount"]) * RATES[e["revenue_currency"]]


def unconverted(e: dict[str, Any]) -> bool:
    return e["type"] == "event" and e["revenue_amount"] is not None and e["revenue_currency"] not in RATES


# --- tests ----------------------------------------------------------------------------------


def test_the_generated_traffic_exercises_every_goal(traffic: Traffic) -> None:
    events = _events(traffic)
    for goal in GOALS[:-1]:
        assert sum(completes(goal, e) for e in events) > 5, goal
    assert sum(unconverted(e) for e in events) > 0
    assert {e["revenue_currency"] for e in events if converted(e) is not None} == {"EUR", "USD", "GBP"}


def test_breakdown_by_goal_equals_brute_force(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic) -> None:
    events = _events(traffic)
    everyone = len({e["visitor_key"] for e in events})
    metrics = ["visitors", "events", "conversion_rate", "total_revenue", "average_revenue", "revenue_unconverted"]
    answer = ask(warehouse, {"metrics": metrics, "dimensions": ["goal"]})
    assert answer.path == "facts"
    rows = {r["goal"]: r for r in answer.rows}
    expected = {}
    for goal in GOALS:
        done = [e for e in events if completes(goal, e)]
        if not done:
            continue
        values = [v for e in done if (v := converted(e)) is not None]
        visitors = len({e["visitor_key"] for e in done})
        expected[goal.name] = {
            "visitors": visitors, "events": len(done),
            "conversion_rate": pytest.approx(100 * visitors / everyone, abs=0.006),
            "total_revenue": pytest.approx(sum(values), abs=0.006),
            "average_revenue": pytest.approx(sum(values) / len(values) if values else 0, abs=0.006),
            "revenue_unconverted": sum(unconverted(e) for e in done),
        }
    assert set(rows) == set(expected)
    for name, want in expected.items():
        assert {m: rows[name][m] for m in metrics} == want, name
    # ordered by the first metric, largest first
    assert [r["visitors"] for r in answer.rows] == sorted((r["visitors"] for r in answer.rows), reverse=True)


@pytest.mark.parametrize("goal", GOALS[:-1], ids=lambda g: g.name)
def test_a_goal_filter_counts_its_conversions(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic,
                                              goal: GoalSpec) -> None:
    events = _events(traffic)
    done = [e for e in events if completes(goal, e)]
    visitors = len({e["visitor_key"] for e in done})
    row = ask(warehouse, {"metrics": ["visitors", "conversion_rate", "total_revenue"],
                          "filters": [["is", "goal", [goal.name]]]}).rows[0]
    assert row["visitors"] == visitors
    assert row["conversion_rate"] == pytest.approx(100 * visitors / len({e["visitor_key"] for e in events}), abs=0.006)
    assert row["total_revenue"] == pytest.approx(sum(v for e in done if (v := converted(e)) is not None), abs=0.006)


def test_sources_by_revenue_under_a_goal_filter(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic) -> None:
    """By a visit attribute every metric is over the visits that started in the range: visitors
    with such a visit that completed the goal, its events' revenue, over all such visitors."""
    goal = GOALS[4]  # Signup (plan = pro)
    visits = _in_range(traffic.visits.filter(pl.col("site_id") == SITE), "started_at")
    events = traffic.events.filter(pl.col("site_id") == SITE).to_dicts()
    by_visit: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_visit.setdefault(e["visit_id"], []).append(e)
    everyone: dict[str, set[int]] = {}
    done: dict[str, set[int]] = {}
    revenue: dict[str, float] = {}
    for v in visits.to_dicts():
        everyone.setdefault(v["source"], set()).add(v["visitor_key"])
        hits = [e for e in by_visit[v["visit_id"]] if completes(goal, e)]
        if hits:
            done.setdefault(v["source"], set()).add(v["visitor_key"])
            revenue[v["source"]] = revenue.get(v["source"], 0.0) + sum(x for e in hits if (x := converted(e)) is not None)
    answer = ask(warehouse, {"metrics": ["visitors", "conversion_rate", "total_revenue"], "dimensions": ["source"],
                             "filters": [["is", "goal", [goal.name]]], "order_by": [["total_revenue", "desc"]]})
    got = {r["source"]: (r["visitors"], r["conversion_rate"], r["total_revenue"]) for r in answer.rows}
    assert got == {s: (len(done[s]), pytest.approx(100 * len(done[s]) / len(everyone[s]), abs=0.006),
                       pytest.approx(revenue.get(s, 0.0), abs=0.006)) for s in done}
    assert [r["total_revenue"] for r in answer.rows] == sorted(got[s][2] for s in got)[::-1]


def test_goal_by_time_and_by_goal_and_page(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic) -> None:
    events = _events(traffic)
    goal = GOALS[0]
    answer = ask(warehouse, {"metrics": ["events"], "dimensions": ["goal", "page"],
                             "filters": [["is", "goal", [goal.name]]]})
    counts: dict[str, int] = {}
    for e in events:
        if completes(goal, e):
            counts[e["pathname"]] = counts.get(e["pathname"], 0) + 1
    assert {r["page"]: r["events"] for r in answer.rows} == counts
    assert {r["goal"] for r in answer.rows} == {goal.name}  # a filter narrows the dimension too


def test_legacy_goal_names_still_filter(warehouse: duckdb.DuckDBPyConnection) -> None:
    by_name = ask(warehouse, {"metrics": ["visitors"], "filters": [["is", "goal", ["Visit /pricing"]]]}).rows
    assert by_name == ask(warehouse, {"metrics": ["visitors"], "filters": [["is", "goal", ["/pricing"]]]}).rows
    assert by_name == ask(warehouse, {"metrics": ["visitors"], "filters": [["is", "goal", ["page:/pricing"]]]}).rows


def test_revenue_needs_a_currency_and_goal_names_are_checked() -> None:
    with pytest.raises(QueryError, match="currency"):
        parse_query(SITE, ZONE, {"metrics": ["total_revenue"]}, goals=GOALS, now=NOW)
    with pytest.raises(QueryError, match="not a goal"):
        parse_query(SITE, ZONE, {"filters": [["is", "goal", ["Signup (plan = free)"]]]}, goals=GOALS, now=NOW)
    q = parse_query(SITE, ZONE, {"metrics": ["conversion_rate"], "dimensions": ["goal"]}, goals=GOALS, now=NOW)
    assert q.dimensions == ("goal",)


def test_an_older_warehouse_gains_revenue_and_loads_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A warehouse from before revenue (the upgrade fixture) gets the columns at the end of
    ``events`` and loads raw files that carry revenue, and raw files that lack the columns."""
    import shutil
    from pathlib import Path

    root = tmp_path_factory.mktemp("old")
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "datadir-v1" / "data" / "warehouse.duckdb", root / "wh.duckdb")
    traffic = generate(TrafficSpec(visitors=60, days=1, seed=3, loads=1))
    traffic.write_raw(root / "raw")
    con = connect(root / "wh.duckdb")
    try:
        columns = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns"
                                             " WHERE table_name = 'events' ORDER BY ordinal_position").fetchall()]
        assert columns == list(EVENTS.column_names)  # the migrations append in declaration order
        load_pending(con, root / "raw", SPEC.timezones)
        stored = con.execute("SELECT event_id, revenue_amount, revenue_currency FROM events"
                             " WHERE revenue_amount IS NOT NULL ORDER BY event_id").fetchall()
    finally:
        con.close()
    want = traffic.events.filter(pl.col("revenue_amount").is_not_null()).sort("event_id")
    assert stored == list(zip(want["event_id"], want["revenue_amount"], want["revenue_currency"], strict=True))
    assert stored
