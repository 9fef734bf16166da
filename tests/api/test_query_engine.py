"""The query engine on generated traffic loaded by the real loader: both paths agree, and the
numbers equal the generator's ground truth."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from tests.generator import Traffic, TrafficSpec, generate, visits_per_day_truth
from tests.loaded import load_traffic
from warehouse.database import connect
from warehouse.load import load_pending
from warehouse.query.model import parse_query
from warehouse.query.planner import plan
from warehouse.query.runner import Answer, OnConnection, run_with

SPEC = TrafficSpec(visitors=400, days=4, seed=11, loads=3)
NOW = datetime(2026, 3, 6, 12, tzinfo=UTC)
RANGE = ["2026-03-01", "2026-03-04"]
GOALS = [("event", "Signup"), ("page", "/pricing")]


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


@pytest.fixture(scope="module")
def warehouse(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(load_traffic(traffic, SPEC, tmp_path_factory.mktemp("engine")), read_only=True)
    yield con
    con.close()


def ask(con: duckdb.DuckDBPyConnection, site: str, body: dict[str, Any], force: str | None = None) -> Answer:
    q = parse_query(site, SPEC.timezones[site], body, goals=GOALS, now=NOW)

    return run_with(q, OnConnection(con), force)


ALL = ["visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit"]
SESSION = ["visitors", "visits", "views", "bounce_rate", "visit_duration", "views_per_visit"]
COVERED = [
    {"metrics": ALL},
    {"metrics": ALL, "dimensions": ["time:day"]},
    {"metrics": ALL, "dimensions": ["time:hour"]},
    {"metrics": ALL, "dimensions": ["time:week"]},
    {"metrics": ALL, "dimensions": ["time:month"]},
    *({"metrics": SESSION, "dimensions": [d]} for d in (
        "source", "referrer", "referrer_domain", "utm_source", "utm_medium", "utm_campaign", "country",
        "device", "browser", "os", "language", "screen", "entry_page", "exit_page")),
    {"metrics": ["visits", "views", "bounce_rate"], "dimensions": ["browser_version"]},
    {"metrics": SESSION, "dimensions": ["time:day", "country"]},
    {"metrics": SESSION, "dimensions": ["time:hour", "source"]},
    {"metrics": ["visitors", "views"], "dimensions": ["page"]},
    {"metrics": ["visitors", "views"], "dimensions": ["page"], "q": "page/1", "limit": 5},
    {"metrics": ["visitors", "events"], "dimensions": ["event"]},
    {"metrics": ["visitors", "events"], "dimensions": ["time:day", "event"]},
    {"metrics": ["events"], "dimensions": ["props:plan"]},
    {"metrics": ["visitors"], "date_range": "7d"},
    {"metrics": ["visitors", "visits"], "date_range": ["2026-03-02T05:00:00Z", "2026-03-03T17:00:00Z"],
     "dimensions": ["time:hour"]},
    # filters on the breakdown's own visit attribute: the unfiltered rows whose value passes
    {"metrics": SESSION, "dimensions": ["country"], "filters": [["is", "country", ["DE"]]]},
    {"metrics": SESSION, "dimensions": ["country"], "filters": [["is_not", "country", ["DE", "FR"]]]},
    {"metrics": SESSION, "dimensions": ["source"], "filters": [["contains", "source", ["o"]],
                                                               ["not_contains", "source", ["direct"]]]},
    {"metrics": SESSION, "dimensions": ["time:day", "device"], "filters": [["is", "device", ["mobile", "tablet"]]]},
]


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
@pytest.mark.parametrize("body", COVERED, ids=lambda b: "-".join(b.get("dimensions", ["total"])))
def test_preaggregates_and_facts_agree(warehouse: duckdb.DuckDBPyConnection, site: str, body: dict[str, Any]) -> None:
    body = {"date_range": RANGE, **body}
    q = parse_query(site, SPEC.timezones[site], body, goals=GOALS, now=NOW)
    assert plan(q).path == "preaggregate", plan(q).reason
    facts = ask(warehouse, site, body, force="facts")
    pre = ask(warehouse, site, body)
    assert pre.path == "preaggregate"
    assert facts.rows, "the question should have an answer"
    for f, p in itertools.zip_longest(facts.rows, pre.rows):
        assert f == p


@pytest.mark.parametrize(("body", "path"), [
    ({"metrics": ["visits", "bounce_rate"], "dimensions": ["page"]}, "facts"),
    ({"metrics": ["visitors"], "filters": [["is", "country", ["DE"]]]}, "visits"),
    ({"metrics": ["visitors"], "dimensions": ["page"], "filters": [["is", "country", ["DE"]]]}, "visits"),
    ({"metrics": ["visitors", "visits"], "dimensions": ["page"], "filters": [["is", "country", ["DE"]]]}, "facts"),
    ({"metrics": ["visitors"], "dimensions": ["page"], "filters": [["is", "country", ["DE"]]],
      "date_range": ["2026-03-01T00:30:00Z", "2026-03-02T00:00:00Z"]}, "facts"),
    ({"metrics": ["visitors"], "dimensions": ["time:day", "page"], "filters": [["is", "country", ["DE"]]]}, "facts"),
    ({"metrics": ["visitors", "events"], "dimensions": ["event"], "filters": [["is", "country", ["DE"]]]}, "facts"),
    ({"metrics": ["visitors"], "filters": [["is", "country", ["DE"]], ["is", "page", ["/"]]]}, "facts"),
    ({"metrics": ["visitors"], "date_range": ["2026-03-01T00:30:00Z", "2026-03-02T00:00:00Z"]}, "facts"),
    ({"metrics": ["time_on_page"], "dimensions": ["page"]}, "facts"),
    ({"metrics": SESSION, "dimensions": ["source"], "filters": [["is", "country", ["DE"]]]}, "facts"),
    ({"metrics": SESSION, "dimensions": ["country"], "filters": [["is", "country", ["DE"]], ["is", "device", ["mobile"]]]},
     "facts"),
    ({"metrics": ["visitors", "views"], "dimensions": ["page"], "filters": [["is", "page", ["/"]]]}, "facts"),
])
def test_planner_falls_back_when_preaggregates_do_not_cover(body: dict[str, Any], path: str) -> None:
    q = parse_query("site-a", "UTC", {"date_range": RANGE, **body}, goals=GOALS, now=NOW)
    assert plan(q).path == path


VISIT_FILTERS = [
    [["is_not", "country", ["XX"]]],  # every visit, so every straddling visit counts
    [["is", "country", ["DE"]]],
    [["is_not", "device", ["mobile"]], ["contains", "source", ["o"]]],
]
#: whole local days, and edges cut through the middle of the day (visits straddle them)
VISIT_RANGES = [RANGE, ["2026-03-01T12:37:00Z", "2026-03-03T02:11:00Z"], ["2026-03-02T14:07:00Z", "2026-03-02T14:37:00Z"]]
VISIT_BODIES = [
    {"metrics": ALL},
    {"metrics": ["visitors", "views"]},
    {"metrics": ["visits", "bounce_rate"]},
    *({"metrics": ALL, "dimensions": [f"time:{g}"]} for g in ("hour", "day", "week", "month")),
    # visitors per bucket from the visit rows and daily_visitors (whole days), no events read
    *({"metrics": ["visitors"], "dimensions": [f"time:{g}"]} for g in ("hour", "day", "week", "month")),
    {"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"], "dimensions": ["time:day"]},
]


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
@pytest.mark.parametrize("date_range", VISIT_RANGES, ids=["days", "cut", "30min"])
@pytest.mark.parametrize("filters", VISIT_FILTERS, ids=["any-country", "country", "device-source"])
@pytest.mark.parametrize("body", VISIT_BODIES, ids=lambda b: "-".join(b.get("dimensions", b["metrics"][:2])))
def test_visit_path_and_facts_agree(warehouse: duckdb.DuckDBPyConnection, site: str, date_range: list[str],
                                    filters: list[Any], body: dict[str, Any]) -> None:
    """Under visit-attribute filters, totals and time series come from the visit rows, with only
    the visits that straddle a bucket boundary or a range edge counted event by event: the numbers
    equal the fact path's (which joins every event of the range to the matching visits)."""
    body = {**body, "date_range": date_range, "filters": filters}
    visits = ask(warehouse, site, body)
    assert visits.path == "visits", visits.reason
    facts = ask(warehouse, site, body, force="facts")
    assert facts.path == "facts"
    assert visits.rows == facts.rows


