"""Erasure (the right to be forgotten): one person's events removed from every layer.

A person is named by what they can know: the tracker's visitor id (``ls_vid`` in their browser's
storage; its stored ``visitor_key`` is the site's keyed hash of it), a stored ``visitor_key``
itself, or the user id a site sent with ``identify()``. A user id stands for every visitor key
ever linked to it (an ``identify`` event of that key carried it): the person's events on each
device they identified on, from before and after they identified.

What an erasure removes, for those visitor keys on one site: every raw Parquet row (each affected
file rewritten atomically, or deleted when nothing is left in it), every ``events``,
``sessions`` and ``event_props`` row, their rows of the ``daily_*`` visitor tables, and their
contribution to every pre-aggregate (``hourly_rollup``, ``hourly_props`` and
``daily_visitor_counts`` are rebuilt from the remaining facts for the hours and visitor-days
touched, with ``warehouse.rollups``). The load manifest's row counts follow the rewritten files.

**Which events.** The erasure covers every event accepted before it started. The warehouse
process first has every ingest worker rotate its write-ahead-log segment and seals the log into
Parquet (``Warehouse.erase``), so those events are all in raw files when the plan is made; it
refuses to start (changing nothing) when a segment from before it could not be sealed. Events the
person sends while it runs, or later, are new data and are kept: raw files and warehouse agree
about them after the next load, as about any event.

**Crash safety.** The plan (site, visitor keys, the raw files to rewrite and the manifest values
they end with) is written to a journal, ``<data dir>/erasures/<id>.json``, before anything
changes. Every step after it is idempotent: a file is rewritten by filtering it again (a
rewritten file loses nothing more), the facts change in one DuckDB transaction that deletes by
visitor key and rebuilds pre-aggregates from what is left, and the manifest gets absolute
values. The journal is removed last. A kill at any point leaves the journal, and opening the
warehouse again (the next start, ``littlestats load``, or the next erasure) completes every
journalled erasure before anything else runs. The journal holds the visitor keys and user id only
while the erasure runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.identity import tracker_visitor_key
from ingest.schema import conform
from ingest.seal import write_parquet_atomic
from ingest.wal import fsync_dir
from warehouse.database import register
from warehouse.load import RawFile, discover_files, scan_raw
from warehouse.rollups import local_days_span, rebuild_days, rebuild_hours
from warehouse.spans import Spans
from warehouse.tables import (
    DAILY_EVENT_VISITORS,
    DAILY_PAGE_VISITORS,
    DAILY_SESSION_VISITORS,
    DAILY_VISITORS,
    EVENT_PROPS,
    EVENTS,
    SESSIONS,
)

log = logging.getLogger("littlestats.warehouse")

#: The journal directory, inside the data directory.
JOURNAL_DIR = "erasures"
#: Tables holding one row per event or visit of a visitor (deleted by visitor key).
FACT_TABLES = (EVENTS, SESSIONS, EVENT_PROPS)
#: Per-visitor daily tables (rebuilt for the person's visitor-days, so their rows go).
VISITOR_DAY_TABLES = (DAILY_VISITORS, DAILY_PAGE_VISITORS, DAILY_EVENT_VISITORS, DAILY_SESSION_VISITORS)

Progress = Callable[[int, int], None]
#: A step an erasure can be stopped at for crash tests (setting ``erase_fault``, ``pause:<step>``).
FAULT_STEPS = ("journal", "rewrite", "facts", "committed")


class ErasureError(RuntimeError):
    """An erasure could not start; nothing was changed. The message says what to do."""


def visitor_key_of(site_secret: bytes, visitor_id: str) -> int:
    """The stored ``visitor_key`` of the tracker's visitor id on a site (as ingest derives it)."""
    return tracker_visitor_key(site_secret, visitor_id)


@dataclass(frozen=True)
class PlannedFile:
    """A raw file holding some of the person's rows, and the load manifest's values after."""

    rel: str
    rows: int  # rows before
    removed: int
    manifest_rows: int | None = None  # None: the file is not loaded yet (nothing to adjust)
    manifest_new_events: int | None = None


@dataclass(frozen=True)
class Erasure:
    """One erasure's plan: the journal's content."""

    id: str
    site_id: str
    timezone: str
    visitor_keys: tuple[int, ...]
    by_user: bool
    started_at: str  # ISO time: events accepted before it are covered
    files: tuple[PlannedFile, ...] = ()
    wal_segments_sealed: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Erasure:
        raw = orjson.loads(data)
        raw["visitor_keys"] = tuple(raw["visitor_keys"])
        raw["files"] = tuple(PlannedFile(**f) for f in raw["files"])
        return cls(**raw)


