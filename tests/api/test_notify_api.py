"""The reports, alerts and webhooks API over real HTTP: one ``littlestats serve`` with an SMTP
server (aiosmtpd) and an HTTPS webhook receiver (trustme) of the test's own, and the shared
authenticated server, which has no SMTP.
Managing them, what is refused (4xx naming the field), test sends that really arrive."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.api.conftest import AuthServer, wait_for_warehouse
from tests.notify.conftest import Inbox, Receiver, receiver, smtp  # noqa: F401 (fixtures)
from tests.server import cli, running_server

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    admin: httpx.Client
    viewer: httpx.Client
    site: dict[str, Any]
    inbox: Inbox
    receiver: Receiver

    def path(self, rest: str) -> str:
        return f"/api/v2/sites/{self.site['id']}/{rest}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Inbox, int],  # noqa: F811
          receiver: Receiver) -> Iterator[Setup]:  # noqa: F811
    inbox, port = smtp
    data_dir: Path = tmp_path_factory.mktemp("notify-api") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SMTP_HOST": "127.0.0.1", "LITTLESTATS_SMTP_PORT": str(port),
           "LITTLESTATS_SMTP_SECURITY": "none", "LITTLESTATS_SMTP_FROM": "reports@stats.example",
           "LITTLESTATS_WEBHOOK_CA_FILE": str(receiver.ca_file)}
    with running_server(data_dir, 1, env=env) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        viewer_token = cli(data_dir, "token", "create", "--user", "viewer@example.com").strip()
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        viewer = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {viewer_token}"}, timeout=30)
        site = admin.post("/api/v2/sites", json={"domain": "api.example", "timezone": "Europe/Berlin"}).json()
        cli(data_dir, "members", "role", "viewer@example.com", "viewer", "--site", site["id"])
        wait_for_warehouse(admin, site["id"])
        yield Setup(admin, viewer, site, inbox, receiver)
        admin.close()
        viewer.close()


def test_reports_are_managed_and_a_test_send_arrives(setup: Setup) -> None:
    setup.inbox.take()
    r = setup.admin.post(setup.path("reports"), json={"email": "ana@api.example", "frequency": "weekly"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["smtp"] == {"configured": True, "message": None}
    assert setup.admin.post(setup.path("reports"), json={"email": "ana@api.example", "frequency": "weekly"}).status_code == 409
    listed = setup.admin.get(setup.path("reports")).json()
    assert [x["id"] for x in listed["reports"]] == [created["id"]]
    sent = setup.admin.post(setup.path(f"reports/{created['id']}/test"))
    assert sent.status_code == 200, sent.text
    [(_, to, msg)] = setup.inbox.take()
    assert to == ["ana@api.example"] and msg["Subject"] == sent.json()["subject"]
    assert msg["Subject"].startswith("Weekly report for api.example, week of ")
    assert setup.admin.delete(setup.path(f"reports/{created['id']}")).status_code == 204
    assert setup.admin.delete(setup.path(f"reports/{created['id']}")).status_code == 404
    assert setup.admin.post(setup.path(f"reports/{created['id']}/test")).status_code == 404


def test_a_webhook_secret_is_shown_once_and_a_test_event_arrives_signed(setup: Setup) -> None:
    setup.receiver.requests.clear()
    r = setup.admin.post(setup.path("webhooks"), json={"url": setup.receiver.url, "events": ["alert"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_") and hook["events"] == ["alert"]
    listed = setup.admin.get(setup.path("webhooks")).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and secret not in orjson.dumps(listed).decode()
    sent = setup.admin.post(setup.path(f"webhooks/{hook['id']}/test"))
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "delivered" and sent.json()["attempts"][0]["statusCode"] == 200
    [(headers, body)] = setup.receiver.requests
    mac = hmac.new(secret.encode(), headers["x-littlestats-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["x-littlestats-signature"] == "sha256=" + mac.hexdigest()
    assert orjson.loads(body)["event"] == "test" and orjson.loads(body)["site"]["domain"] == "api.example"
    log = setup.admin.get(setup.path(f"webhooks/{hook['id']}/deliveries")).json()["deliveries"]
    assert [(d["event"], d["status"]) for d in log] == [("test", "delivered")]
    setup.receiver.answers[:] = [500]
    failed = setup.admin.post(setup.path(f"webhooks/{hook['id']}/test")).json()
    assert failed["status"] == "pending" and failed["nextAttemptAt"] and failed["attempts"][0]["statusCode"] == 500
    assert setup.admin.delete(setup.path(f"webhooks/{hook['id']}")).status_code == 204
    assert setup.admin.get(setup.path(f"webhooks/{hook['id']}/deliveries")).status_code == 404


def test_alert_rules_are_managed_and_tested(setup: Setup) -> None:
    setup.inbox.take()
    body = {"direction": "spike", "thresholdPercent": 50, "minVisitors": 20, "recipients": ["ops@api.example"]}
    r = setup.admin.post(setup.path("alerts"), json=body)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert (rule["thresholdPercent"], rule["minVisitors"], rule["firing"]) == (50, 20, False)
    tested = setup.admin.post(setup.path(f"alerts/{rule['id']}/test"))
    assert tested.status_code == 200, tested.text
    assert tested.json()["problems"] == [] and tested.json()["alert"]["test"] is True
    [(_, to, msg)] = setup.inbox.take()
    assert to == ["ops@api.example"] and msg["Subject"].startswith("Traffic spike on api.example: 0 visitors")
    assert setup.admin.delete(setup.path(f"alerts/{rule['id']}")).status_code == 204


BAD: list[tuple[str, Any, str]] = [
    ("reports", {"email": "not-an-address", "frequency": "weekly"}, "email"),
    ("reports", {"email": "a@b.example", "frequency": "daily"}, "frequency"),
    ("reports", {"email": "a@b.example"}, "frequency"),
    ("reports", {"email": "a@b.example", "frequency": "weekly", "extra": 1}, "extra"),
    ("reports", [1, 2], "body"),
    ("alerts", {"direction": "up", "thresholdPercent": 10, "recipients": ["a@b.example"]}, "direction"),
    ("alerts", {"direction": "drop", "thresholdPercent": 150, "recipients": ["a@b.example"]}, "thresholdPercent"),
    ("alerts", {"direction": "spike", "thresholdPercent": True, "recipients": ["a@b.example"]}, "thresholdPercent"),
    ("alerts", {"direction": "spike", "thresholdPercent": 10, "minVisitors": 0, "recipients": ["a@b.example"]}, "minVisitors"),
    ("alerts", {"direction": "spike", "thresholdPercent": 10, "recipients": ["nope"]}, "recipients"),
    ("alerts", {"direction": "spike", "thresholdPercent": 10, "recipients": ["a@b.example"] * 11}, "recipients"),
    ("alerts", {"direction": "spike", "thresholdPercent": 10}, "recipients"),
    ("alerts", {"direction": "spike", "thresholdPercent": 10, "webhooks": "yes"}, "webhooks"),
    ("webhooks", {"url": "http://hooks.example/x"}, "url"),
    ("webhooks", {"url": "http://127.0.0.1:9/x"}, "url"),
    ("webhooks", {"url": "javascript:alert(1)"}, "url"),
    ("webhooks", {"url": "https://hooks.example/x", "events": ["pageview"]}, "events"),
    ("webhooks", {"url": "https://hooks.example/x", "events": []}, "events"),
    ("webhooks", {"url": ["https://hooks.example/x"]}, "url"),
]


@pytest.mark.parametrize(("what", "body", "field"), BAD, ids=[f"{w}-{f}-{i}" for i, (w, _, f) in enumerate(BAD)])
def test_bad_input_is_a_400_naming_the_field(setup: Setup, what: str, body: Any, field: str) -> None:
    r = setup.admin.post(setup.path(what), content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert f"'{field}'" in r.json()["error"]


def test_counts_are_limited_and_viewers_may_not_manage(setup: Setup) -> None:
    made = []
    try:
        for i in range(10):
            r = setup.admin.post(setup.path("webhooks"), json={"url": f"https://hooks{i}.example/x"})
            assert r.status_code == 201
            made.append(r.json()["id"])
        r = setup.admin.post(setup.path("webhooks"), json={"url": "https://one-too-many.example/x"})
        assert r.status_code == 409 and "at most 10 webhooks" in r.json()["error"]
    finally:
        for hook_id in made:
            setup.admin.delete(setup.path(f"webhooks/{hook_id}"))
    assert setup.viewer.get(setup.path("webhooks")).status_code == 403
    assert setup.viewer.post(setup.path("reports"), json={"email": "v@x.example", "frequency": "weekly"}).status_code == 403


def test_nothing_a_client_sends_is_a_500(setup: Setup) -> None:
    odd: list[Any] = [None, 0, "", "x" * 5000, [], {}, {"url": None}, {"email": None, "frequency": None},
                      {"url": "https://\u0000/x"}, {"url": "https://h.example/" + "a" * 3000}]
    bodies = [orjson.dumps(b) for b in odd] + [
        b'{"direction": "spike", "thresholdPercent": 100000000000000000000000000000, "recipients": ["a@b.example"]}',
        b'{"direction": "spike", "thresholdPercent": 1e400, "minVisitors": -1e400, "recipients": ["a@b.example"]}']
    for what in ("reports", "alerts", "webhooks"):
        for body in bodies:
            r = setup.admin.post(setup.path(what), content=body, headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (what, body, r.text)
        assert setup.admin.post(setup.path(what), content=b"{not json").status_code == 400
        for suffix in ("x", "x/test", "%00", "a" * 500):
            for method in ("DELETE", "POST"):
                r = setup.admin.request(method, setup.path(f"{what}/{suffix}"))
                assert r.status_code < 500 and r.status_code != 200, (method, what, suffix, r.status_code)
    assert setup.admin.get(setup.path("webhooks/nope/deliveries?limit=0")).status_code in (400, 404)


def test_without_smtp_the_api_says_reports_are_not_sent(auth_server: AuthServer) -> None:
    with auth_server.client(auth_server.admin_token) as c:
        reports = f"/api/v2/sites/{auth_server.site['id']}/reports"
        r = c.post(reports, json={"email": "a@quiet.example", "frequency": "monthly"})
        assert r.status_code == 201, r.text
        try:
            assert r.json()["smtp"]["configured"] is False and "not mailed" in r.json()["smtp"]["message"]
            assert c.get(reports).json()["smtp"]["configured"] is False
            sent = c.post(f"{reports}/{r.json()['id']}/test")
            assert sent.status_code == 409 and "no SMTP server is configured" in sent.json()["error"]
        finally:
            c.delete(f"{reports}/{r.json()['id']}")
