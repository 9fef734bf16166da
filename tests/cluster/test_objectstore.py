"""Raw events on object storage (a real Ceph RADOS gateway): upload after sealing, crash recovery,
listing by date, reading and loading from the bucket, retention and site purge."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from pyarrow.fs import FileSelector, FileType

from cluster.objectstore import ObjectStore, UploadResult, object_name
from ingest.seal import seal_all
from ingest.wal import CLOSED_SUFFIX, encode_records
from littlestats.config import Settings, load_settings
from tests.generator import Traffic, TrafficSpec, generate
from tests.warehouse.snapshot import assert_same, snapshot
from warehouse.database import connect
from warehouse.load import discover_files, load_pending, read_raw

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASE = datetime(2026, 3, 1, tzinfo=UTC)
SITES = ("alpha", "beta", "gamma")

NodeSettings = Callable[..., dict[str, Any]]


def node(cluster_settings: NodeSettings, name: str, **more: Any) -> Settings:
    """A node's settings (object storage only), its directories made."""
    settings = load_settings(cluster_settings(name, catalog=False, broker=False, **more), environ={})
    settings.ensure_dirs()
    return settings


def events(tag: str, count: int, hours: tuple[int, ...] = (0, 1, 25, 49)) -> list[dict[str, Any]]:
    """``count`` events of ``SITES`` in ``hours`` (hours after ``BASE``), ids prefixed ``tag``."""
    out = []
    for i in range(count):
        ts = (int(BASE.timestamp() * 1000) + hours[i % len(hours)] * 3_600_000
              + (i * 7_919) % 3_600_000)
        out.append({"event_id": f"{tag}{i:05d}", "site_id": SITES[i % len(SITES)], "ts": ts,
                    "received_at": ts, "type": "pageview", "visitor_key": i,
                    "visitor_key_source": "tracker", "pathname": f"/{i % 7}",
                    "source": "Direct / None", "device": "desktop", "browser": "Firefox",
                    "os": "Linux", "props_str": {"i": str(i)} if i % 5 == 0 else None})
    return out


def write_segment(settings: Settings, segment_id: str, rows: list[dict[str, Any]]) -> None:
    """A closed write-ahead-log segment named ``segment_id`` holding ``rows``."""
    path = settings.wal_dir / f"{segment_id}{CLOSED_SUFFIX}"
    path.write_bytes(bytes(encode_records([orjson.dumps(r) for r in rows])))


