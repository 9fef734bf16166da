"""Plausible CE's CSV export layout: its files, their columns, and how our tables map to them.

Plausible CE exports a site as a zip of CSV files, one per ``imported_*`` table, named
``imported_<table>_<YYYYMMDD>_<YYYYMMDD>.csv`` (the first and last site-local date), and its CSV
importer reads the same files back (``Plausible.Exports.export_queries`` and
``Plausible.Imported.CSVImporter`` in plausible/analytics). The files are ClickHouse
``CSVWithNames``: a header row of column names, strings and dates in double quotes (a quote inside
doubled), numbers bare, LF line ends, ``\\N`` for a null. The importer matches columns by header
name, so column order does not matter and a column missing from an older export takes its default
(0 or ``''``); rows outside the file name's date range are not imported.

``EXPORT_COLUMNS`` is what the current Plausible CE writes (and what we write), in its order;
``REQUIRED`` the columns without which a file cannot mean anything; everything else is optional.
"""

from __future__ import annotations

import re
from datetime import date

#: kind of every column: ``date``, ``str`` or ``int`` (a count or sum, ≥ 0)
KINDS: dict[str, str] = {"date": "date", "city": "int"}
_STRINGS = ("source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term",
            "hostname", "page", "entry_page", "exit_page", "name", "link_url", "path", "country",
            "region", "device", "browser", "browser_version", "operating_system",
            "operating_system_version")
KINDS.update(dict.fromkeys(_STRINGS, "str"))

_SESSION = ("visitors", "visits", "visit_duration", "bounces", "pageviews")

#: file (table) → columns, in the order Plausible CE's export writes them.
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "imported_visitors": ("date", "visitors", "pageviews", "bounces", "visits", "visit_duration"),
    "imported_sources": ("date", "source", "referrer", "utm_source", "utm_medium", "utm_campaign",
                         "utm_content", "utm_term", "pageviews", "visitors", "visits", "visit_duration",
                         "bounces"),
    "imported_pages": ("date", "hostname", "page", "visits", "visitors", "pageviews",
                       "total_scroll_depth", "total_scroll_depth_visits"),
    "imported_entry_pages": ("date", "entry_page", "visitors", "entrances", "visit_duration", "bounces",
                             "pageviews"),
    "imported_exit_pages": ("date", "exit_page", "visitors", "visit_duration", "exits", "bounces",
                            "pageviews"),
    "imported_custom_events": ("date", "name", "link_url", "path", "visitors", "events"),
    "imported_locations": ("date", "country", "region", "city", *_SESSION),
    "imported_devices": ("date", "device", *_SESSION),
    "imported_browsers": ("date", "browser", "browser_version", *_SESSION),
    "imported_operating_systems": ("date", "operating_system", "operating_system_version", *_SESSION),
}

#: Columns a file must have to be imported.
REQUIRED: dict[str, tuple[str, ...]] = {
    "imported_visitors": ("date", "visitors", "pageviews", "bounces", "visits", "visit_duration"),
    "imported_sources": ("date", "source", "visitors", "visits", "visit_duration", "bounces"),
    "imported_pages": ("date", "page", "visitors", "pageviews"),
    "imported_entry_pages": ("date", "entry_page", "visitors", "entrances", "visit_duration", "bounces"),
    "imported_exit_pages": ("date", "exit_page", "visitors", "exits"),
    "imported_custom_events": ("date", "name", "visitors", "events"),
    "imported_locations": ("date", "country", "visitors", "visits", "visit_duration", "bounces"),
    "imported_devices": ("date", "device", "visitors", "visits", "visit_duration", "bounces"),
    "imported_browsers": ("date", "browser", "visitors", "visits", "visit_duration", "bounces"),
    "imported_operating_systems": ("date", "operating_system", "visitors", "visits", "visit_duration",
                                   "bounces"),
}

#: Columns older Plausible versions wrote that we read into a current one.
RENAMED = {"imported_pages": {"time_on_page": "total_time_on_page"}}

_FILENAME = re.compile(r"^(?:imported_)?(?P<table>[a-z_]+?)_(?P<start>\d{8})_(?P<end>\d{8})\.csv$")


def archive_filename(domain: str, created_on: date) -> str:
    """The zip's name as Plausible CE names its exports: ``example_com_20240131.zip``."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", domain.replace(".", "_")) or "site"
    return f"{safe}_{created_on:%Y%m%d}.zip"


def file_name(table: str, first: date, last: date) -> str:
    """``imported_pages_20240101_20240131.csv``."""
    return f"{table}_{first:%Y%m%d}_{last:%Y%m%d}.csv"


def parse_file_name(name: str) -> tuple[str, date, date]:
    """``(table, first date, last date)`` of an export file name (with or without the
    ``imported_`` prefix, as Plausible's importer accepts); ``ValueError`` saying what is expected."""
    m = _FILENAME.match(name.rsplit("/", 1)[-1])
    table = f"imported_{m.group('table')}" if m else ""
    if not m or table not in EXPORT_COLUMNS:
        known = ", ".join(f"{t}_YYYYMMDD_YYYYMMDD.csv" for t in EXPORT_COLUMNS)
        raise ValueError(f"{name}: not a file of Plausible's CSV export; expected one of {known}")
    try:
        first = date(int(m.group("start")[:4]), int(m.group("start")[4:6]), int(m.group("start")[6:]))
        last = date(int(m.group("end")[:4]), int(m.group("end")[4:6]), int(m.group("end")[6:]))
    except ValueError:
        raise ValueError(f"{name}: the dates in the file name are not valid YYYYMMDD dates") from None
    if last < first:
        raise ValueError(f"{name}: the file name's last date is before its first")
    return table, first, last


def kind(column: str) -> str:
    """``date``, ``str`` or ``int``."""
    return KINDS.get(column, "int")