BREAKDOWN_BODIES = [
    {"metrics": ["visitors", "views"], "dimensions": ["page"]},
    {"metrics": ["views"], "dimensions": ["page"], "q": "page/1", "limit": 3},
    {"metrics": ["views", "visitors"], "dimensions": ["page"], "order_by": [["views", "asc"]], "limit": 2,
     "offset": 1},
]


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
@pytest.mark.parametrize("date_range", [RANGE, ["2026-03-02", "2026-03-03"], "7d"], ids=["4d", "2d", "7d"])
@pytest.mark.parametrize("filters", VISIT_FILTERS, ids=["any-country", "country", "device-source"])
@pytest.mark.parametrize("body", BREAKDOWN_BODIES, ids=lambda b: "-".join([*b["dimensions"], *b["metrics"]]))
def test_visitor_days_breakdown_and_facts_agree(warehouse: duckdb.DuckDBPyConnection, site: str,
                                                date_range: Any, filters: list[Any], body: dict[str, Any]) -> None:
    """By page under visit-attribute filters over whole days, whole visitors come from
    ``daily_page_visitors`` and mixed visitors' events are joined to their matching visits: the
    numbers equal the fact path's (which joins every event of the range)."""
    body = {**body, "date_range": date_range, "filters": filters}
    days = ask(warehouse, site, body)
    assert days.path == "visits", days.reason
    assert "whole visitors" in days.reason
    facts = ask(warehouse, site, body, force="facts")
    assert facts.rows, "the question should have an answer"
    assert days.rows == facts.rows


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_the_breakdown_agreement_data_has_whole_and_mixed_visitors(
    warehouse: duckdb.DuckDBPyConnection, site: str
) -> None:
    """Both parts of the page breakdown from the daily table are exercised: under device-source some visitors
    have matching and non-matching visits in the range (mixed), others only matching ones."""
    rows = warehouse.execute(
        "SELECT count(*) FILTER (WHERE m AND n), count(*) FILTER (WHERE m AND NOT n) FROM ("
        " SELECT visitor_key, bool_or(ok) AS m, bool_or(NOT ok) AS n FROM ("
        "  SELECT visitor_key, coalesce(device <> 'mobile', true) AND coalesce(contains(lower(source), 'o'), false) AS ok"
        "  FROM sessions WHERE site_id = $s AND pageviews > 0) GROUP BY visitor_key)",
        {"s": site}).fetchone()
    assert rows is not None and rows[0] > 0 and rows[1] > 0, rows


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_the_agreement_data_has_visits_straddling_every_kind_of_boundary(
    warehouse: duckdb.DuckDBPyConnection, site: str
) -> None:
    """The visit-path agreement test is only as good as its data: visits that cross a local
    midnight (in the site's zone), and visits that straddle each edge of the cut range."""
    tz = SPEC.timezones[site]
    midnight = warehouse.execute(
        "SELECT count(*) FROM sessions WHERE site_id = $s"
        " AND CAST(timezone($tz, started_at) AS DATE) <> CAST(timezone($tz, ended_at) AS DATE)",
        {"s": site, "tz": tz}).fetchone()
    assert midnight is not None and midnight[0] > 0
    for edge in (*VISIT_RANGES[1], *VISIT_RANGES[2]):
        crossing = warehouse.execute(
            "SELECT count(*) FROM sessions WHERE site_id = $s AND started_at < $t AND ended_at >= $t",
            {"s": site, "t": datetime.fromisoformat(edge)}).fetchone()
        assert crossing is not None and crossing[0] > 0, edge


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_visit_filtered_time_series_equals_truth(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str) -> None:
    """country==DE by local day: a visit crossing midnight counts its views, and its visitor, on
    each day it had an event, and its visit on the day it started."""
    zone = SPEC.timezones[site]
    de = traffic.visits.filter((pl.col("site_id") == site) & (pl.col("country") == "DE"))
    e = _truth_events(traffic, site).join(de.select("visit_id"), on="visit_id", how="semi")
    day = pl.col("ts").dt.convert_time_zone(zone).dt.date().alias("day")
    views = dict(e.filter(pl.col("type") == "pageview").group_by(day).len().iter_rows())
    visitors = dict(e.group_by(day).agg(pl.col("visitor_key").n_unique()).iter_rows())
    v = _truth_visits(traffic, site).join(de.select("visit_id"), on="visit_id", how="semi")
    visits = dict(v.group_by(pl.col("started_at").dt.convert_time_zone(zone).dt.date()).len().iter_rows())
    answer = ask(warehouse, site, {"metrics": ["visitors", "visits", "views"], "dimensions": ["time:day"],
                                   "date_range": RANGE, "filters": [["is", "country", ["DE"]]]})
    assert answer.path == "visits"
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    assert {*views, *visitors, *visits} <= set(days)
    assert [(r["time:day"], r["visitors"], r["visits"], r["views"]) for r in answer.rows] == [
        (d.isoformat(), visitors.get(d, 0), visits.get(d, 0), views.get(d, 0)) for d in days]


