"""A full disk: beacons get 503 with Retry-After (never a dropped connection, never a 200 for an
event not on disk), no process crashes, nothing is left half-written, and everything recovers by
itself when space returns, with every acknowledged event counted exactly once.

The data directory lives on a real, small tmpfs (these tests mount one: they need root, and skip
saying so without it), filled mid-stream with a ballast file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from littlestats.app import Services
from littlestats.config import load_settings
from tests.realtime.clients import CHROME
from tests.server import LiveServer, add_site, cli, free_port, running_server
from warehouse.database import connect

FAST = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "1"}


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the test."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Ballast:
    """A file that takes every free byte of its disk, and keeps taking what is freed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "ab")  # closed in remove()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fill(self) -> None:
        chunk = bytes(64 * 1024)
        while True:
            try:
                self.file.write(chunk)
                self.file.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        for size in (4096, 512, 1):  # the last few bytes too
            try:
                while True:
                    self.file.write(bytes(size))
                    self.file.flush()
            except OSError:
                continue

    def keep_full(self) -> None:
        """Fill now, and again every 50 ms (space the server frees is taken back at once)."""
        self.fill()

        def run() -> None:
            while not self._stop.wait(0.05):
                self.fill()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self.file.close()
        self.path.unlink()


class Poster:
    """Sends one beacon after another, each with its own page, and tallies the answers."""

    def __init__(self, server: LiveServer, site: str) -> None:
        self.server, self.site = server, site
        self.acked: list[str] = []  # pages answered 200
        self.refused: list[httpx.Response] = []  # answered 503
        self.other: list[str] = []  # anything else: a dropped connection, another status
        self.n = 0

    def post(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            page = f"/p{self.n}"
            try:
                # A fresh connection each time: the beacons spread over both workers.
                r = httpx.post(f"{self.server.url}/api/v2/track/{self.site}", json={"url": page},
                               headers={"User-Agent": CHROME}, timeout=10)
            except httpx.HTTPError as exc:
                self.other.append(f"{page}: {exc!r}")
                continue
            if r.status_code == 200:
                self.acked.append(page)
            elif r.status_code == 503:
                self.refused.append(r)
            else:
                self.other.append(f"{page}: {r.status_code} {r.text}")


def metric(server: LiveServer, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return sum(float(line.split()[-1]) for line in found)


@pytest.mark.slow
def test_a_full_disk_refuses_beacons_with_503_and_everything_recovers(tmp_path: Path) -> None:
    # The disk is the data directory itself: the server's log (beside it) stays off it.
    with small_disk(tmp_path / "data", "48m") as data_dir:
        site = add_site(data_dir)["id"]
        with running_server(data_dir, 2, "--dev", env=FAST) as server:
            workers = sorted(server.worker_pids())
            poster = Poster(server, site)
            poster.post(40)
            assert len(poster.acked) == 40

            ballast = Ballast(data_dir / "ballast")
            ballast.keep_full()
            deadline = time.monotonic() + 60
            while len(poster.refused) < 20 and time.monotonic() < deadline:
                poster.post(10)
            assert len(poster.refused) >= 20, "the full disk never refused a beacon"
            for r in poster.refused:
                assert r.headers["Retry-After"].isdigit()
                assert "disk is full" in r.json()["error"]
                assert r.headers["Access-Control-Allow-Origin"] == "*"
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 503 and "Retry-After" in ready.headers
            assert ready.json()["parts"]["disk"]["status"] == "full"
            assert ready.json()["parts"]["ingest"]["status"] == "down"
            assert metric(server, 'littlestats_write_errors_total{part="wal",reason="disk_full"}') >= 1
            assert metric(server, "littlestats_disk_full") == 1

            ballast.remove()
            deadline = time.monotonic() + 30
            before = len(poster.acked)
            while len(poster.acked) - before < 5 and time.monotonic() < deadline:
                poster.post(5)
            before = len(poster.acked)
            poster.post(40)
            assert len(poster.acked) - before == 40, "beacons are still refused with space back"
            assert poster.other == [], "a beacon got something else than 200 or 503"
            assert sorted(server.worker_pids()) == workers, "a worker crashed"

            def views() -> int | None:
                r = httpx.get(f"{server.url}/api/v2/sites/{site}/stats?period=today", timeout=10)
                return r.json()["views"] if r.status_code == 200 else None

            deadline = time.monotonic() + 90
            while views() != len(poster.acked) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert views() == len(poster.acked)
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 200 and ready.json()["parts"]["disk"]["status"] == "ok"
            assert metric(server, "littlestats_disk_full") == 0
        log = server.log()
        assert "ERROR disk is full: wal write failed" in log
        assert "disk space is back" in log
        # No process died: gunicorn reports a worker that ends by a signal other than its own.
        assert "SIGBUS" not in log and "exited with code" not in log
        assert "stopped unexpectedly" not in log

        # Exactly the acknowledged events, once each, in the raw files and in the warehouse.
        raw = duckdb.connect().execute("SELECT pathname FROM read_parquet(?, hive_partitioning=true)",
                                       [f"{data_dir}/raw/**/*.parquet"]).fetchall()
        assert sorted(p for (p,) in raw) == sorted(poster.acked)
        con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
        facts = con.execute("SELECT pathname FROM events WHERE site_id = ?", [site]).fetchall()
        con.close()
        assert sorted(p for (p,) in facts) == sorted(poster.acked)
        # No debris: no temporary Parquet files, no empty WAL segments.
        assert [p for p in (data_dir / "raw").rglob("*") if ".tmp" in p.name] == []
        assert [p for p in (data_dir / "wal").iterdir() if p.stat().st_size == 0] == []


def test_serve_on_a_full_disk_says_so_and_exits(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        data_dir = disk / "data"
        data_dir.mkdir()
        ballast = Ballast(disk / "ballast")
        ballast.fill()
        out = subprocess.run(
            [sys.executable, "-m", "littlestats", "serve", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "1"],
            capture_output=True, text=True, timeout=120,
        )
        ballast.remove()
    assert out.returncode == 1, out.stderr[-2000:]
    assert "is full" in out.stderr and "free some space" in out.stderr


def test_a_first_load_on_a_full_disk_leaves_no_broken_database(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        data_dir = disk / "data"
        data_dir.mkdir()
        add_site(data_dir)
        ballast = Ballast(disk / "ballast")
        ballast.fill()
        failed = subprocess.run([sys.executable, "-m", "littlestats", "load", "--data-dir", str(data_dir)],
                                capture_output=True, text=True, timeout=120)
        assert failed.returncode != 0
        assert not (data_dir / "warehouse.duckdb").exists()  # no 0-byte or half-made file
        ballast.remove()
        cli(data_dir, "load")  # space is back: the database is created
        con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
        con.close()


def test_an_empty_database_file_is_replaced_but_a_real_one_is_kept(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path})
    settings.warehouse_db.write_bytes(b"")  # what a crash during the very first creation leaves
    con = connect(settings.warehouse_db)
    con.execute("CREATE TABLE keep_me AS SELECT 42 AS answer")
    con.close()
    assert settings.warehouse_db.stat().st_size > 0
    con = connect(settings.warehouse_db)  # a real database is opened, never replaced
    assert con.execute("SELECT answer FROM keep_me").fetchone() == (42,)
    con.close()


def test_a_worker_starting_on_a_full_disk_waits_for_space(tmp_path: Path) -> None:
    """gunicorn stops the whole server when a worker fails to start: one that starts while the
    disk is too full to open the control plane waits for space instead."""
    with small_disk(tmp_path / "data", "8m") as data_dir:
        site = add_site(data_dir)
        ballast = Ballast(data_dir / "ballast")
        ballast.fill()
        settings = load_settings({"data_dir": data_dir})
        started: list[Services] = []
        failed: list[BaseException] = []

        def start() -> None:
            try:
                started.append(Services.start(settings))
            except BaseException as exc:
                failed.append(exc)

        worker = threading.Thread(target=start, daemon=True)
        worker.start()
        worker.join(3)
        assert worker.is_alive() and not failed, f"the worker did not wait: {failed}"
        ballast.remove()
        worker.join(30)
        assert not failed and started, "the worker did not start once space was back"
        services = started[0]
        assert [s.id for s in services.control.list_sites()] == [site["id"]]
        services.stop()
