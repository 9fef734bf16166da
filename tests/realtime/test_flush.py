"""A flush is one item per subscriber: its events, then the site's ``stats_update`` when one is
due, so each client is written to once per flush."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from api.live import LiveBuffer
from api.live_feed import LIVE_EVENTS, WalTail
from api.stream import ALL, EventFilter, LiveHub, Subscriber
from ingest.wal import encode_record


class Recorder(Subscriber):
    """A subscriber that keeps what the hub offers it, one entry per offer (one client write)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.offers: list[Any] = []

    def offer(self, item: Any, size: int) -> bool:
        self.offers.append(item)
        return True


def types_in(item: Any) -> list[str]:
    if isinstance(item, list):
        return [orjson.loads(t)["type"] for t in item]
    return [line[7:] for line in item.decode().split("\n") if line.startswith("event: ")]


def test_events_and_the_due_stats_go_to_each_subscriber_in_one_offer(tmp_path: Path) -> None:
    asyncio.run(_one_offer(tmp_path))


async def _one_offer(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    hub = LiveHub(LiveBuffer(), WalTail(wal, records=LIVE_EVENTS))
    clock = [int(time.time() * 1000)]
    hub.now_ms = lambda: clock[0]  # type: ignore[method-assign]
    hub._last_ping = clock[0] + 60_000  # no ping in this test (``start`` would set it)
    sse = Recorder(hub, "s1", ALL, "sse")
    ws = Recorder(hub, "s1", ALL, "ws")
    signups = Recorder(hub, "s1", EventFilter.parse({"type": "event"}), "sse")
    for sub in (sse, ws, signups):
        hub.attach(sub)
    now = int(time.time() * 1000)
    with (wal / "20261125T000000-1-000000-aaaaaa.seg").open("ab") as f:
        for n in range(3):
            f.write(encode_record(orjson.dumps({
                "event_id": f"e{n}", "site_id": "s1", "ts": now, "received_at": now,
                "type": "pageview", "visitor_key": n, "pathname": f"/p/{n}"})))
    await asyncio.sleep(0.005)  # the tail releases records received before its pass started

    clock[0] += 1000  # the stats are due, and the events are
    hub.tick()
    assert len(sse.offers) == len(ws.offers) == len(signups.offers) == 1
    assert types_in(sse.offers[0]) == types_in(ws.offers[0]) == ["event"] * 3 + ["stats_update"]
    assert types_in(signups.offers[0]) == ["stats_update"]  # its filter took none of the events
    stats = orjson.loads(ws.offers[0][-1])["stats"]
    assert stats["hour"]["views"] == 3

    clock[0] += 1000  # nothing new: no stats either
    hub.tick()
    assert len(sse.offers) == 1
    clock[0] += 5000  # idle for 5 s: the stats alone
    hub.tick()
    assert len(sse.offers) == 2 and types_in(sse.offers[1]) == ["stats_update"]
    hub.stop()
