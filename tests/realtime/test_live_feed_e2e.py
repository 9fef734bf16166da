"""The live feed against a real two-worker ``littlestats serve --dev``: fan-out, order, stats,
filters, resumption, slow clients."""

from __future__ import annotations

import itertools
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.realtime.clients import IPHONE, SSEClient, WSClient, post_event
from tests.server import LiveServer

pytestmark = pytest.mark.slow

EVENT_FIELDS = {"type", "name", "page", "hostname", "source", "country", "device", "browser", "os", "ts", "time", "id"}


def worker_of(event_id: str) -> str:
    """The pid in the WAL segment id inside an event's cursor: which worker accepted it."""
    segment = event_id.split(".")[1]
    return segment.split("-")[1]


def stream_url(server: LiveServer, site: str, query: str = "") -> str:
    return f"{server.url}/api/v2/realtime/{site}" + (f"?{query}" if query else "")


def ws_url(server: LiveServer, site: str, query: str = "") -> str:
    return stream_url(server, site, query).replace("http://", "ws://")


def test_events_from_every_worker_reach_one_sse_and_one_websocket_client_in_order(
    server: LiveServer, site: dict
) -> None:
    key = site["domainKey"]
    sse = SSEClient(stream_url(server, key))
    ws = WSClient(ws_url(server, site["id"]))  # the internal id works as well as the domain key
    for client in (sse, ws):
        client.wait_for(lambda c: bool(c.of_type("stats_update")))

    # visitor -> its events, posted one after the other, each on a fresh connection
    plan: dict[str, list[dict]] = {
        "a": [{"url": "https://example.com/a/0"}],  # bounce
        "b": [{"url": f"https://example.com/b/{i}"} for i in range(4)],
        "c": [{"url": "https://example.com/c/0"},
              {"type": "event", "name": "signup", "url": "https://example.com/c/1"}],
        "d": [{"url": "https://example.com/d/0"}],  # bounce
        "e": [{"url": f"https://example.com/e/{i}"} for i in range(3)],
    }

    def post_visitor(visitor: str) -> None:
        for body in plan[visitor]:
            post_event(server.url, key, {**body, "visitorId": visitor})

    workers = {str(pid) for pid in server.worker_pids()}
    assert len(workers) == 2
    todo = list(plan)
    for round_ in range(1, 11):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post_visitor, todo))
        total = sum(len(v) for v in plan.values())
        sse.wait_for(lambda c, n=total: len(c.events()) >= n)
        seen = {worker_of(e["id"]) for e in sse.events()}
        if seen == workers:
            break
        # every post so far hit one worker: add visitors until both workers have some
        todo = [f"f{round_}"]
        plan[todo[0]] = [{"url": f"https://example.com/f{round_}/{i}"} for i in range(2)]
    assert seen == workers, f"events came from workers {seen}, expected {workers}"

    pageviews = sum(1 for v in plan.values() for b in v if b.get("type", "pageview") == "pageview")
    total = sum(len(v) for v in plan.values())
    visitors = [v for v, events in plan.items() if events]
    bounces = [v for v in visitors if [b.get("type", "pageview") for b in plan[v]] == ["pageview"]]
    for client in (sse, ws):
        client.wait_for(lambda c: len(c.events()) >= total)
        events = client.events()
        assert len(events) == total
        for event in events:
            assert set(event) == EVENT_FIELDS  # never a visitor key or an IP
        for visitor, bodies in plan.items():
            got = [e["page"] for e in events if e["page"].startswith(f"/{visitor}/")]
            assert got == [b["url"].removeprefix("https://example.com") for b in bodies], visitor
        signup = [e for e in events if e["type"] == "event"]
        assert [(e["name"], e["page"], e["device"], e["browser"]) for e in signup] == [
            ("signup", "/c/1", "desktop", "Chrome")]

    stats = httpx.get(f"{server.url}/api/v2/stats/{key}").json()
    assert stats["activeVisitors"] == len(visitors)
    assert stats["hour"]["views"] == pageviews
    assert stats["hour"]["visitors"] == len(visitors)
    assert stats["hour"]["visits"] == len(visitors)
    assert stats["hour"]["events"] == 1
    assert stats["hour"]["bounceRate"] == round(100 * len(bounces) / len(visitors), 1)
    assert stats["lastMinute"] == {"views": pageviews, "events": 1}
    top = {p["page"]: p for p in stats["topPages"]}
    assert top["/b/0"] == {"page": "/b/0", "visitors": 1, "views": 1}
    assert stats["topSources"] == [{"source": "Direct / None", "visitors": len(visitors)}]

    # the stats pushed to both clients converge on the same figures, whichever worker serves them
    for client in (sse, ws):
        client.wait_for(lambda c: any(m["stats"]["hour"] == stats["hour"] for m in c.of_type("stats_update")))
    sse.close()
    ws.close()


