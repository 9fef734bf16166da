"""Opening the warehouse DuckDB file with the settings every connection needs."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from warehouse.migrations import check_supported, migrate, schema_version

#: DuckDB's default (16 MB) checkpoints after nearly every load, rewriting the same recent row
#: groups each minute; a larger log is replayed on open after a crash (a few seconds per 100 MB).
CHECKPOINT_THRESHOLD = "256MB"


def connect(
    path: Path, read_only: bool = False, threads: int | None = None, memory_limit: str | None = None,
    checkpoint_threshold: str | None = CHECKPOINT_THRESHOLD,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse database; for writers, create its tables or migrate them to this
    version's schema (``warehouse.migrations``). A file of a newer schema is refused.

    Sessions are pinned to UTC so ``TIMESTAMPTZ`` values come back in UTC whatever the machine's
    zone; site-local dates are computed explicitly with ``timezone(site_tz, ts)``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Row order of INSERT ... SELECT does not matter to us; not keeping it saves memory.
    config: dict[str, str | bool | int | float | list[str]] = {"preserve_insertion_order": False}
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
    """Expose ``frame`` to SQL on ``con`` as the view ``name``. Strings are handed over as Arrow
    string views, which DuckDB reads as they are; a plain ``to_arrow()`` first copies every
    string column into the older large-string layout (a tenth of a second per million events)."""
    con.register(name, frame.to_arrow(compat_level=pl.CompatLevel.newest()))
