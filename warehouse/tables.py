"""Every DuckDB table of the warehouse, declared once.

The loader creates the tables from these declarations, ``docs/schema.md`` describes them from the
same column docs, and the query API writes its SQL against them. Conventions: snake_case names,
timestamps are ``TIMESTAMPTZ`` in UTC, ``site_id`` on every table, ``visitor_key`` is the 64-bit
keyed hash from ingest (SPEC §4).

Which table answers what:

* ``events`` / ``sessions`` / ``event_props`` — the facts; any question, slowest.
* ``hourly_rollup`` — counts (views, visits, bounces, duration, custom events) per UTC hour and per
  breakdown dimension value; sum rows over any range. Its ``visitors`` column is exact only *within*
  one hour: never add it up across hours.
* ``daily_visitor_counts`` — exact unique visitors over any range of whole site-local days as a
  *sum*: per (site, dimension value, day, the visitors' previous active day) how many visitors;
  a visitor counts in ``[d0, d1)`` on its first day there (``prev_date`` null or before ``d0``).
* ``daily_visitors`` — one row per (site, site-local date, visitor) with its previous active date;
  ``daily_session_visitors`` / ``daily_page_visitors`` / ``daily_event_visitors`` — the same by
  visit attributes, page, custom event name. The loader's state for ``daily_visitor_counts``
  (``count(DISTINCT visitor_key)`` over them gives the same numbers, slower).
* ``hourly_props`` — custom event property breakdowns per UTC hour.
* ``loaded_files`` — the manifest of raw Parquet files already loaded (exactly-once).
* ``imported_*`` — daily aggregates imported from another tool (Plausible CE's CSV layout), one
  set per import; added to answers only when a query asks (``warehouse.query.imported``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    doc: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Col, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self) -> str:
        cols = ",\n    ".join(
            f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns
        )
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols}\n)"

    def markdown(self) -> str:
        lines = [f"### `{self.name}`", "", self.doc, "", "| column | type | meaning |",
                 "| --- | --- | --- |"]
        for c in self.columns:
            doc = c.doc.replace("|", "\\|")  # a literal bar inside a Markdown table cell
            lines.append(f"| `{c.name}` | `{c.type}` | {doc} |")
        return "\n".join(lines)


def _c(name: str, type_: str, doc: str, nullable: bool = True) -> Col:
    return Col(name, type_, doc, nullable)


SITE = _c("site_id", "VARCHAR", "Internal id of the site.", False)
VISITOR = _c("visitor_key", "UBIGINT", "64-bit keyed hash identifying the visitor (SPEC §4).", False)

# Attributes a visit takes from its first event (SPEC §5); also the session breakdown dimensions.
ACQUISITION = (
    _c("referrer", "VARCHAR", "Full referrer URL of the first event; null for direct visits."),
    _c("referrer_domain", "VARCHAR", "Referrer host without `www.` of the first event."),
    _c("source", "VARCHAR", "Traffic source of the first event (`Direct / None` when none)."),
    _c("utm_source", "VARCHAR", "`utm_source` of the first event."),
    _c("utm_medium", "VARCHAR", "`utm_medium` of the first event."),
    _c("utm_campaign", "VARCHAR", "`utm_campaign` of the first event."),
    _c("utm_term", "VARCHAR", "`utm_term` of the first event."),
    _c("utm_content", "VARCHAR", "`utm_content` of the first event."),
)
CLIENT = (
    _c("country", "VARCHAR", "ISO 3166-1 alpha-2 country code; null when unknown."),
    _c("device", "VARCHAR", "desktop | mobile | tablet."),
    _c("browser", "VARCHAR", "Browser family."),
    _c("browser_version", "VARCHAR", "Browser major.minor version."),
    _c("os", "VARCHAR", "Operating system family."),
    _c("os_version", "VARCHAR", "Operating system version."),
    _c("screen", "VARCHAR", "Screen size `WIDTHxHEIGHT`."),
    _c("language", "VARCHAR", "Browser language (e.g. `en-US`)."),
)

# Where the visitor was, finer than the country: only with a configured city `.mmdb` (ingest/geo.py).
# Appended at the end of `events` and `sessions` (a migration adds them to existing files).
GEO = (
    _c("region", "VARCHAR", "ISO 3166-2 code of the region (`GB-ENG`, `US-CA`); null without a city database."),
    _c("city", "VARCHAR", "GeoNames id of the city, as text (`2643743`); null without a city database."),
    _c("city_name", "VARCHAR", "English name of the city, when the database has one."),
)

EVENTS = Table(
    "events",
    "One row per accepted event (every raw Parquet row, loaded exactly once; custom properties are "
    "in `event_props`). `session_id` links it to its visit.",
    (
        _c("event_id", "VARCHAR", "Unique id of the event (UUIDv7; `<import id>-<row>` for imported history).", False),
        SITE,
        _c("ts", "TIMESTAMPTZ", "Event time (UTC).", False),
        _c("received_at", "TIMESTAMPTZ", "When the server accepted the event (UTC).", False),
        _c("type", "VARCHAR", "pageview | event | identify | page_exit | engagement.", False),
        _c("name", "VARCHAR", "Custom event name (`type = 'event'`); null otherwise."),
        VISITOR,
        _c("visitor_key_source", "VARCHAR", "`tracker` or `fallback` (daily-salted hash)."),
        _c("session_id", "VARCHAR", "The visit this event belongs to (`sessions.session_id`).", False),
        _c("hostname", "VARCHAR", "Host name of the page URL."),
        _c("pathname", "VARCHAR", "Path of the page.", False),
        _c("query", "VARCHAR", "Query string of the page URL."),
        _c("title", "VARCHAR", "Document title."),
        *ACQUISITION[:3],
        *(Col(c.name, c.type, c.doc.replace(" of the first event", " from the page URL"))
          for c in ACQUISITION[3:]),
        *CLIENT,
        _c("timezone", "VARCHAR", "Browser time zone (IANA name)."),
        _c("engagement_ms", "BIGINT", "Visible time on page in ms (`page_exit`, `engagement`)."),
        _c("user_id", "VARCHAR", "User id from `identify`."),
        # added by warehouse migrations 3 and 4 (ALTER TABLE … ADD COLUMN appends: keep this order, last)
        _c("revenue_amount", "DOUBLE", "Monetary value of a custom event, in `revenue_currency`; null when none."),
        _c("revenue_currency", "VARCHAR", "ISO 4217 code of `revenue_amount` (e.g. `EUR`)."),
        *GEO,
        _c("scroll_depth", "SMALLINT", "Deepest point of the page reached, in percent of its height (`page_exit`, `engagement`)."),
    ),
)

SESSIONS = Table(
    "sessions",
    "One row per visit (SPEC §5): a run of one visitor's events on one site with no gap over 30 "
    "minutes. Recomputed when late events arrive, so it always reflects every loaded event.",
    (
        SITE,
        _c("session_id", "VARCHAR", "Visit id: the `event_id` of the visit's first event (deterministic).", False),
        VISITOR,
        _c("started_at", "TIMESTAMPTZ", "Time of the first event (UTC).", False),
        _c("ended_at", "TIMESTAMPTZ", "Time of the last event of any type (UTC).", False),
        _c("hostname", "VARCHAR", "Host name of the entry page."),
        _c("entry_page", "VARCHAR", "Path of the first pageview (of the first event if the visit has no pageview).", False),
        _c("exit_page", "VARCHAR", "Path of the last pageview (of the last event if the visit has no pageview).", False),
        _c("pageviews", "INTEGER", "Number of `pageview` events.", False),
        _c("custom_events", "INTEGER", "Number of custom (`event`) events.", False),
        _c("events", "INTEGER", "Number of events of any type.", False),
        _c("engagement_ms", "BIGINT", "Reported engagement of the final page: the largest `engagement_ms` of `page_exit`/`engagement` events after the last pageview; 0 when unknown.", False),
        _c("duration_ms", "BIGINT", "Visit duration: max(last pageview/custom/identify event, last pageview + `engagement_ms`) − `started_at`.", False),
        _c("is_bounce", "BOOLEAN", "Exactly one pageview and no custom event (engagement time is not considered).", False),
        _c("is_new", "BOOLEAN", "True for the visitor's first visit on this site (among loaded data).", False),
        *ACQUISITION,
        *CLIENT,
        _c("user_id", "VARCHAR", "Last user id identified during the visit."),
        *(Col(c.name, c.type, c.doc.replace("; null", " of the first event; null"), c.nullable) for c in GEO),
    ),
)

EVENT_PROPS = Table(
    "event_props",
    "Typed custom properties: one row per (event, property). Custom event properties and "
    "`identify` traits.",
    (
        SITE,
        _c("event_id", "VARCHAR", "The event (`events.event_id`).", False),
        _c("ts", "TIMESTAMPTZ", "Event time (UTC).", False),
        VISITOR,
        _c("event_type", "VARCHAR", "Type of the event (`event` or `identify`, ...).", False),
        _c("event_name", "VARCHAR", "Custom event name; null for other types."),
        _c("key", "VARCHAR", "Property name.", False),
        _c("value_type", "VARCHAR", "`string` | `number` | `boolean`.", False),
        _c("string_value", "VARCHAR", "Value when `value_type = 'string'`."),
        _c("number_value", "DOUBLE", "Value when `value_type = 'number'`."),
        _c("bool_value", "BOOLEAN", "Value when `value_type = 'boolean'`."),
        _c("value", "VARCHAR", "The value as text, whatever its type (for breakdowns).", False),
    ),
)

# Dimensions of hourly_rollup and what their metrics count.
SESSION_DIMENSIONS = (
    "source", "referrer", "referrer_domain", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "country", "device", "browser", "browser_version", "os", "os_version",
    "language", "screen", "entry_page", "exit_page",
)
EVENT_DIMENSIONS = ("page", "event")

HOURLY_ROLLUP = Table(
    "hourly_rollup",
    "Counts per UTC hour and breakdown value. `dimension = 'total'` (value `''`): views and custom "
    "events by event time, visits/bounces/duration of visits *started* in the hour, visitors with "
    "any event in the hour. Session dimensions (`source`, `referrer`, `referrer_domain`, `utm_*`, "
    "`country`, `device`, `browser`, `browser_version`, `os`, `os_version`, `language`, `screen`, "
    "`entry_page`, `exit_page`): every metric over visits started in the hour (views = their "
    "pageviews). `page`: pageviews of that path (visits = distinct visits viewing it). `event`: "
    "custom events of that name. A null `value` means the attribute was unknown. `visitors` is exact "
    "for the hour only — use the daily_* tables for unique visitors over a range.",
    (
        SITE,
        _c("hour", "TIMESTAMPTZ", "Start of the UTC hour.", False),
        _c("dimension", "VARCHAR", "`total`, a session dimension, `page` or `event`.", False),
        _c("value", "VARCHAR", "Value of the dimension (`''` for `total`)."),
        _c("visitors", "BIGINT", "Distinct visitors in this hour and value (do not sum over hours).", False),
        _c("visits", "BIGINT", "Visits (see the table description for the dimension's meaning).", False),
        _c("views", "BIGINT", "Pageviews.", False),
        _c("bounces", "BIGINT", "Bounced visits (session dimensions and `total`; 0 otherwise).", False),
        _c("duration_ms", "BIGINT", "Sum of visit durations (session dimensions and `total`; 0 otherwise).", False),
        _c("events", "BIGINT", "Custom events.", False),
    ),
)

HOURLY_PROPS = Table(
    "hourly_props",
    "Custom event property breakdowns per UTC hour: how often each (event name, property, value) "
    "occurred.",
    (
        SITE,
        _c("hour", "TIMESTAMPTZ", "Start of the UTC hour.", False),
        _c("event_name", "VARCHAR", "Custom event name (null for `identify` traits)."),
        _c("key", "VARCHAR", "Property name.", False),
        _c("value", "VARCHAR", "Property value as text.", False),
        _c("events", "BIGINT", "Events carrying the property value.", False),
        _c("visitors", "BIGINT", "Distinct visitors in the hour (do not sum over hours).", False),
    ),
)

LOCAL_DATE = _c("local_date", "DATE", "Calendar date in the site's time zone.", False)

PREV_DATE = _c("prev_date", "DATE", "The visitor's previous date in this table (with the same "
               "value); null on its first.")

DAILY_VISITORS = Table(
    "daily_visitors",
    "One row per visitor with any event on a site-local date. Exact unique visitors over any "
    "range of days: `count(DISTINCT visitor_key)` (or, faster, `daily_visitor_counts`).",
    (
        SITE,
        LOCAL_DATE,
        VISITOR,
        _c("pageviews", "BIGINT", "The visitor's pageviews that day.", False),
        _c("events", "BIGINT", "The visitor's events of any type that day.", False),
        PREV_DATE,
    ),
)

DAILY_SESSION_VISITORS = Table(
    "daily_session_visitors",
    "One row per (visitor, site-local date of visit start, combination of visit attributes): "
    "exact unique visitors for breakdowns and filters on visit attributes.",
    (
        SITE,
        LOCAL_DATE,
        VISITOR,
        *(Col(c.name, c.type, c.doc.replace(" of the first event", "")) for c in ACQUISITION),
        *(c for c in CLIENT if c.name not in ("browser_version", "os_version")),
        _c("entry_page", "VARCHAR", "Entry page."),
        _c("exit_page", "VARCHAR", "Exit page."),
        _c("visits", "BIGINT", "Visits with these attributes.", False),
        *(_c(f"prev_{c}", "DATE", f"The visitor's previous date with a visit of this `{c}`; null on "
             "its first; this row's own date when another row of the visitor that day has the same "
             "value (the day counts once).")
          for c in (*(a.name for a in ACQUISITION),
                    *(c.name for c in CLIENT if c.name not in ("browser_version", "os_version")),
                    "entry_page", "exit_page")),
    ),
)

DAILY_PAGE_VISITORS = Table(
    "daily_page_visitors",
    "One row per (visitor, site-local date, page viewed): exact unique visitors per page.",
    (
        SITE,
        LOCAL_DATE,
        _c("pathname", "VARCHAR", "Path of the page.", False),
        VISITOR,
        _c("pageviews", "BIGINT", "The visitor's views of the page that day.", False),
        PREV_DATE,
    ),
)

DAILY_EVENT_VISITORS = Table(
    "daily_event_visitors",
    "One row per (visitor, site-local date, custom event name): exact unique visitors (and "
    "conversions) per custom event.",
    (
        SITE,
        LOCAL_DATE,
        _c("event_name", "VARCHAR", "Custom event name.", False),
        VISITOR,
        _c("events", "BIGINT", "The visitor's events of that name that day.", False),
        PREV_DATE,
    ),
)

DAILY_VISITOR_COUNTS = Table(
    "daily_visitor_counts",
    "Exact unique visitors over any range of whole site-local days, as a sum. Per (site, dimension "
    "value, date, previous date): how many visitors were active that date with that value and last "
    "before on the previous date (rows of the `daily_*` visitor tables, counted). A visitor counts "
    "in `[d0, d1)` once, on its first date there: `sum(visitors) WHERE local_date >= d0 AND "
    "local_date < d1 AND (prev_date IS NULL OR prev_date < d0)`; per day every row of the date "
    "counts; per week / month use the bucket's start (or `d0` if later) instead of `d0`. "
    "Maintained from the differences of each load.",
    (
        SITE,
        _c("dimension", "VARCHAR", "`total` (any event), `page` (a pageview of it), `event` (a custom "
           "event of that name) or a visit attribute (a visit started that day with it).", False),
        _c("value", "VARCHAR", "Value of the dimension (`''` for `total`; null when unknown)."),
        LOCAL_DATE,
        _c("prev_date", "DATE", "The visitors' previous date with this value (null: none)."),
        _c("visitors", "BIGINT", "How many visitors.", False),
    ),
)

LOADED_FILES = Table(
    "loaded_files",
    "Manifest of raw Parquet files already loaded; written in the same transaction as the rows.",
    (
        SITE,
        _c("path", "VARCHAR", "Path relative to the raw directory.", False),
        _c("partition_hour", "TIMESTAMPTZ", "UTC hour of the file's partition.", False),
        _c("rows", "BIGINT", "Rows in the file.", False),
        _c("new_events", "BIGINT", "Rows that were new (not duplicates of loaded event ids).", False),
        _c("loaded_at", "TIMESTAMPTZ", "When it was loaded.", False),
    ),
)

# Imported aggregates: daily rows from another tool's export (Plausible CE's CSV layout, whose
# files and columns these tables mirror), one set per import. Values use our vocabulary (null for
# unknown, `Direct / None`, lower-case devices); `visit_duration` is the day's total in seconds.
IMPORT = _c("import_id", "VARCHAR", "The import these rows came from (`littlestats imports list`).", False)
IMPORT_DATE = _c("date", "DATE", "Site-local date the row counts.", False)


def _imported(name: str, doc: str, *columns: Col) -> Table:
    return Table(name, doc + " One row per import, date and value; added to answers by `imported=true`.",
                 (SITE, IMPORT, IMPORT_DATE, *columns))


def _n(name: str, doc: str) -> Col:
    return _c(name, "BIGINT", doc, False)


_VISITORS = _n("visitors", "Unique visitors that day (as counted by the source).")
_VISITS = _n("visits", "Visits that day.")
_PAGEVIEWS = _n("pageviews", "Pageviews.")
_BOUNCES = _n("bounces", "Bounced visits.")
_DURATION = _n("visit_duration", "Sum of the visits' durations in seconds.")
_SESSION_COUNTS = (_VISITORS, _VISITS, _DURATION, _BOUNCES, _PAGEVIEWS)

IMPORTED_TABLES = (
    _imported("imported_visitors", "Imported daily totals.",
              _VISITORS, _PAGEVIEWS, _BOUNCES, _VISITS, _DURATION),
    _imported("imported_sources", "Imported visits by source, referrer and UTM tags.",
              _c("source", "VARCHAR", "Traffic source (`Direct / None` when none)."),
              _c("referrer", "VARCHAR", "Referrer as the source wrote it (host and path)."),
              _c("referrer_domain", "VARCHAR", "Host of `referrer` without `www.`."),
              *(_c(f"utm_{t}", "VARCHAR", f"`utm_{t}`.") for t in ("source", "medium", "campaign", "content", "term")),
              _PAGEVIEWS, _VISITORS, _VISITS, _DURATION, _BOUNCES),
    _imported("imported_pages", "Imported pageviews by page.",
              _c("hostname", "VARCHAR", "Host name."), _c("page", "VARCHAR", "Path of the page.", False),
              _n("visits", "Visits viewing the page."), _VISITORS, _PAGEVIEWS,
              _n("exits", "Visits ending on the page (0 when the source has no such column)."),
              _n("total_scroll_depth", "Sum of the visits' largest scroll depth (%)."),
              _n("total_scroll_depth_visits", "Visits with a scroll depth."),
              _n("total_time_on_page", "Sum of time on page in seconds."),
              _n("total_time_on_page_visits", "Visits with a time on page.")),
    _imported("imported_entry_pages", "Imported visits by entry page.",
              _c("entry_page", "VARCHAR", "Entry page.", False), _VISITORS,
              _n("entrances", "Visits entering on the page."), _DURATION, _BOUNCES, _PAGEVIEWS),
    _imported("imported_exit_pages", "Imported visits by exit page.",
              _c("exit_page", "VARCHAR", "Exit page.", False), _VISITORS, _DURATION,
              _n("exits", "Visits ending on the page."), _BOUNCES, _PAGEVIEWS),
    _imported("imported_custom_events", "Imported custom events by name.",
              _c("name", "VARCHAR", "Custom event name.", False),
              _c("link_url", "VARCHAR", "`url` property of link-click events (else empty)."),
              _c("path", "VARCHAR", "`path` property of 404 / file-download events (else empty)."),
              _VISITORS, _n("events", "Events.")),
    _imported("imported_locations", "Imported visits by country.",
              _c("country", "VARCHAR", "ISO 3166-1 alpha-2 country code."),
              _c("region", "VARCHAR", "ISO 3166-2 region code."),
              _c("city", "BIGINT", "GeoNames city id (0: unknown)."), *_SESSION_COUNTS),
    _imported("imported_devices", "Imported visits by device.",
              _c("device", "VARCHAR", "desktop | mobile | tablet."), *_SESSION_COUNTS),
    _imported("imported_browsers", "Imported visits by browser.",
              _c("browser", "VARCHAR", "Browser family."), _c("browser_version", "VARCHAR", "Browser version."),
              *_SESSION_COUNTS),
    _imported("imported_operating_systems", "Imported visits by operating system.",
              _c("operating_system", "VARCHAR", "Operating system family."),
              _c("operating_system_version", "VARCHAR", "Operating system version."), *_SESSION_COUNTS),
)

FACT_TABLES = (EVENTS, SESSIONS, EVENT_PROPS)
ROLLUP_TABLES = (HOURLY_ROLLUP, HOURLY_PROPS)
DAILY_TABLES = (DAILY_VISITORS, DAILY_SESSION_VISITORS, DAILY_PAGE_VISITORS, DAILY_EVENT_VISITORS,
                DAILY_VISITOR_COUNTS)
ALL_TABLES = (*FACT_TABLES, *ROLLUP_TABLES, *DAILY_TABLES, LOADED_FILES, *IMPORTED_TABLES)

PREAGGREGATE_TABLES = (*ROLLUP_TABLES, *DAILY_TABLES)


class SchemaError(RuntimeError):
    """The warehouse file's fact tables do not have the columns this version declares."""


