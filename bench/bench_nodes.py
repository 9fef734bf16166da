"""Several ingest nodes against one shared store: events/s and CPU per event with 1, 2 and 3
``littlestats serve --config`` nodes, beside one single-machine server, all on this machine.

It starts the engines of a cluster with the project's own code (``cluster.engines``: Ceph's RADOS
gateway for S3, PostgreSQL for the catalog, NATS for the broker). Then, in ``ROUNDS`` rounds (one
with ``--quick``), it runs four conditions in the order A, 1, 2, 3:

* **A** — one ``littlestats serve`` with no cluster settings (the single machine);
* **N = 1, 2, 3** — N nodes (``node_name`` n1 … nN, own port, own data directory, own process
  group, each with the site's ``control.sqlite3``), all pointed at one bucket, one catalog
  database and one NATS server, made for the condition by ``littlestats cluster init``.

Every server runs ``WORKERS`` workers. ``wrk`` drives single beacons (``bench_ingest``'s script)
at all of a condition's servers at once, ``CONNECTIONS`` connections split between them: a warm-up,
then a fixed window. Before the window and after it, every server's workers rotate their write-ahead
log segments (``ingest.rotation``, what ``littlestats load`` does) and the bench waits until the
warehouse processes have sealed them (and, on a node, uploaded the parts and removed them locally).
So the CPU counted from the window's start to the end of the second drain is the whole life of the
window's events on a server: request, WAL, live service (on a node: publishing to the broker and
consuming every node's events), sealing and upload. Measured:

* accepted events/s (wrk's 2xx answers over its duration), in total and per node;
* CPU of each node's process tree (``session_pids``; workers, live service, warehouse process and
  gunicorn master apart) per event the node accepted in the window (its
  ``littlestats_events_accepted_total`` before and after);
* CPU of the engines (Ceph's monitor, OSD and RGW; PostgreSQL and its backends; nats-server)
  over the same span, per event of the window;
* the machine's idle share during the window (idle or waiting for I/O, all cores), and the cores
  busy outside the servers, the engines and ``wrk``.

Then the check: every event a node accepted must be in the bucket — the objects listed with
``ObjectStore.list_raw`` and read with ``warehouse.load.read_raw``, counted per node by the node's
name in the object names — and on the single machine in its local raw Parquet files. Rows must
equal the servers' accepted counters (warm-up and window together), with no event id twice. wrk's
own 2xx count can be a little lower: a request that was in flight when a wrk run ended was
answered (and its event kept) but not counted by wrk.

Scheduled loads are moved out of the way (``load_interval_seconds`` = 3,600 on every server, A
included): this measures ingest, not the loader, which runs on one node at a time (the load lease).
``python -m bench --only nodes`` (``--quick``: one round of short windows); run it with the cluster
extra installed (``.venv-cluster``) and the Debian packages of ``scripts/cluster-engines``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_ingest import write_script
from bench.harness import (
    BenchContext,
    Section,
    machine_busy,
    machine_idle,
    run_wrk,
    wait_while_busy,
)
from tests.server import LiveServer, add_site, free_port, session_pids

WORKERS = 2  # per server, as in the ingest benchmark (one per core)
CONNECTIONS = 64  # wrk connections in all, split between a condition's servers
ROUNDS = 2
WINDOW_SECONDS = 10
WARMUP_SECONDS = 2
NODE_COUNTS = (1, 2, 3)
# The same on every server: no scheduled load during a condition (see the module's text).
COMMON = {"load_interval_seconds": 3600}
DRAIN_TIMEOUT = 90.0
# A worker's housekeeping tick, which adds its tally of accepted events to the metrics, comes
# every min(5, segment_seconds / 4) seconds (littlestats.app); counters are read this long after
# the last request.
COUNTERS_SETTLE = 5.5
# Before each window, the CPU the engines and servers use with no traffic is measured this long.
IDLE_SECONDS = 3.0
ROLES = ("workers", "live", "warehouse", "master")


def _label(condition: int) -> str:
    return "A (single machine)" if condition == 0 else f"{condition} node{'s' if condition > 1 else ''}"


# CPU -------------------------------------------------------------------------------------------

def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped (user + system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _session_cpu(leaders: list[int]) -> dict[int, float]:
    """Each process of the sessions of ``leaders``: its CPU seconds so far, reaped children
    included (a PostgreSQL backend that ends is counted in the postmaster's)."""
    return {pid: _tree_cpu(pid) for leader in leaders for pid in session_pids(leader)}


def _role(pid: int, leader: int) -> str:
    if pid == leader:
        return "master"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return "workers"
    if b"jobs.daemon" in cmdline:
        return "warehouse"
    if b"api.live_service" in cmdline:
        return "live"
    return "workers"


# Servers ---------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    data_dir: Path
    config: Path
    live: LiveServer | None = None
    roles: dict[int, str] = field(default_factory=dict)

    def start(self) -> None:
        """Start the server and wait until it answers. From the main thread only: the server
        is told to stop when the thread that started it ends (``tests.server``)."""
        self.live = LiveServer(self.data_dir, free_port(), WORKERS,
                               ("--dev", "--config", str(self.config)),
                               env={"LITTLESTATS_LOG_LEVEL": "warning"})
        self.live.start(timeout=180)

    def wait_ready(self) -> None:
        assert self.live is not None
        self.live.wait_ready(timeout=180)

    @property
    def leader(self) -> int:
        assert self.live is not None and self.live.proc is not None
        return self.live.proc.pid

    @property
    def url(self) -> str:
        assert self.live is not None
        return self.live.url

    def cpu(self) -> dict[int, float]:
        used = _session_cpu([self.leader])
        for pid in used:
            if pid not in self.roles:
                self.roles[pid] = _role(pid, self.leader)
        return used

    def counters(self) -> tuple[int, int]:
        """(events accepted, events answered 2xx but dropped) since the server started."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        accepted = dropped = 0.0
        for line in text.splitlines():
            if line.startswith("littlestats_events_accepted_total "):
                accepted += float(line.split()[-1])
            elif line.startswith("littlestats_events_dropped_total"):
                dropped += float(line.split()[-1])
        return int(accepted), int(dropped)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def log(self) -> str:
        return self.live.log()[-3000:] if self.live else ""


def _parallel(fn: Callable[[Server], Any], servers: list[Server]) -> list[Any]:
    with ThreadPoolExecutor(len(servers)) as pool:
        return list(pool.map(fn, servers))


def _drain(servers: list[Server], uploads: bool) -> None:
    """Have every server's workers rotate their segments, and wait until each is sealed (and, on
    a node, its parts uploaded and removed locally)."""
    from ingest.rotation import rotate_active_segments
    from littlestats.config import Settings

    dirs = [Settings(data_dir=s.data_dir) for s in servers]
    for d in dirs:
        late = rotate_active_segments(d.wal_dir, d.run_dir)
        if late:
            raise RuntimeError(f"segments not rotated in time: {late}")
    deadline = time.monotonic() + DRAIN_TIMEOUT

    def pending() -> list[Path]:
        found = [p for d in dirs for p in d.wal_dir.glob("*.closed")]
        if uploads:
            found += [p for d in dirs for p in d.raw_dir.rglob("*.parquet")]
        return found

    while left := pending():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not sealed/uploaded within {DRAIN_TIMEOUT:.0f} s: {left[:5]}\n"
                               + "\n".join(s.log() for s in servers))
        time.sleep(0.1)


def _counters_after(servers: list[Server], load_ended: float) -> list[tuple[int, int]]:
    """Every server's counters, read once each worker has added its last requests to them: a
    worker adds its tally at its next request or its housekeeping tick (``COUNTERS_SETTLE``)."""
    time.sleep(max(0.0, load_ended + COUNTERS_SETTLE - time.monotonic()))
    return _parallel(Server.counters, servers)


def _wrk_all(servers: list[Server], script: Path, seconds: int) -> list[dict[str, float]]:
    connections = max(2, CONNECTIONS // len(servers))
    return _parallel(lambda s: run_wrk(s.url, script, seconds, connections), servers)


def _ok(run: dict[str, float]) -> int:
    return int(run["requests"] - run["non2xx"])


# Engines ---------------------------------------------------------------------------------------

@dataclass
class Engines:
    ceph: Any
    postgres: Any
    nats: Any = None  # one per condition: a fresh stream, no earlier condition's events replayed

    def groups(self) -> dict[str, list[int]]:
        """Session leaders per engine part."""
        out = {p.name: [p.pid] for p in self.ceph.processes}  # ceph-mon, ceph-osd, radosgw
        out["postgres"] = [p.pid for p in self.postgres.processes]
        out["nats"] = [p.pid for p in self.nats.processes] if self.nats is not None else []
        return out

    def cpu(self) -> dict[str, float]:
        return {name: sum(_session_cpu(leaders).values()) for name, leaders in self.groups().items()}


@contextmanager
def _engines(work: Path) -> Iterator[Engines]:
    from cluster.engines import Ceph, Postgres

    with Postgres(work / "postgres") as pg, Ceph(work / "ceph") as ceph:
        yield Engines(ceph, pg)


# One condition ---------------------------------------------------------------------------------

def _write_config(path: Path, values: dict[str, Any]) -> Path:
    from cluster.cli import cluster_toml

    path.write_text(cluster_toml(values))
    path.chmod(0o600)
    return path


def _prepare(condition: int, round_no: int, work: Path, template: Path,
             engines: Engines) -> list[Server]:
    """The servers of a condition (not started): their data directories (the site's control
    database copied in) and settings files; for a cluster, its bucket, catalog and stream."""
    from cluster.engines import Nats

    base = work / f"r{round_no}-{'a' if condition == 0 else f'n{condition}'}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    names = ["single"] if condition == 0 else [f"n{i}" for i in range(1, condition + 1)]
    shared: dict[str, Any] = dict(COMMON)
    if condition:
        engines.nats = Nats(base / "nats").start()
        ceph = engines.ceph
        shared.update(
            s3_endpoint=ceph.endpoint, s3_bucket=f"nodes-r{round_no}-n{condition}",
            s3_region=ceph.region, s3_access_key=ceph.access_key, s3_secret_key=ceph.secret_key,
            catalog_dsn=engines.postgres.create_database(f"nodes_r{round_no}_n{condition}"),
            broker_url=engines.nats.url)
    servers = []
    for name in names:
        data_dir = base / name
        data_dir.mkdir()
        for f in template.glob("control.sqlite3*"):
            shutil.copy(f, data_dir / f.name)
        values = dict(shared, node_name=name) if condition else dict(shared)
        servers.append(Server(name, data_dir, _write_config(base / f"{name}.toml", values)))
    if condition:
        done = subprocess.run([sys.executable, "-m", "littlestats", "cluster", "init", "--config",
                               str(servers[0].config)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"littlestats cluster init failed:\n{done.stdout}{done.stderr}")
    return servers


def _bucket_rows(bucket: str, servers: list[Server], engines: Engines) -> dict[str, tuple[int, int]]:
    from cluster.objectstore import ObjectStore
    from warehouse.load import read_raw

    ceph = engines.ceph
    store = ObjectStore(endpoint=ceph.endpoint, bucket=bucket, region=ceph.region,
                        access_key=ceph.access_key, secret_key=ceph.secret_key)
    files = store.list_raw()
    out = {}
    for s in servers:
        mine = [f for f in files if Path(f.rel).name.startswith(f"part-{s.name}-")]
        if mine:
            df = read_raw(mine)
            out[s.name] = (df.height, df["event_id"].n_unique())
        else:
            out[s.name] = (0, 0)
    return out


def _local_rows(server: Server) -> dict[str, tuple[int, int]]:
    from warehouse.load import discover_files, read_raw

    files = discover_files(server.data_dir / "raw")
    if not files:
        return {server.name: (0, 0)}
    df = read_raw(files)
    return {server.name: (df.height, df["event_id"].n_unique())}


def _busy(servers: list[Server], engines: Engines | None) -> float:
    used = sum(sum(s.cpu().values()) for s in servers)
    if engines is not None:
        used += sum(engines.cpu().values())
    return used


def run_condition(condition: int, round_no: int, work: Path, template: Path, script: Path,
                  engines: Engines, window: int, warmup: int) -> dict[str, Any]:
    """One condition of one round: start, warm up, drain, measure the window, drain, check, stop."""
    clustered = condition > 0
    watched = engines if clustered else None
    servers: list[Server] = []
    try:
        servers = _prepare(condition, round_no, work, template, engines)
        for s in servers:
            s.start()
        _parallel(Server.wait_ready, servers)
        wait_while_busy(lambda: _busy(servers, None), 0.05 * len(servers), 30)  # their start-up
        warm = _wrk_all(servers, script, warmup)
        warm_ended = time.monotonic()
        _drain(servers, clustered)
        wait_while_busy(lambda: _busy(servers, watched), 0.05 * (len(servers) + clustered), 10)
        # The engines' CPU with nothing to do (monitor and OSD ticks, the live services' marks):
        # a cost per second, not per event.
        quiet0, quiet_nodes0, quiet_t0 = engines.cpu(), _busy(servers, None), time.monotonic()
        time.sleep(max(IDLE_SECONDS, warm_ended + COUNTERS_SETTLE - time.monotonic()))
        quiet1, quiet_nodes1, quiet_span = engines.cpu(), _busy(servers, None), time.monotonic() - quiet_t0
        before_counts = _counters_after(servers, warm_ended)

        cpu0 = [s.cpu() for s in servers]
        eng0 = engines.cpu()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, idle0, t0 = machine_busy(), machine_idle(), time.monotonic()
        runs = _wrk_all(servers, script, window)
        busy, idle, elapsed = machine_busy() - busy0, machine_idle() - idle0, time.monotonic() - t0
        window_ended = time.monotonic()
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = [s.cpu() for s in servers]
        eng1 = engines.cpu()
        _drain(servers, clustered)
        cpu2 = [s.cpu() for s in servers]
        eng2 = engines.cpu()
        life_span = time.monotonic() - t0
        after_counts = _counters_after(servers, window_ended)
        if clustered:
            stored = _bucket_rows(f"nodes-r{round_no}-n{condition}", servers, engines)
        else:
            stored = _local_rows(servers[0])
    finally:
        if servers:
            _parallel(Server.stop, servers)
        if engines.nats is not None:
            engines.nats.stop()
            engines.nats = None

    wrk_cpu = ((children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime))
    nodes = []
    for s, run, w, c0, c1, c2, b, a in zip(servers, runs, warm, cpu0, cpu1, cpu2, before_counts,
                                          after_counts, strict=True):
        window_roles = dict.fromkeys(ROLES, 0.0)
        life_roles = dict.fromkeys(ROLES, 0.0)
        for pid, used in c1.items():
            window_roles[s.roles[pid]] += used - c0.get(pid, 0.0)
        for pid, used in c2.items():
            life_roles[s.roles[pid]] += used - c0.get(pid, 0.0)
        nodes.append({
            "name": s.name, "rps": _ok(run) / (run["duration_us"] / 1e6), "ok": _ok(run),
            "warm_ok": _ok(w), "non2xx": run["non2xx"] + w["non2xx"],
            "errors": run["errors"] + w["errors"], "p50_ms": run["p50_us"] / 1000,
            "p99_ms": run["p99_us"] / 1000,
            "events": a[0] - b[0], "accepted": a[0], "dropped": a[1],
            "rows": stored[s.name][0], "distinct": stored[s.name][1],
            "window_cpu": window_roles, "life_cpu": life_roles,
        })
    cores = os.cpu_count() or 1
    window_nodes = sum(sum(n["window_cpu"].values()) for n in nodes)
    window_engines = sum(eng1[k] - eng0[k] for k in eng1)
    return {
        "condition": condition, "round": round_no, "nodes": nodes, "seconds": elapsed,
        "rps": sum(n["rps"] for n in nodes), "events": sum(n["events"] for n in nodes),
        "engines_window": {k: eng1[k] - eng0[k] for k in eng1},
        "engines_life": {k: eng2[k] - eng0[k] for k in eng2},
        "wrk_cpu": wrk_cpu, "life_seconds": life_span,
        "engines_idle_cores": {k: (quiet1[k] - quiet0[k]) / quiet_span for k in quiet1},
        "nodes_idle_cores": (quiet_nodes1 - quiet_nodes0) / quiet_span,
        "idle_share": idle / (elapsed * cores),
        "others_cores": max(0.0, busy - window_nodes - window_engines - wrk_cpu) / elapsed,
    }


# Figures ---------------------------------------------------------------------------------------

def _us(cpu: float, events: int) -> float:
    return cpu * 1e6 / max(events, 1)


def node_us(node: dict[str, Any], which: str = "life_cpu", roles: tuple[str, ...] = ROLES) -> float:
    """A node's CPU per event it accepted in the window, µs."""
    return _us(sum(node[which][r] for r in roles), node["events"])


