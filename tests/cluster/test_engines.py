"""The engines a cluster runs on answer, and stop without leaving a process behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psycopg
import pytest

from cluster.engines import Engine, Nats, Postgres

pytestmark = pytest.mark.slow


def _gone(engine: Engine, pids: list[int]) -> None:
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
    _gone(pg, pids)
    with pg, psycopg.connect(pg.dsn) as con:  # same data, same password, another free port
        assert con.execute("SELECT x FROM kept").fetchone() == (7,)
    pg.destroy()
    assert not pg.dir.exists()


def test_nats_stop_leaves_no_process(tmp_path: Path) -> None:
    with Nats(tmp_path / "nats") as n:
        assert n.running()
        pids = [p.pid for p in n.processes]
    _gone(n, pids)


def test_a_port_in_use_is_named_with_the_log(tmp_path: Path, nats) -> None:
    with pytest.raises(Exception, match="nats.log"):
        Nats(tmp_path / "clash", port=nats.port).start()
