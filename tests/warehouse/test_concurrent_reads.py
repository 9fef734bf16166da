"""Several processes query the warehouse process continuously while it loads: no error, no torn read."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from littlestats.config import load_settings
from tests import aio
from tests.generator import TrafficSpec, generate
from warehouse.client import LocalWarehouse, QueryResult, WarehouseClient

# Facts and pre-aggregates written by one load must agree in every snapshot a reader sees.
INVARIANTS = """
SELECT (SELECT count(*) FROM events) AS events,
       (SELECT coalesce(sum(events), 0) FROM sessions) AS session_events,
       (SELECT count(*) FROM events WHERE type = 'pageview') AS pageviews,
       (SELECT coalesce(sum(views), 0) FROM hourly_rollup WHERE dimension = 'total') AS rollup_views,
       (SELECT coalesce(sum(new_events), 0) FROM loaded_files) AS manifest_events
"""


def reader(data_dir: str, stop: Any, out: Any) -> None:
    settings = load_settings({"data_dir": Path(data_dir)}, environ={})
    client = WarehouseClient(settings)
    seen: list[int] = []
    errors: list[str] = []
    torn = 0
    queries = 0
    while not stop.is_set():
        try:
            if queries % 2:
                result = aio.run(client.query(INVARIANTS))
            else:
                result = client.query_sync(INVARIANTS)
            events, session_events, pageviews, rollup_views, manifest = result.rows[0]
            if not (events == session_events == manifest and pageviews == rollup_views):
                torn += 1
            if seen and events < seen[-1]:
                torn += 1  # a snapshot older than one already seen
            if not seen:
                out.put("ready")
            if not seen or seen[-1] != events:
                seen.append(events)
        except Exception as exc:
            errors.append(repr(exc))
        queries += 1
    out.put({"queries": queries, "seen": seen, "errors": errors[:5], "torn": torn})


def test_params_and_types_survive_the_socket(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = load_settings({"data_dir": data_dir}, environ={})
    settings.ensure_dirs()
    from warehouse.service import Warehouse, WarehouseSocketServer

    wh = Warehouse(settings)
    server = WarehouseSocketServer(wh, settings.warehouse_socket)
    server.serve_in_thread()
    try:
        client = WarehouseClient(settings)
        when = datetime(2026, 3, 1, 12, tzinfo=UTC)
        sql = "SELECT ?::TIMESTAMPTZ + INTERVAL 1 HOUR AS t, ?::DATE AS d, ? AS s, 18446744073709551615::UBIGINT AS k"
        remote = client.query_sync(sql, [when, when.date(), "x"])
        assert remote.columns == ["t", "d", "s", "k"]
        assert remote.rows == [(datetime(2026, 3, 1, 13, tzinfo=UTC), when.date(), "x", 2**64 - 1)]
        named = aio.run(client.query("SELECT $a + 1 AS n", {"a": 41}))
        assert named == QueryResult(["n"], [(42,)])
        with pytest.raises(Exception, match="does not exist"):
            client.query_sync("SELECT * FROM no_such_table")
        with pytest.raises(Exception, match="read-only"):
            client.query_sync("DELETE FROM events")
        assert client.available()
    finally:
        server.close()
        wh.close()
    local = LocalWarehouse(settings)
    try:
        assert local.query_sync("SELECT count(*) AS n FROM sessions").rows == [(0,)]
    finally:
        local.close()


@pytest.mark.slow
def test_readers_in_several_processes_see_whole_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # recent traffic: the scheduled load scans the last days' partitions
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    traffic = generate(TrafficSpec(visitors=400, days=1, loads=6, seed=3, start=start))
    env = {**os.environ, "LITTLESTATS_DATA_DIR": str(data_dir), "LITTLESTATS_LOAD_INTERVAL_SECONDS": "0.5"}
    daemon = subprocess.Popen([sys.executable, "-m", "jobs.daemon"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        settings = load_settings({"data_dir": data_dir}, environ={})
        client = WarehouseClient(settings)
        deadline = time.time() + 60
        while not client.available():
            assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
            assert time.time() < deadline
            time.sleep(0.2)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        stop = ctx.Event()
        readers = [ctx.Process(target=reader, args=(str(data_dir), stop, out)) for _ in range(3)]
        for r in readers:
            r.start()
        assert [out.get(timeout=120) for _ in readers] == ["ready"] * 3
        for k in range(traffic.spec.loads):
            traffic.write_raw(data_dir / "raw", load=k)
            time.sleep(2.0)
        deadline = time.time() + 60
        while client.query_sync("SELECT count(*) FROM events").scalar() < traffic.event_count:
            assert time.time() < deadline, "not everything was loaded"
            time.sleep(0.5)
        time.sleep(1.0)
        stop.set()
        results = [out.get(timeout=120) for _ in readers]
        for r in readers:
            r.join(timeout=30)
        final = client.query_sync("SELECT count(*) FROM events").scalar()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert final == traffic.event_count
    for result in results:
        assert result["errors"] == []
        assert result["torn"] == 0
        assert result["queries"] > 20
        assert len(result["seen"]) >= 3, result["seen"]  # loads happened while it read
    assert daemon.returncode == 0
