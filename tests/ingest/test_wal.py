"""The write-ahead log and sealing: durability, group commit, crash recovery, idempotence."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from ingest.seal import events_to_table, payloads_to_table, seal_all, seal_segment
from ingest.wal import ZERO_FILL, SegmentWriter, encode_record, read_records
from tests import aio


def event(i: int, site: str = "s1", ts: int = 1_700_000_000_000) -> dict:
    return {
        "event_id": f"e{i:06d}", "site_id": site, "ts": ts + i, "received_at": ts + i,
        "type": "pageview", "visitor_key": i, "visitor_key_source": "tracker", "pathname": f"/p{i}",
        "source": "Direct / None", "device": "desktop", "browser": "Chrome", "os": "Windows",
        "props_num": {"n": float(i)},
    }


def append_sync(writer: SegmentWriter, payloads: list[bytes]) -> None:
    writer.append(payloads)


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.closed"
    good = [orjson.dumps(event(i)) for i in range(3)]
    data = b"".join(encode_record(p) for p in good)
    torn = encode_record(orjson.dumps(event(3)))[:-5]
    path.write_bytes(data + torn)
    assert list(read_records(path)) == good


def test_corrupt_record_stops_the_read(tmp_path: Path) -> None:
    path = tmp_path / "x.closed"
    records = [encode_record(orjson.dumps(event(i))) for i in range(3)]
    broken = bytearray(records[1])
    broken[-1] ^= 0xFF
    path.write_bytes(records[0] + bytes(broken) + records[2])
    assert len(list(read_records(path))) == 1


def test_group_commit_shares_fsyncs_between_concurrent_requests(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)

    async def requests() -> None:
        await asyncio.gather(*(writer.append_async([orjson.dumps(event(i))]) for i in range(200)))

    aio.run(requests())
    assert writer.fsyncs < 10  # requests ready together share one fsync
    closed = writer.close()
    assert closed is not None
    assert len(list(read_records(closed))) == 200


def test_a_request_at_an_idle_writer_commits_at_once_and_busy_commits_are_paced(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60, commit_interval=0.5)

    async def timed_append(i: int) -> float:
        started = time.monotonic()
        await writer.append_async([orjson.dumps(event(i))])
        return time.monotonic() - started

    async def requests() -> tuple[float, float]:
        first = await timed_append(0)  # nothing committed lately: no wait
        second = await timed_append(1)  # right after a commit: waits for the interval
        return first, second

    first, second = aio.run(requests())
    assert first < 0.25
    assert 0.3 < second < 2
    assert writer.fsyncs == 2
    closed = writer.close()
    assert closed is not None and len(list(read_records(closed))) == 2


def test_commit_now_ends_the_wait_for_the_interval(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60, commit_interval=5)
    done: list[float] = []

    async def requests() -> None:
        await writer.append_async([b"first"])  # commits at once; the next waits 5 s...
        started = time.monotonic()
        writer.commit_soon(encode_record(b"second"), lambda error: done.append(time.monotonic() - started))
        await asyncio.sleep(0.05)
        assert done == []
        writer.commit_now()  # ... unless nobody else can join it
        await asyncio.sleep(0.05)

    aio.run(requests())
    assert len(done) == 1 and done[0] < 1
    closed = writer.close()
    assert closed is not None and list(read_records(closed)) == [b"first", b"second"]


def test_commit_soon_calls_back_once_the_records_are_on_disk(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    calls: list[tuple[BaseException | None, int]] = []

    def on_durable(error: BaseException | None) -> None:
        assert writer.active_path is not None
        calls.append((error, len(list(read_records(writer.active_path)))))

    async def requests() -> None:
        for i in range(3):
            writer.commit_soon(encode_record(orjson.dumps(event(i))), on_durable)
        assert calls == []  # nothing waits, nothing is written yet
        await asyncio.sleep(0.05)

    aio.run(requests())
    assert calls == [(None, 3)] * 3 and writer.fsyncs == 1  # one write for all three
    writer.close()


def test_commit_soon_reports_a_failed_write(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    errors: list[BaseException | None] = []

    (tmp_path / "wal").rmdir()
    (tmp_path / "wal").write_text("")  # no segment can be created in it

    async def request() -> None:
        writer.commit_soon(encode_record(b"{}"), errors.append)
        await asyncio.sleep(0.05)

    aio.run(request())
    assert len(errors) == 1 and isinstance(errors[0], OSError)


def test_every_acknowledged_async_append_survives_kill_9(tmp_path: Path) -> None:
    # Concurrent requests append and print their number once acknowledged; the process is killed
    # mid-stream. Every number printed is in the segment, once.
    wal = tmp_path / "wal"
    script = f"""
