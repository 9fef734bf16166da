"""``littlestats serve``: gunicorn with uvicorn workers, plus the one warehouse process.

gunicorn's master forks ``workers`` ASGI workers that ingest, query and stream. Beside them runs
exactly one warehouse process (``jobs.daemon``), whatever the worker count: it owns the DuckDB file,
runs the scheduled jobs and seals WAL segments that crashed workers left behind.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from api import live_service
from api.auth import ensure_admin_token
from ingest.seal import seal_all
from littlestats.app import create_app
from littlestats.config import ConfigError, Settings
from littlestats.logs import logging_config
from littlestats.permissions import PRIVATE_UMASK, make_private, use_private_umask

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GunicornServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.options = options or {}
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        config = {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
            "workers": s.workers,
            "worker_class": "littlestats.worker.Worker",
            "graceful_timeout": 20,
            "timeout": 60,
            "keepalive": 5,
            "loglevel": s.log_level,
            "logconfig_dict": logging_config(s.log_level, s.log_format),
            "accesslog": None,
            "proc_name": "littlestats",
            "umask": PRIVATE_UMASK,
            **self.options,
        }
        for key, value in config.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.settings)


def prepare(settings: Settings) -> None:
    """Checks and chores before any worker starts."""
    if settings.dev and not is_loopback(settings.host):
        raise ConfigError(
            f"--dev turns authentication off, so it only listens on loopback; "
            f"use --host 127.0.0.1 instead of {settings.host}"
        )
    use_private_umask()
    settings.ensure_dirs()
    make_private(settings.data_dir)  # fixes, and logs, what an earlier version left readable
    ensure_admin_token(settings)
    recovered = seal_all(settings.wal_dir, settings.raw_dir)
    if recovered:
        log.warning(
            "recovered %d WAL segments (%d events) from the previous run",
            len(recovered),
            sum(r.events for r in recovered),
        )


# The warehouse process's work (sealing, loading, rollups) is background work with minutes of
# slack (loads are promised within two minutes); requests are not. It runs at a lower CPU priority
# so that, when the cores are busy, ingest and queries get them first.
WAREHOUSE_NICENESS = 10


def _background_priority() -> None:
    os.nice(WAREHOUSE_NICENESS)


def start_daemon(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "jobs.daemon"], env=env, preexec_fn=_background_priority)


def stop_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child process, and SIGKILL it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(settings: Settings) -> None:
    prepare(settings)
    daemon = start_daemon(settings)
    live = live_service.spawn(settings)  # real time: one WAL follower for every worker
    try:
        GunicornServer(settings).run()
    finally:
        stop_child(live, timeout=10)
        stop_child(daemon, timeout=30)  # lets a load in progress commit
        # Workers sealed their own last segments; seal whatever the warehouse process had not
        # reached yet, so a clean shutdown leaves the whole WAL in Parquet.
        sealed = seal_all(settings.wal_dir, settings.raw_dir)
        if sealed:
            log.info("sealed %d segments at shutdown", len(sealed))
