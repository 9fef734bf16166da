"""Reports that arrive, managed per site (docs/reports.md): mailed reports, alert rules, webhooks.

``GET/POST /api/v2/sites/{site}/reports``, ``DELETE …/reports/{report}``, ``POST …/reports/{report}/test``
    ``POST {"email", "frequency": "weekly"|"monthly"}`` subscribes a recipient; the first mail
    covers the first period that ends after subscribing. ``smtp.configured`` says whether mail can be
    sent at all; ``test`` mails the last complete period now (409 without SMTP).
``GET/POST /api/v2/sites/{site}/alerts``, ``DELETE …/alerts/{alert}``, ``POST …/alerts/{alert}/test``
    ``POST {"direction": "spike"|"drop", "thresholdPercent", "minVisitors", "recipients": [emails],
    "webhooks": bool}``; ``test`` sends the rule's message for the last closed hour, marked as a test.
``GET/POST /api/v2/sites/{site}/webhooks``, ``DELETE …/webhooks/{webhook}``,
``GET …/webhooks/{webhook}/deliveries``, ``POST …/webhooks/{webhook}/test``
    ``POST {"url", "events": ["goal.conversions", "alert"]}`` answers 201 with the signing
    ``secret`` — the only time it is shown. ``test`` queues a ``test`` event and sends it at once;
    the answer is that delivery, retried later like any other when it failed.

Who may call which is ``api.routes.POLICY``'s (a site's admins and owners). Bad input answers 400
naming the field; the counts per site are limited (``MAX_*``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.body import bad_param, check_fields, json_body
from api.members import valid_email
from api.stats import warehouse, warehouse_unavailable
from littlestats import audit
from littlestats.controlplane import Site
from littlestats.http import json_response
from littlestats.notify_store import DIRECTIONS, FREQUENCIES, WEBHOOK_EVENTS, Webhook
from notify import alerts, mail, webhooks
from notify.compose import compose
from notify.periods import hour_key, last_closed_hour, last_complete
from notify.render import report_message
from notify.schedule import fire_alert
from warehouse.protocol import WarehouseError

MAX_REPORTS = 50
MAX_ALERTS = 20
MAX_WEBHOOKS = 10
MAX_RECIPIENTS = 10
MAX_DELIVERIES_LISTED = 100



def _int(body: dict[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad_param(name, f"expected a whole number from {lo} to {hi}")
    return value


def _smtp(services: Any) -> dict[str, Any]:
    configured = services.settings.smtp_configured
    return {"configured": configured, "message": None if configured else str(mail.SmtpNotConfigured())}


def _limit(count: int, limit: int, what: str) -> None:
    if count >= limit:
        raise falcon.HTTPConflict(description=f"a site has at most {limit} {what}: delete one first")


async def _in_thread(fn: Any, *args: Any) -> Any:
    """Run blocking work (warehouse questions, SMTP, HTTP) off the event loop; a warehouse that
    does not answer is a 503, a mail server that refuses a 502, as for any other gateway."""
    try:
        return await asyncio.to_thread(fn, *args)
    except mail.SmtpNotConfigured as exc:
        raise falcon.HTTPConflict(description=str(exc)) from None
    except mail.MailError as exc:
        raise falcon.HTTPBadGateway(description=str(exc)) from None
    except (OSError, ConnectionError, TimeoutError, WarehouseError) as exc:
        raise warehouse_unavailable(exc) from None


# --- reports ---------------------------------------------------------------------------------


class ReportsResource:
    """``GET/POST /api/v2/sites/{site}/reports``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"reports": [r.public() for r in self.services.control.list_reports(found.id)],
                             "smtp": _smtp(self.services)})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("email", "frequency"), ("email", "frequency"))
        email = valid_email(body["email"])
        frequency = body["frequency"]
        if frequency not in FREQUENCIES:
            raise bad_param("frequency", f"expected one of: {', '.join(FREQUENCIES)}")
        control = self.services.control
        _limit(len(control.list_reports(found.id)), MAX_REPORTS, "report subscriptions")
        before = last_complete(frequency, found.timezone, datetime.now(UTC)).start.isoformat()
        created = control.create_report(found.id, email, frequency, before,
                                        principal.user.id if principal.user else None)
        if created is None:
            raise falcon.HTTPConflict(description=f"{email} already gets the {frequency} report of this site")
        json_response(resp, {**created.public(), "smtp": _smtp(self.services)}, falcon.HTTP_201)


