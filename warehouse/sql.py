"""Analysts' read-only SQL over the live warehouse (``littlestats sql``, ``POST /api/v2/sql``).

The warehouse process holds ``warehouse.duckdb`` for writing, so an analyst's query runs inside it,
on its own cursor, in three guarded steps:

1. **One read statement.** DuckDB's own parser splits the text (``duckdb.extract_statements``);
   exactly one ``SELECT`` statement (``WITH``, ``FROM …``, ``VALUES``, ``DESCRIBE``, ``SUMMARIZE``
   parse as one) is accepted. ``INSERT``, ``COPY``, ``ATTACH``, ``PRAGMA``, ``SET``, ``CALL``,
   ``LOAD``, ``EXPORT`` … are refused by statement type, never by pattern matching.
2. **Only the documented tables.** The statement's syntax tree (DuckDB's ``json_serialize_sql``)
   is walked: every table it names must be one of the warehouse tables of docs/schema.md (or a
   ``WITH`` name of the query), unqualified; table functions are refused (``read_parquet``,
   ``read_csv``, ``query``, ``glob``, ``duckdb_settings`` …) except ``range``/``generate_series``/
   ``unnest``; a few scalar functions that read the server's settings are refused too.
3. **Only the caller's sites.** On the query's cursor each documented table is shadowed by a
   temporary view of the same name holding only the rows of the caller's sites (every row, for
   admins); unqualified names resolve to the temporary views first. The statement then runs in a
   ``READ ONLY`` transaction, is interrupted after ``time_limit`` seconds, and at most
   ``max_rows`` rows come back (``truncated`` says when there were more).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from warehouse.tables import ALL_TABLES

#: The tables an analyst may name (every one has ``site_id``; docs/schema.md describes them).
TABLES = tuple(t.name for t in ALL_TABLES if "site_id" in t.column_names)
#: Table functions that only generate values (no file, setting or catalog behind them).
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
#: Scalar functions that would show the server's configuration or write to its log.
REFUSED_FUNCTIONS = frozenset({"current_setting", "write_log", "getenv", "json_execute_serialized_sql",
                               "current_query", "json_deserialize_sql"})
#: Syntax-tree node types (outside table references) that are never part of a plain read.
_REFUSED_NODES = frozenset({"COLUMN_DATA", "DELIM_GET"})


_TOO_DEEP = "the query is nested too deeply to be checked; flatten its subqueries (WITH helps)"


class SqlRefused(ValueError):
    """The text is not one read-only query over the documented tables; the message says why."""


class SqlTimeLimit(RuntimeError):
    """The query ran longer than the time limit and was interrupted."""


class SqlFailed(ValueError):
    """DuckDB could not run the query (a syntax, name or type error in it, or out of memory)."""


@dataclass(frozen=True)
class SqlAnswer:
    """The rows of an analyst's query (at most ``max_rows``), whether more were cut off, and the
    DuckDB type of each column (``VARCHAR``, ``BIGINT``, ``TIMESTAMP WITH TIME ZONE`` …)."""

    table: pa.Table
    truncated: bool
    types: tuple[str, ...] = ()


def check_statement(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    """Refuse (``SqlRefused``) anything but one read query over the documented tables."""
    if not sql.strip():
        raise SqlRefused("the query is empty: send one SELECT statement")
    if "\x00" in sql:  # DuckDB 1.5's parser ends the text there
        raise SqlRefused("the query contains a NUL character, which the SQL parser cannot read;"
                         " write chr(0) for one in a value")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        if "expression depth" in str(exc):  # the parser's own limit (DuckDB 1.5's is 1000)
            raise SqlRefused(_TOO_DEEP) from None
        raise SqlFailed(_first_line(exc)) from None
    if len(statements) != 1:
        raise SqlRefused(f"send exactly one statement (got {len(statements)}); "
                         "split the text into one request per query")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SqlRefused(f"only a read query (SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE) is "
                         f"allowed here, not a {kind.name} statement: the warehouse is read-only")
    raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    try:
        tree = orjson.loads(raw[0]) if raw else {"error": True}
    except orjson.JSONDecodeError:  # nested deeper than the syntax tree reader follows
        raise SqlRefused(_TOO_DEEP) from None
    if tree.get("error"):
        if "Only SELECT" in str(tree.get("error_message")):  # a PRAGMA DuckDB parses as a SELECT
            raise SqlRefused(f"only a read query (SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE)"
                             f" is allowed here, not a {sql.split()[0].upper()} statement: the"
                             " warehouse is read-only")
        raise SqlRefused(f"the query cannot be checked: {tree.get('error_message', 'unsupported syntax')}")
    ctes = set(_cte_names(tree))
    system = _system_names(con)
    for name in sorted(ctes & system):
        raise SqlRefused(f"WITH name {name!r} is the name of a system table; choose another name")
    try:
        for node in _nodes(tree):
            _check_node(node, ctes)
    except SqlRefused:
        raise
    except Exception as exc:  # a tree shape this check does not know: refuse rather than guess
        raise SqlRefused(f"the query cannot be checked ({type(exc).__name__}); simplify it") from None


def _check_node(node: dict[str, Any], ctes: set[str]) -> None:
    kind = node.get("type")
    if not isinstance(kind, str):  # e.g. a sample's or a cast's type description
        kind = ""
    if kind in ("BASE_TABLE", "SHOW_REF") and "table_name" in node:
        name = node.get("table_name") or ""
        if kind == "SHOW_REF" and not name:
            return
        if node.get("catalog_name") or node.get("schema_name"):
            qualified = ".".join(p for p in (node.get("catalog_name"), node.get("schema_name"), name) if p)
            raise SqlRefused(f"table {qualified!r}: name tables without a catalog or schema "
                             f"(one of {', '.join(TABLES)})")
        if name.lower() not in TABLES and name.lower() not in ctes:
            raise SqlRefused(f"unknown table {name!r}: query one of {', '.join(TABLES)} "
                             "(files and other tables are not reachable here)")
    elif kind == "TABLE_FUNCTION":
        function = node.get("function") or {}
        name = str(function.get("function_name", "")).lower()
        if name not in ALLOWED_TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
            raise SqlRefused(f"table function {name!r} is not allowed: read files with the raw export "
                             f"(docs/export.md); here only {', '.join(TABLES)} and "
                             f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}")
    elif node.get("class") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in REFUSED_FUNCTIONS:
            raise SqlRefused(f"function {name!r} is not allowed here")
        # DuckDB 1.5's parser itself names the functions behind literals (``{'a': 1}``,
        # ``[1, 2]``) with the schema ``main``
        if node.get("catalog") or node.get("schema") not in (None, "", "main"):
            raise SqlRefused(f"function {name!r}: name functions without a catalog or schema")
    elif kind in _REFUSED_NODES:
        raise SqlRefused(f"{kind} is not allowed here")


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every object of a serialized syntax tree, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _cte_names(tree: Any) -> Iterator[str]:
    for node in _nodes(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map") or []:
                if isinstance(entry, dict) and "key" in entry:
                    yield str(entry["key"]).lower()


def _system_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of every table and view DuckDB knows besides the documented tables (system views
    such as ``duckdb_settings`` or ``pg_settings``): a ``WITH`` name may not shadow one."""
    rows = con.execute("SELECT view_name FROM duckdb_views() UNION SELECT table_name FROM duckdb_tables()"
                       ).fetchall()
    return {str(r[0]).lower() for r in rows} - set(TABLES)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _shadow_tables(cur: duckdb.DuckDBPyConnection, sites: list[str] | None) -> None:
    """Temporary views named like the documented tables, over the caller's sites only."""
    catalog = cur.execute("SELECT current_database()").fetchone()
    assert catalog is not None
    db = '"' + str(catalog[0]).replace('"', '""') + '"'
    if sites is not None:
        cur.execute("CREATE TEMP TABLE analyst_sites (site_id VARCHAR)")
        if sites:
            cur.execute("INSERT INTO temp.main.analyst_sites SELECT unnest(?::VARCHAR[])", [sites])
    where = "" if sites is None else " WHERE site_id IN (SELECT site_id FROM temp.main.analyst_sites)"
    for name in TABLES:  # our own declared table names, not input
        cur.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {db}.main.{name}{where}")  # noqa: S608


