"""The original LittleStats v2 (Cloudflare D1): a SQLite file or a ``wrangler d1 export`` dump.

Tables read (SPEC §12): ``sites`` (which site), ``sessions`` (the visitor id of each event's
session), ``events`` and ``event_properties``. ``event_type`` 1 → ``pageview``, 2 → ``event``,
3 (page exit) → ``page_exit`` with its ``engagement_time``, 4 (heartbeat) → ``engagement``:
never a pageview. The derived tables (``hourly_stats``, ``daily_stats``, ...) are never read.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from interop.events import ImportedEvent, SourceContext, build_event, parse_time
from interop.sources.sqlite_file import columns, open_database, tables

NAME = "littlestats-v2"
TYPES = {1: "pageview", 2: "event", 3: "page_exit", 4: "engagement"}
DEVICES = {"desktop", "mobile", "tablet"}
#: the original's duplicated rows from racing flushes are dropped (SPEC §12)
DEDUPLICATE = True


def _pick_site(db: sqlite3.Connection, ctx: SourceContext) -> str:
    wanted = ctx.options.get("source_site")
    rows = db.execute("SELECT id, domain, domain_key FROM sites").fetchall()
    if wanted:
        for r in rows:
            if wanted in (r["id"], r["domain"], r["domain_key"]):
                return str(r["id"])
        raise ctx.error(None, "sites.domain", f"no site {wanted!r} in the file; it has: "
                        + ", ".join(r["domain"] for r in rows))
    if len(rows) == 1:
        return str(rows[0]["id"])
    for r in rows:
        if r["domain"] == ctx.site.domain:
            return str(r["id"])
    raise ctx.error(None, "sites.domain", f"the file holds {len(rows)} sites and none is"
                    f" {ctx.site.domain}: name one with --source-site ("
                    + ", ".join(r["domain"] for r in rows) + ")")


def _properties(db: sqlite3.Connection, site_id: str, ctx: SourceContext) -> dict[Any, dict[str, Any]]:
    props: dict[Any, dict[str, Any]] = defaultdict(dict)
    if "event_properties" not in tables(db):
        return props
    for r in db.execute("SELECT id, event_id, prop_key, data_type, string_value, number_value,"
                        " boolean_value, date_value FROM event_properties WHERE site_id = ?", (site_id,)):
        kind = r["data_type"]
        if kind == 2:
            value: Any = r["number_value"]
        elif kind == 3:
            value = bool(r["boolean_value"]) if r["boolean_value"] is not None else None
        elif kind == 4:
            value = r["date_value"]
        elif kind == 1:
            value = r["string_value"]
        else:
            raise ctx.error(f"event_properties row id {r['id']}", "data_type",
                            f"unknown data type {kind!r} (1 string, 2 number, 3 boolean, 4 date)")
        if value is not None and r["prop_key"]:
            props[r["event_id"]][r["prop_key"]] = value
    return props


def read(path: Path, ctx: SourceContext) -> Iterator[ImportedEvent]:
    """The events of the file's site, in time order."""
    db = open_database(path, ctx)
    try:
        for table in ("sites", "events"):
            if table not in tables(db):
                raise ctx.error(None, None, f"no `{table}` table: not a LittleStats v2 database"
                                " (expected sites, sessions, events, event_properties)")
        have = set(columns(db, "events"))
        for needed in ("id", "site_id", "session_id", "event_type", "url_path", "created_at"):
            if needed not in have:
                raise ctx.error(None, f"events.{needed}", "missing column")
        site_id = _pick_site(db, ctx)
        props = _properties(db, site_id, ctx)
        has_sessions = "sessions" in tables(db)
        visitor = "s.visitor_id" if has_sessions else "NULL"
        user = ("s.identified_user_id" if has_sessions
                and "identified_user_id" in columns(db, "sessions") else "NULL")
        join = "LEFT JOIN sessions s ON s.id = e.session_id" if has_sessions else ""
        total = db.execute("SELECT count(*) FROM events WHERE site_id = ?", (site_id,)).fetchone()[0] or 1
        cols = [c for c in ("url_query", "url_hash", "referrer_domain", "referrer_path", "page_title",
                            "event_name", "event_data", "browser", "browser_version", "os",
                            "os_version", "device", "screen", "country", "language", "timezone",
                            "engagement_time") if c in have]
        select = ", ".join(f"e.{c}" for c in cols)
        cursor = db.execute(
            f"SELECT e.id, e.session_id, e.event_type, e.url_path, e.created_at, {select},"  # noqa: S608
            f" {visitor} AS visitor_id, {user} AS user_id FROM events e {join} WHERE e.site_id = ?"
            " ORDER BY e.created_at, e.id", (site_id,))
        for n, r in enumerate(cursor, 1):
            row = dict(r)
            where = f"events row id {row['id']}"
            kind = row["event_type"]
            try:
                kind = int(kind)
            except (TypeError, ValueError):
                raise ctx.error(where, "event_type", f"{kind!r} is not 1, 2, 3 or 4") from None
            if kind not in TYPES:
                raise ctx.error(where, "event_type", f"{kind!r} is not 1, 2, 3 or 4")
            try:
                ts = parse_time(str(row["created_at"] or ""))
            except ValueError:
                raise ctx.error(where, "created_at", f"{row['created_at']!r} is not a time"
                                " (YYYY-MM-DD HH:MM:SS, UTC)") from None
            event_props = props.get(row["id"])
            if not event_props and row.get("event_data") and kind == 2:
                try:
                    data = orjson.loads(row["event_data"])
                except orjson.JSONDecodeError:
                    raise ctx.error(where, "event_data", "not JSON") from None
                event_props = data if isinstance(data, dict) else None
            ref = None
            if row.get("referrer_domain"):
                ref = f"https://{row['referrer_domain']}{row.get('referrer_path') or ''}"
            engagement = row.get("engagement_time")
            foreign = row.get("visitor_id") or row["session_id"]
            page = str(row["url_path"] or "/")
            if row.get("url_hash") and str(row["url_hash"]).lstrip("#").startswith("/"):
                page = page.rstrip("/") + "/#" + str(row["url_hash"]).lstrip("#")
            ctx.fraction = n / total
            event_type = TYPES[kind]
            yield build_event(
                ctx, row=n, ts=ts, type=event_type,
                visitor_key=ctx.key_from_id(NAME, str(foreign)), visitor_key_source="tracker",
                pathname=page, query=row.get("url_query") or None, title=row.get("page_title"),
                referrer=ref, name=row.get("event_name") or "(unnamed)" if kind == 2 else None,
                country=row.get("country"),
                device=row.get("device") if row.get("device") in DEVICES else None,
                browser=row.get("browser"), browser_version=row.get("browser_version"),
                os=row.get("os"), os_version=row.get("os_version"), screen=row.get("screen"),
                language=row.get("language"), timezone=row.get("timezone"),
                engagement_ms=int(float(engagement) * 1000) if engagement and kind in (3, 4) else None,
                props=event_props if kind == 2 else None, user_id=row.get("user_id"),
                dedup_key=(row["session_id"], kind, page, row["created_at"]),
            )
    finally:
        db.close()
