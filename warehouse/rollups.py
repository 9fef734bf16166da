"""Pre-aggregates: kept equal to the fact tables for exactly the buckets a load touched.

* ``hourly_rollup`` and ``hourly_props`` — per (site, UTC hour): a load moves the rows of the
  hours it touched by what the changed visitors contribute after minus before, computed from
  those visitors' facts (``count_hours``, ``update_hours``); a repair or an erasure rebuilds
  hours from all their facts (``rebuild_hours``).
* ``daily_visitors`` and the other ``daily_*`` tables — per (site, visitor, site-local date): the
  rows of every visitor-day a load touched are deleted and rebuilt.

Either way the pre-aggregates stay equal to a rebuild from scratch whatever order the data
arrived in, which is what makes loads idempotent. The callers provide two temporary tables on the
same connection:

* ``affected_hours(site_id, hour)``;
* ``affected_days(site_id, visitor_key, local_date)``;

plus ``site_tz(site_id, tz)`` naming each site's IANA time zone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from warehouse.database import register
from warehouse.query.model import DateRange
from warehouse.query.sql import Params, bucket
from warehouse.spans import Spans
from warehouse.tables import (
    DAILY_EVENT_VISITORS,
    DAILY_PAGE_VISITORS,
    DAILY_SESSION_VISITORS,
    DAILY_VISITORS,
    HOURLY_PROPS,
    HOURLY_ROLLUP,
    SESSION_DIMENSIONS,
    Table,
)

# Identifiers below come from warehouse.tables, never from input; values are always parameters.
# Distinct counts are done as two plain aggregations (first per visitor, then per value): DuckDB's
# hash aggregates are much faster than count(DISTINCT ...) for these shapes.
_DIM_COLUMNS = ", ".join(f"s.{d}" for d in SESSION_DIMENSIONS)


def _per_value(dimension: str) -> str:
    """One dimension's rows of ``hourly_rollup`` from ``hour_sessions``. Unique visitors without a
    per-visitor aggregate over every visit: a visitor with one visit in an hour (nearly all: two
    visits need a 30-minute gap) counts once for each of that visit's values, so those visits are
    counted directly; only the visits of visitors with several in one hour (``multi``) are counted
    distinct."""
    d = dimension
    return f"""
    SELECT m.site_id, m.hour, '{d}', m.value, m.single + coalesce(x.visitors, 0), m.visits, m.views,
        m.bounces, m.duration_ms, m.events
    FROM (
        SELECT site_id, hour, {d}::VARCHAR AS value, count(*) FILTER (WHERE NOT multi) AS single,
            count(*) AS visits, sum(pageviews) AS views, count(*) FILTER (WHERE is_bounce) AS bounces,
            sum(duration_ms) AS duration_ms, sum(custom_events) AS events
        FROM hour_sessions GROUP BY site_id, hour, {d}
    ) m LEFT JOIN (
        SELECT site_id, hour, value, count(*) AS visitors FROM (
            SELECT DISTINCT site_id, hour, {d}::VARCHAR AS value, visitor_key FROM hour_sessions WHERE multi
        ) GROUP BY site_id, hour, value
    ) x ON m.site_id = x.site_id AND m.hour = x.hour AND m.value IS NOT DISTINCT FROM x.value"""  # noqa: S608


# The visits of the affected hours, read once; then each dimension aggregated on its own (an
# aggregate per dimension is about twice as fast as one over the union of every dimension's rows).
_HOUR_SESSIONS_SQL = f"""
CREATE OR REPLACE TEMP TABLE hour_sessions AS
WITH s AS (
    SELECT s.site_id, date_trunc('hour', s.started_at) AS hour, s.visitor_key, s.pageviews,
        s.is_bounce, s.duration_ms, s.custom_events, {_DIM_COLUMNS}
    FROM sessions s {{rows}}
    WHERE {{spans}}
),
several AS (SELECT site_id, hour, visitor_key FROM s GROUP BY ALL HAVING count(*) > 1)
SELECT s.*, v.visitor_key IS NOT NULL AS multi FROM s LEFT JOIN several v USING (site_id, hour, visitor_key)
"""  # noqa: S608

_HOURLY_SESSIONS_SQL = ("INSERT INTO {rollup}"
                        + "\n    UNION ALL".join(_per_value(d) for d in SESSION_DIMENSIONS))

_EVENTS_IN_HOURS = """
    SELECT e.*, date_trunc('hour', e.ts) AS hour
    FROM events e {rows}
    WHERE {spans}
