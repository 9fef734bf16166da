"""``GET /api/v2/health/{site}``: a service health check whatever the key, revealing no sites."""

from __future__ import annotations

import pytest

from tests.api.conftest import AuthServer

pytestmark = pytest.mark.slow

SERVICE_ONLY = {"status": "healthy", "warehouse": "ok", "site": None, "siteId": None,
                "domainKey": None, "lastEventAt": None, "events": None}


def test_a_placeholder_key_gets_the_service_health(auth_server: AuthServer) -> None:
    for token in (None, auth_server.admin_token, auth_server.other_token):
        with auth_server.client(token) as c:
            r = c.get("/api/v2/health/YOUR_SITE_ID")
        assert r.status_code == 200
        assert r.json() == SERVICE_ONLY


def test_a_site_the_caller_may_not_see_is_indistinguishable_from_an_unknown_one(
    auth_server: AuthServer,
) -> None:
    answers = {}
    for who, token in (("anonymous", None), ("other owner", auth_server.other_token)):
        with auth_server.client(token) as c:
            for ref in ("id", "domainKey"):
                hidden = c.get(f"/api/v2/health/{auth_server.site[ref]}")
                unknown = c.get(f"/api/v2/health/{auth_server.site[ref][:-1]}x")
                answers[who, ref] = hidden
                assert (hidden.status_code, hidden.headers.get("content-length"), hidden.content) == (
                    unknown.status_code, unknown.headers.get("content-length"), unknown.content)
    assert all(r.json() == SERVICE_ONLY for r in answers.values())


def test_the_owner_sees_the_site_in_the_same_shape(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        body = c.get(f"/api/v2/health/{auth_server.site['domainKey']}").json()
    assert body.keys() == SERVICE_ONLY.keys()
    assert body["status"] == "healthy" and body["warehouse"] == "ok"
    assert body["site"] == {"id": auth_server.site["id"], "domainKey": auth_server.site["domainKey"]}
    assert body["siteId"] == auth_server.site["id"] and isinstance(body["events"], int)


def test_a_token_that_is_sent_must_be_valid(auth_server: AuthServer) -> None:
    with auth_server.client("ls_not-a-token") as c:
        r = c.get("/api/v2/health/YOUR_SITE_ID")
    assert r.status_code == 401 and "invalid API token" in r.json()["error"]