class ReportResource:
    """``DELETE /api/v2/sites/{site}/reports/{report}``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, report: str) -> None:
        _, found = authorize(req, self.services, site)
        if not self.services.control.delete_report(found.id, report[:100]):
            raise falcon.HTTPNotFound(description=f"no report subscription {report!r} on this site")
        resp.status = falcon.HTTP_204


class ReportTestResource:
    """``POST /api/v2/sites/{site}/reports/{report}/test``: mail the last complete period now."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, report: str) -> None:
        _, found = authorize(req, self.services, site)
        sub = self.services.control.get_report(found.id, report[:100])
        if sub is None:
            raise falcon.HTTPNotFound(description=f"no report subscription {report!r} on this site")
        settings = self.services.settings
        if not settings.smtp_configured:
            raise falcon.HTTPConflict(description=str(mail.SmtpNotConfigured()))
        period = last_complete(sub.frequency, found.timezone, datetime.now(UTC))
        goals = self.services.control.goal_specs(found.id)
        composed = await _in_thread(compose, found, period, goals, warehouse(self.services))
        msg = report_message(composed, settings.smtp_from, sub.email)
        await _in_thread(mail.send, settings, [msg])
        json_response(resp, {"sent": True, "to": sub.email, "subject": msg["Subject"], "report": composed.public()})


# --- alerts ----------------------------------------------------------------------------------


class AlertsResource:
    """``GET/POST /api/v2/sites/{site}/alerts``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"alerts": [a.public() for a in self.services.control.list_alerts(found.id)],
                             "smtp": _smtp(self.services)})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("direction", "thresholdPercent", "minVisitors", "recipients", "webhooks"),
                ("direction", "thresholdPercent"))
        direction = body["direction"]
        if direction not in DIRECTIONS:
            raise bad_param("direction", f"expected one of: {', '.join(DIRECTIONS)}")
        threshold = _int(body, "thresholdPercent", 1, 1000 if direction == "spike" else 100, 0)
        min_visitors = _int(body, "minVisitors", 1, 1_000_000, 10)
        raw = body.get("recipients", [])
        if not isinstance(raw, list) or len(raw) > MAX_RECIPIENTS:
            raise bad_param("recipients", f"expected a list of at most {MAX_RECIPIENTS} email addresses")
        try:
            recipients = tuple(dict.fromkeys(valid_email(r) for r in raw))
        except falcon.HTTPBadRequest:
            raise bad_param("recipients", "expected email addresses such as ana@example.com") from None
        to_webhooks = body.get("webhooks", False)
        if not isinstance(to_webhooks, bool):
            raise bad_param("webhooks", "expected true or false")
        if not recipients and not to_webhooks:
            raise bad_param("recipients", "an alert needs recipients, or \"webhooks\": true (or both)")
        control = self.services.control
        _limit(len(control.list_alerts(found.id)), MAX_ALERTS, "alert rules")
        rule = control.create_alert(found.id, direction, threshold, min_visitors, recipients, to_webhooks,
                                    hour_key(last_closed_hour(datetime.now(UTC))),
                                    principal.user.id if principal.user else None)
        json_response(resp, {**rule.public(), "smtp": _smtp(self.services)}, falcon.HTTP_201)


class AlertResource:
    """``DELETE /api/v2/sites/{site}/alerts/{alert}``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, alert: str) -> None:
        _, found = authorize(req, self.services, site)
        if not self.services.control.delete_alert(found.id, alert[:100]):
            raise falcon.HTTPNotFound(description=f"no alert rule {alert!r} on this site")
        resp.status = falcon.HTTP_204


