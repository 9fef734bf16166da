"""Goals and revenue over HTTP on a real server: goal definitions and their 4xx, the site's revenue
currency and rates, beacons with revenue (good and bad), and revenue from the beacon through the
raw Parquet files and the loader to the query API, the conversions view and a breakdown under a
goal filter. Every expected number is worked out by hand from the beacons sent below."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from littlestats import migrations as control_migrations
from littlestats.controlplane import ControlPlane
from tests.api.conftest import AuthServer
from tests.server import cli

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@dataclass
class Shop:
    auth: AuthServer
    client: httpx.Client
    site: dict[str, Any]
    window: dict[str, str]
    goals: dict[str, dict[str, Any]]

    def get(self, path: str, **params: str) -> Any:
        r = self.client.get(f"/api/v2/sites/{self.site['id']}/{path}", params={**self.window, **params})
        assert r.status_code == 200, r.text
        return r.json()

    def query(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        r = self.client.post(f"/api/v2/sites/{self.site['id']}/query",
                             json={"date_range": [self.window["start"], self.window["end"]], **body})
        assert r.status_code == 200, r.text
        return r.json()["results"]  # type: ignore[no-any-return]


def track(auth: AuthServer, site: dict[str, Any], events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{auth.url}/api/v2/track/{site['domainKey']}", json={"siteId": site["domainKey"], "events": events},
                      headers={"User-Agent": FIREFOX, "Content-Type": "text/plain"})


@pytest.fixture(scope="module")
def shop(auth_server: AuthServer) -> Iterator[Shop]:
    """Visitor A: /blog/a, Purchase 10 EUR, Purchase 20 USD (= 10 EUR at 0.5), Signup{plan: pro}.
    Visitor B (from Google): /blog/b/c (not /blog/*), Purchase 1000 JPY (no rate: unconverted),
    Signup{plan: free}. Visitor C: /docs/x/y, nothing else."""
    with auth_server.client(auth_server.admin_token) as client:
        site = client.post("/api/v2/sites", json={"domain": "goals.example", "timezone": "UTC"}).json()
        sid = site["id"]
        r = client.patch(f"/api/v2/sites/{sid}", json={"revenue": {"currency": "EUR", "rates": {"USD": 0.5}}})
        assert r.status_code == 200 and r.json()["revenue"] == {"currency": "EUR", "rates": {"USD": 0.5}}, r.text
        goals = {}
        for body in ({"kind": "page", "value": "/blog/*"}, {"kind": "page", "value": "/docs/**"},
                     {"kind": "event", "value": "Purchase", "revenue": True},
                     {"kind": "event", "value": "Signup", "property": {"key": "plan", "value": "pro"}}):
            r = client.post(f"/api/v2/sites/{sid}/goals", json=body)
            assert r.status_code == 201, r.text
            goals[r.json()["name"]] = r.json()
        t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)

        def at(minutes: int) -> int:
            return int((t0 + timedelta(minutes=minutes)).timestamp() * 1000)

        def event(visitor: str, minutes: int, **fields: Any) -> dict[str, Any]:
            return {"type": "event", "url": "https://goals.example/shop", "visitorId": visitor, "ts": at(minutes),
                    **fields}

        def view(visitor: str, minutes: int, path: str, **fields: Any) -> dict[str, Any]:
            return {"type": "pageview", "url": f"https://goals.example{path}", "visitorId": visitor,
                    "ts": at(minutes), **fields}

        sent = track(auth_server, site, [
            view("A", 0, "/blog/a"),
            event("A", 1, name="Purchase", revenue={"amount": 10, "currency": "EUR"}),
            event("A", 2, name="Purchase", revenue={"amount": 20.0, "currency": "usd"}),
            event("A", 3, name="Signup", data={"plan": "pro"}),
            view("B", 5, "/blog/b/c", referrer="https://www.google.com/"),
            event("B", 6, name="Purchase", revenue={"amount": 1000, "currency": "JPY"}),
            event("B", 7, name="Signup", data={"plan": "free"}),
            view("C", 9, "/docs/x/y"),
        ])
        assert sent.status_code == 200 and sent.json()["accepted"] == 8, sent.text
        time.sleep(2.5)  # segments rotate every second, then they are sealed
        cli(auth_server.server.data_dir, "load")
        window = {"start": (t0 - timedelta(hours=1)).isoformat(), "end": (t0 + timedelta(hours=2)).isoformat()}
        yield Shop(auth_server, client, site, window, goals)


def test_goal_names_and_definitions(shop: Shop) -> None:
    assert sorted(shop.goals) == ["Purchase", "Signup (plan = pro)", "Visit /blog/*", "Visit /docs/**"]
    assert shop.goals["Signup (plan = pro)"]["property"] == {"key": "plan", "value": "pro"}
    assert shop.goals["Purchase"]["revenue"] is True and shop.goals["Visit /blog/*"]["revenue"] is False
    listed = shop.client.get(f"/api/v2/sites/{shop.site['id']}/goals").json()["goals"]
    assert [g["name"] for g in listed] == ["Visit /blog/*", "Visit /docs/**", "Purchase", "Signup (plan = pro)"]
    again = shop.client.post(f"/api/v2/sites/{shop.site['id']}/goals", json={"kind": "page", "value": "/blog/*"})
    assert again.status_code == 201 and again.json()["id"] == shop.goals["Visit /blog/*"]["id"]  # idempotent


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"kind": "page", "value": "/a/***"}, 400, "value"),
    ({"kind": "page", "value": "blog/*"}, 400, "value"),
    ({"kind": "page", "value": "/" + "x" * 2001}, 400, "value"),
    ({"kind": "page", "value": "/x", "property": {"key": "a", "value": "b"}}, 400, "property"),
    ({"kind": "page", "value": "/x", "revenue": True}, 400, "revenue"),
    ({"kind": "event", "value": "Signup", "property": {"key": "plan"}}, 400, "property"),
    ({"kind": "event", "value": "Signup", "property": {"key": "no/slash", "value": "x"}}, 400, "property"),
    ({"kind": "event", "value": "Signup", "revenue": "yes"}, 400, "revenue"),
    ({"kind": "event", "value": "x" * 201}, 400, "value"),
    ({"kind": "event", "value": "Signup", "name": "Purchase"}, 409, "name"),  # taken by another goal
    ({"kind": "event", "value": "Signup", "colour": "red"}, 400, "colour"),
])
def test_bad_goal_definitions_are_refused_naming_the_problem(shop: Shop, body: dict[str, Any], status: int,
                                                             names: str) -> None:
    r = shop.client.post(f"/api/v2/sites/{shop.site['id']}/goals", json=body)
    assert r.status_code == status, r.text
    assert f"'{names}'" in r.json()["error"]


@pytest.mark.parametrize("revenue", [
    {"currency": "euro"}, {"currency": "EUR", "rates": {"usd": 1}}, {"currency": "EUR", "rates": {"USD": 0}},
    {"currency": "EUR", "rates": {"USD": "1"}}, {"currency": "EUR", "rates": [1]}, "EUR", {"code": "EUR"},
])
def test_bad_revenue_settings_are_refused(shop: Shop, revenue: Any) -> None:
    r = shop.client.patch(f"/api/v2/sites/{shop.site['id']}", json={"revenue": revenue})
    assert r.status_code == 400 and "revenue" in r.json()["error"], r.text


@pytest.mark.parametrize(("revenue", "words"), [
    ({"amount": "10", "currency": "EUR"}, "revenue.amount"),
    ({"amount": 1e13, "currency": "EUR"}, "revenue.amount"),
    ({"amount": 10, "currency": "EURO"}, "revenue.currency"),
    ({"amount": 10}, "revenue.currency"),
    ({"amount": 10, "currency": "EUR", "tax": 2}, "'revenue' must be an object"),
    ([99.9, "EUR"], "'revenue' must be an object"),
])
def test_a_beacon_with_bad_revenue_is_refused_naming_it(shop: Shop, revenue: Any, words: str) -> None:
    # in a batch the bad event is rejected alone (the protocol's rule for any bad event) ...
    r = track(shop.auth, shop.site, [{"type": "event", "name": "Purchase", "url": "https://goals.example/",
                                      "revenue": revenue}])
    assert r.status_code == 200 and r.json()["accepted"] == 0, r.text
    assert words in r.json()["rejected"][0]["error"]
    # ... and a single event is a 400
    single = httpx.post(f"{shop.auth.url}/api/v2/track/{shop.site['domainKey']}",
                        json={"type": "event", "name": "Purchase", "url": "https://goals.example/", "revenue": revenue},
                        headers={"User-Agent": FIREFOX})
    assert single.status_code == 400 and words in single.text


def test_a_plain_revenue_property_is_no_revenue(shop: Shop) -> None:
    """``track('Tip', {revenue: 5})`` sends ``revenue: 5`` beside the property: left out, not refused."""
    r = track(shop.auth, shop.site, [{"type": "event", "name": "Tip", "url": "https://goals.example/", "revenue": 5,
                                      "data": {"revenue": 5}}])
    assert r.status_code == 200 and r.json()["accepted"] == 1 and not r.json()["rejected"], r.text


def test_revenue_on_a_pageview_is_refused(shop: Shop) -> None:
    r = httpx.post(f"{shop.auth.url}/api/v2/track/{shop.site['domainKey']}", headers={"User-Agent": FIREFOX},
                   json={"type": "pageview", "url": "https://goals.example/", "revenue": {"amount": 1, "currency": "EUR"}})
    assert r.status_code == 400 and "only for custom events" in r.text


def test_revenue_is_in_the_raw_parquet_files(shop: Shop) -> None:
    files = sorted((shop.auth.server.data_dir / "raw" / f"site_id={shop.site['id']}").rglob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["revenue_amount"] is not None]
    assert sorted((r["revenue_amount"], r["revenue_currency"]) for r in rows) == [
        (10.0, "EUR"), (20.0, "USD"), (1000.0, "JPY")]


def test_goal_breakdown_with_conversion_rate_and_revenue(shop: Shop) -> None:
    results = shop.query({"metrics": ["visitors", "events", "conversion_rate", "total_revenue", "average_revenue",
                                      "revenue_unconverted"], "dimensions": ["goal"]})
    got = {r["dimensions"][0]: r["metrics"] for r in results}
    assert got == {
        "Purchase": [2, 3, 66.67, 20.0, 10.0, 1],  # 10 EUR + 20 USD × 0.5; the JPY one unconverted
        "Visit /blog/*": [1, 1, 33.33, 0.0, 0.0, 0],  # /blog/a; /blog/b/c is two segments deep
        "Visit /docs/**": [1, 1, 33.33, 0.0, 0.0, 0],
        "Signup (plan = pro)": [1, 1, 33.33, 0.0, 0.0, 0],
    }


def test_conversions_view_has_revenue(shop: Shop) -> None:
    goals = {g["name"]: g for g in shop.get("conversions")["goals"]}
    assert goals["Purchase"]["revenue"] is True
    assert {k: goals["Purchase"][k] for k in ("currency", "totalRevenue", "averageRevenue", "revenueUnconverted")} == {
        "currency": "EUR", "totalRevenue": 20.0, "averageRevenue": 10.0, "revenueUnconverted": 1}
    assert (goals["Purchase"]["visitors"], goals["Purchase"]["conversions"], goals["Purchase"]["conversionRate"]) == (
        2, 3, 66.67)
    assert (goals["Visit /blog/*"]["visitors"], goals["Visit /blog/*"]["conversions"]) == (1, 1)


def test_a_breakdown_under_a_goal_filter_converts_and_earns(shop: Shop) -> None:
    sources = shop.get("sources", filter="goal==Purchase")["sources"]
    by = {s["source"]: s for s in sources}
    assert {k: (v["visitors"], v["conversionRate"], v["totalRevenue"]) for k, v in by.items()} == {
        "Direct / None": (1, 50.0, 20.0), "Google": (1, 100.0, 0.0)}


def test_a_rate_change_revalues_history(shop: Shop) -> None:
    sid = shop.site["id"]
    body = {"metrics": ["total_revenue", "revenue_unconverted"], "filters": [["is", "goal", ["Purchase"]]]}
    try:
        shop.client.patch(f"/api/v2/sites/{sid}", json={"revenue": {"currency": "EUR", "rates": {"USD": 1, "JPY": 0.01}}})
        assert shop.query(body)[0]["metrics"] == [40.0, 0]  # 10 + 20 + 10
        shop.client.patch(f"/api/v2/sites/{sid}", json={"revenue": None})
        r = shop.client.post(f"/api/v2/sites/{sid}/query", json=body)
        assert r.status_code == 400 and "currency" in r.json()["error"]
    finally:
        shop.client.patch(f"/api/v2/sites/{sid}", json={"revenue": {"currency": "EUR", "rates": {"USD": 0.5}}})


def test_a_site_has_at_most_100_goals(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        sid = c.post("/api/v2/sites", json={"domain": "many-goals.example"}).json()["id"]
        for i in range(100):
            assert c.post(f"/api/v2/sites/{sid}/goals", json={"kind": "page", "value": f"/p/{i}/*"}).status_code == 201
        r = c.post(f"/api/v2/sites/{sid}/goals", json={"kind": "page", "value": "/one-more"})
        assert r.status_code == 400 and "at most 100 goals" in r.json()["error"]


def test_goals_of_an_older_control_plane_get_names(tmp_path: Path) -> None:
    path = tmp_path / "control.sqlite3"
    before = next(m for m in control_migrations.MIGRATIONS if "goal names" in m.description).version - 1
    with sqlite3.connect(path) as db:
        for step in control_migrations.MIGRATIONS[:before]:
            for statement in step.sql.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {before}")
        db.execute("INSERT INTO sites (id, domain_key, domain, name, secret, created_at) VALUES"
                   " ('s1', 'k1', 'old.example', 'old', x'00', '2026-01-01')")
        db.execute("INSERT INTO goals VALUES ('g1', 's1', 'event', 'Signup', '2026-01-01')")
        db.execute("INSERT INTO goals VALUES ('g2', 's1', 'page', '/pricing', '2026-01-02')")
    control = ControlPlane(path)
    goals = [(g.id, g.name, g.kind, g.value, g.prop_key, g.revenue) for g in control.list_goals("s1")]
    assert goals == [("g1", "Signup", "event", "Signup", None, False),
                     ("g2", "Visit /pricing", "page", "/pricing", None, False)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == control_migrations.LATEST