import asyncio, pathlib, sys
from ingest.wal import SegmentWriter
w = SegmentWriter(pathlib.Path({str(wal)!r}), segment_seconds=600)
async def client(c):
    for n in range(c, 10**9, 16):
        await w.append_async([b'%d' % n])
        sys.stdout.write(f'{{n}}\\n')
        sys.stdout.flush()
async def main():
    await asyncio.gather(*(client(c) for c in range(16)))
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    acked: list[int] = []
    while len(acked) < 2000:
        line = proc.stdout.readline()
        assert line, "the writer process ended early"
        acked.append(int(line))
    proc.kill()
    acked += [int(line) for line in proc.stdout.read().split()]
    proc.wait()
    written = [int(r) for p in sorted(wal.iterdir()) for r in read_records(p)]
    assert len(written) == len(set(written))
    assert set(acked) <= set(written)


def test_a_failed_write_leaves_no_torn_record_behind(tmp_path: Path) -> None:
    # A file-size limit makes the kernel refuse the middle of a write (EFBIG), as a full disk would.
    script = f"""
import resource, signal, orjson, pathlib
from ingest.wal import SegmentWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
w = SegmentWriter(pathlib.Path({str(tmp_path / "wal")!r}), segment_seconds=60)
w.append([b'first'])
try:
    w.append([b'x' * 10_000])
except OSError:
    print('refused')
w.append([b'second'])
w.close()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], check=True)
    assert out.stdout.strip() == "refused"
    segments = sorted((tmp_path / "wal").iterdir())
    assert [r for p in segments for r in read_records(p)] == [b"first", b"second"]


def test_sealing_groups_by_site_and_hour_and_is_idempotent(tmp_path: Path) -> None:
    wal, raw = tmp_path / "wal", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=60)
    hour = 3_600_000
    events = [event(0, "a"), event(1, "a", ts=1_700_000_000_000 + hour), event(2, "b")]
    append_sync(writer, [orjson.dumps(e) for e in events])
    closed = writer.close()
    assert closed is not None
    copy = closed.read_bytes()

    result = seal_segment(closed, raw)
    assert result is not None and result.events == 3 and len(result.files) == 3
    assert not closed.exists()
    first = {p: pq.read_table(p).to_pylist() for p in result.files}
    assert all("date=" in str(p) and "hour=" in str(p) for p in first)

    # A crash after writing the files but before deleting the segment: sealing again rewrites
    # the same files with the same rows — nothing is duplicated.
    closed.write_bytes(copy)
    again = seal_segment(closed, raw)
    assert again is not None and set(again.files) == set(first)
    assert {p: pq.read_table(p).to_pylist() for p in again.files} == first
    assert sum(len(rows) for rows in first.values()) == 3


def test_columnar_read_of_records_matches_the_row_by_row_conversion() -> None:
    events = [event(i) for i in range(6)]
    events[1].update(title="caf\u00e9 \"quoted\" \n\u2028 \":{ not a property", props_num=None,
                     props_str={"plan": "pro", "empty": ""}, props_bool={"ok": True})
    events[2].update(props_num=None, visitor_key=2**64 - 1, engagement_ms=1500, query="a=1&b=2")
    events[3].pop("props_num")  # a column a record lacks is null
    payloads = [orjson.dumps(e) for e in events]
    table = payloads_to_table(payloads)
    assert table.equals(events_to_table(events))
    assert table.column("props_str").to_pylist()[1] == [("plan", "pro"), ("empty", "")]


def test_a_record_the_columnar_reader_refuses_is_sealed_row_by_row(tmp_path: Path) -> None:
    wal, raw = tmp_path / "wal", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=60)
    odd = {**event(1), "engagement_ms": 1500.0}  # a float where the column holds integers
    append_sync(writer, [orjson.dumps(event(0)), orjson.dumps(odd)])
    closed = writer.close()
    assert closed is not None
    result = seal_segment(closed, raw)
    assert result is not None and result.events == 2
    rows = pq.read_table(result.files[0]).to_pylist()
    assert [r["engagement_ms"] for r in rows] == [None, 1500]


def test_active_segment_of_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    wal, raw = tmp_path / "wal", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=60)
    append_sync(writer, [orjson.dumps(event(0))])
    assert seal_all(wal, raw) == []  # the writer holds the lock
    writer.close()
    assert len(seal_all(wal, raw)) == 1


def test_segment_of_a_killed_writer_is_recovered(tmp_path: Path) -> None:
    wal, raw = tmp_path / "wal", tmp_path / "raw"
    script = (
        "import orjson\n"
        "from ingest.wal import SegmentWriter\n"
        f"w = SegmentWriter(__import__('pathlib').Path({str(wal)!r}), segment_seconds=600)\n"
        "w.append([orjson.dumps({'event_id': 'k', 'site_id': 's', 'ts': 1700000000000, 'received_at': 1700000000000,"
        " 'type': 'pageview', 'visitor_key': 1, 'visitor_key_source': 'tracker', 'pathname': '/',"
        " 'source': 'Direct / None', 'device': 'desktop', 'browser': 'x', 'os': 'y'})])\n"
        "print('acked', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"acked"
    assert seal_all(wal, raw) == []
    proc.kill()
    proc.wait()
    time.sleep(0.1)
    results = seal_all(wal, raw)
    assert [r.events for r in results] == [1]
    assert os.listdir(wal) == []


def test_an_active_segment_is_zero_filled_ahead_and_cut_back_when_rotated(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    payloads = [orjson.dumps(event(i)) for i in range(3)]
    writer.append(payloads[:2])
    active = writer.active_path
    assert active is not None
    records = b"".join(encode_record(p) for p in payloads[:2])
    # Records are written over durable zeros (no size change, no journal commit per write); a
    # reader of the active segment (or of a crashed writer's) stops at the zeros.
    assert active.stat().st_size == ZERO_FILL
    assert active.read_bytes()[: len(records) + 8] == records + bytes(8)
    assert list(read_records(active)) == payloads[:2]
    writer.append(payloads[2:])
    assert list(read_records(active)) == payloads
    closed = writer.close()
    assert closed is not None
    assert closed.read_bytes() == b"".join(encode_record(p) for p in payloads)


def test_a_write_past_the_zero_fill_extends_it(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    big = [b'"' + b"x" * 300_000 + b'"' for _ in range(5)]  # 1.5 MB: past the first fill
    writer.append(big[:1])
    writer.append(big[1:])
    active = writer.active_path
    assert active is not None
    assert active.stat().st_size == 2 * ZERO_FILL
    assert list(read_records(active)) == big


def test_the_next_zero_fill_is_made_in_the_background_and_rotation_waits_for_it(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    big = [b'"' + b"x" * 200_000 + b'"' for _ in range(5)]
    writer.append(big[:3])  # 600 KB of the first 1 MiB: under FILL_AHEAD left, the next fill starts
    active = writer.active_path
    assert active is not None
    writer.append(big[3:])  # over the zeros already there, while the fill may still be under way
    assert list(read_records(active)) == big
    deadline = time.monotonic() + 10
    while active.stat().st_size < 2 * ZERO_FILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert active.stat().st_size == 2 * ZERO_FILL
    records = b"".join(encode_record(p) for p in big)
    assert active.read_bytes() == records + bytes(2 * ZERO_FILL - len(records))
    closed = writer.close()
    assert closed is not None
    assert closed.read_bytes() == records  # cut back to its records, after the fill


def test_a_rotation_while_the_background_fill_is_under_way_is_cut_back_to_its_records(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    big = [b'"' + b"x" * 200_000 + b'"' for _ in range(3)]
    writer.append(big)  # starts the next fill
    closed = writer.close()  # at once: waits for the fill before cutting the segment back
    assert closed is not None
    assert closed.read_bytes() == b"".join(encode_record(p) for p in big)


def test_the_live_feed_reads_records_written_over_the_zeros(tmp_path: Path) -> None:
    from api.live_feed import WalTail

    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    tail = WalTail(tmp_path / "wal")
    now = int(time.time() * 1000) - 1000
    writer.append([orjson.dumps(event(0, ts=now))])
    assert [raw["event_id"] for _, raw in tail.poll()] == ["e000000"]
    assert tail.poll() == []  # nothing past the zeros yet: read from there again next pass
    writer.append([orjson.dumps(event(i, ts=now)) for i in (1, 2)])
    assert [raw["event_id"] for _, raw in tail.poll()] == ["e000001", "e000002"]
    assert tail.bad_records == 0
    tail.close()
    writer.close()
