"""``littlestats serve``: gunicorn with uvicorn workers, plus the warehouse process and the live
service, all supervised.

gunicorn's master forks ``workers`` ASGI workers that ingest, query and stream, and restarts any
that dies. Beside them run exactly one warehouse process (``jobs.daemon``), whatever the worker
count: it owns the DuckDB file, runs the scheduled jobs and seals WAL segments that crashed workers
left behind; and one live service (``api.live_service``). The ``Supervisor``, a thread per process
in gunicorn's master, restarts either when it stops, with back-off.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from gunicorn.app.base import BaseApplication

from api import live_service
from api.auth import ensure_admin_token
from ingest.seal import seal_all
from littlestats import metrics
from littlestats.app import create_app
from littlestats.config import ConfigError, Settings
from littlestats.controlplane import ControlPlane
from littlestats.disk import MIN_FREE_BYTES, free_bytes, is_disk_full
from littlestats.http import is_loopback
from littlestats.logs import logging_config
from littlestats.permissions import PRIVATE_UMASK, make_private, use_private_umask
from warehouse.migrations import upgrade_file
from warehouse.tables import SchemaError

log = logging.getLogger(__name__)

#: The supervisor's state of each helper process, in ``run/`` (read by ``/readyz``).
STATE_FILE = "processes.json"


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
            "child_exit": lambda _arbiter, worker: metrics.mark_dead(worker.pid),
            # gunicorn's control socket (gunicornc) defaults to one path per user, which every
            # gunicorn on the host shares: ours lives with the server's other sockets instead.
            "control_socket": str(s.run_dir / "gunicorn.ctl"),
            "umask": PRIVATE_UMASK,
            **self.options,
        }
        if "control_socket" not in self.cfg.settings:  # a gunicorn before 25.1 has none
            del config["control_socket"]
        for key, value in config.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.settings)


class StartError(ConfigError):
    """``serve`` cannot start; the message says why and what to do (the CLI prints it)."""


# A Unix socket's path: at most 107 bytes on Linux (sun_path holds 108, with the final NUL).
MAX_SOCKET_PATH = 107


def prepare(settings: Settings) -> None:
    """Checks and chores before any worker starts."""
    if settings.dev and not is_loopback(settings.host):
        raise ConfigError(
            f"--dev turns authentication off, so it only listens on loopback; "
            f"use --host 127.0.0.1 instead of {settings.host}"
        )
    # The server's Unix sockets live in <data-dir>/run; the system refuses longer socket paths.
    longest = len(os.fsencode(settings.warehouse_socket))
    if longest > MAX_SOCKET_PATH:
        raise ConfigError(
            f"the data directory's path is too long for the server's sockets ({longest} bytes for"
            f" {settings.warehouse_socket}, at most {MAX_SOCKET_PATH}): choose a shorter --data-dir"
        )
    use_private_umask()
    try:
        settings.ensure_dirs()
        make_private(settings.data_dir)  # fixes, and logs, what an earlier version left readable
        room = free_bytes(settings.data_dir)
        if room < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"{room:,} bytes free, at least {MIN_FREE_BYTES:,} needed")
        if settings.dev:
            log.info("--dev: authentication is off, so no admin token is created"
                     " (the first start without --dev creates one)")
            ControlPlane(settings.control_db).close()  # creates or migrates the control plane
        else:
            ensure_admin_token(settings)  # creates or migrates the control plane too
        upgrade_file(settings.warehouse_db)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise StartError(
            f"the disk holding the data directory {settings.data_dir} is full ({exc}); "
            f"free some space on it, then start littlestats again"
        ) from None
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


def start_daemon(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the warehouse process, at a lower CPU priority than the workers."""
    env = {**os.environ, **settings.to_env()}
    # Not a preexec_fn: the supervisor starts it from a thread, where that is unsafe. Popen returns
    # once the child has exec'd, before the warehouse has done any work.
    proc = subprocess.Popen([sys.executable, "-m", "jobs.daemon"], env=env)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid,
                       os.getpriority(os.PRIO_PROCESS, 0) + WAREHOUSE_NICENESS)
    return proc


