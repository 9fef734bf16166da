"""Raw events out: a site's raw Parquet events as one Parquet stream or a Hive-partitioned folder.

Raw events live in ``raw/site_id=<id>/date=YYYY-MM-DD/hour=HH/part-*.parquet`` (docs/schema.md).
An export reads them one UTC hour partition at a time, so memory is bounded by one hour of one
site (and one row group being gathered), whatever the range:

1. ``hour_partitions`` — the site's hour directories that overlap ``[start, end)``;
2. ``read_hour`` — that hour's files, with the documented raw schema (``ingest.schema``), rows
   outside the range dropped and each ``event_id`` once (for an instant after raw compaction the
   merged hourly file and its parts both exist; an event id only ever sits in the hour of its
   ``ts``), ordered by ``ts``;
3. ``parquet_stream`` writes the hours, in row groups of about 128 Ki rows, into one Parquet file,
   yielding its bytes as they are written (``GET /api/v2/sites/{id}/export/raw``); ``write_hive`` writes each hour as
   ``part-export.parquet`` in the same layout as ``raw/`` (``littlestats export --format raw``).

Events accepted in the last few seconds are still in the write-ahead log: they appear once sealed
(every ``segment_seconds``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.schema import RAW_EVENT_SCHEMA, conform

#: Name of each hour's file in a Hive-partitioned export.
EXPORT_FILE = "part-export.parquet"
#: Rows per row group of a streamed export (memory holds one row group and one hour).
ROW_GROUP_ROWS = 128 * 1024
#: A partition whose files change while it is read (compaction merges them) is read again.
READ_ATTEMPTS = 3

Progress = Callable[[int, int, int], None]  # (hours done, hours in all, events so far)


@dataclass(frozen=True)
class HourPartition:
    """One ``hour=HH`` directory of a site."""

    hour: datetime
    path: Path

    @property
    def rel(self) -> str:
        """Its path below the site's directory: ``date=YYYY-MM-DD/hour=HH``."""
        return f"date={self.hour.date().isoformat()}/hour={self.hour.hour:02d}"


@dataclass
class ExportResult:
    """What an export wrote."""

    events: int = 0
    hours: int = 0
    files: int = 0
    bytes: int = 0

    def summary(self) -> str:
        """One line for the CLI."""
        return f"{self.events:,} events from {self.hours} hours in {self.files} files ({self.bytes:,} bytes)"


def _subdirs(path: Path, prefix: str) -> list[tuple[str, Path]]:
    try:
        return sorted((e.name[len(prefix):], Path(e.path)) for e in os.scandir(path)
                      if e.name.startswith(prefix) and e.is_dir())
    except FileNotFoundError:
        return []


def hour_partitions(raw_dir: Path, site_id: str, start: datetime | None = None,
                    end: datetime | None = None) -> list[HourPartition]:
    """The site's hour partitions overlapping ``[start, end)`` (all of them without bounds)."""
    found = []
    for day_text, day_dir in _subdirs(raw_dir / f"site_id={site_id}", "date="):
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            continue
        for hour_text, hour_dir in _subdirs(day_dir, "hour="):
            if not hour_text.isdigit():
                continue
            hour = datetime(day.year, day.month, day.day, int(hour_text), tzinfo=UTC)
            if (start is not None and hour + timedelta(hours=1) <= start) or (end is not None and hour >= end):
                continue
            found.append(HourPartition(hour, hour_dir))
    return found


def empty_table() -> pa.Table:
    """No events, with the raw schema."""
    return RAW_EVENT_SCHEMA.empty_table()


def read_hour(part: HourPartition, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
    """The events of one hour partition in ``[start, end)``, each ``event_id`` once, by ``ts``."""
    for attempt in range(READ_ATTEMPTS):
        files = sorted(part.path.glob("part-*.parquet"))
        try:
            tables = [conform(pq.read_table(f)) for f in files]
            break
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    if not tables:
        return empty_table()
    table = pa.concat_tables(tables)
    if start is not None or end is not None:
        ts = table.column("ts")
        keep = pc.and_(pc.greater_equal(ts, pa.scalar(start or datetime.min.replace(tzinfo=UTC), ts.type)),
                       pc.less(ts, pa.scalar(end or datetime(9999, 1, 1, tzinfo=UTC), ts.type)))
        table = table.filter(keep)
    if table.num_rows == 0:
        return empty_table()
    # Each event id once: the first row of it (by position; duplicates are identical copies).
    indexed = table.select(["event_id"]).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by("event_id", use_threads=False).aggregate([("_row", "min")])
    table = table.take(first.column("_row_min"))
    return table.sort_by([("ts", "ascending"), ("event_id", "ascending")])


def hours_of(raw_dir: Path, site_id: str, start: datetime | None = None, end: datetime | None = None,
             progress: Progress | None = None) -> Iterator[tuple[HourPartition, pa.Table]]:
    """Each hour partition in range with its events (hours without any in range are skipped)."""
    parts = hour_partitions(raw_dir, site_id, start, end)
    events = 0
    for done, part in enumerate(parts, 1):
        try:
            table = read_hour(part, start, end)
        except FileNotFoundError:  # removed by retention or a site deletion meanwhile
            table = empty_table()
        events += table.num_rows
        if progress is not None:
            progress(done, len(parts), events)
        if table.num_rows:
            yield part, table


class _Chunks:
    """A write-only file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def parquet_stream(tables: Iterator[pa.Table], row_group_rows: int = ROW_GROUP_ROWS) -> Iterator[bytes]:
    """One zstd Parquet file of the raw schema, as chunks of bytes while it is written (a valid
    empty file when there is no table). Consecutive tables are gathered into row groups of about
    ``row_group_rows`` rows: hours are small, and a row group per hour would make the file's
    footer (and the writer's memory) grow with the number of hours."""
    sink = _Chunks()
    writer = pq.ParquetWriter(sink, RAW_EVENT_SCHEMA, compression="zstd")  # type: ignore[arg-type]
    pending: list[pa.Table] = []
    rows = 0
    try:
        for table in tables:
            pending.append(table)
            rows += table.num_rows
            if rows >= row_group_rows:
                writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                pending, rows = [], 0
                yield sink.take()
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=rows)
    finally:
        writer.close()
    yield sink.take()


def write_hive(raw_dir: Path, site_id: str, out_dir: Path, start: datetime | None = None,
               end: datetime | None = None, progress: Progress | None = None) -> ExportResult:
    """Write the site's events in ``[start, end)`` below ``out_dir`` in the layout of ``raw/``:
    ``site_id=<id>/date=YYYY-MM-DD/hour=HH/part-export.parquet`` (an existing export file of an
    hour is replaced; each file is written aside and renamed, so none is ever half written)."""
    result = ExportResult()
    for part, table in hours_of(raw_dir, site_id, start, end, progress):
        target = out_dir / f"site_id={site_id}" / part.rel / EXPORT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{EXPORT_FILE}.partial")
        pq.write_table(table, partial, compression="zstd")
        partial.replace(target)
        result.events += table.num_rows
        result.hours += 1
        result.files += 1
        result.bytes += target.stat().st_size
    return result
