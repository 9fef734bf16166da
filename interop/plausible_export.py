# ruff: noqa: S608 -- SQL is composed from our own column expressions; every value is a $param.
"""Export a site in Plausible CE's CSV export layout (``interop.plausible_layout``).

One zip, one CSV file per ``imported_*`` table, one row per site-local day and value, exactly the
columns Plausible CE writes, computed from the fact tables with the metric definitions every answer
uses (SPEC §5), so the daily numbers equal the query API's: ``visitors`` are the day's distinct
visitors, ``visits`` / ``bounces`` / ``visit_duration`` (total seconds) count the visits started
that day, ``pageviews`` the day's pageviews. Unknown values are empty strings, like Plausible's.
Through the warehouse's query path (``query_sync``), a month at a time, written as it comes:
memory stays bounded by one month of one table.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from interop.plausible_layout import EXPORT_COLUMNS, file_name

Progress = Callable[[int, int], None]
CHUNK_DAYS = 31
#: Plausible's custom events whose link / path property it exports.
LINK_EVENTS = ("Outbound Link: Click", "Cloaked Link: Click", "File Download")
PATH_EVENTS = ("404",)


class Warehouse(Protocol):
    def query_sync(self, sql: str, params: Any = None) -> Any: ...


def _day(col: str) -> str:
    return f"CAST(timezone($tz, {col}) AS DATE)"


def _blank(col: str) -> str:
    return f"coalesce({col}, '')"


_SESSION_METRICS = {
    "visitors": "count(DISTINCT visitor_key)",
    "visits": "count(*)",
    "entrances": "count(*)",
    "exits": "count(*)",
    "visit_duration": "CAST(round(coalesce(sum(duration_ms), 0) / 1000) AS BIGINT)",
    "bounces": "count(*) FILTER (WHERE is_bounce)",
    "pageviews": "CAST(coalesce(sum(pageviews), 0) AS BIGINT)",
}
# Group keys of the session-based files: Plausible column → expression over ``sessions``.
_SESSION_KEYS: dict[str, dict[str, str]] = {
    "imported_sources": {
        "source": f"CASE WHEN source = 'Direct / None' THEN '' ELSE {_blank('source')} END",
        # host and path, as Plausible keeps a referrer: no scheme, query, fragment or final slash
        "referrer": "coalesce(rtrim(regexp_replace(regexp_replace(referrer, '^[A-Za-z][A-Za-z0-9+.-]*://', ''),"
                    " '[?#].*$', ''), '/'), '')",
        **{f"utm_{t}": _blank(f"utm_{t}") for t in ("source", "medium", "campaign", "content", "term")},
    },
    "imported_entry_pages": {"entry_page": "entry_page"},
    "imported_exit_pages": {"exit_page": "exit_page"},
    "imported_locations": {"country": "country", "region": "coalesce(region, '')",
                           "city": "coalesce(TRY_CAST(city AS BIGINT), 0)"},
    "imported_devices": {"device": "coalesce(upper(device[1]) || device[2:], '')"},
    "imported_browsers": {"browser": _blank("browser"), "browser_version": _blank("browser_version")},
    "imported_operating_systems": {"operating_system": _blank("os"), "operating_system_version": _blank("os_version")},
}
_WHERE = "site_id = $site AND {ts} >= $lo AND {ts} < $hi"


def _sql(table: str) -> str:
    """The query for one file over ``[$lo, $hi)``; columns in the file's order."""
    cols = EXPORT_COLUMNS[table]
    if table == "imported_visitors":
        return (
            f"WITH e AS (SELECT {_day('ts')} AS date, count(DISTINCT visitor_key) AS visitors,"
            f" count(*) FILTER (WHERE type = 'pageview') AS pageviews FROM events"
            f" WHERE {_WHERE.format(ts='ts')} GROUP BY 1),"
            f" s AS (SELECT {_day('started_at')} AS date, count(*) FILTER (WHERE is_bounce) AS bounces,"
            f" count(*) AS visits, coalesce(sum(duration_ms), 0) AS duration_ms FROM sessions"
            f" WHERE {_WHERE.format(ts='started_at')} GROUP BY 1)"
            " SELECT coalesce(e.date, s.date) AS date, coalesce(e.visitors, 0), coalesce(e.pageviews, 0),"
            " coalesce(s.bounces, 0), coalesce(s.visits, 0),"
            " CAST(round(coalesce(s.duration_ms, 0) / 1000) AS BIGINT)"
            " FROM e FULL OUTER JOIN s ON e.date = s.date ORDER BY 1"
        )
    if table == "imported_pages":
        return (
            f"SELECT {_day('ts')} AS date, min(coalesce(hostname, '')) AS hostname, pathname AS page,"
            " count(DISTINCT session_id) AS visits, count(DISTINCT visitor_key) AS visitors,"
            " count(*) AS pageviews, 0 AS total_scroll_depth, 0 AS total_scroll_depth_visits"
            f" FROM events WHERE {_WHERE.format(ts='ts')} AND type = 'pageview'"
            " GROUP BY date, page ORDER BY date, page"
        )
    if table == "imported_custom_events":
        links = ", ".join(f"'{n}'" for n in LINK_EVENTS)
        paths = ", ".join(f"'{n}'" for n in PATH_EVENTS)
        return (
            f"SELECT {_day('e.ts')} AS date, e.name,"
            f" CASE WHEN e.name IN ({links}) THEN coalesce(u.value, '') ELSE '' END AS link_url,"
            f" CASE WHEN e.name IN ({paths}) THEN coalesce(pth.value, '') ELSE '' END AS path,"
            " count(DISTINCT e.visitor_key) AS visitors, count(*) AS events FROM events e"
            " LEFT JOIN event_props u ON u.site_id = e.site_id AND u.event_id = e.event_id AND u.key = 'url'"
            " LEFT JOIN event_props pth ON pth.site_id = e.site_id AND pth.event_id = e.event_id"
            " AND pth.key = 'path'"
            f" WHERE e.{_WHERE.format(ts='e.ts')} AND e.type = 'event' AND e.name IS NOT NULL"
            " GROUP BY ALL ORDER BY ALL"
        )
    keys = _SESSION_KEYS[table]
    exprs = [_day("started_at") if c == "date" else keys.get(c) or _SESSION_METRICS[c] for c in cols]
    where = _WHERE.format(ts="started_at") + (" AND country IS NOT NULL" if table == "imported_locations" else "")
    return (f"SELECT {', '.join(f'{e} AS {c}' for e, c in zip(exprs, cols, strict=True))}"
            f" FROM sessions WHERE {where} GROUP BY ALL ORDER BY ALL")


