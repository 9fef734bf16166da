"""Where a worker's live buffer gets *every* worker's accepted events: a ``LiveFeed`` source.

On one machine the write-ahead log already is a durable, ordered, cross-worker log: each worker
appends to its own segment in ``wal/`` and fsyncs before acknowledging. ``WalTail`` follows every
segment there — it keeps each file open, so the rename to ``.closed`` at rotation and the unlink
after sealing lose nothing — and reads only complete, checksummed records. No extra service, no
extra copy of the event on the ingest path.

To run on several machines, put a broker (Redis streams, NATS) behind the same ``LiveFeed``
interface: ingest publishes the accepted events, each worker consumes them. Nothing else changes.

Ordering: records are handed out sorted by ``received_at`` (then segment, index) and held back until
no record that *caused* them can still be unseen. A pass that starts at time ``T`` (in ms) sees
every record written before ``T``; a request accepted after an earlier request was acknowledged
has ``received_at`` ≥ that earlier record's write time. So once a pass starting at ``T`` is done,
every pending record with ``received_at < T`` can go out in key order: any record that precedes
it causally has already been read. Hence a visitor's events arrive in the order they were
accepted, whichever workers accepted them. (``received_at`` has millisecond resolution: two
requests of one visitor within the same millisecond are ordered by the pass that first saw them,
then by segment — exact unless both land in one pass; a browser's beacons are never that close.)
"""

from __future__ import annotations

import bisect
import functools
import heapq
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import orjson

from api.live import Cursor, LiveEvent, decode_event
from ingest.wal import ACTIVE_SUFFIX, CLOSED_SUFFIX, HEADER, MAX_RECORD

log = logging.getLogger(__name__)

READ_CHUNK = 4 * 1024 * 1024


class LiveFeed(Protocol):
    """A source of accepted events from every worker, each with its cursor, in cursor order."""

    def poll(self) -> list[tuple[Cursor, LiveEvent]]: ...

    def close(self) -> None: ...


T = TypeVar("T")


@dataclass(frozen=True)
class RecordFormat(Generic[T]):
    """What the tail makes of a record's payload: ``decode`` it (raising ``msgspec.DecodeError``
    or ``orjson.JSONDecodeError`` when it is not a record) and read its ``received_at``."""

    decode: Callable[[memoryview], T]
    received_at: Callable[[T], int]


# The live buffer's events: only the fields it needs are decoded (``api.live.LiveEvent``).
LIVE_EVENTS: RecordFormat[LiveEvent] = RecordFormat(decode_event, attrgetter("received_at"))
# Whole records as dictionaries.
DICTS: RecordFormat[dict[str, Any]] = RecordFormat(orjson.loads, itemgetter("received_at"))


@dataclass
class _Tail:
    segment: str
    fd: int
    offset: int = 0
    index: int = 0
    finished: bool = False  # renamed to .closed, or gone: its writer will add nothing more
    buffer: bytes = b""


