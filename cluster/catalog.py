"""The shared catalog: every node's warehouse tables in one DuckLake.

A cluster keeps the warehouse tables of ``warehouse.tables`` in a DuckLake: the catalog (which
tables exist, their snapshots, which Parquet files hold which rows) lives in PostgreSQL
(``catalog_dsn``), the rows in Parquet files on the object storage under
``s3://<s3_bucket>/<s3_prefix>lake/``. ``connect_shared`` returns a DuckDB connection whose
database is the lake, as ``warehouse.database.connect`` opens the local file, so the code written
for ``warehouse.duckdb`` — the loader
(``warehouse.load.load_pending``: one transaction per chunk over every table), the pre-aggregates,
the query runner — runs on it unchanged; each commit is one DuckLake snapshot, so a reader on any
node sees a load whole or not at all.

DuckDB's extensions (``httpfs``, ``postgres_scanner``, ``ducklake``) come from the PyPI wheels
pinned with DuckDB itself (the ``cluster`` extra): they are installed from the wheels' files into
``<data_dir>/duckdb-extensions`` on first use and loaded from there; a node never downloads
anything.

``init`` creates the tables once for the whole cluster (``littlestats cluster init``), recording the
schema version as ``warehouse.migrations`` does for a local file; ``connect_shared`` refuses a lake
whose version this release does not know.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb

from littlestats.config import Settings
from warehouse.database import DATABASE_CONFIG
from warehouse.migrations import LATEST, check_supported, migrate, schema_version

log = logging.getLogger("littlestats.cluster")

#: The name ``init`` attaches the lake under (a shared connection opens it as its database).
LAKE = "lake"
#: DuckDB extensions a shared connection loads, by the PyPI wheel that ships each file.
EXTENSIONS = (("httpfs", "duckdb_extension_httpfs"),
              ("postgres_scanner", "duckdb_extension_postgres_scanner"),
              ("ducklake", "duckdb_extension_ducklake"))
#: Inserts of up to this many rows are kept in the catalog database instead of a Parquet file of
#: their own: a steady-state load changes a few hundred pre-aggregate rows per table, and one
#: object per table per load would make every later query open thousands of tiny files.
DATA_INLINING_ROW_LIMIT = 1000
#: Snapshots kept by ``maintain``: a reader's snapshot never lives this long.
KEEP_SNAPSHOTS = timedelta(hours=1)
#: Commit conflicts (another node's commit in between) retried this many times by ``init``.
CONFLICT_RETRIES = 5

T = TypeVar("T")


class CatalogError(RuntimeError):
    """The shared catalog cannot be used: a setting is missing, the extensions are not installed,
    the lake has not been created (``init``) or was created for another data path."""


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


def extension_directory(settings: Settings) -> Path:
    """A DuckDB extension directory holding the wheels' extensions (installed from their files on
    first use), so DuckDB loads them by itself when it opens the lake."""
    directory = settings.data_dir / "duckdb-extensions"
    marker = directory / f"installed-{duckdb.__version__}"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes of a node start at once
        if not marker.exists():
            con = duckdb.connect(config={"extension_directory": str(directory)})
            try:
                for path in extension_files():
                    con.execute(f"FORCE INSTALL {_literal(str(path))}")
            finally:
                con.close()
            marker.touch()
    return directory


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


def _lake_path(settings: Settings) -> str:
    return f"ducklake:postgres:{settings.catalog_dsn}"


def _check_settings(settings: Settings) -> None:
    for key in ("catalog_dsn", "s3_endpoint", "s3_bucket"):
        if not getattr(settings, key):
            raise CatalogError(f"setting {key!r} is needed for the shared catalog (docs/cluster.md)")


def _config(settings: Settings, threads: int | None, memory_limit: str | None,
            ) -> dict[str, str | bool | int | float | list[str]]:
    config: dict[str, str | bool | int | float | list[str]] = {
        **DATABASE_CONFIG,
        # A lake's Parquet files are written once under new names and never changed: their sizes
        # (and footers: parquet_metadata_cache, set once the connection is open) can be kept
        # between queries, about a fifth off a dashboard question.
        "enable_http_metadata_cache": True,
        "extension_directory": str(extension_directory(settings)),
        "autoinstall_known_extensions": False,  # never a download
        "autoload_known_extensions": True,
    }
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    return config


def _stored_data_path(settings: Settings) -> str | None:
    """The data path the catalog was created with (``init``); None for a catalog not created."""
    import psycopg

    with psycopg.connect(settings.catalog_dsn, connect_timeout=10) as pg:
        found = pg.execute("SELECT to_regclass('ducklake_metadata') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return None
        row = pg.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()
    return str(row[0]) if row else None


def connect_shared(
    settings: Settings, read_only: bool = False, threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose database is the cluster's lake, as ``warehouse.database.connect``
    opens the local file.

    Unqualified table names are the warehouse tables of the lake, on the connection and on every
    cursor of it; temporary tables and registered frames stay local to the connection, as with a
    local file. The session is pinned to UTC. ``read_only`` opens the lake read-only (a query
    node). A catalog not created yet (``init``), or created for another bucket or prefix, is
    refused (``CatalogError``); so is one of a newer schema version than this release knows
    (``WarehouseTooNew``).
    """
    _check_settings(settings)
    stored = _stored_data_path(settings)
    if stored is None:
        raise CatalogError("the shared catalog has not been created: run `littlestats cluster init`"
                           " once for the cluster")
    if stored != data_path(settings):
        raise CatalogError(f"the shared catalog keeps its data at {stored}, but this node's settings"
                           f" (s3_bucket, s3_prefix) say {data_path(settings)}")
    con = duckdb.connect(_lake_path(settings), read_only=read_only,
                         config=_config(settings, threads, memory_limit))
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Results go to polars as Arrow string views, the layout polars keeps strings in: no copy.
        con.execute("SET produce_arrow_string_view = true")
        con.execute("SET GLOBAL parquet_metadata_cache = true")
        con.execute(_s3_secret(settings))
        check_supported(schema_version(con), "the shared catalog")
    except BaseException:
        con.close()
        raise
    return con