def run_readonly(
    con: duckdb.DuckDBPyConnection, sql: str, sites: list[str] | None, *, time_limit: float,
    max_rows: int,
) -> SqlAnswer:
    """Run an analyst's query read-only on a new cursor of ``con``.

    ``sites`` are the site ids the caller may see (``None``: every site, for admins and the CLI on
    the server). Raises ``SqlRefused`` (not one read query over the documented tables),
    ``SqlTimeLimit`` (ran over ``time_limit`` seconds) or ``SqlFailed`` (DuckDB's own error).
    """
    cur = con.cursor()
    timer: threading.Timer | None = None
    timed_out = threading.Event()
    try:
        check_statement(sql, cur)
        _shadow_tables(cur, sites)
        cur.execute("BEGIN TRANSACTION READ ONLY")

        def interrupt() -> None:
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(time_limit, interrupt)
        timer.daemon = True
        timer.start()
        try:
            relation = cur.sql(sql)
            types = tuple(str(t) for t in relation.types)
            # ``to_arrow_reader`` since DuckDB 1.4; ``fetch_arrow_reader`` before (deprecated since)
            to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            reader = to_reader(batch_size=min(max_rows + 1, 65_536))
            batches: list[pa.RecordBatch] = []
            rows = 0
            truncated = False
            for batch in reader:
                if rows + batch.num_rows > max_rows:
                    batches.append(batch.slice(0, max_rows - rows))
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.Error as exc:
            if timed_out.is_set():
                raise SqlTimeLimit(f"the query ran longer than the time limit of {time_limit:g} s "
                                   "and was stopped: narrow it (a date range, fewer joins) or "
                                   "query a pre-aggregate") from None
            raise SqlFailed(_first_line(exc)) from None
        return SqlAnswer(table, truncated, types)
    finally:
        if timer is not None:
            timer.cancel()
        cur.close()
