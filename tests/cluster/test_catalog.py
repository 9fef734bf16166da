"""The shared catalog (cluster.catalog) on a real PostgreSQL and Ceph: the warehouse's own loader
and query engine give the same tables and answers as on a local file, and readers in other
processes see whole loads only."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cluster.catalog import CatalogError, connect_shared, init, maintain
from littlestats.config import Settings, load_settings
from tests.generator import TrafficSpec, generate
from warehouse.database import connect
from warehouse.load import load_pending
from warehouse.migrations import LATEST, WarehouseTooNew
from warehouse.query.model import parse_query
from warehouse.query.runner import OnConnection, run_with
from warehouse.tables import ALL_TABLES

pytestmark = pytest.mark.slow

# Facts, pre-aggregates and manifest written by one load must agree in every snapshot a reader sees.
INVARIANTS = """
SELECT (SELECT count(*) FROM events) AS events,
       (SELECT coalesce(sum(events), 0) FROM sessions) AS session_events,
       (SELECT count(*) FROM events WHERE type = 'pageview') AS pageviews,
       (SELECT coalesce(sum(views), 0) FROM hourly_rollup WHERE dimension = 'total') AS rollup_views,
       (SELECT coalesce(sum(new_events), 0) FROM loaded_files) AS manifest_events,
       (SELECT coalesce(sum(pageviews), 0) FROM daily_visitors) AS daily_views
