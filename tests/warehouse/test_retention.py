"""Retention per site, pre-aggregate retention, and purging a deleted site."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from littlestats.config import load_settings
from littlestats.controlplane import ControlPlane
from tests.warehouse.test_load import raw_event, write_events
from warehouse import purge_site
from warehouse.service import Warehouse

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
OLD = NOW - timedelta(days=3)
RECENT = NOW - timedelta(hours=1)


def write_site(raw: Path, site_id: str) -> None:
    for name, ts in (("old", OLD), ("recent", RECENT)):
        write_events(raw, name, raw_event(f"{site_id}-{name}", ts, site_id=site_id),
                     site_id=site_id)


def counts(db: Path, site_id: str) -> tuple[int, ...]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return tuple(
            con.execute(f"SELECT count(*) FROM {t} WHERE site_id = ?", [site_id]).fetchall()[0][0]  # noqa: S608
            for t in ("events", "sessions", "hourly_rollup", "daily_visitors", "loaded_files")
        )
    finally:
        con.close()


def setup(tmp_path: Path, rollup_days: int = 0) -> tuple[Warehouse, str, str]:
    settings = load_settings({"data_dir": tmp_path, "rollup_retention_days": rollup_days}, environ={})
    settings.ensure_dirs()
    store = ControlPlane(settings.control_db)
    kept = store.create_site("keep.example", retention_days=0).id
    short = store.create_site("short.example", retention_days=5).id
    for site_id in (kept, short):
        write_site(settings.raw_dir, site_id)
    wh = Warehouse(settings)
    assert wh.load(seal=False).new_events == 4
    return wh, kept, short


def test_retention_removes_old_facts_and_raw_partitions_per_site(tmp_path: Path) -> None:
    wh, kept, short = setup(tmp_path)
    result = wh.retention(now=NOW + timedelta(days=3))  # cut-off: NOW - 2 days
    wh.close()
    assert result.sites == [short] and result.events == 1 and result.partitions == 1
    db = tmp_path / "warehouse.duckdb"
    # facts of the old day are gone, pre-aggregates stay (rollup retention 0 = forever)
    assert counts(db, short) == (1, 1, counts(db, kept)[2], 2, 1)
    assert counts(db, kept) == (2, 2, counts(db, kept)[2], 2, 2)
    assert not (tmp_path / "raw" / f"site_id={short}" / f"date={OLD:%Y-%m-%d}" / f"hour={OLD:%H}").exists()
    assert (tmp_path / "raw" / f"site_id={kept}" / f"date={OLD:%Y-%m-%d}" / f"hour={OLD:%H}").exists()


def test_files_older_than_retention_are_not_loaded(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path}, environ={})
    settings.ensure_dirs()
    site = ControlPlane(settings.control_db).create_site("s.example", retention_days=2).id
    write_site(settings.raw_dir, site)
    wh = Warehouse(settings)
    assert wh.load(seal=False).new_events == 1
    wh.close()


def test_rollup_retention_prunes_pre_aggregates(tmp_path: Path) -> None:
    wh, kept, short = setup(tmp_path, rollup_days=2)
    result = wh.retention(now=NOW)
    wh.close()
    assert result.rollup_rows > 0
    db = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    oldest = con.execute("SELECT min(hour) FROM hourly_rollup").fetchall()[0][0]
    con.close()
    assert oldest >= NOW - timedelta(days=2)
    assert counts(db, kept)[0] == 2  # facts follow the site's retention, not the rollups'


def test_purge_site_removes_everything_of_that_site_only(tmp_path: Path) -> None:
    wh, kept, short = setup(tmp_path)
    wh.close()
    settings = load_settings({"data_dir": tmp_path}, environ={})
    assert purge_site(settings, short) > 0
    db = tmp_path / "warehouse.duckdb"
    assert counts(db, short) == (0, 0, 0, 0, 0)
    assert counts(db, kept)[0] == 2
    assert not (tmp_path / "raw" / f"site_id={short}").exists()
