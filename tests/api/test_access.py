"""Roles, the policy table, scoped tokens, invitations and the audit log, against a real server.

The matrix test walks every rule of ``api.routes.POLICY`` for an owner, an admin, a viewer, a user
who is not a member and a server admin, and checks the answer against the rule: 404 for a
non-member (never revealing the site), 403 for a member below the role, and for everyone allowed
an answer past the policy (2xx, or a 4xx about the request itself). Another test starts the app
in-process and checks that every route it registers under /api/ has a rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from api.routes import POLICY, Rule
from littlestats import audit
from littlestats.controlplane import ControlPlane, role_rank
from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

PRINCIPALS = ("owner", "admin", "viewer", "outsider", "server-admin")


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str]  # principal → API token
    users: dict[str, str]  # principal → user id
    site: dict
    control: ControlPlane

    def client(self, who: str | None = None, token: str | None = None) -> httpx.Client:
        token = token or (self.tokens[who] if who else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)

    def new_site(self, domain: str) -> dict:
        """A site owned by `owner`, with `admin` and `viewer` members (added through the API's
        invitations, the way people join)."""
        with self.client("owner") as c:
            site = c.post("/api/v2/sites", json={"domain": domain}).json()
            for role in ("admin", "viewer"):
                invited = c.post(f"/api/v2/sites/{site['id']}/invitations",
                                 json={"email": f"{role}@example.com", "role": role})
                assert invited.status_code == 201, invited.text
                with self.client(role) as joiner:
                    r = joiner.post("/api/v2/invitations/accept", json={"token": invited.json()["token"]})
                    assert r.status_code == 200 and r.json()["role"] == role, r.text
        return site


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("access") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        tokens = {"server-admin": (data_dir / "admin-token").read_text().strip()}
        for who in ("owner", "admin", "viewer", "outsider"):
            tokens[who] = cli(data_dir, "token", "create", "--user", f"{who}@example.com").strip()
        control = ControlPlane(data_dir / "control.sqlite3")
        users = {who: control.find_user_by_email(f"{who}@example.com").id  # type: ignore[union-attr]
                 for who in ("owner", "admin", "viewer", "outsider")}
        users["server-admin"] = control.find_admin().id  # type: ignore[union-attr]
        w = World(srv, tokens, users, {}, control)
        w.site = w.new_site("matrix.example")
        with w.client("owner") as c:
            wait_for_warehouse(c, w.site["id"])
        yield w
        control.close()


def _expected(rule: Rule, who: str) -> str:
    """``allowed``, ``403`` or ``404`` for `who` on the matrix site."""
    if rule.role in ("public", "user"):
        return "allowed"
    if rule.role == "server-admin":
        return "allowed" if who == "server-admin" else "403"
    role = {"owner": "owner", "admin": "admin", "viewer": "viewer", "server-admin": "owner"}.get(who)
    if role is None:
        return "404"
    return "allowed" if role_rank(role) >= role_rank(rule.role) else "403"


BODIES = {
    ("POST", "/api/v2/sites"): {"domain": "created-in-matrix.example"},
    ("PATCH", "/api/v2/sites/{site}"): {"timezone": "Not/AZone"},
    ("POST", "/api/v2/sites/{site}/goals"): {"kind": "event", "value": "matrix"},
    ("PATCH", "/api/v2/sites/{site}/members/{user}"): {"role": "nonsense"},
    ("POST", "/api/v2/sites/{site}/transfer"): {"userId": "nouser"},
    ("POST", "/api/v2/sites/{site}/invitations"): {"email": "someone@example.com", "role": "viewer"},
    ("POST", "/api/v2/invitations/accept"): {"token": "inv_nope"},
    ("POST", "/api/v2/tokens"): {"name": "from the matrix"},
    ("POST", "/api/v2/me/password"): {"current": "x", "new": "short"},
    ("POST", "/api/v2/track/{site}"): {},
    ("POST", "/api/v2/sites/{site}/query"): {"metrics": ["nonsense"]},
    ("POST", "/api/v2/sites/{site}/segments"): {"name": "matrix", "filters": [["matches", "page", ["^/blog/"]]]},
    ("PATCH", "/api/v2/sites/{site}/segments/{segment}"): {"name": "renamed"},
}
#: Rules whose allowed call would change who is a member, or delete the site: a fresh site each time.
DESTRUCTIVE = {("DELETE", "/api/v2/sites/{site}"), ("POST", "/api/v2/sites/{site}/leave"),
               ("DELETE", "/api/v2/sites/{site}/members/{user}")}


def _call(w: World, rule: Rule, who: str, site: dict) -> httpx.Response:
    path = (rule.path.replace("{site}", site["id"]).replace("{goal}", "nogoal").replace("{token}", "notoken")
            .replace("{user}", w.users["viewer"]).replace("{invitation}", "noinvitation")
            .replace("{segment}", "nosegment")
            .replace("{funnel}", "nofunnel"))
    with w.client(who) as c:
        if rule.path == "/api/v2/realtime/{site}":  # a stream: only its status matters
            with c.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code != 200:
                    r.read()
                return r
        return c.request(rule.method, path, json=BODIES.get((rule.method, rule.path)) if rule.method in (
            "POST", "PATCH") else None)


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("rule", POLICY, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_for_every_role(world: World, rule: Rule, who: str) -> None:
    key = (rule.method, rule.path)
    site = world.new_site(f"fresh-{abs(hash((key, who))) % 10**8}.example") if key in DESTRUCTIVE else world.site
    r = _call(world, rule, who, site)
    expected = _expected(rule, who)
    is_json = r.headers.get("content-type", "").startswith("application/json")
    error = r.json().get("error", "") if is_json else ""
    if expected == "404":
        assert r.status_code == 404 and error.startswith("site "), (r.status_code, error)
    elif expected == "403":
        assert r.status_code == 403, (r.status_code, error)
    else:
        assert r.status_code not in (401, 403), (r.status_code, error)
        assert not (r.status_code == 404 and error.startswith("site ")), error
        assert r.status_code < 500 or r.status_code == 503, (r.status_code, error)


def test_every_api_route_of_the_app_has_a_rule(tmp_path: Path) -> None:
    """Start the app in-process and walk its router: a route under /api/ without a rule fails."""
    from littlestats.app import LittleStatsApp
    from littlestats.config import load_settings

    app = LittleStatsApp(load_settings({"data_dir": tmp_path / "data"}))
    app.startup()
    try:
        found: set[tuple[str, str]] = set()
        stack = list(app.falcon._router._roots)
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.resource is None or not node.uri_template.startswith("/api/"):
                continue
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                if hasattr(node.resource, f"on_{method.lower()}"):
                    found.add((method, node.uri_template))
            if hasattr(node.resource, "on_websocket"):
                found.add(("GET", node.uri_template))
    finally:
        app.shutdown()
    rules = {(r.method, r.path) for r in POLICY}
    assert found - rules == set(), "routes without a rule in api.routes.POLICY"
    assert rules - found == set(), "rules for routes that do not exist"


def test_access_doc_lists_every_rule() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "access.md").read_text()
    for rule in POLICY:
        line = next((line for line in doc.splitlines() if line.startswith(f"| `{rule.method} {rule.path}` |")), None)
        assert line is not None, f"docs/access.md does not list {rule.method} {rule.path}"
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert cells[1:3] == [rule.role, rule.scope or "—"], line


def test_openapi_states_role_and_scope_of_every_operation(world: World) -> None:
    doc = httpx.get(f"{world.server.url}/api/v2/openapi.json").json()
    for rule in POLICY:
        op = doc["paths"].get(rule.path, {}).get(rule.method.lower())
        if rule.path in ("/api/v2/openapi.json", "/api/v2/docs"):
            continue
        assert op is not None, (rule.method, rule.path)
        assert op["x-required-role"] == rule.role and op["x-required-scope"] == rule.scope
        assert rule.role.split("-")[0] in op["description"] or rule.role in ("public", "user")


# --- scoped tokens ---------------------------------------------------------------------------------

def _token(w: World, who: str, **body: object) -> str:
    with w.client(who) as c:
        r = c.post("/api/v2/tokens", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_read_only_token_reads_and_changes_nothing(world: World) -> None:
    token = _token(world, "owner", name="read", scopes=["stats:read"])
    site = world.site["id"]
    with world.client(token=token) as c:
        assert c.get(f"/api/v2/sites/{site}").status_code == 200
        assert c.get(f"/api/v2/sites/{site}/goals").status_code == 200
        patch = c.patch(f"/api/v2/sites/{site}", json={"name": "changed"})
        assert patch.status_code == 403 and "sites:write" in patch.json()["error"]
        assert c.delete(f"/api/v2/sites/{site}").status_code == 403
        assert c.post("/api/v2/tokens", json={}).status_code == 403  # managing tokens needs 'admin'
        assert c.get(f"/api/v2/sites/{site}/audit").status_code == 403
        # a site it is not a member of is still 404, never 403
        with world.client("outsider") as o:
            theirs = o.post("/api/v2/sites", json={"domain": "outsider.example"}).json()
        assert c.get(f"/api/v2/sites/{theirs['id']}").status_code == 404
    with world.client("owner") as c:
        assert c.get(f"/api/v2/sites/{site}").json()["name"] != "changed"


def test_a_token_cannot_mint_more_than_it_has(world: World) -> None:
    limited = _token(world, "owner", scopes=["admin"], sites=[world.site["id"]],
                     expiresAt=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    with world.client(token=limited) as c:
        wider = c.post("/api/v2/tokens", json={"scopes": ["stats:read"]})
        assert wider.status_code == 403 and "stats:read" in wider.json()["error"]
        later = c.post("/api/v2/tokens", json={"expiresAt": (datetime.now(UTC) + timedelta(days=9)).isoformat()})
        assert later.status_code == 400 and "expiresAt" in later.json()["error"]
        same = c.post("/api/v2/tokens", json={"name": "child"})
        assert same.status_code == 201
        child = same.json()
        assert child["scopes"] == ["admin"] and child["sites"] == [world.site["id"]]
        assert child["expiresAt"] is not None
        assert c.post("/api/v2/sites", json={"domain": "nope.example"}).status_code == 403
    with world.client("owner") as c:
        bad = c.post("/api/v2/tokens", json={"scopes": ["everything"]})
        assert bad.status_code == 400 and "everything" in bad.json()["error"]
        for when in ("9999-12-31T23:59:59-05:00", "tomorrow", "2001-01-01T00:00:00Z", 5):
            r = c.post("/api/v2/tokens", json={"expiresAt": when})
            assert r.status_code == 400 and "expiresAt" in r.json()["error"], (when, r.text)
        with world.client("outsider") as o:
            theirs = o.post("/api/v2/sites", json={"domain": "outsider2.example"}).json()
        foreign = c.post("/api/v2/tokens", json={"sites": [theirs["id"]]})
        assert foreign.status_code == 400 and "sites" in foreign.json()["error"]


def test_a_site_limited_token_sees_only_its_sites(world: World) -> None:
    with world.client("owner") as c:
        other = c.post("/api/v2/sites", json={"domain": "second.example"}).json()
    token = _token(world, "owner", sites=[world.site["domainKey"]])
    with world.client(token=token) as c:
        listed = [s["id"] for s in c.get("/api/v2/sites").json()["sites"]]
        assert listed == [world.site["id"]]
        assert c.get(f"/api/v2/sites/{other['id']}").status_code == 404
        assert c.get(f"/api/v2/sites/{other['id']}/stats").status_code == 404
        assert c.get(f"/api/v2/sites/{world.site['id']}").status_code == 200


def test_an_expired_token_is_refused(world: World) -> None:
    token = _token(world, "viewer", expiresAt=(datetime.now(UTC) + timedelta(seconds=2)).isoformat())
    with world.client(token=token) as c:
        assert c.get("/api/v2/me").status_code == 200
        deadline = time.monotonic() + 10
        while (r := c.get("/api/v2/me")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 401 and "expired" in r.json()["error"]


def test_a_token_loses_what_its_user_loses(world: World) -> None:
    site = world.new_site("demoted.example")
    token = _token(world, "admin", name="made while admin")
    with world.client(token=token) as c:
        assert c.post(f"/api/v2/sites/{site['id']}/goals", json={"value": "x"}).status_code == 201
        stream = c.post(f"/api/v2/realtime/{site['id']}/token").json()["token"]
    with world.client("owner") as o:
        assert o.patch(f"/api/v2/sites/{site['id']}/members/{world.users['admin']}",
                       json={"role": "viewer"}).status_code == 200
    with world.client(token=token) as c:
        assert c.post(f"/api/v2/sites/{site['id']}/goals", json={"value": "y"}).status_code == 403
        assert c.get(f"/api/v2/sites/{site['id']}/stats").status_code == 200
    with world.client("owner") as o:
        assert o.delete(f"/api/v2/sites/{site['id']}/members/{world.users['admin']}").status_code == 200
    with world.client(token=token) as c:
        assert c.get(f"/api/v2/sites/{site['id']}/stats").status_code == 404
        assert site["id"] not in [s["id"] for s in c.get("/api/v2/sites").json()["sites"]]
    # the stream token it minted is refused as well
    r = httpx.get(f"{world.server.url}/api/v2/stats/{site['id']}", params={"token": stream}, timeout=10)
    assert r.status_code == 404


def test_old_tokens_keep_every_scope(world: World) -> None:
    with world.client("server-admin") as c:
        mine = [t for t in c.get("/api/v2/tokens").json()["tokens"] if t["name"] == "admin (first start)"]
    assert mine and mine[0]["scopes"] == ["stats:read", "sites:write", "admin"] and mine[0]["sites"] is None


# --- members and invitations -----------------------------------------------------------------------

def test_invite_a_new_person_who_sets_a_password(world: World) -> None:
    with world.client("owner") as c:
        invited = c.post(f"/api/v2/sites/{world.site['id']}/invitations",
                         json={"email": "newcomer@example.com", "role": "viewer"}).json()
    assert invited["url"].endswith(invited["path"]) and invited["path"] == f"/invite/{invited['token']}"
    control_bytes = (world.server.data_dir / "control.sqlite3").read_bytes()
    assert invited["token"].encode() not in control_bytes  # stored hashed
    with httpx.Client(base_url=world.server.url) as anon:
        short = anon.post("/api/v2/invitations/accept", json={"token": invited["token"], "password": "short"})
        assert short.status_code == 400 and "password" in short.json()["error"]
        ok = anon.post("/api/v2/invitations/accept", json={"token": invited["token"], "password": "a long password"})
        assert ok.status_code == 200 and ok.json()["role"] == "viewer"
        again = anon.post("/api/v2/invitations/accept", json={"token": invited["token"], "password": "a long password"})
        assert again.status_code == 410
        unknown = anon.post("/api/v2/invitations/accept", json={"token": "inv_unknown", "password": "a long password"})
        assert unknown.status_code == 404
    with world.client("owner") as c:
        members = {m["email"]: m["role"] for m in c.get(f"/api/v2/sites/{world.site['id']}/members").json()["members"]}
    assert members["newcomer@example.com"] == "viewer"


def test_an_existing_user_must_log_in_to_accept(world: World) -> None:
    site = world.new_site("existing.example")
    with world.client("owner") as c:
        invited = c.post(f"/api/v2/sites/{site['id']}/invitations", json={"email": "outsider@example.com"}).json()
    r = httpx.post(f"{world.server.url}/api/v2/invitations/accept",
                   json={"token": invited["token"], "password": "a long password"})
    assert r.status_code == 409 and "log in" in r.json()["error"]
    with world.client("outsider") as c:
        assert c.post("/api/v2/invitations/accept", json={"token": invited["token"]}).json()["role"] == "viewer"
        assert c.get(f"/api/v2/sites/{site['id']}").json()["role"] == "viewer"


def test_the_last_owner_cannot_leave_but_can_transfer(world: World) -> None:
    site = world.new_site("handover.example")
    sid = site["id"]
    with world.client("owner") as c:
        stuck = c.post(f"/api/v2/sites/{sid}/leave")
        assert stuck.status_code == 409 and "owner" in stuck.json()["error"]
        demote = c.patch(f"/api/v2/sites/{sid}/members/{world.users['owner']}", json={"role": "viewer"})
        assert demote.status_code == 409
        moved = c.post(f"/api/v2/sites/{sid}/transfer", json={"email": "admin@example.com"})
        assert moved.status_code == 200 and moved.json()["yourRole"] == "admin"
        assert c.delete(f"/api/v2/sites/{sid}").status_code == 403  # an admin now
        assert c.post(f"/api/v2/sites/{sid}/leave").status_code == 200
        assert c.get(f"/api/v2/sites/{sid}").status_code == 404
    with world.client("admin") as c:
        roles = {m["email"]: m["role"] for m in c.get(f"/api/v2/sites/{sid}/members").json()["members"]}
    assert roles == {"admin@example.com": "owner", "viewer@example.com": "viewer"}


# --- audit log -------------------------------------------------------------------------------------

def test_the_audit_log_records_who_did_what(world: World) -> None:
    _token(world, "owner", name="audited")
    site = world.new_site("audited.example")
    sid = site["id"]
    with world.client("owner") as c:
        c.patch(f"/api/v2/sites/{sid}/members/{world.users['viewer']}", json={"role": "admin"})
        c.delete(f"/api/v2/sites/{sid}/members/{world.users['viewer']}")
        entries = c.get(f"/api/v2/sites/{sid}/audit").json()["entries"]
        for before in ("5374747222529209903611904", "0", "x"):  # past SQLite's integers: a 400, not a 500
            r = c.get(f"/api/v2/sites/{sid}/audit", params={"before": before})
            assert r.status_code == 400 and "before" in r.json()["error"], r.text
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["site.created", "invitation.created", "invitation.accepted", "member.added",
                       "invitation.created", "invitation.accepted", "member.added", "member.role_changed",
                       "member.removed"]
    assert entries[0]["actor"]["email"] == "owner@example.com" and entries[0]["target"] == world.users["viewer"]
    assert {e["siteId"] for e in entries} == {sid}
    with world.client("admin") as c:
        assert c.get(f"/api/v2/sites/{sid}/audit").status_code == 403
        assert c.get("/api/v2/audit").status_code == 403
    with world.client("server-admin") as c:
        everything = c.get("/api/v2/audit", params={"limit": 500}).json()["entries"]
    assert any(e["action"] == "token.created" for e in everything)
    assert {e["id"] for e in entries} <= {e["id"] for e in everything}
    # deleting the site is recorded, and the record outlives the site
    with world.client("owner") as c:
        assert c.delete(f"/api/v2/sites/{sid}").status_code == 200
    cli_log = cli(world.server.data_dir, "audit", "--limit", "5")
    assert '"site.deleted"' in cli_log and sid in cli_log


def test_audit_refuses_visitor_data(world: World) -> None:
    with pytest.raises(ValueError, match="visitor"):
        audit.record(world.control, audit.ERASURE_RUN, actor=None, site_id=world.site["id"],
                     details={"visitorId": "abc"})
    entry = audit.record(world.control, audit.ERASURE_RUN, actor=None, site_id=world.site["id"],
                         details={"events": 3})
    assert world.control.list_audit(world.site["id"], limit=1)[0].id == entry


# --- command line ----------------------------------------------------------------------------------

def test_members_from_the_command_line(world: World) -> None:
    data_dir = world.server.data_dir
    site = world.new_site("cli.example")
    link = cli(data_dir, "members", "invite", "cli-person@example.com", "--site", site["domainKey"],
               "--role", "admin", "--url", "https://stats.example.org").strip()
    assert link.startswith("https://stats.example.org/invite/inv_")
    token = link.rsplit("/", 1)[1]
    r = httpx.post(f"{world.server.url}/api/v2/invitations/accept", json={"token": token, "password": "long enough pw"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    listed = cli(data_dir, "members", "list", "--site", site["id"])
    assert '"cli-person@example.com"' in listed
    cli(data_dir, "members", "role", "cli-person@example.com", "viewer", "--site", site["id"])
    assert world.control.role_of(r.json()["userId"], site["id"]) == "viewer"
    cli(data_dir, "members", "transfer", "cli-person@example.com", "--site", site["id"])
    assert world.control.role_of(r.json()["userId"], site["id"]) == "owner"
    assert world.control.role_of(world.users["owner"], site["id"]) == "admin"
    cli(data_dir, "members", "remove", "viewer@example.com", "--site", site["id"])
    assert world.control.role_of(world.users["viewer"], site["id"]) is None
    limited = cli(data_dir, "token", "create", "--user", "viewer@example.com", "--scope", "stats:read",
                  "--site", world.site["id"], "--expires-days", "2").strip()
    newest = orjson.loads(cli(data_dir, "audit", "--limit", "1"))["entries"][0]
    assert newest["action"] == "token.created" and newest["actor"]["email"] == "cli"
    assert newest["details"]["scopes"] == "stats:read"
    with world.client(token=limited) as c:
        assert [s["id"] for s in c.get("/api/v2/sites").json()["sites"]] == [world.site["id"]]
        assert c.post("/api/v2/tokens", json={}).status_code == 403
    with world.client("server-admin") as c:
        listed = [t for t in c.get("/api/v2/tokens").json()["tokens"] if t["userId"] == world.users["viewer"]]
    assert any(t["scopes"] == ["stats:read"] and t["sites"] == [world.site["id"]] and t["expiresAt"]
               for t in listed)
    made = cli(data_dir, "sites", "add", "cli-owned.example", "--owner", "owner@example.com")
    with world.client("owner") as c:
        mine = c.get("/api/v2/sites").json()["sites"]
    assert [s["role"] for s in mine if s["domain"] == "cli-owned.example"] == ["owner"], made


def test_the_websocket_upgrade_follows_the_same_rule(world: World) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    site = world.site["id"]
    url = f"ws://127.0.0.1:{world.server.port}/api/v2/realtime/{site}?access_token="
    with connect(url + world.tokens["viewer"], open_timeout=10) as ws:  # a member: it opens
        assert ws.protocol.state.name == "OPEN"
    no_read = _token(world, "viewer", scopes=["admin"])
    for token, status in ((world.tokens["outsider"], 404), (no_read, 403)):
        with pytest.raises(InvalidStatus) as refused:
            connect(url + token, open_timeout=10)
        assert refused.value.response.status_code == status


def test_a_member_removed_loses_the_live_streams_already_open(world: World) -> None:
    from tests.realtime.clients import SSEClient, WSClient

    site = world.new_site("streams.example")
    with world.client("viewer") as c:
        minted = c.post(f"/api/v2/realtime/{site['id']}/token").json()
    by_bearer = SSEClient(f"{world.server.url}/api/v2/realtime/{site['id']}",
                          headers={"Authorization": f"Bearer {world.tokens['viewer']}"})
    ws = WSClient(f"ws://127.0.0.1:{world.server.port}{minted['url']}")
    owner = SSEClient(f"{world.server.url}/api/v2/realtime/{site['id']}",
                      headers={"Authorization": f"Bearer {world.tokens['owner']}"})
    for client in (by_bearer, ws, owner):
        client.wait_for(lambda c: bool(c.of_type("stats_update")))
    with world.client("owner") as c:
        assert c.delete(f"/api/v2/sites/{site['id']}/members/{world.users['viewer']}").status_code == 200
    started = time.monotonic()
    for client in (by_bearer, ws):
        assert client.closed.wait(8 - (time.monotonic() - started)), "a removed member's stream is still open"
    assert ws.close_code == 1008
    assert not owner.closed.is_set()  # the owner's goes on
    owner.close()


def test_upgrading_makes_each_sites_owner_its_owner_member(tmp_path: Path) -> None:
    """A version-4 control plane (sites.owner_id, no members) opened by this version."""
    import sqlite3

    from littlestats import migrations

    path = tmp_path / "control.sqlite3"
    with sqlite3.connect(path) as db:
        for step in migrations.MIGRATIONS[:4]:
            for statement in step.sql.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("PRAGMA user_version = 4")
        db.execute("INSERT INTO users (id, email, created_at) VALUES ('u1', 'old@example.com', '2024-01-01')")
        db.execute("INSERT INTO tokens (id, user_id, token_hash, created_at) VALUES ('t1', 'u1', 'h', '2024-01-01')")
        for site_id, owner in (("s1", "u1"), ("s2", None)):
            db.execute("INSERT INTO sites (id, domain_key, domain, name, owner_id, secret, created_at)"
                       " VALUES (?, ?, 'x.example', 'x', ?, x'00', '2024-01-01')", (site_id, site_id + "k", owner))
    store = ControlPlane(path)
    try:
        assert store.role_of("u1", "s1") == "owner"
        assert store.list_members("s2") == []
        assert [s.id for s in store.list_sites("u1")] == ["s1"]
        token = store.get_token("t1")
        assert token is not None and token.scopes == ("stats:read", "sites:write", "admin")
        assert token.sites is None and token.expires_at is None
    finally:
        store.close()


def test_the_table_keeps_the_product_rules() -> None:
    """What the roles mean (docs/access.md), written out by hand: loosening the table fails here."""
    rules = {(r.method, r.path): (r.role, r.scope) for r in POLICY}
    assert rules[("DELETE", "/api/v2/sites/{site}")] == ("owner", "sites:write")
    assert rules[("PATCH", "/api/v2/sites/{site}")] == ("admin", "sites:write")
    assert rules[("POST", "/api/v2/sites/{site}/goals")] == ("admin", "sites:write")
    assert rules[("POST", "/api/v2/sites/{site}/invitations")] == ("owner", "sites:write")
    assert rules[("PATCH", "/api/v2/sites/{site}/members/{user}")] == ("owner", "sites:write")
    assert rules[("GET", "/api/v2/sites/{site}/audit")] == ("owner", "admin")
    assert rules[("GET", "/api/v2/audit")] == ("server-admin", "admin")
    assert rules[("POST", "/api/v2/tokens")] == ("user", "admin")
    assert rules[("GET", "/api/v2/sites/{site}/shares")] == ("admin", "stats:read")
    assert rules[("POST", "/api/v2/sites/{site}/shares")] == ("admin", "sites:write")
    assert rules[("DELETE", "/api/v2/sites/{site}/users/{user}")] == ("owner", "sites:write")
    assert rules[("GET", "/api/v2/sites/{site}/imports")] == ("admin", "stats:read")
    assert rules[("POST", "/api/v2/sites/{site}/imports")] == ("admin", "sites:write")
    assert rules[("DELETE", "/api/v2/sites/{site}/visitors/{visitor}")] == ("owner", "sites:write")
    # reports, alerts and webhooks send a site's numbers elsewhere: its admins decide (docs/reports.md)
    notify = [(m, p) for m, p in rules if p.startswith(("/api/v2/sites/{site}/reports", "/api/v2/sites/{site}/alerts",
                                                        "/api/v2/sites/{site}/webhooks"))]
    assert len(notify) == 13
    for method, path in notify:
        assert rules[(method, path)] == ("admin", "stats:read" if method == "GET" else "sites:write"), path
    for method, path in rules:
        if path.startswith("/api/v2/sites/{site}/") and method == "GET" and (method, path) not in notify and not path.endswith(
                ("/members", "/invitations", "/audit", "/shares", "/imports", "/imports/{import_id}")):
            assert rules[(method, path)] == ("viewer", "stats:read"), path
    public = {path for (method, path), (role, _scope) in rules.items() if role == "public"}
    assert public == {"/api/v2/track/{site}", "/api/v2/openapi.json", "/api/v2/docs", "/api/v2/health/{site}",
                      "/api/v2/invitations/accept"}
