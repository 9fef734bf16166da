"""The warehouse jobs by hand, without a running server: load, backfill, reaggregate, retention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from tests.generator import TrafficSpec, generate
from tests.server import cli
from tests.warehouse.snapshot import assert_same, snapshot_file

SPEC = TrafficSpec(visitors=60, days=2, seed=21, loads=1)


def test_backfill_loads_only_its_dates_and_load_the_rest(data_dir: Path) -> None:
    traffic = generate(SPEC)
    traffic.write_raw(data_dir / "raw")
    out = cli(data_dir, "backfill", "--from", "2026-03-01", "--to", "2026-03-01")
    assert out.startswith("backfill: ") and "new events" in out
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    days = con.execute("SELECT DISTINCT partition_hour::DATE::VARCHAR FROM loaded_files").fetchall()
    con.close()
    assert days == [("2026-03-01",)]
    cli(data_dir, "load")
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == traffic.event_count
    con.close()
    assert "0 new events" in cli(data_dir, "load")


def _loaded(data_dir: Path) -> tuple[Path, Any, duckdb.DuckDBPyConnection]:
    """Generated traffic loaded by the CLI: the database, a snapshot of its tables, and a writable
    connection to alter it with (close it before the next command)."""
    generate(SPEC).write_raw(data_dir / "raw")
    cli(data_dir, "load")
    db = data_dir / "warehouse.duckdb"
    return db, snapshot_file(db), duckdb.connect(str(db))


def test_reaggregate_rebuilds_deleted_pre_aggregates(data_dir: Path) -> None:
    db, expected, con = _loaded(data_dir)
    for table in ("hourly_rollup", "hourly_props", "daily_visitors", "daily_session_visitors",
                  "daily_page_visitors", "daily_event_visitors"):
        con.execute(f"DELETE FROM {table}")  # noqa: S608
    con.close()
    out = cli(data_dir, "reaggregate", "--from", "2026-02-28", "--to", "2026-04-30")
    assert out.startswith("reaggregate: rebuilt ")
    assert_same(expected, snapshot_file(db))


def test_retention_reports_what_it_removed(data_dir: Path) -> None:
    out = cli(data_dir, "retention")
    assert out.startswith("retention: 0 sites with retention")


def test_preaggregates_of_an_earlier_schema_are_rebuilt_on_open(data_dir: Path) -> None:
    db, expected, con = _loaded(data_dir)
    # what a warehouse of the previous version looks like: no prev dates, no counts table
    con.execute("ALTER TABLE daily_visitors DROP COLUMN prev_date")
    con.execute("DROP TABLE daily_visitor_counts")
    con.close()
    cli(data_dir, "load")  # opens the warehouse: the pre-aggregates are rebuilt from the facts
    assert_same(expected, snapshot_file(db))


def test_fact_tables_of_another_schema_are_refused_with_what_to_do(data_dir: Path) -> None:
    _, _, con = _loaded(data_dir)
    con.execute("ALTER TABLE sessions DROP COLUMN user_id")
    con.close()
    run = subprocess.run([sys.executable, "-m", "littlestats", "load", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "warehouse table sessions has columns" in run.stderr and "littlestats backfill" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_job_waits_while_another_process_holds_the_database(data_dir: Path) -> None:
    cli(data_dir, "load")  # creates the database
    # another process holds the database until told to let go (a line on its standard input)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
         " sys.stdin.readline(); c.close()", str(data_dir / "warehouse.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    job = None
    try:
        assert holder.stdout.readline().strip() == "held"
        job = subprocess.Popen([sys.executable, "-m", "littlestats", "retention", "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert job.stderr is not None
        said = job.stderr.readline()
        assert said.startswith("waiting for another process to let go of the warehouse database")
        assert job.poll() is None  # still waiting
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0
    assert out.startswith("retention: ")
