"""Comparisons (``warehouse.query.compare``): the comparison range of each mode, including leap days
and DST in the site's zone, and compared answers on generated traffic a year apart — every
comparison value equals a separate query over that range and a count over the generator's events,
and every change equals the one computed here by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from tests.generator import Traffic, TrafficSpec, generate
from warehouse.database import connect
from warehouse.load import load_pending
from warehouse.query.model import QueryError, parse_date_range, parse_query
from warehouse.query.runner import Answer, OnConnection, run_with

SITE = "leap"
TZ = "Europe/Berlin"
NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)


def local_days(r: Any) -> tuple[date, date]:
    return r.start.astimezone(ZoneInfo(TZ)).date(), r.end.astimezone(ZoneInfo(TZ)).date()


@pytest.mark.parametrize(("start", "end", "then"), [
    ("2024-02-29", "2024-02-29", ("2023-02-28", "2023-03-01")),  # a leap day alone: 28 February
    ("2025-02-28", "2025-03-01", ("2024-02-28", "2024-03-02")),  # the same dates: 29 February inside
    ("2024-02-01", "2024-02-29", ("2023-02-01", "2023-03-01")),  # leap February → all of February
    ("2026-03-29", "2026-03-29", ("2025-03-29", "2025-03-30")),  # a 23-hour DST day → a 24-hour day
    ("2025-03-30", "2025-03-30", ("2024-03-30", "2024-03-31")),  # a 24-hour day → ... and back
    ("2026-01-01", "2026-12-31", ("2025-01-01", "2026-01-01")),
])
def test_year_over_year_maps_whole_local_days_to_the_same_dates(start: str, end: str, then: tuple[str, str]) -> None:
    r = parse_date_range(TZ, start=start, end=end)
    before = r.year_before()
    assert before.period == "year_over_year"
    assert local_days(before) == (date.fromisoformat(then[0]), date.fromisoformat(then[1]))
    zone = ZoneInfo(TZ)
    assert before.start.astimezone(zone).time() == before.end.astimezone(zone).time() == datetime.min.time()


def test_year_over_year_of_hours_keeps_the_local_wall_clock() -> None:
    r = parse_date_range(TZ, start="2026-07-01T10:00", end="2026-07-01T14:30")
    before = r.year_before()
    zone = ZoneInfo(TZ)
    assert before.start.astimezone(zone).replace(tzinfo=None) == datetime(2025, 7, 1, 10)
    assert before.end.astimezone(zone).replace(tzinfo=None) == datetime(2025, 7, 1, 14, 30)
    leap = parse_date_range("UTC", start="2024-02-29T06:00", end="2024-02-29T08:00").year_before()
    assert (leap.start, leap.end) == (datetime(2023, 2, 28, 6, tzinfo=UTC), datetime(2023, 2, 28, 8, tzinfo=UTC))


def test_previous_period_and_custom_ranges_and_bad_values() -> None:
    q = parse_query(SITE, TZ, {"date_range": ["2025-03-01", "2025-03-31"], "compare": "previous_period"}, now=NOW)
    assert q.compare is not None and local_days(q.compare) == (date(2025, 1, 29), date(2025, 3, 1))
    q = parse_query(SITE, TZ, {"date_range": "7d", "compare": ["2024-01-01", "2024-01-03"]}, now=NOW)
    assert q.compare is not None and local_days(q.compare) == (date(2024, 1, 1), date(2024, 1, 4))
    assert q.compare.period == "custom"
    for bad in ("last_week", ["2024-01-03", "2024-01-01"], ["x", "y"], 7):
        with pytest.raises(QueryError) as info:
            parse_query(SITE, TZ, {"compare": bad}, now=NOW)
        assert info.value.param == "compare"
    with pytest.raises(QueryError) as info:  # an hourly series over a compared decade: too many buckets
        parse_query(SITE, TZ, {"dimensions": ["time:hour"], "date_range": "today",
                               "compare": ["2014-01-01", "2024-01-01"]}, now=NOW)
    assert info.value.param == "compare"


# --- on data -----------------------------------------------------------------------------------

SPECS = [TrafficSpec(visitors=200, days=4, start=datetime(2024, 2, 27, tzinfo=UTC), sites=(SITE,),
                     timezones={SITE: TZ}, loads=1, seed=41),
         TrafficSpec(visitors=260, days=4, start=datetime(2025, 2, 27, tzinfo=UTC), sites=(SITE,),
                     timezones={SITE: TZ}, loads=1, seed=42)]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pl.DataFrame, duckdb.DuckDBPyConnection]]:
    root = tmp_path_factory.mktemp("compare")
    traffic: list[Traffic] = [generate(spec) for spec in SPECS]
    for t in traffic:
        t.write_raw(root / "raw")
    con = connect(root / "wh.duckdb")
    load_pending(con, root / "raw", {SITE: TZ})
    con.close()
    con = connect(root / "wh.duckdb", read_only=True)
    yield pl.concat([t.events for t in traffic]).unique("event_id"), con
    con.close()


def ask(con: duckdb.DuckDBPyConnection, body: dict[str, Any]) -> Answer:
    q = parse_query(SITE, TZ, body, now=NOW)

    return run_with(q, OnConnection(con))


def truth(events: pl.DataFrame, first: str, last: str) -> dict[str, int]:
    """Views and visitors over whole local days ``first``..``last``, from the generator's events."""
    local = pl.col("ts").dt.convert_time_zone(TZ).dt.date()
    e = events.filter((local >= date.fromisoformat(first)) & (local <= date.fromisoformat(last)))
    return {"views": e.filter(pl.col("type") == "pageview").height, "visitors": e["visitor_key"].n_unique()}