def _truth_visits(traffic: Traffic, site: str) -> pl.DataFrame:
    zone = SPEC.timezones[site]
    lo = datetime.fromisoformat(RANGE[0]).replace(tzinfo=None)
    hi = datetime.fromisoformat("2026-03-05")
    v = traffic.visits.filter(pl.col("site_id") == site)
    local = pl.col("started_at").dt.convert_time_zone(zone).dt.replace_time_zone(None)
    return v.filter((local >= lo) & (local < hi))


def _truth_events(traffic: Traffic, site: str) -> pl.DataFrame:
    zone = SPEC.timezones[site]
    lo = datetime.fromisoformat(RANGE[0])
    hi = datetime.fromisoformat("2026-03-05")
    e = traffic.events.filter(pl.col("site_id") == site)
    local = pl.col("ts").dt.convert_time_zone(zone).dt.replace_time_zone(None)
    return e.filter((local >= lo) & (local < hi))


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_aggregate_numbers_equal_ground_truth(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str) -> None:
    v, e = _truth_visits(traffic, site), _truth_events(traffic, site)
    for force in ("facts", None):
        row = ask(warehouse, site, {"metrics": ALL, "date_range": RANGE}, force).rows[0]
        assert row["visitors"] == e["visitor_key"].n_unique()
        assert row["views"] == e.filter(pl.col("type") == "pageview").height
        assert row["events"] == e.filter(pl.col("type") == "event").height
        assert row["visits"] == v.height
        assert row["bounce_rate"] == round(100 * v["is_bounce"].sum() / v.height, 1)
        assert row["visit_duration"] == round(v["duration_ms"].sum() / 1000 / v.height, 1)


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_daily_visitors_equal_truth_and_range_uniques_are_not_sums(
    warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str
) -> None:
    truth = visits_per_day_truth(traffic, SPEC.timezones).filter(pl.col("site_id") == site)
    expected = {d.isoformat(): n for d, n in truth.select("local_date", "visitors").iter_rows()}
    rows = ask(warehouse, site, {"metrics": ["visitors"], "date_range": RANGE, "dimensions": ["time:day"]}).rows
    assert {r["time:day"]: r["visitors"] for r in rows} == {d: expected.get(d, 0) for d in
                                                           (r["time:day"] for r in rows)}
    total = ask(warehouse, site, {"metrics": ["visitors"], "date_range": RANGE}).rows[0]["visitors"]
    assert total < sum(r["visitors"] for r in rows)  # returning visitors are counted once


