"""Deleting an import: its raw files, its facts, and every visit and pre-aggregate they touched.

Runs in the process that holds the warehouse (the warehouse process of ``littlestats serve``, or
the CLI when none runs), under the warehouse's write lock, so no load or compaction runs meanwhile:

1. raw Parquet: the import's own files (``part-<import id>-*.parquet``) are removed; a merged
   hourly file (``warehouse.compact``) that took some of its events in is rewritten without them
   (written new, fsynced, renamed); their manifest entries go;
2. facts, in one transaction: the visits that hold any of the import's events are taken out with
   all their events; the import's events and properties are deleted; the other events of those
   visits go back through the loader's merge (``warehouse.load``), so they are sessionized again
   exactly as a load would; the pre-aggregate hours and visitor-days the import's events touched
   are rebuilt from what is left.

Every step finds its work by the import's event-id prefix, so a crash at any point is finished by
running the delete again.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.schema import conform
from ingest.seal import write_parquet_atomic
from warehouse.database import register
from warehouse.load import _EVENT_COLUMNS, _merge_events
from warehouse.rollups import local_days_span, rebuild_days, rebuild_hours
from warehouse.spans import Spans

_HOUR = timedelta(hours=1)


def remove_raw(raw_dir: Path, site_id: str, ident: str) -> tuple[int, int]:
    """Remove the import's raw files and its rows in merged files: ``(files removed, rewritten)``."""
    removed = rewritten = 0
    site_dir = raw_dir / f"site_id={site_id}"
    if not site_dir.exists():
        return 0, 0
    own = f"part-{ident}-"
    for date_dir in sorted(site_dir.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            for path in sorted(hour_dir.glob("part-*.parquet")):
                if path.name.startswith(own):
                    path.unlink(missing_ok=True)
                    removed += 1
                    continue
                if not path.name.startswith("part-hourly"):
                    continue
                ids = pq.read_table(path, columns=["event_id"]).column("event_id")
                mine = pc.starts_with(ids, ident + "-")
                if not pc.any(mine).as_py():
                    continue
                table = conform(pq.read_table(path))
                kept = table.filter(pc.invert(mine))
                if kept.num_rows:
                    write_parquet_atomic(kept, path)
                else:
                    path.unlink(missing_ok=True)
                rewritten += 1
            if hour_dir.exists() and not any(hour_dir.iterdir()):
                os.rmdir(hour_dir)
    return removed, rewritten


def remove_facts(con: duckdb.DuckDBPyConnection, site_id: str, ident: str,
                 site_tz: dict[str, str]) -> dict[str, int]:
    """Remove the import's events from the facts and rebuild what they touched (one transaction)."""
    prefix = ident + "-"
    con.begin()
    try:
        # the import's files are gone: a re-import writes the same names, to be loaded again
        con.execute("DELETE FROM loaded_files WHERE site_id = ? AND contains(path, ?)",
                    [site_id, f"/part-{ident}-"])
        con.execute(
            "CREATE OR REPLACE TEMP TABLE gone AS SELECT site_id, visitor_key, ts, session_id"
            " FROM events WHERE site_id = ? AND starts_with(event_id, ?)", [site_id, prefix])
        count = con.execute("SELECT count(*), min(ts), max(ts) FROM gone").fetchall()[0]
        events, lo, hi = int(count[0]), count[1], count[2]
        if not events:
            con.commit()
            return {"events": 0, "visits": 0}
        con.execute("CREATE OR REPLACE TEMP TABLE gone_visits AS"
                    " SELECT DISTINCT site_id, session_id FROM gone")
        visits = int(con.execute("SELECT count(*) FROM gone_visits").fetchall()[0][0])
        # the other events of those visits: sessionized again below, as a load would
        refeed = con.sql(
            f"SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS)} FROM events e"  # noqa: S608
            " SEMI JOIN gone_visits g ON e.site_id = g.site_id AND e.session_id = g.session_id"
            " WHERE NOT starts_with(e.event_id, $prefix)", params={"prefix": prefix}).pl()
        con.execute("DELETE FROM event_props WHERE site_id = ? AND starts_with(event_id, ?)",
                    [site_id, prefix])
        con.execute("DELETE FROM events e USING gone_visits g"
                    " WHERE e.site_id = g.site_id AND e.session_id = g.session_id")
        con.execute("DELETE FROM sessions s USING gone_visits g"
                    " WHERE s.site_id = g.site_id AND s.session_id = g.session_id")
        if refeed.height:
            try:
                _merge_events(con, refeed, site_tz)
            finally:
                for name in ("affected_in", "combined_events", "new_sessions", "tz_in", "hours_in",
                             "new_props"):
                    con.unregister(name)
        _rebuild(con, site_id, site_tz.get(site_id, "UTC"), lo, hi)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return {"events": events, "visits": visits}


def _rebuild(con: duckdb.DuckDBPyConnection, site_id: str, tz: str, lo: datetime,
             hi: datetime) -> None:
    """Rebuild the pre-aggregate hours and visitor-days the removed events were counted in."""
    frame = pl.DataFrame({"site_id": [site_id], "tz": [tz]})
    register(con, "tz_in", frame)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE site_tz AS SELECT * FROM tz_in")
    finally:
        con.unregister("tz_in")
    con.execute("CREATE OR REPLACE TEMP TABLE affected_hours AS"
                " SELECT DISTINCT site_id, date_trunc('hour', ts) AS hour FROM gone")
    con.execute("CREATE OR REPLACE TEMP TABLE affected_days AS"
                " SELECT DISTINCT g.site_id, g.visitor_key, timezone(z.tz, g.ts)::DATE AS local_date"
                " FROM gone g JOIN site_tz z ON g.site_id = z.site_id")
    rebuild_days(con, Spans.of(*local_days_span(lo, hi, {tz})))
    rebuild_hours(con, Spans.of(lo.replace(minute=0, second=0, microsecond=0), hi + _HOUR))


def remove_import(con: duckdb.DuckDBPyConnection, raw_dir: Path, site_id: str, ident: str,
                  site_tz: dict[str, str]) -> dict[str, Any]:
    """Both steps (see the module docstring); what was removed."""
    files, rewritten = remove_raw(raw_dir, site_id, ident)
    removed = remove_facts(con, site_id, ident, site_tz)
    return {"files": files, "filesRewritten": rewritten, **removed}