@dataclass
class ErasureResult:
    """What an erasure did, without any personal data (it goes into the audit log)."""

    id: str
    site_id: str
    started_at: str
    visitors: int = 0
    wal_segments_sealed: int = 0
    raw_files_rewritten: int = 0
    raw_files_removed: int = 0
    raw_rows_removed: int = 0
    facts_removed: dict[str, int] = field(default_factory=dict)
    hours_rebuilt: int = 0
    visitor_days_rebuilt: int = 0
    resumed: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        facts = ", ".join(f"{n:,} {t}" for t, n in self.facts_removed.items())
        return (f"erasure {self.id}: {self.visitors} visitor keys; raw: {self.raw_rows_removed:,} rows"
                f" removed, {self.raw_files_rewritten} files rewritten, {self.raw_files_removed} removed;"
                f" warehouse: {facts or 'nothing'} removed, {self.hours_rebuilt} hours and"
                f" {self.visitor_days_rebuilt} visitor-days re-aggregated"
                f"{' (resumed after an interruption)' if self.resumed else ''}; {self.seconds:.1f} s")

    def public(self) -> dict[str, Any]:
        """The API's answer (camelCase)."""
        return {
            "id": self.id, "siteId": self.site_id, "startedAt": self.started_at,
            "visitorKeys": self.visitors, "walSegmentsSealed": self.wal_segments_sealed,
            "rawFilesRewritten": self.raw_files_rewritten, "rawFilesRemoved": self.raw_files_removed,
            "rawRowsRemoved": self.raw_rows_removed, "rowsRemoved": dict(self.facts_removed),
            "hoursRebuilt": self.hours_rebuilt, "visitorDaysRebuilt": self.visitor_days_rebuilt,
            "resumed": self.resumed, "seconds": round(self.seconds, 3), "summary": self.summary(),
        }


# The journal ---------------------------------------------------------------------------------

def journal_dir(data_dir: Path) -> Path:
    """Where journalled (unfinished) erasures are."""
    return data_dir / JOURNAL_DIR


