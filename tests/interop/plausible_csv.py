"""Plausible CE CSV exports written the way Plausible writes them, with the truth kept beside them.

Plausible exports through ClickHouse's ``CSVWithNames``: a quoted header, strings and dates in
double quotes (a quote inside doubled), numbers bare, ``\\N`` for a null, LF line ends, one file per
``imported_*`` table named with the first and last date. Older exports have fewer columns (pages
with ``scroll_depth`` / ``pageleave_visitors``, no ``pageviews`` in session tables): the generator
writes both layouts. ``rows`` keeps every row as written, so tests sum them independently.
"""

from __future__ import annotations

import random
import zipfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

NEW_PAGES = ("date", "hostname", "page", "visits", "visitors", "pageviews", "total_scroll_depth",
             "total_scroll_depth_visits")
OLD_PAGES = ("date", "hostname", "page", "visits", "visitors", "pageviews", "scroll_depth", "pageleave_visitors")

PAGES = ["/", "/blog/a, b and c", '/say "hi"', "/docs", "/pricing"]
SOURCES = [("", ""), ("Google", "google.com"), ("Hacker News", "news.ycombinator.com/item"),
           ("Newsletter", "")]
DEVICES = ["Desktop", "Laptop", "Mobile", "Tablet", ""]
BROWSERS = [("Firefox", "121.0"), ("Chrome", "120.0"), ("Safari", "")]
COUNTRIES = ["DE", "US", "FR"]


def quote(value: Any) -> str:
    """One field as ClickHouse's CSV output writes it."""
    if value is None:
        return "\\N"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


@dataclass
class Export:
    """A generated export: file name → (columns, rows)."""

    files: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]] = field(default_factory=dict)

    def rows(self, table: str) -> list[dict[str, Any]]:
        name = next(n for n in self.files if n.startswith(table + "_") or n.startswith(table.removeprefix("imported_") + "_"))
        cols, rows = self.files[name]
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def write_zip(self, path: Path) -> Path:
        with zipfile.ZipFile(path, "w") as z:
            for name, (cols, rows) in self.files.items():
                text = ",".join(quote(c) for c in cols) + "\n"
                text += "".join(",".join(quote(v) for v in row) + "\n" for row in rows)
                z.writestr(name, text)
        return path


def _session_counts(rng: random.Random, with_pageviews: bool) -> tuple[int, ...]:
    visits = rng.randint(1, 40)
    visitors = rng.randint(1, visits)
    bounces = rng.randint(0, visits)
    duration = rng.randint(0, 600) * visits
    return (visitors, visits, duration, bounces, *((visits + rng.randint(0, 30),) if with_pageviews else ()))


def generate(first: date, days: int, seed: int = 0, old_layout: bool = False) -> Export:
    """An export of ``days`` days from ``first``, with every quirk Plausible's files have."""
    rng = random.Random(seed)
    last = first + timedelta(days=days - 1)
    suffix = f"_{first:%Y%m%d}_{last:%Y%m%d}.csv"
    dates = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    out = Export()
    visitors = []
    for d in dates:
        visits = rng.randint(10, 200)
        visitors.append((d, rng.randint(5, visits), visits + rng.randint(0, 300), rng.randint(0, visits),
                         visits, rng.randint(0, 900) * visits))
    # a row dated after the file name's range: Plausible's importer leaves it out
    outside = (last + timedelta(days=3)).isoformat()
    visitors.append((outside, 999, 999, 0, 999, 999))
    out.files["imported_visitors" + suffix] = (
        ("date", "visitors", "pageviews", "bounces", "visits", "visit_duration"), visitors)

    pages_cols = OLD_PAGES if old_layout else NEW_PAGES
    pages = []
    for d in dates:
        for page in PAGES:
            views = rng.randint(1, 50)
            scroll: int | None = rng.randint(0, 100) * 3 if old_layout and rng.random() < 0.5 else 0
            if old_layout and scroll == 0:
                scroll = None  # Nullable(UInt64): \N
            pages.append((d, "example.com", page, rng.randint(1, views), rng.randint(1, views), views,
                          scroll, rng.randint(0, 3)))
    # without the prefix: Plausible's importer accepts "pages_YYYYMMDD_YYYYMMDD.csv" too
    out.files["pages" + suffix] = (pages_cols, pages)

    session_tail = ("visitors", "visits", "visit_duration", "bounces", *(() if old_layout else ("pageviews",)))
    devices = [(d, dev, *_session_counts(rng, not old_layout)) for d in dates for dev in DEVICES]
    out.files["imported_devices" + suffix] = (("date", "device", *session_tail), devices)
    browsers = [(d, b, v, *_session_counts(rng, not old_layout)) for d in dates for b, v in BROWSERS]
    out.files["imported_browsers" + suffix] = (("date", "browser", "browser_version", *session_tail), browsers)
    locations = [(d, c, "", 0, *_session_counts(rng, not old_layout)) for d in dates for c in COUNTRIES]
    out.files["imported_locations" + suffix] = (("date", "country", "region", "city", *session_tail), locations)
    sources = []
    for d in dates:
        for source, referrer in SOURCES:
            utm = ("newsletter", "email", "spring, 2024", "", "") if source == "Newsletter" else ("", "", "", "", "")
            visitors_, visits_, duration_, bounces_, *pv = _session_counts(rng, True)
            sources.append((d, source, referrer, *utm, pv[0], visitors_, visits_, duration_, bounces_))
    out.files["imported_sources" + suffix] = (
        ("date", "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term",
         "pageviews", "visitors", "visits", "visit_duration", "bounces"), sources)
    events = [(d, name, url, "", rng.randint(1, 9), rng.randint(9, 30)) for d in dates
              for name, url in (("Signup", ""), ("Outbound Link: Click", "https://other.example/x"))]
    out.files["imported_custom_events" + suffix] = (
        ("date", "name", "link_url", "path", "visitors", "events"), events)
    return out
