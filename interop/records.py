"""Import records: one row per import in the control plane's ``imports`` table.

An import's id is derived from the site, the source and the SHA-256 of the file's content, so the
same file imported twice into the same site has the same id: the second run finds the record and
does nothing (or resumes it, if the first run stopped midway). The record holds the progress
(batches written, rows read, events written, rows skipped by reason) that the CLI and the API show.

Statuses: ``running`` (an importer works on it, or crashed while it did: the next run of the same
file resumes it), ``done``, ``failed`` (``message`` says why; a re-run resumes), ``deleting`` (a
delete started; re-running the delete finishes it).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from littlestats.controlplane import ControlPlane

STATUSES = ("running", "done", "failed", "deleting")


def import_id(site_id: str, source: str, file_sha256: str) -> str:
    """The id of importing a file with this content from ``source`` into ``site_id``.

    Starts with ``imp``: imported events' ids are ``<import id>-<row>``, which no live event id
    (a UUIDv7, hexadecimal) can start with.
    """
    digest = hashlib.sha256(f"{site_id}\0{source}\0{file_sha256}".encode()).hexdigest()
    return "imp" + digest[:20]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ImportRecord:
    """One import and its progress."""

    id: str
    site_id: str
    source: str
    file_name: str
    file_sha256: str
    file_size: int
    status: str
    created_at: str
    updated_at: str
    cutoff: str | None = None
    batch_events: int | None = None
    batches_done: int = 0
    bytes_read: int = 0
    rows_read: int = 0
    events_written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_ts: str | None = None
    last_ts: str | None = None
    message: str | None = None
    finished_at: str | None = None

    def public(self) -> dict[str, Any]:
        """The record as the API and ``littlestats imports list`` show it."""
        return {
            "id": self.id, "siteId": self.site_id, "source": self.source,
            "fileName": self.file_name, "fileSha256": self.file_sha256, "fileSize": self.file_size,
            "status": self.status,
            "progress": round(self.bytes_read / self.file_size, 4) if self.file_size else 1.0,
            "rowsRead": self.rows_read, "eventsWritten": self.events_written,
            "skipped": dict(self.skipped), "firstEvent": self.first_ts, "lastEvent": self.last_ts,
            "cutoff": self.cutoff, "message": self.message,
            "createdAt": self.created_at, "updatedAt": self.updated_at,
            "finishedAt": self.finished_at,
        }


_COLUMNS = ("id", "site_id", "source", "file_name", "file_sha256", "file_size", "status",
            "created_at", "updated_at", "cutoff", "batch_events", "batches_done", "bytes_read", "rows_read",
            "events_written", "skipped", "first_ts", "last_ts", "message", "finished_at")


def _record(row: sqlite3.Row) -> ImportRecord:
    values = {c: row[c] for c in _COLUMNS}
    values["skipped"] = orjson.loads(values["skipped"] or "{}")
    return ImportRecord(**values)


class ImportStore:
    """The ``imports`` table of the control plane (created by its migration 7)."""

    def __init__(self, control_db: Path) -> None:
        ControlPlane(control_db).close()  # brings the schema up to date
        self.path = control_db
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def get(self, import_id: str) -> ImportRecord | None:
        row = self._conn().execute("SELECT * FROM imports WHERE id = ?", (import_id,)).fetchone()
        return _record(row) if row else None

    def list(self, site_id: str | None = None) -> list[ImportRecord]:
        if site_id is None:
            rows = self._conn().execute("SELECT * FROM imports ORDER BY created_at, id").fetchall()
        else:
            rows = self._conn().execute(
                "SELECT * FROM imports WHERE site_id = ? ORDER BY created_at, id", (site_id,)
            ).fetchall()
        return [_record(r) for r in rows]

    def create(self, record: ImportRecord) -> ImportRecord:
        """Insert ``record`` unless its id exists; the stored record either way."""
        values = {c: getattr(record, c) for c in _COLUMNS}
        values["skipped"] = orjson.dumps(record.skipped).decode()
        self._conn().execute(
            f"INSERT OR IGNORE INTO imports ({', '.join(_COLUMNS)})"  # noqa: S608 -- our names
            f" VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[c] for c in _COLUMNS],
        )
        stored = self.get(record.id)
        assert stored is not None
        return stored

    def update(self, import_id: str, **changes: Any) -> None:
        """Set columns of one record (``skipped`` as a dict); ``updated_at`` is set too."""
        changes["updated_at"] = _now()
        if "skipped" in changes:
            changes["skipped"] = orjson.dumps(changes["skipped"]).decode()
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"no such import column: {sorted(unknown)}")
        assignments = ", ".join(f"{c} = ?" for c in changes)
        self._conn().execute(
            f"UPDATE imports SET {assignments} WHERE id = ?",  # noqa: S608 -- checked names
            [*changes.values(), import_id],
        )

    def delete(self, import_id: str) -> bool:
        return self._conn().execute("DELETE FROM imports WHERE id = ?", (import_id,)).rowcount > 0


def new_record(import_id: str, site_id: str, source: str, file_name: str, file_sha256: str,
               file_size: int) -> ImportRecord:
    now = _now()
    return ImportRecord(id=import_id, site_id=site_id, source=source, file_name=file_name,
                        file_sha256=file_sha256, file_size=file_size, status="running",
                        created_at=now, updated_at=now)
