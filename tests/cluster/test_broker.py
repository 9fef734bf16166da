"""The live feed across nodes through a real NATS server (cluster/broker.py): what is published,
in what order every node gets it, what a restart or an absent broker does; then two real
``littlestats serve`` nodes sharing one broker."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from api.live import Cursor, LiveEvent
from api.stream import MAX_EVENTS_PER_FLUSH
from cluster.broker import (
    EVENTS_DROPPED,
    STALE_MS,
    Broker,
    BrokerFeed,
    Publisher,
    decode_events,
    encode_events,
    init,
    init_step,
    now_ms,
)
from cluster.engines import Nats
from ingest.wal import SegmentWriter, read_records, sealable_segments
from littlestats.config import Settings
from tests.realtime.clients import SSEClient, WSClient, post_event
from tests.server import LiveServer, add_site, free_port, session_pids


def record(site: str, visitor: int, page: str, received_at: int | None = None) -> bytes:
    """A WAL record with the fields the live buffer reads (``api.live.LiveEvent``)."""
    received = now_ms() if received_at is None else received_at
    return orjson.dumps({
        "site_id": site, "ts": received, "received_at": received, "visitor_key": visitor,
        "type": "pageview", "pathname": page, "hostname": "example.com", "source": "Direct / None",
        "country": "FR", "device": "desktop", "browser": "Firefox", "os": "Linux",
        "ip_hash": "not read by the live buffer"})


def node_settings(tmp_path: Path, node: str, broker_url: str) -> Settings:
    return Settings(data_dir=tmp_path / node, node_name=node, broker_url=broker_url)


def unique(prefix: str) -> str:
    """Names unique to this test: the stream is shared by every test of the run."""
    return f"{prefix}{secrets.token_hex(4)}"


def test_a_message_carries_the_wal_records_and_their_cursors() -> None:
    payloads = [record("s", 1, f"/{i}", 1_000 + i) for i in range(3)]
    items = [((1_000 + i, segment, index), (1_000 + i, payloads[i]))
             for i, (segment, index) in enumerate([("seg-a", 0), ("seg-b", 7), ("seg-a", 1)])]
    body = encode_events(items)
    decoded = [(segment, index, bytes(payload)) for segment, index, payload in decode_events(body)]
    assert decoded == [("seg-a", 0, payloads[0]), ("seg-b", 7, payloads[1]), ("seg-a", 1, payloads[2])]
    # a damaged record ends the message there: what follows it is not trusted
    damaged = bytearray(body)
    damaged[body.index(b"/1") + 1] ^= 0xFF
    assert [p for _, _, p in decode_events(bytes(damaged))] == [payloads[0]]


async def collect(feed: BrokerFeed, want: Callable[[list[tuple[Cursor, LiveEvent]]], bool],
                  site: str, timeout: float = 10) -> list[tuple[Cursor, LiveEvent]]:
    """This site's events as the feed hands them out, until ``want`` says it has them all."""
    got: list[tuple[Cursor, LiveEvent]] = []
    deadline = time.monotonic() + timeout
    while not want(got):
        assert time.monotonic() < deadline, f"timed out with {len(got)} events"
        got += [(key, e) for key, e in feed.poll() if e.site_id == site]
        await asyncio.sleep(0.02)
    return got


STEPS = 40