"""

_HOURLY_TOTAL_SQL = f"""
INSERT INTO {{rollup}}
WITH per_visitor AS (
    SELECT site_id, hour, visitor_key, count(*) FILTER (WHERE type = 'pageview') AS views,
        count(*) FILTER (WHERE type = 'event') AS events
    FROM ({_EVENTS_IN_HOURS}) GROUP BY site_id, hour, visitor_key
),
e AS (
    SELECT site_id, hour, count(*) AS visitors, sum(views) AS views, sum(events) AS events
    FROM per_visitor GROUP BY site_id, hour
),
s AS (
    SELECT site_id, hour, count(*) AS visits, count(*) FILTER (WHERE is_bounce) AS bounces,
        sum(duration_ms) AS duration_ms
    FROM hour_sessions GROUP BY site_id, hour
)
SELECT coalesce(e.site_id, s.site_id), coalesce(e.hour, s.hour), 'total', '',
    coalesce(e.visitors, 0), coalesce(s.visits, 0), coalesce(e.views, 0), coalesce(s.bounces, 0),
    coalesce(s.duration_ms, 0), coalesce(e.events, 0)
FROM e FULL OUTER JOIN s ON e.site_id = s.site_id AND e.hour = s.hour
"""  # noqa: S608

# Pages and custom events: per visit, then per visitor, then per value — three plain aggregates.
_HOURLY_EVENT_DIMS_SQL = f"""
INSERT INTO {{rollup}}
WITH per_visit AS (
    SELECT site_id, hour, CASE WHEN type = 'pageview' THEN 'page' ELSE 'event' END AS dimension,
        CASE WHEN type = 'pageview' THEN pathname ELSE name END AS value, visitor_key, session_id,
        count(*) AS n
    FROM ({_EVENTS_IN_HOURS}) WHERE type IN ('pageview', 'event')
    GROUP BY ALL
),
per_visitor AS (
    SELECT site_id, hour, dimension, value, visitor_key, count(*) AS visits, sum(n) AS n
    FROM per_visit GROUP BY ALL
)
SELECT site_id, hour, dimension, value, count(*), sum(visits),
    CASE WHEN dimension = 'page' THEN sum(n) ELSE 0 END, 0, 0,
    CASE WHEN dimension = 'event' THEN sum(n) ELSE 0 END
FROM per_visitor GROUP BY site_id, hour, dimension, value
"""  # noqa: S608

_HOURLY_PROPS_SQL = """
INSERT INTO {props}
SELECT site_id, hour, event_name, key, value, sum(n), count(*)
FROM (
    SELECT p.site_id, date_trunc('hour', p.ts) AS hour, p.event_name, p.key, p.value,
        p.visitor_key, count(*) AS n
    FROM event_props p {rows}
    WHERE {spans}
    GROUP BY ALL
)
GROUP BY site_id, hour, event_name, key, value
"""

def _day_rows(table: str, columns: str, local_date: str, in_spans: str) -> str:
    """``columns`` of the ``events`` or ``sessions`` rows (time in the spans: ``in_spans``) on the
    affected visitor-days, with their site-local date (``local_date``, an expression over ``t``
    and ``site_tz z``)."""
    return f"""
    SELECT * FROM (
        SELECT {columns}, {local_date} AS local_date
        FROM {table} t SEMI JOIN affected_visitors v
            ON t.site_id = v.site_id AND t.visitor_key = v.visitor_key
        JOIN site_tz z ON t.site_id = z.site_id
        WHERE {in_spans}
    ) x SEMI JOIN affected_days a
        ON x.site_id = a.site_id AND x.visitor_key = a.visitor_key AND x.local_date = a.local_date
