"""Opening the warehouse DuckDB file with the settings every connection needs."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import duckdb
import polars as pl

from littlestats.disk import is_disk_full
from warehouse.migrations import check_supported, migrate, schema_version

log = logging.getLogger(__name__)

#: DuckDB 1.x: a cluster node's (the cluster extra pins the version its catalog's extensions are
#: built for, docs/cluster.md#duckdb-versions); one machine runs 2.x. What differs is decided here.
DUCKDB_1 = int(duckdb.__version__.split(".")[0]) < 2

#: Settings of every warehouse database, whatever it is (a local file or the cluster's lake).
DATABASE_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    # Row order of INSERT ... SELECT does not matter to us; not keeping it saves memory.
    "preserve_insertion_order": False,
}
if DUCKDB_1:
    # DuckDB 1.5 turns a join against a few rows of a registered frame into an IN filter that it
    # pushes into pyarrow, which cannot take UBIGINT values above 2^63 (half our visitor keys):
    # the load fails with "Python int too large to convert to C long". The other dynamic join
    # filters (min/max) are kept.
    DATABASE_CONFIG["dynamic_or_filter_threshold"] = 0

#: DuckDB's default (16 MB) checkpoints after nearly every load, rewriting the same recent row
#: groups each minute; a larger log is replayed on open after a crash (a few seconds per 100 MB).
CHECKPOINT_THRESHOLD = "256MB"


def connect(
    path: Path, read_only: bool = False, threads: int | None = None, memory_limit: str | None = None,
    checkpoint_threshold: str | None = CHECKPOINT_THRESHOLD,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse database; for writers, create its tables or migrate them to this
    version's schema (``warehouse.migrations``). A file of a newer schema is refused.

    A writer removes an empty (0-byte) database file first, and a file it created itself is
    removed again if creating the database fails (a full disk): neither can hold data, and
    either would keep DuckDB from opening the database for ever after.

    Sessions are pinned to UTC so ``TIMESTAMPTZ`` values come back in UTC whatever the machine's
    zone; site-local dates are computed explicitly with ``timezone(site_tz, ts)``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    if not read_only:
        _remove_empty_database(path)
        created = not path.exists()
    try:
        return _open(path, read_only, threads, memory_limit, checkpoint_threshold)
    except Exception as exc:
        if created and is_disk_full(exc):
            # This call made the file (a first load, on a disk that then filled up): a half-made
            # database would block every later start ("not a valid DuckDB database file").
            # Only a file this call created is removed, and only after a full disk (not, say,
            # the lock of another process that created it meanwhile).
            _remove_new_database(path)
        raise


def _remove_empty_database(path: Path) -> None:
    """Remove a 0-byte database file: DuckDB writes its header when it creates a file, so an
    empty one holds nothing, and DuckDB refuses to open it. A crash or a full disk during the
    very first creation leaves one behind."""
    try:
        if path.stat().st_size != 0:
            return
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        try:  # DuckDB holds a lock on a file it is creating: leave that one alone
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        if os.fstat(fd).st_size != 0:
            return
    finally:
        os.close(fd)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        # A log beside an empty file is not ours to judge: set both aside rather than delete.
        aside = path.with_name(f"{path.name}.empty-{int(time.time())}")
        wal.rename(aside.with_name(aside.name + ".wal"))
        path.rename(aside)
        log.warning("set aside the empty warehouse database %s and its log as %s", path, aside)
        return
    path.unlink()
    log.warning("removed the empty warehouse database file %s (left by a failed first "
                "creation); creating it again", path)


def _remove_new_database(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            log.warning("removed %s: creating the warehouse database failed", leftover)


def _open(
    path: Path, read_only: bool, threads: int | None, memory_limit: str | None,
    checkpoint_threshold: str | None,
) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = dict(DATABASE_CONFIG)
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    if checkpoint_threshold and not read_only:
        config["checkpoint_threshold"] = checkpoint_threshold
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    con.execute("SET TimeZone = 'UTC'")
    # Results go to polars as Arrow string views, the layout polars keeps strings in: no copy.
    con.execute("SET produce_arrow_string_view = true")
    try:
        if read_only:
            check_supported(schema_version(con), path)
        else:
            migrate(con, path)
    except BaseException:
        con.close()
        raise
    return con


def register(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """Expose ``frame`` to SQL on ``con`` as the view ``name``. On DuckDB 2, strings are handed over
    as Arrow string views, which DuckDB reads as they are (a plain ``to_arrow()`` first copies every
    string column into the older large-string layout, a tenth of a second per million events).
    DuckDB 1.5 (a cluster node's) pushes a query's filters on the view down into pyarrow, whose
    comparison kernels do not take string views: there the large-string layout is used."""
    con.register(name, frame.to_arrow(compat_level=_ARROW_COMPAT))


#: The Arrow layout ``register`` hands frames over in (see there).
_ARROW_COMPAT = pl.CompatLevel.oldest() if DUCKDB_1 else pl.CompatLevel.newest()