def test_every_nodes_events_reach_the_feed_once_in_each_visitors_order(tmp_path: Path, nats: Any) -> None:
    site, names = unique("site"), [unique("a"), unique("b")]
    nodes = [node_settings(tmp_path, name, nats.url) for name in names]
    init(nodes[0])
    writers = [SegmentWriter(s.wal_dir) for s in nodes]
    written: dict[Cursor, tuple[int, str]] = {}  # cursor -> (visitor, page)
    counts: dict[str, int] = {}

    def write(node: int, visitor: int, page: str) -> None:
        writer = writers[node]
        writer.append([payload := record(site, visitor, page)])
        assert writer.active_path is not None
        segment = writer.active_path.stem
        index = counts[segment] = counts.get(segment, -1) + 1
        written[(orjson.loads(payload)["received_at"], segment, index)] = (visitor, page)

    async def scenario() -> list[tuple[Cursor, LiveEvent]]:
        broker = Broker(nats.url, "test")
        broker.start()
        publishers = [Publisher(s, broker) for s in nodes]
        for p in publishers:
            p.start()
            await asyncio.sleep(0.025)  # their passes out of step, as on two machines
        await asyncio.sleep(0.5)
        # as a starting live service does, from before both nodes' latest marks: a node the feed
        # has no mark of yet is not waited for
        feed = BrokerFeed(broker)
        await feed.subscribe(now_ms() - 1000)
        # the feed is read while the events come (as the hub does, every 50 ms)
        collecting = asyncio.create_task(collect(feed, lambda got: len(got) >= 5 * STEPS, site, 30))
        # each visitor's events alternate between the two nodes, one after the other (as a
        # browser's beacons do behind a load balancer); the visitors interleave
        for step in range(STEPS):
            for visitor in range(5):
                await asyncio.to_thread(write, (step + visitor) % 2, visitor, f"/{visitor}/{step}")
            await asyncio.sleep(0.01)
        got = await collecting
        await asyncio.sleep(0.5)
        got += [(key, e) for key, e in feed.poll() if e.site_id == site]  # nothing more, twice
        for p in publishers:
            await p.stop()
        feed.close()
        await broker.close()
        return got

    got = asyncio.run(scenario())
    for w in writers:
        w.close()
    assert len(got) == len(written) == 5 * STEPS
    assert {key: (e.visitor, e.page) for key, e in got} == written  # the WAL's own cursors, once
    for visitor in range(5):
        pages = [e.page for _, e in got if e.visitor == visitor]
        assert pages == [f"/{visitor}/{step}" for step in range(STEPS)]


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[Nats]:
    """A NATS server for this test alone: where timing is asserted, a node of another test that
    stops meanwhile would hold the feed back (``STALE_MS``), as it should."""
    server = Nats(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_node_that_stops_publishing_holds_the_others_back_only_a_moment(
    tmp_path: Path, own_nats: Nats
) -> None:
    nats = own_nats
    site = unique("site")
    nodes = [node_settings(tmp_path, unique(name), nats.url) for name in "ab"]
    init(nodes[0])
    writer = SegmentWriter(nodes[0].wal_dir)

    async def scenario() -> tuple[float, float]:
        broker = Broker(nats.url, "test")
        broker.start()
        publishers = [Publisher(s, broker) for s in nodes]
        for p in publishers:
            p.start()
        await asyncio.sleep(0.5)
        feed = BrokerFeed(broker)
        await feed.subscribe(now_ms() - 1000)
        started = time.monotonic()
        writer.append([record(site, 1, "/while-b-runs")])
        await collect(feed, lambda got: len(got) == 1, site)
        while_running = time.monotonic() - started
        await publishers[1].stop()  # node b is gone: its mark stays where it was
        started = time.monotonic()
        writer.append([record(site, 1, "/after-b-stopped")])
        await collect(feed, lambda got: len(got) == 1, site)
        after_stop = time.monotonic() - started
        await publishers[0].stop()
        feed.close()
        await broker.close()
        return while_running, after_stop

    while_running, after_stop = asyncio.run(scenario())
    writer.close()
    assert while_running < 0.6  # b's marks come every MARK_MS
    # a's event waits until b's last mark is STALE_MS behind a's, then goes out
    assert STALE_MS / 1000 - 0.5 < after_stop < STALE_MS / 1000 + 1.0


def test_a_restarted_publisher_goes_on_after_what_its_node_published(tmp_path: Path, nats: Any) -> None:
    site = unique("site")
    settings = node_settings(tmp_path, unique("n"), nats.url)
    init(settings)
    writer = SegmentWriter(settings.wal_dir)

    async def publish_for(seconds: float) -> int:
        broker = Broker(nats.url, "test")
        broker.start()
        publisher = Publisher(settings, broker)
        publisher.start()
        await asyncio.sleep(seconds)
        await publisher.stop()
        await broker.close()
        return publisher.published

    async def scenario() -> tuple[list[int], list[tuple[Cursor, LiveEvent]]]:
        broker = Broker(nats.url, "test")
        broker.start()
        feed = BrokerFeed(broker)
        await feed.subscribe(now_ms())
        writer.append([record(site, 1, f"/{i}") for i in range(10)])
        published = [await publish_for(1.0)]
        writer.append([record(site, 1, f"/{i}") for i in range(10, 15)])  # while none runs
        published.append(await publish_for(1.0))
        got = await collect(feed, lambda got: len(got) >= 15, site)
        await asyncio.sleep(0.5)
        got += [(k, e) for k, e in feed.poll() if e.site_id == site]
        feed.close()
        await broker.close()
        return published, got

    published, got = asyncio.run(scenario())
    writer.close()
    assert published == [10, 5]
    assert [e.page for _, e in got] == [f"/{i}" for i in range(15)]


def test_init_makes_the_stream_once_and_keeps_it(nats: Any) -> None:
    settings = Settings(broker_url=nats.url, node_name="init")
    init(settings)
    again = init(settings)  # a second run changes nothing
    assert again["created"] is False
    assert again["subjects"] == ["littlestats.live.>"]
    assert again["maxAgeSeconds"] == 2 * 3600
    assert again["maxBytes"] == 1 << 30
    assert init_step(settings).startswith("updated stream LITTLESTATS_LIVE")
    assert init_step(Settings()) == "skipped: no broker_url"


def test_without_a_broker_the_backlog_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, "n1", f"nats://127.0.0.1:{free_port()}")  # nobody there
    writer = SegmentWriter(settings.wal_dir)

    async def scenario() -> Publisher:
        broker = Broker(settings.broker_url, "test")
        broker.start()
        publisher = Publisher(settings, broker, max_backlog=50)
        publisher.start()
        for batch in range(8):
            started = time.perf_counter()
            await writer.append_async([record("s", 1, f"/{batch}/{i}") for i in range(25)])
            assert time.perf_counter() - started < 0.5  # the write does not wait for the broker
            await asyncio.sleep(0.08)  # a tail pass between the writes
        await asyncio.sleep(0.2)
        await publisher.stop()
        await broker.close()
        return publisher

    before = EVENTS_DROPPED._value.get()
    publisher = asyncio.run(scenario())
    writer.close()
    assert publisher.queued <= 50 + 25  # the bound, and at most one tail pass beyond it
    assert publisher.dropped == 200 - publisher.queued
    assert EVENTS_DROPPED._value.get() - before == publisher.dropped
    stored = sum(1 for segment in sealable_segments(settings.wal_dir) for _ in read_records(segment))
    assert stored == 200  # every event is stored all the same


