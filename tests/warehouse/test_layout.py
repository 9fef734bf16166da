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

from tests.generator import TrafficSpec, generate
from warehouse.database import connect
from warehouse.layout import SORT_KEYS, resort_closed_days, resort_tables
from warehouse.load import load_pending
from warehouse.migrations import LATEST, MIGRATIONS, schema_version

SPEC = TrafficSpec(visitors=200, days=10, sites=("site-a", "site-b", "site-c"), loads=1, seed=5,
                   start=datetime(2026, 3, 1, tzinfo=UTC),
                   timezones={"site-a": "UTC", "site-b": "Europe/Berlin", "site-c": "America/New_York"})
TODAY = date(2026, 3, 11)  # the day after the generated range: 2026-03-03 .. 03-09 are closed
STEP = next(m for m in MIGRATIONS if m.run is resort_tables)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse of three sites over ten days, loaded by the loader."""
    root = tmp_path_factory.mktemp("layout")
    generate(SPEC).write_raw(root / "raw")
    con = connect(root / "warehouse.duckdb", threads=2)
    load_pending(con, root / "raw", SPEC.timezones)
    con.close()
    return root


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


def _in_order(con: Any, table: str, where: str = "true") -> bool:
    """Whether the rows (of ``where``), read in storage order, are ordered by site, then time."""
    keys = con.execute(f"SELECT site_id, {SORT_KEYS[table]} FROM {table} WHERE {where}"  # noqa: S608
                       " ORDER BY rowid").fetchall()
    return keys == sorted(keys)


def test_the_upgrade_groups_an_existing_file_by_site_and_time_and_keeps_every_row(loaded: Path, tmp_path: Path) -> None:
    path = _copy(loaded, tmp_path)
    con = duckdb.connect(str(path))
    _scramble(con)
    before = _rows(con)
    assert not any(_in_order(con, t) for t in SORT_KEYS)
    # the file as the version before this step left it (a new file records only its version)
    con.execute("DELETE FROM schema_version")
    con.execute("INSERT INTO schema_version VALUES (?, 'before', now())", [STEP.version - 1])
    con.close()

    con = connect(path)  # opening for writing migrates
    try:
        assert schema_version(con) == LATEST
        assert _rows(con) == before
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
                d = closed[0] + timedelta(days=day)
                if key == "local_date":
                    one = f"local_date = DATE '{d:%Y-%m-%d}'"
                else:
                    one = f"{key} >= TIMESTAMPTZ '{d.isoformat()}' AND {key} < TIMESTAMPTZ '{(d + timedelta(days=1)).isoformat()}'"
                assert _in_order(con, table, one), (table, d)
            # the first two days and the last two are not among them: left as they were
            assert not _in_order(con, table, f"NOT ({inside})"), table
        assert resort_closed_days(con, TODAY, days=7) == {}  # already grouped: nothing to do
    finally:
        con.close()