def local_parts(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The node's local part files: rel → rows."""
    return {f.rel: pq.read_table(f.path).to_pylist() for f in discover_files(settings.raw_dir)}


def object_rel(node_name: str, rel: str) -> str:
    """Where a local part file (``rel``) of ``node_name`` lands below the bucket's raw root."""
    directory, name = rel.rsplit("/", 1)
    return f"{directory}/{object_name(node_name, name)}"


def bucket_objects(store: ObjectStore) -> dict[str, list[dict[str, Any]]]:
    """Every raw object in the bucket: rel → rows."""
    infos = store.filesystem.get_file_info(FileSelector(store.raw_root, recursive=True))
    paths = [i.path for i in infos if i.type == FileType.File and i.path.endswith(".parquet")]

    def rows(path: str) -> list[dict[str, Any]]:
        with store.filesystem.open_input_file(path) as f:
            return pq.read_table(f).to_pylist()

    with ThreadPoolExecutor(8) as pool:
        return {path[len(store.raw_root) + 1:]: got for path, got
                in zip(paths, pool.map(rows, paths), strict=True)}


def test_sealed_parts_land_in_the_bucket_under_the_hive_layout(cluster_settings: NodeSettings) -> None:
    # Two nodes whose segments have the same id: their objects must not replace each other.
    nodes = [node(cluster_settings, name, s3_prefix="analytics/prod") for name in ("n1", "n2")]
    segment = "20260301T000000-7-000000-abcdef"
    expected: dict[str, list[dict[str, Any]]] = {}
    for n, settings in enumerate(nodes):
        write_segment(settings, segment, events(f"n{n}-", 300))
        assert len(seal_all(settings.wal_dir, settings.raw_dir)) == 1
        parts = local_parts(settings)
        assert len(parts) == 3 * 4  # three sites, four hours (of three days)
        expected |= {object_rel(settings.node_name, rel): rows for rel, rows in parts.items()}

    for settings in nodes:
        store = ObjectStore.from_settings(settings)
        result = store.upload_local(settings.raw_dir)
        assert result.failed == 0 and result.uploaded == len(expected) // 2
        assert discover_files(settings.raw_dir) == []  # removed locally once uploaded

    assert store.raw_root == f"{nodes[0].s3_bucket}/analytics/prod/raw"
    got = bucket_objects(store)
    assert sorted(got) == sorted(expected)
    for rel, rows in expected.items():
        assert got[rel] == rows, rel
        site, day, hour = rel.split("/")[:3]
        assert all(r["site_id"] == site.removeprefix("site_id=") for r in rows)
        assert {datetime.fromtimestamp(r["ts"].timestamp(), UTC).strftime("date=%Y-%m-%d/hour=%H")
                for r in rows} == {f"{day}/{hour}"}
    assert sum(len(rows) for rows in got.values()) == 600


def test_uploads_that_fail_leave_the_files_for_the_next_pass(
    cluster_settings: NodeSettings, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = node(cluster_settings, "n1")
    write_segment(settings, "20260301T000000-7-000000-000001", events("e", 200))
    seal_all(settings.wal_dir, settings.raw_dir)
    before = local_parts(settings)

    # the store cannot be reached (nothing listens there)
    unreachable = ObjectStore(endpoint="http://127.0.0.1:9", bucket=settings.s3_bucket,
                              access_key="x", secret_key="y", node_name="n1")
    with caplog.at_level(logging.ERROR, logger="littlestats.objectstore"):
        failed = unreachable.upload_local(settings.raw_dir)
    assert failed.uploaded == 0 and failed.failed == len(before)
    assert local_parts(settings) == before
    assert "retried at every sealing pass" in caplog.text and "cluster init" in caplog.text

    store = ObjectStore.from_settings(settings)
    assert store.upload_local(settings.raw_dir).uploaded == len(before)
    assert bucket_objects(store) == {object_rel("n1", rel): rows for rel, rows in before.items()}


# Uploads, then stops for ever before removing any local file: killed in that window.
KILLED_UPLOADER = """
import json, pathlib, sys, time
from cluster.objectstore import ObjectStore
from littlestats.config import load_settings

settings = load_settings(json.loads(sys.argv[1]), environ={})

def stuck(path, missing_ok=False):
    print("uploaded", path.name, flush=True)
    time.sleep(3600)

pathlib.Path.unlink = stuck
ObjectStore.from_settings(settings).upload_local(settings.raw_dir)
"""


def test_a_node_killed_between_upload_and_removal_uploads_again_without_duplicates(
    cluster_settings: NodeSettings,
) -> None:
    raw = cluster_settings("n1", catalog=False, broker=False)
    settings = load_settings(raw, environ={})
    settings.ensure_dirs()
    sent = events("k", 400)
    write_segment(settings, "20260301T000000-7-000000-000002", sent[:200])
    write_segment(settings, "20260301T000000-7-000001-000003", sent[200:])
    assert len(seal_all(settings.wal_dir, settings.raw_dir)) == 2
    before = local_parts(settings)

    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPLOADER, json.dumps({k: str(v) for k, v in raw.items()})],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("uploaded")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    store = ObjectStore.from_settings(settings)
    partial = bucket_objects(store)
    assert 0 < len(partial) <= len(before)
    assert local_parts(settings) == before  # nothing removed before the kill

    # its next pass (the warehouse process's first sweep after a restart)
    assert store.upload_local(settings.raw_dir).uploaded == len(before)
    assert discover_files(settings.raw_dir) == []
    got = bucket_objects(store)
    assert got == {object_rel("n1", rel): rows for rel, rows in before.items()}
    ids = [row["event_id"] for rows in got.values() for row in rows]
    assert sorted(ids) == sorted(e["event_id"] for e in sent)  # nothing lost, nothing twice


class ListingSpy:
    """The store's file system, recording every listing asked of it."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.listed: list[tuple[str, bool]] = []

    def get_file_info(self, what: Any) -> Any:
        if isinstance(what, FileSelector):
            self.listed.append((what.base_dir.rstrip("/"), what.recursive))
        return self.fs.get_file_info(what)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(TrafficSpec(visitors=40, days=3, loads=1, seed=11))


def uploaded_traffic(traffic: Traffic, settings: Settings, copy: Path) -> ObjectStore:
    """The traffic's raw files uploaded by the node, and kept in ``copy`` as they were."""
    traffic.write_raw(copy)
    traffic.write_raw(settings.raw_dir)
    store = ObjectStore.from_settings(settings)
    result = store.upload_local(settings.raw_dir)
    assert result.failed == 0 and result.uploaded == len(discover_files(copy))
    return store


def test_listing_by_date_range_lists_only_those_dates(
    traffic: Traffic, cluster_settings: NodeSettings, tmp_path: Path,
) -> None:
    settings = node(cluster_settings, "n1")
    store = uploaded_traffic(traffic, settings, tmp_path / "copy")

    def expected(start: date | None, end: date | None) -> list[str]:
        return [object_rel("n1", f.rel) for f in discover_files(tmp_path / "copy", start, end)]

    everything = store.list_raw()
    assert [f.rel for f in everything] == expected(None, None)
    assert all(f.path == store.uri(f.rel) and f.size > 0 for f in everything)

    start, end = date(2026, 3, 2), date(2026, 3, 3)
    spy = ListingSpy(store.filesystem)
    store.__dict__["filesystem"] = spy
    ranged = store.list_raw(start, end)
    assert [f.rel for f in ranged] == expected(start, end)
    assert {f.partition_hour.date() for f in ranged} == {start, end}
    assert [f.site_id for f in ranged] == [f.rel.split("/")[0][8:] for f in ranged]
    # only the two dates' partitions were listed in depth; the rest by name at most
    deep = [path for path, recursive in spy.listed if recursive]
    assert deep and all(path.rsplit("/", 1)[-1] in ("date=2026-03-02", "date=2026-03-03")
                        for path in deep)

    spy.listed.clear()
    assert [f.rel for f in store.list_raw(start)] == expected(start, None)
    assert [f.rel for f in store.list_raw(None, start)] == expected(None, start)
    assert [f.rel for f in store.list_raw(sites=["site-b"])] == [
        r for r in expected(None, None) if r.startswith("site_id=site-b/")]


def test_reading_objects_gives_the_frame_and_the_load_of_the_local_copies(
    traffic: Traffic, cluster_settings: NodeSettings, tmp_path: Path,
) -> None:
    settings = node(cluster_settings, "n1")
    store = uploaded_traffic(traffic, settings, tmp_path / "copy")
    local = discover_files(tmp_path / "copy")
    remote = store.list_raw()

    def events_of(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.drop("_file").sort("event_id", "ts", "received_at")

    remote_frame = read_raw(remote)
    assert set(remote_frame["_file"].unique()) == {f.path for f in remote}
    assert_frame_equal(events_of(read_raw(local)), events_of(remote_frame))

    # the loader, given the objects as candidates, builds the same warehouse
    tz = traffic.spec.timezones
    from_disk = connect(tmp_path / "disk.duckdb")
    from_store = connect(tmp_path / "store.duckdb")
    disk_load = load_pending(from_disk, tmp_path / "copy", tz, chunk_rows=2_000)
    store_load = load_pending(from_store, settings.raw_dir, tz, files=remote, chunk_rows=2_000)
    assert store_load.files == disk_load.files == len(remote)
    assert store_load.chunks > 1 and store_load.new_events == disk_load.new_events > 0
    assert_same(snapshot(from_disk), snapshot(from_store), files=False)
    manifest = from_store.sql("SELECT path, rows FROM loaded_files ORDER BY path").pl()
    assert manifest["path"].to_list() == sorted(f.rel for f in remote)
    assert manifest["rows"].sum() == remote_frame.height
    # loaded once: a second run finds nothing new
    assert load_pending(from_store, settings.raw_dir, tz, files=store.list_raw()).files == 0


def test_an_older_file_without_a_column_reads_it_as_nulls(
    cluster_settings: NodeSettings,
) -> None:
    settings = node(cluster_settings, "n1")
    write_segment(settings, "20260301T000000-7-000000-000004", events("o", 30, hours=(0,)))
    seal_all(settings.wal_dir, settings.raw_dir)
    for f in discover_files(settings.raw_dir):  # as a release before `props_bool` wrote them
        pq.write_table(pq.read_table(f.path).drop_columns(["props_bool", "os"]), f.path)
    store = ObjectStore.from_settings(settings)
    store.upload_local(settings.raw_dir)
    frame = read_raw(store.list_raw())
    assert frame.height == 30
    assert frame["os"].null_count() == 30 and frame["props_bool"].null_count() == 30
    assert frame["pathname"].null_count() == 0


def test_an_analyst_reads_the_bucket_with_polars_and_pyarrow(
    traffic: Traffic, cluster_settings: NodeSettings, tmp_path: Path,
) -> None:
    settings = node(cluster_settings, "n1", s3_prefix="team")
    store = uploaded_traffic(traffic, settings, tmp_path / "copy")
    rows = read_raw(discover_files(tmp_path / "copy")).height

    # as docs/cluster.md shows it
    options = {"aws_endpoint_url": settings.s3_endpoint, "aws_region": settings.s3_region,
               "aws_access_key_id": settings.s3_access_key,
               "aws_secret_access_key": settings.s3_secret_key, "aws_allow_http": "true"}
    raw = pl.scan_parquet(f"s3://{settings.s3_bucket}/team/raw/**/*.parquet",
                          storage_options=options, hive_partitioning=False)
    per_site = raw.group_by("site_id").len().collect()
    assert per_site["len"].sum() == rows
    assert set(per_site["site_id"]) == set(traffic.spec.sites)
    assert store.scan().select(pl.len()).collect().item() == rows

    dataset = ds.dataset(f"{settings.s3_bucket}/team/raw", filesystem=store.filesystem,
                         format="parquet", partitioning="hive")
    one_day = dataset.to_table(filter=ds.field("date") == "2026-03-02")
    assert 0 < one_day.num_rows < rows

    # DuckDB over the pyarrow dataset (its httpfs extension is not needed)
    con = duckdb.connect()
    con.register("raw", dataset)
    counted = con.execute(
        "SELECT count(*) FROM raw WHERE site_id = 'site-a' AND date = '2026-03-02'").fetchall()
    assert counted[0] == (
        one_day.filter(pc.equal(one_day["site_id"], "site-a")).num_rows,)


def test_retention_removes_old_hours_and_a_purged_site_never_comes_back(
    traffic: Traffic, cluster_settings: NodeSettings, tmp_path: Path,
) -> None:
    settings = node(cluster_settings, "n1")
    store = uploaded_traffic(traffic, settings, tmp_path / "copy")
    before = store.list_raw()
    cutoff = datetime(2026, 3, 2, 13, 30, tzinfo=UTC)

    removed = store.apply_retention({"site-a": 1, "site-b": 0}, now=cutoff + timedelta(days=1))
    old_a = {f.rel.rsplit("/", 1)[0] for f in before
             if f.site_id == "site-a" and f.partition_hour + timedelta(hours=1) <= cutoff}
    assert removed == len(old_a) > 0
    after = store.list_raw()
    assert [f.rel for f in after] == [
        f.rel for f in before if f.rel.rsplit("/", 1)[0] not in old_a]
    assert all(f.partition_hour + timedelta(hours=1) > cutoff for f in after if f.site_id == "site-a")

    assert store.purge_site("site-b") == sum(f.site_id == "site-b" for f in after)
    assert {f.site_id for f in store.list_raw()} == {"site-a"}
    assert store.deleted_sites() == {"site-b"}
    assert store.purge_site("site-b") == 0  # again: nothing left

    # a node that still had a file of the deleted site discards it instead of uploading it
    traffic.write_raw(settings.raw_dir)
    result = store.upload_local(settings.raw_dir)
    assert result.discarded == sum(f.site_id == "site-b" for f in before) and result.failed == 0
    assert discover_files(settings.raw_dir) == []
    assert not any(rel.startswith("site_id=site-b/") for rel in bucket_objects(store))

    store.unmark_site_deleted("site-b")
    assert store.deleted_sites() == frozenset()


def test_the_warehouse_process_uploads_only_on_a_node_with_object_storage(
    cluster_settings: NodeSettings, tmp_path: Path,
) -> None:
    from jobs.daemon import _raw_upload

    assert _raw_upload(load_settings({"data_dir": tmp_path / "single"}, environ={})) is None
    settings = node(cluster_settings, "n1")
    upload = _raw_upload(settings)
    assert upload is not None
    write_segment(settings, "20260301T000000-7-000000-000005", events("d", 20, hours=(0,)))
    seal_all(settings.wal_dir, settings.raw_dir)
    result = upload()
    assert isinstance(result, UploadResult)
    assert result.uploaded == len(bucket_objects(ObjectStore.from_settings(settings))) == 3


def test_a_serving_node_uploads_every_acknowledged_event_across_a_kill_9(
    cluster_settings: NodeSettings,
) -> None:
    from tests.ingest.helpers import stream
    from tests.server import LiveServer, add_site, free_port

    raw = cluster_settings("n1", catalog=False, broker=False)
    data_dir = raw.pop("data_dir")
    env = {f"LITTLESTATS_{k.upper()}": str(v) for k, v in raw.items()}
    site = add_site(data_dir)["id"]
    server = LiveServer(data_dir, free_port(), 2, ("--dev",),
                        {**env, "LITTLESTATS_SEGMENT_SECONDS": "0.3"})
    server.start()
    total, clients = 900, 6
    acked: set[int] = set()
    failed: set[int] = set()
    lock = threading.Lock()
    threads = [threading.Thread(target=stream,
                                args=(server, site, list(range(c, total, clients)), acked, failed, lock))
               for c in range(clients)]
    for t in threads:
        t.start()
    try:
        # kill -9 every process of the node (workers, warehouse process) mid-stream; start again
        while len(acked) + len(failed) < total // 2:
            time.sleep(0.01)
        server.kill_all()
        server.start()
        for t in threads:
            t.join(timeout=120)
        assert len(acked) + len(failed) == total and failed and len(acked) > total // 3

        store = ObjectStore(endpoint=raw["s3_endpoint"], bucket=raw["s3_bucket"],
                            access_key=raw["s3_access_key"], secret_key=raw["s3_secret_key"],
                            region=raw["s3_region"])
        deadline = time.monotonic() + 60
        while True:
            files = store.list_raw(sites=[site])
            paths = read_raw(files)["pathname"].to_list() if files else []
            indices = [int(p.rsplit("/", 1)[1]) for p in paths if p.startswith("/crash/")]
            if acked <= set(indices) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        server.stop()
    assert acked <= set(indices), f"{len(acked - set(indices))} acknowledged events not uploaded"
    assert len(indices) == len(set(indices)), "an event was uploaded twice"
    assert all(f.rel.rsplit("/", 1)[1].startswith("part-n1-") for f in files)
