"""Load leases on a real PostgreSQL: one holder at a time, takeover after a kill -9 with a larger
token, renewal, and the fence that refuses a stale holder's commit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from cluster import catalog
from cluster.catalog import connect_shared
from cluster.lease import (
    LeaseLost,
    LeaseTable,
    claim,
    ensure_fence,
    fence,
    init_step,
    try_acquire,
)
from littlestats.config import load_settings

pytestmark = pytest.mark.slow

HOLDER = Path(__file__).with_name("lease_holder.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dsn(postgres: Any) -> str:
    """A database of its own for each test (the lease table starts empty)."""
    return str(postgres.create_database(f"lease_{uuid.uuid4().hex[:12]}"))


class Holder:
    """A ``lease_holder.py`` process in a process group of its own, and what it has said."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER), *args], stdout=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        self.events: list[dict[str, Any]] = []

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        event: dict[str, Any] = orjson.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.next_event(left)
            if event is None:
                break
            if event["event"] == kind:
                return event
        raise AssertionError(f"no {kind!r} within {timeout} s; said {self.events}")

    def kill(self) -> None:
        with_suppressed_lookup(lambda: os.killpg(self.proc.pid, signal.SIGKILL))
        self.proc.wait(timeout=10)


def with_suppressed_lookup(fn: Any) -> None:
    try:
        fn()
    except ProcessLookupError:
        pass


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        h.kill()


def lease_row(dsn: str, name: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT holder, token, expires_at > now() FROM littlestats_leases"
                          " WHERE name = %s", [name]).fetchone()
    assert row is not None
    return tuple(row)


def test_one_of_several_racing_processes_gets_the_lease(dsn: str, holders: list[Holder]) -> None:
    for round_ in range(3):
        at = time.time() + 1.5  # all ask at this instant, once
        racers = [Holder(dsn, f"race{round_}", f"node{i}", "30", "--at", str(at), "--once")
                  for i in range(4)]
        holders.extend(racers)
        outcomes = [r.next_event(20) for r in racers]
        assert all(o is not None for o in outcomes), outcomes
        winners = [o for o in outcomes if o is not None and o["event"] == "acquired"]
        assert len(winners) == 1, outcomes
        assert winners[0]["token"] == 1
        holder, token, live = lease_row(dsn, f"race{round_}")
        assert (holder, token, live) == (winners[0]["holder"], 1, True)


def test_a_killed_holders_lease_is_taken_over_after_expiry_with_a_larger_token(
    dsn: str, holders: list[Holder],
) -> None:
    ttl = 2.0
    first = Holder(dsn, "load", "node-a", str(ttl))
    holders.append(first)
    acquired = first.wait_for("acquired", 20)
    second = Holder(dsn, "load", "node-b", str(ttl))
    holders.append(second)
    # node-a renews in the background: node-b waits well past one time to live
    assert second.next_event(3 * ttl) is None, second.events
    assert lease_row(dsn, "load")[:2] == ("node-a", acquired["token"])

    killed_at = time.time()
    first.kill()
    taken = second.wait_for("acquired", 4 * ttl)
    waited = taken["t"] - killed_at
    assert taken["token"] > acquired["token"]
    # not before node-a's last renewal expired, and soon after
    assert 0 < waited <= ttl + 1.0, waited
    assert lease_row(dsn, "load")[:2] == ("node-b", taken["token"])


def test_a_paused_holder_learns_it_lost_the_lease_once_resumed(
    dsn: str, holders: list[Holder],
) -> None:
    ttl = 1.5
    first = Holder(dsn, "load", "node-a", str(ttl))
    holders.append(first)
    first.wait_for("acquired", 20)
    os.killpg(first.proc.pid, signal.SIGSTOP)  # a long pause: no renewals
    second = Holder(dsn, "load", "node-b", str(ttl))
    holders.append(second)
    taken = second.wait_for("acquired", 4 * ttl)
    os.killpg(first.proc.pid, signal.SIGCONT)
    resumed = time.time()
    lost = first.wait_for("lost", ttl)
    assert lost["t"] - resumed < ttl / 3 + 0.5
    assert lease_row(dsn, "load")[:2] == ("node-b", taken["token"])


def test_nodes_creating_the_lease_table_at_the_same_moment_all_succeed(dsn: str) -> None:
    tables = [LeaseTable(dsn) for _ in range(6)]
    for t in tables:
        t._connection()  # connected beforehand: only the creations race
    barrier = threading.Barrier(len(tables))
    failed: list[BaseException] = []

    def create(table: LeaseTable) -> None:
        barrier.wait()
        try:
            table.create()
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=create, args=(t,)) for t in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed, failed
    assert tables[0].states() == []
    for t in tables:
        t.close()


def test_cluster_init_creates_the_lease_table_and_says_who_holds_a_lease(dsn: str) -> None:
    settings = load_settings({"node_name": "n1", "catalog_dsn": dsn}, environ={})
    assert init_step(settings) == "table littlestats_leases ready"
    lease = try_acquire(dsn, "load", "n1/42", 30)
    assert lease is not None
    try:
        assert init_step(settings) == ("table littlestats_leases ready; held now: load by n1/42"
                                       f" (token {lease.token})")
    finally:
        lease.release()


