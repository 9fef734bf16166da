"""Loading raw Parquet into DuckDB: ground truth, visit continuation, exactly-once."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.seal import events_to_table, write_parquet_atomic
from tests.generator import Traffic, TrafficSpec, generate, visits_per_day_truth
from tests.warehouse.snapshot import assert_same, snapshot
from warehouse.database import connect
from warehouse.load import discover_files, load_pending, number_text, plan_chunks
from warehouse.rollups import reaggregate

SPEC = TrafficSpec(visitors=150, days=3, loads=4, seed=7)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


def load_all_slices(traffic: Traffic, root: Path, chunk_rows: int = 1_500_000) -> duckdb.DuckDBPyConnection:
    con = connect(root / "warehouse.duckdb")
    for k in range(traffic.spec.loads):
        traffic.write_raw(root / "raw", load=k)
        load_pending(con, root / "raw", traffic.spec.timezones, chunk_rows=chunk_rows)
    return con


@pytest.fixture(scope="module")
def loaded_root(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loaded")
    load_all_slices(traffic, root).close()
    return root


@pytest.fixture(scope="module")
def loaded(loaded_root: Path) -> duckdb.DuckDBPyConnection:
    return connect(loaded_root / "warehouse.duckdb", read_only=True)


def copy_of(loaded_root: Path, target: Path) -> duckdb.DuckDBPyConnection:
    """A writable copy of the module's loaded warehouse and its raw files."""
    shutil.copytree(loaded_root, target)
    return connect(target / "warehouse.duckdb")


