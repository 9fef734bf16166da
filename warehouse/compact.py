"""Hourly compaction of raw Parquet: a closed hour's part files become one file per site and hour.

Ingest seals a WAL segment every ``segment_seconds``, one part file per (site, UTC hour) each
time, so an hour holds up to ~120 small files per worker. Small files are slow for everyone who
reads them: a backfill from raw spends most of its read time on per-file work (10 parts an hour
read 2.8 times slower than one file of the same rows), and so does an analyst's
``read_parquet('raw/**/*.parquet')``. Once an hour is closed (``GRACE`` after its end), its parts
are merged into ``part-hourly.parquet``: rows ordered by ``(ts, event_id)``, one row per
``event_id``, the same schema and compression as ingest writes.

Compaction keeps the load manifest exact:

* a group whose files are all loaded becomes one loaded file: in one DuckDB transaction the parts'
  manifest entries are replaced by the merged file's, with the same ``partition_hour`` and the sum
  of their ``new_events``, so nothing is loaded again;
* a group whose files are all unloaded (a restored backlog) becomes one unloaded file, loaded later
  like any other;
* a group with loaded and unloaded files waits until the next load has taken the rest.

Crash safety: the merged file is written to a temporary name, fsynced and renamed over
``part-hourly.parquet``; then the manifest changes; then the parts are deleted. A crash between
these steps leaves parts beside a merged file that already holds their rows. Whatever the loader
then reads twice is dropped by ``event_id`` (as for a re-sealed segment), and the next compaction
merges the leftovers again, de-duplicating by ``event_id``. An event that arrives late into an
already compacted hour (accepted up to 24 h late, or a segment recovered after a crash) gets a
part file of its own, which the next compaction merges into ``part-hourly.parquet``.

Readers of the raw files may see a merged file and its parts side by side for the instant between
the rename and the deletes; de-duplicate by ``event_id`` when that matters (``docs/schema.md``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.schema import conform
from ingest.seal import write_parquet_atomic
from ingest.wal import fsync_dir
from warehouse.load import HOURLY_NAME, RawFile, discover_files

log = logging.getLogger("littlestats.warehouse")

#: An hour is compacted once it ended this long ago: most of its parts are sealed by then, and the
#: live feed's restart reload (``api.live.RETAIN_MS``, 90 minutes, by the hour partitions of their
#: ``ts``) never reads a merged hour, so the cursors it resumes from keep their segment names.
GRACE = timedelta(hours=2)


@dataclass
class CompactResult:
    """What a compaction did."""

    hours: int = 0
    files_merged: int = 0
    rows: int = 0
    duplicates: int = 0
    skipped_mixed: int = 0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"{self.hours:,} hours compacted: {self.files_merged:,} files into {self.hours:,}, "
                f"{self.rows:,} rows, {self.duplicates:,} duplicate rows dropped"
                + (f"; {self.skipped_mixed:,} hours wait for a load" if self.skipped_mixed else ""))


def compactable(files: list[RawFile], now: datetime) -> list[list[RawFile]]:
    """The files grouped by (site, hour), keeping groups of several local files of closed hours
    (files in object storage are not merged)."""
    groups: dict[tuple[str, datetime], list[RawFile]] = defaultdict(list)
    for f in files:
        if f.partition_hour + timedelta(hours=1) + GRACE <= now and isinstance(f.path, Path):
            groups[(f.site_id, f.partition_hour)].append(f)
    return [sorted(g, key=lambda f: f.rel) for _, g in sorted(groups.items()) if len(g) > 1]


def merge_tables(tables: list[pa.Table]) -> tuple[pa.Table, int]:
    """The rows of ``tables`` ordered by ``(ts, event_id)``, one per ``event_id``; and how many
    duplicates were dropped (an event's copies are identical: same id, same time)."""
    table = pa.concat_tables([conform(t) for t in tables])
    table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("event_id", "ascending")]))
    ids = table["event_id"].combine_chunks()
    if len(ids) < 2:
        return table, 0
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).fill_null(True)
    keep = pa.concat_arrays([pa.array([True]), first])
    merged = table.filter(keep)
    return merged, table.num_rows - merged.num_rows


def compact_raw(
    con: duckdb.DuckDBPyConnection, raw_dir: Path, start: date | None = None, end: date | None = None,
    now: datetime | None = None, progress: Callable[[int, int], None] | None = None,
    files: list[RawFile] | None = None,
) -> CompactResult:
    """Merge the part files of every closed hour dated ``start``..``end`` (UTC) under ``raw_dir``
    (or of ``files``, when the caller has listed them already).

    ``con`` is the warehouse connection (its ``loaded_files`` manifest); the caller holds the
    write lock. ``progress(done, total)`` counts hours.
    """
    now = now or datetime.now(UTC)
    groups = compactable(discover_files(raw_dir, start, end) if files is None else files, now)
    result = CompactResult()
    if progress:
        progress(0, len(groups))
    if not groups:
        return result
    oldest = min(g[0].partition_hour for g in groups)
    manifest = {row[0]: row for row in con.execute(
        "SELECT path, new_events, loaded_at FROM loaded_files WHERE partition_hour >= ?", [oldest]
    ).fetchall()}
    for done, group in enumerate(groups, 1):
        loaded = [f.rel in manifest for f in group]
        if any(loaded) and not all(loaded):
            result.skipped_mixed += 1
        else:
            _compact_group(con, group, manifest if all(loaded) else None, result)
        if progress:
            progress(done, len(groups))
    return result


def _compact_group(
    con: duckdb.DuckDBPyConnection, group: list[RawFile], manifest: dict[str, tuple] | None,
    result: CompactResult,
) -> None:
    target = Path(group[0].path).parent / HOURLY_NAME  # local files only (``compactable``)
    try:
        merged, duplicates = merge_tables([pq.read_table(f.path) for f in group])
    except (OSError, pa.ArrowException) as exc:
        log.warning("not compacting %s: %s (its files stay as they are)", target.parent, exc)
        return
    write_parquet_atomic(merged, target)
    rel = f"{group[0].rel.rsplit('/', 1)[0]}/{HOURLY_NAME}"
    if manifest is not None:
        rels = [f.rel for f in group]
        con.begin()
        try:
            con.execute("DELETE FROM loaded_files WHERE path IN (SELECT unnest($paths))", {"paths": rels})
            con.execute(
                "INSERT INTO loaded_files VALUES ($site, $path, $hour, $rows, $new, $at)",
                {"site": group[0].site_id, "path": rel, "hour": group[0].partition_hour,
                 "rows": merged.num_rows, "new": sum(manifest[r][1] for r in rels),
                 "at": max(manifest[r][2] for r in rels)},
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
    for f in group:
        if f.path != target:
            Path(f.path).unlink(missing_ok=True)
    fsync_dir(target.parent)
    result.hours += 1
    result.files_merged += len(group)
    result.rows += merged.num_rows
    result.duplicates += duplicates

