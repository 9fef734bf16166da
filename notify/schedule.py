"""The notification job the warehouse process runs every minute (``jobs.daemon``).

``run_once(store, settings, warehouse, now)`` does, in order:

1. mail every report whose period is due (``notify.periods``), oldest period first, recording each
   sent period before the next so a restart neither repeats nor skips one;
2. judge the latest closed hour for every alert rule not judged on it yet, mailing its recipients
   and queueing webhook deliveries when a rule starts firing;
3. search the closed hours since each ``goal.conversions`` webhook last looked, queueing a
   delivery per goal completed;
4. attempt every webhook delivery that is due.

Every step takes ``now``, so tests drive it with a controlled clock. A step that fails is logged
and tried again at the next run; the others still run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, Site
from notify import alerts, mail, webhooks
from notify.compose import compose
from notify.periods import due_periods, hour_key, last_closed_hour
from notify.render import alert_message, report_message
from warehouse.query.runner import SyncWarehouse

log = logging.getLogger("littlestats.notify")

#: After a failed SMTP send, reports wait this long before the next try.
MAIL_RETRY_SECONDS = 600.0


@dataclass
class Outcome:
    """What one run did (logged, and asserted by tests)."""

    reports_sent: list[tuple[str, str]] = field(default_factory=list)  # (subscription id, period start)
    alerts_fired: list[str] = field(default_factory=list)  # rule ids
    conversions_queued: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.reports_sent)} reports mailed, {len(self.alerts_fired)} alerts fired, "
                f"{self.conversions_queued} goal deliveries queued, webhook attempts {self.deliveries}")

    def idle(self) -> bool:
        return not (self.reports_sent or self.alerts_fired or self.conversions_queued or self.deliveries
                    or self.errors)


_mail_failed_at: dict[str, float] = {}


def send_due_reports(store: ControlPlane, settings: Settings, warehouse: SyncWarehouse, now: datetime,
                     outcome: Outcome) -> None:
    """Mail every due report period (nothing without SMTP: the periods wait)."""
    if not settings.smtp_configured:
        return
    sites = {s.id: s for s in store.list_sites()}
    for sub in store.list_reports():
        site = sites.get(sub.site_id)
        if site is None or time.monotonic() - _mail_failed_at.get(sub.id, -1e9) < MAIL_RETRY_SECONDS:
            continue
        goals = store.goal_specs(site.id)
        for period in due_periods(sub.frequency, site.timezone, sub.last_period, now):
            report = compose(site, period, goals, warehouse)
            try:
                mail.send(settings, [report_message(report, settings.smtp_from, sub.email)])
            except mail.MailError as exc:
                _mail_failed_at[sub.id] = time.monotonic()
                outcome.errors.append(f"report {sub.id}: {exc}")
                log.warning("report %s for %s not sent (%s); retrying in %.0f min", sub.id, site.domain, exc,
                            MAIL_RETRY_SECONDS / 60)
                break
            if store.mark_report_sent(sub.id, period.start.isoformat()):
                outcome.reports_sent.append((sub.id, period.start.isoformat()))


def fire_alert(store: ControlPlane, settings: Settings, site: Site, rule_recipients: tuple[str, ...],
               to_webhooks: bool, payload: dict[str, Any]) -> list[str]:
    """Mail an alert to its recipients and queue it for the site's ``alert`` webhooks; problems."""
    problems = []
    if rule_recipients:
        if settings.smtp_configured:
            try:
                mail.send(settings, [alert_message(payload, settings.smtp_from, r) for r in rule_recipients])
            except mail.MailError as exc:
                problems.append(str(exc))
        else:
            problems.append(str(mail.SmtpNotConfigured()))
    if to_webhooks:
        for hook in store.list_webhooks(site.id):
            if "alert" in hook.events:
                store.queue_delivery(hook.id, site.id, "alert", webhooks.envelope(site, "alert", payload))
    return problems


def check_alerts(store: ControlPlane, settings: Settings, warehouse: SyncWarehouse, now: datetime,
                 outcome: Outcome) -> None:
    """Judge the latest closed hour for every rule (once per rule and hour)."""
    hour = last_closed_hour(now)
    key = hour_key(hour)
    sites = {s.id: s for s in store.list_sites()}
    measured: dict[str, tuple[int, int]] = {}
    for rule in store.list_alerts():
        site = sites.get(rule.site_id)
        if site is None or (rule.last_hour is not None and rule.last_hour >= key):
            continue
        if site.id not in measured:
            measured[site.id] = alerts.measure(site, hour, warehouse)
        visitors, before = measured[site.id]
        if store.judge_alert(rule.id, key, alerts.crossed(rule, visitors, before)):
            outcome.alerts_fired.append(rule.id)
            payload = alerts.alert_payload(site, rule, hour, visitors, before)
            for problem in fire_alert(store, settings, site, rule.recipients, rule.webhooks, payload):
                outcome.errors.append(f"alert {rule.id}: {problem}")
                log.warning("alert %s on %s: %s", rule.id, site.domain, problem)


def find_goal_conversions(store: ControlPlane, warehouse: SyncWarehouse, now: datetime, outcome: Outcome) -> None:
    """Queue goal conversions of the closed hours each webhook has not searched yet."""
    until = last_closed_hour(now) + timedelta(hours=1)
    sites = {s.id: s for s in store.list_sites()}
    for hook in store.list_webhooks():
        site = sites.get(hook.site_id)
        if site is not None and "goal.conversions" in hook.events:
            outcome.conversions_queued += webhooks.find_conversions(store, site, hook, until, warehouse)


def run_once(store: ControlPlane, settings: Settings, warehouse: SyncWarehouse,
             now: datetime | None = None) -> Outcome:
    """One pass of every step (see the module's docstring)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    outcome = Outcome()
    steps = (("reports", lambda: send_due_reports(store, settings, warehouse, now, outcome)),
             ("alerts", lambda: check_alerts(store, settings, warehouse, now, outcome)),
             ("goal conversions", lambda: find_goal_conversions(store, warehouse, now, outcome)),
             ("webhook deliveries", lambda: outcome.deliveries.update(webhooks.deliver_due(store, settings, now))))
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            outcome.errors.append(f"{name}: {exc}")
            log.exception("notifications: %s failed; it runs again at the next pass", name)
    if not outcome.idle():
        log.info("notifications: %s", outcome.summary())
    return outcome


def run_scheduled(settings: Settings, warehouse: SyncWarehouse) -> Outcome:
    """The scheduled job: ``run_once`` with a control-plane connection of its own."""
    store = ControlPlane(settings.control_db)
    try:
        return run_once(store, settings, warehouse)
    finally:
        store.close()
