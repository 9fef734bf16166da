"""Fixture generators: one small, deterministic history written in each foreign format exactly as
its tool writes it (quoting, empty fields, time zones), and the numbers it must give, counted here
from the generated hits, independently of the importer.

``history()`` makes visits of a few pages, custom events, page exits and heartbeats over three
days, bots, and (for the original LittleStats) the duplicated rows its racing flushes left.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
DAYS = 3
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15"
          " (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGES = ["/", "/pricing", "/blog/hello, world", "/docs"]
TITLES = {"/": "Home", "/pricing": 'Pricing "plans"', "/blog/hello, world": "Hello,\nworld",
          "/docs": ""}
REFERRERS = [None, "https://www.google.com/search?q=x", "https://news.ycombinator.com/item?id=1",
             "https://example.org/links"]


@dataclass
class Hit:
    visitor: str  # the old tool's visitor / session id
    ip: str
    ua: str
    ts: datetime
    kind: str  # pageview | event | exit | heartbeat
    path: str
    referrer: str | None = None
    name: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    engagement: int | None = None  # seconds
    bot: bool = False
    duplicate: bool = False  # a copy of the previous row (the original's racing flushes)


def history(visitors: int = 40, seed: int = 7, duplicates: bool = False) -> list[Hit]:
    rng = random.Random(seed)
    hits: list[Hit] = []
    for v in range(visitors):
        ua = IPHONE if v % 3 == 0 else FIREFOX
        ip = f"198.51.100.{v + 1}"
        for day in range(DAYS):
            if rng.random() < 0.4:
                continue
            t = DAY0 + timedelta(days=day, hours=rng.randrange(0, 23), minutes=rng.randrange(0, 50))
            referrer = rng.choice(REFERRERS)
            for n in range(rng.randrange(1, 4)):
                path = rng.choice(PAGES)
                hits.append(Hit(f"vis{v}", ip, ua, t, "pageview", path, referrer if n == 0 else None))
                if duplicates and rng.random() < 0.1:
                    hits.append(Hit(f"vis{v}", ip, ua, t, "pageview", path, referrer if n == 0 else None,
                                    duplicate=True))
                t += timedelta(seconds=rng.randrange(5, 60))
                hits.append(Hit(f"vis{v}", ip, ua, t, "heartbeat", path, engagement=5))
                if rng.random() < 0.3:
                    hits.append(Hit(f"vis{v}", ip, ua, t, "event", path, name="signup",
                                    props={"plan": rng.choice(["free", "pro"]), "seats": rng.randrange(1, 5),
                                           "annual": rng.random() < 0.5}))
                t += timedelta(seconds=rng.randrange(5, 60))
            hits.append(Hit(f"vis{v}", ip, ua, t, "exit", path, engagement=30))
    for b in range(5):
        hits.append(Hit(f"bot{b}", "203.0.113.9", BOT, DAY0 + timedelta(hours=b), "pageview", "/", bot=True))
    hits.sort(key=lambda h: h.ts)
    return hits


def counted(hits: list[Hit]) -> list[Hit]:
    return [h for h in hits if not h.bot and not h.duplicate]


def expected(hits: list[Hit], daily_visitors: bool = False) -> dict[str, Any]:
    """The numbers the dashboard must show for the whole range, counted from the hits."""
    kept = counted(hits)
    views = [h for h in kept if h.kind == "pageview"]
    visitor_ids = {(h.ts.date(), h.ip, h.ua) if daily_visitors else h.visitor for h in kept}
    return {
        "views": len(views),
        "visitors": len(visitor_ids),
        "pages": Counter(h.path for h in views),
        "events": Counter(h.name for h in kept if h.kind == "event"),
    }


# --- the original LittleStats v2 (D1) -----------------------------------------------------------

V2_SCHEMA = """
CREATE TABLE sites (id TEXT PRIMARY KEY, domain TEXT UNIQUE, user_id TEXT, name TEXT, plan TEXT,
  plan_status TEXT, settings TEXT, domain_key TEXT, created_at TEXT, updated_at TEXT);
