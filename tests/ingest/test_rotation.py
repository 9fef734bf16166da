"""Rotation on request (``ingest.rotation``): what ``littlestats load`` asks of every worker."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from ingest.rotation import RotationWatch, held_active_segments, rotate_active_segments
from ingest.seal import seal_all
from ingest.wal import SegmentWriter


def event(i: int) -> bytes:
    return orjson.dumps({
        "event_id": f"e{i:07d}", "site_id": "s1", "ts": 1_700_000_000_000 + i,
        "received_at": 1_700_000_000_000 + i, "type": "pageview", "visitor_key": i,
        "visitor_key_source": "tracker", "pathname": "/", "source": "Direct / None",
        "device": "desktop", "browser": "Firefox", "os": "Linux",
    })


def sealed_ids(raw: Path) -> list[str]:
    return [r["event_id"] for p in sorted(raw.rglob("*.parquet"))
            for r in pq.read_table(p, columns=["event_id"]).to_pylist()]


def test_a_watched_writer_rotates_on_request_and_releases_the_segment(tmp_path: Path) -> None:
    wal, run, raw = tmp_path / "wal", tmp_path / "run", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=3600)
    watch = RotationWatch(run, writer, poll_seconds=0.02)
    watch.start()
    try:
        writer.append([event(0), event(1)])
        active = writer.active_path
        assert held_active_segments(wal) == [active]
        assert rotate_active_segments(wal, run, timeout=5) == []
        assert active is not None and not active.exists()
        assert held_active_segments(wal) == []
        assert [r.events for r in seal_all(wal, raw)] == [2]
        # the writer goes on in a new segment
        writer.append([event(2)])
        assert held_active_segments(wal) == [writer.active_path]
    finally:
        watch.stop()
        writer.close()


def test_a_writer_that_does_not_answer_is_reported_and_left_alone(tmp_path: Path) -> None:
    wal, run = tmp_path / "wal", tmp_path / "run"
    writer = SegmentWriter(wal, segment_seconds=3600)  # no RotationWatch
    try:
        writer.append([event(0)])
        assert rotate_active_segments(wal, run, timeout=0.3) == [writer.active_path]
        assert writer.active_path is not None and writer.active_path.exists()
    finally:
        writer.close()


def test_no_running_writer_means_no_request_and_no_wait(tmp_path: Path) -> None:
    assert rotate_active_segments(tmp_path / "wal", tmp_path / "run", timeout=5) == []
    assert not (tmp_path / "run").exists()


def test_rotations_while_a_writer_appends_lose_and_repeat_nothing(tmp_path: Path) -> None:
    wal, run, raw = tmp_path / "wal", tmp_path / "run", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=3600)
    watch = RotationWatch(run, writer, poll_seconds=0.005)
    watch.start()
    appended = 0
    done = threading.Event()

    def append() -> None:
        nonlocal appended
        while not done.is_set():
            writer.append([event(appended + k) for k in range(5)])
            appended += 5  # acknowledged: append returned

    thread = threading.Thread(target=append)
    thread.start()
    rounds, sealed = 0, 0
    try:
        while rounds < 20:
            before = appended  # every event acknowledged so far must be sealed after this round
            rotate_active_segments(wal, run, timeout=5)
            sealed += sum(r.events for r in seal_all(wal, raw))
            assert sealed >= before
            rounds += 1
    finally:
        done.set()
        thread.join()
        watch.stop()
        writer.close()
    sealed += sum(r.events for r in seal_all(wal, raw))
    ids = sealed_ids(raw)
    assert sealed == appended == len(ids) == len(set(ids)) > 0
