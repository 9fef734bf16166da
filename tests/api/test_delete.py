"""Deleting a site deletes it: at once on every worker, and for good after every later load.

A real ``littlestats serve`` with two workers. Beacons for the doomed site and for a site that
stays are posted from several threads (fresh connections, so both workers serve them) while the
site is deleted; then the test loads and, with the server stopped, reads every DuckDB table that
has a ``site_id`` column and the raw directory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@dataclass
class Setup:
    server: LiveServer
    admin: httpx.Client


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
            yield Setup(srv, admin)


def beacon(site: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "pageview", "website": site["domainKey"], "url": f"/p{n % 7}", "visitorId": f"v{n % 13}",
            "userAgent": FIREFOX}


def fresh_connections(url: str) -> httpx.Client:
    """A client that opens a new connection for every request (so either worker may serve it)."""
    return httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def post(client: httpx.Client, site: dict[str, Any], n: int) -> tuple[float, float, int]:
    """(when the request was sent, when it was answered, its status)."""
    sent = time.monotonic()
    status = client.post(f"/api/v2/track/{site['domainKey']}", json=beacon(site, n)).status_code
    return sent, time.monotonic(), status


def load_until(server: LiveServer, admin: httpx.Client, site_id: str, events: int, timeout: float = 60) -> None:
    """`littlestats load` until the kept site has all its acknowledged events (segments rotate
    every second, so the last ones need a rotation first)."""
    deadline = time.monotonic() + timeout
    while True:
        cli(server.data_dir, "load")
        got = admin.get(f"/api/v2/health/{site_id}").json()["events"]
        if got == events or time.monotonic() > deadline:
            assert got == events
            return
        time.sleep(0.5)


def site_rows(db: Path, site_id: str) -> dict[str, int]:
    """Rows of ``site_id`` in every table of the warehouse that has a ``site_id`` column."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns"
            " WHERE column_name = 'site_id' AND table_schema = 'main'").fetchall()]
        assert {"events", "sessions", "event_props", "loaded_files"} <= set(tables)
        return {t: con.execute(f'SELECT count(*) FROM "{t}" WHERE site_id = ?', [site_id]).fetchone()[0]  # noqa: S608
                for t in tables}
    finally:
        con.close()


def test_deleted_site_is_refused_at_once_and_never_comes_back(setup: Setup) -> None:
    server, admin = setup.server, setup.admin
    doomed = admin.post("/api/v2/sites", json={"domain": "doomed.example"}).json()
    kept = admin.post("/api/v2/sites", json={"domain": "kept.example"}).json()
    wait_for_warehouse(admin, kept["id"])
    # Data of both sites in every layer: loaded facts and rollups, then more in the WAL.
    with ThreadPoolExecutor(4) as pool, fresh_connections(server.url) as client:
        first = list(pool.map(lambda n: post(client, doomed if n % 2 else kept, n), range(40)))
    assert {s for _, _, s in first} == {200}
    load_until(server, admin, kept["id"], 20)
    assert admin.get(f"/api/v2/health/{doomed['id']}").json()["events"] == 20

    # Beacons for both sites from four threads while the site is deleted.
    results: list[tuple[str, float, float, int]] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        n = offset
        with fresh_connections(server.url) as client:
            while not stop.is_set():
                for name, site in (("doomed", doomed), ("kept", kept)):
                    results.append((name, *post(client, site, n)))
                n += 4

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    delete_sent = time.monotonic()
    r = admin.delete(f"/api/v2/sites/{doomed['id']}")
    deleted_at = time.monotonic()
    assert r.status_code == 200 and r.json() == {"id": doomed["id"], "deleted": True, "dataPurged": True}
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()

    # (while the delete runs, a beacon may be acknowledged or refused: either way it is not kept)
    before = [s for name, _, done, s in results if name == "doomed" and done < delete_sent]
    after = [s for name, sent, _, s in results if name == "doomed" and sent > deleted_at]
    assert before and set(before) == {200}  # the hammering overlapped the delete
    assert len(after) >= 4 and set(after) == {404}, after
    kept_accepted = sum(1 for name, _, _, s in results if name == "kept" and s == 200)
    assert all(s == 200 for name, _, _, s in results if name == "kept")

    # The loads after the delete bring none of it back, and the other site loses nothing.
    load_until(server, admin, kept["id"], 20 + kept_accepted)
    time.sleep(1.5)  # a last rotation: whatever a worker still held is sealed and loaded too
    load_until(server, admin, kept["id"], 20 + kept_accepted)
    gone = admin.get(f"/api/v2/health/{doomed['id']}")
    assert gone.status_code == 200 and gone.json()["site"] is None  # the service's health only
    assert [s["id"] for s in admin.get("/api/v2/sites").json()["sites"]] == [kept["id"]]
    server.stop()

    raw = server.data_dir / "raw"
    assert not (raw / f"site_id={doomed['id']}").exists()
    assert (raw / f"site_id={kept['id']}").is_dir()
    assert set(site_rows(server.data_dir / "warehouse.duckdb", doomed["id"]).values()) == {0}
    kept_rows = site_rows(server.data_dir / "warehouse.duckdb", kept["id"])
    assert kept_rows["events"] == 20 + kept_accepted
    assert kept_rows["loaded_files"] > 0 and kept_rows["sessions"] > 0


def test_a_delete_the_warehouse_cannot_complete_keeps_the_site(setup: Setup, tmp_path: Path) -> None:
    """503 when the warehouse process is gone: the site stays, accepting beacons, and the delete
    can be retried."""
    server, admin = setup.server, setup.admin
    site = admin.post("/api/v2/sites", json={"domain": "retry.example"}).json()
    socket = server.data_dir / "run" / "warehouse.sock"
    moved = tmp_path / "elsewhere.sock"
    wait_for_warehouse(admin, site["id"])
    socket.rename(moved)  # the workers cannot reach the warehouse process
    try:
        r = admin.delete(f"/api/v2/sites/{site['id']}")
        assert r.status_code == 503 and "retry the delete" in r.json()["error"]
        assert admin.get(f"/api/v2/sites/{site['id']}").status_code == 200
        with fresh_connections(server.url) as client:
            assert post(client, site, 1)[2] == 200
    finally:
        moved.rename(socket)
    assert admin.delete(f"/api/v2/sites/{site['id']}").status_code == 200
    with fresh_connections(server.url) as client:
        assert post(client, site, 2)[2] == 404