def by_hand(now: int, then: int) -> dict[str, Any]:
    return {"absolute": now - then, "percent": round(100 * (now - then) / then, 1) if then else None}


def test_year_over_year_across_a_leap_day_equals_two_queries_and_the_truth(
    events: tuple[pl.DataFrame, duckdb.DuckDBPyConnection]
) -> None:
    frame, con = events
    body = {"metrics": ["visitors", "views"], "date_range": ["2025-02-28", "2025-03-01"]}
    row = ask(con, {**body, "compare": "year_over_year"}).rows[0]
    now, then = truth(frame, "2025-02-28", "2025-03-01"), truth(frame, "2024-02-28", "2024-03-01")
    assert then["views"] > 0 and now["views"] > 0
    separate = ask(con, {**body, "date_range": ["2024-02-28", "2024-03-01"]}).rows[0]
    for m in ("visitors", "views"):
        assert row[m] == now[m]
        assert row["comparison"][m] == then[m] == separate[m]
        assert row["change"][m] == by_hand(now[m], then[m])


def test_a_compared_series_aligns_buckets_by_position(events: tuple[pl.DataFrame, duckdb.DuckDBPyConnection]) -> None:
    """Two days now against three then (29 February): day 1 with 28 Feb, day 2 with 29 Feb; the
    third day of the comparison has no counterpart."""
    frame, con = events
    rows = ask(con, {"metrics": ["views"], "dimensions": ["time:day"], "date_range": ["2025-02-28", "2025-03-01"],
                     "compare": "year_over_year"}).rows
    assert [r["time:day"] for r in rows] == ["2025-02-28", "2025-03-01"]
    assert [r["comparison"]["time:day"] for r in rows] == ["2024-02-28", "2024-02-29"]
    for r in rows:
        day = r["comparison"]["time:day"]
        assert r["comparison"]["views"] == truth(frame, day, day)["views"]
        assert r["change"]["views"] == by_hand(r["views"], r["comparison"]["views"])
    # the other way round: the third current day has nothing to compare with
    rows = ask(con, {"metrics": ["views"], "dimensions": ["time:day"], "date_range": ["2024-02-28", "2024-03-01"],
                     "compare": ["2025-02-28", "2025-03-01"]}).rows
    assert [r["comparison"]["time:day"] for r in rows] == ["2025-02-28", "2025-03-01", None]
    assert rows[2]["comparison"]["views"] is None and rows[2]["change"]["views"] == {"absolute": None, "percent": None}


def test_a_compared_breakdown_matches_rows_by_value_beyond_the_page(
    events: tuple[pl.DataFrame, duckdb.DuckDBPyConnection]
) -> None:
    frame, con = events
    body = {"metrics": ["visitors", "views"], "dimensions": ["page"], "date_range": ["2025-02-28", "2025-03-01"],
            "limit": 5, "offset": 5}
    rows = ask(con, {**body, "compare": "previous_period"}).rows
    assert len(rows) == 5
    then_all = {r["page"]: r for r in ask(con, {**body, "date_range": ["2025-02-26", "2025-02-27"], "limit": 1000,
                                                "offset": 0}).rows}
    local = pl.col("ts").dt.convert_time_zone(TZ).dt.date()
    before = frame.filter((local >= date(2025, 2, 26)) & (local <= date(2025, 2, 27)) & (pl.col("type") == "pageview"))
    views_then = dict(before.group_by("pathname").len().iter_rows())
    for r in rows:
        other = then_all.get(r["page"], {"visitors": 0, "views": 0})
        assert r["comparison"] == {"visitors": other["visitors"], "views": other["views"]}
        assert r["comparison"]["views"] == views_then.get(r["page"], 0)
        assert r["change"]["views"] == by_hand(r["views"], r["comparison"]["views"])


def test_a_compared_total_with_nothing_then_has_zeros_and_no_percent(
    events: tuple[pl.DataFrame, duckdb.DuckDBPyConnection]
) -> None:
    _, con = events
    row = ask(con, {"metrics": ["visitors", "bounce_rate"], "date_range": ["2025-02-28", "2025-03-01"],
                    "compare": ["2020-01-01", "2020-01-02"]}).rows[0]
    assert row["comparison"] == {"visitors": 0, "bounce_rate": 0.0}
    assert row["change"]["visitors"] == {"absolute": row["visitors"], "percent": None}
    assert row["change"]["bounce_rate"]["percent"] is None
    assert row["change"]["bounce_rate"]["absolute"] == row["bounce_rate"]
