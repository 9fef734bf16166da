"""Traffic alerts and webhooks against real local servers: hand-made hourly traffic loaded by the
real loader, alerts mailed through aiosmtpd, webhooks POSTed to an HTTPS receiver whose certificate
comes from a CA the test made (trustme); every signature is checked as a receiver would."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, Site
from littlestats.notify_store import Webhook
from notify import webhooks
from notify.periods import hour_key
from notify.schedule import run_once
from tests.notify.conftest import Inbox, Receiver, visits_at, write_events
from tests.warehouse.frames import T0, event
from warehouse.service import Warehouse

# the hour with a spike: 10:00 UTC tomorrow, so that every hour the tests judge is still ahead of
# the real clock (as when the tests were written; a fixed date broke them once it had passed)
H = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)


@dataclass
class World:
    settings: Settings
    store: ControlPlane
    site: Site
    warehouse: Warehouse
    inbox: Inbox
    receiver: Receiver


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Inbox, int], receiver: Receiver) -> Iterator[World]:
    inbox, port = smtp
    data_dir: Path = tmp_path_factory.mktemp("alerts") / "data"
    settings = Settings(data_dir=data_dir, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none",
                        smtp_from="alerts@stats.example", webhook_ca_file=str(receiver.ca_file))
    settings.ensure_dirs()
    store = ControlPlane(settings.control_db)
    site = store.create_site("blog.example", timezone="Europe/Berlin")
    store.create_goal(site.id, "event", "Signup")
    store.create_goal(site.id, "page", "/pricing")
    minute = (H - T0).total_seconds() / 60
    events = [*visits_at(H - WEEK, range(1, 11)),  # 10 visitors a week before
              *visits_at(H, range(100, 130)),  # 30 in the hour: +200 %
              *visits_at(H + HOUR - WEEK, range(300, 310)),
              *visits_at(H + HOUR, range(200, 230)),  # and again the hour after
              # goal completions in the hour H: 4 signups by 3 visitors, /pricing seen by 2 visitors
              *(event(minute + 10 + i, event_id=f"signup-{i}", visitor_key=k, type="event", name="Signup")
                for i, k in enumerate((100, 101, 102, 100))),
              *(event(minute + 20 + i, event_id=f"pricing-{i}", visitor_key=k, pathname="/pricing")
                for i, k in enumerate((103, 104)))]
    write_events(settings.raw_dir, site.id, events)
    wh = Warehouse(settings)
    wh.load(seal=False)
    yield World(settings, store, site, wh, inbox, receiver)
    wh.close()
    store.close()


def verified(secret: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
    """What a receiver does: recompute the HMAC of ``<timestamp>.<body>`` and compare."""
    timestamp = headers["x-littlestats-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["x-littlestats-signature"])
    assert abs(time.time() - int(timestamp)) < 300  # fresh: a replayed request would be refused
    return dict(orjson.loads(body))


def hook(world: World, events: tuple[str, ...], checked_until: datetime | None = None) -> Webhook:
    return world.store.create_webhook(world.site.id, world.receiver.url, events,
                                      hour_key(checked_until) if checked_until else None)


def test_a_spike_fires_once_per_crossing_and_only_beyond_the_threshold(world: World) -> None:
    world.inbox.take()
    world.receiver.requests.clear()
    alert_hook = hook(world, ("alert",))
    before_h = hour_key(H - HOUR)
    store, sid = world.store, world.site.id
    fires = store.create_alert(sid, "spike", 100, 5, ("ops@blog.example",), True, before_h)
    too_high = store.create_alert(sid, "spike", 300, 5, ("ops@blog.example",), False, before_h)
    drop = store.create_alert(sid, "drop", 50, 5, ("ops@blog.example",), False, before_h)
    tiny = store.create_alert(sid, "spike", 100, 50, ("ops@blog.example",), False, before_h)
    try:
        first = run_once(store, world.settings, world.warehouse, H + HOUR + timedelta(minutes=6))
        assert first.errors == []
        assert first.alerts_fired == [fires.id]
        [(_, to, msg)] = world.inbox.take()
        assert to == ["ops@blog.example"]
        assert msg["Subject"] == "Traffic spike on blog.example: 30 visitors in an hour (+200%)"
        [(headers, body)] = world.receiver.requests
        payload = verified(alert_hook.secret, headers, body)
        assert headers["x-littlestats-event"] == "alert" and payload["event"] == "alert"
        data = payload["data"]
        assert isinstance(data, dict)
        assert (data["visitors"], data["visitorsWeekBefore"], data["changePercent"]) == (30, 10, 200.0)
        assert data["hour"] == {"start": H.isoformat(), "end": (H + HOUR).isoformat()}
        # the same hour again, and the next hour still beyond the threshold: nothing new
        assert run_once(store, world.settings, world.warehouse, H + HOUR + timedelta(minutes=30)).alerts_fired == []
        assert run_once(store, world.settings, world.warehouse, H + 2 * HOUR + timedelta(minutes=6)).alerts_fired == []
        assert store.get_alert(sid, fires.id).firing  # type: ignore[union-attr]
        # an hour back within the threshold ends the crossing
        assert run_once(store, world.settings, world.warehouse, H + 3 * HOUR + timedelta(minutes=6)).alerts_fired == []
        assert not store.get_alert(sid, fires.id).firing  # type: ignore[union-attr]
        assert world.inbox.take() == [] and len(world.receiver.requests) == 1
        assert all(store.get_alert(sid, r.id).last_fired_at is None for r in (too_high, drop, tiny))  # type: ignore[union-attr]
    finally:
        for rule in (fires, too_high, drop, tiny):
            store.delete_alert(sid, rule.id)
        store.delete_webhook(sid, alert_hook.id)


def test_a_drop_fires_when_last_weeks_hour_had_enough_visitors(world: World) -> None:
    world.inbox.take()
    store, sid = world.store, world.site.id
    drop = store.create_alert(sid, "drop", 50, 5, ("ops@blog.example",), False, hour_key(H - WEEK - 2 * HOUR))
    try:
        # judged a week after the quiet-then-busy hour: H + 7 d has no visitors, H had 30
        outcome = run_once(store, world.settings, world.warehouse, H + WEEK + HOUR + timedelta(minutes=6))
        assert outcome.alerts_fired == [drop.id]
        [(_, _, msg)] = world.inbox.take()
        assert msg["Subject"] == "Traffic drop on blog.example: 0 visitors in an hour (-100%)"
    finally:
        store.delete_alert(sid, drop.id)


def test_goal_conversions_arrive_signed_once_per_hour(world: World) -> None:
    world.receiver.requests.clear()
    goals_hook = hook(world, ("goal.conversions",), checked_until=H)
    try:
        outcome = run_once(world.store, world.settings, world.warehouse, H + HOUR + timedelta(minutes=6))
        assert outcome.conversions_queued == 2 and outcome.deliveries == {"delivered": 2}
        payloads = [verified(goals_hook.secret, h, b) for h, b in world.receiver.requests]
        got = {p["data"]["goal"]: (p["data"]["conversions"], p["data"]["visitors"]) for p in payloads}  # type: ignore[index]
        assert got == {"Signup": (4, 3), "Visit /pricing": (2, 2)}
        assert {str(p["data"]["window"]) for p in payloads} == {  # type: ignore[index]
            str({"start": H.isoformat(), "end": (H + HOUR).isoformat()})}
        # the next pass looks at the next hour only: 30 pageviews of "/", no goal
        run_once(world.store, world.settings, world.warehouse, H + 2 * HOUR + timedelta(minutes=6))
        assert len(world.receiver.requests) == 2
        log = world.store.list_deliveries(goals_hook.id)
        assert [d.status for d in log] == ["delivered", "delivered"]
    finally:
        world.store.delete_webhook(world.site.id, goals_hook.id)


def test_a_failing_receiver_is_retried_with_backoff_and_the_log_shows_every_attempt(world: World) -> None:
    world.receiver.requests.clear()
    world.receiver.answers[:] = [500, 503]
    test_hook = hook(world, ("alert",))
    try:
        delivery = world.store.queue_delivery(test_hook.id, world.site.id, "test",
                                              webhooks.envelope(world.site, "test", {"n": 1}))
        t = datetime.fromisoformat(delivery.created_at)
        assert webhooks.deliver_due(world.store, world.settings, t) == {"pending": 1}
        assert world.store.get_delivery(delivery.id).next_attempt_at == (t + timedelta(seconds=60)).isoformat()  # type: ignore[union-attr]
        assert webhooks.deliver_due(world.store, world.settings, t + timedelta(seconds=59)) == {}
        restarted = ControlPlane(world.settings.control_db)  # a new process finds the retry
        try:
            assert webhooks.deliver_due(restarted, world.settings, t + timedelta(seconds=60)) == {"pending": 1}
            assert webhooks.deliver_due(restarted, world.settings, t + timedelta(seconds=359)) == {}
            assert webhooks.deliver_due(restarted, world.settings, t + timedelta(seconds=360)) == {"delivered": 1}
        finally:
            restarted.close()
        done = world.store.get_delivery(delivery.id)
        assert done is not None and done.status == "delivered" and done.next_attempt_at is None
        assert [a["statusCode"] for a in done.attempts] == [500, 503, 200]
        assert [a["error"] for a in done.attempts] == ["HTTP 500 Internal Server Error", "HTTP 503 Service Unavailable",
                                                       None]
        ids = {h["x-littlestats-delivery"] for h, _ in world.receiver.requests}
        assert ids == {str(delivery.id)} and len(world.receiver.requests) == 3
        for headers, body in world.receiver.requests:
            assert verified(test_hook.secret, headers, body)["id"] == delivery.id
    finally:
        world.receiver.answers.clear()
        world.store.delete_webhook(world.site.id, test_hook.id)


def test_a_delivery_is_given_up_after_the_last_backoff(world: World) -> None:
    world.receiver.answers[:] = [500] * 6
    test_hook = hook(world, ("alert",))
    try:
        delivery = world.store.queue_delivery(test_hook.id, world.site.id, "test", webhooks.envelope(world.site, "test", {}))
        t = datetime.fromisoformat(delivery.created_at)
        for wait in (0, *webhooks.BACKOFF):
            t += timedelta(seconds=wait)
            webhooks.deliver_due(world.store, world.settings, t)
        gave_up = world.store.get_delivery(delivery.id)
        assert gave_up is not None and gave_up.status == "failed" and len(gave_up.attempts) == 6
        assert gave_up.next_attempt_at is None
        assert webhooks.deliver_due(world.store, world.settings, t + timedelta(days=30)) == {}
    finally:
        world.receiver.answers.clear()
        world.store.delete_webhook(world.site.id, test_hook.id)


KILLED = """
import sys, time
from datetime import UTC, datetime
from littlestats.config import Settings
from littlestats.controlplane import ControlPlane
from notify import webhooks
settings = Settings(data_dir=__import__("pathlib").Path(sys.argv[1]), webhook_ca_file=sys.argv[2])
store = ControlPlane(settings.control_db)
print(webhooks.deliver_due(store, settings, datetime.now(UTC)), flush=True)
time.sleep(600)
"""


def test_a_killed_process_leaves_its_retries_to_the_next(world: World) -> None:
    world.receiver.requests.clear()
    world.receiver.answers[:] = [502]
    test_hook = hook(world, ("alert",))
    try:
        delivery = world.store.queue_delivery(test_hook.id, world.site.id, "test", webhooks.envelope(world.site, "test", {}))
        proc = subprocess.Popen([sys.executable, "-c", KILLED, str(world.settings.data_dir), str(world.receiver.ca_file)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ})
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "{'pending': 1}"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        pending = world.store.get_delivery(delivery.id)
        assert pending is not None and pending.status == "pending" and pending.next_attempt_at is not None
        later = datetime.fromisoformat(pending.next_attempt_at)
        assert webhooks.deliver_due(world.store, world.settings, later) == {"delivered": 1}
        assert [a["statusCode"] for a in world.store.get_delivery(delivery.id).attempts] == [502, 200]  # type: ignore[union-attr]
    finally:
        world.receiver.answers.clear()
        world.store.delete_webhook(world.site.id, test_hook.id)


@pytest.mark.parametrize(("url", "loopback_http", "ok"), [
    ("https://hooks.example/x", False, True),
    ("https://hooks.example:8443/x?y=1", False, True),
    ("http://hooks.example/x", True, False),
    ("http://127.0.0.1:9/x", False, False),
    ("http://127.0.0.1:9/x", True, True),
    ("http://[::1]:9/x", True, True),
    ("http://10.0.0.1/x", True, False),
    ("ftp://hooks.example/x", False, False),
    ("https://user:pw@hooks.example/x", False, False),
    ("https://hooks.example:99999/x", False, False),
    ("https:///x", False, False),
    ("not a url", False, False),
    (42, False, False),
])
def test_webhook_urls_must_be_https(url: object, loopback_http: bool, ok: bool) -> None:
    if ok:
        assert webhooks.check_url(url, loopback_http) == url
    else:
        with pytest.raises(webhooks.BadWebhookUrl):
            webhooks.check_url(url, loopback_http)


def test_an_old_control_plane_upgrades_and_takes_subscriptions_rules_and_webhooks(tmp_path: Path) -> None:
    """The data directory of the first release (tests/fixtures/datadir-v1) gains the tables."""
    import shutil

    from littlestats.migrations import LATEST
    from tests.test_upgrade import FIXTURE, control_version

    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    path = tmp_path / "data" / "control.sqlite3"
    assert control_version(path) < LATEST
    store = ControlPlane(path)
    try:
        assert control_version(path) == LATEST
        site = store.list_sites()[0]
        assert store.create_report(site.id, "a@old.example", "weekly", None) is not None
        store.create_alert(site.id, "drop", 50, 10, ("a@old.example",), False, None)
        hook = store.create_webhook(site.id, "https://hooks.example/x", ("alert",), None)
        store.queue_delivery(hook.id, site.id, "test", "{}")
        assert [len(store.list_reports(site.id)), len(store.list_alerts(site.id)),
                len(store.list_deliveries(hook.id))] == [1, 1, 1]
        store.delete_site(site.id)  # its records go with it
        assert store.list_reports() == [] and store.list_webhooks() == [] and store.list_alerts() == []
    finally:
        store.close()
