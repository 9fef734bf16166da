"""WalTail: every worker's accepted events, complete records only, across rotation and sealing,
in causal order."""

from __future__ import annotations

import inspect
import os
import threading
import time
from pathlib import Path

import orjson

from api.live_feed import WalTail
from ingest.wal import SegmentWriter, encode_record


def append(writer: SegmentWriter, *events: dict) -> None:
    payloads = [orjson.dumps(e) for e in events]
    if "done" not in inspect.signature(writer.append).parameters:
        writer.append(payloads)  # returns once durable
        return
    done = threading.Event()
    writer.append(payloads, lambda exc: done.set())  # type: ignore[call-arg]
    assert done.wait(5)


def rotate(writer: SegmentWriter) -> None:
    if hasattr(writer, "maybe_rotate"):
        writer.maybe_rotate()


def event(n: int, received: int | None = None) -> dict:
    return {"event_id": f"e{n}", "site_id": "s", "received_at": received or int(time.time() * 1000), "n": n}


def drain(tail: WalTail, until: int, timeout: float = 5) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < until and time.monotonic() < deadline:
        got += [raw["n"] for _, raw in tail.poll()]
        time.sleep(0.01)
    return got


def test_tail_follows_two_writers_through_rotation_and_unlink(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    a = SegmentWriter(wal, segment_seconds=0.2)
    b = SegmentWriter(wal, segment_seconds=0.2)
    tail = WalTail(wal)
    sent: list[int] = []
    got: list[int] = []
    for n in range(60):
        append(a if n % 2 else b, event(n))
        sent.append(n)
        got += [raw["n"] for _, raw in tail.poll()]  # the tail holds every segment it saw open
        if n % 10 == 9:
            time.sleep(0.25)  # let the writers rotate; unlink closed segments as sealing would
            rotate(a)
            rotate(b)
            for p in wal.glob("*.closed"):
                if n % 20 == 19:
                    p.unlink()
    got += drain(tail, 60 - len(got))
    a.close()
    b.close()
    assert got == sent
    assert not tail.tails or all(not t.finished for t in tail.tails.values())
    tail.close()


def test_incomplete_and_torn_records_are_not_read(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    record = encode_record(orjson.dumps(event(1, received=1)))
    path = wal / "20260101T000000-1-aaaa.seg"
    with open(path, "wb") as f:
        f.write(record + record[:7])
    tail = WalTail(wal)
    assert [raw["n"] for _, raw in tail.poll()] == [1]
    with open(path, "ab") as f:
        f.write(record[7:])  # the writer finishes the record
    assert [raw["n"] for _, raw in tail.poll()] == [1]
    os.rename(path, path.with_suffix(".closed"))
    with open(path.with_suffix(".closed"), "ab") as f:
        f.write(b"\x05\x00\x00\x00garbage")  # a torn tail left by a crash
    assert tail.poll() == []
    assert tail.tails == {}
    tail.close()


def test_records_are_released_in_acceptance_order_across_segments(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    now = int(time.time() * 1000)
    with open(wal / "20260101T000000-1-aaaa.seg", "wb") as f:  # written first, accepted later
        f.write(encode_record(orjson.dumps(event(2, received=now - 50))))
    with open(wal / "20260101T000000-2-bbbb.seg", "wb") as f:
        f.write(encode_record(orjson.dumps(event(1, received=now - 100))))
        f.write(encode_record(orjson.dumps(event(9, received=now + 60_000))))  # not yet safe to release
    tail = WalTail(wal)
    items = tail.poll()
    assert [raw["n"] for _, raw in items] == [1, 2]
    assert [key[1] for key, _ in items] == ["20260101T000000-2-bbbb", "20260101T000000-1-aaaa"]
    assert [raw["n"] for *_, raw in tail.pending] == [9]
    tail.close()


def test_each_record_keeps_its_index_in_the_segment_even_when_one_cannot_be_decoded(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    path = wal / "20260101T000000-1-aaaa.seg"
    with open(path, "wb") as f:
        f.write(encode_record(orjson.dumps(event(1, received=1))) + encode_record(b"{not json")
                + encode_record(orjson.dumps(event(2, received=2))))
    tail = WalTail(wal)
    items = tail.poll()
    assert [(key[2], raw["n"]) for key, raw in items] == [(0, 1), (2, 2)]
    assert tail.bad_records == 1
    with open(path, "ab") as f:
        f.write(encode_record(orjson.dumps(event(3, received=3))))
    assert [(key[2], raw["n"]) for key, raw in tail.poll()] == [(3, 3)]
    tail.close()


def test_records_decoded_as_live_events_and_a_bad_one_counted(tmp_path: Path) -> None:
    from api.live_feed import LIVE_EVENTS

    wal = tmp_path / "wal"
    writer = SegmentWriter(wal, segment_seconds=60)
    tail = WalTail(wal, records=LIVE_EVENTS)
    now = int(time.time() * 1000) - 1000
    good = {"event_id": "e1", "site_id": "s", "ts": now, "received_at": now, "visitor_key": 7, "pathname": "/x"}
    append(writer, good, {**good, "pathname": None}, {**good, "event_id": "e3", "pathname": "/y"})
    items = tail.poll()
    assert [(key[2], event.page, event.visitor) for key, event in items] == [(0, "/x", 7), (2, "/y", 7)]
    assert tail.bad_records == 1  # a null where the schema has none: not an event
    tail.close()
    writer.close()
