# ruff: noqa: S608 -- SQL is composed from our own table and column names only.
"""The physical order of the fact and per-visitor daily tables: rows grouped by site, then time.

Every question the query API asks reads one site over a time range (``site_id = $site AND ts >=
$lo AND ts < $hi``). DuckDB keeps each column's min/max per row group (122,880 rows) and skips the
row groups whose range cannot match, so where a table's rows sit decides what a query reads:
grouped by site and, within a site, by time, a site's question over a month reads that site's
month and skips the rest; rows in arrival order (every site mixed in every row group) make it read
every row in the range and compare each row's ``site_id`` (a string, ~7 ns a row).

* The loader writes rows in arrival order (sorting each chunk would cost load time, and a minute's
  chunk is too small to fill a row group with one site).
* Warehouse migration 3 re-sorts the existing rows of these tables once (``resort_tables``).
* The regular small loads append a few minutes of every site at the end of the table, so their
  row groups mix sites again (still in time order, so time ranges are skipped):
  ``resort(con, table, lo, hi)`` rewrites the rows of a closed time range day by day, each day's
  rows by site, then time; the daily retention job calls it for the days before yesterday
  (``resort_closed_days``), and a load that wrote rows of closed days (a backfill) for those days
  (``loaded_closed_days``). Within a day is less than over the whole table when a day holds only
  a few row groups, but it never rewrites more than the days in question.

The order never changes an answer: it only decides which row groups a query can skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from warehouse.tables import ALL_TABLES, Table


@contextmanager
def _insertion_order(con: Any) -> Iterator[None]:
    """Inserts keep the order of their input while inside (the warehouse's connections do not
    otherwise: it saves memory on the loads' inserts)."""
    was = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if was else 'false'}")


#: Table → the time column its rows are ordered by within a site.
SORT_KEYS: dict[str, str] = {
    "events": "ts",
    "sessions": "started_at",
    "event_props": "ts",
    "daily_visitors": "local_date",
    "daily_session_visitors": "local_date",
    "daily_page_visitors": "local_date",
    "daily_event_visitors": "local_date",
}


def order_by(table: str) -> str:
    """The ``ORDER BY`` list a table's rows are written in."""
    return f"site_id, {SORT_KEYS[table]}"


def resort_tables(con: Any) -> None:
    """Rewrite every table of ``SORT_KEYS`` in ``order_by`` order (warehouse migration 3): a copy
    under the table's declaration is filled sorted, then takes the table's place. A table whose
    columns differ from the declaration is left as it is (a pre-aggregate the warehouse process
    rebuilds; a fact table it refuses, saying what to do)."""
    with _insertion_order(con):
        for table in (t for t in ALL_TABLES if t.name in SORT_KEYS):
            _rewrite(con, table)


def _rewrite(con: Any, table: Table) -> None:
    name = table.name
    found = tuple(r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main'"
        " AND table_name = ? ORDER BY ordinal_position", [name]).fetchall())
    if found != table.column_names:
        return
    copy = f"{name}__sorted"
    con.execute(table.ddl().replace(f"IF NOT EXISTS {name} ", f"{copy} ", 1))
    con.execute(f"INSERT INTO {copy} SELECT * FROM {name} ORDER BY {order_by(name)}")
    con.execute(f"DROP TABLE {name}")
    con.execute(f"ALTER TABLE {copy} RENAME TO {name}")


def _bounds(table: str, lo: datetime, hi: datetime) -> tuple[str, dict[str, Any]]:
    column = SORT_KEYS[table]
    if column == "local_date":
        return (f"{column} >= $lo AND {column} < $hi",
                {"lo": lo.astimezone(UTC).date(), "hi": hi.astimezone(UTC).date()})
    return f"{column} >= $lo AND {column} < $hi", {"lo": lo, "hi": hi}


