"""The warehouse process that ``littlestats serve`` runs beside the gunicorn workers.

Exactly one runs per ``serve``, whatever the worker count, so there is exactly one scheduler and
one writer of the DuckDB file. It:

* owns the DuckDB file and answers read queries from the API workers over the Unix socket
  ``settings.warehouse_socket`` (``warehouse.service``);
* runs the scheduled jobs with APScheduler: seal + load every ``load_interval_seconds`` (an
  accepted event is queryable within two intervals), retention once a day;
* sweeps the WAL for segments that crashed workers left behind (as before).

It exits when its parent (``serve``) goes away or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.seal import seal_all
from littlestats.config import Settings, load_settings
from littlestats.logs import configure as configure_logging

log = logging.getLogger("littlestats.daemon")

#: Retention runs this long after start, then daily.
RETENTION_DELAY = timedelta(minutes=5)


def _job(name: str, fn: object) -> object:
    def run() -> None:
        try:
            fn()  # type: ignore[operator]
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next time", name)

    return run


def build_scheduler(warehouse: object, settings: Settings) -> BackgroundScheduler:
    """The scheduled jobs: load every ``load_interval_seconds``, full load hourly, retention daily."""
    from warehouse.service import Warehouse

    assert isinstance(warehouse, Warehouse)
    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    # Every interval: seal + load the recent partitions. Hourly (and at start): a full scan, which
    # also picks up files restored into old partitions.
    scheduler.add_job(_job("load", warehouse.scheduled_load), "interval", id="load",
                      seconds=settings.load_interval_seconds,
                      next_run_time=now + timedelta(seconds=settings.load_interval_seconds),
                      max_instances=1, coalesce=True)
    scheduler.add_job(_job("full load", warehouse.load), "interval", id="full-load", hours=1,
                      next_run_time=now, max_instances=1, coalesce=True)
    scheduler.add_job(_job("retention", warehouse.retention), "interval", id="retention",
                      hours=24, next_run_time=now + RETENTION_DELAY, max_instances=1,
                      coalesce=True)
    return scheduler


def _open_warehouse(settings: Settings, stop: threading.Event) -> object | None:
    """Open the DuckDB file, waiting while another process (a CLI job) holds its lock."""
    import duckdb

    from warehouse.service import Warehouse

    while not stop.is_set():
        try:
            return Warehouse(settings)
        except duckdb.IOException as exc:
            log.warning("warehouse database busy (%s); retrying", exc)
            stop.wait(2.0)
    return None


def run(settings: Settings) -> None:
    """Serve the warehouse and run the jobs until stopped."""
    from warehouse.service import Warehouse, WarehouseSocketServer

    stop = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings.ensure_dirs()
    warehouse = _open_warehouse(settings, stop)
    if warehouse is None:
        return
    assert isinstance(warehouse, Warehouse)
    server = WarehouseSocketServer(warehouse, settings.warehouse_socket)
    server.serve_in_thread()
    scheduler = build_scheduler(warehouse, settings)
    scheduler.start()
    log.info("warehouse serving on %s; loading every %ss", settings.warehouse_socket,
             settings.load_interval_seconds)
    interval = min(5.0, max(0.25, settings.segment_seconds / 2))  # seal rotated segments promptly
    try:
        while not stop.is_set():
            try:
                seal_all(settings.wal_dir, settings.raw_dir)
            except Exception:
                log.exception("sealing sweep failed")
            if os.getppid() != parent:
                break
            stop.wait(interval)
    finally:
        scheduler.shutdown(wait=True)
        server.close()
        warehouse.close()


if __name__ == "__main__":
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings)
