"""Sealing: write-ahead-log segments become hourly, Hive-partitioned Parquet files.

A segment's events are grouped by site and UTC hour of ``ts`` and written to
``raw/site_id=<id>/date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet``. The file name is
determined by the segment, and each file is written to a temporary name and renamed into place,
so sealing the same segment twice (after a crash between writing and deleting it) produces the
same files and never duplicates an event. The segment is deleted only after every file is durable.

Events of a deleted site are dropped here: the warehouse process lists deleted sites in
``raw/.deleted-sites/`` (one empty file per site id) before it purges a site, so its events still in
the write-ahead log never make its ``raw/site_id=…`` directory again.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from ingest.schema import COLUMN_NAMES, RAW_EVENT_SCHEMA
from ingest.wal import ACTIVE_SUFFIX, fsync_dir, read_records, sealable_segments, try_lock
from littlestats.disk import DISK

log = logging.getLogger(__name__)

TS_COLUMNS = ("ts", "received_at")


@dataclass(frozen=True)
class SealResult:
    segment: str
    events: int
    files: tuple[Path, ...]
    dropped: int = 0  # events of deleted sites, not written


DELETED_SITES_DIR = ".deleted-sites"


def deleted_sites(raw_dir: Path) -> frozenset[str]:
    """The ids of the sites deleted from the raw store (``mark_site_deleted``)."""
    try:
        return frozenset(os.listdir(raw_dir / DELETED_SITES_DIR))
    except FileNotFoundError:
        return frozenset()


def mark_site_deleted(raw_dir: Path, site_id: str) -> None:
    """Record, durably, that ``site_id`` is deleted: sealing drops its events from now on."""
    directory = raw_dir / DELETED_SITES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / site_id
    if not marker.exists():
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
        fsync_dir(directory)


def unmark_site_deleted(raw_dir: Path, site_id: str) -> None:
    """Undo ``mark_site_deleted`` (a delete that could not be completed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(raw_dir / DELETED_SITES_DIR / site_id)


def drop_deleted_sites(table: pa.Table, deleted: frozenset[str]) -> pa.Table:
    """``table`` without the events of ``deleted`` sites."""
    if not deleted or table.num_rows == 0:
        return table
    return table.filter(pc.invert(pc.is_in(table["site_id"], value_set=pa.array(sorted(deleted), pa.string()))))


def partition_dir(raw_dir: Path, site_id: str, ts_ms: int) -> Path:
    when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return raw_dir / f"site_id={site_id}" / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"


# The row-by-row path (events already decoded, and the fallback for records Arrow's JSON reader
# refuses): an event's values in the schema's column order.
_row_of = operator.itemgetter(*COLUMN_NAMES)


def event_row(event: dict) -> tuple:
    """A decoded WAL event as a row of the raw event schema (a column it lacks is null)."""
    try:
        return _row_of(event)
    except KeyError:
        return tuple(event.get(name) for name in COLUMN_NAMES)


def rows_to_table(rows: list[tuple]) -> pa.Table:
    """Rows (``event_row``, timestamps as epoch ms) as a table of the raw event schema."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMN_NAMES]
    arrays = []
    for field, values in zip(RAW_EVENT_SCHEMA, columns, strict=True):
        if field.name in TS_COLUMNS:
            arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def events_to_table(events: list[dict]) -> pa.Table:
    """Decoded WAL events (timestamps as epoch ms) as a table of the raw event schema."""
    return rows_to_table([event_row(e) for e in events])


# Segments are read through Arrow's JSON reader: a segment's records are JSON objects without
# newlines (orjson escapes them), so joined by newlines they are NDJSON, parsed straight into
# columns in C++ (no Python object per value). It cannot build map columns, so the custom
# properties are read apart, from the few records that have any (see `_props_columns`).
_MAP_COLUMNS = tuple(f.name for f in RAW_EVENT_SCHEMA if pa.types.is_map(f.type))
_READ_SCHEMA = pa.schema(
    [pa.field(f.name, pa.int64() if f.name in TS_COLUMNS else f.type) for f in RAW_EVENT_SCHEMA
     if f.name not in _MAP_COLUMNS]
)
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=_READ_SCHEMA, unexpected_field_behavior="ignore")
# How a record with properties shows them: `"props_str":{...}` (orjson writes no spaces). A record
# without `":{` anywhere has none; one with it is decoded to be sure (a string value can hold it).
_OBJECT_START = b'":{'


def payloads_to_table(payloads: list[bytes]) -> pa.Table:
    """WAL records (orjson-encoded events) as a table of the raw event schema.

    Columns a record lacks are null. Raises ``pyarrow.ArrowInvalid`` for a record that does not
    fit the schema (``seal_segment`` then takes the slower row-by-row path, which tolerates more).
    """
    data = b"\n".join(payloads)
    table = pj.read_json(
        pa.BufferReader(data),
        read_options=pj.ReadOptions(use_threads=False, block_size=max(len(data) + 1, 1 << 20)),
        parse_options=_PARSE_OPTIONS,
    )
    props = _props_columns(payloads)
    arrays = []
    for field in RAW_EVENT_SCHEMA:
        if field.name in _MAP_COLUMNS:
            arrays.append(props[field.name])
        elif field.name in TS_COLUMNS:
            arrays.append(table[field.name].cast(field.type))
        else:
            arrays.append(table[field.name])
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def _props_columns(payloads: list[bytes]) -> dict[str, pa.Array]:
    n = len(payloads)
    maps = [f for f in RAW_EVENT_SCHEMA if f.name in _MAP_COLUMNS]
    with_props = [i for i, payload in enumerate(payloads) if _OBJECT_START in payload]
    if not with_props:
        return {f.name: pa.nulls(n, type=f.type) for f in maps}
    events = [orjson.loads(payloads[i]) for i in with_props]
    # Each column is built from those records only (plus one null), then spread to every row.
    positions = [len(events)] * n
    for position, i in enumerate(with_props):
        positions[i] = position
    return {
        f.name: pa.array([event.get(f.name) for event in events] + [None], type=f.type).take(positions)
        for f in maps
    }


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=128 * 1024)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # a full disk leaves no partial file behind
            os.unlink(tmp)
        raise
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
        deleted = deleted_sites(raw_dir)
        count = kept = 0
        chunk: list[bytes] = []
        for payload in read_records(path):
            chunk.append(payload)
            if len(chunk) >= SEAL_CHUNK:
                table = drop_deleted_sites(_chunk_table(chunk), deleted)
                _write_chunk(table, raw_dir, segment_id, writers)
                count, kept, chunk = count + len(chunk), kept + table.num_rows, []
        if chunk:
            table = drop_deleted_sites(_chunk_table(chunk), deleted)
            _write_chunk(table, raw_dir, segment_id, writers)
            count, kept = count + len(chunk), kept + table.num_rows
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
        if kept < count:
            log.info("segment %s: dropped %d events of deleted sites", segment_id, count - kept)
        return SealResult(segment_id, kept, tuple(files), dropped=count - kept)
    finally:
        for tmp, writer in writers.values():  # an error midway: leave no temporary files
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        os.close(fd)


def _chunk_table(payloads: list[bytes]) -> pa.Table:
    try:
        return payloads_to_table(payloads)
    except pa.ArrowInvalid:
        # A record the columnar reader refuses (a value of another JSON type than its column's):
        # the row-by-row path converts what Arrow can convert, as sealing always did.
        return rows_to_table([event_row(orjson.loads(p)) for p in payloads])


_SORT_KEYS = [("site_id", "ascending"), ("ts", "ascending"), ("event_id", "ascending")]


def _write_chunk(
    table: pa.Table, raw_dir: Path, segment_id: str,
    writers: dict[Path, tuple[Path, pq.ParquetWriter]],
) -> None:
    """Append a chunk's events to the Parquet file of their site and UTC hour, ordered by time."""
    # Sorted by site, then time: each (site, hour) group is one contiguous slice.
    table = table.take(pc.sort_indices(table, sort_keys=_SORT_KEYS))
    rows = table.num_rows
    if rows == 0:
        return
    sites = table["site_id"]
    hours = pc.floor_temporal(table["ts"], unit="hour").cast(pa.int64())  # epoch ms of the hour

    def changes(column: pa.ChunkedArray) -> pa.ChunkedArray:
        return pc.not_equal(column.slice(1), column.slice(0, rows - 1))

    # A group starts at row 0 and after every row whose site or hour differs from the next one's.
    after = pc.indices_nonzero(pc.or_(changes(sites), changes(hours))).to_pylist()
    bounds = [0, *(i + 1 for i in after), rows]
    for start, end in zip(bounds, bounds[1:], strict=False):
        site_id = sites[start].as_py()
        directory = partition_dir(raw_dir, site_id, hours[start].as_py())
        target = directory / f"part-{segment_id}.parquet"
        if target not in writers:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                writer = pq.ParquetWriter(tmp, RAW_EVENT_SCHEMA, compression="zstd")
            except BaseException:
                with contextlib.suppress(FileNotFoundError):  # created, then the disk refused
                    os.unlink(tmp)
                raise
            writers[target] = (tmp, writer)
        writers[target][1].write_table(table.slice(start, end - start), row_group_size=128 * 1024)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# One sealing pass at a time in a process. A segment another thread is sealing is locked, so a
# concurrent pass would skip it and return before its Parquet exists: a load by hand that seals
# first (after asking the workers to rotate) would then miss the events the warehouse process's
# periodic sweep was sealing at that moment. Waiting for the sweep closes that gap.
_SEALING = threading.Lock()


def seal_all(wal_dir: Path, raw_dir: Path) -> list[SealResult]:
    """Seal every closed segment and every segment left behind by a dead writer.

    Passes in one process run one after the other, so when this returns every segment that was
    sealable when it was called is in Parquet (or failed, and stays in the WAL)."""
    with _SEALING:
        return _seal_all(wal_dir, raw_dir)


def _seal_all(wal_dir: Path, raw_dir: Path) -> list[SealResult]:
    results = []
    for path in sealable_segments(wal_dir):
        try:
            result = seal_segment(path, raw_dir)
        except Exception as exc:
            # A full disk is logged once per episode (littlestats.disk), not once per segment.
            if not DISK.failed("seal", exc, path):
                log.exception("could not seal %s; it stays in the WAL and is retried", path)
            continue
        if result is not None:
            if result.files:
                DISK.succeeded()
            results.append(result)
    return results
