"""``littlestats backup`` / ``restore``: a consistent snapshot of a running server, brought back."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from littlestats.config import load_settings
from tests.server import add_site, running_server
from warehouse.client import WarehouseClient
from warehouse.protocol import WarehouseError
from warehouse.service import Warehouse, WarehouseSocketServer

FIXTURE = Path(__file__).parent / "fixtures" / "datadir-v1" / "data"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")


def littlestats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "littlestats", *args], capture_output=True,
                          text=True, timeout=300)


def modes(root: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of everything under ``root``, ``root`` included."""
    found = {("dir", root.stat().st_mode & 0o777)}
    for p in root.rglob("*"):
        found.add(("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777))
    return found


@pytest.fixture
def old_dir(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(FIXTURE, target)
    return target


def page_views(url: str, site: str) -> dict[str, int]:
    """Every page's views, page by page of 10,000 rows (a fast machine sends more beacons)."""
    views: dict[str, int] = {}
    while True:
        r = httpx.get(f"{url}/api/v2/sites/{site}/pages",
                      params={"period": "7d", "limit": 10000, "offset": len(views)}, timeout=30)
        if r.status_code == 503:
            return {}
        assert r.status_code == 200, r.text
        rows = r.json()["pages"]
        views.update((row["page"], row["views"]) for row in rows)
        if len(rows) < 10000:
            return views


class Beacons:
    """Clients that post one pageview of ``/b/<n>`` after another until stopped, noting which
    were acknowledged."""

    def __init__(self, url: str, site: str, clients: int = 3) -> None:
        self.url, self.site = url, site
        self.acked: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(c, clients)) for c in range(clients)]

    def run(self, start: int, step: int) -> None:
        with httpx.Client(timeout=10, headers={"User-Agent": CHROME}) as client:
            n = start
            while not self.stop.is_set():
                if n % 4 == 0:  # batches as well as single beacons
                    body: dict[str, Any] = {"siteId": self.site, "events": [{"url": f"/b/{n}"}]}
                else:
                    body = {"url": f"/b/{n}"}
                try:
                    ok = httpx.codes.OK == client.post(f"{self.url}/api/v2/track/{self.site}", json=body).status_code
                except httpx.HTTPError:
                    ok = False
                if ok:
                    with self.lock:
                        self.acked.append(n)
                n += step

    def acknowledged(self) -> set[int]:
        with self.lock:
            return set(self.acked)

    def __enter__(self) -> Beacons:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.mark.slow
def test_backup_while_beacons_arrive_restores_every_acknowledged_event_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    site = add_site(data)["id"]
    dest, restored = tmp_path / "backup", tmp_path / "restored"
    # Segments rotate every 20 s: the first is sealed and loaded before the backup begins, and the
    # events acknowledged since are in the workers' active segments while it runs (only the WAL
    # copy can catch them).
    env = {"LITTLESTATS_SEGMENT_SECONDS": "20", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "1"}
    with running_server(data, 2, "--dev", env=env) as server, Beacons(server.url, site) as beacons:
        # Wait until some events are loaded (so the warehouse copy holds some) and more arrive.
        deadline = time.monotonic() + 90
        while not page_views(server.url, site) or len(beacons.acknowledged()) < 300:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.3)
        before = beacons.acknowledged()
        out = littlestats("backup", str(dest), "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
        during = beacons.acknowledged() - before
        time.sleep(1)  # and on afterwards
    after = beacons.acknowledged()
    assert during, "no beacon was acknowledged while the backup ran"
    assert "copy" in out.stderr  # progress, on stderr
    assert out.stdout.startswith("backup: ") and "from the running server" in out.stdout

    manifest = json.loads((dest / "manifest.json").read_text())
    contents = manifest["contents"]
    assert manifest["live"] is True
    assert {f["path"] for f in manifest["files"]} == {
        p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != "manifest.json"}

    out = littlestats("restore", str(dest), "--data-dir", str(restored))
    assert out.returncode == 0, out.stderr
    with running_server(restored, 1, "--dev", env=env) as server:
        deadline = time.monotonic() + 120
        views = page_views(server.url, site)
        while not {f"/b/{n}" for n in before} <= set(views):
            assert time.monotonic() < deadline, f"missing {len({f'/b/{n}' for n in before} - set(views))}"
            time.sleep(0.5)
            views = page_views(server.url, site)
        time.sleep(2)  # two more loads: nothing may be added twice by them
        views = page_views(server.url, site)
    counted = {int(page.rsplit("/", 1)[1]) for page in views}
    assert before <= counted  # every event acknowledged before the backup began
    assert set(views.values()) == {1}  # none twice
    assert counted <= after  # and nothing that was never acknowledged
    # The backup caught events in each store: loaded in the warehouse, in raw Parquet, in the WAL.
    assert contents["warehouseEvents"] > 0 and contents["rawFiles"] > 0 and contents["walRecords"] > 0, contents
    print(f"acknowledged before: {len(before)}, during: {len(during)}, restored: {len(counted)};"
          f" backup: {contents}")


def test_offline_backup_restores_into_a_private_directory(old_dir: Path, tmp_path: Path) -> None:
    dest, restored = tmp_path / "backup", tmp_path / "restored"
    out = littlestats("backup", str(dest), "--data-dir", str(old_dir))
    assert out.returncode == 0, out.stderr
    assert "(offline): 4 events loaded, 1 raw files" in out.stdout
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["schema"] == {"control": 1, "warehouse": 1}  # as found: a backup changes nothing
    assert sorted(f["path"].split("/")[0] for f in manifest["files"]) == [
        "admin-token", "control.sqlite3", "raw", "warehouse.duckdb"]
    assert modes(dest) == {("dir", 0o700), ("file", 0o600)}

    out = littlestats("restore", str(dest), "--data-dir", str(restored))
    assert out.returncode == 0, out.stderr
    assert modes(restored) == {("dir", 0o700), ("file", 0o600)}
    con = duckdb.connect(str(restored / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (4, 4)
    finally:
        con.close()
    with sqlite3.connect(restored / "control.sqlite3") as db:
        assert db.execute("SELECT domain FROM sites").fetchall() == [("fixture.example",)]
    assert (restored / "admin-token").read_text() == (old_dir / "admin-token").read_text()


def test_restore_refuses_a_directory_that_is_not_empty(old_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    assert littlestats("backup", str(dest), "--data-dir", str(old_dir)).returncode == 0
    out = littlestats("restore", str(dest), "--data-dir", str(old_dir))
    assert out.returncode != 0
    assert f"data directory {old_dir} is not empty" in out.stderr
    again = littlestats("backup", str(dest), "--data-dir", str(old_dir))
    assert again.returncode != 0 and "is not empty" in again.stderr


def test_restore_refuses_a_damaged_backup_and_leaves_nothing(old_dir: Path, tmp_path: Path) -> None:
    dest, restored = tmp_path / "backup", tmp_path / "restored"
    assert littlestats("backup", str(dest), "--data-dir", str(old_dir)).returncode == 0
    damaged = next((dest / "raw").rglob("*.parquet"))
    body = bytearray(damaged.read_bytes())
    body[len(body) // 2] ^= 0xFF
    damaged.write_bytes(bytes(body))
    out = littlestats("restore", str(dest), "--data-dir", str(restored))
    assert out.returncode != 0
    assert damaged.name in out.stderr and "does not match the manifest" in out.stderr
    assert not restored.exists()


def test_restore_refuses_a_backup_without_its_manifest(old_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    assert littlestats("backup", str(dest), "--data-dir", str(old_dir)).returncode == 0
    (dest / "manifest.json").unlink()
    out = littlestats("restore", str(dest), "--data-dir", str(tmp_path / "restored"))
    assert out.returncode != 0 and "did not finish" in out.stderr


def test_the_warehouse_process_snapshots_only_into_its_run_directory(old_dir: Path, tmp_path: Path) -> None:
    settings = load_settings({"data_dir": old_dir}, environ={})
    settings.ensure_dirs()
    warehouse = Warehouse(settings)
    server = WarehouseSocketServer(warehouse, settings.warehouse_socket)
    server.serve_in_thread()
    try:
        client = WarehouseClient(settings)
        with pytest.raises(WarehouseError, match="new backup-\\* directory"):
            client.call({"op": "snapshot", "dir": str(tmp_path / "elsewhere")})
        assert not (tmp_path / "elsewhere").exists()
        staging = settings.run_dir / "backup-test"
        assert client.call({"op": "snapshot", "dir": str(staging)}) == {"warehouse_files": 1, "raw_files": 1}
        assert len(list((staging / "raw").rglob("*.parquet"))) == 1
    finally:
        server.close()
        warehouse.close()


def test_wal_copy_takes_the_durable_records_of_active_and_closed_segments(tmp_path: Path) -> None:
    from ingest.wal import HEADER, SegmentWriter, read_records
    from littlestats.backup import copy_wal

    wal = tmp_path / "wal"
    rotated = SegmentWriter(wal, segment_seconds=3600)
    rotated.append([b'{"n": 1}', b'{"n": 2}'])
    closed = rotated.close()
    assert closed is not None
    live = SegmentWriter(wal, segment_seconds=3600)  # stays open: its writer holds the flock
    live.append([b'{"n": 3}'])
    live.append([b'{"n": 4}'])
    active = live.active_path
    assert active is not None
    # A record being written right now: its header is on disk, its payload not yet.
    with open(active, "r+b") as f:
        f.seek(sum(HEADER.size + len(p) for p in (b'{"n": 3}', b'{"n": 4}')))
        f.write(HEADER.pack(8, 12345))
    try:
        assert copy_wal(wal, tmp_path / "copy") == (2, 4)
    finally:
        live.close()
    copied = {p.name: list(read_records(p)) for p in (tmp_path / "copy").iterdir()}
    assert copied == {
        closed.name: [b'{"n": 1}', b'{"n": 2}'],
        active.name.removesuffix(".seg") + "-backup.closed": [b'{"n": 3}', b'{"n": 4}'],
    }
