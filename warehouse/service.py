"""The warehouse owner: one process holds the DuckDB file, loads into it and answers queries.

``Warehouse`` wraps the connection: loads, retention, re-aggregation and purges are serialised by
one write lock and run on a dedicated cursor; every read query runs on a fresh cursor inside a
``READ ONLY`` transaction, so it sees one committed snapshot (DuckDB MVCC) while a load runs.

``WarehouseSocketServer`` serves the ``warehouse.protocol`` frames on ``settings.warehouse_socket``
(mode 0600) with a thread per connection. ``jobs.daemon`` runs both inside ``littlestats serve``;
the CLI uses ``Warehouse`` directly when no daemon is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socketserver
import threading
import time as time_module
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from ingest.rotation import rotate_active_segments
from ingest.seal import deleted_sites, mark_site_deleted, seal_all, unmark_site_deleted
from ingest.wal import sealable_segments
from littlestats.config import Settings
from littlestats.controlplane import ControlPlane
from warehouse.compact import compact_raw
from warehouse.database import connect
from warehouse.erase import (
    ErasureError,
    ErasureResult,
    apply_erasure,
    finish_pending,
    plan_erasure,
    write_journal,
)
from warehouse.erase import fault_point as erase_fault_point
from warehouse.layout import loaded_closed_days, resort_closed_days, resort_days
from warehouse.load import LoadResult, discover_files, load_pending, pending_files
from warehouse.protocol import (
    KIND_ARROW,
    KIND_JSON,
    WarehouseError,
    arrow_frame,
    decode_params,
    error_frame,
    frame,
    json_frame,
    read_frame,
)
from warehouse.retention import (
    RetentionResult,
    apply_retention,
    is_expired,
    purge_site_data,
)
from warehouse.rollups import reaggregate
from warehouse.sql import SqlAnswer, run_readonly
from warehouse.tables import recreate_stale_preaggregates

log = logging.getLogger("littlestats.warehouse")

Progress = Callable[[int, int], None]


class Warehouse:
    """The DuckDB file opened for writing, with the jobs that change it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.con = connect(settings.warehouse_db, threads=settings.warehouse_threads or None,
                           memory_limit=settings.warehouse_memory_limit or None,
                           checkpoint_threshold=settings.warehouse_checkpoint_threshold or None)
        self.writer = self.con.cursor()
        self.write_lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        self._upgrade_preaggregates()
        # An erasure a crash interrupted is completed before anything reads or loads.
        finish_pending(self.writer, settings.data_dir, settings.raw_dir)

    def _upgrade_preaggregates(self) -> None:
        """Rebuild, from the facts, pre-aggregates written by an earlier version's schema."""
        stale = recreate_stale_preaggregates(self.writer)
        if not stale:
            return
        first, last = self.writer.execute("SELECT min(ts), max(ts) FROM events").fetchall()[0]
        log.warning("pre-aggregates %s were written by an earlier version: rebuilding them from the"
                    " facts (%s .. %s)", ", ".join(stale), first, last)
        if first is not None:
            hours, days = self.reaggregate(first.astimezone(UTC).date(), last.astimezone(UTC).date())
            log.warning("pre-aggregates rebuilt: %s hours, %s visitor-days", f"{hours:,}", f"{days:,}")

    # Site settings come from the control plane at every job, so changes apply without restarts.
    def _sites(self) -> tuple[dict[str, str], dict[str, int]]:
        store = ControlPlane(self.settings.control_db)
        try:
            sites = store.list_sites()
        finally:
            store.close()
        return {s.id: s.timezone for s in sites}, {s.id: s.retention_days for s in sites}

    def _forget_deleted_sites(self) -> set[str]:
        """Every deleted site (the control plane's list, copied into the raw store's for sealing),
        with any raw directory of one removed: events a worker accepted while the site was being
        deleted, sealed since, are never loaded. Called under the write lock."""
        store = ControlPlane(self.settings.control_db)
        try:
            deleted = store.deleted_site_ids()
        finally:
            store.close()
        raw_dir = self.settings.raw_dir
        marked = deleted_sites(raw_dir)
        for site_id in deleted - marked:
            mark_site_deleted(raw_dir, site_id)
        for site_id in marked - deleted:  # a delete that failed and was undone
            unmark_site_deleted(raw_dir, site_id)
        for site_id in deleted:
            leftover = raw_dir / f"site_id={site_id}"
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
                log.info("removed raw files of deleted site %s", site_id)
        return deleted

    def load(
        self, start: date | None = None, end: date | None = None, progress: Progress | None = None,
        seal: bool = True, recent_days: int | None = None,
    ) -> LoadResult:
        """Seal finished WAL segments, load every raw file not loaded yet (exactly once), then
        merge the loaded part files of closed hours into one file per hour (``warehouse.compact``).

        ``start`` / ``end`` restrict the load to partitions of those UTC dates (backfill);
        ``recent_days`` to the last few days' partitions (the scheduled load: events are accepted
        at most 24 h late, so older partitions receive no new files).
        """
        if recent_days is not None:
            start = (datetime.now(UTC) - timedelta(days=recent_days)).date()
        if seal:
            seal_all(self.settings.wal_dir, self.settings.raw_dir)
        tz, retention = self._sites()
        now = datetime.now(UTC)

        def wanted(hour: datetime, site_id: str) -> bool:
            return not is_expired(hour, retention.get(site_id, 0), now)

        with self.write_lock:
            deleted = self._forget_deleted_sites()
            files = [f for f in discover_files(self.settings.raw_dir, start, end)
                     if f.site_id not in deleted and wanted(f.partition_hour, f.site_id)]
            pending = pending_files(self.writer, files)
            result = load_pending(self.writer, self.settings.raw_dir, tz, files=pending,
                                  progress=progress, chunk_rows=self.settings.load_chunk_rows)
            compacted = compact_raw(self.writer, self.settings.raw_dir, files=files)
            # rows of closed days (a backfill): grouped by site now, as the daily run would not
            resorted = resort_days(self.writer, loaded_closed_days({f.partition_hour.date() for f in pending}))
        if result.files:
            log.info("load: %s", result.summary())
        if compacted.hours or compacted.skipped_mixed:
            log.info("raw compaction: %s", compacted.summary())
        if resorted:
            log.info("row order: the loaded closed days' rows grouped by site (%s)",
                     ", ".join(f"{t} {n:,}" for t, n in resorted.items()))
        return result

    def rotate_active_segments(self) -> list[Path]:
        """Have every running worker rotate its active WAL segment now, so that a load by hand sees
        every event accepted before it started (``ingest.rotation``); the segments whose workers
        did not rotate in time (normally none)."""
        return rotate_active_segments(self.settings.wal_dir, self.settings.run_dir)

    def scheduled_load(self) -> LoadResult:
        """The every-minute load: recent partitions only (a full scan runs hourly)."""
        return self.load(recent_days=2)

    def reaggregate(self, start: date, end: date) -> tuple[int, int]:
        """Rebuild the pre-aggregates of UTC dates ``start``..``end`` (inclusive) from the facts."""
        tz, _ = self._sites()
        lo = datetime.combine(start, time(), UTC)
        hi = datetime.combine(end + timedelta(days=1), time(), UTC)
        with self.write_lock:
            return reaggregate(self.writer, tz, lo, hi)

    def retention(self, now: datetime | None = None) -> RetentionResult:
        """Apply every site's retention and the pre-aggregate retention."""
        _, retention = self._sites()
        with self.write_lock:
            result = apply_retention(self.writer, self.settings.raw_dir, retention,
                                     self.settings.rollup_retention_days, now)
        log.info("retention: %s", result.summary())
        self.resort_closed_days(now)
        return result

    def resort_closed_days(self, now: datetime | None = None) -> dict[str, int]:
        """Group the rows of the last closed days by site (``warehouse.layout``): the daily
        retention run calls it after removing what expired."""
        with self.write_lock:
            started = time_module.monotonic()
            done = resort_closed_days(self.writer, (now or datetime.now(UTC)).date())
        if done:
            log.info("row order: %s rows of the closed days grouped by site in %.1f s",
                     ", ".join(f"{t} {n:,}" for t, n in done.items()), time_module.monotonic() - started)
        return done

    def purge_site(self, site_id: str) -> int:
        """Remove everything of a deleted site (raw Parquet, facts, pre-aggregates, load manifest).

        The site is first listed as deleted in the raw store, so that sealing drops its events
        still in the write-ahead log; a load skips (and removes) any raw file of it sealed since.
        """
        with self.write_lock:
            mark_site_deleted(self.settings.raw_dir, site_id)
            try:
                return purge_site_data(self.writer, self.settings.raw_dir, site_id)
            except BaseException:
                unmark_site_deleted(self.settings.raw_dir, site_id)
                raise

    def erase(
        self, site_id: str, visitor_keys: list[int], user_id: str | None = None,
        progress: Progress | None = None, seal_wait_seconds: float = 30.0,
    ) -> ErasureResult:
        """Erase one person's events from every layer (``warehouse.erase``): the visitor keys, and
        with ``user_id`` every visitor key linked to it. Ingest goes on; loads wait meanwhile.

        First every worker rotates its WAL segment and the log is sealed, so every event accepted
        before now is in Parquet; ``ErasureError`` (nothing changed) when that cannot be done.
        """
        tz, _ = self._sites()
        if site_id not in tz:
            raise ErasureError(f"site {site_id!r} not found")
        started = datetime.now(UTC)
        wal_dir, raw_dir = self.settings.wal_dir, self.settings.raw_dir
        before = {p.name.split(".")[0] for p in sealable_segments(wal_dir)}
        late = self.rotate_active_segments()
        if late:
            raise ErasureError(f"{len(late)} ingest workers did not hand over their write-ahead-log segment in"
                               " time (stopped or overloaded); nothing was erased: retry in a minute")
        sealed = 0
        deadline = time_module.monotonic() + seal_wait_seconds
        while True:
            sealed += len(seal_all(wal_dir, raw_dir))
            # a segment another process is sealing right now is skipped by this pass: wait for it
            waiting = before & {p.name.split(".")[0] for p in sealable_segments(wal_dir)}
            if not waiting:
                break
            if time_module.monotonic() > deadline:
                raise ErasureError(f"{len(waiting)} write-ahead-log segments from before the erasure could not be"
                                   " sealed into Parquet (see the log); nothing was erased: retry once they are")
            time_module.sleep(0.2)
        with self.write_lock:
            erasure = plan_erasure(self.writer, raw_dir, site_id, tz[site_id], visitor_keys, user_id, started,
                                   sealed)
            write_journal(self.settings.data_dir, erasure)
            erase_fault_point(self.settings.erase_fault, "journal", self.settings.run_dir)
            result = apply_erasure(self.writer, self.settings.data_dir, raw_dir, erasure, progress,
                                   fault=self.settings.erase_fault)
        log.info("%s", result.summary())
        return result
    def import_aggregates(self, site_id: str, import_id: str, files: dict[str, Path]) -> dict[str, int]:
        """Store an import's staged daily aggregates in place of its earlier rows
        (``warehouse.imported``); the rows stored per table."""
        from warehouse.imported import store_import

        with self.write_lock:
            return store_import(self.writer, site_id, import_id, files)

    def delete_aggregates(self, import_id: str) -> int:
        """Remove an import's aggregates; how many rows."""
        from warehouse.imported import delete_import

        with self.write_lock:
            return delete_import(self.writer, import_id)

    def delete_import(self, site_id: str, import_id: str) -> dict[str, Any]:
        """Remove an import's raw files and facts and rebuild what they touched
        (``interop.unload``)."""
        from interop.unload import remove_import

        tz, _ = self._sites()
        with self.write_lock:
            return remove_import(self.writer, self.settings.raw_dir, site_id, import_id, tz)

    def query_sync(self, sql: str, params: Any = None) -> Any:
        """``query_arrow`` as rows: the same interface as ``WarehouseClient.query_sync``, so code that
        reads through the running warehouse process also reads a file opened here."""
        from warehouse.client import QueryResult

        return QueryResult.from_arrow(self.query_arrow(sql, params))

    def query_arrow(self, sql: str, params: Any = None) -> pa.Table:
        """Run a read-only query on its own cursor and snapshot."""
        with self._cursor_lock:
            cur = self.con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                return cur.sql(sql, params=params).to_arrow_table()
            finally:
                cur.execute("ROLLBACK")
        finally:
            cur.close()

    def analyst_sql(self, sql: str, sites: list[str] | None, time_limit: float | None = None,
                    max_rows: int | None = None) -> SqlAnswer:
        """An analyst's read-only query (``warehouse.sql``), within the configured time and row
        limits (a request may ask for less); ``sites`` limits it to those sites' rows."""
        limit = self.settings.sql_time_limit_seconds
        rows = self.settings.sql_max_rows
        return run_readonly(self.con, sql, sites,
                            time_limit=min(time_limit or limit, limit), max_rows=min(max_rows or rows, rows))

    def snapshot(self, staging: Path) -> dict[str, int]:
        """Freeze a copy of the warehouse file and links to every raw file into ``staging``, with
        no load, compaction or retention in between (``littlestats.backup``)."""
        from littlestats.backup import freeze

        with self.write_lock:
            return freeze(self.writer, self.settings, staging)

    def checkpoint(self) -> None:
        """Write the WAL into the database file."""
        with self.write_lock:
            self.writer.execute("CHECKPOINT")

    def close(self) -> None:
        """Close the database."""
        with self.write_lock:
            self.writer.close()
            self.con.close()