def create_all(con: object) -> None:
    """Create every table that does not exist yet (``con`` is a DuckDB connection)."""
    for table in ALL_TABLES:
        con.execute(table.ddl())  # type: ignore[attr-defined]


def _columns(con: object, name: str) -> tuple[str, ...]:
    rows = con.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main'"
        " AND table_name = ? ORDER BY ordinal_position", [name],
    ).fetchall()
    return tuple(r[0] for r in rows)


def recreate_stale_preaggregates(con: object) -> list[str]:
    """Bring a warehouse written by an earlier version up to date.

    Pre-aggregate tables whose columns differ from the declarations are dropped and created
    empty (they are derived data: the caller rebuilds them from the facts) and their names are
    returned. Fact tables and the manifest cannot be re-derived here: a mismatch there raises
    ``SchemaError`` saying what to do.
    """
    for table in (*FACT_TABLES, LOADED_FILES):
        found = _columns(con, table.name)
        if found and found != table.column_names:
            raise SchemaError(
                f"warehouse table {table.name} has columns {', '.join(found)}, but this version"
                f" expects {', '.join(table.column_names)}. Move warehouse.duckdb aside and run"
                " `littlestats backfill --from <first date> --to <last date>` to rebuild it from"
                " the raw Parquet files."
            )
    stale = [t for t in PREAGGREGATE_TABLES if _columns(con, t.name) != t.column_names]
    for table in stale:
        con.execute(f"DROP TABLE IF EXISTS {table.name}")  # type: ignore[attr-defined]
        con.execute(table.ddl())  # type: ignore[attr-defined]
    return [t.name for t in stale]