@dataclass
class ExportResult:
    """What an export wrote."""

    first: date
    last: date
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"wrote {sum(self.rows.values()):,} daily rows in {len(self.rows)} files"
                f" ({self.first} .. {self.last})")


def data_range(warehouse: Warehouse, site_id: str, timezone: str) -> tuple[date, date] | None:
    """The first and last site-local date with events (``None``: no data)."""
    res = warehouse.query_sync(
        f"SELECT {_day('min(ts)')}, {_day('max(ts)')} FROM events WHERE site_id = $site",
        {"site": site_id, "tz": timezone})
    first, last = res.rows[0] if res.rows else (None, None)
    return (first, last) if first is not None and last is not None else None


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _csv_writer(stream: IO[str]) -> Any:
    # ClickHouse CSV: strings and dates quoted, numbers bare, LF line ends
    return csv.writer(stream, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")


def export_zip(warehouse: Warehouse, site_id: str, timezone: str, start: date | None, end: date | None,
               out: str | Path | IO[bytes], progress: Progress | None = None) -> ExportResult:
    """Write the site's days ``start``..``end`` (site-local, inclusive; ``None``: from its first /
    to its last day with data) as a Plausible CE CSV export zip to ``out`` (a path or a binary
    stream). ``progress(done, total)`` counts (file, month) steps."""
    found = data_range(warehouse, site_id, timezone)
    if start is None and end is None and found is None:
        raise ValueError("the site has no data yet: nothing to export")
    start = start or (found[0] if found else end)
    end = end or (found[1] if found else start)
    assert start is not None and end is not None
    if end < start:
        raise ValueError("end is before start")
    zone = ZoneInfo(timezone)
    # only the days with data are asked for (a wide range over an empty site costs nothing)
    chunks = []
    d, last_day = (max(start, found[0]), min(end, found[1])) if found else (end + timedelta(days=1), end)
    while d <= last_day:
        chunks.append((d, min(d + timedelta(days=CHUNK_DAYS - 1), last_day)))
        d = chunks[-1][1] + timedelta(days=1)
    result = ExportResult(start, end)
    steps, done = len(EXPORT_COLUMNS) * max(len(chunks), 1), 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for table, columns in EXPORT_COLUMNS.items():
            sql = _sql(table)
            count = 0
            with archive.open(file_name(table, start, end), "w") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                writer = _csv_writer(text)
                writer.writerow(columns)
                for first, last in chunks:
                    res = warehouse.query_sync(sql, {
                        "site": site_id, "tz": timezone, "lo": _midnight(first, zone),
                        "hi": _midnight(last + timedelta(days=1), zone)})
                    for row in res.rows:
                        writer.writerow([v.isoformat() if isinstance(v, date) else v for v in row])
                    count += len(res.rows)
                    done += 1
                    if progress:
                        progress(done, steps)
                text.flush()
                text.detach()
            result.rows[table] = count
    return result
