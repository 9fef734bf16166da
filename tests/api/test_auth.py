"""Every query-API endpoint needs a token and only shows the token owner's sites."""

from __future__ import annotations

import os
import stat

import pytest

from api.routes import ROUTES
from tests.api.conftest import AuthServer
from tests.server import cli

pytestmark = pytest.mark.slow

# The health check answers any caller and any key with the service's health (test_health.py).
GUARDED = [r for r in ROUTES if r[1] != "/api/v2/health/{site}"]
SITE_ROUTES = [r for r in GUARDED if "{site}" in r[1]]
REALTIME_ROUTES = [("GET", "/api/v2/stats/{site}"), ("POST", "/api/v2/realtime/{site}/token")]


def _path(template: str, site: str) -> str:
    return (template.replace("{site}", site).replace("{goal}", "nogoal").replace("{user}", "nouser")
            .replace("{invitation}", "noinvitation"))


def _body(method: str) -> dict | None:
    return {} if method in ("POST", "PATCH") else None


@pytest.mark.parametrize(("method", "template"), GUARDED + REALTIME_ROUTES, ids=lambda v: str(v))
def test_no_token_is_401(auth_server: AuthServer, method: str, template: str) -> None:
    with auth_server.client(None) as c:
        r = c.request(method, _path(template, auth_server.site["id"]), json=_body(method))
    assert r.status_code == 401
    assert "error" in r.json()


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=lambda v: str(v))
def test_invalid_token_is_401(auth_server: AuthServer, method: str, template: str) -> None:
    with auth_server.client("ls_not-a-token") as c:
        r = c.request(method, _path(template, auth_server.site["id"]), json=_body(method))
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "template"), SITE_ROUTES + REALTIME_ROUTES, ids=lambda v: str(v))
@pytest.mark.parametrize("ref", ["id", "domainKey"])
def test_another_owners_token_sees_404(auth_server: AuthServer, method: str, template: str, ref: str) -> None:
    with auth_server.client(auth_server.other_token) as c:
        r = c.request(method, _path(template, auth_server.site[ref]), json=_body(method))
    assert r.status_code == 404
    assert r.json()["error"]
    with auth_server.client(auth_server.admin_token) as c:  # and the site is still there
        assert c.get(f"/api/v2/sites/{auth_server.site['id']}").status_code == 200


def test_unknown_and_foreign_sites_look_the_same(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.other_token) as c:
        foreign = c.get(f"/api/v2/sites/{auth_server.site['id']}/stats")
        unknown = c.get("/api/v2/sites/doesnotexist/stats")
    assert foreign.status_code == unknown.status_code == 404


def test_each_user_lists_only_their_sites(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.other_token) as c:
        mine = c.post("/api/v2/sites", json={"domain": "other.example"}).json()
        listed = {s["id"] for s in c.get("/api/v2/sites").json()["sites"]}
        assert c.get(f"/api/v2/sites/{mine['domainKey']}").status_code == 200
    assert listed == {mine["id"]}
    with auth_server.client(auth_server.admin_token) as c:  # the admin sees every site
        assert {mine["id"], auth_server.site["id"]} <= {s["id"] for s in c.get("/api/v2/sites").json()["sites"]}


def test_first_start_writes_admin_token_readable_only_by_owner(auth_server: AuthServer) -> None:
    path = auth_server.server.data_dir / "admin-token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "admin-token" in auth_server.server.log()


def test_tokens_are_stored_hashed(auth_server: AuthServer) -> None:
    db = (auth_server.server.data_dir / "control.sqlite3").read_bytes()
    assert auth_server.admin_token.encode() not in db
    assert auth_server.other_token.encode() not in db


def test_dev_mode_needs_no_token(server) -> None:
    import httpx

    with httpx.Client(base_url=server.url) as c:
        created = c.post("/api/v2/sites", json={"domain": "test.com", "name": "Test Site"})
        assert created.status_code == 201
        assert c.get("/api/v2/sites").json()["sites"][0]["domain"] == "test.com"


def test_tokens_are_listed_created_and_revoked_per_owner(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.other_token) as c:
        created = c.post("/api/v2/tokens", json={"name": "ci"})
        assert created.status_code == 201
        new = created.json()
        assert new["token"].startswith("ls_") and new["name"] == "ci"
        mine = c.get("/api/v2/tokens").json()["tokens"]
        assert new["id"] in {t["id"] for t in mine}
        assert {t["userId"] for t in mine} == {new["userId"]}  # only the caller's own tokens
        assert all("token" not in t for t in mine)
    with auth_server.client(auth_server.admin_token) as c:
        every = c.get("/api/v2/tokens").json()["tokens"]
        assert new["id"] in {t["id"] for t in every}
        admin_ids = [t["id"] for t in every if t["userId"] != new["userId"]]
        assert admin_ids
    with auth_server.client(auth_server.other_token) as c:
        for token_id in admin_ids:  # someone else's token: 404, and it keeps working
            r = c.delete(f"/api/v2/tokens/{token_id}")
            assert r.status_code == 404 and r.json()["error"]
        assert c.delete("/api/v2/tokens/doesnotexist").status_code == 404
    with auth_server.client(new["token"]) as c:
        assert c.get("/api/v2/sites").status_code == 200
        r = c.delete(f"/api/v2/tokens/{new['id']}")
        assert r.status_code == 200 and r.json() == {"id": new["id"], "revoked": True}
        assert c.get("/api/v2/sites").status_code == 401  # revoked: stops working at once
    with auth_server.client(auth_server.admin_token) as c:
        assert c.get("/api/v2/sites").status_code == 200


def test_token_body_is_validated(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.other_token) as c:
        bodies: list[object] = [{"name": 3}, {"name": "x" * 201}, {"owner": "me"}, []]
        for body in bodies:
            r = c.post("/api/v2/tokens", json=body)
            assert r.status_code == 400 and r.json()["error"], body


def test_token_cli_lists_and_revokes(auth_server: AuthServer) -> None:
    import json

    data_dir = auth_server.server.data_dir
    plain = cli(data_dir, "token", "create", "--user", "cli@example.com", "--name", "temp").strip()
    listed = json.loads(cli(data_dir, "token", "list", "--user", "cli@example.com"))["tokens"]
    assert [t["name"] for t in listed] == ["temp"] and listed[0]["userEmail"] == "cli@example.com"
    assert plain not in json.dumps(listed)
    with auth_server.client(plain) as c:
        assert c.get("/api/v2/sites").status_code == 200
        assert json.loads(cli(data_dir, "token", "revoke", listed[0]["id"]))["revoked"] is True
        assert c.get("/api/v2/sites").status_code == 401
