"""Row order of the fact and per-visitor daily tables (``warehouse.layout``): the upgrade that
re-sorts an existing file and the daily re-sort of closed days group rows by site, then time,
and keep every row exactly as it was."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from littlestats.config import load_settings
from tests.generator import TrafficSpec, generate
from warehouse.database import connect
from warehouse.layout import SORT_KEYS, resort_closed_days, resort_tables
from warehouse.migrations import LATEST, MIGRATIONS, schema_version
from warehouse.query.model import parse_query
from warehouse.query.planner import plan
from warehouse.service import Warehouse

SPEC = TrafficSpec(visitors=200, days=10, sites=("site-a", "site-b", "site-c"), loads=1, seed=5,
                   start=datetime(2026, 3, 1, tzinfo=UTC),
                   timezones={"site-a": "UTC", "site-b": "Europe/Berlin", "site-c": "America/New_York"})
TODAY = date(2026, 3, 11)  # the day after the generated range: 2026-03-03 .. 03-09 are closed
STEP = next(m for m in MIGRATIONS if m.run is resort_tables)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with three sites' ten days, long closed, loaded by the warehouse (a
    backfill, as far as the row order goes)."""
    root = tmp_path_factory.mktemp("layout")
    settings = load_settings({"data_dir": root, "warehouse_threads": 2}, environ={})
    settings.ensure_dirs()
    generate(SPEC).write_raw(settings.raw_dir)
    wh = Warehouse(settings)
    try:
        assert wh.load(seal=False).new_events > 0
    finally:
        wh.close()
    return root


def _day(table: str, d: date) -> str:
    key = SORT_KEYS[table]
    if key == "local_date":
        return f"local_date = DATE '{d:%Y-%m-%d}'"
    lo = datetime.combine(d, datetime.min.time(), UTC)
    return f"{key} >= TIMESTAMPTZ '{lo.isoformat()}' AND {key} < TIMESTAMPTZ '{(lo + timedelta(days=1)).isoformat()}'"


def test_a_load_of_closed_days_leaves_each_day_grouped_by_site(loaded: Path) -> None:
    con = duckdb.connect(str(loaded / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table in SORT_KEYS:
            days = [r[0] for r in con.execute(
                f"SELECT DISTINCT CAST({SORT_KEYS[table]} AS DATE) FROM {table}").fetchall()]  # noqa: S608
            assert len(days) >= 10
            assert [d for d in days if not _in_order(con, table, _day(table, d))] == [], table
    finally:
        con.close()


def _copy(loaded: Path, tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(loaded / "warehouse.duckdb", path)
    return path


def _scramble(con: Any, where: str = "true") -> None:
    """Rewrite the rows (of ``where``) in an order unrelated to site and time, as loads that
    interleave sites leave them."""
    con.execute("SET preserve_insertion_order = true")
    for table in SORT_KEYS:
        con.execute(f"CREATE TEMP TABLE mixed AS SELECT * FROM {table} WHERE {where.format(t=SORT_KEYS[table])}"  # noqa: S608
                    " ORDER BY hash(visitor_key, rowid)")
        con.execute(f"DELETE FROM {table} WHERE {where.format(t=SORT_KEYS[table])}")  # noqa: S608
        con.execute(f"INSERT INTO {table} SELECT * FROM mixed")  # noqa: S608
        con.execute("DROP TABLE mixed")


def _rows(con: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in SORT_KEYS}  # noqa: S608


#: Dashboard questions under a filter (every query path that reads the re-sorted tables).
QUESTIONS = [
    {"dimensions": [], "metrics": ["visitors", "visits", "views", "events", "bounce_rate", "visit_duration"]},
    {"dimensions": ["time:day"], "metrics": ["visitors"]},
    {"dimensions": ["page"], "metrics": ["visitors", "views"]},
    {"dimensions": ["source"], "metrics": ["visitors", "visits", "bounce_rate"]},
    {"dimensions": ["event"], "metrics": ["visitors", "events"]},
]


def _answers(con: Any) -> list[list[tuple[Any, ...]]]:
    out = []
    for site in SPEC.sites:
        for body in QUESTIONS:
            for filters in ([], [["is", "country", ["DE"]]], [["is_not", "device", ["mobile"]]]):
                q = parse_query(site, SPEC.timezones[site], {**body, "date_range": ["2026-03-02", "2026-03-08"],
                                                            "filters": filters, "limit": 1000})
                sql = plan(q).sql
                out.append(con.execute(sql.text, sql.params).fetchall())
    return out


def _in_order(con: Any, table: str, where: str = "true") -> bool:
    """Whether the rows (of ``where``), read in storage order, are ordered by site, then time."""
    keys = con.execute(f"SELECT site_id, {SORT_KEYS[table]} FROM {table} WHERE {where}"  # noqa: S608
                       " ORDER BY rowid").fetchall()
    return keys == sorted(keys)


def test_the_upgrade_groups_an_existing_file_by_site_and_time_and_keeps_every_row(loaded: Path, tmp_path: Path) -> None:
    path = _copy(loaded, tmp_path)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    _scramble(con)
    before, answers = _rows(con), _answers(con)
    assert sum(1 for a in answers if a) > len(answers) // 2  # most questions have an answer to compare
    assert not any(_in_order(con, t) for t in SORT_KEYS)
    # the file as the version before this step left it (a new file records only its version)
    con.execute("DELETE FROM schema_version")
    con.execute("INSERT INTO schema_version VALUES (?, 'before', now())", [STEP.version - 1])
    con.close()

    con = connect(path)  # opening for writing migrates
    try:
        assert schema_version(con) == LATEST
        assert _rows(con) == before
        assert _answers(con) == answers  # every query path gives the same answers on the new order
        assert [t for t in SORT_KEYS if not _in_order(con, t)] == []
        # the tables keep their declarations (NOT NULL included)
        nullable = con.execute("SELECT is_nullable FROM information_schema.columns"
                               " WHERE table_name = 'events' AND column_name = 'site_id'").fetchall()
        assert nullable == [("NO",)]
    finally:
        con.close()


def test_the_daily_resort_groups_the_closed_days_once_and_leaves_the_rest(loaded: Path, tmp_path: Path) -> None:
    con = duckdb.connect(str(_copy(loaded, tmp_path)))
    try:
        con.execute("SET TimeZone = 'UTC'")
        _scramble(con)
        before = _rows(con)
        done = resort_closed_days(con, TODAY, days=7)
        assert set(done) == set(SORT_KEYS) and all(n > 0 for n in done.values())
        assert _rows(con) == before
        closed = (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
        for table, key in SORT_KEYS.items():
            if key == "local_date":
                inside = f"local_date >= DATE '{closed[0]:%Y-%m-%d}' AND local_date < DATE '{closed[1]:%Y-%m-%d}'"
            else:
                inside = f"{key} >= TIMESTAMPTZ '{closed[0].isoformat()}' AND {key} < TIMESTAMPTZ '{closed[1].isoformat()}'"
            for day in range(7):  # each closed day's rows lie together, in order
                d = (closed[0] + timedelta(days=day)).date()
                assert _in_order(con, table, _day(table, d)), (table, d)
            # the first two days and the last two are not among them: left as they were
            assert not _in_order(con, table, f"NOT ({inside})"), table
        assert resort_closed_days(con, TODAY, days=7) == {}  # already grouped: nothing to do
    finally:
        con.close()