class WalTail(Generic[T]):
    """Follows every segment in ``wal_dir`` (see the module docstring); each record is made into
    an item by ``records`` (``LIVE_EVENTS`` for the live buffer)."""

    def __init__(self, wal_dir: Path, start_at_end: bool = False,
                 records: RecordFormat[T] = DICTS) -> None:  # type: ignore[assignment]
        self.wal_dir = wal_dir
        self.records_format = records
        self.tails: dict[str, _Tail] = {}
        self.done: set[str] = set()  # segments read to the end and closed, until they disappear
        # (received_at, pass seen, cursor, event): within one millisecond, what was read in an
        # earlier pass was written earlier, so the pass number breaks ties before the segment id.
        self.pending: list[tuple[int, int, Cursor, T]] = []
        self.passes = 0
        self.records = 0
        self.bad_records = 0
        if start_at_end:
            self._scan(initial_end=True)

    def open_segments(self) -> None:
        """Open every segment now (before a backfill from Parquet), reading nothing yet."""
        self._scan()

    def poll(self) -> list[tuple[Cursor, T]]:
        started = int(time.time() * 1000)
        self.passes += 1
        self._scan()
        for tail in list(self.tails.values()):
            self._read(tail)
            if tail.finished:
                os.close(tail.fd)
                del self.tails[tail.segment]
                self.done.add(tail.segment)
        if not self.pending:
            return []
        # Plain tuple order: cursors are unique, so the comparison never reaches the event.
        self.pending.sort()
        cut = bisect.bisect_left(self.pending, (started,))
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return [(cursor, raw) for _, _, cursor, raw in ready]

    def _scan(self, initial_end: bool = False) -> None:
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.wal_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            name = entry.name
            if name.endswith(ACTIVE_SUFFIX):
                segment, closed = name[: -len(ACTIVE_SUFFIX)], False
            elif name.endswith(CLOSED_SUFFIX):
                segment, closed = name[: -len(CLOSED_SUFFIX)], True
            else:
                continue
            present.add(segment)
            tail = self.tails.get(segment)
            if tail is None and segment not in self.done:
                try:
                    fd = os.open(entry.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # renamed or sealed between the listing and the open; next pass
                tail = self.tails[segment] = _Tail(segment, fd)
                if initial_end:
                    self._skip_to_end(tail)
            if tail is not None and closed:
                tail.finished = True
        for segment, tail in self.tails.items():
            if segment not in present:
                tail.finished = True  # sealed and unlinked: what is in the file is all there is
        self.done &= present

    def _skip_to_end(self, tail: _Tail) -> None:
        while True:
            before = tail.offset
            self._read(tail, keep=False)
            if tail.offset == before:
                return

    def _read(self, tail: _Tail, keep: bool = True) -> None:
        """Read the segment's new complete records; ``keep``: decode them into ``pending``.

        Every accepted event of the machine passes here once: one loop with local names, each
        record checked and decoded in place (no copy of it)."""
        header_size, unpack, crc32 = HEADER.size, HEADER.unpack_from, zlib.crc32
        decode, received_at = self.records_format.decode, self.records_format.received_at
        pending, passes, segment = self.pending, self.passes, tail.segment
        while True:
            chunk = os.pread(tail.fd, READ_CHUNK, tail.offset + len(tail.buffer))
            if not chunk:
                return
            data = tail.buffer + chunk if tail.buffer else chunk
            size, pos, index = len(data), 0, tail.index
            with memoryview(data) as view:
                while pos + header_size <= size:
                    length, crc = unpack(data, pos)
                    if length == 0:
                        # The zero-filled space ahead of an active segment's writer (ingest.wal):
                        # records are written over it in place, so read from here again next pass.
                        tail.offset += pos
                        tail.buffer = b""
                        return
                    if length > MAX_RECORD:
                        self._corrupt(tail)
                        return
                    end = pos + header_size + length
                    if end > size:
                        break  # incomplete: the writer is still writing it
                    payload = view[pos + header_size : end]
                    if crc32(payload) != crc:
                        if tail.finished:
                            self._corrupt(tail)
                            return
                        # May still be in flight (written over zeros in place): read it again
                        # next pass, from the file, not from what this pass buffered.
                        tail.offset += pos
                        tail.buffer = b""
                        return
                    pos = end
                    tail.index = index = index + 1
                    if not keep:
                        continue
                    try:
                        item = decode(payload)
                    except (msgspec.DecodeError, orjson.JSONDecodeError):
                        self.bad_records += 1
                        continue
                    self.records += 1
                    received = received_at(item)
                    # (received_at, pass seen, cursor, event): see ``pending``.
                    pending.append((received, passes, (received, segment, index - 1), item))
            tail.offset += pos
            tail.buffer = data[pos:]
            if len(chunk) < READ_CHUNK:
                return

    def _corrupt(self, tail: _Tail) -> None:
        # A torn tail of a crashed writer was never acknowledged; stop reading this segment.
        self.bad_records += 1
        tail.finished = True
        tail.buffer = b""

    def close(self) -> None:
        for tail in self.tails.values():
            os.close(tail.fd)
        self.tails.clear()


BACKFILL_COLUMNS = ("site_id", "ts", "received_at", "visitor_key", "type", "name", "pathname",
                    "hostname", "source", "country", "device", "browser", "os")  # LiveEvent's order

# The recent past goes into the buffer this many events at a time.
BACKFILL_BATCH = 5_000

Items = list[tuple[Cursor, LiveEvent]]


@dataclass(frozen=True)
class Source:
    """Events to merge in cursor order: none is received before ``lowest`` (ms). ``load`` reads
    them (in any order) only when the merge reaches ``lowest``, and may hand back a ``Source`` for
    the rest (a file read a batch at a time)."""

    lowest: int
    load: Callable[[], tuple[Items, Source | None]]


def in_cursor_order(sources: list[Source], batch: int = BACKFILL_BATCH) -> Iterator[Items]:
    """Every source's events, merged in cursor order, ``batch`` at a time.

    A source is read only once every event received before its ``lowest`` has been handed out, so
    what is held at once is the events of the sources that overlap in time (for raw Parquet, one
    batch of each file or row group whose time span includes the merge's point), never the whole
    recent past."""
    waiting = [(source.lowest, n, source) for n, source in enumerate(sources)]
    heapq.heapify(waiting)
    count = len(waiting)
    pending: list[tuple[Cursor, int, LiveEvent]] = []  # a heap; the counter keeps entries apart
    seq = 0
    out: Items = []
    while waiting:
        lowest, _, source = heapq.heappop(waiting)
        while pending and pending[0][0][0] < lowest:
            key, _, event = heapq.heappop(pending)
            out.append((key, event))
            if len(out) >= batch:
                yield out
                out = []
        items, rest = source.load()
        for key, event in items:
            heapq.heappush(pending, (key, seq, event))
            seq += 1
        if rest is not None:
            heapq.heappush(waiting, (max(rest.lowest, lowest), count, rest))
            count += 1
    while pending:
        key, _, event = heapq.heappop(pending)
        out.append((key, event))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def parquet_sources(raw_dir: Path, now_ms: int, skip_segments: set[str] | frozenset[str] = frozenset()) -> list[Source]:
    """The raw Parquet files that may hold events accepted in the last ``RETAIN_MS``, as sources
    for ``in_cursor_order``: one per row group, whose lowest ``received_at`` comes from the footer's
    statistics, read ``BACKFILL_BATCH`` rows at a time. Rows are ordered by ``ts`` within a row
    group (ingest and the hourly compaction write them so) and an event's ``ts`` is never after
    its ``received_at``, so the next batch's first ``ts`` bounds what the rest of the row group
    holds. ``skip_segments``: segments read from the WAL instead (still there when the load
    began; a segment sealed meanwhile is in both)."""
    import pyarrow.parquet as pq

    from api.live import HOUR_MS, RETAIN_MS

    since = now_ms - RETAIN_MS
    sources: list[Source] = []
    for hour in range(since // HOUR_MS, now_ms // HOUR_MS + 1):
        stamp = time.gmtime(hour * 3600)
        pattern = f"site_id=*/date={time.strftime('%Y-%m-%d', stamp)}/hour={stamp.tm_hour:02d}/*.parquet"
        for path in sorted(raw_dir.glob(pattern)):
            segment = path.stem.removeprefix("part-")
            if segment in skip_segments:
                continue
            try:
                meta = pq.read_metadata(path)
            except (OSError, ValueError):
                continue  # being written; its segment is still in the WAL
            column = meta.schema.to_arrow_schema().get_field_index("received_at")
            first_row = 0
            for group in range(meta.num_row_groups):
                lowest = max(_lowest_received(meta.row_group(group).column(column).statistics), since)
                load = functools.partial(_open_row_group, path, group, segment, first_row, since)
                sources.append(Source(lowest, load))
                first_row += meta.row_group(group).num_rows
    return sources


def _lowest_received(stats: Any) -> int:
    """The smallest ``received_at`` (ms) in a row group's statistics (0 if unknown)."""
    if stats is None or not stats.has_min_max:
        return 0
    value = stats.min
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def _open_row_group(path: Path, group: int, segment: str, first_row: int, since: int) -> tuple[Items, Source | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(
            batch_size=BACKFILL_BATCH, row_groups=[group], columns=list(BACKFILL_COLUMNS), use_threads=False)
        batch = next(batches, None)
    except (OSError, pa.ArrowInvalid):
        return [], None  # being written, or gone: its segment is still in the WAL
    return _read_on(batch, batches, segment, first_row, since)


def _read_on(batch: Any, batches: Iterator[Any], segment: str, row: int,
             since: int) -> tuple[Items, Source | None]:
    """This batch's events, and the rest of the row group as a source."""
    if batch is None:
        return [], None
    items = _batch_items(batch, segment, row, since)
    following = next(batches, None)
    if following is None:
        return items, None
    first_ts = following.column(1)[0].cast("int64").as_py()  # BACKFILL_COLUMNS[1] is ts
    rest = Source(first_ts, functools.partial(_read_on, following, batches, segment, row + batch.num_rows, since))
    return items, rest


def _batch_items(batch: Any, segment: str, first_row: int, since: int) -> Items:
    import pyarrow as pa

    columns = []
    for i, name in enumerate(BACKFILL_COLUMNS):
        column = batch.column(i)
        if name in ("ts", "received_at"):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    received = columns[2]
    return [((received[i], segment, first_row + i), LiveEvent(*values))
            for i, values in enumerate(zip(*columns, strict=True)) if received[i] >= since]
