"""Warehouse schema versions and the migrations between them.

The DuckDB file records every schema version it has reached in the table ``schema_version``
(``version``, ``description``, ``applied_at``); its version is the largest. ``MIGRATIONS[n - 1]``
turns version ``n - 1`` into version ``n``. ``migrate`` runs when the warehouse is opened for
writing (``warehouse.database.connect``): each missing step runs in its own transaction together
with its ``schema_version`` row, so a crash leaves the file at the previous version or the next,
never between; it is logged. Afterwards every declared table that does not exist yet is created
(``warehouse.tables.create_all``), and pre-aggregates whose columns changed are rebuilt from the
facts by the warehouse process (``recreate_stale_preaggregates``).

* A new file is created at ``LATEST`` directly (the declarations in ``warehouse.tables`` are the
  latest schema).
* A file written before versions were recorded (it has an ``events`` table but no
  ``schema_version``) is version 1.
* A file whose version is above ``LATEST`` was written by a newer LittleStats: it is refused,
  saying what to do, before anything in it changes.

A change to the warehouse schema is a declaration change in ``warehouse.tables`` *and* a new entry
at the end of ``MIGRATIONS`` that brings an existing file to it; an entry is never edited once
released.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warehouse.layout import resort_tables
from warehouse.tables import IMPORTED_TABLES, SchemaError, create_all

log = logging.getLogger("littlestats.warehouse")

VERSION_TABLE = "schema_version"


@dataclass(frozen=True)
class Migration:
    """One step: the SQL statements that turn the previous version into this one, then ``run``
    (work that depends on what the file holds), in the same transaction."""

    version: int
    description: str
    statements: tuple[str, ...] = ()
    run: Callable[[Any], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    # The tables of warehouse.tables as first released (created by create_all).
    Migration(1, "fact tables, pre-aggregates and the load manifest"),
    Migration(2, "imported daily aggregates (Plausible CE's CSV layout)",
              tuple(t.ddl() for t in IMPORTED_TABLES)),
    Migration(3, "events.revenue_amount, events.revenue_currency (revenue of custom events)",
              ("ALTER TABLE events ADD COLUMN IF NOT EXISTS revenue_amount DOUBLE",
               "ALTER TABLE events ADD COLUMN IF NOT EXISTS revenue_currency VARCHAR")),
    Migration(4, "region and city of events and visits; scroll depth of events",
              ("ALTER TABLE events ADD COLUMN IF NOT EXISTS region VARCHAR",
               "ALTER TABLE events ADD COLUMN IF NOT EXISTS city VARCHAR",
               "ALTER TABLE events ADD COLUMN IF NOT EXISTS city_name VARCHAR",
               "ALTER TABLE events ADD COLUMN IF NOT EXISTS scroll_depth SMALLINT",
               "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS region VARCHAR",
               "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS city VARCHAR",
               "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS city_name VARCHAR")),
    # Rows grouped by site, then time, so a site's question skips other sites' row groups
    # (warehouse.layout); one rewrite of the rows an older version stored in arrival order.
    Migration(5, "fact and per-visitor daily tables ordered by site and time", run=resort_tables),
)

LATEST = MIGRATIONS[-1].version


class WarehouseTooNew(SchemaError):
    """A warehouse file written by a newer LittleStats than this one."""


def _has_table(con: Any, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        [name],
    ).fetchall()[0][0])


def schema_version(con: Any) -> int:
    """The schema version of an open warehouse (0: a new, empty file)."""
    if _has_table(con, VERSION_TABLE):
        return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])
    return 1 if _has_table(con, "events") else 0


def check_supported(version: int, path: object, latest: int = LATEST) -> None:
    """Refuse a schema version this code does not know, saying what to do."""
    if version > latest:
        raise WarehouseTooNew(
            f"{path} has warehouse schema version {version}, but this LittleStats knows only up to"
            f" version {latest}: it was written by a newer release. Upgrade LittleStats (pip"
            " install -U littlestats), or restore a backup made by this version."
        )


def _record(con: Any, step: Migration) -> None:
    # fetched: DuckDB refuses further work on a connection with an unread result
    con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [step.version, step.description]).fetchall()


def migrate(con: Any, path: object = "warehouse.duckdb",
            migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """Bring a warehouse opened for writing to the latest schema; the steps applied.

    Idempotent: a file already at the latest version is left as it is (missing tables are still
    created). ``migrations`` is for tests; the code's own list is the default.
    """
    latest = migrations[-1].version
    version = schema_version(con)
    check_supported(version, path, latest)
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL,"
                " description VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
    if version == 0:
        create_all(con)
        _record(con, migrations[-1])
        return []
    if not con.execute("SELECT count(*) FROM schema_version").fetchall()[0][0]:
        _record(con, migrations[version - 1])  # written before versions were recorded
    applied = []
    for step in migrations[version:]:
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in step.statements:
                con.execute(statement).fetchall()
            if step.run is not None:
                step.run(con)
            _record(con, step)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.warning("warehouse %s: migrated to schema version %d (%s)", path, step.version,
                    step.description)
        applied.append(step)
    create_all(con)
    return applied


def upgrade_file(path: Path) -> list[Migration]:
    """Migrate the warehouse file at ``path`` now, if it exists; the steps applied.

    ``littlestats serve`` calls this before it starts any process, so a file it cannot use stops
    it with the reason (``WarehouseTooNew``) instead of a warehouse process failing in the
    background. A file another process holds is left to the warehouse process, which migrates it
    when it opens it. Only DuckDB is loaded here: the caller forks workers afterwards.
    """
    import duckdb

    if not path.exists():
        return []
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        log.info("warehouse %s is held by another process (%s); the warehouse process migrates it"
                 " when it opens it", path, exc)
        return []
    try:
        return migrate(con, path)
    finally:
        con.close()