"""

#: Dashboard questions: unfiltered (pre-aggregates), filtered (facts) and over site-local days.
QUESTIONS = [
    {"metrics": ["visitors", "visits", "views", "events", "bounce_rate", "visit_duration"]},
    {"dimensions": ["time:day"], "metrics": ["views", "visits", "visitors"]},
    {"dimensions": ["source"], "metrics": ["visitors", "visits", "bounce_rate"]},
    {"dimensions": ["page"], "metrics": ["visitors", "views"]},
    {"dimensions": ["event"], "metrics": ["visitors", "events"]},
    {"dimensions": ["browser"], "metrics": ["visitors", "visits"],
     "filters": [["is", "country", ["DE"]]]},
    {"metrics": ["visitors", "views"], "filters": [["contains", "page", ["/"]]]},
]


def _settings(values: dict[str, Any]) -> Settings:
    return load_settings(values, environ={})


def _rows(con: Any, table: str) -> list[tuple[Any, ...]]:
    rows = con.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 -- declared names
    return sorted(rows, key=repr)


def test_lake_loads_give_the_local_files_tables_and_answers(
    cluster_settings: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    settings = _settings(cluster_settings(broker=False))
    assert init(settings) == LATEST
    spec = TrafficSpec(visitors=150, days=2, loads=3, seed=11)
    traffic = generate(spec)
    raw = tmp_path / "raw"
    for k in range(spec.loads):  # later loads bring late events and duplicates
        traffic.write_raw(raw, load=k)
        for con in (connect(tmp_path / "wh.duckdb"), connect_shared(settings)):
            try:
                load_pending(con, raw, spec.timezones)
            finally:
                con.close()
    local = connect(tmp_path / "wh.duckdb", read_only=True)
    try:
        lake = connect_shared(settings, read_only=True)
        try:
            assert lake.execute("SELECT count(*) FROM events").fetchall()[0][0] == traffic.event_count
            _assert_same(lake, local, spec)
        finally:
            lake.close()
        # maintenance rewrites and merges the files, and changes nothing a query sees
        lake = connect_shared(settings)
        try:
            done = maintain(lake, keep=timedelta(0))
            assert done.flushed and done.expired  # inlined rows written out, old snapshots gone
            _assert_same(lake, local, spec)
        finally:
            lake.close()
    finally:
        local.close()


def _assert_same(lake: Any, local: Any, spec: TrafficSpec) -> None:
    for table in ALL_TABLES:
        if table.name == "loaded_files":  # loaded_at differs: compare the rest
            query = "SELECT site_id, path, partition_hour, rows, new_events FROM loaded_files"
            assert sorted(lake.execute(query).fetchall()) == sorted(local.execute(query).fetchall())
            continue
        assert _rows(lake, table.name) == _rows(local, table.name), table.name
    for site, tz in spec.timezones.items():
        for body in QUESTIONS:
            q = parse_query(site, tz, {"date_range": ["2026-03-01", "2026-03-03"], **body})
            on_lake = run_with(q, OnConnection(lake))
            on_file = run_with(q, OnConnection(local))
            assert on_lake.rows == on_file.rows, body
            assert on_lake.path == on_file.path
            assert on_lake.rows, body  # the question has an answer to compare


def _read_invariants(values: dict[str, Any], stop: Any, out: Any) -> None:
    con = connect_shared(_settings(values), read_only=True)
    seen: list[int] = []
    errors: list[str] = []
    torn = queries = 0
    try:
        while not stop.is_set():
            try:
                events, session_events, pageviews, rollup_views, manifest, daily = (
                    con.execute(INVARIANTS).fetchall()[0])
                if not (events == session_events == manifest and pageviews == rollup_views == daily):
                    torn += 1
                if seen and events < seen[-1]:
                    torn += 1  # a snapshot older than one already seen
                if not seen:
                    out.put("ready")
                if not seen or seen[-1] != events:
                    seen.append(events)
            except Exception as exc:
                errors.append(repr(exc))
            queries += 1
    finally:
        con.close()
    out.put({"queries": queries, "seen": seen, "errors": errors[:5], "torn": torn})


def test_readers_in_other_processes_see_whole_loads_only(
    cluster_settings: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    values = cluster_settings(broker=False)
    settings = _settings(values)
    init(settings)
    spec = TrafficSpec(visitors=200, days=1, loads=5, seed=5)
    traffic = generate(spec)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    readers = [ctx.Process(target=_read_invariants, args=(values, stop, out)) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        assert [out.get(timeout=120) for _ in readers] == ["ready"] * 2
        for k in range(spec.loads):
            traffic.write_raw(tmp_path / "raw", load=k)
            con = connect_shared(settings)  # a loader process of its own per load, as on a node
            try:
                load_pending(con, tmp_path / "raw", spec.timezones)
            finally:
                con.close()
            time.sleep(0.5)
    finally:
        stop.set()
    results = [out.get(timeout=120) for _ in readers]
    for r in readers:
        r.join(timeout=30)
    for result in results:
        assert result["errors"] == []
        assert result["torn"] == 0
        assert result["seen"][-1] == traffic.event_count
        assert len(result["seen"]) >= 4, result["seen"]  # loads committed while it read


def _init(values: dict[str, Any], out: Any) -> None:
    out.put(init(_settings(values)))


def test_init_is_idempotent_even_when_nodes_run_it_at_once(
    cluster_settings: Callable[..., dict[str, Any]]
) -> None:
    values = cluster_settings(broker=False)
    with pytest.raises(CatalogError, match="cluster init"):
        connect_shared(_settings(values))  # nothing made before init
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    nodes = [ctx.Process(target=_init, args=(values, out)) for _ in range(2)]
    for n in nodes:
        n.start()
    versions = [out.get(timeout=120) for _ in nodes]
    for n in nodes:
        n.join(timeout=30)
    assert versions == [LATEST, LATEST]
    settings = _settings(values)
    assert init(settings) == LATEST
    with pytest.raises(CatalogError, match="s3_prefix"):  # a node set up for another data path
        connect_shared(_settings({**values, "s3_prefix": "elsewhere"}))
    con = connect_shared(settings)
    try:
        names = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
        assert names == {t.name for t in ALL_TABLES} | {"schema_version"}
        assert con.execute("SELECT count(*) FROM schema_version").fetchall() == [(1,)]
        con.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())", [LATEST + 1])
    finally:
        con.close()
    with pytest.raises(WarehouseTooNew, match="newer release"):
        connect_shared(settings, read_only=True)