def test_visitor_counts_equal_distinct_counts_over_every_range_and_bucket(warehouse: duckdb.DuckDBPyConnection) -> None:
    """``daily_visitor_counts`` (visitors as a sum over first days) equals count(DISTINCT) over the
    per-visitor daily tables for every range of whole days, every dimension and value, and every
    week / month bucket clipped to the range."""
    from warehouse.query.preaggregates import DAILY_SESSION_COLUMNS

    sources = {"total": ("daily_visitors", "''"), "page": ("daily_page_visitors", "pathname"),
               "event": ("daily_event_visitors", "event_name"),
               **{d: ("daily_session_visitors", d) for d in sorted(DAILY_SESSION_COLUMNS)}}
    days = [d for (d,) in warehouse.execute("SELECT DISTINCT local_date FROM daily_visitors ORDER BY 1").fetchall()]
    assert len(days) >= 4
    pairs = [(a, b) for i, a in enumerate(days) for b in days[i + 1:]] + [(days[0], days[-1] + (days[1] - days[0]))]
    for dim, (table, col) in sources.items():
        for d0, d1 in pairs:
            summed = warehouse.execute(
                "SELECT site_id, value, sum(visitors) FROM daily_visitor_counts WHERE dimension = $dim"
                " AND local_date >= $d0 AND local_date < $d1 AND (prev_date IS NULL OR prev_date < $d0)"
                " GROUP BY ALL ORDER BY ALL", {"dim": dim, "d0": d0, "d1": d1}).fetchall()
            distinct = warehouse.execute(
                f"SELECT site_id, CAST({col} AS VARCHAR), count(DISTINCT visitor_key) FROM {table}"  # noqa: S608
                " WHERE local_date >= $d0 AND local_date < $d1 GROUP BY ALL ORDER BY ALL",
                {"d0": d0, "d1": d1}).fetchall()
            assert summed == distinct, (dim, d0, d1)
        for gran in ("week", "month"):
            d0, d1 = days[1], days[-1]
            bucket = f"CAST(date_trunc('{gran}', local_date) AS DATE)"
            summed = warehouse.execute(
                f"SELECT site_id, {bucket}, value, sum(visitors) FROM daily_visitor_counts WHERE dimension = $dim"  # noqa: S608
                f" AND local_date >= $d0 AND local_date < $d1 AND (prev_date IS NULL OR prev_date < greatest({bucket}, $d0))"
                " GROUP BY ALL ORDER BY ALL", {"dim": dim, "d0": d0, "d1": d1}).fetchall()
            distinct = warehouse.execute(
                f"SELECT site_id, {bucket}, CAST({col} AS VARCHAR), count(DISTINCT visitor_key) FROM {table}"  # noqa: S608
                " WHERE local_date >= $d0 AND local_date < $d1 GROUP BY ALL ORDER BY ALL",
                {"d0": d0, "d1": d1}).fetchall()
            assert summed == distinct, (dim, gran)


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_source_breakdown_equals_truth(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str) -> None:
    v = _truth_visits(traffic, site)
    truth = {s: (n, k) for s, n, k in v.group_by("source").agg(
        pl.len(), pl.col("visitor_key").n_unique()).iter_rows()}
    for force in ("facts", None):
        rows = ask(warehouse, site, {"metrics": ["visits", "visitors"], "date_range": RANGE,
                                     "dimensions": ["source"]}, force).rows
        assert {r["source"]: (r["visits"], r["visitors"]) for r in rows} == truth


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_page_filter_keeps_metric_definitions(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str) -> None:
    """With page==/pricing: views are its pageviews; visits and bounce rate are over the visits with
    an event on it, computed exactly as without the filter (SPEC §10)."""
    v, e = _truth_visits(traffic, site), _truth_events(traffic, site)
    viewed = e.filter((pl.col("type") == "pageview") & (pl.col("pathname") == "/pricing"))
    on_page = traffic.events.filter(pl.col("pathname") == "/pricing")
    sessions = v.join(on_page.select("visit_id").unique(), on="visit_id", how="semi")
    row = ask(warehouse, site, {"metrics": ["visitors", "views", "visits", "bounce_rate"], "date_range": RANGE,
                                "filters": [["is", "page", ["/pricing"]]]}).rows[0]
    assert row["views"] == viewed.height
    assert row["visits"] == sessions.height
    assert row["bounce_rate"] == round(100 * sessions["is_bounce"].sum() / sessions.height, 1)
    assert row["visitors"] == e.filter(pl.col("pathname") == "/pricing")["visitor_key"].n_unique()


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
def test_conversion_rate_is_converted_over_all_visitors(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str) -> None:
    e = _truth_events(traffic, site)
    converted = e.filter((pl.col("type") == "event") & (pl.col("name") == "Signup"))["visitor_key"].n_unique()
    everyone = e["visitor_key"].n_unique()
    row = ask(warehouse, site, {"metrics": ["visitors", "conversion_rate"], "date_range": RANGE,
                                "filters": [["is", "goal", ["Signup"]]]}).rows[0]
    assert row["visitors"] == converted
    assert row["conversion_rate"] == round(100 * converted / everyone, 2)


