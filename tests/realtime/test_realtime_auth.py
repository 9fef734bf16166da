"""Who may open the live feed: bearer tokens, stream tokens (valid, expired, forged, other site),
and another owner's site, on a real server with authentication on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api import stream_token
from littlestats.controlplane import ControlPlane
from tests.realtime.clients import SSEClient, WSClient, post_event
from tests.server import LiveServer, add_site, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict]]:
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as server:
        admin = (data_dir / "admin-token").read_text().strip()
        control = ControlPlane(data_dir / "control.sqlite3")
        bob = control.create_user(email="bob@example.org", name="bob")
        ctx = {
            "admin": admin,
            "site": add_site(data_dir, "admin-site.com"),
            "bob": control.create_token(bob.id, "bob"),
            "bob_site": control.create_site("bob.example.org", owner_id=bob.id).public(),
            "secret": control.server_secret(stream_token.SECRET_NAME),
        }
        control.close()
        yield server, ctx


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint(server: LiveServer, site: str, token: str, **params: int) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v2/realtime/{site}/token", headers=bearer(token), params=params)


def test_live_endpoints_need_a_token_when_auth_is_on(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    key = ctx["site"]["domainKey"]
    assert httpx.get(f"{server.url}/api/v2/stats/{key}").status_code == 401
    r = httpx.get(f"{server.url}/api/v2/realtime/{key}", headers={"Accept": "text/event-stream"})
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert httpx.post(f"{server.url}/api/v2/realtime/{key}/token").status_code == 401
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}/api/v2/realtime/{key}", open_timeout=10)
    stats = httpx.get(f"{server.url}/api/v2/stats/{key}", headers=bearer(ctx["admin"]))
    assert stats.status_code == 200 and stats.json()["siteId"] == ctx["site"]["id"]


def test_another_owners_site_is_not_found(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    key = ctx["site"]["domainKey"]
    for r in (
        httpx.get(f"{server.url}/api/v2/stats/{key}", headers=bearer(ctx["bob"])),
        httpx.get(f"{server.url}/api/v2/realtime/{key}", headers=bearer(ctx["bob"])),
        mint(server, key, ctx["bob"]),
    ):
        assert r.status_code == 404, r.text
    own = ctx["bob_site"]["id"]
    assert httpx.get(f"{server.url}/api/v2/stats/{own}", headers=bearer(ctx["bob"])).status_code == 200
    assert mint(server, own, ctx["bob"]).status_code == 200


def test_stream_token_opens_sse_and_websocket_for_its_site(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    key = ctx["site"]["domainKey"]
    minted = mint(server, key, ctx["admin"], ttl=120)
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert body["siteId"] == ctx["site"]["id"] and 110 <= body["expiresIn"] <= 120
    token = body["token"]
    sse = SSEClient(f"{server.url}/api/v2/realtime/{key}?token={token}")  # no header: EventSource
    assert sse.status == 200
    sse.wait_for(lambda c: bool(c.of_type("stats_update")))
    with connect(f"ws://127.0.0.1:{server.port}{body['url']}", open_timeout=10) as ws:
        assert '"stats_update"' in ws.recv(timeout=10)
    post_event(server.url, key, {"url": "https://admin-site.com/with-token", "visitorId": "t"})
    sse.wait_for(lambda c: any(e["page"] == "/with-token" for e in c.events()))
    r = httpx.get(f"{server.url}/api/v2/stats/{key}", params={"token": token})
    assert r.status_code == 200
    sse.close()


def test_expired_forged_and_other_site_stream_tokens_are_refused(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    site, other = ctx["site"], ctx["bob_site"]
    expired, _ = stream_token.mint(ctx["secret"], site["id"], None, ttl=-1)
    forged, _ = stream_token.mint(b"not the server secret" * 2, site["id"], None)
    valid = mint(server, site["id"], ctx["admin"]).json()["token"]
    body, _, mac = valid.partition(".")
    tampered = f"{body[:-2]}AA.{mac}"

    def get(site_ref: str, token: str) -> httpx.Response:
        return httpx.get(f"{server.url}/api/v2/realtime/{site_ref}", params={"token": token})

    r = get(site["domainKey"], expired)
    assert r.status_code == 401 and "expired" in r.json()["error"]
    for token in (forged, tampered, "garbage"):
        assert get(site["id"], token).status_code == 401
    r = get(other["id"], valid)
    assert r.status_code == 403 and "another site" in r.json()["error"]
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}/api/v2/realtime/{other['id']}?token={valid}", open_timeout=10)


def test_admin_token_file_exists(secured: tuple[LiveServer, dict]) -> None:
    server, _ = secured
    assert Path(server.data_dir / "admin-token").stat().st_mode & 0o077 == 0


def test_revoking_a_token_ends_its_streams_and_refuses_its_stream_tokens(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    key = ctx["site"]["domainKey"]
    created = httpx.post(f"{server.url}/api/v2/tokens", headers=bearer(ctx["admin"]), json={"name": "dashboard"})
    assert created.status_code == 201, created.text
    doomed = created.json()
    minted = mint(server, key, doomed["token"], ttl=600).json()
    unused = mint(server, key, doomed["token"], ttl=600).json()["token"]  # minted before the revocation
    by_bearer = SSEClient(f"{server.url}/api/v2/realtime/{key}", headers=bearer(doomed["token"]))
    by_stream_token = SSEClient(f"{server.url}{minted['url']}")
    ws = WSClient(f"ws://127.0.0.1:{server.port}{minted['url']}")
    bystander = SSEClient(f"{server.url}/api/v2/realtime/{key}", headers=bearer(ctx["admin"]))
    clients = (by_bearer, by_stream_token, ws, bystander)
    for client in clients:
        client.wait_for(lambda c: bool(c.of_type("stats_update")))
        assert not client.closed.is_set()

    revoked = httpx.delete(f"{server.url}/api/v2/tokens/{doomed['id']}", headers=bearer(ctx["admin"]))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    started = time.monotonic()
    for client in (by_bearer, by_stream_token, ws):
        assert client.closed.wait(5 - (time.monotonic() - started)), "a revoked token's stream is still open"
        assert client.error is None, client.error
    assert ws.close_code == 1008
    # the other token's stream goes on, and still gets events
    assert not bystander.closed.is_set()
    post_event(server.url, key, {"url": "https://admin-site.com/after-revocation", "visitorId": "r"})
    bystander.wait_for(lambda c: any(e["page"] == "/after-revocation" for e in c.events()))
    bystander.close()

    for token in (minted["token"], unused):
        r = httpx.get(f"{server.url}/api/v2/realtime/{key}", params={"token": token})
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        assert httpx.get(f"{server.url}/api/v2/stats/{key}", params={"token": token}).status_code == 401
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}{minted['url']}", open_timeout=10)
    assert httpx.get(f"{server.url}/api/v2/realtime/{key}", headers=bearer(doomed["token"])).status_code == 401


def test_a_binary_websocket_frame_closes_with_1003_and_no_traceback(secured: tuple[LiveServer, dict]) -> None:
    server, ctx = secured
    key = ctx["site"]["domainKey"]
    token = mint(server, key, ctx["admin"]).json()["token"]
    with connect(f"ws://127.0.0.1:{server.port}/api/v2/realtime/{key}?token={token}", open_timeout=10) as ws:
        assert '"stats_update"' in ws.recv(timeout=10)
        ws.send(b"\x00\x01binary")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    time.sleep(0.5)
    assert "Traceback" not in server.log() and "PayloadTypeError" not in server.log()


def test_a_refused_websocket_gets_the_status_and_error_http_gets(secured: tuple[LiveServer, dict]) -> None:
    """401, 403, 404 as over HTTP (not uvicorn's blanket 403), with the same error text."""
    server, ctx = secured
    site, other = ctx["site"], ctx["bob_site"]
    expired, _ = stream_token.mint(ctx["secret"], site["id"], None, ttl=-1)
    valid = mint(server, site["id"], ctx["admin"]).json()["token"]
    cases = [  # (path and query, headers, expected status)
        (f"/api/v2/realtime/{site['domainKey']}", {}, 401),  # no token
        (f"/api/v2/realtime/{site['domainKey']}?token={expired}", {}, 401),
        (f"/api/v2/realtime/{site['domainKey']}", bearer("ls_not-a-token"), 401),
        (f"/api/v2/realtime/{site['domainKey']}", bearer(ctx["bob"]), 404),  # another owner's site
        ("/api/v2/realtime/no-such-site", bearer(ctx["admin"]), 404),
        (f"/api/v2/realtime/{other['id']}?token={valid}", {}, 403),  # a stream token of another site
        (f"/api/v2/realtime/{site['id']}?bogus=1", bearer(ctx["admin"]), 400),  # an unknown filter
    ]
    for target, headers, expected in cases:
        http = httpx.get(f"{server.url}{target}", headers={**headers, "Accept": "text/event-stream"})
        assert http.status_code == expected, (target, http.text)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{server.port}{target}", additional_headers=headers, open_timeout=10)
        response = refused.value.response
        assert response.status_code == expected, target
        assert response.body is not None and orjson.loads(response.body) == http.json(), target