# two real nodes ---------------------------------------------------------------------------
def node_env(settings: dict[str, Any]) -> dict[str, str]:
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1"}
    for key, value in settings.items():
        if key != "data_dir":
            env[f"LITTLESTATS_{key.upper()}"] = str(value)
    return env


@contextmanager
def two_nodes(tmp_path: Path, cluster_settings: Callable[..., dict[str, Any]],
              **more: Any) -> Iterator[tuple[LiveServer, LiveServer, dict[str, Any]]]:
    """Nodes ``a`` and ``b`` (one worker each, their own data directories and ports) sharing the
    broker, with the same site on both (copied control plane: sharing it is another part's job)."""
    settings = [cluster_settings(unique(name), s3=False, catalog=False, **more) for name in "ab"]
    dirs = [Path(s["data_dir"]) for s in settings]
    for d in dirs:
        d.mkdir(parents=True)
    site = add_site(dirs[0])
    for f in dirs[0].iterdir():
        if f.is_file():
            shutil.copy(f, dirs[1] / f.name)
    init(Settings(broker_url=settings[0]["broker_url"], node_name="init"))
    nodes = [LiveServer(d, free_port(), 1, ("--dev",), node_env(s)) for d, s in zip(dirs, settings, strict=True)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield nodes[0], nodes[1], site
    finally:
        for node in nodes:
            node.stop()


def live_service_pid(server: LiveServer) -> int:
    """The pid of the server's live service (0 while there is none)."""
    assert server.proc is not None
    for pid in session_pids(server.proc.pid):
        try:
            if b"api.live_service" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except FileNotFoundError:
            continue
    return 0


def realtime(server: LiveServer, site: dict[str, Any], ws: bool = False) -> str:
    url = f"{server.url}/api/v2/realtime/{site['domainKey']}"
    return url.replace("http://", "ws://") if ws else url


def pages_of(client: SSEClient | WSClient, visitor: str) -> list[str]:
    return [e["page"] for e in client.events() if e["page"].startswith(f"/{visitor}/")]


@pytest.mark.slow
def test_a_live_client_on_one_node_sees_every_nodes_events_within_a_second(
    tmp_path: Path, cluster_settings: Callable[..., dict[str, Any]], own_nats: Nats
) -> None:
    with two_nodes(tmp_path, cluster_settings, broker_url=own_nats.url) as (a, b, site):
        key = site["domainKey"]
        sse, ws = SSEClient(realtime(a, site)), WSClient(realtime(a, site, ws=True))
        sse_b = SSEClient(realtime(b, site))
        for client in (sse, ws, sse_b):
            client.wait_for(lambda c: bool(c.of_type("stats_update")))

        # latency: one event posted to node b at a time, after a quiet spell (the hub sends
        # the first events after one at its next beat)
        latencies: dict[str, list[float]] = {"sse": [], "ws": []}
        for i in range(5):
            time.sleep(0.6)
            started = time.monotonic()
            post_event(b.url, key, {"url": f"https://example.com/lat/{i}", "visitorId": "lat"})
            for name, client in (("sse", sse), ("ws", ws)):
                client.wait_for(lambda c, n=i + 1: len(pages_of(c, "lat")) >= n, timeout=5)
                latencies[name].append(time.monotonic() - started)
        assert max(latencies["sse"] + latencies["ws"]) < 1.0, latencies

        # each visitor's beacons alternate between the nodes, one after the other; visitors
        # run side by side. A flush sends at most MAX_EVENTS_PER_FLUSH events (the newest, with a
        # count of the others): on a slow machine the whole burst can fall in one flush, so it
        # is no bigger than that, and every event must come through.
        plan = {f"v{v}": [f"/v{v}/{i}" for i in range(5)] for v in range(4)}
        assert sum(map(len, plan.values())) == MAX_EVENTS_PER_FLUSH

        def visit(visitor: str) -> None:
            for i, page in enumerate(plan[visitor]):
                node = (a, b)[(i + int(visitor[1:])) % 2]
                post_event(node.url, key, {"url": f"https://example.com{page}", "visitorId": visitor})

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(visit, plan))
        total = 5 + sum(map(len, plan.values()))
        for client in (sse, ws, sse_b):
            client.wait_for(lambda c: len(c.events()) >= total)
        time.sleep(0.5)
        for client in (sse, ws, sse_b):
            assert len(client.events()) == total  # every event once
            for visitor, pages in plan.items():
                assert pages_of(client, visitor) == pages, visitor
        # one cursor per event, the same on every node
        assert [e["id"] for e in sse.events()] == [e["id"] for e in sse_b.events()]
        assert [e["id"] for e in sse.events()] == [e["id"] for e in ws.events()]
        assert len({e["id"] for e in sse.events()}) == total
        # both nodes' stats count both nodes' events
        for node in (a, b):
            stats = httpx.get(f"{node.url}/api/v2/stats/{key}").json()
            assert stats["hour"]["views"] == total
            assert stats["hour"]["visitors"] == len(plan) + 1

        # node a's live service restarts: it reloads the recent past from the broker, and a
        # client resumes with its last cursor while events keep coming on node b
        last_id = sse.events()[-1]["id"]
        sse.close()
        killed = live_service_pid(a)
        os.kill(killed, signal.SIGKILL)
        missed = [f"/late/{i}" for i in range(3)]
        for page in missed:
            post_event(b.url, key, {"url": f"https://example.com{page}", "visitorId": "late"})
        deadline = time.monotonic() + 30
        while live_service_pid(a) in (0, killed) or not (a.data_dir / "run" / "live.sock").exists():
            assert time.monotonic() < deadline, "the live service did not come back"
            time.sleep(0.1)
        a.wait_ready()
        resumed = SSEClient(realtime(a, site), headers={"Last-Event-ID": last_id})
        resumed.wait_for(lambda c: len(c.events()) >= len(missed), timeout=30)
        assert pages_of(resumed, "late") == missed
        assert len(resumed.events()) == len(missed)
        stats = httpx.get(f"{a.url}/api/v2/stats/{key}").json()
        assert stats["hour"]["views"] == total + len(missed)
        for client in (ws, sse_b, resumed):
            client.close()