def resort(con: Any, table: str, lo: datetime, hi: datetime) -> int:
    """Rewrite the rows of ``table`` in ``[lo, hi)`` (UTC midnights; a daily table's local dates
    of those days) day by day, each day's rows grouped by site and in time order, in one
    transaction; the rows rewritten. Call it only for ranges no load rewrites any more (closed
    days)."""
    cond, params = _bounds(table, lo, hi)
    temp = f"resorted_{table}"
    day = f"CAST({SORT_KEYS[table]} AS DATE)"  # the connection's time zone is UTC
    with _insertion_order(con):
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS SELECT * FROM {table} WHERE {cond}"
                        f" ORDER BY {day}, {order_by(table)}", params)
            n = int(con.execute(f"SELECT count(*) FROM {temp}").fetchall()[0][0])
            if n:
                con.execute(f"DELETE FROM {table} WHERE {cond}", params)
                con.execute(f"INSERT INTO {table} SELECT * FROM {temp}")
            con.execute(f"DROP TABLE {temp}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return n


def is_grouped(con: Any, table: str, lo: datetime, hi: datetime) -> bool:
    """Whether the rows of ``table`` in ``[lo, hi)`` already lie in ``order_by`` order, one after
    another (``rowid`` order), so ``resort`` has nothing to gain."""
    cond, params = _bounds(table, lo, hi)
    key = SORT_KEYS[table]
    row = con.execute(
        f"SELECT count(*), coalesce(max(rowid) - min(rowid) + 1, 0), count(*) FILTER (WHERE out_of_order)"
        f" FROM (SELECT rowid, (site_id, {key}) < lag((site_id, {key})) OVER (ORDER BY rowid) AS out_of_order"
        f" FROM {table} WHERE {cond})", params,
    ).fetchall()[0]
    rows, span, out_of_order = (int(v) for v in row)
    return rows == span and out_of_order == 0


def closed_days(today: date | None = None, days: int = 7) -> list[date]:
    """The ``days`` UTC days before yesterday, oldest first: events arrive at most 24 h late, so
    no regular load rewrites their rows any more."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=back) for back in range(days + 1, 1, -1)]


def resort_days(con: Any, days: Iterable[date]) -> dict[str, int]:
    """Re-sort, table by table, the rows of ``days`` (UTC days; a daily table's local dates of
    those days) where a day's rows are not grouped yet; the rows rewritten per table. Each run of
    consecutive such days is rewritten in one pass. A day already grouped costs one scan of its
    rows."""
    done: dict[str, int] = {}
    for table in SORT_KEYS:
        runs: list[list[date]] = []
        for day in sorted(set(days)):
            lo = datetime.combine(day, time(), UTC)
            if is_grouped(con, table, lo, lo + timedelta(days=1)):
                continue
            if runs and runs[-1][-1] == day - timedelta(days=1):
                runs[-1].append(day)
            else:
                runs.append([day])
        for run in runs:
            lo = datetime.combine(run[0], time(), UTC)
            n = resort(con, table, lo, lo + timedelta(days=len(run)))
            if n:
                done[table] = done.get(table, 0) + n
    return done


def resort_closed_days(con: Any, today: date | None = None, days: int = 7) -> dict[str, int]:
    """Re-sort the closed days (``closed_days``) whose rows are not grouped yet. Run daily, it keeps
    every day but the last two grouped by site."""
    return resort_days(con, closed_days(today, days))


def loaded_closed_days(partition_days: Iterable[date], today: date | None = None) -> list[date]:
    """The closed days a load of raw partitions of ``partition_days`` (a backfill, files restored
    into old partitions) wrote rows of: each closed day and its closed neighbours (a site-local
    date, a visit continued across midnight). A regular load (today's and yesterday's partitions)
    has none."""
    today = today or datetime.now(UTC).date()
    last = today - timedelta(days=2)
    near = {d + timedelta(days=k) for d in partition_days if d <= last for k in (-1, 0, 1)}
    return sorted(d for d in near if d <= last)
