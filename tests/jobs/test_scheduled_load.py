"""End to end: beacons posted to a real ``littlestats serve`` become queryable through its daemon."""

from __future__ import annotations

import time

import httpx
import pytest

from littlestats.config import load_settings
from tests.server import add_site, cli, running_server
from warehouse.client import WarehouseClient

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")


@pytest.mark.slow
def test_accepted_events_are_queryable_through_the_daemon_within_two_minutes(data_dir) -> None:  # type: ignore[no-untyped-def]
    site = add_site(data_dir, "shop.example", "--timezone", "Europe/Berlin")
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "2"}
    with running_server(data_dir, 2, "--dev", env=env) as server:
        sent = time.monotonic()
        url = f"{server.url}/api/v2/track/{site['domainKey']}"
        for path in ("/", "/pricing", "/signup"):
            r = httpx.post(url, json={"url": f"https://shop.example{path}", "visitorId": "v-1",
                                      "referrer": "https://www.google.com/"},
                           headers={"User-Agent": CHROME})
            assert r.status_code == 200, r.text
        r = httpx.post(url, json={"type": "event", "name": "Signup", "url": "https://shop.example/signup",
                                  "visitorId": "v-1", "data": {"plan": "pro"}},
                       headers={"User-Agent": CHROME})
        assert r.status_code == 200, r.text

        client = WarehouseClient(load_settings({"data_dir": data_dir}, environ={}))
        rows: list = []
        while time.monotonic() - sent < 120:
            if client.available():
                rows = client.query_sync(
                    "SELECT pageviews, custom_events, entry_page, exit_page, is_bounce, source"
                    " FROM sessions WHERE site_id = ?", [site["id"]]).rows
                if rows and rows[0][0] == 3 and rows[0][1] == 1:
                    break
            time.sleep(0.5)
        assert time.monotonic() - sent < 120, server.log()
        assert rows == [(3, 1, "/", "/signup", False, "Google")]
        props = client.query_sync(
            "SELECT key, value FROM event_props WHERE site_id = ? AND event_name = 'Signup'", [site["id"]]
        ).rows
        assert props == [("plan", "pro")]
        visitors = client.query_sync(
            "SELECT count(DISTINCT visitor_key) FROM daily_visitors WHERE site_id = ?", [site["id"]]
        ).scalar()
        assert visitors == 1

        # With serve running, `littlestats load` goes through the daemon instead of hitting the lock.
        out = cli(data_dir, "load")
        assert out.startswith("load: ") and "new events" in out
