"""What arrives without being asked for: report subscriptions, alert rules, webhooks and the
webhook delivery log — the control-plane records of docs/reports.md.

``NotifyStore`` holds their queries; ``littlestats.controlplane.ControlPlane`` inherits them. The
watermarks kept here make the scheduled jobs (``notify.schedule``) restart-safe: a subscription's
``last_period`` is the start of the last period mailed, an alert rule's ``last_hour`` the last hour
judged, a webhook's ``goals_checked_until`` the end of the hours already searched for conversions.
Each is moved forward in the same transaction that records what was sent, so a crash in between
repeats at most one send and never skips one.

A webhook's secret is stored as it was given out, because signing needs it (a hash would not do):
it is never listed by the API, never logged, and lives in the control-plane file, which only the
server's user may read (``littlestats.permissions``).
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from littlestats.ids import new_id, now_iso

FREQUENCIES = ("weekly", "monthly")
DIRECTIONS = ("spike", "drop")
WEBHOOK_EVENTS = ("goal.conversions", "alert")
#: Deliveries kept per site: the oldest finished ones go first.
MAX_DELIVERIES_PER_SITE = 1000


@dataclass(frozen=True)
class ReportSubscription:
    """One recipient's weekly or monthly report of one site."""

    id: str
    site_id: str
    email: str
    frequency: str
    last_period: str | None  # ISO date the last mailed period started on (site-local)
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "siteId": self.site_id, "email": self.email, "frequency": self.frequency,
                "lastPeriod": self.last_period, "createdAt": self.created_at}


@dataclass(frozen=True)
class AlertRule:
    """Visitors of an hour against the same hour a week before: a ``spike`` (at least
    ``threshold_percent`` more) or a ``drop`` (at least that much less), judged only when the
    larger of the two hours has ``min_visitors``."""

    id: str
    site_id: str
    direction: str
    threshold_percent: int
    min_visitors: int
    recipients: tuple[str, ...]
    webhooks: bool
    firing: bool
    last_hour: str | None
    last_fired_at: str | None
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "siteId": self.site_id, "direction": self.direction,
                "thresholdPercent": self.threshold_percent, "minVisitors": self.min_visitors,
                "recipients": list(self.recipients), "webhooks": self.webhooks, "firing": self.firing,
                "lastHour": self.last_hour, "lastFiredAt": self.last_fired_at, "createdAt": self.created_at}


@dataclass(frozen=True)
class Webhook:
    """An HTTPS endpoint that receives a site's events, signed with ``secret``."""

    id: str
    site_id: str
    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...]
    goals_checked_until: str | None
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "siteId": self.site_id, "url": self.url, "events": list(self.events),
                "secretHint": self.secret[:10] + "…", "createdAt": self.created_at}


@dataclass(frozen=True)
class Delivery:
    """One event sent (or being sent) to one webhook, with every attempt."""

    id: int
    webhook_id: str
    site_id: str
    event: str
    payload: str
    status: str  # pending | delivered | failed
    attempts: tuple[dict[str, Any], ...]  # {"at", "statusCode", "error"}
    next_attempt_at: str | None
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "webhookId": self.webhook_id, "event": self.event, "status": self.status,
                "attempts": list(self.attempts), "nextAttemptAt": self.next_attempt_at,
                "createdAt": self.created_at, "payload": orjson.loads(self.payload)}


def _subscription(r: sqlite3.Row) -> ReportSubscription:
    return ReportSubscription(r["id"], r["site_id"], r["email"], r["frequency"], r["last_period"], r["created_at"])


def _rule(r: sqlite3.Row) -> AlertRule:
    return AlertRule(r["id"], r["site_id"], r["direction"], r["threshold_percent"], r["min_visitors"],
                     tuple(orjson.loads(r["recipients"])), bool(r["webhooks"]), bool(r["firing"]),
                     r["last_hour"], r["last_fired_at"], r["created_at"])


def _webhook(r: sqlite3.Row) -> Webhook:
    return Webhook(r["id"], r["site_id"], r["url"], r["secret"], tuple(orjson.loads(r["events"])),
                   r["goals_checked_until"], r["created_at"])


def _delivery(r: sqlite3.Row) -> Delivery:
    return Delivery(r["id"], r["webhook_id"], r["site_id"], r["event"], r["payload"], r["status"],
                    tuple(orjson.loads(r["attempts"])), r["next_attempt_at"], r["created_at"])


