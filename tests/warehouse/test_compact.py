"""Hourly compaction of raw Parquet: fewer files, the same rows, the manifest still exact."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.live import RETAIN_MS
from ingest.schema import RAW_EVENT_SCHEMA
from ingest.seal import events_to_table
from tests.generator import Traffic, TrafficSpec, generate
from tests.warehouse.snapshot import assert_same, snapshot
from warehouse.compact import GRACE, HOURLY_NAME, compact_raw, merge_tables
from warehouse.database import connect
from warehouse.load import discover_files, load_pending

SPEC = TrafficSpec(visitors=120, days=2, loads=3, seed=11, duplicate_fraction=0.02)
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # every generated hour is closed


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


def write_slices(traffic: Traffic, raw: Path) -> None:
    for k in range(SPEC.loads):
        traffic.write_raw(raw, load=k)


def raw_rows(raw: Path) -> pa.Table:
    return pa.concat_tables([pq.ParquetFile(p).read() for p in sorted(raw.rglob("*.parquet"))])


def hours_with_parts(raw: Path) -> int:
    return sum(1 for d in raw.glob("site_id=*/date=*/hour=*") if len(list(d.glob("*.parquet"))) > 1)


def manifest(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT path, partition_hour, rows, new_events FROM loaded_files ORDER BY path").fetchall()


def test_loaded_hours_become_one_file_and_nothing_loads_again(traffic: Traffic, tmp_path: Path) -> None:
    write_slices(traffic, tmp_path / "raw")
    con = connect(tmp_path / "w.duckdb")
    load_pending(con, tmp_path / "raw", SPEC.timezones)
    before, events_before = snapshot(con), raw_rows(tmp_path / "raw")
    new_before = con.execute("SELECT sum(new_events) FROM loaded_files").fetchall()[0][0]
    assert hours_with_parts(tmp_path / "raw") > 10  # the generator wrote several parts per hour

    result = compact_raw(con, tmp_path / "raw", now=NOW)

    assert hours_with_parts(tmp_path / "raw") == 0
    assert result.hours > 10 and result.files_merged > result.hours
    files = discover_files(tmp_path / "raw")
    assert sum(f.path.name == HOURLY_NAME for f in files) == result.hours  # an hour of one file keeps it
    # a load plans its chunks from a merged file's exact row count
    assert all(f.estimated_rows == pq.read_metadata(f.path).num_rows for f in files if f.path.name == HOURLY_NAME)
    after = raw_rows(tmp_path / "raw")
    # the duplicate deliveries are gone, every event is there once
    assert after.num_rows == len(set(events_before["event_id"].to_pylist()))
    assert after.num_rows == events_before.num_rows - result.duplicates
    assert sorted(after["event_id"].to_pylist()) == sorted(set(events_before["event_id"].to_pylist()))
    # the manifest lists exactly the merged files, still summing to the events loaded
    assert {r[0] for r in manifest(con)} == {f.rel for f in files}
    assert con.execute("SELECT sum(new_events) FROM loaded_files").fetchall()[0][0] == new_before
    assert load_pending(con, tmp_path / "raw", SPEC.timezones).files == 0
    assert_same(before, snapshot(con), files=False)
    # idempotent
    assert compact_raw(con, tmp_path / "raw", now=NOW).hours == 0


def test_a_restored_backlog_compacted_before_loading_loads_the_same(traffic: Traffic, tmp_path: Path) -> None:
    plain, compacted = tmp_path / "plain", tmp_path / "compacted"
    write_slices(traffic, plain / "raw")
    shutil.copytree(plain / "raw", compacted / "raw")
    a = connect(plain / "w.duckdb")
    load_pending(a, plain / "raw", SPEC.timezones)
    b = connect(compacted / "w.duckdb")
    result = compact_raw(b, compacted / "raw", now=NOW)
    assert result.hours > 10
    assert b.execute("SELECT count(*) FROM loaded_files").fetchall()[0][0] == 0  # still to be loaded
    loaded = load_pending(b, compacted / "raw", SPEC.timezones)
    assert loaded.duplicates == 0  # compaction dropped the duplicate deliveries already
    assert_same(snapshot(a), snapshot(b), files=False)


def test_open_hours_and_half_loaded_hours_are_left_alone(traffic: Traffic, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    traffic.write_raw(raw, load=0)
    con = connect(tmp_path / "w.duckdb")
    load_pending(con, raw, SPEC.timezones)
    traffic.write_raw(raw, load=1)  # not loaded yet: its hours hold loaded and unloaded parts
    assert hours_with_parts(raw) > 0
    first = min(f.partition_hour for f in discover_files(raw))
    assert compact_raw(con, raw, now=first).hours == 0  # no hour closed yet
    result = compact_raw(con, raw, now=NOW)
    assert result.skipped_mixed > 0
    assert hours_with_parts(raw) == result.skipped_mixed  # the others (all loaded or none) merged
    load_pending(con, raw, SPEC.timezones)
    assert compact_raw(con, raw, now=NOW).hours == result.skipped_mixed
    assert hours_with_parts(raw) == 0


def test_leftovers_of_a_crash_mid_compaction_are_neither_lost_nor_counted_twice(
    traffic: Traffic, tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    write_slices(traffic, raw)
    con = connect(tmp_path / "w.duckdb")
    load_pending(con, raw, SPEC.timezones)
    before = snapshot(con)
    saved = {p: p.read_bytes() for p in raw.rglob("*.parquet")}
    merged = compact_raw(con, raw, now=NOW)
    # a crash after the manifest changed and before the parts were deleted leaves them behind
    for path, data in saved.items():
        path.write_bytes(data)
    again = load_pending(con, raw, SPEC.timezones)
    assert again.files == merged.files_merged and again.new_events == 0
    assert_same(before, snapshot(con), files=False)
    result = compact_raw(con, raw, now=NOW)
    assert result.hours == merged.hours and result.duplicates > 0
    assert hours_with_parts(raw) == 0
    ids = raw_rows(raw)["event_id"].to_pylist()
    assert len(ids) == len(set(ids)) == con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    assert load_pending(con, raw, SPEC.timezones).files == 0
    assert_same(before, snapshot(con), files=False)
    events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    assert con.execute("SELECT sum(new_events) FROM loaded_files").fetchall()[0][0] == events


def test_the_live_feeds_restart_reload_never_reads_a_merged_hour() -> None:
    # the reload reads the hour partitions of the last RETAIN_MS; a merged hour ended GRACE ago
    assert GRACE > timedelta(milliseconds=RETAIN_MS)


def test_merge_orders_by_time_and_keeps_one_row_per_event() -> None:
    def table(ids: list[str], ts: list[int]) -> pa.Table:
        return events_to_table([
            {"event_id": i, "site_id": "s1", "ts": t, "received_at": t, "type": "pageview",
             "visitor_key": 1, "visitor_key_source": "tracker", "pathname": "/", "source": "Direct / None",
             "device": "desktop", "browser": "Firefox", "os": "Linux"}
            for i, t in zip(ids, ts, strict=True)
        ])

    merged, dropped = merge_tables([table(["b", "a"], [2, 1]), table(["c", "a", "b"], [0, 1, 2])])
    assert merged["event_id"].to_pylist() == ["c", "a", "b"]
    assert dropped == 2
    assert merged.schema == RAW_EVENT_SCHEMA
