"""Every warehouse table as sorted polars frames, to compare two warehouses exactly."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from warehouse.database import connect
from warehouse.tables import ALL_TABLES, LOADED_FILES

#: Columns that legitimately differ between two runs over the same data.
VOLATILE = {LOADED_FILES.name: ("loaded_at",)}


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """Each table's rows, sorted by every column, without volatile columns."""
    out = {}
    for table in ALL_TABLES:
        cols = [c for c in table.column_names if c not in VOLATILE.get(table.name, ())]
        order = ", ".join(f"{c} NULLS FIRST" for c in cols)
        out[table.name] = con.sql(f"SELECT {', '.join(cols)} FROM {table.name} ORDER BY {order}").pl()  # noqa: S608
    return out


def snapshot_file(path: Path) -> dict[str, pl.DataFrame]:
    """``snapshot`` of a DuckDB file (opened read-only)."""
    con = connect(path, read_only=True)
    try:
        return snapshot(con)
    finally:
        con.close()


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame], files: bool = True) -> None:
    """Fail naming the first table that differs (``files=False``: ignore the manifest)."""
    for name in a:
        if name == LOADED_FILES.name:
            if not files:
                continue
            # which files exist is the same; new_events per file depends on which copy came first
            assert a[name].drop("new_events").equals(b[name].drop("new_events")), name
            assert a[name]["new_events"].sum() == b[name]["new_events"].sum(), name
            continue
        assert a[name].height == b[name].height, f"{name}: {a[name].height} != {b[name].height} rows"
        assert a[name].equals(b[name]), f"table {name} differs"
