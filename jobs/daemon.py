"""The warehouse process that ``littlestats serve`` runs beside the gunicorn workers.

Exactly one runs per ``serve``. It seals WAL segments that crashed workers left behind and runs
the scheduled jobs. It exits when its parent (``serve``) goes away.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from ingest.seal import seal_all
from littlestats.config import Settings, load_settings

log = logging.getLogger("littlestats.daemon")


def run(settings: Settings) -> None:
    stop = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interval = max(1.0, settings.segment_seconds / 2)
    while not stop.is_set():
        try:
            seal_all(settings.wal_dir, settings.raw_dir)
        except Exception:
            log.exception("sealing sweep failed")
        if os.getppid() != parent:
            break
        stop.wait(interval)


if __name__ == "__main__":
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(settings)