def test_filters_and_breakdowns_of_every_kind_answer(warehouse: duckdb.DuckDBPyConnection) -> None:
    bodies = [
        {"metrics": ALL, "filters": [["contains", "page", ["page/1"]], ["is_not", "device", ["mobile"]]]},
        {"metrics": ["visitors", "time_on_page"], "dimensions": ["page"], "filters": [["is", "country", ["DE"]]]},
        {"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["page", "country"],
         "filters": [["is", "props:plan", ["pro"]]]},
        {"metrics": ["visitors", "conversion_rate"], "dimensions": ["source"], "filters": [["is", "goal", ["/pricing"]]]},
        {"metrics": ["visitors"], "dimensions": ["time:day"], "filters": [["not_contains", "source", ["oo"]]]},
        {"metrics": ["events"], "dimensions": ["props:plan"], "filters": [["is", "event", ["Signup"]]]},
    ]
    for body in bodies:
        rows = ask(warehouse, "site-b", {"date_range": RANGE, **body}).rows
        assert rows


@pytest.mark.parametrize("site", sorted(SPEC.timezones))
@pytest.mark.parametrize("date_range", [RANGE, VISIT_RANGES[1]], ids=["days", "cut"])
@pytest.mark.parametrize("filters", [[], *VISIT_FILTERS, [["is", "country", ["DE"]], ["is", "event", ["Signup"]]]],
                         ids=["none", "any-country", "country", "device-source", "country-event"])
