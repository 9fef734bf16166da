"""Erasing a person equals never having had their traffic, and leaves no trace of them.

Real files throughout: generated traffic is written as raw Parquet (and partly as a write-ahead-log
segment not sealed yet), loaded into a real DuckDB warehouse, and one person erased by visitor id,
another by user id. A second data directory gets the same traffic without those two people and is
loaded fresh: every table must be equal, and no Parquet file, WAL segment or DuckDB column may hold
their visitor keys or user id.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from ingest.identity import tracker_visitor_key
from ingest.wal import SegmentWriter, read_records
from littlestats.config import Settings, load_settings
from littlestats.controlplane import ControlPlane
from tests.generator import Traffic, TrafficSpec, _write, generate, to_raw_table
from tests.warehouse.snapshot import assert_same, snapshot, snapshot_file
from warehouse.erase import journal_dir
from warehouse.service import Warehouse

USER = "user-42"
VISITOR_ID = "person-one-ls-vid"


@dataclass
class World:
    """Sites and traffic: ``people`` are the (site, visitor key) of the two people to erase."""

    sites: dict[str, str]  # domain -> id
    secret: bytes  # of the erased people's site
    traffic: Traffic
    person: int  # visitor key of the person erased by visitor id
    identified: int  # visitor key of the person erased by user id
    bystander: int  # identified as another user: stays
    loaded: dict[int, int] = field(default_factory=dict)  # events in the warehouse before the erasure


def make_sites(data_dir: Path, like: Path | None = None) -> tuple[Settings, dict[str, str], bytes]:
    """Two sites in the control plane (``like``: a copy of that directory's, same ids and secrets)."""
    settings = load_settings({"data_dir": data_dir}, environ={})
    settings.ensure_dirs()
    if like is not None:
        with sqlite3.connect(like / "control.sqlite3") as src, sqlite3.connect(settings.control_db) as dst:
            src.backup(dst)
    control = ControlPlane(settings.control_db)
    try:
        if like is None:
            control.create_site("a.example", timezone="UTC")
            control.create_site("b.example", timezone="Europe/Berlin")
        sites = {s.domain: s for s in control.list_sites()}
        return settings, {d: s.id for d, s in sites.items()}, sites["b.example"].secret
    finally:
        control.close()


def build_world(sites: dict[str, str], secret: bytes) -> World:
    a, b = sites["a.example"], sites["b.example"]
    traffic = generate(TrafficSpec(visitors=160, days=2, sites=(a, b), timezones={a: "UTC", b: "Europe/Berlin"},
                                   duplicate_fraction=0.0, loads=1, seed=21))
    events = traffic.events
    # The three visitors of site b with the most visits: one named by its tracker visitor id
    # (its stored key is the site's hash of it, as ingest makes it), two identified users.
    busiest = (events.filter(pl.col("site_id") == b).group_by("visitor_key")
               .agg(pl.col("visit_id").n_unique().alias("visits"), pl.len().alias("n"))
               .sort("visits", "n", "visitor_key", descending=True)["visitor_key"].to_list())
    old_person, identified, bystander = busiest[:3]
    person = tracker_visitor_key(secret, VISITOR_ID)
    first = events.group_by("visitor_key").agg(pl.col("event_id").min().alias("first"))
    firsts = dict(first.iter_rows())
    events = events.with_columns(
        pl.when(pl.col("visitor_key") == old_person).then(pl.lit(person, pl.UInt64))
        .otherwise(pl.col("visitor_key")).alias("visitor_key"),
        pl.when(pl.col("event_id") == firsts[identified]).then(pl.lit(USER))
        .when(pl.col("event_id") == firsts[bystander]).then(pl.lit("user-7"))
        .otherwise(pl.col("user_id")).alias("user_id"),
    )
    traffic.events = events
    return World(sites, secret, traffic, person, identified, bystander)


def wal_payload(row: dict[str, Any]) -> bytes:
    """A raw row as ingest writes it to the WAL (epoch ms, property maps as objects)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = int(value.timestamp() * 1000)
        elif key.startswith("props_") and value is not None:
            value = dict(value)
        out[key] = value
    return orjson.dumps(out)


def write_data(world: World, data_dir: Path, without: tuple[int, ...] = ()) -> None:
    """The traffic (without the visitor keys ``without``): the last visits of the people to erase and
    of a few others as a closed WAL segment, the rest as raw Parquet."""
    events = world.traffic.events.filter(~pl.col("visitor_key").is_in(list(without)))
    b = world.sites["b.example"]
    last_visits = (world.traffic.events.filter(pl.col("site_id") == b).group_by("visitor_key")
                   .agg(pl.col("visit_id").max()).sort("visitor_key").head(8)["visit_id"].to_list())
    last_visits += (world.traffic.events.filter(pl.col("visitor_key").is_in([world.person, world.identified]))
                    .group_by("visitor_key").agg(pl.col("visit_id").max())["visit_id"].to_list())
    in_wal = pl.col("visit_id").is_in(last_visits)
    _write(events.filter(~in_wal), data_dir / "raw", "gen")
    writer = SegmentWriter(data_dir / "wal", segment_seconds=3600)
    rows = to_raw_table(events.filter(in_wal).sort("ts", "event_id")).to_pylist()
    if rows:
        writer.append([wal_payload(r) for r in rows])
    writer.close()


def scan_for_traces(data_dir: Path, keys: set[int], strings: set[str]) -> list[str]:
    """Every place under ``data_dir`` that still holds one of ``keys`` or ``strings``: Parquet files
    (every column), WAL segments (every record), every DuckDB table and column, the journal."""
    found = []
    for path in sorted(data_dir.rglob("*.parquet")):
        table = pq.read_table(path)
        if set(table["visitor_key"].to_pylist()) & keys:
            found.append(f"{path}: visitor_key")
        for name in table.column_names:
            if table[name].type == "string" and set(table[name].to_pylist()) & strings:
                found.append(f"{path}: {name}")
    wal = data_dir / "wal"
    for path in sorted(wal.iterdir()) if wal.is_dir() else []:
        for payload in read_records(path):
            record = orjson.loads(payload)
            if record.get("visitor_key") in keys or set(map(str, record.values())) & strings:
                found.append(f"{path}: a record")
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns"
                              " WHERE table_schema = 'main'").fetchall()
        assert len({t for t, _, _ in columns}) >= 10
        for table, column, data_type in columns:
            if data_type in ("UBIGINT", "BIGINT", "HUGEINT"):
                hits = con.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}"::HUGEINT IN'  # noqa: S608
                                   f" (SELECT unnest(?::HUGEINT[]))", [sorted(keys)]).fetchall()[0][0]
            elif data_type == "VARCHAR":
                hits = con.execute(f'SELECT count(*) FROM "{table}" WHERE list_contains(?, "{column}")',  # noqa: S608
                                   [sorted(strings)]).fetchall()[0][0]
            else:
                continue
            if hits:
                found.append(f"warehouse {table}.{column}: {hits} rows")
    finally:
        con.close()
    if journal_dir(data_dir).is_dir() and any(journal_dir(data_dir).iterdir()):
        found.append("an erasure journal")
    return found


@pytest.fixture(scope="module")
def erased(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path, Path, list[Any]]:
    """Directory ``a``: everything loaded, then the two people erased. ``b``: fresh, without them."""
    base = tmp_path_factory.mktemp("erase")
    settings, sites, secret = make_sites(base / "a")
    world = build_world(sites, secret)
    write_data(world, base / "a")
    wh = Warehouse(settings)
    try:
        wh.load(seal=False)  # the WAL segment stays: the erasure must take it too
        for key in (world.person, world.identified):
            world.loaded[key] = wh.writer.execute("SELECT count(*) FROM events WHERE visitor_key = ?",
                                                  [key]).fetchall()[0][0]
        results: list[Any] = [wh.erase(sites["b.example"], [world.person]),
                   wh.erase(sites["b.example"], [], user_id=USER)]
        wh.load()  # nothing of them comes back
        # someone nobody has seen: nothing changes
        files = {p: p.stat().st_mtime_ns for p in (base / "a").rglob("*.parquet")}
        tables = snapshot(wh.writer)
        results.append(wh.erase(sites["b.example"], [tracker_visitor_key(secret, "nobody")], user_id="nobody"))
        results += [files, {p: p.stat().st_mtime_ns for p in (base / "a").rglob("*.parquet")},
                    tables, snapshot(wh.writer)]
    finally:
        wh.close()
    fresh_settings, _, _ = make_sites(base / "b", like=base / "a")
    write_data(world, base / "b", without=(world.person, world.identified))
    fresh = Warehouse(fresh_settings)
    try:
        fresh.load()
    finally:
        fresh.close()
    return world, base / "a", base / "b", results


def test_erasure_leaves_the_tables_of_a_fresh_load_without_that_person(
        erased: tuple[World, Path, Path, list[Any]]) -> None:
    _, a, b, _ = erased
    expected, got = snapshot_file(b / "warehouse.duckdb"), snapshot_file(a / "warehouse.duckdb")
    for tables in (expected, got):  # a sealed WAL segment's file is named after the segment
        tables["loaded_files"] = tables["loaded_files"].with_columns(
            pl.col("path").str.replace(r"part-\d{8}T[^/]*\.parquet$", "part-wal.parquet")).sort(pl.all())
    # the fresh load sealed b's WAL segment too (its file may since be merged into part-hourly)
    assert not [p for p in (b / "wal").iterdir() if p.suffix != ".lock"]
    assert_same(expected, got)


def test_no_file_or_table_holds_the_erased_keys_or_user_id(erased: tuple[World, Path, Path, list[Any]]) -> None:
    world, a, _, _ = erased
    assert scan_for_traces(a, {world.person, world.identified}, {USER}) == []
    # the scan can fail: the bystander identified as another user is still everywhere
    assert scan_for_traces(a, {world.bystander}, {"user-7"})


def test_erasure_reports_what_it_removed(erased: tuple[World, Path, Path, list[Any]]) -> None:
    world, _, _, results = erased
    by_visitor, by_user = (r.public() for r in results[:2])
    events = world.traffic.events
    person_events = events.filter(pl.col("visitor_key") == world.person).height
    identified_events = events.filter(pl.col("visitor_key") == world.identified).height
    person_visits = events.filter(pl.col("visitor_key") == world.person)["visit_id"].n_unique()
    assert by_visitor["visitorKeys"] == 1 and by_user["visitorKeys"] == 1
    # the WAL segment was sealed first: the raw rows are all of the person's events
    assert by_visitor["walSegmentsSealed"] == 1
    assert by_visitor["rawRowsRemoved"] == person_events
    # the warehouse had all but their last visit, which was in the WAL
    assert 0 < world.loaded[world.person] < person_events
    assert by_visitor["rowsRemoved"]["events"] == world.loaded[world.person]
    assert by_visitor["rowsRemoved"]["sessions"] == person_visits - 1
    assert by_user["rawRowsRemoved"] == identified_events
    assert by_user["rowsRemoved"]["events"] == world.loaded[world.identified]
    assert by_visitor["rawFilesRewritten"] + by_visitor["rawFilesRemoved"] >= 2
    assert by_visitor["hoursRebuilt"] > 0 and by_visitor["visitorDaysRebuilt"] >= 1
    text = orjson.dumps([by_visitor, by_user]).decode()
    assert USER not in text and str(world.person) not in text  # no personal data for the audit log


def test_erasing_someone_unknown_changes_nothing(erased: tuple[World, Path, Path, list[Any]]) -> None:
    _, a, _, results = erased
    unknown, files_before, files_after, tables_before, tables_after = results[2:]
    assert unknown.raw_rows_removed == 0 and sum(unknown.facts_removed.values()) == 0
    assert files_after == files_before  # not one file rewritten
    assert_same(tables_before, tables_after)
    assert not any(journal_dir(a).iterdir())