"""  # noqa: S608


def local_days_span(lo: datetime, hi: datetime, zones: set[str]) -> tuple[datetime, datetime]:
    """The UTC span of every site-local day that ``lo``..``hi`` touches in any of ``zones``: the
    bounds ``rebuild_days`` needs. An hour of margin either side covers a midnight that a
    daylight-saving change skips."""
    starts, ends = [], []
    for zone in zones:
        tz = ZoneInfo(zone)
        first, last = lo.astimezone(tz).date(), hi.astimezone(tz).date()
        starts.append(datetime.combine(first, time(), tz).astimezone(UTC))
        ends.append(datetime.combine(last + timedelta(days=1), time(), tz).astimezone(UTC))
    return min(starts) - timedelta(hours=1), max(ends) + timedelta(hours=1)


def _local_date(ts: str, zones: list[str], lo: datetime, hi: datetime, p: Params) -> str:
    """The site-local date of ``ts`` (a row joined with ``site_tz z``) between ``lo`` and ``hi``:
    offset arithmetic per zone (``warehouse.query.sql.bucket``), far cheaper than ``timezone()``."""
    days = {zone: bucket("day", ts, p, zone, DateRange(lo, hi, zone)) for zone in zones}
    if len(days) == 1:
        return next(iter(days.values()))
    return "CASE z.tz " + " ".join(f"WHEN {p(zone)} THEN {day}" for zone, day in days.items()) + " END"


_SESSION_DIM_COLUMNS = [
    c.name for c in DAILY_SESSION_VISITORS.columns
    if c.name not in ("site_id", "local_date", "visitor_key", "visits") and not c.name.startswith("prev_")
]


@dataclass(frozen=True)
class _VisitorTable:
    """A per-visitor daily table: how its rows are rebuilt from the facts, and the
    ``(dimension, value column, prev column)`` triples it feeds into ``daily_visitor_counts``
    (value column ``None``: the ``total`` dimension, value ``''``)."""

    table: Table
    rows_sql: str
    dims: tuple[tuple[str, str | None, str], ...]

    @property
    def plain_columns(self) -> list[str]:
        return [c for c in self.table.column_names if not c.startswith("prev_")]

    @property
    def value_columns(self) -> list[str]:
        return [v for _, v, _ in self.dims if v is not None]


_VISITOR_TABLES = (
    # The visit-attribute table first: its prev dates (one per attribute) take longest, and
    # overlap the other tables' SQL (``rebuild_days``). Nearly every visitor-day has one visit:
    # only the others are grouped on every attribute.
    _VisitorTable(DAILY_SESSION_VISITORS, f"""
        WITH several AS (
            SELECT site_id, local_date, visitor_key FROM day_sessions GROUP BY ALL HAVING count(*) > 1
        )
        SELECT site_id, local_date, visitor_key, {", ".join(_SESSION_DIM_COLUMNS)}, 1
        FROM day_sessions ANTI JOIN several USING (site_id, local_date, visitor_key)
        UNION ALL
        SELECT site_id, local_date, visitor_key, {", ".join(_SESSION_DIM_COLUMNS)}, count(*)
        FROM day_sessions SEMI JOIN several USING (site_id, local_date, visitor_key) GROUP BY ALL
    """, tuple((d, d, f"prev_{d}") for d in _SESSION_DIM_COLUMNS)),  # noqa: S608
    _VisitorTable(DAILY_VISITORS, """
        SELECT site_id, local_date, visitor_key, count(*) FILTER (WHERE type = 'pageview'), count(*)
        FROM day_events GROUP BY site_id, local_date, visitor_key
    """, (("total", None, "prev_date"),)),
    _VisitorTable(DAILY_PAGE_VISITORS, """
        SELECT site_id, local_date, pathname, visitor_key, count(*)
        FROM day_events WHERE type = 'pageview' GROUP BY site_id, local_date, pathname, visitor_key
    """, (("page", "pathname", "prev_date"),)),
    _VisitorTable(DAILY_EVENT_VISITORS, """
        SELECT site_id, local_date, name, visitor_key, count(*)
        FROM day_events WHERE type = 'event' GROUP BY site_id, local_date, name, visitor_key
    """, (("event", "event_name", "prev_date"),)),
)

_HOURLY_TABLES = ("hourly_rollup", "hourly_props")


def rebuild_hours(con: duckdb.DuckDBPyConnection, spans: Spans) -> None:
    """Rebuild ``hourly_rollup`` and ``hourly_props`` for the rows of ``affected_hours`` from every
    fact of those hours (a repair, an erasure: ``count_hours`` and ``update_hours`` are the
    loader's cheaper way).

    ``spans`` cover every affected hour (whole hours) so that scans of the fact tables skip
    everything else.
    """
    for table in _HOURLY_TABLES:
        con.execute(
            f"DELETE FROM {table} t USING affected_hours h"  # noqa: S608
            " WHERE t.site_id = h.site_id AND t.hour = h.hour"
        )
    _hour_rows(con, spans, "hourly_rollup", "hourly_props", _IN_AFFECTED_HOURS)


#: Which facts ``_hour_rows`` reads (besides ``spans``): those of the affected hours, or those of
#: each visitor of ``windows`` in the hours of its window (``{a}``: the fact table's alias, ``{t}``:
#: its time column).
_IN_AFFECTED_HOURS = "SEMI JOIN affected_hours h ON {a}.site_id = h.site_id AND date_trunc('hour', {t}) = h.hour"
_OF_WINDOW_VISITORS = ("SEMI JOIN windows w ON {a}.site_id = w.site_id AND {a}.visitor_key = w.visitor_key"
                       " AND {t} >= date_trunc('hour', w.ws) AND {t} < date_trunc('hour', w.we) + INTERVAL 1 HOUR")


def _hour_rows(con: duckdb.DuckDBPyConnection, spans: Spans, rollup: str, props: str, rows: str) -> None:
    """Rows of the hourly tables computed from the facts in ``spans`` that the join ``rows``
    keeps, inserted into ``rollup`` and ``props``."""
    for sql, alias, column in ((_HOUR_SESSIONS_SQL, "s", "s.started_at"), (_HOURLY_TOTAL_SQL, "e", "e.ts"),
                               (_HOURLY_EVENT_DIMS_SQL, "e", "e.ts"), (_HOURLY_PROPS_SQL, "p", "p.ts")):
        params: dict[str, object] = {}
        con.execute(sql.format(spans=spans.where(column, params), rows=rows.format(a=alias, t=column),
                               rollup=rollup, props=props), params)
    con.execute(_HOURLY_SESSIONS_SQL.format(rollup=rollup))


#: Per hourly table: its key columns, its measures (every ``BIGINT``: a sum over visitors, see
#: ``count_hours``) and the prefix of the temporary tables of a load's share in it.
_HOURLY_SHARES = tuple(
    (t.name, tuple(c.name for c in t.columns if c.type != "BIGINT"),
     tuple(c.name for c in t.columns if c.type == "BIGINT"), prefix)
    for t, prefix in ((HOURLY_ROLLUP, "hour_rows"), (HOURLY_PROPS, "hour_props"))
)


def count_hours(con: duckdb.DuckDBPyConnection, spans: Spans, stage: str) -> None:
    """What each visitor of ``windows`` contributes to the hourly tables in the hours of its
    window, from its facts as they are now: ``stage`` ``before`` (ahead of the load's changes) or
    ``after``. ``update_hours`` then moves the rows of ``affected_hours`` by the difference.

    Every measure of the hourly tables is a sum over visitors — a visit, a view, an event
    belongs to one visitor, and an hour's (or value's) distinct visitors are the visitors with
    any of them — and a load changes a visitor's facts only inside its window (events, visits
    starting there, the new events' properties). So each row moves by exactly what the windows'
    visitors contributed to it after minus before, computed from their facts in their windows'
    hours alone: the rows stay equal to a rebuild from every fact (``rebuild_hours``), at the
    cost of the changed visitors' rows rather than of every row of the hours they touch (a
    minute's late events touch dozens of full hours). ``spans``: the windows' (widened here to
    whole hours).
    """
    for table, _, _, prefix in _HOURLY_SHARES:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_{stage} AS SELECT * FROM {table} LIMIT 0")  # noqa: S608
    rollup, props = (f"{prefix}_{stage}" for _, _, _, prefix in _HOURLY_SHARES)
    _hour_rows(con, spans.to_hours(), rollup, props, _OF_WINDOW_VISITORS)


def update_hours(con: duckdb.DuckDBPyConnection) -> None:
    """Move the rows of ``affected_hours`` by what ``count_hours`` found after minus before
    (rows that reach zero go)."""
    for table, keys, measures, prefix in _HOURLY_SHARES:
        key = ", ".join(keys)
        sums = ", ".join(f"sum({m})::BIGINT AS {m}" for m in measures)
        minus = ", ".join(f"-{m}" for m in measures)
        nonzero = " OR ".join(f"sum({m}) <> 0" for m in measures)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE hour_merged AS
            SELECT {key}, {sums} FROM (
                SELECT t.* FROM {table} t SEMI JOIN affected_hours h ON t.site_id = h.site_id AND t.hour = h.hour
                UNION ALL SELECT * FROM {prefix}_after
                UNION ALL SELECT {key}, {minus} FROM {prefix}_before
            ) GROUP BY {key} HAVING {nonzero}
        """)  # noqa: S608 -- names are ours
        con.execute(f"DELETE FROM {table} t USING affected_hours h"  # noqa: S608
                    " WHERE t.site_id = h.site_id AND t.hour = h.hour")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM hour_merged")  # noqa: S608