def test_event_list_pages_through_the_matching_custom_events(
    warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, site: str, date_range: list[str], filters: list[Any]
) -> None:
    """The raw list, page by page with the cursor, is every custom event of the matching visits in
    the range, newest first — also when a visit filter bounds what it reads by the newest visits."""
    from warehouse.query import eventlist

    q = parse_query(site, SPEC.timezones[site], {"date_range": date_range, "filters": filters}, goals=GOALS, now=NOW)
    seen: list[str] = []
    cursor = None
    while True:
        sql = eventlist.event_list_sql(q, cursor, 3)
        rows = warehouse.execute(sql.text, sql.params).fetchall()
        props = eventlist.props_sql(site, rows[:3])
        items, next_cursor = eventlist.shape_page(
            rows, warehouse.execute(props.text, props.params).fetchall() if props else [], 3, q.date_range.zone)
        seen += [i["id"] for i in items]
        if next_cursor is None:
            break
        cursor = eventlist.decode_cursor(next_cursor)
    visits = traffic.visits.filter(pl.col("site_id") == site)
    for f in filters:
        column = pl.col(f[1])
        if f[1] == "country":
            visits = visits.filter(column.is_in(f[2]) if f[0] == "is" else column.is_null() | ~column.is_in(f[2]))
        elif f[1] == "device":
            visits = visits.filter(~column.is_in(f[2]))
        elif f[1] == "source":
            visits = visits.filter(column.str.contains(f[2][0]))
    e = traffic.events.filter((pl.col("type") == "event") & (pl.col("ts") >= q.date_range.start)
                              & (pl.col("ts") < q.date_range.end))
    if any(f[1] == "event" for f in filters):
        e = e.filter(pl.col("name") == "Signup")
    e = e.join(visits.select("visit_id"), on="visit_id", how="semi").sort(["ts", "event_id"], descending=True)
    assert len(seen) > (1 if len(filters) == 2 and filters[1][1] == "event" else 3)  # several pages
    assert seen == e["event_id"].to_list()


def test_an_exit_in_the_same_millisecond_as_a_pageview_is_the_previous_pages_time(tmp_path: Any) -> None:
    """The tracker sends the page it leaves an exit just before the next page's view, often in the
    same millisecond: time on page gives that exit to the page left, as sessionize does for the
    final page's engagement, whichever way the event ids sort."""
    from ingest.seal import events_to_table, write_parquet_atomic
    from tests.warehouse.frames import T0, event

    def raw(e: dict[str, Any]) -> dict[str, Any]:
        ms = int(e["ts"].timestamp() * 1000)
        return {**e, "ts": ms, "received_at": ms, "props_str": None, "props_num": None, "props_bool": None}

    for exit_id in ("a-exit", "z-exit"):
        events = [event(0, "e0"), event(2, exit_id, type="page_exit", engagement_ms=90_000),
                  event(2, "m-view", pathname="/b"),
                  event(4, "e4", type="page_exit", pathname="/b", engagement_ms=7_000)]
        root = tmp_path / exit_id
        hour = T0
        write_parquet_atomic(events_to_table([raw(e) for e in events]),
                             root / "raw" / "site_id=s1" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / "part-1.parquet")
        con = connect(root / "warehouse.duckdb")
        load_pending(con, root / "raw", {"s1": "UTC"})
        q = parse_query("s1", "UTC", {"date_range": ["2026-03-01", "2026-03-01"], "metrics": ["time_on_page"],
                                      "dimensions": ["page"]}, now=NOW)

        answer = run_with(q, OnConnection(con))
        con.close()
        by_page = {row["page"]: row["time_on_page"] for row in answer.rows}
        assert by_page == {"/": 90.0, "/b": 7.0}, exit_id


