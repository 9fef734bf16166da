"""Beacons in over HTTP → `littlestats load` → every endpoint's numbers equal a known truth.

Three visitors, four visits, written so that every number below can be checked by hand
(site time zone UTC, all events in the last few hours):

* A (Firefox/Linux, from Google): / → /pricing → Signup{plan: pro} → page_exit after 30 s
  of engagement on /pricing: 2 views, no bounce, duration 90 s (the later of the signup at 90 s
  and the /pricing view at 60 s + its 30 s of engagement; the engagement is the page's total).
* B (iPhone, DE, via ?utm_source=newsletter): one pageview of /: a bounce, 0 s.
* C (Chrome/Windows, US, from news.example.org): /blog → /pricing a minute later (60 s), then
  after an hour a second, direct visit to /blog (a bounce, 0 s).

Totals: 3 visitors, 4 visits, 6 views, 1 custom event, bounce rate 50 %, avg duration 37.5 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")


class Setup:
    server: LiveServer
    client: httpx.Client
    site: dict[str, Any]
    params: dict[str, str]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("e2e") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32",
           "LITTLESTATS_COUNTRY_HEADER": "X-Test-Country"}
    with running_server(data_dir, 2, env=env) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        client = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        site = client.post("/api/v2/sites", json={"domain": "shop.example", "timezone": "UTC"}).json()
        assert client.post(f"/api/v2/sites/{site['id']}/goals", json={"kind": "event", "value": "Signup"}).status_code == 201
        now = datetime.now(UTC)
        t0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731

        def send(ua: str, country: str | None, events: list[dict[str, Any]]) -> None:
            headers = {"User-Agent": ua, "Content-Type": "text/plain"}
            if country:
                headers["X-Test-Country"] = country
            body = {"siteId": site["domainKey"], "events": events}
            r = httpx.post(f"{srv.url}/api/v2/track/{site['domainKey']}", json=body, headers=headers)
            assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text

        send(FIREFOX, None, [
            {"type": "pageview", "url": "/", "referrer": "https://www.google.com/", "visitorId": "A", "ts": ms(t0)},
            {"type": "pageview", "url": "/pricing", "referrer": "https://shop.example/", "visitorId": "A",
             "ts": ms(t0 + timedelta(seconds=60))},
            {"type": "event", "name": "Signup", "data": {"plan": "pro"}, "url": "/pricing", "visitorId": "A",
             "ts": ms(t0 + timedelta(seconds=90))},
            {"type": "page_exit", "url": "/pricing", "engagementTime": 30000, "visitorId": "A",
             "ts": ms(t0 + timedelta(seconds=120))},
        ])
        send(IPHONE, "DE", [
            {"type": "pageview", "url": "/?utm_source=newsletter&utm_medium=email", "visitorId": "B",
             "ts": ms(t0 + timedelta(minutes=10))},
        ])
        send(CHROME, "US", [
            {"type": "pageview", "url": "/blog", "referrer": "https://news.example.org/item", "visitorId": "C",
             "ts": ms(t0 + timedelta(minutes=20))},
            {"type": "pageview", "url": "/pricing", "referrer": "https://shop.example/blog", "visitorId": "C",
             "ts": ms(t0 + timedelta(minutes=21))},
            {"type": "pageview", "url": "/blog", "visitorId": "C", "ts": ms(t0 + timedelta(minutes=80))},
        ])
        wait_for_warehouse(client, site["id"])
        time.sleep(2.5)  # segments rotate every second, then they are sealed
        cli(data_dir, "load")
        setup = Setup()
        setup.server, setup.client, setup.site = srv, client, site
        # Whole UTC hours (so the pre-aggregates can answer) around the traffic.
        setup.params = {"start": (t0 - timedelta(hours=1)).isoformat(), "end": (t0 + timedelta(hours=3)).isoformat()}
        yield setup
        client.close()


def get(e2e: Setup, endpoint: str, **extra: str) -> Any:
    r = e2e.client.get(f"/api/v2/sites/{e2e.site['id']}/{endpoint}", params={**e2e.params, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_stats(e2e: Setup) -> None:
    s = get(e2e, "stats")
    assert (s["visitors"], s["visits"], s["views"], s["events"]) == (3, 4, 6, 1)
    assert s["bounceRate"] == 50.0
    assert s["avgDuration"] == 37.5
    assert s["viewsPerVisit"] == 1.5
    assert s["change"]["visitors"] is None  # nothing in the previous period


def test_stats_with_a_filter_keep_definitions(e2e: Setup) -> None:
    s = get(e2e, "stats", filter="page==/pricing")
    # A and C viewed /pricing in one visit each; both visits had 2 pageviews.
    assert (s["visitors"], s["visits"], s["views"], s["bounceRate"]) == (2, 2, 2, 0.0)
    s = get(e2e, "stats", filter="device==mobile")
    assert (s["visitors"], s["visits"], s["views"], s["bounceRate"]) == (1, 1, 1, 100.0)
    s = get(e2e, "stats", filter="source!=Google")
    assert (s["visitors"], s["visits"], s["views"]) == (2, 3, 4)


def test_timeseries_hours_sum_to_totals_and_gaps_are_zero(e2e: Setup) -> None:
    data = get(e2e, "timeseries", granularity="hour")["data"]
    assert len(data) == 4
    assert [d["views"] for d in data] == [0, 5, 1, 0]
    assert [d["visits"] for d in data] == [0, 3, 1, 0]
    daily = get(e2e, "timeseries", granularity="day")["data"]
    assert sum(d["visits"] for d in daily) == 4


def rows(e2e: Setup, endpoint: str, key: str, field: str, **extra: str) -> dict[Any, dict[str, Any]]:
    return {r[field]: r for r in get(e2e, endpoint, **extra)[key]}


def test_pages(e2e: Setup) -> None:
    pages = rows(e2e, "pages", "pages", "page")
    assert {p: (r["visitors"], r["views"]) for p, r in pages.items()} == {
        "/": (2, 2), "/pricing": (2, 2), "/blog": (1, 2)}


def test_entry_and_exit_pages(e2e: Setup) -> None:
    entry = rows(e2e, "entry-pages", "entryPages", "page")
    assert {p: (r["visits"], r["visitors"]) for p, r in entry.items()} == {"/": (2, 2), "/blog": (2, 1)}
    exits = rows(e2e, "exit-pages", "exitPages", "page")
    assert {p: r["visits"] for p, r in exits.items()} == {"/pricing": 2, "/": 1, "/blog": 1}


def test_sources_referrers_and_utm(e2e: Setup) -> None:
    sources = rows(e2e, "sources", "sources", "source")
    assert {s: r["visits"] for s, r in sources.items()} == {
        "Google": 1, "newsletter": 1, "news.example.org": 1, "Direct / None": 1}
    assert sources["Google"]["avgDuration"] == 90.0 and sources["Google"]["bounceRate"] == 0.0
    referrers = rows(e2e, "referrers", "referrers", "referrer")
    assert referrers["google.com"]["visits"] == 1 and referrers["news.example.org"]["visitors"] == 1
    utm = rows(e2e, "utm", "utm", "value", type="utm_medium")
    assert utm["email"]["visits"] == 1


def test_client_breakdowns(e2e: Setup) -> None:
    assert {k: r["visits"] for k, r in rows(e2e, "devices", "devices", "device").items()} == {"desktop": 3, "mobile": 1}
    browsers = rows(e2e, "browsers", "browsers", "browser")
    assert {k: r["visitors"] for k, r in browsers.items()} == {"Firefox": 1, "Chrome": 1, "Mobile Safari": 1}
    assert {k: r["visitors"] for k, r in rows(e2e, "os", "os", "os").items()} == {"Linux": 1, "Windows": 1, "iOS": 1}
    countries = rows(e2e, "countries", "countries", "country")
    assert {k: r["visits"] for k, r in countries.items()} == {None: 1, "DE": 1, "US": 2}


def test_events_goals_and_conversions(e2e: Setup) -> None:
    ev = get(e2e, "events")
    assert ev["names"] == [{"name": "Signup", "events": 1, "visitors": 1}]
    assert ev["total"] == 1 and ev["nextCursor"] is None
    assert ev["events"][0]["props"] == {"plan": "pro"} and ev["events"][0]["page"] == "/pricing"
    # a visit-attribute filter keeps the events of matching visits (list, total and property keys)
    firefox = get(e2e, "events", filter="browser==Firefox")
    assert firefox["total"] == 1 and [e["name"] for e in firefox["events"]] == ["Signup"]
    chrome = get(e2e, "events", filter="browser==Chrome")
    assert chrome["total"] == 0 and chrome["events"] == [] and chrome["names"] == []
    props = get(e2e, "events/properties", property="plan")
    assert props["values"] == [{"value": "pro", "events": 1, "visitors": 1}]
    conv = get(e2e, "conversions")["goals"]
    assert [(g["value"], g["visitors"], g["conversions"], g["conversionRate"]) for g in conv] == [
        ("Signup", 1, 1, 33.33)]
    by_source = e2e.client.post(f"/api/v2/sites/{e2e.site['id']}/query", json={
        "metrics": ["visitors", "conversion_rate"], "dimensions": ["source"],
        "filters": [["is", "goal", ["Signup"]]], "date_range": [e2e.params["start"], e2e.params["end"]]}).json()
    assert by_source["results"] == [{"dimensions": ["Google"], "metrics": [1, 100.0]}]


def test_event_list_cursor_pages_through_everything(e2e: Setup) -> None:
    first = get(e2e, "events", limit="1")
    assert len(first["events"]) == 1 and first["nextCursor"] is None
    # a full page of names may not be all of them: the total is then asked for, not summed
    assert first["total"] == 1 and len(first["names"]) == 1
    bad = e2e.client.get(f"/api/v2/sites/{e2e.site['id']}/events", params={**e2e.params, "cursor": "zzz"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


def test_general_query_answers_both_paths_the_same(e2e: Setup) -> None:
    url = f"/api/v2/sites/{e2e.site['id']}/query"
    body = {"metrics": ["visits", "views", "bounce_rate"], "dimensions": ["source"],
            "date_range": [e2e.params["start"], e2e.params["end"]]}
    pre = e2e.client.post(url, json=body).json()
    assert pre["meta"]["path"] == "preaggregate"
    filtered = e2e.client.post(url, json={**body, "filters": [["contains", "page", ["/"]]]}).json()
    assert filtered["meta"]["path"] == "facts"
    assert sorted(pre["results"], key=str) == sorted(filtered["results"], key=str)


def test_health(e2e: Setup) -> None:
    h = e2e.client.get(f"/api/v2/health/{e2e.site['domainKey']}").json()
    assert h["status"] == "healthy" and h["events"] == 8


def test_invalid_parameters_are_400_naming_them(e2e: Setup) -> None:
    for params, name in [({"period": "fortnight"}, "period"), ({"limit": "0"}, "limit"),
                         ({"filter": "planet==Mars"}, "filter"), ({"granularity": "minute"}, "granularity"),
                         ({"start": "2026-01-01"}, "end"), ({"metrics": "pageviews"}, "metrics")]:
        r = e2e.client.get(f"/api/v2/sites/{e2e.site['id']}/timeseries", params=params)
        assert r.status_code == 400 and name in r.json()["error"], (params, r.text)