@dataclass
class Maintenance:
    """What ``maintain`` did: tables whose inlined rows went to files, files rewritten without
    their deleted rows, files merged, snapshots expired, files removed from the object storage."""

    flushed: int = 0
    rewritten: int = 0
    merged: int = 0
    expired: int = 0
    removed: int = 0
    seconds: float = 0.0


def maintain(con: duckdb.DuckDBPyConnection, keep: timedelta = KEEP_SNAPSHOTS) -> Maintenance:
    """Keep the lake quick to read after many small loads (on a connection from
    ``connect_shared``; the cluster's loader runs it between loads, holding its lease, since a
    rewrite of a table conflicts with a load's commit to it).

    Every load adds files (and delete files, for the visits and pre-aggregate rows it replaces)
    to each table it touches; a query opens every one of them. This writes inlined rows out,
    rewrites files whose rows are mostly deleted, merges small files, then forgets snapshots
    older than ``keep`` and removes the files only they used (a reader's snapshot is seconds old).
    """
    started = time.monotonic()
    lake = _literal(con.execute("SELECT current_database()").fetchall()[0][0])
    done = Maintenance()
    done.flushed = len(con.execute(f"CALL ducklake_flush_inlined_data({lake})").fetchall())
    done.rewritten = len(con.execute(
        f"CALL ducklake_rewrite_data_files({lake}, delete_threshold => 0.5)").fetchall())
    done.merged = len(con.execute(f"CALL ducklake_merge_adjacent_files({lake})").fetchall())
    older = {"older": datetime.now(UTC) - keep}
    done.expired = len(con.execute(
        f"CALL ducklake_expire_snapshots({lake}, older_than => $older)", older).fetchall())
    done.removed = len(con.execute(
        f"CALL ducklake_cleanup_old_files({lake}, older_than => $older)", older).fetchall())
    done.seconds = time.monotonic() - started
    return done


#: What another node's simultaneous commit looks like: DuckLake's snapshot conflict, or PostgreSQL
#: refusing a second creation of the catalog's own tables.
_CONFLICT = re.compile(r"conflict|already exists|duplicate key|unique constraint", re.IGNORECASE)


def retry_conflicts(work: Callable[[], T], retries: int = CONFLICT_RETRIES) -> T:
    """Run ``work``; when its commit conflicts with another node's, run it again."""
    for attempt in range(retries + 1):
        try:
            return work()
        except duckdb.Error as exc:
            if attempt == retries or not _CONFLICT.search(str(exc)):
                raise
            log.info("catalog commit conflicted (%s); retrying", exc)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def init(settings: Settings) -> int:
    """Create the lake (its catalog in PostgreSQL, its data path on the object storage) and the
    warehouse tables in it, or bring them to this release's schema version
    (``warehouse.migrations``: the same steps as a local file). Idempotent, and safe while other
    nodes run it too; returns the schema version."""
    _check_settings(settings)
    return retry_conflicts(lambda: _init(settings))


def init_step(settings: Settings) -> str:
    """``init`` as a step of ``littlestats cluster init``: what it did, in a line."""
    if not settings.catalog_dsn:
        return "skipped: no catalog_dsn"
    version = init(settings)
    return f"lake at {data_path(settings)}: warehouse tables at schema version {version}"


def _init(settings: Settings) -> int:
    con = duckdb.connect(config=_config(settings, None, None))
    try:
        con.execute(_s3_secret(settings))
        con.execute(f"ATTACH {_literal(_lake_path(settings))} AS {LAKE}"
                    f" (DATA_PATH {_literal(data_path(settings))})")
        con.execute(f"USE {LAKE}")
        _migrate(con)
        con.execute(f"CALL {LAKE}.set_option('data_inlining_row_limit', {DATA_INLINING_ROW_LIMIT})")
        return schema_version(con)
    finally:
        con.close()


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    if schema_version(con):
        migrate(con, "the shared catalog")  # each step commits on its own
        return
    # A new lake: every table and the version row in one commit, so a node that runs init at
    # the same moment either conflicts (and retries, finding the tables) or sees them all.
    con.begin()
    try:
        migrate(con, "the shared catalog")
        con.commit()
    except BaseException:
        # a commit that failed (another node's conflicting commit) leaves no transaction behind
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise


__all__ = ["LATEST", "CatalogError", "Maintenance", "connect_shared", "data_path",
           "extension_files", "init", "init_step", "maintain", "retry_conflicts"]
