"""The shared catalog: every node's warehouse tables in one DuckLake.

A cluster keeps the warehouse tables of ``warehouse.tables`` in a DuckLake: the catalog (which
tables exist, their snapshots, which Parquet files hold which rows) lives in PostgreSQL
(``catalog_dsn``), the rows in Parquet files on the object storage under
``s3://<s3_bucket>/<s3_prefix>lake/``. ``connect_shared`` returns a DuckDB connection with the
lake attached and selected, so the code written for the local ``warehouse.duckdb`` — the loader
(``warehouse.load.load_pending``: one transaction per chunk over every table), the pre-aggregates,
the query runner — runs on it unchanged; each commit is one DuckLake snapshot, so a reader on any
node sees a load whole or not at all.

DuckDB's extensions (``httpfs``, ``postgres_scanner``, ``ducklake``) come from the PyPI wheels
pinned with DuckDB itself (the ``cluster`` extra) and are loaded from their files: a node never
downloads anything.

``init`` creates the tables once for the whole cluster (``littlestats cluster init``), recording the
schema version as ``warehouse.migrations`` does for a local file; ``connect_shared`` refuses a lake
whose version this release does not know.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from littlestats.config import Settings
from warehouse.migrations import LATEST, check_supported, migrate, schema_version

log = logging.getLogger("littlestats.cluster")

#: The name the lake is attached under (and the default catalog of a shared connection).
LAKE = "lake"
#: DuckDB extensions a shared connection loads, by the PyPI wheel that ships each file.
EXTENSIONS = (("httpfs", "duckdb_extension_httpfs"),
              ("postgres_scanner", "duckdb_extension_postgres_scanner"),
              ("ducklake", "duckdb_extension_ducklake"))
#: Inserts of up to this many rows are kept in the catalog database instead of a Parquet file of
#: their own: a steady-state load changes a few hundred pre-aggregate rows per table, and one
#: object per table per load would make every later query open thousands of tiny files.
DATA_INLINING_ROW_LIMIT = 1000
#: Commit conflicts (another node's commit in between) retried this many times by ``init``.
CONFLICT_RETRIES = 5

T = TypeVar("T")


class CatalogError(RuntimeError):
    """The cluster's catalog settings are missing or its extensions are not installed."""


def extension_files() -> list[Path]:
    """The extension files of the installed wheels, in load order."""
    found = []
    for name, module in EXTENSIONS:
        spec = importlib.util.find_spec(module)
        files = (sorted(Path(spec.origin).parent.glob(f"extensions/*/{name}.duckdb_extension"))
                 if spec and spec.origin else [])
        if not files:
            raise CatalogError(
                f"the DuckDB extension {name} is not installed: install LittleStats with its"
                f" cluster extra (pip install 'littlestats[cluster]'), which brings {module}")
        found.append(files[-1])
    return found


def data_path(settings: Settings) -> str:
    """Where the lake's Parquet files go: ``s3://<bucket>/<prefix>lake/``."""
    prefix = settings.s3_prefix.strip("/")
    return f"s3://{settings.s3_bucket}/{prefix + '/' if prefix else ''}lake/"


def _literal(text: str) -> str:
    """``text`` as a SQL string literal (ATTACH and CREATE SECRET take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _s3_secret(settings: Settings) -> str:
    endpoint = settings.s3_endpoint
    match = re.match(r"^(https?)://([^/]+)/?$", endpoint)
    if not match:
        raise CatalogError(f"setting 's3_endpoint' must be http(s)://host:port, not {endpoint!r}")
    use_ssl = match.group(1) == "https"
    return (
        "CREATE OR REPLACE TEMPORARY SECRET lake_s3 (TYPE s3"
        f", KEY_ID {_literal(settings.s3_access_key)}, SECRET {_literal(settings.s3_secret_key)}"
        f", ENDPOINT {_literal(match.group(2))}, REGION {_literal(settings.s3_region)}"
        f", URL_STYLE 'path', USE_SSL {'true' if use_ssl else 'false'}"
        f", SCOPE {_literal(f's3://{settings.s3_bucket}')})"
    )


def _attach(settings: Settings, read_only: bool) -> str:
    options = [f"DATA_PATH {_literal(data_path(settings))}",
               f"DATA_INLINING_ROW_LIMIT {DATA_INLINING_ROW_LIMIT}"]
    if read_only:
        options.append("READ_ONLY")
    return (f"ATTACH {_literal('ducklake:postgres:' + settings.catalog_dsn)} AS {LAKE}"
            f" ({', '.join(options)})")


def connect_shared(
    settings: Settings, read_only: bool = False, threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the cluster's lake attached as the default catalog.

    Unqualified table names are the warehouse tables of the lake; temporary tables and registered
    frames stay local to the connection, as with a local file. Like ``warehouse.database.connect``
    the session is pinned to UTC. ``read_only`` attaches the lake read-only (a query node). A lake
    of a newer schema version than this release knows is refused (``WarehouseTooNew``); one not
    created yet (``init``) reads as version 0.
    """
    for key in ("catalog_dsn", "s3_endpoint", "s3_bucket"):
        if not getattr(settings, key):
            raise CatalogError(f"setting {key!r} is needed for the shared catalog (docs/cluster.md)")
    files = extension_files()
    config: dict[str, str | bool | int | float | list[str]] = {
        "preserve_insertion_order": False, "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for path in files:
            con.execute(f"LOAD {_literal(str(path))}")
        con.execute(_s3_secret(settings))
        con.execute(_attach(settings, read_only))
        con.execute(f"USE {LAKE}")
        check_supported(schema_version(con), f"the catalog {LAKE}")
    except BaseException:
        con.close()
        raise
    return con


def retry_conflicts(work: Callable[[], T], retries: int = CONFLICT_RETRIES) -> T:
    """Run ``work``; when its commit conflicts with another node's, run it again."""
    for attempt in range(retries + 1):
        try:
            return work()
        except duckdb.TransactionException as exc:
            if attempt == retries:
                raise
            log.info("catalog commit conflicted (%s); retrying", exc)
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def init(settings: Settings) -> int:
    """Create the warehouse tables in the lake, or bring them to this release's schema version
    (``warehouse.migrations``: the same steps as a local file). Idempotent, and safe while other
    nodes run it too; returns the schema version."""
    con = connect_shared(settings)
    try:
        retry_conflicts(lambda: _migrate(con))
        return schema_version(con)
    finally:
        con.close()


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    if schema_version(con):
        migrate(con, f"the catalog {LAKE}")  # each step commits on its own
        return
    # A new lake: every table and the version row in one commit, so a node that runs init at
    # the same moment either conflicts (and retries, finding the tables) or sees them all.
    con.begin()
    try:
        migrate(con, f"the catalog {LAKE}")
        con.commit()
    except BaseException:
        con.rollback()
        raise


__all__ = ["LAKE", "LATEST", "CatalogError", "connect_shared", "data_path", "extension_files",
           "init", "retry_conflicts"]
