# ruff: noqa: S608 -- table and column names come from our declarations; values are bound.
"""Imported aggregates in the warehouse: store one import's daily rows, delete them again.

An import (``interop.plausible``) validates the foreign files in the caller's process and stages
one Parquet file per imported table (the table's columns after ``site_id``, ``import_id``) under
``<run dir>/imports/``; ``store_import`` then replaces every row of that import id with the staged
rows in one transaction, so running the same import again never counts it twice and a crash
leaves the previous state or the new one. The warehouse process runs both (requests
``import_aggregates`` and ``delete_aggregates``); the query engine merges the rows into answers
(``warehouse.query.imported``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from warehouse.tables import IMPORTED_TABLES, Table

BY_NAME: dict[str, Table] = {t.name: t for t in IMPORTED_TABLES}
#: Columns a staged file carries: every column but the two keys the warehouse adds.
KEYS = ("site_id", "import_id")


def staged_columns(table: Table) -> tuple[str, ...]:
    """The columns of ``table`` an import stages (all but ``site_id`` and ``import_id``)."""
    return tuple(c for c in table.column_names if c not in KEYS)


def staging_dir(run_dir: Path) -> Path:
    """Where imports stage their files (inside the data directory, mode 0700)."""
    return run_dir / "imports"


def _count(con: Any, sql: str, params: list[Any]) -> int:
    rows = con.execute(sql, params).fetchall()
    return int(rows[0][0]) if rows else 0


def store_import(con: Any, site_id: str, import_id: str, files: dict[str, Path]) -> dict[str, int]:
    """Replace the rows of ``import_id`` with the staged ``files`` (table name → Parquet file);
    the rows stored per table."""
    unknown = sorted(set(files) - set(BY_NAME))
    if unknown:
        raise ValueError(f"not an imported-aggregate table: {', '.join(unknown)}")
    stored: dict[str, int] = {}
    con.begin()
    try:
        for table in IMPORTED_TABLES:
            con.execute(f"DELETE FROM {table.name} WHERE import_id = ?", [import_id]).fetchall()
        for name, path in files.items():
            cols = staged_columns(BY_NAME[name])
            staged = pq.read_table(path, columns=list(cols))
            con.register("staged_import", staged)
            try:
                con.execute(
                    f"INSERT INTO {name} (site_id, import_id, {', '.join(cols)})"
                    f" SELECT ?, ?, {', '.join(cols)} FROM staged_import", [site_id, import_id],
                ).fetchall()
            finally:
                con.unregister("staged_import")
            stored[name] = staged.num_rows
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return stored


def delete_import(con: Any, import_id: str) -> int:
    """Remove every row of ``import_id``; how many."""
    removed = 0
    con.begin()
    try:
        for table in IMPORTED_TABLES:
            removed += _count(con, f"SELECT count(*) FROM {table.name} WHERE import_id = ?", [import_id])
            con.execute(f"DELETE FROM {table.name} WHERE import_id = ?", [import_id]).fetchall()
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return removed
