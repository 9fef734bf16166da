"""Traffic alerts: an hour's visitors against the same hour a week before.

A rule fires when the hour crosses its threshold — a ``spike`` of at least ``threshold_percent``
more visitors, or a ``drop`` of at least that much fewer — and stays quiet while the traffic stays
beyond it: it is sent once per crossing, and may fire again only after an hour back within the
threshold. Tiny sites do not page anyone: a spike needs ``min_visitors`` in the hour, a drop
needs them in the hour a week before. Visitors are counted by the one query engine.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from littlestats.controlplane import Site
from littlestats.notify_store import AlertRule
from warehouse.query import DateRange, Query, run_sync
from warehouse.query.runner import SyncWarehouse

WEEK = timedelta(days=7)


def hour_visitors(site: Site, hour: datetime, warehouse: SyncWarehouse) -> int:
    """Distinct visitors of the UTC hour starting at ``hour``."""
    q = Query(site.id, DateRange(hour, hour + timedelta(hours=1), site.timezone), metrics=("visitors",))
    rows = run_sync(q, warehouse).rows
    return int(rows[0]["visitors"]) if rows else 0


def crossed(rule: AlertRule, visitors: int, before: int) -> bool:
    """Whether ``visitors`` against ``before`` is beyond the rule's threshold."""
    factor = rule.threshold_percent / 100.0
    if rule.direction == "spike":
        return visitors >= rule.min_visitors and visitors >= before * (1.0 + factor) and visitors > before
    return before >= rule.min_visitors and visitors <= before * (1.0 - factor)


def change_percent(visitors: int, before: int) -> float | None:
    return round(100.0 * (visitors - before) / before, 1) if before else None


def alert_payload(site: Site, rule: AlertRule, hour: datetime, visitors: int, before: int,
                  test: bool = False) -> dict[str, Any]:
    """What a fired alert says (the mail's content and the webhook's ``data``)."""
    return {"ruleId": rule.id, "siteId": site.id, "domain": site.domain, "direction": rule.direction,
            "thresholdPercent": rule.threshold_percent, "minVisitors": rule.min_visitors,
            "hour": {"start": hour.isoformat(), "end": (hour + timedelta(hours=1)).isoformat()},
            "visitors": visitors, "visitorsWeekBefore": before,
            "changePercent": change_percent(visitors, before), "test": test}


def measure(site: Site, hour: datetime, warehouse: SyncWarehouse) -> tuple[int, int]:
    """(visitors of ``hour``, visitors of the same hour a week before)."""
    return hour_visitors(site, hour, warehouse), hour_visitors(site, hour - WEEK, warehouse)
