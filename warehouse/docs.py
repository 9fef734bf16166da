"""``docs/schema.md``, generated from the table declarations so it never drifts.

``python -m warehouse.docs`` rewrites the file; a test fails when the committed file differs and
runs every example query in it against a generated warehouse.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ingest.schema import markdown_table
from warehouse.tables import ALL_TABLES, SESSION_DIMENSIONS

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "schema.md"

INTRO = """\
# LittleStats data schema

For analysts: everything LittleStats knows lives in open formats you can query without our code.

* **Raw events** — Parquet files under `<data dir>/raw/`, Hive-partitioned:
  `raw/site_id=<id>/date=YYYY-MM-DD/hour=HH/part-<segment>.parquet` (UTC date and hour of `ts`,
  zstd). New files appear about every 30 seconds; late events (client time up to 24 h old) appear
  as new files in older hour partitions. Once an hour has been closed for two hours and loaded, its
  files are merged into one, `part-hourly.parquet` (ordered by `ts`, one row per `event_id`); a
  late event's file beside it is merged in at the next load. For the instant between writing the
  merged file and deleting its parts both can be seen: count `DISTINCT event_id` when exactness
  matters. The schema below only grows, by nullable columns at the end: files written by an
  earlier release lack the newer columns, so read them with `union_by_name = true` (the missing
  columns read as nulls).
* **Warehouse** — one DuckDB database, `<data dir>/warehouse.duckdb`, loaded from the raw files
  every minute by `littlestats serve` (or `littlestats load`). While `serve` runs its warehouse
  process holds the file for writing, so query it through that process: `littlestats sql` on the
  server, or `POST /api/v2/sql` with an API token (next section). With the server stopped, the
  `duckdb` CLI, polars or pandas open the file directly (`duckdb -readonly warehouse.duckdb`).

Conventions: snake_case; every timestamp is `TIMESTAMPTZ` in UTC; every table has `site_id`
(the internal site id, see `littlestats sites list`); `visitor_key` is a 64-bit keyed hash of the
visitor, never reversible to an IP address. Site-local dates (`local_date`) use the site's time
zone.

## Querying while the server runs

Every example query below runs as written while `littlestats serve` runs, through the warehouse
process, on a consistent snapshot (a load committing meanwhile is not seen half-done):

```
littlestats sql "SELECT count(*) FROM events"                  # a table for people
littlestats sql - --format csv < summary.sql > summary.csv     # the query from a file
littlestats sql "SELECT * FROM sessions" --format parquet --out sessions.parquet
curl -H "Authorization: Bearer $TOKEN" -d '{"sql": "SELECT count(*) FROM events"}' \
    http://127.0.0.1:8000/api/v2/sql
```

It is read-only: one `SELECT` (or `WITH`, `FROM`, `VALUES`, `DESCRIBE`, `SUMMARIZE`) statement
over the tables on this page, named without a schema; files (`read_parquet`, `read_csv`, …),
settings, `ATTACH`, `COPY`, `PRAGMA` and every write are refused. A query stops after
`sql_time_limit_seconds` (30 s) and answers at most `sql_max_rows` rows (100,000). Over the API a
token that is not an admin's sees only its own sites' rows, in every table. The raw-file query at
the end of this page reads files, so it runs with `duckdb` in the data directory instead (the raw
files are never held by the server). [export.md](export.md) has the details, and exports.

## Definitions (SPEC §5)

* **Visit (session)**: a run of one visitor's events on one site with no gap over 30 minutes
  (exactly 30 minutes still continues it). Events of every type count for the gap, so heartbeats
  keep a visit open while a page is read; an engagement report (`page_exit`, `engagement`) never
  starts a visit — sent after a page stayed open in the background for over 30 minutes, it still
  belongs to that page's visit. Visits span hours, days and loads; late events are placed
  in the right visit and the affected visits are recomputed.
* **Visitors**: distinct `visitor_key` in the range — exact over any range of whole local days
  (sum `daily_visitor_counts`, or count distinct in the `daily_*` visitor tables; never add up
  hourly `visitors`).
* **Visits**: visits that *started* in the range. **Views**: `pageview` events.
* **Bounce**: a visit with exactly one pageview and no custom event. Engagement time is not
  considered (a single-page visit with a long read is still a bounce). **Bounce rate** = bounces /
  visits.
