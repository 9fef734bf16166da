"""Retention (per site) and purging a deleted site.

* Facts (``events``, ``sessions``, ``event_props``) and raw Parquet hour partitions older than a
  site's ``retention_days`` are removed (0 = keep forever). A raw hour partition goes once the
  whole hour is older than the cut-off; visits are removed by their start time.
* Pre-aggregates (``hourly_*``, ``daily_*``) are kept for ``rollup_retention_days`` (0 = forever),
  so dashboards keep their history after the raw data is gone.
* ``purge_site`` removes everything of one site: raw Parquet, facts, pre-aggregates, manifest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from warehouse.tables import ALL_TABLES, DAILY_TABLES, ROLLUP_TABLES


@dataclass
class RetentionResult:
    """What a retention run removed."""

    events: int = 0
    sessions: int = 0
    rollup_rows: int = 0
    partitions: int = 0
    sites: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"{len(self.sites)} sites with retention: removed {self.events:,} events, "
                f"{self.sessions:,} visits, {self.partitions} raw hour partitions, "
                f"{self.rollup_rows:,} pre-aggregate rows")


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> int:
    rows = con.execute(sql, params).fetchall()
    return int(rows[0][0]) if rows else 0


def apply_retention(
    con: duckdb.DuckDBPyConnection,
    raw_dir: Path,
    site_retention: dict[str, int],
    rollup_retention_days: int,
    now: datetime | None = None,
) -> RetentionResult:
    """Remove data older than each site's retention (``site_retention``: site id → days)."""
    now = now or datetime.now(UTC)
    result = RetentionResult()
    con.begin()
    try:
        for site_id, days in sorted(site_retention.items()):
            if days <= 0:
                continue
            result.sites.append(site_id)
            cutoff = now - timedelta(days=days)
            result.events += _count(con, "DELETE FROM events WHERE site_id = ? AND ts < ?", [site_id, cutoff])
            result.sessions += _count(con, "DELETE FROM sessions WHERE site_id = ? AND started_at < ?", [site_id, cutoff])
            con.execute("DELETE FROM event_props WHERE site_id = ? AND ts < ?", [site_id, cutoff])
            con.execute(
                "DELETE FROM loaded_files WHERE site_id = ? AND partition_hour + INTERVAL 1 HOUR <= ?",
                [site_id, cutoff],
            )
        if rollup_retention_days > 0:
            cutoff = now - timedelta(days=rollup_retention_days)
            for table in ROLLUP_TABLES:
                result.rollup_rows += _count(con, f"DELETE FROM {table.name} WHERE hour < ?", [cutoff])  # noqa: S608
            for table in DAILY_TABLES:
                result.rollup_rows += _count(
                    con, f"DELETE FROM {table.name} WHERE local_date < ?", [cutoff.date()]  # noqa: S608
                )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    # Raw files go after the commit: a crash in between leaves files that the manifest no longer
    # lists, which the loader skips (older than retention) and the next run removes.
    for site_id in result.sites:
        result.partitions += remove_raw_before(raw_dir, site_id, now - timedelta(days=site_retention[site_id]))
    return result


def is_expired(partition_hour: datetime, retention_days: int, now: datetime | None = None) -> bool:
    """Whether a raw hour partition is entirely older than ``retention_days``."""
    if retention_days <= 0:
        return False
    now = now or datetime.now(UTC)
    return partition_hour + timedelta(hours=1) <= now - timedelta(days=retention_days)


def remove_raw_before(raw_dir: Path, site_id: str, cutoff: datetime) -> int:
    """Delete the site's raw hour partitions that end at or before ``cutoff``; returns how many."""
    removed = 0
    site_dir = raw_dir / f"site_id={site_id}"
    for date_dir in sorted(site_dir.glob("date=*")):
        day = datetime.fromisoformat(date_dir.name.split("=", 1)[1]).replace(tzinfo=UTC)
        if day >= cutoff:
            break
        for hour_dir in sorted(date_dir.glob("hour=*")):
            hour = day + timedelta(hours=int(hour_dir.name.split("=", 1)[1]))
            if hour + timedelta(hours=1) <= cutoff:
                shutil.rmtree(hour_dir, ignore_errors=True)
                removed += 1
        if not any(date_dir.iterdir()):
            date_dir.rmdir()
    return removed


def purge_site_data(con: duckdb.DuckDBPyConnection, raw_dir: Path, site_id: str) -> int:
    """Remove every row and raw file of ``site_id``; returns the number of rows removed."""
    removed = 0
    con.begin()
    try:
        for table in ALL_TABLES:
            removed += _count(con, f"DELETE FROM {table.name} WHERE site_id = ?", [site_id])  # noqa: S608
        con.commit()
    except BaseException:
        con.rollback()
        raise
    shutil.rmtree(raw_dir / f"site_id={site_id}", ignore_errors=True)
    return removed
