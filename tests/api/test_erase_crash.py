"""The warehouse process killed (SIGKILL) in the middle of an API erasure: its restart completes it.

A real ``littlestats serve`` whose erasures stop after rewriting their first raw file (the
``erase_fault`` setting) until killed. The test kills the warehouse process there; the supervisor
starts a new one, which completes the journalled erasure before it answers anything, and a load
afterwards brings nothing of the person back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from ingest.identity import tracker_visitor_key
from littlestats.config import load_settings
from littlestats.controlplane import ControlPlane
from tests.api.conftest import wait_for_warehouse
from tests.api.test_erase import live_events, load, post
from tests.server import running_server
from tests.test_supervision import helper_pid, wait_until
from warehouse.client import WarehouseClient

pytestmark = pytest.mark.slow

VISITOR_ID = "killed-midway"


def test_a_warehouse_killed_during_an_erasure_completes_it_when_restarted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SEGMENT_SECONDS": "3600", "LITTLESTATS_ERASE_FAULT": "pause:rewrite"}
    with running_server(data_dir, 1, env=env) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        site = admin.post("/api/v2/sites", json={"domain": "killed.example"}).json()
        wait_for_warehouse(admin, site["id"])
        settings = load_settings({"data_dir": data_dir}, environ={})
        control = ControlPlane(settings.control_db)
        key = tracker_visitor_key(control.get_site(site["id"]).secret, VISITOR_ID)
        control.close()
        # the person's visits in three hours (three raw files), and someone else's in the same hours
        now_ms = int(time.time() * 1000)
        for hours_ago in (5, 4, 3):
            post(srv.url, site, live_events(VISITOR_ID, now_ms - hours_ago * 3_600_000, 2))
            post(srv.url, site, live_events("stays", now_ms - hours_ago * 3_600_000 + 1000, 2))
        load(data_dir)
        today = datetime.now(UTC).date()
        window = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}
        views = admin.get(f"/api/v2/sites/{site['id']}/stats", params=window).json()["views"]
        assert views == 12

        answers: list[int] = []
        request = threading.Thread(target=lambda: answers.append(
            admin.delete(f"/api/v2/sites/{site['id']}/visitors/{VISITOR_ID}").status_code))
        request.start()
        marker = data_dir / "run" / "erase-paused-rewrite"
        wait_until(marker.exists, timeout=60, what="the erasure to reach its first rewritten file")
        old = helper_pid(srv, b"jobs.daemon")
        assert old is not None
        os.kill(old, signal.SIGKILL)
        request.join(timeout=120)
        assert answers == [503]  # the request ended with the process; repeating it is safe

        # The restarted warehouse process completes the journalled erasure before it answers.
        wait_until(lambda: helper_pid(srv, b"jobs.daemon") not in (None, old), what="a new warehouse process")
        wait_for_warehouse(admin, site["id"])
        assert not list((data_dir / "erasures").glob("*.json"))
        load(data_dir)
        wh = WarehouseClient(settings)
        assert wh.query_sync("SELECT count(*) FROM events WHERE visitor_key = ?", [key]).scalar() == 0
        assert wh.query_sync("SELECT count(*) FROM events WHERE site_id = ?", [site["id"]]).scalar() == 6
        for path in data_dir.rglob("*.parquet"):
            assert key not in pq.read_table(path, columns=["visitor_key"])["visitor_key"].to_pylist(), path
        after = admin.get(f"/api/v2/sites/{site['id']}/stats", params=window).json()["views"]
        assert after == views - 6
        assert "erasure" in srv.log() and "was interrupted; completing it" in srv.log()
        admin.close()