CREATE TABLE sessions (id TEXT PRIMARY KEY, site_id TEXT, visitor_id TEXT, first_visit_at TEXT,
  last_visit_at TEXT, visit_count INTEGER, browser TEXT, browser_version TEXT, os TEXT,
  os_version TEXT, device TEXT, screen TEXT, country TEXT, country_name TEXT, region TEXT,
  city TEXT, language TEXT, timezone TEXT, total_pageviews INTEGER, total_events INTEGER,
  total_engagement_time INTEGER, identified_user_id TEXT, created_at TEXT, updated_at TEXT);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, site_id TEXT, session_id TEXT,
  visit_id TEXT, event_type INTEGER, url_path TEXT, url_query TEXT, url_hash TEXT,
  referrer_domain TEXT, referrer_path TEXT, page_title TEXT, event_name TEXT, event_data TEXT,
  browser TEXT, browser_version TEXT, os TEXT, os_version TEXT, device TEXT, screen TEXT,
  country TEXT, region TEXT, city TEXT, language TEXT, timezone TEXT, engagement_time INTEGER,
  created_at TEXT);
CREATE TABLE event_properties (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER,
  site_id TEXT, prop_key TEXT, data_type INTEGER, string_value TEXT, number_value REAL,
  boolean_value INTEGER, date_value TEXT);
