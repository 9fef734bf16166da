"""The live feed across nodes (cluster/broker.py): publish rate and CPU per event, and the latency
from a beacon on one node to a live client on another.

Usage: ``python -m bench.broker_feed [--events N] [--probes N]`` (needs ``nats-server``; it starts
its own on 127.0.0.1). Prints a JSON report.

1. CPU per event, in one process, on ``--events`` WAL records shaped like real ones (~830 B, every field set):
   the single machine's live service reading them from the WAL (``WalTail``, ``LIVE_EVENTS``:
   the baseline), a cluster node's publisher (WAL → stream, with the broker's acknowledgements),
   and its feed (stream → events in order, the replay a starting live service makes). The
   NATS server's own CPU is reported beside them.
2. Latency, with three real ``littlestats serve`` (one worker each): nodes ``a`` and ``b`` of a
   cluster, and a single machine for comparison. A probe posts a beacon every 0.7 s (a quiet
   spell: the hub sends the first event after one at its next beat) and times how long after the
   acknowledgement it arrives on an SSE stream: posted to ``b``, read on ``a``; posted to ``a``,
   read on ``a``; and on the single machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from api.live_feed import LIVE_EVENTS, WalTail
from cluster.broker import STREAM, Broker, BrokerFeed, Publisher, init, now_ms
from cluster.engines import Nats
from ingest.wal import SegmentWriter
from littlestats.config import Settings


def realistic_record(i: int, received: int) -> bytes:
    return orjson.dumps({
        "event_id": f"0193a6f0-7c2e-7{i:03x}-8e1f-3c5d2a9b{i:04x}", "site_id": "k3J9xQ2mZp7A",
        "ts": received, "received_at": received, "type": "pageview", "name": None,
        "visitor_key": 1_234_567_890_123 + i % 5000, "visitor_key_source": "tracker",
        "hostname": "shop.example.com", "pathname": f"/products/{i % 300}/reviews", "query": "page=2",
        "title": "Reviews of product – Example Shop", "referrer": "https://www.google.com/",
        "referrer_domain": "google.com", "source": "Google", "utm_source": None, "utm_medium": None,
        "utm_campaign": None, "utm_term": None, "utm_content": None, "country": "DE",
        "device": "desktop", "browser": "Chrome", "browser_version": "120.0", "os": "Windows",
        "os_version": "10", "screen": "1920x1080", "language": "de-DE", "timezone": "Europe/Berlin",
        "props": {}, "revenue_amount": None, "revenue_currency": None, "engagement_ms": None,
        "scroll_depth": None, "region": "BE", "city_name": "Berlin"})


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cpu(base: Path, nats: Nats, events: int) -> dict[str, Any]:
    settings = Settings(data_dir=base / "node", node_name="bench", broker_url=nats.url)
    init(settings)
    writer = SegmentWriter(settings.wal_dir, segment_seconds=3600, segment_max_bytes=1 << 30)
    start = now_ms()
    payloads = [realistic_record(i, start + i // 100) for i in range(events)]
    for first in range(0, events, 1000):
        writer.append(payloads[first:first + 1000])
    size = sum(map(len, payloads)) / events
    nats_pid = nats.processes[0].pid

    began = time.process_time()
    tail = WalTail(settings.wal_dir, records=LIVE_EVENTS)
    read = 0
    while read < events:
        read += len(tail.poll())
        time.sleep(0.001)
    tail.close()
    wal_tail = time.process_time() - began

    async def publish() -> tuple[float, float, float]:
        broker = Broker(nats.url, "bench")
        broker.start()
        await broker.jetstream()
        publisher = Publisher(settings, broker, max_backlog=events * 2)
        server_cpu, cpu, wall = cpu_of(nats_pid), time.process_time(), time.perf_counter()
        publisher.start()
        while publisher.published < events:
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server_cpu = cpu_of(nats_pid) - server_cpu
        await publisher.stop()
        await broker.close()
        return cpu, wall, server_cpu

    async def consume() -> tuple[float, float]:
        broker = Broker(nats.url, "bench")
        broker.start()
        feed = BrokerFeed(broker)
        cpu, wall = time.process_time(), time.perf_counter()
        await feed.subscribe(start - 1000)
        got = 0
        while got < events:
            got += sum(1 for _, e in feed.poll() if e.site_id == "k3J9xQ2mZp7A")
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        feed.close()
        await broker.close()
        return cpu, wall

    pub_cpu, pub_wall, server_cpu = asyncio.run(publish())
    sub_cpu, sub_wall = asyncio.run(consume())
    writer.close()
    per = 1e6 / events
    return {
        "events": events,
        "record_bytes": round(size),
        "wal_tail_us_per_event": round(wal_tail * per, 1),
        "publish_us_per_event": round(pub_cpu * per, 1),
        "publish_events_per_s": round(events / pub_wall),
        "nats_server_us_per_event_published": round(server_cpu * per, 1),
        "feed_us_per_event": round(sub_cpu * per, 1),
        "feed_events_per_s": round(events / sub_wall),
    }


def measure_latency(base: Path, nats: Nats, probes: int) -> dict[str, Any]:
    from tests.realtime.clients import SSEClient, post_event
    from tests.server import LiveServer, add_site, free_port

    dirs = [base / name for name in ("a", "b", "single")]
    for d in dirs:
        d.mkdir()
    site = add_site(dirs[0])
    for d in dirs[1:]:
        for f in dirs[0].iterdir():
            if f.is_file():
                shutil.copy(f, d / f.name)
    env = {"LITTLESTATS_BROKER_URL": nats.url}
    servers = [LiveServer(dirs[0], free_port(), 1, ("--dev",), env | {"LITTLESTATS_NODE_NAME": "a"}),
               LiveServer(dirs[1], free_port(), 1, ("--dev",), env | {"LITTLESTATS_NODE_NAME": "b"}),
               LiveServer(dirs[2], free_port(), 1, ("--dev",))]
    out: dict[str, Any] = {}
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
        a, b, single = servers
        key = site["domainKey"]
        for name, post_to, read_on in (("b_to_a", b, a), ("a_to_a", a, a), ("single", single, single)):
            client = SSEClient(f"{read_on.url}/api/v2/realtime/{key}")
            client.wait_for(lambda c: bool(c.of_type("stats_update")))
            seen = len(client.events())
            times = []
            for i in range(probes):
                time.sleep(0.7)
                page = f"/{name}/{i}"
                post_event(post_to.url, key, {"url": f"https://example.com{page}", "visitorId": name})
                started = time.monotonic()
                client.wait_for(lambda c, n=seen + i + 1: len(c.events()) >= n, timeout=10)
                times.append((time.monotonic() - started) * 1000)
            client.close()
            times.sort()
            out[name] = {"p50_ms": round(statistics.median(times)),
                         "p95_ms": round(times[int(0.95 * (len(times) - 1))]),
                         "max_ms": round(times[-1])}
    finally:
        for s in servers:
            s.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    nats = Nats(base / "nats").start()
    try:
        report: dict[str, Any] = {"stream": STREAM, "cpu": measure_cpu(base, nats, args.events)}
        if not args.skip_latency:
            report["latency"] = measure_latency(base, nats, args.probes)
    finally:
        nats.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