class _Handler(socketserver.BaseRequestHandler):
    server: WarehouseSocketServer

    def handle(self) -> None:
        try:
            kind, payload = read_frame(self.request)
        except (ConnectionError, OSError):
            return
        try:
            if kind != KIND_JSON:
                raise WarehouseError("expected a JSON request")
            answer = self.server.dispatch(orjson.loads(payload))
        except Exception as exc:  # every failure goes back to the caller, never kills the server
            answer = error_frame(exc)
        with contextlib.suppress(OSError):
            self.request.sendall(answer)


class WarehouseSocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers ``warehouse.protocol`` requests on a Unix socket, one thread per connection."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a dashboard asks ~12 questions at once per worker,
    # and while a load holds the GIL the accept thread falls behind; a full backlog refuses the
    # worker's non-blocking connect (EAGAIN), which the API answers with a 503.
    request_queue_size = 256

    def __init__(self, warehouse: Warehouse, path: Path) -> None:
        self.warehouse = warehouse
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        self.path = path

    def dispatch(self, request: dict[str, Any]) -> bytes:
        """Run one request and return the answer frame."""
        op = request.get("op")
        wh = self.warehouse
        if op == "query":
            table = wh.query_arrow(request["sql"], decode_params(request.get("params")))
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return frame(KIND_ARROW, sink.getvalue().to_pybytes())
        if op == "sql":
            sites = request.get("sites")
            answer = wh.analyst_sql(str(request["sql"]), None if sites is None else [str(s) for s in sites],
                                    request.get("time_limit"), request.get("max_rows"))
            return arrow_frame(answer.table, {b"truncated": b"true" if answer.truncated else b"false",
                                              b"types": orjson.dumps(answer.types)})
        if op == "ping":
            return json_frame("pong")
        if op == "load":
            start = request.get("start")
            end = request.get("end")
            late = wh.rotate_active_segments() if request.get("rotate") else []
            result = wh.load(date.fromisoformat(start) if start else None,
                             date.fromisoformat(end) if end else None)
            return json_frame({"summary": result.summary(), "new_events": result.new_events,
                               "files": result.files, "late_segments": [p.name for p in late]})
        if op == "reaggregate":
            hours, days = wh.reaggregate(date.fromisoformat(request["start"]),
                                         date.fromisoformat(request["end"]))
            return json_frame({"summary": f"rebuilt {hours} hours and {days} visitor-days"})
        if op == "retention":
            return json_frame({"summary": wh.retention().summary()})
        if op == "snapshot":
            from littlestats.backup import is_staging_dir

            staging = Path(str(request.get("dir")))
            if not is_staging_dir(wh.settings, staging):
                raise WarehouseError(f"a snapshot goes into a new backup-* directory of {wh.settings.run_dir}")
            return json_frame(wh.snapshot(staging))
        if op == "erase":
            keys = [int(k) for k in request.get("visitor_keys") or []]
            user = request.get("user_id")
            return json_frame(wh.erase(str(request["site_id"]), keys, None if user is None else str(user)).public())
        if op == "import_aggregates":
            from warehouse.imported import staging_dir

            root = staging_dir(wh.settings.run_dir).resolve()
            files = {str(k): Path(str(v)).resolve() for k, v in dict(request["files"]).items()}
            if any(not f.is_relative_to(root) for f in files.values()):
                raise WarehouseError(f"staged import files must lie under {root}")
            stored = wh.import_aggregates(str(request["site_id"]), str(request["import_id"]), files)
            return json_frame({"summary": f"stored {sum(stored.values())} rows", "rows": stored})
        if op == "delete_aggregates":
            removed = wh.delete_aggregates(str(request["import_id"]))
            return json_frame({"summary": f"removed {removed} rows", "rows": removed})
        if op == "purge_site":
            removed = wh.purge_site(str(request["site_id"]))
            return json_frame({"summary": f"removed {removed} rows", "rows": removed})
        if op == "delete_import":
            return json_frame(wh.delete_import(str(request["site_id"]), str(request["import_id"])))
        raise WarehouseError(f"unknown operation {op!r}")

    def serve_in_thread(self) -> threading.Thread:
        """Serve until ``shutdown()`` in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="warehouse-socket", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