CREATE TABLE hourly_stats (site_id TEXT, hour TEXT, pageviews INTEGER);
"""
V2_TYPES = {"pageview": 1, "event": 2, "exit": 3, "heartbeat": 4}


def write_v2(path: Path, hits: list[Hit], domain: str, dump: bool = False) -> None:
    """A D1 database (SQLite file), or with ``dump`` its ``wrangler d1 export`` SQL text."""
    db = sqlite3.connect(":memory:" if dump else path)
    db.executescript(V2_SCHEMA)
    db.execute("INSERT INTO sites VALUES ('s-1', ?, 'u1', 'Mine', 'free', 'active', '{}', 'k1', ?, ?)",
               (domain, "2024-01-01 00:00:00", "2024-01-01 00:00:00"))
    db.execute("INSERT INTO sites VALUES ('s-2', 'other.example', 'u1', 'Other', 'free', 'active',"
               " '{}', 'k2', '2024-01-01 00:00:00', '2024-01-01 00:00:00')")
    seen: set[str] = set()
    for h in hits:
        if h.visitor not in seen:
            seen.add(h.visitor)
            db.execute("INSERT INTO sessions (id, site_id, visitor_id, browser, os, device, country)"
                       " VALUES (?, 's-1', ?, 'Firefox', 'Linux', 'desktop', 'DE')",
                       (f"sess-{h.visitor}", f"v-{h.visitor}"))
        if h.bot:
            continue  # the original dropped nothing, but bots have no session worth keeping here
        ref_domain, ref_path = None, None
        if h.referrer:
            rest = h.referrer.split("://", 1)[1]
            ref_domain, _, ref_path = rest.partition("/")
            ref_path = "/" + ref_path
        cur = db.execute(
            "INSERT INTO events (site_id, session_id, visit_id, event_type, url_path, url_query,"
            " referrer_domain, referrer_path, page_title, event_name, event_data, browser, os,"
            " device, screen, country, language, timezone, engagement_time, created_at)"
            " VALUES ('s-1', ?, 'visit', ?, ?, NULL, ?, ?, ?, ?, ?, 'Firefox', 'Linux', ?,"
            " '1920x1080', 'DE', 'en-US', 'Europe/Berlin', ?, ?)",
            (f"sess-{h.visitor}", V2_TYPES[h.kind], h.path, ref_domain, ref_path,
             TITLES.get(h.path) or None, h.name, None, "unknown" if h.ua == IPHONE else "desktop",
             h.engagement if h.kind in ("exit", "heartbeat") else None,
             h.ts.strftime("%Y-%m-%d %H:%M:%S")))
        for key, value in h.props.items():
            kind = 3 if isinstance(value, bool) else 2 if isinstance(value, int) else 1
            db.execute("INSERT INTO event_properties (event_id, site_id, prop_key, data_type,"
                       " string_value, number_value, boolean_value) VALUES (?, 's-1', ?, ?, ?, ?, ?)",
                       (cur.lastrowid, key, kind, value if kind == 1 else None,
                        value if kind == 2 else None, int(value) if kind == 3 else None))
    # another site's event, never imported into ours
    db.execute("INSERT INTO events (site_id, session_id, event_type, url_path, created_at)"
               " VALUES ('s-2', 'x', 1, '/elsewhere', '2025-03-01 12:00:00')")
    db.execute("INSERT INTO hourly_stats VALUES ('s-1', '2025-03-01 00', 999999)")
    db.commit()
    if dump:
        lines = ["PRAGMA defer_foreign_keys=TRUE;"]
        lines += [s for s in db.iterdump() if s not in ("BEGIN TRANSACTION;", "COMMIT;")]
        path.write_text("\n".join(lines) + "\n")
    db.close()


# --- the original LittleStats v1 ------------------------------------------------------------------

V1_TYPES = {"pageview": "pageview", "event": "event", "exit": "page_exit", "heartbeat": "heartbeat"}


def write_v1(path: Path, hits: list[Hit], domain: str) -> None:
    table = "events_" + domain.replace(".", "_")
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, domain_id TEXT, event_type TEXT,"
               " url TEXT, referrer TEXT, user_agent TEXT, timestamp TEXT, duration INTEGER,"
               " ip TEXT, timezone TEXT, session_id TEXT, user_id TEXT, screen TEXT, language TEXT,"
               " event_name TEXT, event_data TEXT)")
    db.execute("CREATE TABLE events_other_example (id INTEGER PRIMARY KEY, url TEXT)")
    import json

    for h in hits:
        db.execute(f"INSERT INTO {table} (domain_id, event_type, url, referrer, user_agent, timestamp,"  # noqa: S608
                   " duration, ip, timezone, session_id, screen, language, event_name, event_data)"
                   " VALUES ('d1', ?, ?, ?, ?, ?, ?, ?, 'Europe/Berlin', ?, '1920x1080', 'en', ?, ?)",
                   (V1_TYPES[h.kind], f"https://{domain}{h.path}", h.referrer or "", h.ua,
                    h.ts.isoformat().replace("+00:00", "Z"), h.engagement, h.ip, h.visitor, h.name,
                    json.dumps(h.props) if h.props else None))
    db.commit()
    db.close()


# --- GoatCounter ----------------------------------------------------------------------------------

GOAT_HEADER = ["2", "Path", "Title", "Event", "User-Agent", "Browser", "System", "Session", "Bot",
               "Referrer", "Referrer scheme", "Screen size", "Location", "FirstVisit", "Date"]


def goat_rows(hits: list[Hit]) -> list[list[str]]:
    rows = []
    for i, h in enumerate(hits):
        if h.kind not in ("pageview", "event"):
            continue  # GoatCounter has no exits or heartbeats
        when = h.ts.isoformat().replace("+00:00", "Z")
        if i % 4 == 0:  # some times with an offset: the same instant in UTC+2
            when = h.ts.astimezone(timezone(timedelta(hours=2))).isoformat()
        referrer, scheme = "", ""
        if h.referrer and "ycombinator" in h.referrer:
            referrer, scheme = "Hacker News", "g"
        elif h.referrer:
            referrer, scheme = h.referrer, "h"
        system = "iOS 17.1" if h.ua == IPHONE else "Linux"
        rows.append([h.name if h.kind == "event" else h.path,
                     "" if h.kind == "event" else TITLES.get(h.path, ""),
                     "true" if h.kind == "event" else "false", "",
                     "Safari 17.1" if h.ua == IPHONE else "Firefox 120", system, f"s-{h.visitor}",
                     "3" if h.bot else "0", referrer, scheme, "1920,1080,1", "DE-BE", "false", when])
    return rows


def write_goatcounter(path: Path, hits: list[Hit]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # Go's encoding/csv: quotes only when needed
    writer.writerow(GOAT_HEADER)
    writer.writerows(goat_rows(hits))
    path.write_text(buf.getvalue())


# --- Umami ----------------------------------------------------------------------------------------

UMAMI_HEADER = ["event_id", "website_id", "session_id", "visit_id", "created_at", "url_path",
                "url_query", "referrer_path", "referrer_query", "referrer_domain", "page_title",
                "event_type", "event_name", "hostname", "tag"]


def write_umami(path: Path, hits: list[Hit], domain: str) -> None:
    """``\\copy website_event TO … CSV HEADER`` from PostgreSQL: timestamptz as ``… +00``, empty
    fields for nulls."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(UMAMI_HEADER)
    for i, h in enumerate(hits):
        if h.kind not in ("pageview", "event") or h.bot:  # Umami never stores bots
            continue
        stamp = h.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"
        if i % 5 == 0:
            stamp = h.ts.astimezone(timezone(timedelta(hours=-5))).strftime("%Y-%m-%d %H:%M:%S-05")
        ref_domain = ref_path = ref_query = ""
        if h.referrer:
            rest = h.referrer.split("://", 1)[1]
            host, _, tail = rest.partition("/")
            ref_domain = host
            ref_path, _, ref_query = ("/" + tail).partition("?")
        writer.writerow([f"e{i}", "w-1", f"s-{h.visitor}", "vv", stamp, h.path, "", ref_path,
                         ref_query, ref_domain, TITLES.get(h.path, ""),
                         "2" if h.kind == "event" else "1", h.name or "", domain, ""])
    path.write_text(buf.getvalue())