def test_stats_updates_are_coalesced(server: LiveServer, site: dict) -> None:
    key = site["domainKey"]
    sse = SSEClient(stream_url(server, key))
    sse.wait_for(lambda c: bool(c.of_type("stats_update")))
    started = time.monotonic()
    with httpx.Client() as client:
        for i in range(40):
            client.post(f"{server.url}/api/v2/track/{key}", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"},
                        json={"siteId": key, "events": [{"url": f"https://example.com/{i}/{j}", "visitorId": f"v{i}"} for j in range(5)]})
    sse.wait_for(lambda c: c.accounted() >= 200)  # a busy flush sends the newest events, counts the rest
    sse.wait_for(lambda c: any(m["stats"]["hour"]["views"] == 200 for m in c.of_type("stats_update")))
    elapsed = time.monotonic() - started
    updates = len(sse.of_type("stats_update")) - 1
    assert updates <= elapsed * 1.0 + 2, f"{updates} stats updates in {elapsed:.1f} s"
    sse.close()


def test_websocket_filter_message_really_filters(server: LiveServer, site: dict) -> None:
    key = site["domainKey"]
    ws = WSClient(ws_url(server, key))
    ws.wait_for(lambda c: bool(c.of_type("stats_update")))
    ws.send({"type": "filter", "filter": {"page": "/pricing", "type": "pageview"}})
    ws.wait_for(lambda c: bool(c.of_type("filter")))
    assert ws.of_type("filter")[0]["filter"] == {"page": ["/pricing"], "type": ["pageview"]}

    def post(url: str, **extra: str) -> None:
        ua = extra.pop("ua", None)
        body = {"url": f"https://example.com{url}", "visitorId": "f", **extra}
        post_event(server.url, key, body, **({"ua": ua} if ua else {}))

    post("/about")
    post("/pricing", type="event", name="cta")
    post("/pricing")
    ws.wait_for(lambda c: len(c.events()) >= 1)
    time.sleep(0.6)  # anything the filter let through would have arrived by now
    assert [(e["page"], e["type"]) for e in ws.events()] == [("/pricing", "pageview")]

    ws.send({"type": "filter", "filter": {"device": "mobile", "page": "/docs/*"}})
    ws.wait_for(lambda c: len(c.of_type("filter")) >= 2)
    post("/docs/a")  # desktop
    post("/docs/b", ua=IPHONE)
    post("/blog", ua=IPHONE)
    post("/docs/c/d", ua=IPHONE)
    ws.wait_for(lambda c: len(c.events()) >= 3)
    time.sleep(0.6)
    assert [e["page"] for e in ws.events()[1:]] == ["/docs/b", "/docs/c/d"]
    assert {e["device"] for e in ws.events()[1:]} == {"mobile"}

    ws.send({"type": "filter", "filter": {"planet": "mars"}})
    ws.wait_for(lambda c: bool(c.of_type("error")))
    assert "planet" in ws.of_type("error")[0]["error"]
    ws.send({"type": "filter", "filter": {}})
    ws.wait_for(lambda c: len(c.of_type("filter")) >= 3)
    post("/anything")
    ws.wait_for(lambda c: c.events()[-1]["page"] == "/anything")

    ws.send({"type": "ping"})
    ws.wait_for(lambda c: bool(c.of_type("pong")))
    ws.close()


def test_sse_filters_by_query_parameters(server: LiveServer, site: dict) -> None:
    key = site["domainKey"]
    sse = SSEClient(stream_url(server, key, "type=event&name=signup&name=buy"))
    sse.wait_for(lambda c: bool(c.of_type("stats_update")))
    for body in ({"url": "https://example.com/"}, {"type": "event", "name": "other", "url": "https://example.com/"},
                 {"type": "event", "name": "signup", "url": "https://example.com/x"},
                 {"type": "event", "name": "buy", "url": "https://example.com/y"}):
        post_event(server.url, key, {**body, "visitorId": "q"})
    sse.wait_for(lambda c: len(c.events()) >= 2)
    time.sleep(0.6)
    assert [e["name"] for e in sse.events()] == ["signup", "buy"]
    bad = httpx.get(stream_url(server, key, "colour=red"))
    assert bad.status_code == 400 and "colour" in bad.json()["error"]
    sse.close()


