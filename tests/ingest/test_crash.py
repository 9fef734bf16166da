"""kill -9 in the middle of a stream of beacons: no acknowledged event is lost or duplicated."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ingest.helpers import UA, raw_rows
from tests.server import LiveServer, add_site, free_port

pytestmark = pytest.mark.slow

CLIENTS = 8


def stream(server: LiveServer, site: str, indices: list[int], acked: set[int], failed: set[int], lock: threading.Lock) -> None:
    with httpx.Client(timeout=10, headers={"User-Agent": UA["chrome"]}) as client:
        for i in indices:
            # Alternate single beacons and small batches so both paths are crashed into.
            if i % 3:
                body = {"url": f"/crash/{i}"}
            else:
                body = {"siteId": site, "events": [{"url": f"/crash/{i}"}]}
            try:
                r = client.post(f"{server.url}/api/v2/track/{site}", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            with lock:
                (acked if ok else failed).add(i)
            if not ok:
                time.sleep(0.02)


def test_acknowledged_events_survive_kill_9_exactly_once(data_dir: Path) -> None:
    site = add_site(data_dir)["id"]
    server = LiveServer(data_dir, free_port(), 2, ("--dev",), {"LITTLESTATS_SEGMENT_SECONDS": "0.3"})
    server.start()
    total = 3000
    acked: set[int] = set()
    failed: set[int] = set()
    lock = threading.Lock()
    threads = [
        threading.Thread(target=stream, args=(server, site, list(range(c, total, CLIENTS)), acked, failed, lock))
        for c in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    try:
        # 1. kill -9 the workers mid-stream; gunicorn starts new ones.
        while len(acked) < total // 4:
            time.sleep(0.01)
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        # 2. kill -9 every process (master, workers, warehouse process) and start again.
        while len(acked) + len(failed) < total // 2:
            time.sleep(0.01)
        server.kill_all()
        time.sleep(0.5)
        server.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        server.stop()  # graceful: seals every segment

    assert len(acked) + len(failed) == total
    assert len(acked) > total // 3
    assert failed, "the crashes did not interrupt the stream"
    print(f"acked {len(acked)}, failed {len(failed)}")
    counts = collections.Counter(
        int(r["pathname"].rsplit("/", 1)[1]) for r in raw_rows(data_dir) if r["pathname"].startswith("/crash/")
    )
    duplicated = {i: n for i, n in counts.items() if n > 1}
    lost = acked - set(counts)
    assert not duplicated, f"events written twice: {sorted(duplicated)[:10]}"
    assert not lost, f"{len(lost)} acknowledged events lost: {sorted(lost)[:10]}"
    # A request that died with its worker may or may not have been written before the crash
    # (like any database commit whose answer was lost); it is never written twice.
    assert set(counts) - acked <= failed
    assert not list((data_dir / "wal").iterdir()), "a clean shutdown seals every segment"