def mean_node_us(result: dict[str, Any], which: str = "life_cpu", roles: tuple[str, ...] = ROLES) -> float:
    return statistics.fmean(node_us(n, which, roles) for n in result["nodes"])


def engine_us(result: dict[str, Any], parts: tuple[str, ...], which: str = "engines_life",
              net: bool = True) -> float:
    """The engines' CPU per event of the window, from its start until its events are uploaded;
    ``net``: less what they use with no traffic over as long (their idle cost, per second)."""
    used = sum(result[which].get(p, 0.0) for p in parts)
    if net:
        span = result["life_seconds"] if which == "engines_life" else result["seconds"]
        used -= sum(result["engines_idle_cores"].get(p, 0.0) for p in parts) * span
    return _us(max(used, 0.0), result["events"])


def live_us_per_cluster_event(result: dict[str, Any]) -> float:
    """The live service's CPU per event of the whole cluster (each node's service consumes every
    node's events): mean over the nodes."""
    return statistics.fmean(_us(n["life_cpu"]["live"], result["events"]) for n in result["nodes"])


CEPH = ("ceph-mon", "ceph-osd", "radosgw")
ENGINE_PARTS = {"Ceph (monitor, OSD, RGW)": CEPH, "PostgreSQL": ("postgres",), "NATS": ("nats",)}


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _span(values: list[float], fmt: str = ",.0f") -> str:
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def summarise(section: Section, results: dict[int, list[dict[str, Any]]], rounds: int) -> None:
    conditions = sorted(results)
    a_rps = _med([r["rps"] for r in results[0]])
    a_us = _med([mean_node_us(r) for r in results[0]])
    for c in conditions:
        rates = [r["rps"] for r in results[c]]
        section.add(f"{_label(c)}: events/s, all servers (median of {rounds}; {_span(rates)})",
                    _med(rates), "events/s", None if c == 0 else a_rps)
    for c in conditions[1:]:
        per_node = [n["rps"] for r in results[c] for n in r["nodes"]]
        section.add(f"{_label(c)}: events/s per node (median over nodes and rounds; {_span(per_node)})",
                    _med(per_node), "events/s")
    for c in conditions:
        per = [node_us(n) for r in results[c] for n in r["nodes"]]
        section.add(f"{_label(c)}: server CPU per event, per node, window + sealing + upload "
                    f"(median of rounds' node means; nodes {_span(per)})",
                    _med([mean_node_us(r) for r in results[c]]), "µs", None if c == 0 else a_us)
    for c in conditions:
        section.add(f"{_label(c)}: … of which the workers (window)",
                    _med([mean_node_us(r, "window_cpu", ("workers",)) for r in results[c]]), "µs")
    for c in conditions[1:]:
        for label, parts in ENGINE_PARTS.items():
            values = [engine_us(r, parts) for r in results[c]]
            section.add(f"{_label(c)}: {label} CPU per event ({_span(values, ',.1f')})",
                        _med(values), "µs")
    for c in conditions:
        idle = [r["idle_share"] * 100 for r in results[c]]
        section.add(f"{_label(c)}: machine idle during the window ({_span(idle, '.0f')} %)",
                    _med(idle), "%")
    missing = extra = twice = 0
    for c in conditions:
        for r in results[c]:
            for n in r["nodes"]:
                missing += max(0, n["accepted"] - n["rows"])
                extra += max(0, n["rows"] - n["accepted"])
                twice += n["rows"] - n["distinct"]
    section.add("accepted events missing from the bucket (nodes) or the raw files (A), all rounds",
                missing, "events", target="0", met=missing == 0)
    section.add("rows beyond the accepted events, or an event id twice, all rounds",
                extra + twice, "events", target="0", met=extra + twice == 0)
    _notes(section, results, conditions)