def new_erasure_id() -> str:
    """Sorts by start time, never collides."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def write_journal(data_dir: Path, erasure: Erasure) -> Path:
    """Write the plan durably (aside, fsync, rename, fsync the directory)."""
    directory = journal_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{erasure.id}.json"
    tmp = directory / f".{erasure.id}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, erasure.to_json())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)
    return path


def pending_erasures(data_dir: Path) -> list[Erasure]:
    """Journalled erasures that did not finish (oldest first). A journal torn by a crash while it
    was written never took effect (nothing changes before it is in place) and is removed."""
    directory = journal_dir(data_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            path.unlink(missing_ok=True)  # a journal being written when the process died
            continue
        if path.suffix == ".json":
            found.append(Erasure.from_json(path.read_bytes()))
    return found


def _remove_journal(data_dir: Path, erasure: Erasure) -> None:
    directory = journal_dir(data_dir)
    (directory / f"{erasure.id}.json").unlink(missing_ok=True)
    fsync_dir(directory)


def fault_point(fault: str, step: str, run_dir: Path) -> None:
    """A testing hook (setting ``erase_fault``): with ``pause:<step>``, announce the step (a file
    ``<run dir>/erase-paused-<step>`` and a line on stderr) and wait there until killed, so tests
    can kill -9 the process at a known point."""
    if fault != f"pause:{step}":
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"erase-paused-{step}").touch()
    os.write(2, f"erase: paused at {step}\n".encode())
    while True:
        time.sleep(60)


# Finding the person's data -----------------------------------------------------------------

def site_raw_files(raw_dir: Path, site_id: str) -> list[RawFile]:
    """Every raw Parquet file of the site."""
    return [f for f in discover_files(raw_dir) if f.site_id == site_id]


def linked_visitor_keys(
    con: duckdb.DuckDBPyConnection, files: list[RawFile], site_id: str, user_id: str
) -> set[int]:
    """Every visitor key an event with ``user_id`` carries: in the raw files, and in the facts
    (which keep it on later events and visits of the visitor)."""
    keys: set[int] = set()
    if files:
        found = (scan_raw([f.path for f in files])
                 .filter(pl.col("user_id") == user_id).select("visitor_key").unique().collect())
        keys.update(int(k) for k in found["visitor_key"].to_list())
    for table in (EVENTS, SESSIONS):
        rows = con.execute(
            f"SELECT DISTINCT visitor_key FROM {table.name} WHERE site_id = ? AND user_id = ?",  # noqa: S608
            [site_id, user_id],
        ).fetchall()
        keys.update(int(r[0]) for r in rows)
    return keys


def plan_raw(files: list[RawFile], keys: Iterable[int]) -> list[tuple[RawFile, int, int]]:
    """``(file, rows, rows of the person)`` for each file holding any of ``keys``."""
    keys = sorted(set(keys))
    if not files or not keys:
        return []
    by_path = {str(f.path): f for f in files}
    counts = (
        scan_raw([f.path for f in files], include_file_paths="_file")
        .select("_file", pl.col("visitor_key").is_in(pl.Series(keys, dtype=pl.UInt64).implode()).alias("hit"))
        .group_by("_file").agg(pl.len().alias("rows"), pl.col("hit").sum().alias("removed"))
        .filter(pl.col("removed") > 0)
        .sort("_file")
        .collect()
    )
    return [(by_path[p], int(rows), int(removed)) for p, rows, removed in counts.iter_rows()]


def rewrite_raw_file(path: Path, keys: Iterable[int]) -> tuple[int, int]:
    """Rewrite one raw file without the rows of ``keys`` (new file written aside, fsynced, renamed
    over the old one), or delete it when none would be left. ``(rows removed, rows left)``;
    ``(0, n)`` for a file already rewritten, ``(0, 0)`` for one already deleted."""
    try:
        table = conform(pq.read_table(path))
    except FileNotFoundError:
        return 0, 0
    hit = pc.is_in(table["visitor_key"], value_set=pa.array(sorted(set(keys)), pa.uint64()))
    kept = table.filter(pc.invert(hit))
    removed = table.num_rows - kept.num_rows
    if removed == 0:
        return 0, table.num_rows
    if kept.num_rows == 0:
        os.unlink(path)
        fsync_dir(path.parent)
    else:
        write_parquet_atomic(kept, path)
    return removed, kept.num_rows


# The erasure ---------------------------------------------------------------------------------

def plan_erasure(
    con: duckdb.DuckDBPyConnection, raw_dir: Path, site_id: str, timezone: str,
    visitor_keys: Iterable[int], user_id: str | None, started_at: datetime, wal_segments_sealed: int = 0,
) -> Erasure:
    """Resolve the person's visitor keys and find every raw file to rewrite (changes nothing)."""
    files = site_raw_files(raw_dir, site_id)
    keys = {int(k) for k in visitor_keys}
    if user_id is not None:
        keys |= linked_visitor_keys(con, files, site_id, user_id)
    planned = plan_raw(files, keys)
    manifest = {}
    if planned:
        rels = [f.rel for f, _, _ in planned]
        manifest = {r[0]: (int(r[1]), int(r[2])) for r in con.execute(
            "SELECT path, rows, new_events FROM loaded_files WHERE site_id = ? AND list_contains(?, path)",
            [site_id, rels],
        ).fetchall()}
    plan = []
    for f, rows, removed in planned:
        loaded = manifest.get(f.rel)
        plan.append(PlannedFile(
            f.rel, rows, removed,
            None if loaded is None else rows - removed,
            None if loaded is None else max(loaded[1] - removed, 0),
        ))
    return Erasure(new_erasure_id(), site_id, timezone, tuple(sorted(keys)), user_id is not None,
                   started_at.isoformat(), tuple(plan), wal_segments_sealed)


def apply_erasure(
    con: duckdb.DuckDBPyConnection, data_dir: Path, raw_dir: Path, erasure: Erasure,
    progress: Progress | None = None, fault: str = "", resumed: bool = False,
) -> ErasureResult:
    """Carry out a journalled plan (idempotent: also completes one a crash interrupted)."""
    started = time.monotonic()
    result = ErasureResult(erasure.id, erasure.site_id, erasure.started_at, len(erasure.visitor_keys),
                           erasure.wal_segments_sealed, resumed=resumed)
    total = len(erasure.files) + 1
    if progress:
        progress(0, total)
    for i, planned in enumerate(erasure.files, 1):
        removed, left = rewrite_raw_file(raw_dir / planned.rel, erasure.visitor_keys)
        result.raw_rows_removed += removed
        if removed and left:
            result.raw_files_rewritten += 1
        elif removed:
            result.raw_files_removed += 1
        if progress:
            progress(i, total)
        if i == 1:
            fault_point(fault, "rewrite", data_dir / "run")
    if erasure.visitor_keys:
        erase_facts(con, erasure, result, fault, data_dir / "run")
    fault_point(fault, "committed", data_dir / "run")
    _remove_journal(data_dir, erasure)
    if progress:
        progress(total, total)
    result.seconds = time.monotonic() - started
    return result


