"""Opening the original LittleStats's databases: a SQLite file (a local D1 database, or v1's), or
a SQL dump of one (``wrangler d1 export`` writes ``CREATE TABLE`` and ``INSERT`` statements),
which is replayed into an in-memory SQLite database statement by statement, so that a broken
statement is reported with its line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from interop.events import SourceContext

SQLITE_MAGIC = b"SQLite format 3\x00"


def open_database(path: Path, ctx: SourceContext) -> sqlite3.Connection:
    """The database in ``path`` (a SQLite file or a ``.sql`` dump), read-only in spirit."""
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        return db
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    statement: list[str] = []
    start = 1
    with path.open(encoding="utf-8", errors="strict", newline="") as f:
        try:
            for number, line in enumerate(f, 1):
                if not statement:
                    if not line.strip() or line.lstrip().startswith("--"):
                        continue
                    start = number
                statement.append(line)
                text = "".join(statement)
                if sqlite3.complete_statement(text):
                    statement = []
                    upper = text.lstrip().upper()
                    if upper.startswith(("BEGIN", "COMMIT", "PRAGMA")):
                        continue  # the replay runs in its own transaction
                    try:
                        db.execute(text)
                    except sqlite3.Error as exc:
                        raise ctx.error(start, None, f"SQL statement cannot be read ({exc}):"
                                        f" {text.strip()[:120]}") from None
        except UnicodeDecodeError as exc:
            raise ctx.error(None, None, f"neither a SQLite database nor a UTF-8 SQL dump ({exc})") from None
    if statement and "".join(statement).strip():
        raise ctx.error(start, None, "the SQL dump ends inside a statement (the file is truncated?)")
    return db


def tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
