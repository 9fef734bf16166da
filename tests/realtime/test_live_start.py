"""The live service's start: the recent past is loaded from raw Parquet and the WAL once, in
order, and the load stays within the documented memory bound however busy that past was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from api.live import HOUR_MS
from api.live_feed import Source, in_cursor_order
from api.live_service import build_hub
from ingest.seal import seal_segment
from ingest.wal import SegmentWriter
from littlestats.config import load_settings
from tests.realtime.busy_hour import write_busy_past
from tests.server import add_site, running_server, session_pids

# docs/realtime.md, "The live buffer and its bound": the live service's resident memory.
LIVE_SERVICE_RSS_BOUND_MB = 320


def wal_event(n: int, site: str, received: int, visitor: int) -> dict:
    return {"event_id": f"wal-{n}", "site_id": site, "ts": received, "received_at": received,
            "type": "pageview", "visitor_key": visitor, "visitor_key_source": "tracker",
            "pathname": f"/wal/{n % 7}", "source": "Direct / None", "device": "desktop",
            "browser": "Firefox", "os": "Linux"}


def write_segment(wal: Path, events: list[dict]) -> Path:
    writer = SegmentWriter(wal, segment_seconds=3600)
    writer.append([orjson.dumps(e) for e in events])
    path = writer.close()
    assert path is not None and path.exists()
    return path


def test_the_recent_past_is_counted_once_from_parquet_and_the_wal(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path / "data"}, environ={})
    settings.ensure_dirs()
    now = int(time.time() * 1000)
    write_busy_past(settings.raw_dir, "siteA", 6000, 1500, minutes=50, now_ms=now - 60_000)
    # siteB's as the hourly compaction leaves them: one file an hour, read 5,000 rows at a time
    write_busy_past(settings.raw_dir, "siteB", 12_000, 800, minutes=50, now_ms=now - 60_000, seed=1,
                    segment_ms=HOUR_MS)
    # one segment both sealed and still in the WAL (sealed while the service started), one only in the WAL
    both = [wal_event(n, "siteA", now - 50_000 + n, 10**12 + n % 40) for n in range(120)]
    only_wal = [wal_event(1000 + n, "siteA", now - 20_000 + n, 10**12 + n % 25) for n in range(80)]
    sealed = write_segment(settings.wal_dir, both)
    kept = sealed.with_name(sealed.name + ".copy")
    shutil.copy(sealed, kept)
    assert seal_segment(sealed, settings.raw_dir) is not None
    os.rename(kept, sealed)  # the seal has written Parquet; the WAL file is still there
    write_segment(settings.wal_dir, only_wal)

    hub = build_hub(settings)
    hub.feed.close()

    # The truth, counted from the files themselves: each event once.
    events: dict[str, tuple[str, int, int]] = {}
    for path in settings.raw_dir.rglob("*.parquet"):
        rows = pq.read_table(path, columns=["event_id", "site_id", "ts", "visitor_key"]).to_pydict()
        for eid, site, ts, key in zip(rows["event_id"], rows["site_id"], rows["ts"], rows["visitor_key"], strict=True):
            events[eid] = (site, int(ts.timestamp() * 1000), key)
    for e in both + only_wal:
        events[e["event_id"]] = (e["site_id"], e["ts"], e["visitor_key"])
    hour = now // HOUR_MS * HOUR_MS
    for site in ("siteA", "siteB"):
        in_hour = [(ts, key) for s, ts, key in events.values() if s == site and ts >= hour]
        stats = hub.buffer.stats(site, now)
        assert stats["hour"]["views"] == len(in_hour), site
        assert stats["hour"]["visitors"] == len({key for _, key in in_hour}), site
    assert hub.buffer.size == len(events) == 18_200  # every event once (the beat expires the old ones later)


def test_sources_are_merged_in_cursor_order_and_read_only_when_reached() -> None:
    rng = np.random.default_rng(3)
    loaded: list[int] = []
    handed_out: list[int] = []

    def source(i: int, lowest: int) -> Source:
        stamps = [int(x) for x in rng.integers(lowest, lowest + 500, size=50)]  # overlapping sources

        def load() -> list:
            # read only once everything received before its first event has been handed out
            assert not handed_out or max(handed_out) < lowest
            loaded.append(i)
            return [((t, f"seg{i}", k), None) for k, t in enumerate(stamps)], None

        return Source(lowest, load)

    sources = [source(i, 1000 + 300 * i) for i in range(20)]
    keys = []
    for batch in in_cursor_order(list(reversed(sources)), batch=64):
        assert len(batch) <= 64
        handed_out.extend(key[0] for key, _ in batch)
        keys.extend(key for key, _ in batch)
    assert keys == sorted(keys) and len(keys) == 20 * 50
    assert loaded == list(range(20))


def live_service_memory(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) / 1024, int(status["VmRSS"].split()[0]) / 1024


@pytest.mark.slow
def test_the_live_service_stays_within_its_bound_loading_a_busy_hour(tmp_path: Path) -> None:
    """200,000 events of 120,000 visitors in the last hour: more than the buffer's caps (80,000
    events a site, 100,000 visitors), so the whole bound is used; the peak resident memory of the
    live service, from its first byte, stays under the documented figure."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "busy.example.com")
    write_busy_past(data_dir / "raw", site["id"], 200_000, 120_000, minutes=60)
    with running_server(data_dir, 1, "--dev") as server:
        # Asked at once, as a dashboard may: the live service may still be starting (the server
        # is healthy before it listens), and the worker must wait for it, not load the past itself.
        r = httpx.get(f"{server.url}/api/v2/stats/{site['id']}", timeout=300)
        assert r.status_code == 200, r.text
        stats = r.json()
        assert stats["buffer"]["events"] == 80_000 and stats["buffer"]["complete"] is False
        assert server.proc is not None
        pid = next(p for p in session_pids(server.proc.pid)
                   if b"api.live_service" in Path(f"/proc/{p}/cmdline").read_bytes())
        peak, rss = live_service_memory(pid)
        assert peak < LIVE_SERVICE_RSS_BOUND_MB, f"peak {peak:.0f} MB, now {rss:.0f} MB"
        (worker,) = server.worker_pids()
        worker_peak, _ = live_service_memory(worker)
        assert worker_peak < 150, f"the worker peaked at {worker_peak:.0f} MB: it loaded the past itself"