def _contributions(spec: _VisitorTable, relation: str, sign: int, where: str = "true") -> str:
    """``(site_id, dimension, value, local_date, prev_date, n)`` rows that ``relation`` (rows of
    ``spec.table`` with their prev columns) adds (``sign`` 1) or takes away (-1) in
    ``daily_visitor_counts`` (only rows matching ``where``). A row whose prev date is its own date
    repeats a (visitor, day, value) already counted."""
    empty = "''"
    return " UNION ALL ".join(
        f"SELECT site_id, '{dim}' AS dimension, {f'CAST({col} AS VARCHAR)' if col else empty} AS value,"  # noqa: S608
        f" local_date, {prev} AS prev_date, {int(sign)} AS n FROM {relation}"
        f" WHERE {where} AND {prev} IS DISTINCT FROM local_date"
        for dim, col, prev in spec.dims
    )


def _add_to_count_delta(spec: _VisitorTable, relation: str, sign: int, where: str = "true") -> str:
    """``INSERT INTO count_delta`` of ``_contributions``, summed per row of the counts."""
    return ("INSERT INTO count_delta SELECT site_id, dimension, value, local_date, prev_date, sum(n)"  # noqa: S608
            f" FROM ({_contributions(spec, relation, sign, where)}) GROUP BY ALL")