def erase_facts(
    con: duckdb.DuckDBPyConnection, erasure: Erasure, result: ErasureResult, fault: str = "",
    run_dir: Path | None = None,
) -> None:
    """Delete the person's facts and daily rows and rebuild the pre-aggregates they touched, with
    the load manifest's new values: one transaction."""
    keys = pl.DataFrame({"site_id": [erasure.site_id] * len(erasure.visitor_keys),
                         "visitor_key": list(erasure.visitor_keys)},
                        schema={"site_id": pl.String, "visitor_key": pl.UInt64})
    person = ("SEMI JOIN erase_keys k ON t.site_id = k.site_id AND t.visitor_key = k.visitor_key")
    con.begin()
    try:
        register(con, "erase_keys_in", keys)
        con.execute("CREATE OR REPLACE TEMP TABLE erase_keys AS SELECT * FROM erase_keys_in")
        con.execute("CREATE OR REPLACE TEMP TABLE site_tz AS SELECT ?::VARCHAR AS site_id, ?::VARCHAR AS tz",
                    [erasure.site_id, erasure.timezone])
        # The buckets the person's facts and daily rows are in; the daily tables may reach
        # further back than the facts (pre-aggregates outlive retention), and their rows there go too.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE affected_hours AS
            SELECT DISTINCT t.site_id, date_trunc('hour', t.ts) AS hour FROM events t {person}
            UNION SELECT DISTINCT t.site_id, date_trunc('hour', t.started_at) FROM sessions t {person}
        """)  # noqa: S608
        days_sql = " UNION ".join(
            [f"SELECT DISTINCT t.site_id, t.visitor_key, t.local_date FROM {table.name} t {person}"  # noqa: S608
             for table in VISITOR_DAY_TABLES]
            + ["SELECT DISTINCT t.site_id, t.visitor_key, timezone(z.tz, t.ts)::DATE FROM events t"  # noqa: S608
               f" JOIN site_tz z ON t.site_id = z.site_id {person}"]
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE affected_days AS {days_sql}")
        hour_lo, hour_hi, hours = con.execute(
            "SELECT min(hour), max(hour), count(*) FROM affected_hours").fetchall()[0]
        day_lo, day_hi, days = con.execute(
            "SELECT min(local_date), max(local_date), count(*) FROM affected_days").fetchall()[0]
        for table in FACT_TABLES:
            removed = con.execute(
                f"DELETE FROM {table.name} t USING erase_keys k"  # noqa: S608
                " WHERE t.site_id = k.site_id AND t.visitor_key = k.visitor_key").fetchall()[0][0]
            result.facts_removed[table.name] = int(removed)
        for table in VISITOR_DAY_TABLES:
            result.facts_removed[table.name] = int(con.execute(
                f"SELECT count(*) FROM {table.name} t {person}").fetchall()[0][0])  # noqa: S608
        if hours:
            rebuild_hours(con, Spans.of(hour_lo, hour_hi + timedelta(hours=1)))
        if days:
            rebuild_days(con, Spans.of(*_day_bounds(day_lo, day_hi, erasure.timezone)))
        result.hours_rebuilt, result.visitor_days_rebuilt = int(hours), int(days)
        for planned in erasure.files:
            if planned.manifest_rows is None:
                continue
            if planned.manifest_rows == 0:
                con.execute("DELETE FROM loaded_files WHERE site_id = ? AND path = ?",
                            [erasure.site_id, planned.rel])
            else:
                con.execute("UPDATE loaded_files SET rows = ?, new_events = ? WHERE site_id = ? AND path = ?",
                            [planned.manifest_rows, planned.manifest_new_events, erasure.site_id, planned.rel])
        if run_dir is not None:
            fault_point(fault, "facts", run_dir)
        con.commit()
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise
    finally:
        con.unregister("erase_keys_in")
    # The deleted rows may still be in DuckDB's own log (a recent load inserted them): writing it
    # into the database file now leaves them nowhere but in free blocks, which later writes reuse.
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:  # a read transaction is open: the next automatic checkpoint does it
        log.info("erasure %s: checkpoint deferred (%s)", erasure.id, exc)



def _day_bounds(first: date, last: date, zone: str) -> tuple[datetime, datetime]:
    """The UTC span of the site-local days ``first``..``last`` (``rebuild_days``' bounds)."""
    tz = ZoneInfo(zone)
    lo = datetime.combine(first, day_time(), tz).astimezone(UTC)
    hi = datetime.combine(last, day_time(12), tz).astimezone(UTC)
    return local_days_span(lo, hi, {zone})


def finish_pending(
    con: duckdb.DuckDBPyConnection, data_dir: Path, raw_dir: Path, fault: str = ""
) -> list[ErasureResult]:
    """Complete every journalled erasure (at the warehouse's start, before anything else)."""
    results = []
    for erasure in pending_erasures(data_dir):
        log.warning("erasure %s was interrupted; completing it", erasure.id)
        result = apply_erasure(con, data_dir, raw_dir, erasure, fault=fault, resumed=True)
        log.warning("%s", result.summary())
        results.append(result)
    return results
