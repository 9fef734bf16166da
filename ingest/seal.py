"""Sealing: write-ahead-log segments become hourly, Hive-partitioned Parquet files.

A segment's events are grouped by site and UTC hour of ``ts`` and written to
``raw/site_id=<id>/date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet``. The file name is
determined by the segment, and each file is written to a temporary name and renamed into place,
so sealing the same segment twice (after a crash between writing and deleting it) produces the
same files and never duplicates an event. The segment is deleted only after every file is durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.schema import COLUMN_NAMES, RAW_EVENT_SCHEMA
from ingest.wal import ACTIVE_SUFFIX, fsync_dir, read_records, sealable_segments, try_lock

log = logging.getLogger(__name__)

TS_COLUMNS = ("ts", "received_at")


@dataclass(frozen=True)
class SealResult:
    segment: str
    events: int
    files: tuple[Path, ...]


def partition_dir(raw_dir: Path, site_id: str, ts_ms: int) -> Path:
    when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return raw_dir / f"site_id={site_id}" / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"


def events_to_table(events: list[dict]) -> pa.Table:
    """Decoded WAL events (timestamps as epoch ms) as a table of the raw event schema."""
    columns = {name: [e.get(name) for e in events] for name in COLUMN_NAMES}
    arrays = []
    for field in RAW_EVENT_SCHEMA:
        values = columns[field.name]
        if field.name in TS_COLUMNS:
            arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", row_group_size=128 * 1024)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


SEAL_CHUNK = 20_000


def seal_segment(path: Path, raw_dir: Path) -> SealResult | None:
    """Seal one segment into Parquet and delete it. ``None`` if another process holds it.

    Records are streamed in chunks of ``SEAL_CHUNK``, each appended as row groups to the Parquet
    file of its site and hour, so memory stays bounded whatever the segment's size.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    writers: dict[Path, tuple[Path, pq.ParquetWriter]] = {}
    try:
        if not try_lock(fd):
            return None  # a live writer or another sealer has it
        if not path.exists():
            return None  # sealed by someone else between our listing and our lock
        segment_id = path.name.rsplit(".", 1)[0]
        count = 0
        chunk: list[dict] = []
        for payload in read_records(path):
            chunk.append(orjson.loads(payload))
            if len(chunk) >= SEAL_CHUNK:
                _write_chunk(chunk, raw_dir, segment_id, writers)
                count += len(chunk)
                chunk = []
        if chunk:
            _write_chunk(chunk, raw_dir, segment_id, writers)
            count += len(chunk)
        files = []
        for target, (tmp, writer) in sorted(writers.items()):
            writer.close()
            _fsync_file(tmp)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            files.append(target)
        writers.clear()
        os.unlink(path)
        fsync_dir(path.parent)
        if path.suffix == ACTIVE_SUFFIX:
            log.info("recovered segment %s of a stopped worker: %d events", segment_id, count)
        return SealResult(segment_id, count, tuple(files))
    finally:
        for tmp, writer in writers.values():  # an error midway: leave no temporary files
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        os.close(fd)


def _write_chunk(
    chunk: list[dict], raw_dir: Path, segment_id: str,
    writers: dict[Path, tuple[Path, pq.ParquetWriter]],
) -> None:
    groups: dict[Path, list[dict]] = defaultdict(list)
    for event in chunk:
        groups[partition_dir(raw_dir, event["site_id"], event["ts"])].append(event)
    for directory, group in groups.items():
        group.sort(key=lambda e: (e["ts"], e["event_id"]))
        target = directory / f"part-{segment_id}.parquet"
        if target not in writers:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            writers[target] = (tmp, pq.ParquetWriter(tmp, RAW_EVENT_SCHEMA, compression="zstd"))
        writers[target][1].write_table(events_to_table(group), row_group_size=128 * 1024)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_all(wal_dir: Path, raw_dir: Path) -> list[SealResult]:
    """Seal every closed segment and every segment left behind by a dead writer."""
    results = []
    for path in sealable_segments(wal_dir):
        try:
            result = seal_segment(path, raw_dir)
        except Exception:
            log.exception("could not seal %s; it stays in the WAL and is retried", path)
            continue
        if result is not None:
            results.append(result)
    return results