class Supervisor:
    """Keeps the long-lived helper processes of ``serve`` running beside gunicorn's workers.

    gunicorn's arbiter restarts the workers; this restarts the warehouse process and the live
    service. A thread per process waits for it to end; unless ``serve`` is stopping, it logs how
    the process ended, waits (``BACKOFF_FIRST`` seconds, doubling at each quick failure up to
    ``BACKOFF_CAP``; back to the first after ``HEALTHY_AFTER`` seconds of good running) and
    starts it again, counting ``littlestats_process_restarts_total{process}``. The state of each
    (pid, running or restarting, restarts, last exit) is kept in ``run/processes.json``, which
    ``/readyz`` reports.
    """

    BACKOFF_FIRST = 1.0
    BACKOFF_CAP = 30.0
    HEALTHY_AFTER = 60.0

    def __init__(self, settings: Settings,
                 children: dict[str, tuple[Callable[[], subprocess.Popen[bytes]], float]]) -> None:
        self.state_path = settings.run_dir / STATE_FILE
        self.children = children  # name -> (start, seconds to wait at stop before SIGKILL)
        self.procs: dict[str, subprocess.Popen[bytes] | None] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name in self.children:
            self.state[name] = {"state": "starting", "pid": None, "restarts": 0, "lastExit": None}
            self._spawn(name)
        for name in self.children:
            thread = threading.Thread(target=self._watch, args=(name,), name=f"supervise-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _spawn(self, name: str) -> None:
        if self._stopping.is_set():
            return
        start, _ = self.children[name]
        try:
            proc: subprocess.Popen[bytes] | None = start()
        except OSError as exc:
            log.error("could not start the %s: %s", _title(name), exc)
            proc = None
        with self._lock:
            self.procs[name] = proc
            self.state[name].update(state="running" if proc else "restarting",
                                    pid=proc.pid if proc else None,
                                    since=_now_iso(), nextStart=None)
        self._save()

    def _watch(self, name: str) -> None:
        delay = self.BACKOFF_FIRST
        while not self._stopping.is_set():
            proc = self.procs.get(name)
            started = time.monotonic()
            ended = _wait_exit(proc) if proc is not None else "could not be started"
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            if proc is not None:
                metrics.mark_dead(proc.pid)
            delay = self.BACKOFF_FIRST if ran >= self.HEALTHY_AFTER else delay
            log.error("the %s (pid %s) stopped unexpectedly (%s) after %.1f s; restarting it in "
                      "%.0f s", _title(name), proc.pid if proc else "-", ended, ran, delay)
            with self._lock:
                self.state[name].update(
                    state="restarting", pid=None, lastExit=ended,
                    nextStart=_now_iso(delay))
            self._save()
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.BACKOFF_CAP)
            with self._lock:
                self.state[name]["restarts"] += 1
            metrics.PROCESS_RESTARTS.labels(process=name).inc()
            self._spawn(name)
            log.info("restarted the %s (pid %s)", _title(name), self.state[name]["pid"])

    def _save(self) -> None:
        with self._lock:
            data = orjson.dumps(self.state)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.state_path)
        except OSError:  # a full disk: /readyz still probes each process itself
            with contextlib.suppress(OSError):
                tmp.unlink()

    def stop(self) -> None:
        """Stop restarting, then stop every process (SIGTERM, SIGKILL after its grace time)."""
        self._stopping.set()
        for name, (_, timeout) in self.children.items():
            proc = self.procs.get(name)
            if proc is not None:
                stop_child(proc, timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        for name, (_, timeout) in self.children.items():  # one started as stop() began
            proc = self.procs.get(name)
            if proc is not None:
                stop_child(proc, timeout)
        with contextlib.suppress(OSError):
            self.state_path.unlink()


def _title(name: str) -> str:
    return {"warehouse": "warehouse process", "live": "live service"}.get(name, f"{name} process")


def _now_iso(after: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + after, UTC).isoformat(timespec="seconds")


def _wait_exit(proc: subprocess.Popen[bytes]) -> str:
    """Wait for ``proc`` to end; how it ended. gunicorn's arbiter reaps every child of the master
    (``waitpid(-1)``), so the status is read first without reaping (``WNOWAIT``)."""
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        info = None
    with contextlib.suppress(ChildProcessError):
        proc.wait()
    if info is None:
        return "exit status unknown"
    if info.si_code == os.CLD_EXITED:
        return f"exit status {info.si_status}"
    try:
        return f"killed by {signal.Signals(info.si_status).name}"
    except ValueError:
        return f"killed by signal {info.si_status}"


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
    supervisor = Supervisor(settings, {
        "warehouse": (partial(start_daemon, settings), 30.0),  # lets a load in progress commit
        "live": (partial(live_service.spawn, settings), 10.0),  # real time: one WAL follower
    })
    supervisor.start()
    try:
        GunicornServer(settings).run()
    finally:
        supervisor.stop()
        # Workers sealed their own last segments; seal whatever the warehouse process had not
        # reached yet, so a clean shutdown leaves the whole WAL in Parquet.
        sealed = seal_all(settings.wal_dir, settings.raw_dir)
        if sealed:
            log.info("sealed %d segments at shutdown", len(sealed))
