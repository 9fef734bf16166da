"""kill -9 in the middle of a stream of beacons: no acknowledged event is lost or duplicated."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.ingest.helpers import raw_rows, stream
from tests.server import LiveServer, add_site, free_port

pytestmark = pytest.mark.slow

CLIENTS = 8


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