class AlertTestResource:
    """``POST /api/v2/sites/{site}/alerts/{alert}/test``: the rule's message for the last closed
    hour, marked ``test``, to its recipients and (with ``webhooks``) the site's alert webhooks."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, alert: str) -> None:
        _, found = authorize(req, self.services, site)
        rule = self.services.control.get_alert(found.id, alert[:100])
        if rule is None:
            raise falcon.HTTPNotFound(description=f"no alert rule {alert!r} on this site")
        hour = last_closed_hour(datetime.now(UTC))
        visitors, before = await _in_thread(alerts.measure, found, hour, warehouse(self.services))
        payload = alerts.alert_payload(found, rule, hour, visitors, before, test=True)
        problems = await asyncio.to_thread(fire_alert, self.services.control, self.services.settings, found,
                                           rule.recipients, rule.webhooks, payload)
        json_response(resp, {"alert": payload, "recipients": list(rule.recipients), "problems": problems})


# --- webhooks --------------------------------------------------------------------------------


def _webhook(services: Any, found: Site, webhook: str) -> Webhook:
    hook = services.control.get_webhook(found.id, webhook[:100])
    if hook is None:
        raise falcon.HTTPNotFound(description=f"no webhook {webhook!r} on this site")
    return hook  # type: ignore[no-any-return]


class WebhooksResource:
    """``GET/POST /api/v2/sites/{site}/webhooks``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"webhooks": [h.public() for h in self.services.control.list_webhooks(found.id)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("url", "events"), ("url",))
        try:
            url = webhooks.check_url(body["url"], self.services.settings.webhook_allow_http_loopback)
        except webhooks.BadWebhookUrl as exc:
            raise bad_param("url", str(exc)) from None
        events = body.get("events", list(WEBHOOK_EVENTS))
        if (not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events)):
            raise bad_param("events", f"expected a non-empty list of: {', '.join(WEBHOOK_EVENTS)}")
        control = self.services.control
        _limit(len(control.list_webhooks(found.id)), MAX_WEBHOOKS, "webhooks")
        hook = control.create_webhook(found.id, url, tuple(dict.fromkeys(events)),
                                      hour_key(last_closed_hour(datetime.now(UTC)) + timedelta(hours=1)),
                                      principal.user.id if principal.user else None)
        audit.record(control, audit.WEBHOOK_CREATED, actor=principal, site_id=found.id, target=hook.id,
                     details={"url": url[:400]})
        json_response(resp, {**hook.public(), "secret": hook.secret}, falcon.HTTP_201)


class WebhookResource:
    """``DELETE /api/v2/sites/{site}/webhooks/{webhook}`` (its pending deliveries go with it)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, webhook: str) -> None:
        principal, found = authorize(req, self.services, site)
        hook = _webhook(self.services, found, webhook)
        self.services.control.delete_webhook(found.id, hook.id)
        audit.record(self.services.control, audit.WEBHOOK_DELETED, actor=principal, site_id=found.id,
                     target=hook.id, details={"url": hook.url[:400]})
        resp.status = falcon.HTTP_204


class WebhookDeliveriesResource:
    """``GET /api/v2/sites/{site}/webhooks/{webhook}/deliveries``: the newest first, every attempt."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, webhook: str) -> None:
        _, found = authorize(req, self.services, site)
        hook = _webhook(self.services, found, webhook)
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_DELIVERIES_LISTED,
                                     default=MAX_DELIVERIES_LISTED)
        json_response(resp, {"webhookId": hook.id, "deliveries": [
            d.public() for d in self.services.control.list_deliveries(hook.id, limit)]})


class WebhookTestResource:
    """``POST /api/v2/sites/{site}/webhooks/{webhook}/test``: a ``test`` event, sent at once."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, webhook: str) -> None:
        _, found = authorize(req, self.services, site)
        hook = _webhook(self.services, found, webhook)
        control = self.services.control
        delivery = control.queue_delivery(hook.id, found.id, "test",
                                          webhooks.envelope(found, "test", {"message": "a test from LittleStats"}))
        await asyncio.to_thread(webhooks.attempt, control, self.services.settings, hook, delivery, datetime.now(UTC))
        sent = control.get_delivery(delivery.id)
        json_response(resp, sent.public() if sent else {"id": delivery.id})