def test_the_holder_renews_and_a_released_lease_is_free_at_once_with_a_new_token(dsn: str) -> None:
    ttl = 0.9
    lease = try_acquire(dsn, "load", "node-a", ttl)
    assert lease is not None
    try:
        time.sleep(3 * ttl)  # three lifetimes: held only by renewal
        lease.check()
        assert try_acquire(dsn, "load", "node-b", ttl) is None
        first_expiry = lease.grant.expires_at
    finally:
        lease.release()
    with pytest.raises(LeaseLost):
        lease.check()
    again = try_acquire(dsn, "load", "node-b", ttl)
    assert again is not None
    try:
        assert again.token == lease.token + 1
        assert again.grant.expires_at > first_expiry
    finally:
        again.release()


def test_acquire_is_one_statement_that_never_hands_out_a_smaller_token(dsn: str) -> None:
    table = LeaseTable(dsn)
    table.create()
    tokens = []
    barrier = threading.Barrier(8)
    got: list[int] = []

    def race() -> None:
        mine = LeaseTable(dsn)
        barrier.wait()
        for _ in range(20):
            grant = mine.acquire("busy", f"t{threading.get_ident()}", 0.001)
            if grant is not None:
                got.append(grant.token)
        mine.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tokens = sorted(got)
    # every acquisition of the (instantly expiring) lease got a token of its own
    assert len(tokens) == len(set(tokens)) > 8
    assert tokens[-1] == lease_row(dsn, "busy")[1]
    table.close()


def stale_holder_is_fenced_off(dsn: str, db: duckdb.DuckDBPyConnection, node_a: Any,
                               node_b: Any) -> tuple[bool, bool]:
    """Node A loses its lease in the middle of a load transaction (an operator expires it here,
    as a long pause would), node B takes over and claims the fence. Of A's transaction and B's
    claim exactly one commits; once B's claim has, A's commits are refused."""
    db.execute("CREATE TABLE IF NOT EXISTS facts (who VARCHAR)")
    ensure_fence(db)
    lease_a = try_acquire(dsn, "load", "node-a", 60)
    assert lease_a is not None

    node_a.execute("BEGIN")
    node_a.execute("INSERT INTO facts VALUES ('a')")
    fence(node_a, lease_a)  # A writes its token: fine so far

    with psycopg.connect(dsn, autocommit=True) as pg:  # A's lease expires (A does not know yet)
        pg.execute("UPDATE littlestats_leases SET expires_at = now() WHERE name = 'load'")
    lease_b = try_acquire(dsn, "load", "node-b", 60)
    assert lease_b is not None and lease_b.token > lease_a.token
    outcomes = []
    for step in (lambda: claim(node_b, lease_b), lambda: node_a.execute("COMMIT")):
        try:
            step()
            outcomes.append(True)
        except duckdb.TransactionException:
            outcomes.append(False)
    claimed, a_committed = outcomes
    assert claimed != a_committed, outcomes
    if not claimed:
        claim(node_b, lease_b)  # A's commit came first (it wrote the row first): B claims now

    node_a.execute("BEGIN")
    node_a.execute("INSERT INTO facts VALUES ('a2')")
    with pytest.raises(LeaseLost, match="fenced off"):
        fence(node_a, lease_a)
    node_a.execute("ROLLBACK")

    node_b.execute("BEGIN")
    node_b.execute("INSERT INTO facts VALUES ('b')")
    fence(node_b, lease_b)
    node_b.execute("COMMIT")
    expected = [("a",), ("b",)] if a_committed else [("b",)]
    assert sorted(db.execute("SELECT who FROM facts").fetchall()) == expected
    assert db.execute("SELECT token, holder FROM lease_fence").fetchall() == [
        (lease_b.token, "node-b")]
    lease_a.release()
    lease_b.release()
    return claimed, a_committed


def test_a_stale_holders_commit_is_refused_by_the_fence_in_a_database_file(
    dsn: str, tmp_path: Path,
) -> None:
    db = duckdb.connect(str(tmp_path / "fence.duckdb"))
    stale_holder_is_fenced_off(dsn, db, db.cursor(), db.cursor())


def test_a_stale_holders_commit_is_refused_by_the_fence_in_the_lake(
    cluster_settings: Callable[..., dict[str, Any]],
) -> None:
    """Two nodes' connections to the shared lake (DuckLake on PostgreSQL, data on RGW): the new
    holder's claim commits first, and the stale holder's transaction, which had written the
    fence before, fails at its commit."""
    settings = load_settings(cluster_settings("n1", broker=False), environ={})
    catalog.init(settings)
    node_a, node_b = connect_shared(settings), connect_shared(settings)
    try:
        claimed, a_committed = stale_holder_is_fenced_off(settings.catalog_dsn, node_b, node_a,
                                                          node_b)
    finally:
        node_a.close()
        node_b.close()
    assert claimed and not a_committed
