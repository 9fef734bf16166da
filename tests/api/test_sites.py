"""Sites and goals over HTTP: create, read, change, delete (with the data), validation."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import AuthServer
from tests.server import cli

pytestmark = pytest.mark.slow


def test_site_crud_round_trip(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        r = c.post("/api/v2/sites", json={"domain": "https://Shop.Example.com/path", "name": "Shop",
                                          "timezone": "America/New_York", "retentionDays": 90,
                                          "allowedHostnames": ["shop.example.com"]})
        assert r.status_code == 201
        site = r.json()
        assert site["domain"] == "shop.example.com" and site["name"] == "Shop"
        assert site["timezone"] == "America/New_York" and site["retentionDays"] == 90
        assert site["allowedHostnames"] == ["shop.example.com"] and site["domainKey"]
        assert c.get(f"/api/v2/sites/{site['domainKey']}").json() == site

        r = c.patch(f"/api/v2/sites/{site['id']}", json={"name": "Shop 2", "respectDnt": True,
                                                        "excludedPaths": ["/admin"]})
        assert r.status_code == 200
        changed = r.json()
        assert changed["name"] == "Shop 2" and changed["respectDnt"] and changed["excludedPaths"] == ["/admin"]
        assert changed["allowedHostnames"] == ["shop.example.com"]  # untouched fields stay

        r = c.delete(f"/api/v2/sites/{site['id']}")
        assert r.status_code == 200 and r.json()["deleted"]
        assert c.get(f"/api/v2/sites/{site['id']}").status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({}, "domain"),
    ({"domain": "not a domain"}, "domain"),
    ({"domain": "ok.example", "timezone": "Mars/Olympus"}, "timezone"),
    ({"domain": "ok.example", "retentionDays": -1}, "retentionDays"),
    ({"domain": "ok.example", "retentionDays": "7"}, "retentionDays"),
    ({"domain": "ok.example", "allowedHostnames": "x.com"}, "allowedHostnames"),
    ({"domain": "ok.example", "colour": "red"}, "colour"),
])
def test_invalid_site_fields_are_400_naming_them(auth_server: AuthServer, body: dict, param: str) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        r = c.post("/api/v2/sites", json=body)
    assert r.status_code == 400
    assert param in r.json()["error"]


def test_bad_json_is_400(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        r = c.post("/api/v2/sites", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "body" in r.json()["error"]


def test_goals_crud(auth_server: AuthServer) -> None:
    sid = auth_server.site["id"]
    with auth_server.client(auth_server.admin_token) as c:
        g = c.post(f"/api/v2/sites/{sid}/goals", json={"kind": "event", "value": "Signup"})
        assert g.status_code == 201
        assert c.post(f"/api/v2/sites/{sid}/goals", json={"kind": "page", "value": "no-slash"}).status_code == 400
        assert c.post(f"/api/v2/sites/{sid}/goals", json={"kind": "visit", "value": "/x"}).status_code == 400
        assert [x["value"] for x in c.get(f"/api/v2/sites/{sid}/goals").json()["goals"]] == ["Signup"]
        assert c.delete(f"/api/v2/sites/{sid}/goals/{g.json()['id']}").status_code == 200
        assert c.delete(f"/api/v2/sites/{sid}/goals/{g.json()['id']}").status_code == 404
        assert c.get(f"/api/v2/sites/{sid}/goals").json()["goals"] == []


def test_deleting_a_site_removes_its_data(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        site = c.post("/api/v2/sites", json={"domain": "gone.example"}).json()
        r = httpx.post(f"{auth_server.url}/api/v2/track/{site['domainKey']}",
                       json={"type": "pageview", "website": site["domainKey"], "url": "/x", "visitorId": "v1",
                             "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"})
        assert r.status_code == 200
        time.sleep(1.5)
        c.get("/healthz")
        cli(auth_server.server.data_dir, "load")
        assert c.get(f"/api/v2/health/{site['id']}").json()["events"] == 1
        assert list((auth_server.server.data_dir / "raw").glob(f"site_id={site['id']}"))
        assert c.delete(f"/api/v2/sites/{site['id']}").status_code == 200
        assert not list((auth_server.server.data_dir / "raw").glob(f"site_id={site['id']}/**/*.parquet"))
        assert c.get(f"/api/v2/health/{site['id']}").json()["site"] is None
    out = cli(auth_server.server.data_dir, "sites", "list")
    assert site["id"] not in out
