"""End to end: three ``littlestats serve --config`` nodes share object storage (Ceph RGW) and the
lake (DuckLake on PostgreSQL); the loader is killed with ``kill -9`` in the middle of a load; every
beacon any node accepted is in the shared tables exactly once, and every node answers the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from cluster import catalog
from cluster.catalog import connect_shared
from cluster.jobs import ClusterWarehouse
from cluster.lease import LOAD_LEASE, try_acquire
from ingest.wal import CLOSED_SUFFIX, encode_records
from littlestats.config import Settings, load_settings
from tests.server import LiveServer, add_site, free_port

pytestmark = pytest.mark.slow

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
NODE_STEP = Path(__file__).with_name("cluster_node.py")
ROOT = Path(__file__).resolve().parents[2]
NODES = 3
PER_WAVE = 150  # beacons per wave, spread over the nodes
LEASE_SECONDS = 3.0


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    lines = []
    for key, value in settings.items():
        if key == "data_dir":
            continue
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Node:
    """One cluster node: a ``littlestats serve --config`` in a session of its own."""

    def __init__(self, settings: dict[str, Any], config: Path) -> None:
        self.settings = settings
        self.config = config
        self.data_dir = Path(settings["data_dir"])
        self.server: LiveServer | None = None

    def start(self) -> None:
        self.server = LiveServer(self.data_dir, free_port(), 1,
                                 ("--dev", "--config", str(self.config)))
        self.server.start(timeout=120)
        self.server.wait_ready(timeout=120)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def log(self) -> str:
        return self.server.log() if self.server else ""


@pytest.fixture
def nodes(cluster_settings: Callable[..., dict[str, Any]], tmp_path: Path) -> Iterator[list[Node]]:
    made = []
    for i in range(1, NODES + 1):
        settings = cluster_settings(
            f"node{i}", broker=False, segment_seconds=1, load_interval_seconds=2,
            load_lease_seconds=LEASE_SECONDS, load_chunk_rows=1,  # a chunk per part file
        )
        Path(settings["data_dir"]).mkdir(parents=True)
        made.append(Node(settings, write_config(tmp_path / f"node{i}.toml", settings)))
    yield made
    for node in made:
        if node.server is not None:
            node.server.stop()


def lake_settings(node: Node) -> Settings:
    return load_settings(node.settings, environ={})


def live_lease(dsn: str) -> tuple[str, int] | None:
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT holder, token FROM littlestats_leases WHERE name = 'load'"
                          " AND holder IS NOT NULL AND expires_at > now()").fetchone()
    return (str(row[0]), int(row[1])) if row else None


def max_token(dsn: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT coalesce(max(token), 0) FROM littlestats_leases").fetchone()
    return int(row[0]) if row else 0


def send(nodes: list[Node], key: str, paths: list[str]) -> None:
    clients = [httpx.Client(base_url=n.url, timeout=10) for n in nodes]
    try:
        for i, path in enumerate(paths):
            r = clients[i % len(clients)].post(
                f"/api/v2/track/{key}", json={"url": f"https://example.com{path}"},
                headers={"User-Agent": CHROME})
            assert r.status_code == 200, r.text
    finally:
        for c in clients:
            c.close()


def write_segment(settings: Settings, segment_id: str, tag: str, count: int) -> set[str]:
    """A closed write-ahead-log segment of ``count`` pageviews over three sites and two days;
    their event ids."""
    base = (int(time.time()) // 3600 - 30) * 3_600_000  # the start of an hour, 30 hours ago
    rows = [{"event_id": f"{tag}-{i:05d}", "site_id": ("alpha", "beta", "gamma")[i % 3],
             "ts": base + (i % 2) * 24 * 3_600_000 + i * 1000, "received_at": base,
             "type": "pageview", "visitor_key": i % 17, "visitor_key_source": "tracker",
             "pathname": f"/{i}", "source": "Direct / None", "device": "desktop",
             "browser": "Firefox", "os": "Linux"} for i in range(count)]
    path = settings.wal_dir / f"{segment_id}{CLOSED_SUFFIX}"
    path.write_bytes(bytes(encode_records([orjson.dumps(r) for r in rows])))
    return {str(r["event_id"]) for r in rows}


COUNTS = ("SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT event_id) FROM events),"
          " (SELECT count(*) FROM loaded_files)")


def lake_counts(settings: Settings) -> tuple[int, int, int]:
    """Events, distinct event ids, and raw files in the manifest."""
    lake = connect_shared(settings, read_only=True)
    try:
        events, ids, files = lake.execute(COUNTS).fetchall()[0]
    finally:
        lake.close()
    return int(events), int(ids), int(files)


def node_step(settings: Settings, step: str) -> dict[str, Any]:
    """``cluster_node.py STEP`` run as another node, in a process of its own."""
    out = subprocess.run(
        [sys.executable, str(NODE_STEP), step], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    answer: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return answer


def test_only_the_lease_holder_loads_and_a_fenced_off_load_stops_between_chunks(
    cluster_settings: Callable[..., dict[str, Any]],
) -> None:
    one, two = (load_settings(cluster_settings(name, broker=False, load_chunk_rows=1),
                              environ={}) for name in ("n1", "n2"))
    for s in (one, two):
        s.ensure_dirs()
    catalog.init(one)
    sent = write_segment(one, "seg-a", "a", 120) | write_segment(two, "seg-b", "b", 120)

    # another node holds the lease: node one seals and uploads, and loads nothing
    other = try_acquire(one.catalog_dsn, LOAD_LEASE, "other/1", 30)
    assert other is not None
    assert node_step(one, "load")["files"] == 0
    assert lake_counts(one) == (0, 0, 0)
    other.release()

    node_two = ClusterWarehouse(two)
    try:
        assert len(node_two.store.list_raw()) == 6  # node one's: three sites, two days
        # node two loads; after its first chunk node one takes the lease over (as after an
        # expiry) and claims the fence: node two's next commit is refused and its load stops
        taken: list[int] = []

        def take_over(done: int, total: int) -> None:
            if done and not taken:
                taken.append(node_step(one, "claim")["token"])

        assert node_two.load(progress=take_over).files == 0  # stopped: nothing reported
        # queries on a cluster node read the lake
        events, ids, files = node_two.query_sync(COUNTS).rows[0]
        assert 0 < files < 12 and events == ids  # some chunks committed, each whole
    finally:
        node_two.close()

    # node one loads the rest: every event once
    assert node_step(one, "load")["files"] == 12 - files
    assert lake_counts(one) == (len(sent), len(sent), 12)
    assert node_step(two, "load")["files"] == 0
    lake = connect_shared(one, read_only=True)
    try:
        loaded = {r[0] for r in lake.execute("SELECT event_id FROM events").fetchall()}
        fence = lake.execute("SELECT token, holder FROM lease_fence").fetchall()
    finally:
        lake.close()
    assert loaded == sent
    assert fence[0][0] > taken[0] and fence[0][1].startswith("n1/")  # node one loaded last


def test_beacons_on_three_nodes_are_loaded_exactly_once_after_the_loader_is_killed(
    nodes: list[Node],
) -> None:
    first = nodes[0]
    settings = lake_settings(first)
    catalog.init(settings)
    site = add_site(first.data_dir, "example.com")
    for node in nodes[1:]:  # every node knows the site (the control plane is per node)
        for f in first.data_dir.glob("control.sqlite3*"):
            shutil.copy(f, node.data_dir / f.name)
    for node in nodes:
        node.start()
    dsn = settings.catalog_dsn

    sent = [f"/wave1/{i}" for i in range(PER_WAVE)]
    for part in range(3):  # over a few seconds: several segments, so several chunks per load
        send(nodes, site["domainKey"], sent[part::3])
        time.sleep(1)

    # kill -9 the node that holds the load lease once it has committed a chunk (a chunk per part
    # file, so the load has more to do)
    lake = connect_shared(settings, read_only=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert time.monotonic() < deadline, [n.log()[-3000:] for n in nodes]
            held = live_lease(dsn)
            if held and lake.execute("SELECT count(*) FROM loaded_files").fetchall()[0][0]:
                break
            time.sleep(0.05)
        holder, killed_token = held
        loaded_at_kill = lake.execute("SELECT count(*) FROM loaded_files").fetchall()[0][0]
    finally:
        lake.close()
    victim = next(n for n in nodes if holder.startswith(n.settings["node_name"] + "/"))
    assert victim.server is not None
    victim.server.kill_all()
    killed_at = time.monotonic()
    still_held = live_lease(dsn)  # the dead node's lease, until it expires
    survivors = [n for n in nodes if n is not victim]

    more = [f"/wave2/{i}" for i in range(PER_WAVE)]
    send(survivors, site["domainKey"], more)
    sent += more

    # a survivor takes the lease over once the killed holder's expires, with a larger token
    while max_token(dsn) <= killed_token:
        assert time.monotonic() - killed_at < 60, [n.log() for n in survivors]
        time.sleep(0.1)
    takeover = time.monotonic() - killed_at
    if still_held is not None and still_held[0] == holder:
        assert takeover > 0.5  # not before the dead holder's lease expired

    victim.start()  # the killed node comes back: it seals and uploads what its WAL holds
    lake = connect_shared(settings, read_only=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            count = lake.execute("SELECT count(*) FROM events WHERE site_id = ?",
                                 [site["id"]]).fetchall()[0][0]
            if count >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(1)
        time.sleep(3 * 2)  # a few more load intervals: nothing further may arrive
        rows = lake.execute("SELECT pathname, count(*) FROM events WHERE site_id = ?"
                            " GROUP BY pathname", [site["id"]]).fetchall()
        loaded = {path: n for path, n in rows}
        files = lake.execute("SELECT count(*), count(DISTINCT path) FROM loaded_files").fetchall()[0]
        pageviews = lake.execute("SELECT sum(pageviews) FROM sessions WHERE site_id = ?",
                                 [site["id"]]).fetchall()[0][0]
    finally:
        lake.close()
    missing = sorted(set(sent) - set(loaded))
    twice = sorted(p for p, n in loaded.items() if n != 1)
    assert not missing, (len(missing), missing[:10], [n.log()[-3000:] for n in nodes])
    assert not twice, twice[:10]
    assert set(loaded) == set(sent)
    assert files[0] == files[1]  # every raw file in the manifest once
    assert pageviews == len(sent)

    answers = []
    for node in nodes:
        r = httpx.get(f"{node.url}/api/v2/sites/{site['id']}/stats", params={"period": "today"},
                      timeout=30)
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0]["views"] == len(sent)
    assert all(a == answers[0] for a in answers[1:])
    assert files[0] > loaded_at_kill
    print(f"killed {holder} (token {killed_token}) with {loaded_at_kill} of {files[0]} raw files"
          f" loaded; lease {'held' if still_held else 'free'} at the kill, taken over"
          f" {takeover:.1f} s later (token {max_token(dsn)})")
