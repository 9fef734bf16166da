"""Importing another tool's history: the steps every source goes through.

An import of ``FILE`` from ``SOURCE`` into a site:

1. ``identify`` — the SHA-256 of the file's content names the import (``interop.records``): the
   same file imported again into the same site finds its record, and a finished import is a no-op;
2. ``cutoff`` — imported events must never double live traffic: every event at or after the
   *cutoff* is skipped (counted as ``overlap_with_live``). The cutoff is the start of the first
   UTC day with native (tracker) events of the site, or the start of the day the import began if
   the site has none yet; it is fixed when the import starts, so a resumed import uses the same;
3. ``read`` — the source module (``interop.sources.*``) turns the file's rows into our raw events
   (``interop.events.build_event``): same URL, UTM, referrer and visitor-key rules as live ingest;
4. ``filter`` — events older than the site's retention, after the cutoff, or (for the original
   LittleStats, whose racing flushes duplicated rows) duplicates are skipped and counted;
5. ``write`` — every ``BATCH_EVENTS`` events, a batch is written as raw Parquet in the documented
   raw schema, one file per UTC hour: ``raw/site_id=…/date=…/hour=…/part-<import id>-<batch>.parquet``.
   Event ids are ``<import id>-<row>``: deterministic, so a batch written twice (a crash between
   the write and the checkpoint) is loaded once, since the loader drops ids it has. After each
   batch the record's checkpoint (batches done, counts) is saved;
6. ``load`` — the normal loader turns the files into facts and pre-aggregates, exactly as for
   live traffic (done by the caller: ``littlestats import`` asks the running warehouse process).

A crash at any point (``kill -9``) leaves the record ``running``; importing the same file again
resumes: the batches before the checkpoint are read again (to count and de-duplicate) but not
written. ``interop.unload`` deletes an import again.

Sources that write aggregates instead of events (Plausible's CSV export) are registered with their
own ``run`` and ``delete`` functions; the framework gives them the same identity, records and
progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from ingest.schema import RAW_EVENT_SCHEMA
from ingest.seal import write_parquet_atomic
from interop.events import ImportedEvent, ImportFormatError, SourceContext
from interop.records import ImportRecord, ImportStore, import_id, new_record
from littlestats.config import Settings
from littlestats.controlplane import Site

#: Events per written batch (and checkpoint): bounds memory, and what a resume redoes at most.
BATCH_EVENTS = 200_000
#: Rows between two progress reports (the record's counts, the CLI's bar) within a batch.
PROGRESS_ROWS = 25_000
#: Files of a batch written at once (each is fsynced: the disk's latency, not the CPU, bounds it).
WRITERS = 8
#: Read buffer for hashing the file.
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """A foreign format: ``reader`` (``module``) yields raw events; an aggregate source has its own
    ``run`` and ``delete`` (``"module:function"``) instead."""

    name: str
    description: str
    reader: str | None = None
    run: str | None = None
    delete: str | None = None

    @property
    def writes_events(self) -> bool:
        return self.reader is not None


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("littlestats-v2", "the original LittleStats v2: a D1 SQLite file or `wrangler d1 export` .sql dump",
           reader="interop.sources.littlestats_v2"),
    Source("littlestats-v1", "the original LittleStats v1: SQLite file (or .sql dump) with events_<domain> tables",
           reader="interop.sources.littlestats_v1"),
    Source("goatcounter", "GoatCounter's CSV export (version 2)", reader="interop.sources.goatcounter"),
    Source("umami", "Umami's website_event rows as CSV", reader="interop.sources.umami"),
    Source("plausible", "Plausible CE's CSV export (a zip of imported_*.csv): daily aggregates",
           run="interop.plausible:import_zip", delete="interop.plausible:delete_import"),
)}


class ImportRefused(ValueError):
    """An import that cannot start (unknown source, running elsewhere, ...); the message says why."""


def _function(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of the file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def source_of(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ImportRefused(f"unknown source {name!r}; one of: {', '.join(SOURCES)}") from None


def prepare(store: ImportStore, site: Site, source: str, path: Path, file_name: str | None = None,
            digest: tuple[str, int] | None = None) -> ImportRecord:
    """The record of importing ``path`` (created as ``running`` when new)."""
    source_of(source)
    sha, size = digest or file_digest(path)
    ident = import_id(site.id, source, sha)
    return store.create(new_record(ident, site.id, source, file_name or path.name, sha, size))


def cutoff_for(first_native: datetime | None, now: datetime | None = None) -> datetime:
    """Imported events at or after this instant are skipped (see the module docstring)."""
    now = now or datetime.now(UTC)
    today = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    if first_native is None:
        return today
    first_day = datetime.combine(first_native.astimezone(UTC).date(), time(), UTC)
    return min(first_day, today)


#: The first native event of a site: every event id that is not an import's (``imp…``).
FIRST_NATIVE_SQL = ("SELECT min(ts) FROM events WHERE site_id = ?"
                    " AND NOT starts_with(event_id, 'imp')")


@contextlib.contextmanager
def exclusive(settings: Settings, ident: str) -> Iterator[None]:
    """Hold the import's lock file: one importer per import at a time (released by the kernel
    when a killed importer's process ends)."""
    folder = settings.data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{ident}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImportRefused(f"import {ident} is running in another process; wait for it"
                                " (`littlestats imports list` shows its progress)") from None
        yield
    finally:
        os.close(fd)


