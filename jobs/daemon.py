"""The warehouse process that ``littlestats serve`` runs beside the gunicorn workers.

Exactly one runs per ``serve``, whatever the worker count, so there is exactly one scheduler and
one writer of the DuckDB file. It:

* owns the DuckDB file and answers read queries from the API workers over the Unix socket
  ``settings.warehouse_socket`` (``warehouse.service``);
* runs the scheduled jobs with APScheduler: seal + load every ``load_interval_seconds`` (an
  accepted event is queryable within two intervals), retention once a day, and every minute the
  notifications (``notify.schedule``: due reports, alerts, goal conversions, webhook retries);
* sweeps the WAL for segments that crashed workers left behind (as before).

It exits when its parent (``serve``) goes away or on SIGTERM/SIGINT, and with status
``EXIT_REOPEN`` when DuckDB has invalidated the database after a failed write (a full disk): the
supervisor in ``serve`` (``littlestats.server.Supervisor``) then starts it again, which reopens
the file and replays DuckDB's log. While the disk is full, loads fail and are retried at their next
time; nothing is lost, as the raw Parquet files and the WAL stay until loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.seal import seal_all
from littlestats.config import Settings, load_settings
from littlestats.disk import DISK
from littlestats.logs import configure as configure_logging

if TYPE_CHECKING:
    from warehouse.service import Warehouse

log = logging.getLogger("littlestats.daemon")

#: Retention runs this long after start, then daily.
RETENTION_DELAY = timedelta(minutes=5)

#: Notifications (reports, alerts, webhooks) are looked at this often.
NOTIFY_INTERVAL = timedelta(minutes=1)

#: Exit status asking the supervisor for a fresh process: DuckDB invalidated the database.
EXIT_REOPEN = 3

#: How long to wait between attempts to open the database (busy, or the disk full).
OPEN_RETRY_SECONDS = 2.0


def database_invalidated(exc: BaseException) -> bool:
    """Whether DuckDB refuses every further use of this connection (after a failed write)."""
    import duckdb

    return isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc)


def _job(name: str, fn: object, reopen: threading.Event | None = None) -> object:
    def run() -> None:
        try:
            fn()  # type: ignore[operator]
        except Exception as exc:
            if reopen is not None and database_invalidated(exc):
                log.error("scheduled job %s failed and DuckDB invalidated the database (%s); "
                          "restarting the warehouse process to reopen it", name, exc)
                reopen.set()
            elif not DISK.failed("load", exc):
                log.exception("scheduled job %s failed; it runs again at its next time", name)

    return run


def build_scheduler(warehouse: object, settings: Settings,
                    reopen: threading.Event | None = None) -> BackgroundScheduler:
    """The scheduled jobs: load every ``load_interval_seconds``, full load hourly, retention daily,
    notifications every minute.

    ``reopen`` is set when a job finds the database invalidated by DuckDB.
    """
    from warehouse.service import Warehouse

    assert isinstance(warehouse, Warehouse)
    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    # Every interval: seal + load the recent partitions. Hourly (and at start): a full scan, which
    # also picks up files restored into old partitions.
    scheduler.add_job(_job("load", warehouse.scheduled_load, reopen), "interval", id="load",
                      seconds=settings.load_interval_seconds,
                      next_run_time=now + timedelta(seconds=settings.load_interval_seconds),
                      max_instances=1, coalesce=True)
    scheduler.add_job(_job("full load", warehouse.load, reopen), "interval", id="full-load",
                      hours=1, next_run_time=now, max_instances=1, coalesce=True)
    scheduler.add_job(_job("retention", warehouse.retention, reopen), "interval", id="retention",
                      hours=24, next_run_time=now + RETENTION_DELAY, max_instances=1,
                      coalesce=True)
    from notify.schedule import run_scheduled

    scheduler.add_job(_job("notifications", lambda: run_scheduled(settings, warehouse), reopen), "interval",
                      id="notify", seconds=NOTIFY_INTERVAL.total_seconds(), next_run_time=now + NOTIFY_INTERVAL,
                      max_instances=1, coalesce=True)
    return scheduler


def warehouse_type(settings: Settings) -> type[Warehouse]:
    """What the warehouse process (and a job run by hand) opens: the local DuckDB file, or on a
    cluster node with a shared catalog the lake, loading under the cluster's load lease
    (``cluster.jobs``). A node with only object storage or a broker keeps its own file."""
    if settings.catalog_dsn:
        from cluster.jobs import ClusterWarehouse

        return ClusterWarehouse
    from warehouse.service import Warehouse

    return Warehouse


def _open_warehouse(settings: Settings, stop: threading.Event) -> object | None:
    """Open the DuckDB file, waiting while another process (a CLI job) holds its lock, or while
    the disk is too full to open (or create) it."""
    import duckdb

    opener = warehouse_type(settings)
    while not stop.is_set():
        try:
            warehouse = opener(settings)
        except duckdb.IOException as exc:
            if not DISK.failed("load", exc, settings.warehouse_db):
                log.warning("warehouse database busy (%s); retrying", exc)
        except duckdb.Error as exc:
            if not DISK.failed("load", exc, settings.warehouse_db):
                log.error("cannot open the warehouse database %s (%s); retrying every %.0f s",
                          settings.warehouse_db, exc, OPEN_RETRY_SECONDS)
        else:
            DISK.succeeded()
            return warehouse
        stop.wait(OPEN_RETRY_SECONDS)
    return None


def _raw_upload(settings: Settings) -> Callable[[], object] | None:
    """On a cluster node (``s3_endpoint`` set): the pass that uploads the sealed raw files to
    object storage after each sealing pass (``cluster.objectstore``); ``None`` on one machine."""
    if not settings.s3_endpoint:
        return None
    from cluster.objectstore import raw_uploader

    return raw_uploader(settings)


def run(settings: Settings) -> int:
    """Serve the warehouse and run the jobs until stopped; the exit status (``EXIT_REOPEN``
    when the database must be reopened by a new process)."""
    from warehouse.service import Warehouse, WarehouseSocketServer

    stop = threading.Event()
    reopen = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings.ensure_dirs()
    warehouse = _open_warehouse(settings, stop)
    if warehouse is None:
        return 0
    assert isinstance(warehouse, Warehouse)
    server = WarehouseSocketServer(warehouse, settings.warehouse_socket)
    server.serve_in_thread()
    scheduler = build_scheduler(warehouse, settings, reopen)
    scheduler.start()
    log.info("warehouse serving on %s; loading every %ss", settings.warehouse_socket,
             settings.load_interval_seconds)
    interval = min(5.0, max(0.25, settings.segment_seconds / 2))  # seal rotated segments promptly
    upload = _raw_upload(settings)
    try:
        while not stop.is_set() and not reopen.is_set():
            try:
                seal_all(settings.wal_dir, settings.raw_dir)
            except Exception:
                log.exception("sealing sweep failed")
            if upload is not None:
                try:
                    upload()
                except Exception:
                    log.exception("raw upload to object storage failed; it is retried")
            DISK.recheck(settings.data_dir)
            if os.getppid() != parent:
                break
            stop.wait(interval)
    finally:
        scheduler.shutdown(wait=True)
        server.close()
        with contextlib.suppress(Exception):  # an invalidated database may refuse to close
            warehouse.close()
    return EXIT_REOPEN if reopen.is_set() and not stop.is_set() else 0


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run(settings))


if __name__ == "__main__":
    main()
