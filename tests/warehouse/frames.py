"""Small event frames for sessionize unit tests: only what a test cares about is spelled out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ingest.schema import COLUMNS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

DEFAULTS: dict[str, Any] = {
    "site_id": "s1", "type": "pageview", "visitor_key": 1, "visitor_key_source": "tracker",
    "pathname": "/", "source": "Direct / None", "device": "desktop", "browser": "Firefox",
    "os": "Linux",
}


def event(minute: float, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """One raw event ``minute`` minutes after ``T0`` (fields not given take defaults or null)."""
    ts = T0 + timedelta(minutes=minute)
    row: dict[str, Any] = {c.name: None for c in COLUMNS if not c.name.startswith("props_")}
    row.update(DEFAULTS)
    row.update(ts=ts, received_at=ts, event_id=event_id or f"e{minute:09.3f}-{fields.get('visitor_key', 1)}")
    row.update(fields)
    return row


def frame(*events: dict[str, Any]) -> pl.DataFrame:
    """A frame with the raw event columns (no properties) and the loader's dtypes."""
    schema: dict[str, Any] = {}
    for c in COLUMNS:
        if c.name.startswith("props_"):
            continue
        if c.name in ("ts", "received_at"):
            schema[c.name] = pl.Datetime("us", "UTC")
        elif c.name == "visitor_key":
            schema[c.name] = pl.UInt64
        elif c.name == "engagement_ms":
            schema[c.name] = pl.Int64
        elif c.name == "revenue_amount":
            schema[c.name] = pl.Float64
        else:
            schema[c.name] = pl.String
    return pl.DataFrame(list(events), schema=schema)