def test_sse_resumes_from_last_event_id(server: LiveServer, site: dict) -> None:
    key = site["domainKey"]
    first = SSEClient(stream_url(server, key))
    first.wait_for(lambda c: bool(c.of_type("stats_update")))
    assert first.response_headers is not None
    assert first.response_headers["content-type"].startswith("text/event-stream")
    for i in range(3):
        post_event(server.url, key, {"url": f"https://example.com/before/{i}", "visitorId": "r"})
    first.wait_for(lambda c: len(c.events()) >= 3)
    event_ids = [i for i, m in zip(first.ids, first.messages, strict=True) if m["type"] == "event"]
    assert event_ids == [e["id"] for e in first.events()]  # `id:` on every event
    last_id = event_ids[-1]
    first.close()

    for i in range(3):
        post_event(server.url, key, {"url": f"https://example.com/after/{i}", "visitorId": "r"})
    time.sleep(0.5)
    resumed = SSEClient(stream_url(server, key), headers={"Last-Event-ID": last_id})
    resumed.wait_for(lambda c: len(c.events()) >= 3)
    post_event(server.url, key, {"url": "https://example.com/live", "visitorId": "r"})
    resumed.wait_for(lambda c: len(c.events()) >= 4)
    assert [e["page"] for e in resumed.events()] == ["/after/0", "/after/1", "/after/2", "/live"]
    resumed.close()


def _metric(server: LiveServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


UPGRADE = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_slow_client_is_dropped_while_ingest_and_other_clients_go_on(
    server: LiveServer, site: dict, transport: str
) -> None:
    key = site["domainKey"]
    # A client that connects and then never reads, with a tiny receive window.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    extra = UPGRADE if transport == "ws" else "Accept: text/event-stream\r\n"
    stuck.sendall(f"GET /api/v2/realtime/{key} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    dropped = f'littlestats_realtime_clients_dropped_total{{transport="{transport}"}}'
    healthy = SSEClient(stream_url(server, key))
    healthy.wait_for(lambda c: bool(c.of_type("stats_update")))

    long_path = "/" + "x" * 1900
    per_batch = 25
    latencies = []
    # The feed writes a subscriber at most twice a second (the newest events of each flush), so
    # what reaches the stuck client grows with time, not with the number of events: ingest goes on
    # (at least 200 batches, ~10 a second after that) until it is dropped, however fast the machine.
    posting_until = time.monotonic() + 90
    with httpx.Client(timeout=10) as client:
        for b in itertools.count():
            started = time.perf_counter()
            r = client.post(f"{server.url}/api/v2/track/{key}", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"},
                            json={"events": [{"url": f"https://example.com{long_path}/{b}/{i}", "visitorId": f"s{b}"}
                                             for i in range(per_batch)]})
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200 and r.json()["accepted"] == per_batch
            if b % 20 == 19 and (_metric(server, dropped) >= 1 or time.monotonic() > posting_until):
                break
            if b >= 200:
                time.sleep(0.1)
    sent = (b + 1) * per_batch
    # busy flushes carry the newest events and a count of the others
    healthy.wait_for(lambda c: c.accounted() >= sent, timeout=30)
    deadline = time.monotonic() + 40
    while _metric(server, dropped) < 1:
        assert time.monotonic() < deadline, "the stuck client was never dropped"
        time.sleep(0.5)
    # ingest never waited for the stuck client
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.5
    # the server closed the stuck connection: reading it now reaches its end
    stuck.settimeout(20)
    while stuck.recv(1 << 20):
        pass
    stuck.close()
    # and the healthy client still gets new events
    post_event(server.url, key, {"url": "https://example.com/after-drop", "visitorId": "z"})
    healthy.wait_for(lambda c: c.events()[-1]["page"] == "/after-drop")
    healthy.close()


def test_open_streams_do_not_hold_up_a_shutdown(server: LiveServer, site: dict) -> None:
    key = site["domainKey"]
    sse = SSEClient(stream_url(server, key))
    ws = WSClient(ws_url(server, key))
    for client in (sse, ws):
        client.wait_for(lambda c: bool(c.of_type("stats_update")))
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10  # not gunicorn's 20 s graceful timeout
    assert sse.closed.wait(5) and ws.closed.wait(5)