def backlog(server: LiveServer) -> float:
    """``littlestats_broker_backlog_events`` in the server's ``/metrics``."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("littlestats_broker_backlog_events "):
            return float(line.split()[1])
    return -1


@pytest.mark.slow
def test_while_the_broker_is_down_ingest_goes_on_and_live_resumes_after(
    tmp_path: Path, cluster_settings: Callable[..., dict[str, Any]], own_nats: Nats
) -> None:
    broker = own_nats  # to kill and start again
    with two_nodes(tmp_path, cluster_settings, broker_url=broker.url) as (a, b, site):
        key = site["domainKey"]
        sse = SSEClient(realtime(a, site))
        sse.wait_for(lambda c: bool(c.of_type("stats_update")))
        post_event(b.url, key, {"url": "https://example.com/before", "visitorId": "x"})
        sse.wait_for(lambda c: len(c.events()) == 1)

        os.kill(broker.processes[0].pid, signal.SIGKILL)  # killed, not stopped
        broker.stop()  # (only forgets the dead process)
        statuses = []
        for i, node in zip(range(20), itertools.cycle((a, b)), strict=False):
            with httpx.Client(timeout=10) as client:
                r = client.post(f"{node.url}/api/v2/track/{key}", headers={"User-Agent": "Mozilla/5.0 Firefox/120.0"},
                                json={"url": f"https://example.com/down/{i}", "visitorId": f"d{i % 4}"})
            statuses.append(r.status_code)
        assert set(statuses) <= {200, 202}, statuses  # accepted: stored in each node's WAL
        for node in (a, b):  # each node holds its 10 events for the broker
            deadline = time.monotonic() + 5
            while backlog(node) != 10:
                assert time.monotonic() < deadline, backlog(node)
                time.sleep(0.1)

        time.sleep(1.0)
        broker.start()  # same port, same store
        sse.wait_for(lambda c: len(c.events()) >= 21, timeout=30)
        started = time.monotonic()
        post_event(b.url, key, {"url": "https://example.com/after", "visitorId": "x"})
        sse.wait_for(lambda c: len(c.events()) >= 22, timeout=10)
        assert time.monotonic() - started < 1.0  # live again, at its usual pace
        time.sleep(0.5)
        pages = [e["page"] for e in sse.events()]
        assert len(pages) == len(set(pages)) == 22  # each event once
        assert sorted(pages) == sorted(["/before", "/after"] + [f"/down/{i}" for i in range(20)])
        for visitor in range(4):
            mine = [p for p in pages if p.startswith("/down/") and int(p[6:]) % 4 == visitor]
            assert mine == sorted(mine, key=lambda p: int(p[6:]))
        sse.close()
