"""The engines a cluster runs on answer, and stop without leaving a process behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from cluster.cli import cluster_toml
from cluster.engines import Nats, Postgres
from cluster.s3 import s3_filesystem, storage_options
from littlestats.cli import main

pytestmark = pytest.mark.slow


def _gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # neither the leader nor anything left in its group


def test_postgres_answers_a_query(postgres) -> None:
    with psycopg.connect(postgres.dsn) as con:
        assert con.execute("SELECT current_database(), 6 * 7").fetchone() == ("littlestats", 42)


def test_postgres_database_per_test_is_empty_and_separate(cluster_settings) -> None:
    a = cluster_settings("n1", s3=False, broker=False)
    b = cluster_settings("n2", s3=False, broker=False)
    assert a["catalog_dsn"] == b["catalog_dsn"]  # nodes of one test share the catalog
    with psycopg.connect(a["catalog_dsn"]) as con:
        con.execute("CREATE TABLE t (x int)")
        assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                           ).fetchone() == (1,)


def test_nats_publish_subscribe_and_jetstream(nats) -> None:
    import nats as nats_py

    async def roundtrip() -> tuple[bytes, int]:
        nc = await nats_py.connect(nats.url)
        try:
            sub = await nc.subscribe("littlestats.test")
            await nc.publish("littlestats.test", b"hello")
            msg = await sub.next_msg(timeout=5)
            js = nc.jetstream()
            stream = f"T{os.getpid()}"
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
            ack = await js.publish(f"{stream}.e", b"event")
            await js.delete_stream(stream)
            return msg.data, ack.seq
        finally:
            await nc.close()

    assert asyncio.run(roundtrip()) == (b"hello", 1)


def test_postgres_stop_leaves_no_process_and_restarts_on_its_data(tmp_path: Path) -> None:
    pg = Postgres(tmp_path / "pg")
    with pg:
        with psycopg.connect(pg.dsn) as con:
            con.execute("CREATE TABLE kept (x int)")
            con.execute("INSERT INTO kept VALUES (7)")
        pids = [p.pid for p in pg.processes]
    _gone(pids)
    with pg, psycopg.connect(pg.dsn) as con:  # same data, same password, another free port
        assert con.execute("SELECT x FROM kept").fetchone() == (7,)
    pg.destroy()
    assert not pg.dir.exists()


def test_nats_stop_leaves_no_process(tmp_path: Path) -> None:
    with Nats(tmp_path / "nats") as n:
        assert n.running()
        pids = [p.pid for p in n.processes]
    _gone(pids)


def test_a_port_in_use_is_named_with_the_log(tmp_path: Path, nats) -> None:
    with pytest.raises(Exception, match="nats.log"):
        Nats(tmp_path / "clash", port=nats.port).start()


def _s3(settings: dict) -> tuple[pafs.S3FileSystem, dict[str, str]]:
    keys = (settings["s3_endpoint"], settings["s3_access_key"], settings["s3_secret_key"],
            settings["s3_region"])
    return s3_filesystem(*keys), storage_options(*keys)


def test_s3_hive_dataset_written_by_pyarrow_and_read_by_polars(cluster_settings) -> None:
    settings = cluster_settings(catalog=False, broker=False)
    fs, options = _s3(settings)
    bucket = settings["s3_bucket"]
    assert fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) == []  # a fresh bucket
    n = 30_000
    table = pa.table({
        "site_id": pa.array([1, 2, 3] * (n // 3), pa.int32()),
        "date": ["2026-01-02"] * (n // 2) + ["2026-01-03"] * (n // 2),
        "seq": pa.array(range(n), pa.int64()),
        # Incompressible: the files are several MB, written in parts (RGW refused the SDK's
        # default checksums on those, and the write hung).
        "blob": [os.urandom(300) for _ in range(n)],
    })
    ds.write_dataset(table, f"{bucket}/raw", filesystem=fs, format="parquet",
                     partitioning=ds.partitioning(
                         pa.schema([("site_id", pa.int32()), ("date", pa.string())]),
                         flavor="hive"))
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(f"{bucket}/raw", recursive=True))
             if f.type == pafs.FileType.File]
    assert len(files) == 6
    assert f"{bucket}/raw/site_id=2/date=2026-01-03/part-0.parquet" in files
    back = pl.read_parquet(f"s3://{bucket}/raw/**/*.parquet", storage_options=options,
                           hive_partitioning=True)
    assert back.height == n
    assert back["seq"].sort().to_list() == list(range(n))
    assert back.filter(pl.col("site_id") == 2)["seq"].to_list() == sorted(range(1, n, 3))
    # polars writes to the bucket directly too, and pyarrow reads what it wrote.
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(f"s3://{bucket}/polars/x.parquet",
                                                 storage_options=options)
    assert ds.dataset(f"{bucket}/polars", filesystem=fs).to_table()["x"].to_pylist() == [1, 2, 3]


def test_cluster_init_creates_the_bucket_and_is_idempotent(cluster_settings, tmp_path) -> None:
    settings = cluster_settings(catalog=False, broker=False)
    settings["s3_bucket"] = f"init-{os.getpid()}-{time.time_ns() % 10**9}"
    settings.pop("data_dir")
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(settings))
    fs, _ = _s3(settings)
    assert fs.get_file_info(settings["s3_bucket"]).type == pafs.FileType.NotFound
    first = CliRunner().invoke(main, ["cluster", "init", "--config", str(config)])
    assert first.exit_code == 0, first.output
    # every step says what it did; only the bucket is configured here
    assert first.output.splitlines() == [
        f"bucket: created s3://{settings['s3_bucket']} at {settings['s3_endpoint']}",
        "catalog: skipped: no catalog_dsn", "leases: skipped: no catalog_dsn",
        "stream: skipped: no broker_url"]
    assert fs.get_file_info(settings["s3_bucket"]).type == pafs.FileType.Directory
    again = CliRunner().invoke(main, ["cluster", "init", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0].endswith("exists")


def test_cluster_init_says_which_setting_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('s3_endpoint = "http://127.0.0.1:1"\n')  # no node_name, no bucket
    result = CliRunner().invoke(main, ["cluster", "init", "--config", str(config)])
    assert result.exit_code == 1
    assert "node_name" in result.output


def _processes_mentioning(*paths: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(p) in argv for p in paths):
            found.append(f"{entry.name}: {argv}")
    return found


def _trial_cluster(directory: Path) -> tuple[subprocess.Popen[str], dict]:
    """``littlestats cluster engines --dir directory`` running, and the settings it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "littlestats", "cluster", "engines", "--dir", str(directory),
         "--osd-size", "1G"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = ""
    while "node_name" not in out:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"cluster engines ended: {proc.wait()}\n{proc.stderr.read()}")  # type: ignore[union-attr]
        out += line
    return proc, tomllib.loads(out)


