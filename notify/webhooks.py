"""Webhooks: signed JSON POSTs of a site's events, retried with backoff, with a delivery log.

Every delivery is a row of the control plane first (``NotifyStore.queue_delivery``), then sent by
``deliver_due`` — in the warehouse process every minute, and at once for a test send — so a
restart continues pending retries. A delivery succeeds on any 2xx answer; otherwise it is tried
again after each of ``BACKOFF`` (1 min, 5 min, 30 min, 2 h, 12 h) and then given up (``failed``).

The body is JSON ``{"id", "event", "createdAt", "site": {"id", "domain"}, "data"}``; the headers
``X-LittleStats-Event``, ``X-LittleStats-Delivery``, ``X-LittleStats-Timestamp`` (Unix seconds at
sending) and ``X-LittleStats-Signature: sha256=<hex>``, the HMAC-SHA256 with the webhook's secret of
``<timestamp>.<body>``. Redirects are not followed: a receiver answers where it is registered.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import ssl
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, Site
from littlestats.http import is_loopback
from littlestats.notify_store import Delivery, Webhook
from notify.periods import hour_key
from warehouse.query import DateRange, Filter, Query, run_sync
from warehouse.query.model import GoalSpec
from warehouse.query.runner import SyncWarehouse

log = logging.getLogger("littlestats.webhooks")

#: Seconds to wait after each failed attempt; one more failure after the last gives up.
BACKOFF = (60, 300, 1800, 7200, 43200)
MAX_URL = 2000
#: At most this many hours are searched for goal conversions at once (after a long stop).
MAX_GOAL_WINDOW = timedelta(hours=24)


class BadWebhookUrl(ValueError):
    """A webhook URL that may not be used; the message says why."""


def check_url(url: Any, allow_http_loopback: bool) -> str:
    """``url`` if it is an absolute https URL (or http to a loopback address when allowed)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or any(c.isspace() or c < " " for c in url):
        raise BadWebhookUrl(f"expected an https URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as exc:
        raise BadWebhookUrl(f"not a URL: {exc}") from None
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise BadWebhookUrl("expected https://host[:port]/path, without credentials or a #fragment")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_http_loopback and is_loopback(parts.hostname):
        return url
    if parts.scheme == "http":
        raise BadWebhookUrl("webhooks must use https (plain http only to a loopback address, with the setting"
                            " webhook_allow_http_loopback)")
    raise BadWebhookUrl(f"unsupported scheme {parts.scheme!r}: use https")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-LittleStats-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def envelope(site: Site, event: str, data: dict[str, Any]) -> str:
    """A delivery's stored payload (the ``id`` is added when sending)."""
    return orjson.dumps({"event": event, "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
                         "site": {"id": site.id, "domain": site.domain}, "data": data}).decode()


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.webhook_ca_file:
        context.load_verify_locations(settings.webhook_ca_file)
    return context


def post(settings: Settings, hook: Webhook, delivery: Delivery) -> tuple[int | None, str | None]:
    """One attempt: (HTTP status, error) — the status is ``None`` when no answer came."""
    body = orjson.dumps({"id": delivery.id, **orjson.loads(delivery.payload)})
    timestamp = str(int(time.time()))
    parts = urlsplit(hook.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    timeout = settings.webhook_timeout_seconds
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                           context=_ssl_context(settings))
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "LittleStats-Webhook/1",
            "X-LittleStats-Event": delivery.event, "X-LittleStats-Delivery": str(delivery.id),
            "X-LittleStats-Timestamp": timestamp, "X-LittleStats-Signature": sign(hook.secret, timestamp, body)})
        response = conn.getresponse()
        response.read(64 * 1024)
        status = response.status
        return status, None if 200 <= status < 300 else f"HTTP {status} {response.reason}"[:200]
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        conn.close()


def attempt(store: ControlPlane, settings: Settings, hook: Webhook, delivery: Delivery, now: datetime) -> str:
    """Send ``delivery`` once and log the attempt; its new status."""
    started = time.monotonic()
    status_code, error = post(settings, hook, delivery)
    tries = len(delivery.attempts) + 1
    if error is None:
        status, next_at = "delivered", None
    elif tries > len(BACKOFF):
        status, next_at = "failed", None
    else:
        status, next_at = "pending", (now + timedelta(seconds=BACKOFF[tries - 1])).isoformat(timespec="seconds")
    store.record_attempt(delivery.id, {"at": now.isoformat(timespec="seconds"), "statusCode": status_code,
                                       "error": error, "ms": round(1000 * (time.monotonic() - started))},
                         status, next_at)
    if error is not None:
        log.warning("webhook %s delivery %s attempt %d: %s (%s)", hook.id, delivery.id, tries, error,
                    "retrying at " + next_at if next_at else "giving up")
    return status


def deliver_due(store: ControlPlane, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Attempt every delivery due at ``now``; counts by resulting status."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    counts: dict[str, int] = {}
    hooks: dict[str, Webhook | None] = {}
    for delivery in store.due_deliveries(now.isoformat(timespec="seconds")):
        if delivery.webhook_id not in hooks:
            hooks[delivery.webhook_id] = store.get_webhook(delivery.site_id, delivery.webhook_id)
        hook = hooks[delivery.webhook_id]
        if hook is None:
            continue
        status = attempt(store, settings, hook, delivery, now)
        counts[status] = counts.get(status, 0) + 1
    return counts


def goal_conversions(site: Site, goals: list[GoalSpec], start: datetime, end: datetime,
                     warehouse: SyncWarehouse) -> list[dict[str, Any]]:
    """Each goal completed in ``[start, end)``: ``{goal, kind, conversions, visitors}`` — counted by
    the query engine's goal filter, the one definition of "this event completes this goal"."""
    out = []
    for goal in goals:
        q = Query(site.id, DateRange(start, end, site.timezone), metrics=("visitors", "events", "views"),
                  filters=(Filter("is", "goal", (goal.name,)),), goals=tuple(goals))
        rows = run_sync(q, warehouse).rows
        if not rows:
            continue
        conversions = int(rows[0]["events"] if goal.kind == "event" else rows[0]["views"])
        if conversions:
            out.append({"goal": goal.name, "kind": goal.kind, "conversions": conversions,
                        "visitors": int(rows[0]["visitors"])})
    return out


def find_conversions(store: ControlPlane, site: Site, hook: Webhook, until: datetime,
                     warehouse: SyncWarehouse) -> int:
    """Queue a ``goal.conversions`` delivery per goal completed since the webhook last looked, up
    to ``until`` (a closed hour's end); how many were queued."""
    if hook.goals_checked_until is None:
        store.advance_goal_check(hook.id, hour_key(until), [])
        return 0
    start = max(datetime.fromisoformat(hook.goals_checked_until), until - MAX_GOAL_WINDOW)
    if start >= until:
        return 0
    goals = store.goal_specs(site.id)
    found = goal_conversions(site, goals, start, until, warehouse) if goals else []
    window = {"start": start.isoformat(), "end": until.isoformat()}
    payloads = [envelope(site, "goal.conversions", {**row, "window": window}) for row in found]
    return len(payloads) if store.advance_goal_check(hook.id, hour_key(until), payloads) else 0