def test_sessions_loaded_in_slices_equal_the_truth(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    got = loaded.sql("SELECT * FROM sessions ORDER BY session_id").pl()
    truth = traffic.visits.drop("visit_id").sort("session_id")
    assert got.height == truth.height
    assert traffic.events["load"].n_unique() == SPEC.loads
    for column in truth.columns:
        a, b = got[column], truth[column]
        if column in ("started_at", "ended_at"):
            a, b = a.cast(pl.Datetime("us", "UTC")), b.cast(pl.Datetime("us", "UTC"))
        assert a.equals(b), column


def test_truth_covers_the_hard_cases(traffic: Traffic) -> None:
    v = traffic.visits
    late = traffic.events.filter(pl.col("load") > pl.col("load").min().over("visit_id"))
    assert late.height > 0  # visits spanning load boundaries or late events
    assert v.filter(pl.col("started_at").dt.date() != pl.col("ended_at").dt.date()).height > 0
    assert v["is_bounce"].sum() > 0 and (~v["is_bounce"]).sum() > 0
    assert traffic.duplicates.height > 0


def test_every_event_loaded_once(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    counts = loaded.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    assert counts == (traffic.event_count, traffic.event_count)
    # every event points at its true visit
    got = loaded.sql("SELECT event_id, session_id FROM events").pl()
    truth = traffic.events.join(traffic.visits.select("visit_id", "session_id"), on="visit_id")
    joined = truth.select("event_id", "session_id").join(got, on="event_id", suffix="_got")
    assert joined.height == traffic.event_count
    assert (joined["session_id"] == joined["session_id_got"]).all()


def test_daily_visitors_are_exact_per_local_day(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    got = loaded.sql(
        "SELECT site_id, local_date, count(DISTINCT visitor_key) AS visitors FROM daily_visitors"
        " GROUP BY ALL ORDER BY site_id, local_date"
    ).pl()
    truth = visits_per_day_truth(traffic, SPEC.timezones)
    assert got.cast({"visitors": pl.UInt32}).equals(truth.cast({"visitors": pl.UInt32}))


def test_unique_visitors_over_a_range_are_exact_not_a_sum(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    got = dict(loaded.execute(
        "SELECT site_id, count(DISTINCT visitor_key) FROM daily_visitors GROUP BY site_id"
    ).fetchall())
    truth = dict(traffic.events.group_by("site_id").agg(pl.col("visitor_key").n_unique()).iter_rows())
    assert got == truth
    summed = dict(loaded.execute(
        "SELECT site_id, sum(visitors) FROM hourly_rollup WHERE dimension = 'total' GROUP BY site_id"
    ).fetchall())
    assert any(summed[s] > truth[s] for s in truth)  # why the daily table exists


def test_hourly_rollup_matches_truth(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    ev = traffic.events.with_columns(pl.col("ts").dt.truncate("1h").cast(pl.Datetime("us", "UTC")).alias("hour"))
    views = ev.filter(pl.col("type") == "pageview").group_by("site_id", "hour").len("views")
    got = loaded.sql(
        "SELECT site_id, hour, views FROM hourly_rollup WHERE dimension = 'total' AND views > 0"
    ).pl().with_columns(pl.col("hour").cast(pl.Datetime("us", "UTC")))
    assert got.sort("site_id", "hour").cast({"views": pl.UInt32}).equals(views.sort("site_id", "hour").cast({"views": pl.UInt32}))
    v = traffic.visits
    totals = loaded.execute(
        "SELECT sum(visits), sum(bounces), sum(duration_ms) FROM hourly_rollup WHERE dimension = 'total'"
    ).fetchall()[0]
    assert totals == (v.height, v["is_bounce"].sum(), v["duration_ms"].sum())
    by_source = dict(loaded.execute(
        "SELECT value, sum(visits) FROM hourly_rollup WHERE dimension = 'source' GROUP BY value"
    ).fetchall())
    assert by_source == dict(v.group_by("source").len().iter_rows())
    pages = loaded.execute(
        "SELECT sum(views) FROM hourly_rollup WHERE dimension = 'page'"
    ).fetchall()[0][0]
    assert pages == ev.filter(pl.col("type") == "pageview").height


def test_breakdown_uniques_and_props(traffic: Traffic, loaded: duckdb.DuckDBPyConnection) -> None:
    got = dict(loaded.execute(
        "SELECT source, count(DISTINCT visitor_key) FROM daily_session_visitors GROUP BY source"
    ).fetchall())
    truth = dict(traffic.visits.group_by("source").agg(pl.col("visitor_key").n_unique()).iter_rows())
    assert got == truth
    ce = traffic.events.filter(pl.col("type") == "event")
    plans = dict(loaded.execute(
        "SELECT value, sum(events) FROM hourly_props WHERE key = 'plan' GROUP BY value"
    ).fetchall())
    assert plans == dict(ce.group_by("_prop_plan").len().iter_rows())
    amount = loaded.execute("SELECT sum(number_value) FROM event_props WHERE key = 'amount'").fetchall()[0][0]
    assert amount == ce["_prop_amount"].sum()


def test_reloading_changes_nothing(loaded_root: Path, tmp_path: Path) -> None:
    con = copy_of(loaded_root, tmp_path / "w")
    before = snapshot(con)
    # a crashed sealer rewrites a file under the same name with identical content
    some = sorted((tmp_path / "w" / "raw").rglob("*.parquet"))[3]
    data = some.read_bytes()
    some.unlink()
    some.write_bytes(data)
    result = load_pending(con, tmp_path / "w" / "raw", SPEC.timezones)
    assert result.files == 0
    assert_same(before, snapshot(con))


def test_duplicate_event_in_another_file_is_skipped(traffic: Traffic, loaded_root: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "w"
    con = copy_of(loaded_root, tmp_path)
    before = snapshot(con)
    again = traffic.events.head(20)
    from tests.generator import to_raw_table

    hour = again["ts"][0]
    path = (tmp_path / "raw" / f"site_id={again['site_id'][0]}" / f"date={hour:%Y-%m-%d}"
            / f"hour={hour:%H}" / "part-redelivered.parquet")
    write_parquet_atomic(to_raw_table(again.filter(pl.col("site_id") == again["site_id"][0])), path)
    result = load_pending(con, tmp_path / "raw", SPEC.timezones)
    assert result.files == 1 and result.new_events == 0 and result.duplicates > 0
    after = snapshot(con)
    for name in before:
        if name != "loaded_files":
            assert before[name].equals(after[name]), name


def test_any_split_into_loads_gives_the_same_tables(traffic: Traffic, tmp_path: Path, loaded: duckdb.DuckDBPyConnection) -> None:
    root = tmp_path / "once"
    traffic.write_raw(root / "raw")
    con = connect(root / "warehouse.duckdb")
    load_pending(con, root / "raw", SPEC.timezones)
    assert len(plan_chunks(discover_files(root / "raw"), 2000)) > 4  # the split is real
    tiny = load_all_slices(traffic, tmp_path / "tiny", chunk_rows=2000)  # several transactions per load
    expected = snapshot(con)
    assert_same(expected, snapshot(loaded), files=False)  # file names differ by construction
    assert_same(snapshot(loaded), snapshot(tiny))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), loads=st.integers(2, 6))
@example(seed=8737, loads=2)  # a long-late page_exit loaded before its pageview
def test_random_arrival_orders_give_the_same_tables(seed: int, loads: int, tmp_path: Path) -> None:
    spec = TrafficSpec(visitors=25, days=0.5, loads=loads, seed=seed, late_fraction=0.2)
    traffic = generate(spec)
    root = tmp_path / f"r{seed}-{loads}"
    shutil.rmtree(root, ignore_errors=True)
    con = load_all_slices(traffic, root)
    got = con.sql("SELECT * FROM sessions ORDER BY session_id").pl()
    truth = traffic.visits.drop("visit_id").sort("session_id")
    assert got["session_id"].equals(truth["session_id"])
    assert got["duration_ms"].equals(truth["duration_ms"])
    assert got["is_new"].equals(truth["is_new"])
    # the loads moved the hourly tables by each changed visitor's share (rollups.count_hours):
    # they equal a rebuild of every hour from all its facts
    moved = snapshot(con)
    lo, hi = con.execute("SELECT min(ts), max(ts) FROM events").fetchall()[0]
    reaggregate(con, spec.timezones, lo, hi + timedelta(seconds=1))
    rebuilt = snapshot(con)
    for table in ("hourly_rollup", "hourly_props"):
        assert moved[table].equals(rebuilt[table]), table
    assert moved["hourly_props"].height > 0
    con.close()


def raw_event(event_id: str, ts: datetime, **fields: object) -> dict:
    ms = int(ts.timestamp() * 1000)
    base = {"event_id": event_id, "site_id": "s1", "ts": ms, "received_at": ms, "type": "pageview",
            "visitor_key": 42, "visitor_key_source": "tracker", "pathname": "/", "source": "Direct / None",
            "device": "desktop", "browser": "Firefox", "os": "Linux"}
    base.update(fields)
    return base


def write_events(raw: Path, name: str, *events: dict, site_id: str = "s1") -> None:
    hour = datetime.fromtimestamp(events[0]["ts"] / 1000, UTC)
    path = raw / f"site_id={site_id}" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / f"part-{name}.parquet"
    write_parquet_atomic(events_to_table(list(events)), path)


T = datetime(2026, 5, 1, 23, 40, tzinfo=UTC)


def test_new_events_continue_a_visit_from_an_earlier_load(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    write_events(tmp_path / "raw", "1", raw_event("a", T), raw_event("b", T + timedelta(minutes=10)))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    write_events(tmp_path / "raw", "2", raw_event("c", T + timedelta(minutes=35), pathname="/next"))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    rows = con.execute("SELECT session_id, pageviews, exit_page, is_bounce FROM sessions").fetchall()
    assert rows == [("a", 3, "/next", False)]
    assert con.execute("SELECT DISTINCT session_id FROM events").fetchall() == [("a",)]
    assert con.execute("SELECT sum(visits), sum(views) FROM hourly_rollup WHERE dimension = 'total'").fetchall() == [(1, 3)]


def test_late_event_bridging_two_visits_merges_them(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    write_events(tmp_path / "raw", "1", raw_event("a", T), raw_event("c", T + timedelta(minutes=50)))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    assert con.execute("SELECT count(*) FROM sessions").fetchall() == [(2,)]
    write_events(tmp_path / "raw", "2", raw_event("b", T + timedelta(minutes=25)))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    assert con.execute("SELECT session_id, pageviews, is_new FROM sessions").fetchall() == [("a", 3, True)]
    assert con.execute("SELECT sum(visits) FROM hourly_rollup WHERE dimension = 'total'").fetchall() == [(1,)]


def test_late_earlier_visit_makes_the_later_one_returning(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    write_events(tmp_path / "raw", "1", raw_event("b", T + timedelta(hours=3)))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    assert con.execute("SELECT is_new FROM sessions").fetchall() == [(True,)]
    write_events(tmp_path / "raw", "2", raw_event("a", T))
    load_pending(con, tmp_path / "raw", {"s1": "UTC"})
    assert con.execute("SELECT session_id, is_new FROM sessions ORDER BY started_at").fetchall() == [("a", True), ("b", False)]


def test_visitor_days_follow_the_site_time_zone(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    # 23:40 UTC on 1 May is 01:40 on 2 May in Berlin
    write_events(tmp_path / "raw", "1", raw_event("a", T))
    load_pending(con, tmp_path / "raw", {"s1": "Europe/Berlin"})
    assert con.execute("SELECT local_date::VARCHAR FROM daily_visitors").fetchall() == [("2026-05-02",)]


def test_visitor_days_across_daylight_saving_changes_in_several_zones(tmp_path: Path) -> None:
    # One load, two sites in zones that change their offset on different days inside it: each
    # event's day is the local day DuckDB's own time-zone conversion gives.
    zones = {"s1": "Europe/Berlin", "s2": "America/New_York"}
    moments = [datetime(2026, 3, 7, 23, 30, tzinfo=UTC) + timedelta(hours=h) for h in range(0, 24 * 24, 5)]
    for site in zones:
        for i, ts in enumerate(moments):
            # a new visitor every event: every event is its own visitor-day
            write_events(tmp_path / "raw", f"{site}-{i}",
                         raw_event(f"{site}-{i}", ts, site_id=site, visitor_key=1000 + i), site_id=site)
    con = connect(tmp_path / "w.duckdb")
    load_pending(con, tmp_path / "raw", zones)
    got = con.execute("SELECT site_id, visitor_key, local_date FROM daily_visitors ORDER BY ALL").fetchall()
    want = con.execute(
        "SELECT e.site_id, e.visitor_key, timezone(z.tz, e.ts)::DATE FROM events e"
        " JOIN (SELECT unnest($sites) AS site_id, unnest($zones) AS tz) z USING (site_id) ORDER BY ALL",
        {"sites": list(zones), "zones": list(zones.values())},
    ).fetchall()
    assert got == want and len(got) == 2 * len(moments)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                          st.integers(-(2**60), 2**60).map(float),
                          st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e15, -1e15, 1e15 + 2, 1e16, 2.0**53])),
                min_size=1, max_size=50))
def test_number_property_text_is_the_cast_without_a_trailing_zero(values: list[float]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE v (x DOUBLE)")
    con.executemany("INSERT INTO v VALUES (?)", [[v] for v in values])
    rows = con.execute(
        f"SELECT x, {number_text('x')}, regexp_replace(CAST(x AS VARCHAR), '\\.0$', '') FROM v"  # noqa: S608
    ).fetchall()
    assert [(x, want) for x, _, want in rows] == [(x, got) for x, got, _ in rows]
    assert con.execute(f"SELECT {number_text('3.0::DOUBLE')}, {number_text('2.5::DOUBLE')}").fetchall() == [("3", "2.5")]


def test_chunks_are_bounded_in_files_as_well_as_rows(traffic: Traffic, tmp_path: Path) -> None:
    traffic.write_raw(tmp_path / "raw")
    files = discover_files(tmp_path / "raw")
    assert len(files) > 12
    chunks = plan_chunks(files, max_rows=10**9, max_files=5)
    assert [f for chunk in chunks for f in chunk] == files  # every file once, in order
    assert all(len(chunk) <= 5 for chunk in chunks) and len(chunks) == -(-len(files) // 5)
