"""Supervised processes: ``serve`` restarts the warehouse process and the live service when they
die, with back-off, and ``/readyz`` tells the truth about each part meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from littlestats.config import load_settings
from littlestats.server import Supervisor
from tests.realtime.clients import SSEClient, post_event
from tests.server import LiveServer, add_site, running_server

FAST = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "1"}


def helper_pid(server: LiveServer, module: bytes) -> int | None:
    """The pid of the master's child running ``python -m <module>``, if one runs."""
    assert server.proc is not None
    out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout
    for pid in out.split():
        try:
            if module in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except FileNotFoundError:
            continue
    return None


def wait_until(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def views(server: LiveServer, site: str) -> int | None:
    r = httpx.get(f"{server.url}/api/v2/sites/{site}/stats?period=today", timeout=10)
    return r.json()["views"] if r.status_code == 200 else None


def metric(server: LiveServer, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].split()[-1]) if found else 0.0


@pytest.mark.slow
def test_a_killed_warehouse_process_is_restarted_and_queries_recover(data_dir: Path) -> None:
    site = add_site(data_dir)["id"]
    with running_server(data_dir, 1, "--dev", env=FAST) as server:
        post_event(server.url, site, {"url": "/before"})
        wait_until(lambda: views(server, site) == 1, what="the first event to be loaded")
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["status"] == "ready"
        assert ready["parts"]["warehouse"]["status"] == "up"
        old = helper_pid(server, b"jobs.daemon")
        assert old is not None

        os.kill(old, signal.SIGKILL)
        # The supervisor waits a second before the restart; meanwhile queries get a clear 503.
        r = httpx.get(f"{server.url}/api/v2/sites/{site}/stats?period=today")
        assert r.status_code == 503
        assert r.headers["Retry-After"].isdigit()
        assert "restarted automatically" in r.json()["error"]
        # Ingest stays ready (beacons are still taken), but /readyz says what is down.
        ready_r = httpx.get(server.url + "/readyz")
        assert ready_r.status_code == 200
        assert ready_r.json()["status"] == "degraded"
        assert ready_r.json()["parts"]["warehouse"]["status"] in ("restarting", "starting")
        assert ready_r.json()["parts"]["ingest"]["status"] == "up"
        assert httpx.get(server.url + "/readyz?strict=1").status_code == 503
        post_event(server.url, site, {"url": "/while-down"})

        new = wait_until(lambda: helper_pid(server, b"jobs.daemon"), what="a new warehouse process")
        assert new != old
        wait_until(lambda: views(server, site) == 2, what="the event accepted while it was down")
        part = httpx.get(server.url + "/readyz").json()["parts"]["warehouse"]
        assert part == {"status": "up", "restarts": 1}
        assert metric(server, 'littlestats_process_restarts_total{process="warehouse"}') == 1.0
    # How it ended is in the log when the supervisor reads it before gunicorn's arbiter reaps it.
    assert f"the warehouse process (pid {old}) stopped unexpectedly" in server.log()


@pytest.mark.slow
def test_a_killed_live_service_is_restarted_and_streams_resume(data_dir: Path) -> None:
    site = add_site(data_dir)["id"]
    with running_server(data_dir, 1, "--dev", env=FAST) as server:
        stream = f"{server.url}/api/v2/realtime/{site}"
        before = SSEClient(stream)
        assert before.status == 200
        post_event(server.url, site, {"url": "/first"})
        before.wait_for(lambda c: len(c.events()) == 1)
        old = helper_pid(server, b"api.live_service")
        assert old is not None

        os.kill(old, signal.SIGKILL)
        # The worker's streams end (an EventSource reconnects by itself) ...
        assert before.closed.wait(10), "the stream did not end when the live service died"
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["parts"]["live"]["status"] in ("restarting", "starting", "up")

        # ... and once the live service is back, a new stream gets new events.
        new = wait_until(lambda: helper_pid(server, b"api.live_service"), what="a new live service")
        assert new != old
        after = wait_until(lambda: (c := SSEClient(stream)).status == 200 and c,
                           what="a stream from the restarted live service")
        post_event(server.url, site, {"url": "/second"})
        after.wait_for(lambda c: any(e["page"] == "/second" for e in c.events()))
        after.close()
        part = httpx.get(server.url + "/readyz").json()["parts"]["live"]
        assert part == {"status": "up", "restarts": 1}
        assert metric(server, 'littlestats_process_restarts_total{process="live"}') == 1.0


def test_restarts_back_off_and_are_recorded(tmp_path: Path) -> None:
    """A process that keeps failing is restarted after 0.1, 0.2, 0.4, 0.4 ... seconds."""
    settings = load_settings({"data_dir": tmp_path})
    settings.ensure_dirs()
    starts: list[float] = []

    def failing() -> subprocess.Popen[bytes]:
        starts.append(time.monotonic())
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])

    supervisor = Supervisor(settings, {"flaky": (failing, 1.0)})
    supervisor.BACKOFF_FIRST, supervisor.BACKOFF_CAP = 0.1, 0.4
    supervisor.start()
    try:
        wait_until(lambda: len(starts) >= 6, timeout=20, what="six starts")
    finally:
        supervisor.stop()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # Each gap is the back-off plus the time the process took to fail (a Python start-up).
    for gap, backoff in zip(gaps, (0.1, 0.2, 0.4, 0.4, 0.4), strict=False):
        assert gap >= backoff
    assert gaps[2] - gaps[0] >= 0.2  # it grew
    state = supervisor.state["flaky"]
    assert state["restarts"] >= 5
    assert state["lastExit"] == "exit status 7"
    assert not (settings.run_dir / "processes.json").exists()  # removed at stop