class NotifyStore:
    """Report subscriptions, alert rules, webhooks and deliveries (mixed into ``ControlPlane``)."""

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # report subscriptions ---------------------------------------------------------------------
    def list_reports(self, site_id: str | None = None) -> list[ReportSubscription]:
        """The site's subscriptions (every site's when ``site_id`` is ``None``), oldest first."""
        rows = self._conn().execute(
            "SELECT * FROM report_subscriptions WHERE (? IS NULL OR site_id = ?) ORDER BY created_at, rowid",
            (site_id, site_id)).fetchall()
        return [_subscription(r) for r in rows]

    def get_report(self, site_id: str, report_id: str) -> ReportSubscription | None:
        row = self._conn().execute("SELECT * FROM report_subscriptions WHERE site_id = ? AND id = ?",
                                   (site_id, report_id)).fetchone()
        return _subscription(row) if row else None

    def create_report(self, site_id: str, email: str, frequency: str, last_period: str | None,
                      created_by: str | None = None) -> ReportSubscription | None:
        """A new subscription (``None``: this recipient already gets this report). ``last_period``
        is the period before the first one to mail (the one that ended before subscribing)."""
        report_id = new_id()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO report_subscriptions (id, site_id, email, frequency, last_period,"
                " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (report_id, site_id, email, frequency, last_period, now_iso(), created_by))
            if cursor.rowcount == 0:
                return None
        return self.get_report(site_id, report_id)

    def delete_report(self, site_id: str, report_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM report_subscriptions WHERE site_id = ? AND id = ?",
                              (site_id, report_id)).rowcount > 0

    def mark_report_sent(self, report_id: str, period_start: str) -> bool:
        """Record that the period starting ``period_start`` was mailed; ``False`` when it (or a
        later one) already was — another process got there first."""
        with self._tx() as db:
            return db.execute(
                "UPDATE report_subscriptions SET last_period = ? WHERE id = ?"
                " AND (last_period IS NULL OR last_period < ?)", (period_start, report_id, period_start)).rowcount > 0

    # alert rules -------------------------------------------------------------------------------
    def list_alerts(self, site_id: str | None = None) -> list[AlertRule]:
        rows = self._conn().execute(
            "SELECT * FROM alert_rules WHERE (? IS NULL OR site_id = ?) ORDER BY created_at, rowid",
            (site_id, site_id)).fetchall()
        return [_rule(r) for r in rows]

    def get_alert(self, site_id: str, alert_id: str) -> AlertRule | None:
        row = self._conn().execute("SELECT * FROM alert_rules WHERE site_id = ? AND id = ?",
                                   (site_id, alert_id)).fetchone()
        return _rule(row) if row else None

    def create_alert(self, site_id: str, direction: str, threshold_percent: int, min_visitors: int,
                     recipients: tuple[str, ...], webhooks: bool, last_hour: str | None,
                     created_by: str | None = None) -> AlertRule:
        alert_id = new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO alert_rules (id, site_id, direction, threshold_percent, min_visitors, recipients,"
                " webhooks, last_hour, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alert_id, site_id, direction, threshold_percent, min_visitors,
                 orjson.dumps(list(recipients)).decode(), int(webhooks), last_hour, now_iso(), created_by))
        rule = self.get_alert(site_id, alert_id)
        assert rule is not None
        return rule

    def delete_alert(self, site_id: str, alert_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM alert_rules WHERE site_id = ? AND id = ?",
                              (site_id, alert_id)).rowcount > 0

    def judge_alert(self, alert_id: str, hour: str, firing: bool) -> bool:
        """Record the verdict on ``hour`` (an ISO UTC hour after ``last_hour``); ``True`` when the
        rule starts firing with it — the one moment it is sent."""
        with self._tx() as db:
            row = db.execute("SELECT firing, last_hour FROM alert_rules WHERE id = ?", (alert_id,)).fetchone()
            if row is None or (row["last_hour"] is not None and row["last_hour"] >= hour):
                return False
            fires = firing and not row["firing"]
            db.execute("UPDATE alert_rules SET firing = ?, last_hour = ?,"
                       " last_fired_at = CASE WHEN ? THEN ? ELSE last_fired_at END WHERE id = ?",
                       (int(firing), hour, int(fires), now_iso(), alert_id))
            return fires

    # webhooks ----------------------------------------------------------------------------------
    def list_webhooks(self, site_id: str | None = None) -> list[Webhook]:
        rows = self._conn().execute(
            "SELECT * FROM webhooks WHERE (? IS NULL OR site_id = ?) ORDER BY created_at, rowid",
            (site_id, site_id)).fetchall()
        return [_webhook(r) for r in rows]

    def get_webhook(self, site_id: str, webhook_id: str) -> Webhook | None:
        row = self._conn().execute("SELECT * FROM webhooks WHERE site_id = ? AND id = ?",
                                   (site_id, webhook_id)).fetchone()
        return _webhook(row) if row else None

    def create_webhook(self, site_id: str, url: str, events: tuple[str, ...], goals_checked_until: str | None,
                       created_by: str | None = None) -> Webhook:
        """A new webhook with a fresh secret (``Webhook.secret``: show it to its creator once)."""
        webhook_id = new_id()
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute("INSERT INTO webhooks (id, site_id, url, secret, events, goals_checked_until, created_at,"
                       " created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (webhook_id, site_id, url, secret, orjson.dumps(list(events)).decode(),
                        goals_checked_until, now_iso(), created_by))
        hook = self.get_webhook(site_id, webhook_id)
        assert hook is not None
        return hook

    def delete_webhook(self, site_id: str, webhook_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM webhooks WHERE site_id = ? AND id = ?",
                              (site_id, webhook_id)).rowcount > 0

    def advance_goal_check(self, webhook_id: str, until: str, payloads: list[str]) -> bool:
        """Queue ``payloads`` (goal conversions found up to ``until``) and move the webhook's
        watermark to ``until``, in one transaction; ``False`` when already past it."""
        with self._tx() as db:
            row = db.execute("SELECT site_id, goals_checked_until FROM webhooks WHERE id = ?",
                             (webhook_id,)).fetchone()
            if row is None or (row["goals_checked_until"] is not None and row["goals_checked_until"] >= until):
                return False
            for payload in payloads:
                self._insert_delivery(db, webhook_id, row["site_id"], "goal.conversions", payload)
            db.execute("UPDATE webhooks SET goals_checked_until = ? WHERE id = ?", (until, webhook_id))
            return True

    # deliveries --------------------------------------------------------------------------------
    def queue_delivery(self, webhook_id: str, site_id: str, event: str, payload: str) -> Delivery:
        """A pending delivery, due now (the oldest finished ones of the site beyond
        ``MAX_DELIVERIES_PER_SITE`` are forgotten)."""
        with self._tx() as db:
            delivery_id = self._insert_delivery(db, webhook_id, site_id, event, payload)
        found = self.get_delivery(delivery_id)
        assert found is not None
        return found

    @staticmethod
    def _insert_delivery(db: sqlite3.Connection, webhook_id: str, site_id: str, event: str, payload: str) -> int:
        now = now_iso()
        cursor = db.execute(
            "INSERT INTO webhook_deliveries (webhook_id, site_id, event, payload, status, next_attempt_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
            (webhook_id, site_id, event, payload, now, now, now))
        db.execute(
            "DELETE FROM webhook_deliveries WHERE site_id = ? AND status != 'pending' AND id <= ("
            " SELECT id FROM webhook_deliveries WHERE site_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (site_id, site_id, MAX_DELIVERIES_PER_SITE))
        return int(cursor.lastrowid or 0)

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        row = self._conn().execute("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return _delivery(row) if row else None

    def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[Delivery]:
        """The webhook's deliveries, newest first."""
        rows = self._conn().execute("SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
                                    (webhook_id, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def due_deliveries(self, now: str, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due at ``now`` (ISO UTC), oldest first."""
        rows = self._conn().execute(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?", (now, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def record_attempt(self, delivery_id: int, attempt: dict[str, Any], status: str,
                       next_attempt_at: str | None) -> None:
        """Append an attempt to the delivery's log and set what happens next."""
        with self._tx() as db:
            row = db.execute("SELECT attempts FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return  # the webhook was deleted meanwhile
            attempts = [*orjson.loads(row["attempts"]), attempt]
            db.execute("UPDATE webhook_deliveries SET attempts = ?, status = ?, next_attempt_at = ?, updated_at = ?"
                       " WHERE id = ?", (orjson.dumps(attempts).decode(), status, next_attempt_at, now_iso(),
                                         delivery_id))