def with_prev_dates(fresh: pl.DataFrame, history: pl.DataFrame, spec: _VisitorTable) -> pl.DataFrame:
    """``fresh`` with each prev column of ``spec``: the visitor's latest earlier date with the same
    value in ``fresh`` ∪ ``history`` (null if none). When one visitor has several rows with the
    same value on one day (the visit-attribute table), one of them (chosen deterministically) gets
    a proper prev date and the others their own date, so the day counts once."""
    values = spec.value_columns
    keys = ["site_id", "visitor_key", "local_date", *values]
    both = pl.concat(
        [fresh.select(keys).with_row_index("row"),
         history.select(keys).with_columns(pl.lit(None, pl.UInt32).alias("row")).select("row", *keys)],
        how="vertical_relaxed",
    )
    # Rows sorted by visitor (its 64-bit key first: polars rarely compares the site strings) and
    # date; ``v`` numbers the visitors. A visitor with one row has no earlier date for any value:
    # only the others are kept, each (visitor, value, date) then packed into one integer (visitor
    # number, value dictionary code, days since 1970) per value column and sorted.
    both = both.sort("visitor_key", "site_id", "local_date")
    new_visitor = ((pl.col("visitor_key") != pl.col("visitor_key").shift(1))
                   | (pl.col("site_id") != pl.col("site_id").shift(1))).fill_null(True)
    both = both.with_columns(new_visitor.cum_sum().cast(pl.UInt64).alias("v"))
    many = both.filter((pl.col("v") == pl.col("v").shift(1)) | (pl.col("v") == pl.col("v").shift(-1)))
    codes = many.select(
        "row", "local_date", "v",
        pl.col("local_date").cast(pl.Int32).alias("d"),
        *((pl.col(v).cast(pl.Categorical).to_physical().cast(pl.UInt64) + 1).fill_null(0).alias(f"c{i}")
          for i, v in enumerate(values)),
    )
    if len(values) > 1:
        # Rows of one visitor and day (same key) keep a deterministic order: their hash. They are
        # neighbours here, and the stable sorts below keep them in this order.
        same_day = (pl.col("v") == pl.col("v").shift(1)) & (pl.col("d") == pl.col("d").shift(1))
        shared = codes.select(same_day.fill_null(False) | same_day.shift(-1).fill_null(False)).to_series()
        if shared.any():
            ties = pl.repeat(0, many.height, dtype=pl.UInt64, eager=True).scatter(
                shared.arg_true(), many.filter(shared).select(pl.struct(keys).hash(seed=0)).to_series())
            codes = codes.with_columns(ties.alias("tie")).sort("v", "d", "tie").drop("tie")
    ranges = codes.select(pl.col("d").min().alias("lo"), pl.col("d").max().alias("hi"),
                          *(pl.col(f"c{i}").max().alias(f"c{i}") for i in range(len(values)))).row(0)
    packable = codes.height < 2**27 and (codes.height == 0 or (
        ranges[0] >= 0 and ranges[1] < 2**16 and all(c < 2**20 for c in ranges[2:])))
    out = fresh
    for _, col, prev in spec.dims:
        c = f"c{values.index(col)}" if col else None
        if packable:
            key = pl.col("v") * 2**36 + (pl.col(c) * 2**16 if c else 0) + pl.col("d").cast(pl.UInt64)
            x = codes.select("row", "local_date", key.alias("k")).sort("k", maintain_order=True)
            same = (pl.col("k") // 2**16) == (pl.col("k") // 2**16).shift(1)
        else:
            group = ["v"] + ([c] if c else [])
            x = codes.select("row", "local_date", *group).sort(*group, "local_date", maintain_order=True)
            same = pl.all_horizontal(pl.col(g) == pl.col(g).shift(1) for g in group)
        x = (x.with_columns(pl.when(same).then(pl.col("local_date").shift(1)).alias(prev))
             .filter(pl.col("row").is_not_null() & pl.col(prev).is_not_null()))
        column = pl.repeat(None, fresh.height, dtype=pl.Date, eager=True).alias(prev)
        out = out.with_columns(column.scatter(x.get_column("row"), x.get_column(prev)))
    return out.select(spec.table.column_names)


def rebuild_days(
    con: duckdb.DuckDBPyConnection, spans: Spans, meanwhile: Callable[[], None] | None = None,
) -> None:
    """Rebuild the per-visitor ``daily_*`` tables for the visitor-days in ``affected_days`` and
    bring ``daily_visitor_counts`` up to date with them.

    For each affected visitor, every stored row from its first affected day on is re-derived:
    rows of affected days from the facts, later rows kept, and all of them get fresh prev dates
    (a changed day can change the prev date of the visitor's next day with the same value). The
    counts are adjusted by the difference: minus what the old rows contributed, plus what the new
    ones do. ``spans`` must cover every UTC instant of those local days (``local_days_span``).

    The prev dates are computed in polars on a worker thread while this thread goes on with
    DuckDB: the next table's rows, then ``meanwhile()`` (other work on ``con`` that does not touch
    these tables), then the inserts. Each side leaves a core idle at times; together they fill
    both.
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE affected_visitors AS SELECT site_id, visitor_key,"
        " min(local_date) AS from_date FROM affected_days GROUP BY site_id, visitor_key"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE count_delta (site_id VARCHAR, dimension VARCHAR, value VARCHAR,"
        " local_date DATE, prev_date DATE, n BIGINT)"
    )
    first = con.execute("SELECT min(from_date) FROM affected_visitors").fetchall()[0][0]
    if first is None:
        if meanwhile:
            meanwhile()
        return
    zones = [row[0] for row in con.execute(
        "SELECT DISTINCT z.tz FROM site_tz z SEMI JOIN affected_visitors v ON z.site_id = v.site_id"
    ).fetchall()]
    # The rows of the affected visitor-days, read once: events for three tables, visits for one.
    for temp, table, ts, columns in (
        ("day_events", "events", "ts", "t.site_id, t.visitor_key, t.type, t.pathname, t.name"),
        ("day_sessions", "sessions", "started_at",
         ", ".join(f"t.{c}" for c in ("site_id", "visitor_key", *_SESSION_DIM_COLUMNS))),
    ):
        p = Params()
        local_date = _local_date(f"t.{ts}", zones, spans.lo, spans.hi, p)
        params: dict[str, object] = dict(p.values)
        day_rows = _day_rows(table, columns, local_date, spans.where(f"t.{ts}", params))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS {day_rows}", params)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prev-dates") as pool:
        pending = [(spec, pool.submit(with_prev_dates, fresh, history, spec))
                   for spec, fresh, history in _replace_rows(con, first)]
        if meanwhile:
            meanwhile()
        for spec, rows in pending:
            register(con, "fresh_in", rows.result())
            try:
                con.execute(f"INSERT INTO {spec.table.name} SELECT * FROM fresh_in")  # noqa: S608
                con.execute(_add_to_count_delta(spec, "fresh_in", 1))
            finally:
                con.unregister("fresh_in")
    _apply_count_delta(con)


def _replace_rows(
    con: duckdb.DuckDBPyConnection, first: date
) -> Iterator[tuple[_VisitorTable, pl.DataFrame, pl.DataFrame]]:
    """Per visitor table, in turn: take the affected visitors' rows from their first affected day
    on out of the table (and their contributions out of the counts), and yield their new rows
    (without prev dates) with the history the prev dates come from."""
    for spec in _VISITOR_TABLES:
        name = spec.table.name
        plain = ", ".join(f"i.{c}" for c in spec.plain_columns)
        # The affected visitors' stored rows from their first affected day on are replaced
        # (``local_date >= $first`` lets the scans skip older row groups); the rows before it
        # stay, and are the history the new prev dates come from.
        replaced = (f"FROM {name} t JOIN affected_visitors v ON t.site_id = v.site_id"
                    " AND t.visitor_key = v.visitor_key"
                    " WHERE t.local_date >= v.from_date AND t.local_date >= $first")
        con.execute(f"CREATE OR REPLACE TEMP TABLE replaced_rows AS SELECT t.* {replaced}", {"first": first})
        con.execute(_add_to_count_delta(spec, "replaced_rows", -1))
        con.execute(
            f"DELETE FROM {name} t USING affected_visitors v"  # noqa: S608
            " WHERE t.site_id = v.site_id AND t.visitor_key = v.visitor_key AND t.local_date >= v.from_date"
            " AND t.local_date >= $first",
            {"first": first},
        )
        fresh = con.sql(
            f"{spec.rows_sql} UNION ALL SELECT {plain} FROM replaced_rows i ANTI JOIN affected_days a"  # noqa: S608
            " ON i.site_id = a.site_id AND i.visitor_key = a.visitor_key AND i.local_date = a.local_date",
        ).pl()
        if fresh.height == 0:
            continue
        fresh.columns = spec.plain_columns
        # Only the columns the prev dates need, read straight into polars: the history is most
        # of the affected visitors' rows, and copying them whole into a temporary table cost more.
        # The whole table is scanned (it is ordered by site and time, for the panels): the rows
        # are found on the two key columns first and only theirs are read whole (``rowid``), which
        # costs a third of reading every column of every row.
        history = con.sql(
            f"SELECT site_id, visitor_key, local_date{''.join(', ' + v for v in spec.value_columns)}"  # noqa: S608
            f" FROM {name} WHERE rowid IN (SELECT t.rowid FROM {name} t SEMI JOIN affected_visitors v"
            " ON t.site_id = v.site_id AND t.visitor_key = v.visitor_key)"
        ).pl()
        yield spec, fresh, history


_COUNT_KEY = ("c.site_id = d.site_id AND c.dimension = d.dimension AND c.value IS NOT DISTINCT FROM d.value"
              " AND c.local_date = d.local_date AND c.prev_date IS NOT DISTINCT FROM d.prev_date")


def _apply_count_delta(con: duckdb.DuckDBPyConnection) -> None:
    """Add ``count_delta`` to ``daily_visitor_counts`` (rows that reach zero go)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE count_delta_sum AS SELECT site_id, dimension, value, local_date,"
        " prev_date, sum(n) AS n FROM count_delta GROUP BY ALL HAVING sum(n) <> 0"
    )
    first = con.execute("SELECT min(local_date) FROM count_delta_sum").fetchall()[0][0]
    if first is None:
        return
    # ``local_date >= $first`` lets the scans skip older row groups.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE count_merged AS
        SELECT site_id, dimension, value, local_date, prev_date, sum(n)::BIGINT AS visitors FROM (
            SELECT c.site_id, c.dimension, c.value, c.local_date, c.prev_date, c.visitors AS n
            FROM daily_visitor_counts c SEMI JOIN count_delta_sum d ON {_COUNT_KEY}
            WHERE c.local_date >= $first
            UNION ALL SELECT * FROM count_delta_sum
        ) GROUP BY ALL HAVING sum(n) <> 0
    """, {"first": first})  # noqa: S608
    con.execute(f"DELETE FROM daily_visitor_counts c USING count_delta_sum d WHERE {_COUNT_KEY}"  # noqa: S608
                " AND c.local_date >= $first", {"first": first})
    con.execute("INSERT INTO daily_visitor_counts SELECT * FROM count_merged")


def _recount(con: duckdb.DuckDBPyConnection, since: date) -> None:
    """Rebuild ``daily_visitor_counts`` from the per-visitor daily tables for every date from
    ``since`` on (later dates too: a rebuilt day changes its visitors' later prev dates)."""
    parts = " UNION ALL ".join(
        _contributions(spec, spec.table.name, 1, "local_date >= $since") for spec in _VISITOR_TABLES
    )
    con.execute("DELETE FROM daily_visitor_counts WHERE local_date >= $since", {"since": since})
    con.execute(
        "INSERT INTO daily_visitor_counts SELECT site_id, dimension, value, local_date, prev_date,"  # noqa: S608
        f" sum(n)::BIGINT FROM ({parts}) GROUP BY ALL HAVING sum(n) <> 0",
        {"since": since},
    )


def reaggregate(
    con: duckdb.DuckDBPyConnection, site_tz: dict[str, str], start: datetime, end: datetime
) -> tuple[int, int]:
    """Rebuild every pre-aggregate bucket with data in ``[start, end)`` from the facts.

    Returns ``(hours, visitor_days)`` rebuilt. One transaction. Rollup rows whose facts are gone
    (older than retention) are kept, not rebuilt.
    """
    con.begin()
    try:
        tz = pl.DataFrame({"site_id": list(site_tz), "tz": list(site_tz.values())},
                          schema={"site_id": pl.String, "tz": pl.String})
        register(con, "tz_in", tz)
        con.execute("CREATE OR REPLACE TEMP TABLE site_tz AS SELECT * FROM tz_in")
        con.execute(
            "INSERT INTO site_tz SELECT DISTINCT site_id, 'UTC' FROM events"
            " WHERE site_id NOT IN (SELECT site_id FROM site_tz)"
        )
        params = {"lo": start, "hi": end}
        con.execute("""
            CREATE OR REPLACE TEMP TABLE affected_hours AS
            SELECT DISTINCT site_id, date_trunc('hour', ts) AS hour FROM events
            WHERE ts >= $lo AND ts < $hi
        """, params)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE affected_days AS
            SELECT DISTINCT e.site_id, e.visitor_key, timezone(z.tz, e.ts)::DATE AS local_date
            FROM events e JOIN site_tz z ON e.site_id = z.site_id
            WHERE e.ts >= $lo AND e.ts < $hi
        """, params)
        hours = con.execute("SELECT count(*) FROM affected_hours").fetchall()[0][0]
        days = con.execute("SELECT count(*) FROM affected_days").fetchall()[0][0]
        rebuild_hours(con, Spans.of(start - timedelta(hours=1), end + timedelta(hours=1)))
        # Sites without a zone of their own count in UTC (above).
        day_lo, day_hi = local_days_span(start, end, set(site_tz.values()) | {"UTC"})
        rebuild_days(con, Spans.of(day_lo, day_hi))
        # The counts were adjusted by differences, which assumes they matched the per-visitor
        # rows; a re-aggregation must not trust that (it exists to repair), so recount them from
        # the first local day rebuilt on.
        _recount(con, day_lo.date())
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.unregister("tz_in")
    return int(hours), int(days)