def _notes(section: Section, results: dict[int, list[dict[str, Any]]], conditions: list[int]) -> None:
    cores = os.cpu_count() or 1
    section.notes.append(
        f"{cores} cores shared by everything: servers ({WORKERS} workers each), engines and wrk "
        f"(-t2, {CONNECTIONS} connections in all, split between the servers); single beacons; "
        f"warm-up then a window per condition, order A, 1, 2, 3 in every round; "
        f"load_interval_seconds = 3,600 on every server (no scheduled load), segment_seconds "
        f"at its default; CPU per event counts a server's processes from the window's start until "
        f"its events are sealed (and uploaded), over the events it accepted in the window")
    for c in conditions:
        parts = []
        for r in results[c]:
            nodes = ", ".join(f"{n['name']} {n['rps']:,.0f}/s {node_us(n):.0f} µs" for n in r["nodes"])
            parts.append(f"round {r['round']}: {r['rps']:,.0f} events/s ({nodes}); idle "
                         f"{r['idle_share'] * 100:.0f} %, cores busy elsewhere {r['others_cores']:.2f}, "
                         f"wrk {_us(r['wrk_cpu'], r['events']):.0f} µs/event")
        section.notes.append(f"{_label(c)}: " + "; ".join(parts))
    for c in conditions:
        roles = ", ".join(f"{role} {_med([mean_node_us(r, 'life_cpu', (role,)) for r in results[c]]):.0f}"
                          for role in ROLES)
        window = _med([mean_node_us(r, "window_cpu") for r in results[c]])
        p99 = _med([statistics.fmean(n["p99_ms"] for n in r["nodes"]) for r in results[c]])
        section.notes.append(f"{_label(c)}: CPU per event by process, µs (median of rounds): {roles}; "
                             f"in the window alone {window:.0f}; p99 latency {p99:.1f} ms")
    for c in conditions[1:]:
        engines = "; ".join(
            f"{name} {_med([engine_us(r, (name,)) for r in results[c]]):.1f} µs "
            f"({_med([engine_us(r, (name,), net=False) for r in results[c]]):.1f} before taking off "
            f"its idle {_med([r['engines_idle_cores'][name] for r in results[c]]):.3f} cores; "
            f"{_med([engine_us(r, (name,), 'engines_window') for r in results[c]]):.1f} in the window)"
            for name in (*CEPH, "postgres", "nats"))
        live = _med([live_us_per_cluster_event(r) for r in results[c]])
        idle = _med([r["nodes_idle_cores"] / c for r in results[c]])
        section.notes.append(f"{_label(c)}: engines' CPU per event (median of rounds), from the "
                             f"window's start until its events were uploaded, less their CPU with "
                             f"no traffic over as long: {engines}; each node's live service "
                             f"{live:.1f} µs per event of the whole cluster; a node with no "
                             f"traffic {idle:.3f} cores")
    for c in conditions:
        checks = []
        for r in results[c]:
            accepted = sum(n["accepted"] for n in r["nodes"])
            rows = sum(n["rows"] for n in r["nodes"])
            distinct = sum(n["distinct"] for n in r["nodes"])
            wrk_ok = sum(n["ok"] + n["warm_ok"] for n in r["nodes"])
            dropped = sum(n["dropped"] for n in r["nodes"])
            bad = sum(n["non2xx"] + n["errors"] for n in r["nodes"])
            checks.append(f"round {r['round']}: {rows:,} rows ({distinct:,} distinct ids), "
                          f"{accepted:,} accepted by the servers, {dropped} dropped, wrk counted "
                          f"{wrk_ok:,} 2xx ({accepted - wrk_ok:+d}: answered after wrk stopped "
                          f"counting) and {bad} errors or non-2xx")
        where = "the local raw files" if c == 0 else "the bucket"
        section.notes.append(f"{_label(c)}, events in {where}: " + "; ".join(checks))
    section.notes.append(_prediction(results))


