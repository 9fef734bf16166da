"""Raw files written before a column existed load, compact, export and erase as if it were null.

The raw schema only grows at the end, by nullable columns (``ingest.schema``). Here half of the
raw files lack the last column, as a file of an earlier release would; a second data directory
holds the same files with that column present and null. Loading, compacting (which merges old and
new files of one hour) and erasing a person must give equal tables and equal raw rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.schema import COLUMNS, RAW_EVENT_SCHEMA, conform
from ingest.seal import write_parquet_atomic
from interop.export_raw import hours_of
from littlestats.config import load_settings
from littlestats.controlplane import ControlPlane
from tests.generator import TrafficSpec, _write, generate
from tests.warehouse.snapshot import assert_same, snapshot
from warehouse.service import Warehouse

LAST = COLUMNS[-1].name


def _world(data_dir: Path, old_files: bool, like: Path | None) -> tuple[pa.Table, dict[str, pl.DataFrame], pa.Table]:
    settings = load_settings({"data_dir": data_dir}, environ={})
    settings.ensure_dirs()
    if like is not None:  # the same site (id and secret)
        shutil.copy(like / "control.sqlite3", settings.control_db)
    control = ControlPlane(settings.control_db)
    site = control.list_sites()[0].id if like else control.create_site("a.example", timezone="UTC").id
    control.close()
    traffic = generate(TrafficSpec(visitors=60, days=1, sites=(site,), timezones={site: "UTC"},
                                   duplicate_fraction=0.0, loads=1, seed=5))
    events = traffic.events
    # two part files per hour (so compaction merges them); the "old" one lacks the last column
    paths = _write(events.filter(pl.col("event_id").str.slice(-1).is_in(list("02468ace"))), settings.raw_dir, "old")
    _write(events.filter(~pl.col("event_id").str.slice(-1).is_in(list("02468ace"))), settings.raw_dir, "new")
    for path in paths:
        table = pq.read_table(path)
        table = table.drop_columns([LAST]) if old_files else table.set_column(
            table.column_names.index(LAST), LAST, pa.nulls(table.num_rows, RAW_EVENT_SCHEMA.field(LAST).type))
        write_parquet_atomic(table, path)
    exported = pa.concat_tables([t for _, t in hours_of(settings.raw_dir, site)])
    person = events["visitor_key"].value_counts(sort=True)["visitor_key"][0]
    wh = Warehouse(settings)
    try:
        wh.load()
        wh.erase(site, [person])
        tables = snapshot(wh.writer)
    finally:
        wh.close()
    raw = pa.concat_tables([conform(pq.read_table(p)) for p in sorted(settings.raw_dir.rglob("*.parquet"))])
    return exported, tables, raw.sort_by([("event_id", "ascending")])


def test_files_without_a_newer_column_read_as_if_it_were_null(tmp_path: Path) -> None:
    old_export, old_tables, old_raw = _world(tmp_path / "old", old_files=True, like=None)
    new_export, new_tables, new_raw = _world(tmp_path / "new", old_files=False, like=tmp_path / "old")
    assert old_export.equals(new_export) and old_export.num_rows > old_raw.num_rows  # the person is in it
    assert pq.read_table(next((tmp_path / "new" / "raw").rglob("*.parquet"))).schema.equals(RAW_EVENT_SCHEMA)
    assert old_tables["events"].height > 100
    assert_same(old_tables, new_tables)
    assert old_raw.equals(new_raw)
    assert old_raw.num_rows == new_tables["events"].height
