"""The original LittleStats v1: one ``events_<domain with dots as underscores>`` table per site,
in a SQLite file or a SQL dump, with the raw IP and user agent of every event (SPEC §12).

Visitor keys are derived the way live ingest derives them (site + IP + user agent, hashed with a
salt of the UTC day, ``interop.events.SourceContext.key_from_ip``); neither the IP nor the user
agent is kept. Browser, OS and device come from the user agent with live ingest's parser, and bots
it recognises are skipped, as live ingest drops them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ingest.useragent import classify
from interop.events import ImportedEvent, SourceContext, build_event, parse_time
from interop.sources.sqlite_file import columns, open_database, tables

NAME = "littlestats-v1"
TYPES: dict[Any, str] = {
    1: "pageview", 2: "event", 3: "page_exit", 4: "engagement",
    "pageview": "pageview", "page_view": "pageview", "view": "pageview",
    "event": "event", "custom": "event", "custom_event": "event",
    "page_exit": "page_exit", "exit": "page_exit", "heartbeat": "engagement", "engagement": "engagement",
}
DEDUPLICATE = True
NEEDED = ("id", "event_type", "url", "user_agent", "timestamp", "ip")


def _pick_table(names: list[str], ctx: SourceContext) -> str:
    candidates = [n for n in names if n.startswith("events_")]
    wanted = ctx.options.get("source_site")
    if wanted:
        table = "events_" + wanted.replace(".", "_")
        if table in candidates:
            return table
        raise ctx.error(None, None, f"no table {table}; the file has: {', '.join(candidates) or 'none'}")
    if len(candidates) == 1:
        return candidates[0]
    own = "events_" + ctx.site.domain.replace(".", "_")
    if own in candidates:
        return own
    raise ctx.error(None, None, f"no events_<domain> table for {ctx.site.domain}; name the old"
                    f" site with --source-site (tables: {', '.join(candidates) or 'none'})")


def _type(value: Any) -> str | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return TYPES.get(value.lower() if isinstance(value, str) else value)


def read(path: Path, ctx: SourceContext) -> Iterator[ImportedEvent]:
    """The table's events in time order (bots skipped)."""
    db = open_database(path, ctx)
    try:
        table = _pick_table(tables(db), ctx)
        have = set(columns(db, table))
        for needed in NEEDED:
            if needed not in have:
                raise ctx.error(None, f"{table}.{needed}", "missing column")
        optional = [c for c in ("referrer", "duration", "timezone", "session_id", "user_id", "screen",
                                "language", "event_name", "event_data") if c in have]
        total = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] or 1  # noqa: S608
        cursor = db.execute(
            f'SELECT id, event_type, url, user_agent, timestamp, ip, {", ".join(optional) or "NULL"}'  # noqa: S608
            f' FROM "{table}" ORDER BY timestamp, id')
        for n, r in enumerate(cursor, 1):
            row = dict(r)
            where = f"{table} row id {row['id']}"
            ctx.fraction = n / total
            kind = _type(row["event_type"])
            if kind is None:
                raise ctx.error(where, "event_type", f"{row['event_type']!r} is not a known event type"
                                " (pageview, event, page_exit, heartbeat or 1-4)")
            try:
                ts = parse_time(str(row["timestamp"] if row["timestamp"] is not None else ""))
            except (ValueError, OverflowError, OSError):
                raise ctx.error(where, "timestamp", f"{row['timestamp']!r} is not a time") from None
            ua = str(row["user_agent"] or "")
            agent = classify(ua)
            if agent.verdict != "human":
                ctx.skip("bots")
                continue
            if not row["ip"]:
                raise ctx.error(where, "ip", "empty: a visitor key cannot be derived without it")
            props = None
            if kind == "event" and row.get("event_data"):
                try:
                    data = orjson.loads(row["event_data"])
                except orjson.JSONDecodeError:
                    raise ctx.error(where, "event_data", "not JSON") from None
                props = data if isinstance(data, dict) else None
            duration = row.get("duration")
            try:
                engagement = int(float(duration) * 1000) if duration and kind in ("page_exit", "engagement") else None
            except ValueError:
                raise ctx.error(where, "duration", f"{duration!r} is not a number of seconds") from None
            url = str(row["url"] or "/")
            yield build_event(
                ctx, row=n, ts=ts, type=kind,
                visitor_key=ctx.key_from_ip(ts, str(row["ip"]), ua), visitor_key_source="fallback",
                url=url, referrer=row.get("referrer") or None,
                name=(row.get("event_name") or "(unnamed)") if kind == "event" else None,
                device=agent.device, browser=agent.browser, browser_version=agent.browser_version,
                os=agent.os, os_version=agent.os_version, screen=row.get("screen"),
                language=row.get("language"), timezone=row.get("timezone"),
                engagement_ms=engagement, user_id=row.get("user_id"), props=props,
                dedup_key=(row.get("session_id") or (row["ip"], ua), kind, url, row["timestamp"]),
            )
    finally:
        db.close()
