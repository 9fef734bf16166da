"""Share links over real HTTP: managing them, what a share can read, and everything it cannot.

One real ``littlestats serve`` (authentication on) with a little traffic loaded. The server trusts
127.0.0.1 as a proxy, so a test speaks for its own client address through ``X-Forwarded-For``.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from api.routes import ROUTES, SHARE_READS, SHARE_ROUTES
from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
PASSWORD = "open sesame 42"
REALTIME_ROUTES = [("GET", "/api/v2/stats/{site}"), ("GET", "/api/v2/realtime/{site}"),
                   ("POST", "/api/v2/realtime/{site}/token")]
_addresses = itertools.count(1)


@dataclass
class Setup:
    server: LiveServer
    admin: httpx.Client
    other: httpx.Client
    site: dict[str, Any]
    second: dict[str, Any]  # another site of the same owner
    params: dict[str, str]

    def new_share(self, **body: Any) -> dict[str, Any]:
        r = self.admin.post(f"/api/v2/sites/{self.site['id']}/shares", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def visitor(self) -> httpx.Client:
        """A browser-like client of its own: own cookie jar, own client address."""
        return httpx.Client(base_url=self.server.url, timeout=30,
                            headers={"X-Forwarded-For": f"203.0.113.{next(_addresses)}"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("shares") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32"}
    with running_server(data_dir, 2, env=env) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        other = cli(data_dir, "token", "create", "--user", "other@example.com").strip()
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        other_client = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {other}"}, timeout=30)
        site = admin.post("/api/v2/sites", json={"domain": "shared.example", "timezone": "UTC"}).json()
        second = admin.post("/api/v2/sites", json={"domain": "second.example", "timezone": "UTC"}).json()
        assert admin.post(f"/api/v2/sites/{site['id']}/goals", json={"kind": "event", "value": "Signup"}).status_code == 201
        t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        ms = lambda t: int(t.timestamp() * 1000)  # noqa: E731
        for target, visitors in ((site, "ABCD"), (second, "XY")):
            for i, vid in enumerate(visitors):
                events = [{"type": "pageview", "url": f"/p{i % 2}", "visitorId": vid, "ts": ms(t0 + timedelta(minutes=i))},
                          {"type": "event", "name": "Signup", "url": "/p0", "visitorId": vid, "data": {"plan": "pro"},
                           "ts": ms(t0 + timedelta(minutes=i, seconds=30))}]
                r = httpx.post(f"{srv.url}/api/v2/track/{target['domainKey']}", headers={"User-Agent": FIREFOX},
                               json={"siteId": target["domainKey"], "events": events})
                assert r.status_code == 200, r.text
        wait_for_warehouse(admin, site["id"])
        time.sleep(2.5)  # segments rotate every second, then they are sealed
        cli(data_dir, "load")
        params = {"start": (t0 - timedelta(hours=1)).isoformat(), "end": (t0 + timedelta(hours=2)).isoformat()}
        yield Setup(srv, admin, other_client, site, second, params)
        admin.close()
        other_client.close()


def unlock(setup: Setup, client: httpx.Client, share: dict[str, Any], password: str = PASSWORD) -> httpx.Response:
    return client.post(share["path"], data={"password": password})


# --- managing links ------------------------------------------------------------------------------


def test_owner_makes_lists_changes_and_revokes_links(setup: Setup) -> None:
    share = setup.new_share(label="Client A", password=PASSWORD, embedOrigins=["https://Blog.Example.com/"])
    assert share["path"] == f"/share/{share['slug']}" and len(share["slug"]) >= 24
    assert share["hasPassword"] is True and share["embedOrigins"] == ["https://blog.example.com"]
    assert share["label"] == "Client A" and share["createdBy"] and not share["revoked"]
    base = f"/api/v2/sites/{setup.site['id']}/shares"
    listed = {s["id"]: s for s in setup.admin.get(base).json()["shares"]}
    assert "slug" not in listed[share["id"]] and listed[share["id"]]["slugHint"] == share["slug"][:4]
    changed = setup.admin.patch(f"{base}/{share['id']}", json={"label": "Client B", "embedOrigins": []}).json()
    assert changed["label"] == "Client B" and changed["embedOrigins"] == [] and changed["hasPassword"]
    assert setup.admin.patch(f"{base}/{share['id']}", json={"password": None}).json()["hasPassword"] is False
    revoked = setup.admin.delete(f"{base}/{share['id']}").json()
    assert revoked["revoked"] is True and revoked["revokedAt"]
    assert setup.admin.patch(f"{base}/{share['id']}", json={"label": "x"}).status_code == 409
    assert setup.admin.delete(f"{base}/nosuchshare").status_code == 404


def test_slugs_and_passwords_are_stored_hashed(setup: Setup) -> None:
    share = setup.new_share(password=PASSWORD)
    db = sqlite3.connect(setup.server.data_dir / "control.sqlite3")
    try:
        row = db.execute("SELECT slug_hash, password_hash FROM shares WHERE id = ?", (share["id"],)).fetchone()
    finally:
        db.close()
    assert row[0] != share["slug"] and len(row[0]) == 64
    assert row[1].startswith("$argon2id$")
    raw = b"".join(p.read_bytes() for p in setup.server.data_dir.glob("control.sqlite3*"))
    assert share["slug"].encode() not in raw and PASSWORD.encode() not in raw


@pytest.mark.parametrize(("body", "field"), [
    ({"colour": "red"}, "colour"),
    ({"label": 5}, "label"),
    ({"password": "short"}, "password"),
    ({"password": 12345678}, "password"),
    ({"embedOrigins": "https://a.example"}, "embedOrigins"),
    ({"embedOrigins": ["https://a.example/path"]}, "embedOrigins"),
    ({"embedOrigins": ["https://a.example; script-src *"]}, "embedOrigins"),
    ({"embedOrigins": ["javascript:alert(1)"]}, "embedOrigins"),
])
def test_bad_input_is_a_400_naming_the_field(setup: Setup, body: dict[str, Any], field: str) -> None:
    r = setup.admin.post(f"/api/v2/sites/{setup.site['id']}/shares", json=body)
    assert r.status_code == 400 and f"'{field}'" in r.json()["error"], r.text
    not_json = setup.admin.post(f"/api/v2/sites/{setup.site['id']}/shares", content=b"{nope")
    assert not_json.status_code == 400


def test_another_owner_can_neither_see_nor_manage_the_links(setup: Setup) -> None:
    share = setup.new_share()
    base = f"/api/v2/sites/{setup.site['id']}/shares"
    assert setup.other.get(base).status_code == 404
    assert setup.other.post(base, json={}).status_code == 404
    assert setup.other.patch(f"{base}/{share['id']}", json={"label": "mine"}).status_code == 404
    assert setup.other.delete(f"{base}/{share['id']}").status_code == 404
    mine = next(s for s in setup.admin.get(base).json()["shares"] if s["id"] == share["id"])
    assert mine["revoked"] is False and mine["label"] == ""
    # A share id is only found under its own site.
    assert setup.admin.delete(f"/api/v2/sites/{setup.second['id']}/shares/{share['id']}").status_code == 404


def test_cli_adds_lists_and_revokes_links(setup: Setup) -> None:
    data_dir = setup.server.data_dir
    added = orjson.loads(cli(data_dir, "shares", "add", "--site", setup.site["domainKey"], "--label", "cli",
                             "--embed-origin", "https://cli.example"))
    assert added["path"].startswith("/share/") and added["embedOrigins"] == ["https://cli.example"]
    with setup.visitor() as c:
        assert c.get(f"{added['path']}/api/v2/sites/{setup.site['id']}/stats", params=setup.params).status_code == 200
    listed = orjson.loads(cli(data_dir, "shares", "list", "--site", setup.site["id"]))["shares"]
    assert added["id"] in {s["id"] for s in listed} and all("slug" not in s for s in listed)
    assert orjson.loads(cli(data_dir, "shares", "revoke", "--site", setup.site["id"], added["id"]))["revoked"]
    with setup.visitor() as c:
        assert c.get(f"{added['path']}/api/v2/sites/{setup.site['id']}/stats").status_code == 404



def test_links_made_and_revoked_are_in_the_audit_log(setup: Setup) -> None:
    share = setup.new_share(label="audited", password=PASSWORD)
    base = f"/api/v2/sites/{setup.site['id']}/shares"
    assert setup.admin.delete(f"{base}/{share['id']}").status_code == 200
    entries = setup.admin.get(f"/api/v2/sites/{setup.site['id']}/audit").json()["entries"]
    mine = [(e["action"], e["details"]) for e in entries if e["target"] == share["id"]]
    assert sorted(mine, key=lambda e: e[0]) == [
        ("share.created", {"label": "audited", "password": True, "embedOrigins": 0}),
        ("share.revoked", {"label": "audited"})]
    assert share["slug"] not in str(entries) and PASSWORD not in str(entries)

# --- reading through a link -----------------------------------------------------------------------


def _read_paths(site_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for name in SHARE_READS:
        if name == "query":
            out.append(("POST", f"/sites/{site_id}/query", {"metrics": ["visitors", "events"], "dimensions": ["event"],
                                                            "date_range": "7d"}))
        else:
            out.append(("GET", f"/sites/{site_id}/{name}", None))
    return out


def test_a_link_reads_what_the_api_answers(setup: Setup) -> None:
    share = setup.new_share()
    with setup.visitor() as c:
        for method, path, body in _read_paths(setup.site["id"]):
            params = {**setup.params, **({"property": "plan"} if path.endswith("/properties") else {})}
            via_share = c.request(method, f"{share['path']}/api/v2{path}", json=body,
                                  params=None if body else params)
            direct = setup.admin.request(method, f"/api/v2{path}", json=body, params=None if body else params)
            assert via_share.status_code == direct.status_code == 200, (path, via_share.text)
            assert via_share.json() == direct.json(), path
            assert via_share.headers["cache-control"] == "no-store"
    assert setup.admin.get(f"/api/v2/sites/{setup.site['id']}/stats", params=setup.params).json()["visitors"] == 4



def test_a_link_answers_csv_as_the_api_does(setup: Setup) -> None:
    """The dashboard's "Download CSV" works on a shared dashboard too: the same CSV as the API's."""
    share = setup.new_share()
    with setup.visitor() as c:
        for name in ("pages", "countries", "timeseries"):
            params = {**setup.params, "format": "csv"}
            via_share = c.get(f"{share['path']}/api/v2/sites/{setup.site['id']}/{name}", params=params)
            direct = setup.admin.get(f"/api/v2/sites/{setup.site['id']}/{name}", params=params)
            assert via_share.status_code == direct.status_code == 200, via_share.text
            assert via_share.headers["content-type"].startswith("text/csv")
            assert via_share.text == direct.text and via_share.text.count("\r\n") > 1, name

def test_a_link_reaches_no_other_route(setup: Setup) -> None:
    """Walk every route of the API with everything a share's holder has: the slug (as a token,
    as an access_token, as a cookie) and a live password session."""
    share = setup.new_share(password=PASSWORD)
    with setup.visitor() as c:
        assert unlock(setup, c, share).status_code == 303
        session = c.cookies.get("ls_share")
    assert session
    credentials: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"Authorization": f"Bearer {share['slug']}"}, {}),
        ({"Cookie": f"ls_share={session}"}, {}),
        ({"Cookie": f"ls_share={session}; ls_session={session}"}, {}),
        ({}, {"access_token": share["slug"], "token": share["slug"]}),
    ]
    with httpx.Client(base_url=setup.server.url, timeout=30) as c:  # no cookie jar: each request as given
        for method, template in ROUTES + REALTIME_ROUTES:
            for site in (setup.site, setup.second):
                path = template.replace("{site}", site["id"]).replace("{goal}", "g").replace("{token}", "t")
                path = path.replace("{share}", share["id"])
                for headers, params in credentials:
                    r = c.request(method, path, headers=headers, params=params,
                                  json={} if method in ("POST", "PATCH") else None)
                    if template == "/api/v2/health/{site}" and "Authorization" not in headers:
                        assert r.status_code == 200 and r.json()["site"] is None, (method, path)  # anyone's
                    else:
                        assert r.status_code == 401, (method, path, headers, params, r.status_code)


def test_a_link_reads_its_own_site_only(setup: Setup) -> None:
    share = setup.new_share(password=PASSWORD)
    with setup.visitor() as c:
        assert unlock(setup, c, share).status_code == 303
        for site_ref in (setup.second["id"], setup.second["domainKey"], "nosuchsite"):
            for method, path, body in _read_paths(site_ref):
                r = c.request(method, f"{share['path']}/api/v2{path}", json=body)
                assert r.status_code == 404, (path, r.status_code)
        assert c.get(f"{share['path']}/api/v2/sites/{setup.site['domainKey']}/stats").status_code == 200
        # Routes of /api/v2 a share does not need do not exist under it.
        for path in ("", "/goals", "/events", "/shares", "/health", "/settings"):
            r = c.get(f"{share['path']}/api/v2/sites/{setup.site['id']}{path}")
            assert r.status_code == 404, path
        assert c.get(f"{share['path']}/api/v2/sites").status_code == 404
        assert c.get(f"{share['path']}/api/v2/realtime/{setup.site['id']}").status_code == 404
        assert c.get(f"{share['path']}/api/v2/sites/{setup.site['id']}/query").status_code == 405
        live = c.get(f"{share['path']}/api/v2/live")
        assert live.status_code == 200 and set(live.json()) == {"siteId", "time", "activeVisitors"}


def test_every_share_route_answers_the_right_password_only(setup: Setup) -> None:
    share = setup.new_share(password=PASSWORD)
    other = setup.new_share(password=PASSWORD)
    assert {m for m, _ in SHARE_ROUTES} == {"GET", "POST"}
    with setup.visitor() as c:
        page = c.get(share["path"])
        assert page.status_code == 200 and 'name="password"' in page.text
        for method, template in SHARE_ROUTES:
            path = template.replace("{slug}", share["slug"]).replace("{site}", setup.site["id"])
            assert c.request(method, path, json={}).status_code == 401, path
        wrong = unlock(setup, c, share, "not the password")
        assert wrong.status_code == 401 and "Wrong password" in wrong.text and "ls_share" not in c.cookies
        right = unlock(setup, c, share)
        assert right.status_code == 303 and right.headers["location"] == share["path"]
        cookie = next(k for k in c.cookies.jar if k.name == "ls_share")
        assert cookie.path == share["path"] and cookie.has_nonstandard_attr("HttpOnly")
        assert c.get(f"{share['path']}/api/v2/sites/{setup.site['id']}/stats").status_code == 200
        assert "<meta name=\"littlestats\"" in c.get(share["path"]).text
        # The session is the share's own: sent to the other share's routes, it opens nothing.
        r = c.get(f"{other['path']}/api/v2/sites/{setup.site['id']}/stats",
                  headers={"Cookie": f"ls_share={cookie.value}"})
        assert r.status_code == 401
        # A new password ends the sessions of the old one.
        base = f"/api/v2/sites/{setup.site['id']}/shares/{share['id']}"
        assert setup.admin.patch(base, json={"password": "another password"}).status_code == 200
        assert c.get(f"{share['path']}/api/v2/sites/{setup.site['id']}/stats").status_code == 401


def test_wrong_passwords_are_rate_limited_per_link(setup: Setup) -> None:
    share = setup.new_share(password=PASSWORD)
    for _ in range(5):
        with setup.visitor() as c:  # a new address each time: the link's own count stops them
            assert unlock(setup, c, share, "guess guess").status_code == 401
    with setup.visitor() as c:
        r = unlock(setup, c, share)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "Try again" in r.text
    other = setup.new_share(password=PASSWORD)  # other links are not affected
    with setup.visitor() as c:
        assert unlock(setup, c, other).status_code == 303


def test_wrong_passwords_are_rate_limited_per_client(setup: Setup) -> None:
    first, second = setup.new_share(password=PASSWORD), setup.new_share(password=PASSWORD)
    with setup.visitor() as c:  # one address guessing at two links
        for share in (first, first, first, second, second):
            assert unlock(setup, c, share, "guess guess").status_code == 401
        assert unlock(setup, c, second).status_code == 429  # the link's own count is only 2
    with setup.visitor() as c:
        assert unlock(setup, c, second).status_code == 303


def test_a_revoked_link_gets_nothing(setup: Setup) -> None:
    open_share = setup.new_share()
    locked = setup.new_share(password=PASSWORD)
    with setup.visitor() as c:
        assert unlock(setup, c, locked).status_code == 303
        session = c.cookies.get("ls_share")
    for share in (open_share, locked):
        assert setup.admin.delete(f"/api/v2/sites/{setup.site['id']}/shares/{share['id']}").status_code == 200
        with setup.visitor() as c:
            c.cookies.set("ls_share", session or "", path=share["path"])
            page = c.get(share["path"])
            assert page.status_code == 404 and "revoked" in page.text and setup.site["domain"] not in page.text
            for method, template in SHARE_ROUTES:
                path = template.replace("{slug}", share["slug"]).replace("{site}", setup.site["id"])
                r = c.request(method, path, json={})
                assert r.status_code == 404, path
            assert unlock(setup, c, share).status_code == 404


def test_frame_ancestors_are_the_origins_saved_on_the_link(setup: Setup) -> None:
    embeddable = setup.new_share(embedOrigins=["https://blog.example", "http://localhost:3000"])
    plain = setup.new_share()
    with setup.visitor() as c:
        r = c.get(embeddable["path"], params={"embed": "true"})
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors https://blog.example http://localhost:3000;" in csp
        assert "x-frame-options" not in r.headers
        assert '&quot;embed&quot;:true' in r.text
        r = c.get(plain["path"], params={"embed": "true"})
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        gone = c.get("/share/AAAAAAAAAAAAAAAAAAAAAAAA")
        assert gone.status_code == 404 and "frame-ancestors 'none'" in gone.headers["content-security-policy"]


def test_a_public_site_is_open_at_its_domain(setup: Setup) -> None:
    path = f"/share/{setup.second['domain']}"
    with setup.visitor() as c:
        assert c.get(path).status_code == 404
        assert setup.admin.patch(f"/api/v2/sites/{setup.second['id']}", json={"public": True}).json()["public"] is True
        page = c.get(path)
        assert page.status_code == 200 and "second.example" in page.text
        stats = c.get(f"{path}/api/v2/sites/{setup.second['id']}/stats", params=setup.params)
        assert stats.status_code == 200 and stats.json()["visitors"] == 2
        assert c.get(f"{path}/api/v2/sites/{setup.site['id']}/stats").status_code == 404
        assert c.get(f"/share/{setup.site['domain']}").status_code == 404  # not public
        assert setup.admin.patch(f"/api/v2/sites/{setup.second['id']}", json={"public": "yes"}).status_code == 400
        assert setup.admin.patch(f"/api/v2/sites/{setup.second['id']}", json={"public": False}).status_code == 200
        assert c.get(path).status_code == 404
        assert c.get(f"{path}/api/v2/sites/{setup.second['id']}/stats").status_code == 404