* **Visit duration**: from the visit's first event to whichever ends later: its last
  `pageview`/`event`/`identify`, or its last pageview plus the final page's reported engagement
  (the largest `engagement_ms` of the `page_exit`/`engagement` events after the last pageview —
  the page's total visible time, so a custom event on that page is not counted twice).
  **avgDuration** = sum of durations / visits, in seconds.
* **Entry / exit page**: path of the visit's first / last pageview.
* **Source, referrer, UTM, device, browser, OS, country, language, screen** of a visit: those of
  its first event.
* **New visitor**: the visit is the visitor's first visit on the site among the loaded data.

## Which table answers what

| question | table |
| --- | --- |
| views, visits, bounces, duration, custom events per hour / day / week / month | `hourly_rollup` with `dimension = 'total'` (sum the hours) |
| unique visitors over any range, per day / week / month | `daily_visitor_counts` with `dimension = 'total'` (a sum: rows with `prev_date` null or before the range / bucket start), or `daily_visitors` (`count(DISTINCT visitor_key)`, slower) |
| unique visitors within one hour (hourly time series) | `hourly_rollup.visitors` of that hour |
| breakdown by source, referrer, UTM, country, device, browser, OS, language, screen, entry / exit page | `hourly_rollup` with that `dimension` (counts) + `daily_visitor_counts` with that `dimension` (visitors) |
| breakdown by page | `hourly_rollup` with `dimension = 'page'` + `daily_visitor_counts` (same dimension) |
| custom events and goal conversions | `hourly_rollup` with `dimension = 'event'` + `daily_visitor_counts` (same dimension) |
| a breakdown under a visit-attribute filter (e.g. browsers of visitors from DE) | `daily_session_visitors` (`count(DISTINCT visitor_key)`) |
| custom event properties | `hourly_props` (per hour), `event_props` (per event) |
| anything else, filters across dimensions of different kinds | `sessions`, `events`, `event_props` |
| what has been loaded | `loaded_files` |

Session dimensions of `hourly_rollup`: {dimensions}.

Hourly tables are by UTC hour; for a site whose time zone is a whole number of hours from UTC a
local day is exactly 24 of them (`hour >= timezone(tz, TIMESTAMP 'YYYY-MM-DD 00:00')`).
"""

RAW_SECTION = """\
## Raw event Parquet columns

Query them directly, e.g. from the data directory:
`SELECT * FROM read_parquet('raw/*/*/*/*.parquet', hive_partitioning = true, union_by_name = true)`.

{table}
"""

EXAMPLES = """\
## Example queries

Each runs as written against a warehouse (site ids `site-a` in UTC and `site-b` in
Europe/Berlin stand in for yours; raw-file queries run from the data directory). A test runs them.

Summary of a date range (exact visitors, visits, views, bounce rate, average duration):

```sql
WITH totals AS (
    SELECT sum(views) AS views, sum(visits) AS visits, sum(bounces) AS bounces,
        sum(duration_ms) AS duration_ms
    FROM hourly_rollup
    WHERE site_id = 'site-a' AND dimension = 'total'
        AND hour >= timezone('UTC', TIMESTAMP '2026-03-01 00:00')
        AND hour < timezone('UTC', TIMESTAMP '2026-03-04 00:00')
)
SELECT
    -- each visitor counts once: on its first day in the range
    (SELECT sum(visitors) FROM daily_visitor_counts
     WHERE site_id = 'site-a' AND dimension = 'total'
        AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-03'
        AND (prev_date IS NULL OR prev_date < DATE '2026-03-01')) AS visitors,
    visits, views,
    round(100.0 * bounces / nullif(visits, 0), 1) AS bounce_rate,
    round(duration_ms / 1000.0 / nullif(visits, 0), 1) AS avg_duration_s
FROM totals;
```

Daily time series in the site's time zone, exact visitors per day:

```sql
SELECT local_date, count(DISTINCT visitor_key) AS visitors, sum(pageviews) AS views
FROM daily_visitors
WHERE site_id = 'site-b' AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
GROUP BY local_date
ORDER BY local_date;
```

Monthly unique visitors (exact; not a sum of daily figures):

```sql
SELECT date_trunc('month', local_date) AS month, count(DISTINCT visitor_key) AS visitors
FROM daily_visitors
WHERE site_id = 'site-a'
GROUP BY month
ORDER BY month;
```

Hourly time series for one UTC day:

```sql
SELECT hour, visitors, visits, views
FROM hourly_rollup
WHERE site_id = 'site-a' AND dimension = 'total'
    AND hour >= TIMESTAMPTZ '2026-03-02 00:00:00+00' AND hour < TIMESTAMPTZ '2026-03-03 00:00:00+00'
ORDER BY hour;
```

Top sources with visits, bounce rate and exact visitors:

```sql
WITH counts AS (
    SELECT value AS source, sum(visits) AS visits, sum(bounces) AS bounces, sum(views) AS views
    FROM hourly_rollup
    WHERE site_id = 'site-a' AND dimension = 'source'
        AND hour >= TIMESTAMPTZ '2026-03-01 00:00:00+00' AND hour < TIMESTAMPTZ '2026-04-01 00:00:00+00'
    GROUP BY source
), uniques AS (
    SELECT value AS source, sum(visitors) AS visitors
    FROM daily_visitor_counts
    WHERE site_id = 'site-a' AND dimension = 'source'
        AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
        AND (prev_date IS NULL OR prev_date < DATE '2026-03-01')
    GROUP BY source
)
SELECT c.source, u.visitors, c.visits, c.views, round(100.0 * c.bounces / c.visits, 1) AS bounce_rate
FROM counts c LEFT JOIN uniques u USING (source)
ORDER BY u.visitors DESC NULLS LAST, c.source
LIMIT 10;
```

A breakdown under a filter (visitors from Germany, by browser):

```sql
SELECT browser, count(DISTINCT visitor_key) AS visitors, sum(visits) AS visits
FROM daily_session_visitors
WHERE site_id = 'site-a' AND country = 'DE'
    AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
GROUP BY browser
ORDER BY visitors DESC;
```

Top pages with exact visitors:

```sql
SELECT p.pathname, count(DISTINCT p.visitor_key) AS visitors, sum(p.pageviews) AS views
FROM daily_page_visitors p
WHERE p.site_id = 'site-a' AND p.local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
GROUP BY p.pathname
ORDER BY visitors DESC, p.pathname
LIMIT 10;
```

Entry pages with bounce rate and average visit duration:

```sql
SELECT value AS entry_page, sum(visits) AS visits,
    round(100.0 * sum(bounces) / sum(visits), 1) AS bounce_rate,
    round(sum(duration_ms) / 1000.0 / sum(visits), 1) AS avg_duration_s
FROM hourly_rollup
WHERE site_id = 'site-a' AND dimension = 'entry_page'
GROUP BY entry_page
ORDER BY visits DESC
LIMIT 10;
```

Goal conversion rate of a custom event (converting visitors / all visitors):

```sql
WITH converted AS (
    SELECT count(DISTINCT visitor_key) AS n FROM daily_event_visitors
    WHERE site_id = 'site-a' AND event_name = 'Signup'
        AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
), everyone AS (
    SELECT count(DISTINCT visitor_key) AS n FROM daily_visitors
    WHERE site_id = 'site-a' AND local_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'
)
SELECT converted.n AS converted, everyone.n AS visitors,
    round(100.0 * converted.n / nullif(everyone.n, 0), 1) AS conversion_rate
FROM converted, everyone;
```

Revenue of a custom event in the site's currency (amounts are stored in the currency sent; the
rates are the site's, here one USD = 0.92 EUR; a currency without a rate is left out):

```sql
SELECT sum(revenue_amount * CASE revenue_currency WHEN 'EUR' THEN 1 WHEN 'USD' THEN 0.92 END) AS revenue_eur,
    count(*) FILTER (WHERE revenue_currency NOT IN ('EUR', 'USD')) AS unconverted
FROM events
WHERE site_id = 'site-a' AND type = 'event' AND name = 'Signup' AND revenue_amount IS NOT NULL
    AND ts >= TIMESTAMPTZ '2026-03-01 00:00:00+00' AND ts < TIMESTAMPTZ '2026-04-01 00:00:00+00';
```

Visitors who completed a page goal with a pattern (`/page/*`: one path segment):

```sql
SELECT count(DISTINCT visitor_key) FROM events
WHERE site_id = 'site-a' AND type = 'pageview' AND regexp_full_match(pathname, '^/page/[^/]*$');
```

A custom event's property breakdown:

```sql
SELECT value AS plan, sum(events) AS events
FROM hourly_props
WHERE site_id = 'site-a' AND event_name = 'Signup' AND key = 'plan'
GROUP BY plan
ORDER BY events DESC;
```

New vs returning visits, from the sessions fact table:

```sql
SELECT CASE WHEN is_new THEN 'new' ELSE 'returning' END AS visitor_type, count(*) AS visits,
    round(avg(duration_ms) / 1000.0, 1) AS avg_duration_s
FROM sessions
WHERE site_id = 'site-a' AND started_at >= TIMESTAMPTZ '2026-03-01 00:00:00+00'
GROUP BY visitor_type
ORDER BY visitor_type;
```

A visitor's path through one visit (events of the longest visit):

```sql
SELECT e.ts, e.type, e.name, e.pathname, e.engagement_ms
FROM events e
WHERE e.session_id = (SELECT session_id FROM sessions WHERE site_id = 'site-a'
                      ORDER BY events DESC, session_id LIMIT 1)
ORDER BY e.ts, e.event_id;
```

Raw Parquet, straight from the files (run from the data directory):

```sql
SELECT site_id, date, count(*) AS events, count(DISTINCT visitor_key) AS visitors
FROM read_parquet('raw/*/*/*/*.parquet', hive_partitioning = true, union_by_name = true)
GROUP BY site_id, date
ORDER BY site_id, date
LIMIT 5;
```
"""


def render() -> str:
    """The full text of ``docs/schema.md``."""
    dims = ", ".join(f"`{d}`" for d in SESSION_DIMENSIONS)
    parts = [INTRO.replace("{dimensions}", dims), "## Warehouse tables (DuckDB)", ""]
    for table in ALL_TABLES:
        parts += [table.markdown(), ""]
    parts.append(RAW_SECTION.replace("{table}", markdown_table()))
    parts.append(EXAMPLES)
    return "\n".join(parts)


def example_queries(text: str) -> list[str]:
    """The ```sql blocks of a Markdown text."""
    blocks = []
    for chunk in text.split("```sql\n")[1:]:
        blocks.append(chunk.split("```", 1)[0].strip())
    return blocks


if __name__ == "__main__":
    DOC_PATH.parent.mkdir(exist_ok=True)
    DOC_PATH.write_text(render())
    sys.stdout.write(f"wrote {DOC_PATH}\n")