def _prediction(results: dict[int, list[dict[str, Any]]]) -> str:
    one, most = results[1], results[max(results)]
    node = _med([mean_node_us(r) for r in one])
    live_one = _med([live_us_per_cluster_event(r) for r in one])
    # With several nodes a node's live service consumes every node's events: its CPU per event of
    # the whole cluster, measured with the most nodes, is the term that grows with N.
    live_each = _med([live_us_per_cluster_event(r) for r in most])
    own = node - live_one
    engines = {name: _med([engine_us(r, parts) for r in one]) for name, parts in ENGINE_PARTS.items()}
    nats_by_n = [_med([engine_us(r, ("nats",)) for r in results[c]]) for c in sorted(results) if c]
    heaviest = max(engines, key=lambda k: engines[k])
    ratio = node / engines[heaviest] if engines[heaviest] else float("inf")
    per_core = 1e6 / node
    return (
        f"What it predicts for N machines: with 1 node, a node spends {node:.0f} µs of CPU per event "
        f"it accepts (wrk's CPU not included), so one core of an ingest node takes about "
        f"{per_core:,.0f} events/s and N machines of k cores about N × k × {per_core:,.0f}: no node "
        f"waits on another to accept an event. One term grows with N: every node's live service "
        f"consumes every node's events ({live_each:.1f} µs per event of the whole cluster with "
        f"{max(results)} nodes), so on N equally loaded machines a node spends about "
        f"{own:.0f} + N × {live_each:.1f} µs per event of its own. The shared engines cost "
        f"{sum(engines.values()):.1f} µs per event in all ({', '.join(f'{k} {v:.1f}' for k, v in engines.items())}); "
        f"NATS per event with {', '.join(str(c) for c in sorted(results) if c)} nodes: "
        f"{', '.join(f'{v:.1f}' for v in nats_by_n)} µs (it delivers each message to every node). "
        f"The heaviest, {heaviest}, needs one core per ~{ratio:,.0f} cores of ingest nodes, so it "
        f"is the first shared bottleneck; Ceph's cost is per upload (one per segment and hour, "
        f"segment_seconds apart), so its cost per event falls as each node's rate grows and rises "
        f"on quiet nodes. On this {os.cpu_count()}-core machine the nodes share the same cores: the "
        f"events/s of 2 and 3 nodes show the overhead of more processes, not scaling"
    )