Progress = Callable[[ImportRecord], None]


def run(settings: Settings, store: ImportStore, record: ImportRecord, site: Site, path: Path,
        cutoff: datetime, options: dict[str, Any] | None = None,
        progress: Progress | None = None, batch_events: int = BATCH_EVENTS) -> ImportRecord:
    """Run (or resume) ``record``'s import of ``path``; the finished record.

    A malformed row raises ``ImportFormatError`` (the record is ``failed`` with the message).
    """
    source = source_of(record.source)
    with exclusive(settings, record.id):
        current = store.get(record.id) or record
        if current.status == "done":
            return current
        if current.status == "deleting":
            raise ImportRefused(f"import {record.id} is being deleted; finish with"
                                f" `littlestats imports delete {record.id}` first")
        # a resumed import keeps its cutoff and batches: the checkpoint counts those batches
        if current.cutoff is None:
            store.update(record.id, cutoff=cutoff.isoformat(), batch_events=batch_events)
        else:
            cutoff = datetime.fromisoformat(current.cutoff)
            batch_events = current.batch_events or batch_events
        store.update(record.id, status="running", message=None)
        try:
            if source.writes_events:
                _import_events(settings, store, current, site, path, cutoff, options or {}, progress,
                               batch_events)
            else:
                assert source.run is not None
                result = _function(source.run)(site.id, path, record.id, settings=settings)
                rows = sum(dict(getattr(result, "rows", {})).values())
                store.update(record.id, rows_read=rows, events_written=rows)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, (ImportFormatError, ImportRefused)) else (
                f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                store.update(record.id, status="failed", message=message)
            raise
        store.update(record.id, status="done", bytes_read=current.file_size,
                     finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    done = store.get(record.id)
    assert done is not None
    if progress:
        progress(done)
    return done


def _import_events(settings: Settings, store: ImportStore, record: ImportRecord, site: Site,
                   path: Path, cutoff: datetime, options: dict[str, Any],
                   progress: Progress | None, batch_events: int) -> None:
    source = source_of(record.source)
    assert source.reader is not None
    module = importlib.import_module(source.reader)
    ctx = SourceContext(site=site, import_id=record.id, file_name=record.file_name, options=options)
    received_at = datetime.fromisoformat(record.created_at)
    oldest = (datetime.now(UTC) - timedelta(days=site.retention_days)) if site.retention_days else None
    deduplicate = bool(getattr(module, "DEDUPLICATE", False))
    seen: set[int] = set()
    resume_from = record.batches_done
    batch: list[ImportedEvent] = []
    state = _State()

    def flush() -> None:
        number = state.batch
        if number >= resume_from:  # batches before the checkpoint are on disk already
            write_batch(settings.raw_dir, site.id, record.id, number, batch, received_at)
        state.batch = number + 1
        state.written += len(batch)
        if batch:
            times = [e["ts"] for e in batch]
            state.first = min(state.first or times[0], min(times))
            state.last = max(state.last or times[0], max(times))
        store.update(record.id, batches_done=max(number + 1, resume_from), rows_read=state.rows,
                     events_written=state.written, skipped=dict(ctx.skipped),
                     bytes_read=int(ctx.fraction * record.file_size),
                     first_ts=_iso(state.first), last_ts=_iso(state.last))
        batch.clear()
        if progress:
            updated = store.get(record.id)
            if updated:
                progress(updated)

    for event in module.read(path, ctx):
        state.rows += 1
        if state.rows % PROGRESS_ROWS == 0:
            store.update(record.id, rows_read=state.rows, skipped=dict(ctx.skipped),
                         bytes_read=int(ctx.fraction * record.file_size),
                         events_written=state.written)
            if progress:
                updated = store.get(record.id)
                if updated:
                    progress(updated)
        ts = event["ts"]
        if ts >= cutoff:
            ctx.skip("overlap_with_live")
            continue
        if oldest is not None and ts < oldest:
            ctx.skip("older_than_retention")
            continue
        if deduplicate:
            key = hash(event["_dedup"])
            if key in seen:
                ctx.skip("duplicates")
                continue
            seen.add(key)
        batch.append(event)
        if len(batch) >= batch_events:
            flush()
    flush()


@dataclass
class _State:
    """Counts of the import in progress."""

    batch: int = 0
    rows: int = 0
    written: int = 0
    first: datetime | None = None
    last: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def event_id(ident: str, row: int) -> str:
    """An imported event's id: the import's id and the source row (stable across re-runs)."""
    return f"{ident}-{row:010d}"


def write_batch(raw_dir: Path, site_id: str, ident: str, number: int, events: list[ImportedEvent],
                received_at: datetime) -> int:
    """Write ``events`` as raw Parquet, one file per UTC hour; returns the files written."""
    if not events:
        return 0
    ids = [event_id(ident, e["_row"]) for e in events]
    columns = []
    for f in RAW_EVENT_SCHEMA:
        if f.name == "event_id":
            values: list[Any] = ids
        elif f.name == "site_id":
            values = [site_id] * len(events)
        elif f.name == "received_at":
            values = [received_at] * len(events)
        else:
            values = list(map(itemgetter(f.name), events))
        columns.append(pa.array(values, type=f.type))
    table = pa.Table.from_arrays(columns, schema=RAW_EVENT_SCHEMA)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.col("ts").dt.truncate("1h").alias("_hour")).sort("ts", "event_id")
    parts = []
    for (hour,), part in frame.partition_by("_hour", as_dict=True, maintain_order=True).items():
        assert isinstance(hour, datetime)
        folder = raw_dir / f"site_id={site_id}" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        parts.append((part.drop("_hour").to_arrow().cast(RAW_EVENT_SCHEMA),
                      folder / f"part-{ident}-{number:05d}.parquet"))
    # one file per hour: written (and fsynced) side by side, since an export spans many hours
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="import-write") as pool:
        for future in [pool.submit(write_parquet_atomic, table, path) for table, path in parts]:
            future.result()
    return len(parts)


def delete(settings: Settings, store: ImportStore, record: ImportRecord, client: Any = None,
           warehouse: Any = None) -> dict[str, Any]:
    """Delete an import (``interop.unload``): through the running warehouse process (``client``)
    or a warehouse opened here; an aggregate source's own ``delete``. The record goes last, so an
    interrupted delete is finished by running it again."""
    source = source_of(record.source)
    with exclusive(settings, record.id):
        store.update(record.id, status="deleting")
        if source.writes_events:
            if client is not None:
                removed = client.call({"op": "delete_import", "site_id": record.site_id,
                                       "import_id": record.id}, timeout=3600)
            else:
                removed = warehouse.delete_import(record.site_id, record.id)
        else:
            assert source.delete is not None
            result = _function(source.delete)(record.id, settings=settings)
            removed = result if isinstance(result, dict) else {"result": result}
        store.delete(record.id)
    return dict(removed)