def test_trial_cluster_runs_stops_cleanly_and_restarts_on_its_data(tmp_path: Path) -> None:
    directory = tmp_path / "trial"
    proc, settings = _trial_cluster(directory)
    try:
        assert settings["node_name"] == "node1"
        config = tmp_path / "cluster.toml"
        config.write_text(cluster_toml(settings))
        init = subprocess.run([sys.executable, "-m", "littlestats", "cluster", "init",
                               "--config", str(config)], capture_output=True, text=True)
        assert init.returncode == 0, init.stderr
        assert init.stdout.startswith("bucket: created s3://littlestats")
        fs, _ = _s3(settings)
        with fs.open_output_stream("littlestats/kept.txt") as f:
            f.write(b"still here")
        with psycopg.connect(settings["catalog_dsn"]) as con:
            con.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", settings["broker_url"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    pg_home = (directory / "postgres" / "home")
    watched = [directory, pg_home.resolve()] if pg_home.is_symlink() else [directory]
    assert _processes_mentioning(*watched) == []

    proc, again = _trial_cluster(directory)  # the same data, on new ports
    try:
        assert again["s3_access_key"] == settings["s3_access_key"]
        fs, _ = _s3(again)
        with fs.open_input_stream("littlestats/kept.txt") as f:
            assert f.read() == b"still here"
        with psycopg.connect(again["catalog_dsn"]) as con:
            assert con.execute("SELECT answer FROM kept").fetchone() == (42,)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        Postgres(directory / "postgres").destroy()  # its home outside tmp_path, if it has one
    assert _processes_mentioning(*watched) == []


def test_a_shared_engine_ends_with_the_test_run(tmp_path: Path) -> None:
    """The keeper behind the session fixtures stops its engine when the run's main process ends,
    however it ends (here: killed)."""
    run = subprocess.Popen(["sleep", "300"])  # stands for the run's main pytest process
    state = tmp_path / "nats.json"
    keeper = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.engine_keeper", "nats", str(tmp_path / "nats"),
         str(state), str(run.pid)], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        while not state.exists():
            assert keeper.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        port = json.loads(state.read_text())["port"]
        assert _processes_mentioning(tmp_path / "nats")  # running
        run.kill()
        assert keeper.wait(30) == 0
        assert _processes_mentioning(tmp_path / "nats") == []
        assert not state.exists() and not (tmp_path / "nats").exists()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        run.kill()
        keeper.kill()