def run(ctx: BenchContext) -> Section:
    section = Section("Several ingest nodes: 1, 2 and 3 cluster nodes against one shared store, "
                      "beside one single machine")
    missing = [t for t in ("wrk", "radosgw", "nats-server") if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        section.notes.append(f"skipped: {', '.join(missing)} not installed (scripts/test, "
                             "scripts/cluster-engines)")
        return section
    from warehouse.database import DUCKDB_1

    if not DUCKDB_1:  # the catalog's DuckDB extensions exist for the cluster extra's DuckDB only
        section.notes.append("skipped: the cluster extra is not installed (pip install -e '.[cluster]')")
        return section
    rounds = 1 if ctx.quick else ROUNDS
    window = 4 if ctx.quick else WINDOW_SECONDS
    warmup = 1 if ctx.quick else WARMUP_SECONDS
    work = ctx.fresh_dir("nodes")
    template = work / "template"
    template.mkdir()
    site = add_site(template)["id"]
    script = write_script(work / "single.lua", site, 0)
    section.title += (f": {rounds} round{'s' if rounds > 1 else ''} of {window:.0f} s windows")
    results: dict[int, list[dict[str, Any]]] = {c: [] for c in (0, *NODE_COUNTS)}
    with _engines(work) as engines:
        for n in range(1, rounds + 1):
            for c in (0, *NODE_COUNTS):
                started = time.monotonic()
                result = run_condition(c, n, work, template, script, engines, window, warmup)
                results[c].append(result)
                (work / "results.json").write_text(json.dumps(results, indent=1))
                print(f"  round {n}, {_label(c)}: {result['rps']:,.0f} events/s, "
                      f"{mean_node_us(result):.0f} µs/event per node "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    summarise(section, results, rounds)
    return section
