"""``interop.export_raw`` on generated raw files (with re-delivered duplicates): each event once,
in time order, in row groups written as they fill, and the Hive layout of ``raw/``."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from ingest.schema import RAW_EVENT_SCHEMA
from interop.export_raw import hour_partitions, hours_of, parquet_stream, write_hive
from tests.generator import TrafficSpec, generate


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw-export")
    generate(TrafficSpec(visitors=150, days=2, loads=3, duplicate_fraction=0.05, seed=11)).write_raw(root / "raw")
    return root / "raw"


def distinct_events(raw_dir: Path, site: str) -> int:
    """Counted by DuckDB straight from the files, not by the code under test."""
    row = duckdb.connect().execute("SELECT count(DISTINCT event_id) FROM read_parquet(?)",
                                   [str(raw_dir / f"site_id={site}" / "*" / "*" / "*.parquet")]).fetchone()
    assert row is not None
    return int(row[0])


def test_stream_holds_each_event_once_in_time_order_in_several_row_groups(raw_dir: Path) -> None:
    total_rows = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)",
                                          [str(raw_dir / "site_id=site-a" / "*" / "*" / "*.parquet")]).fetchone()
    want = distinct_events(raw_dir, "site-a")
    assert total_rows is not None and total_rows[0] > want  # the files do hold duplicates
    chunks = list(parquet_stream((t for _, t in hours_of(raw_dir, "site-a")), row_group_rows=100))
    assert len(chunks) > 3  # bytes leave as row groups fill, not all at the end
    data = b"".join(chunks)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_row_groups > 3 and meta.num_rows == want
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.equals(RAW_EVENT_SCHEMA, check_metadata=False)
    assert len(set(table.column("event_id").to_pylist())) == want
    ts = table.column("ts").to_pylist()
    assert ts == sorted(ts)


def test_an_hour_seen_mid_compaction_still_counts_each_event_once(raw_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(raw_dir, copy)
    part = hour_partitions(copy, "site-b")[0]
    merged = part.path / "part-hourly.parquet"
    pq.write_table(pq.read_table(next(part.path.glob("part-*.parquet"))), merged)  # merged beside its part
    rows = sum(t.num_rows for _, t in hours_of(copy, "site-b"))
    assert rows == distinct_events(raw_dir, "site-b")


def test_hive_export_mirrors_the_raw_layout(raw_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int, int]] = []
    result = write_hive(raw_dir, "site-b", tmp_path / "out", progress=lambda *a: seen.append(a))
    assert result.events == distinct_events(raw_dir, "site-b")
    hours = {p.path.relative_to(raw_dir).as_posix() for p in hour_partitions(raw_dir, "site-b")}
    written = {f.parent.relative_to(tmp_path / "out").as_posix() for f in (tmp_path / "out").rglob("*.parquet")}
    assert written == hours and result.files == len(hours)
    assert seen[-1] == (len(hours), len(hours), result.events)  # progress reached the end
