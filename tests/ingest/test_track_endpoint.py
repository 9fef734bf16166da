"""POST /api/v2/track against a real two-worker server: what lands in Parquet, what is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ingest.helpers import UA, UA_EXPECTED, raw_rows, wait_for_rows
from tests.server import LiveServer, add_site, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("ingest") / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "example.com")
    with running_server(
        data_dir, 2, "--dev",
        env={"LITTLESTATS_SEGMENT_SECONDS": "0.5", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32"},
    ) as server:
        yield server, site


def post(server: LiveServer, site: str, body: Any, ua: str = UA["chrome"], **headers: str) -> httpx.Response:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, (bytes, str)) else {"json": body}
    return httpx.post(
        f"{server.url}/api/v2/track/{site}", headers={"User-Agent": ua, **headers}, timeout=10, **kwargs
    )


def rows_for(server: LiveServer, marker: str, count: int) -> list[dict[str, Any]]:
    return sorted(
        (r for r in wait_for_rows(server.data_dir, lambda rs: sum(marker in (r["pathname"] or "") for r in rs) >= count)
         if marker in (r["pathname"] or "")),
        key=lambda r: r["ts"],
    )


def test_single_pageview_is_enriched(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    r = post(
        server, site["domainKey"],
        {"type": "pageview", "website": site["domainKey"],
         "url": "https://www.example.com/single-1?utm_source=news&utm_medium=email&utm_campaign=launch&x=1",
         "referrer": "https://www.google.de/search?q=analytics", "title": "Hello", "screen": "1920x1080",
         "language": "de-DE", "timezone": "Europe/Berlin", "visitorId": "v-123"},
        **{"X-Forwarded-For": "81.2.69.160", "Content-Type": "text/plain"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and set(body["cache"]) == {"visitId", "iat", "sessionStart"}
    [row] = rows_for(server, "/single-1", 1)
    assert row["site_id"] == site["id"]
    assert row["type"] == "pageview" and row["name"] is None
    assert row["hostname"] == "www.example.com" and row["pathname"] == "/single-1"
    assert row["query"] == "utm_source=news&utm_medium=email&utm_campaign=launch"  # x=1 is not kept
    assert (row["utm_source"], row["utm_medium"], row["utm_campaign"]) == ("news", "email", "launch")
    assert row["source"] == "news"  # utm_source wins over the Google referrer
    assert row["referrer_domain"] == "google.de"
    assert row["country"] == "GB"
    assert (row["browser"], row["os"], row["device"]) == ("Chrome", "Windows", "desktop")
    assert (row["screen"], row["language"], row["timezone"], row["title"]) == ("1920x1080", "de-DE", "Europe/Berlin", "Hello")
    assert row["visitor_key_source"] == "tracker" and row["visitor_key"] > 0
    assert abs(row["ts"].timestamp() - time.time()) < 60
    assert "81.2.69.160" not in str(row)  # the IP is never stored


@pytest.mark.parametrize(("ua", "browser", "os", "device"), UA_EXPECTED)
def test_user_agent_cases_land_right(env: tuple[LiveServer, dict[str, Any]], ua: str, browser: str, os: str, device: str) -> None:
    server, site = env
    marker = f"/ua-{ua}"
    assert post(server, site["id"], {"url": marker}, ua=UA[ua]).status_code == 200
    [row] = rows_for(server, marker, 1)
    assert (row["browser"], row["os"], row["device"]) == (browser, os, device)


@pytest.mark.parametrize("ua", ["googlebot", "headless"])
def test_bots_are_answered_but_not_counted(env: tuple[LiveServer, dict[str, Any]], ua: str) -> None:
    server, site = env
    marker = f"/bot-{ua}"
    r = post(server, site["id"], {"url": marker}, ua=UA[ua])
    assert r.status_code == 202 and r.json()["success"] is True
    assert post(server, site["id"], {"url": "/after-" + ua}).status_code == 200
    rows = rows_for(server, "/after-" + ua, 1)
    assert rows and not any(marker in r["pathname"] for r in raw_rows(server.data_dir))
    metrics = httpx.get(server.url + "/metrics").text
    reason = "bot" if ua == "googlebot" else "headless"
    assert f'littlestats_events_dropped_total{{reason="{reason}"}}' in metrics


def test_batch_keeps_times_types_and_properties(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    now = int(time.time() * 1000)
    events = [
        {"type": "pageview", "url": "/batch-1", "ts": now - 120_000, "visitorId": "b"},
        {"type": "event", "name": "signup", "url": "/batch-1", "ts": now - 60_000, "visitorId": "b",
         "data": {"plan": "pro", "seats": 3, "trial": True}},
        {"type": "engagement", "url": "/batch-1", "engagementTime": 15000, "ts": now - 30_000, "visitorId": "b"},
        {"type": "identify", "id": "user-42", "url": "/batch-1", "visitorId": "b", "ts": now - 10_000, "data": {"tier": "gold"}},
        {"type": "page_exit", "url": "/batch-1", "engagementTime": 4000, "visitorId": "b"},
        {"type": "nonsense", "url": "/batch-1"},
        {"type": "pageview", "url": "/batch-1", "website": "someone-else"},
        {"type": "pageview", "url": "/batch-1", "ts": now + 3_600_000},
    ]
    r = post(server, site["id"], {"siteId": site["id"], "events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 6
    assert [x["index"] for x in body["rejected"]] == [5, 6]
    assert "website" in body["rejected"][1]["error"]
    rows = rows_for(server, "/batch-1", 6)
    [future] = [r for r in rows if r["type"] == "pageview" and r["ts"] == r["received_at"]]
    rows.remove(future)  # a time ahead of the server's is clamped to the receive time
    assert [r["type"] for r in rows] == ["pageview", "event", "engagement", "identify", "page_exit"]
    assert abs(rows[0]["ts"].timestamp() * 1000 - (now - 120_000)) < 2
    assert rows[1]["name"] == "signup"
    assert rows[1]["props_str"] == [("plan", "pro")] and rows[1]["props_num"] == [("seats", 3.0)]
    assert rows[1]["props_bool"] == [("trial", True)]
    assert rows[2]["engagement_ms"] == 15000 and rows[4]["engagement_ms"] == 4000
    assert rows[3]["user_id"] == "user-42" and rows[3]["props_str"] == [("tier", "gold")]
    assert len({r["visitor_key"] for r in rows}) == 1
    assert len({r["event_id"] for r in rows}) == 5


def test_batch_sent_at_corrects_a_client_clock(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    skew = 10 * 60_000  # the visitor's clock runs ten minutes fast
    client_now = int(time.time() * 1000) + skew
    events = [{"url": "/skew", "ts": client_now - 30_000, "visitorId": "s"},
              {"url": "/skew", "ts": client_now - 5_000, "visitorId": "s"}]
    r = post(server, site["id"], {"siteId": site["id"], "sentAt": client_now, "events": events})
    assert r.json()["accepted"] == 2
    first, second = rows_for(server, "/skew", 2)
    assert abs((first["received_at"] - first["ts"]).total_seconds() - 30) < 2
    assert abs((second["received_at"] - second["ts"]).total_seconds() - 5) < 2


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{nope", 400, "not valid JSON"),
        (b'{"url": 12}', 400, "'url' must be a string"),
        (b'{"url": "/", "website": "other"}', 400, "'website' does not match"),
        (b'{"siteId": "other", "events": [{"url": "/"}]}', 400, "'siteId' does not match"),
        (b'{"url": "/", "data": {"a": [1]}}', 400, "property 'a'"),
        (b'{"url": "/", "data": {' + b",".join(b'"k%d": 1' % i for i in range(31)) + b"}}", 400, "at most 30"),
        (b'{"url": "' + b"a" * 70_000 + b'"}', 413, "limit"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem(env: tuple[LiveServer, dict[str, Any]], body: bytes, status: int, message: str) -> None:
    server, site = env
    r = post(server, site["id"], body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_unknown_site_is_404_and_writes_nothing(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, _ = env
    r = post(server, "no-such-site", {"url": "/unknown-site"})
    assert r.status_code == 404 and "unknown site" in r.json()["error"]
    time.sleep(1.5)
    assert not any(r["pathname"] == "/unknown-site" for r in raw_rows(server.data_dir))


def test_cors_preflight_and_beacon_content_types(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    pre = httpx.options(
        f"{server.url}/api/v2/track/{site['id']}",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"]
    no_type = httpx.post(f"{server.url}/api/v2/track/{site['id']}", content=b'{"url": "/cors"}',
                         headers={"User-Agent": UA["chrome"], "Origin": "https://shop.example"})
    assert no_type.status_code == 200 and no_type.headers["access-control-allow-origin"] == "*"
    # Nothing else is open cross-origin.
    health = httpx.get(server.url + "/healthz", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in health.headers


def test_metrics_count_accepted_rejected_and_latency(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    for _ in range(40):
        post(server, site["id"], {"url": "/metrics-check"})
    post(server, site["id"], b"{bad")
    text = httpx.get(server.url + "/metrics").text
    accepted = [line for line in text.splitlines() if line.startswith("littlestats_events_accepted_total")]
    assert accepted and float(accepted[0].split()[-1]) >= 4
    assert 'littlestats_events_rejected_total{status="400"}' in text
    assert "littlestats_track_request_seconds_bucket" in text
    assert 'littlestats_ingest_step_seconds_total{step="put_referrer"}' in text


def test_liveness_and_readiness(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, _ = env
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_fallback_visitor_key_without_tracker_id(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    for _ in range(2):
        post(server, site["id"], {"url": "/fallback"}, **{"X-Forwarded-For": "81.2.69.160"})
    post(server, site["id"], {"url": "/fallback"}, **{"X-Forwarded-For": "89.160.20.112"})  # not a cloud IP
    rows = rows_for(server, "/fallback", 3)
    keys = [r["visitor_key"] for r in rows]
    assert keys[0] == keys[1] != keys[2]
    assert all(r["visitor_key_source"] == "fallback" for r in rows)