def test_visitors_by_day_of_visits_spanning_several_days_equal_truth(tmp_path: Any) -> None:
    """Visitors per day under a visit filter come from the visit rows and ``daily_visitors``,
    reading no events: a visit counts its visitor on the days it started and ended and, for a
    visit spanning three days or more, on the days in between where its visitor had an event —
    none for a page left open for a day and a half, whose exit is the visit's last event. Visits
    crossing the range's edges count only their days inside it."""
    from ingest.seal import events_to_table, write_parquet_atomic
    from tests.warehouse.frames import event

    zone = "Europe/Berlin"  # minute 0 is 2026-03-01 12:00 UTC; the range starts at 2026-02-28 23:00 UTC

    def visit(key: int, country: str, minutes: list[int], exit_at: int | None = None) -> list[dict[str, Any]]:
        out = [event(m, visitor_key=key, country=country, site_id="s1", pathname=f"/p{i % 3}")
               for i, m in enumerate(minutes)]
        if exit_at is not None:
            out.append(event(exit_at, visitor_key=key, country=country, site_id="s1", type="page_exit",
                             engagement_ms=60_000))
        return out

    visits = [
        visit(1, "DE", list(range(-900, 2701, 25))),  # from before the range into its third day
        visit(1, "FR", [2800, 2810]),  # the same visitor's next visit, not matching
        visit(2, "DE", list(range(600, 3001, 20))),  # three days inside the range
        visit(3, "DE", [650, 670, 690]),  # crosses one local midnight (23:00 UTC)
        visit(4, "DE", list(range(3400, 3701, 20))),  # crosses the range's end (minute 3540)
        visit(5, "DE", [600], exit_at=2600),  # left open: events on its first and last day only
        visit(6, "FR", list(range(0, 3001, 20))),  # long, not matching
        visit(7, "DE", [100, 110]),  # an ordinary visit
    ]
    events = [e for v in visits for e in v]

    def raw(e: dict[str, Any]) -> dict[str, Any]:
        ms = int(e["ts"].timestamp() * 1000)
        return {**e, "ts": ms, "received_at": ms, "props_str": None, "props_num": None, "props_bool": None}

    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for e in events:
        by_hour.setdefault(e["ts"].replace(minute=0, second=0, microsecond=0), []).append(raw(e))
    for hour, rows in by_hour.items():
        write_parquet_atomic(events_to_table(rows), tmp_path / "raw" / "site_id=s1" / f"date={hour:%Y-%m-%d}"
                             / f"hour={hour:%H}" / "part-1.parquet")
    con = connect(tmp_path / "warehouse.duckdb")
    load_pending(con, tmp_path / "raw", {"s1": zone})
    assert con.execute("SELECT count(*) FROM sessions").fetchone() == (len(visits),)
    execute = OnConnection(con)

    date_range = ["2026-03-01", "2026-03-03"]
    start, end = datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC)
    truth: dict[str, set[int]] = {}
    for v in visits:
        for e in v:
            if e["country"] == "DE" and start <= e["ts"] < end:
                day = e["ts"].astimezone(ZoneInfo(zone)).date().isoformat()
                truth.setdefault(day, set()).add(e["visitor_key"])
    assert truth["2026-03-02"] == {1, 2, 3}  # not 5: visitor 5's page stayed open all day without an event
    for gran in ("day", "week", "month"):
        for metrics in (["visitors"], ["visitors", "visits", "bounce_rate", "visit_duration"]):
            q = parse_query("s1", zone, {"date_range": date_range, "metrics": metrics, "dimensions": [f"time:{gran}"],
                                         "filters": [["is", "country", ["DE"]]]}, now=NOW)
            chosen = plan(q)
            assert chosen.path == "visits" and "FROM events" not in chosen.sql.text
            assert run_with(q, execute).rows == run_with(q, execute, "facts").rows, (gran, metrics)
    q = parse_query("s1", zone, {"date_range": date_range, "metrics": ["visitors"], "dimensions": ["time:day"],
                                 "filters": [["is", "country", ["DE"]]]}, now=NOW)
    rows = run_with(q, execute).rows
    con.close()
    assert {r["time:day"]: r["visitors"] for r in rows} == {d: len(truth.get(d, ())) for d in
                                                            ("2026-03-01", "2026-03-02", "2026-03-03")}
