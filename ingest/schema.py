"""The raw event schema: declared once, used by the WAL sealer, the loader, tests and docs.

Raw events are written to ``raw/site_id=<id>/date=YYYY-MM-DD/hour=HH/part-<segment>.parquet``
(zstd). ``site_id`` is both a partition key and a column, so a single file stands on its own;
``date`` and ``hour`` are the UTC date and hour of ``ts``.

The schema only ever grows at the end, by nullable columns: a file written by an earlier release
lacks the newer columns, and every reader conforms it (``conform`` for pyarrow tables, the
loader's ``read_raw`` / ``scan_raw`` for polars), which reads the missing columns as nulls.
Analysts reading the files with DuckDB pass ``union_by_name = true`` for the same effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

EVENT_TYPES = ("pageview", "event", "identify", "page_exit", "engagement")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str


_STR = pa.string()

COLUMNS: tuple[Column, ...] = (
    Column("event_id", _STR, False, "Unique id of the event (UUIDv7, time ordered; `<import id>-<row>` for imported history, docs/import.md); the load key."),
    Column("site_id", _STR, False, "Internal id of the site (never the public domain key)."),
    Column("ts", pa.timestamp("ms", tz="UTC"), False, "Event time: the client's `ts` when accepted, else `received_at`."),
    Column("received_at", pa.timestamp("ms", tz="UTC"), False, "When the server accepted the event."),
    Column("type", _STR, False, "pageview | event | identify | page_exit | engagement."),
    Column("name", _STR, True, "Custom event name (`event`); null otherwise."),
    Column("visitor_key", pa.uint64(), False, "64-bit keyed hash identifying the visitor (SPEC §4); never reversible to an IP."),
    Column("visitor_key_source", _STR, False, "`tracker` (hash of the tracker's visitorId) or `fallback` (daily-salted site+IP+UA)."),
    Column("hostname", _STR, True, "Host name of the page URL, lower case."),
    Column("pathname", _STR, False, "Path of the page (with the hash when the tracker uses hash routing)."),
    Column("query", _STR, True, "Query string of the page URL without the leading `?`."),
    Column("title", _STR, True, "Document title."),
    Column("referrer", _STR, True, "Full referrer URL; null for direct visits and own-domain referrers."),
    Column("referrer_domain", _STR, True, "Host of the referrer without `www.`; null when not a source."),
    Column("source", _STR, False, "Traffic source: `utm_source` if set, else a grouped referrer (Google, Facebook, ...) or its domain, else `Direct / None`."),
    Column("utm_source", _STR, True, "`utm_source` from the page URL."),
    Column("utm_medium", _STR, True, "`utm_medium` from the page URL."),
    Column("utm_campaign", _STR, True, "`utm_campaign` from the page URL."),
    Column("utm_term", _STR, True, "`utm_term` from the page URL."),
    Column("utm_content", _STR, True, "`utm_content` from the page URL."),
    Column("country", _STR, True, "ISO 3166-1 alpha-2 country code of the client IP; null when unknown."),
    Column("device", _STR, False, "desktop | mobile | tablet."),
    Column("browser", _STR, False, "Browser family (Chrome, Edge, Opera, Samsung Internet, Mobile Safari, ...)."),
    Column("browser_version", _STR, True, "Browser major.minor version."),
    Column("os", _STR, False, "Operating system family (Windows, Mac OS X, iOS, Android, Chrome OS, Linux, ...)."),
    Column("os_version", _STR, True, "Operating system version."),
    Column("screen", _STR, True, "Screen size as `WIDTHxHEIGHT`."),
    Column("language", _STR, True, "Browser language (e.g. `en-US`)."),
    Column("timezone", _STR, True, "Browser time zone (IANA name)."),
    Column("engagement_ms", pa.int64(), True, "Visible time on page in milliseconds (`page_exit`, `engagement`)."),
    Column("user_id", _STR, True, "User id from `identify` (also kept on later events of that visitor by the warehouse)."),
    Column("props_str", pa.map_(_STR, _STR), True, "Custom string properties."),
    Column("props_num", pa.map_(_STR, pa.float64()), True, "Custom number properties."),
    Column("props_bool", pa.map_(_STR, pa.bool_()), True, "Custom boolean properties."),
    Column("revenue_amount", pa.float64(), True, "Monetary value of a custom event (`revenue.amount`), in `revenue_currency`; null when the event carries none."),
    Column("revenue_currency", _STR, True, "ISO 4217 code of `revenue_amount` (upper case, e.g. `EUR`)."),
    Column("region", _STR, True, "ISO 3166-2 code of the client IP's region (`GB-ENG`); null unless a city `.mmdb` is configured (docs/ingest.md)."),
    Column("city", _STR, True, "GeoNames id of the client IP's city, as text (`2643743`); null unless a city `.mmdb` is configured."),
    Column("city_name", _STR, True, "English name of that city, when the database has one."),
    Column("scroll_depth", pa.int16(), True, "Deepest point of the page reached, in percent of its height (`page_exit`)."),
)

RAW_EVENT_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in COLUMNS])
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def conform(table: pa.Table) -> pa.Table:
    """``table`` (a raw file as read) in this release's raw schema: columns it lacks (written before
    they existed) are added as nulls, in schema order; columns this release does not know are dropped."""
    if table.schema.equals(RAW_EVENT_SCHEMA):
        return table
    missing = [c for c in COLUMNS if c.name not in table.column_names]
    for c in missing:
        if not c.nullable:
            raise ValueError(f"raw file lacks the required column {c.name!r}")
    columns = [table[c.name].cast(c.type) if c.name in table.column_names else pa.nulls(table.num_rows, c.type)
               for c in COLUMNS]
    return pa.Table.from_arrays(columns, schema=RAW_EVENT_SCHEMA)


def markdown_table() -> str:
    """The schema as a Markdown table, for docs/schema.md."""
    lines = ["| column | type | null | meaning |", "| --- | --- | --- | --- |"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.doc} |")
    return "\n".join(lines)
