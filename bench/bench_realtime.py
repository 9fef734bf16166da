"""Real time under ingest load: event → client latency, concurrent SSE clients, ingest cost.

One server (two workers, ``SITES`` sites), measured in alternating windows, so that every
condition is measured on the same processes and the ratios carry no server-to-server spread:

A. no real time: ``wrk`` posts single beacons spread over the sites, no real-time client is
   connected and the live service is paused (``SIGSTOP``): no real-time work at all, as on a
   server whose real time was never used (the service follows nothing until a first request);
S. no subscribers: the live service runs and has caught up (unmeasured), its buffer fed with
   every event, as on any server whose dashboards have asked for current stats once (``/stats``
   starts it, and it then follows the WAL for good), but no stream is open;
B. with subscribers: as S, and a separate client process connects ``CLIENTS`` SSE streams spread
   over the sites (dashboards, each watching one site) while the same ``wrk`` load runs; a probe
   posts a beacon to its own site every ``PROBE_MS`` and times how long after the server
   acknowledged it the event arrives on an SSE stream (whichever worker serves it). The clients
   disconnect after the window.

After an unmeasured warm-up (ingest, then a first real-time request, which starts the live
service's buffer), the windows run ``ROUNDS`` times, each round in another of the six orders of
the three. The issue's target, "ingest throughput within 10 % of its figure without
subscribers", is judged on the median of the rounds' B / S; B / A, what real time costs ingest
in all (the buffer's counting of every event, whether or not anyone subscribes, plus the
subscribers' streams), is reported beside it. Throughputs are the means of the windows.

Everything shares the machine's cores: server, ``wrk`` and the client process. The client
process's CPU time is reported, since on 2 cores it is taken from the server. "Worker CPU"
counts the gunicorn workers and the live service (``api.live_service``), which does the real-time
work once per machine. Each window also reports the CPU that neither the server nor ``wrk`` nor
the client process used (other jobs on a shared machine, interrupts): a round where it differs
much between the windows compares unequal conditions; and how the two workers shared their CPU
and the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx

from bench.bench_ingest import wait_until_idle
from bench.harness import (
    WRK_DONE_LUA,
    BenchContext,
    Section,
    cpu_seconds,
    in_turn,
    machine_busy,
    mean_of,
    run_wrk,
    wait_while_busy,
)
from tests.server import LiveServer, add_site, free_port, session_pids

WORKERS = 2
CONNECTIONS = 64
SITES = 20
PROBE_MS = 200
CLIENTS = 2000  # SSE viewers in the loaded windows (the quick run: 200)
# Rounds of (no real time, no subscribers, with subscribers) windows on one server, each of the six
# orders of the three twice: the report gives the median and the range of the rounds' ratios. The
# machine's own speed drifts by 20-80 % over minutes (docs/benchmarks.md), so the windows are short
# (``WINDOW_S``) and close together, and the rounds many.
ROUNDS = 12
WINDOW_S = 10

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
]

LUA = r"""
local sites = %(sites)s
local uas = %(uas)s
math.randomseed(os.time() + %(seed)d)
request = function()
  local v = math.random(1, 50000)
  local site = sites[math.random(1, #sites)]
  local body = string.format('{"type":"pageview","url":"https://example.com/page/%%d","referrer":"https://www.google.com/","visitorId":"v%%d","screen":"1920x1080","language":"en-US"}', v %% 200, v)
  local headers = {}
  headers["Content-Type"] = "text/plain"
  headers["User-Agent"] = uas[math.random(1, #uas)]
  return wrk.format("POST", "/api/v2/track/" .. site, headers, body)
end
""" + WRK_DONE_LUA


def serving_pids(server: LiveServer) -> list[int]:
    """The gunicorn workers and the live service (what serves ingest and real time; not the
    master, not the warehouse process)."""
    return list(server.worker_pids()) + live_service_pids(server)


def live_service_pids(server: LiveServer) -> list[int]:
    assert server.proc is not None
    pids = []
    for pid in session_pids(server.proc.pid):
        try:
            if b"api.live_service" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except FileNotFoundError:
            continue
    return pids


def worker_cpu(server: LiveServer) -> float:
    """CPU seconds (user + system) used so far by the server's workers and its live service."""
    return process_cpu(serving_pids(server))


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    return sum(cpu_seconds(pids).values())


def measured_wrk(server: LiveServer, script: Path, seconds: float, client_pid: int | None = None) -> dict[str, float]:
    """``wrk`` figures plus the workers' CPU milliseconds per accepted event (a figure that the
    other processes on a shared machine disturb much less than throughput), and the share of the
    machine that neither the server, ``wrk`` nor the client process used."""
    assert server.proc is not None
    ours = session_pids(server.proc.pid) + ([client_pid] if client_pid else [])
    live = live_service_pids(server)
    before, ours_before, busy_before = worker_cpu(server), process_cpu(ours), machine_busy()
    live_before = process_cpu(live)
    workers = server.worker_pids()
    workers_before = [process_cpu([pid]) for pid in workers]
    # Half-way through, each worker's open connections (the 64 of wrk and the SSE clients are
    # shared out by the kernel's accept wake-ups): an uneven split loads one worker more.
    sockets: list[int] = []
    counter = threading.Timer(seconds / 2, lambda: sockets.extend(socket_count(pid) for pid in workers))
    counter.start()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = wrk(server.url, script, seconds)
    elapsed = time.monotonic() - started
    counter.join()
    used = [process_cpu([pid]) - b for pid, b in zip(workers, workers_before, strict=True)]
    busier = used.index(max(used))
    result["worker_cpu_share"] = used[busier] / max(sum(used), 1e-9)
    result["sockets_busier"] = sockets[busier] if len(sockets) == len(used) else 0
    result["sockets_other"] = sum(sockets) - result["sockets_busier"]
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    result["cpu_ms_per_event"] = (worker_cpu(server) - before) * 1000 / max(1, result["requests"])
    result["live_ms_per_event"] = (process_cpu(live) - live_before) * 1000 / max(1, result["requests"])
    others = machine_busy() - busy_before - (process_cpu(ours) - ours_before) - wrk_cpu
    result["others_cores"] = max(0.0, others) / elapsed
    return result


def socket_count(pid: int) -> int:
    """Open sockets of a process (its connections, plus its listening and live-service sockets)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return 0
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def wrk(url: str, script: Path, seconds: float) -> dict[str, float]:
    return run_wrk(url, script, seconds, CONNECTIONS)


# --- the client process ------------------------------------------------------------------------


class _SSEProtocol(asyncio.Protocol):
    """One SSE client: reads everything the server sends, counts ``event`` messages.

    A protocol, not a ``StreamReader`` task, so that the client process (which shares the cores
    with the server, like ``wrk``) spends its time reading, not switching tasks."""

    def __init__(self, request: bytes, stats: dict[str, Any], on_data: Any) -> None:
        self.request = request
        self.stats = stats
        self.on_data = on_data
        self.first = True
        self.events = 0
        self.updates = 0  # stats_update messages
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.first and b"stats_update" in data:
            self.first = False
            self.stats["connected"] += 1
        self.events += data.count(b"\nevent: event\n")
        self.updates += data.count(b"\nevent: stats_update\n")
        if self.on_data is not None:
            self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.stats["closed"] += 1
            self.done.set_result(None)


async def _sse(port: int, site: str, stats: dict[str, Any], on_data: Any = None) -> None:
    request = f"GET /api/v2/realtime/{site} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    protocol = _SSEProtocol(request, stats, on_data)
    try:
        await loop.create_connection(lambda: protocol, "127.0.0.1", port)
        await protocol.done
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        stats["events"].append(protocol.events)
        stats["updates"].append(protocol.updates)
        if protocol.transport is not None and not protocol.done.done():
            protocol.done.set_result(None)  # cancelled: not a close by the server
            protocol.transport.close()


async def _post(port: int, site: str, path: str) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"url": f"https://probe.example{path}", "visitorId": "probe"}).encode()
    writer.write(f"POST /api/v2/track/{site} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {UAS[0]}\r\n"
                 f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await reader.readline()
    acked = time.monotonic()
    await reader.read()
    writer.close()
    return acked


async def _clients(port: int, sites: list[str], probe_site: str, clients: int, ready: Any,
                   go: Any, stop: Any, out: Any) -> None:
    stats: dict[str, Any] = {"connected": 0, "closed": 0, "events": [], "updates": []}
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(_sse(port, sites[i % len(sites)], stats)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    seen: dict[str, float] = {}
    pattern = re.compile(rb'"page":"(/probe/\d+)"')

    def on_probe(data: bytes) -> None:
        now = time.monotonic()
        for m in pattern.finditer(data):
            seen.setdefault(m.group(1).decode(), now)

    probe_stats: dict[str, Any] = {"connected": 0, "closed": 0, "events": [], "updates": []}
    tasks.append(asyncio.create_task(_sse(port, probe_site, probe_stats, on_probe)))
    deadline = time.monotonic() + 60
    while stats["connected"] < clients and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ready.set()
    while not go.is_set():
        await asyncio.sleep(0.05)
    acked: dict[str, float] = {}
    n = 0
    cpu_start = time.process_time()
    while not stop.is_set():
        path = f"/probe/{n}"
        n += 1
        try:
            acked[path] = await _post(port, probe_site, path)
        except OSError:
            pass
        await asyncio.sleep(PROBE_MS / 1000)
    await asyncio.sleep(2)  # let the last probes arrive
    cpu = time.process_time() - cpu_start
    held = stats["connected"] - stats["closed"]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(seen[p] - acked[p] for p in acked if p in seen)
    out.put({
        "clients": clients, "connected": stats["connected"], "held": held,
        "with_events": sum(1 for e in stats["events"] if e > 0),
        "events": sum(stats["events"]), "updates": sum(stats["updates"]),
        "with_updates": sum(1 for u in stats["updates"] if u > 1),
        "probes": len(acked), "probes_seen": len(latencies),
        "latencies": latencies, "cpu": cpu,
    })


def _client_process(port: int, sites: list[str], probe_site: str, clients: int, ready: Any, go: Any,
                    stop: Any, out: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, clients + 256)), hard))
    import uvloop  # the server's event loop too (uvicorn); the stdlib loop would cost ~2x the CPU

    uvloop.run(_clients(port, sites, probe_site, clients, ready, go, stop, out))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def _server(data_dir: Path) -> Iterator[LiveServer]:
    # The warehouse's scheduled load (every minute by default: ~400,000 events here, and more
    # each time, as each load rebuilds the day's pre-aggregates) would fall into one window or
    # another at random; it is not what the windows compare. Sealing the WAL goes on as usual.
    env = {"LITTLESTATS_LOG_LEVEL": "warning", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "3600"}
    server = LiveServer(data_dir, free_port(), WORKERS, ("--dev",), env=env)
    server.start()
    assert server.proc is not None
    wait_until_idle(server.proc.pid)  # the warehouse process's start-up is no window's cost
    try:
        yield server
    finally:
        _signal(live_service_pids(server), signal.SIGCONT)  # a paused service would not stop
        server.stop()


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _settle(pids: list[int], timeout: float = 60.0) -> None:
    """Wait until these processes stop using CPU (the live service has caught up)."""
    wait_while_busy(lambda: process_cpu(pids), 0.02, timeout)


def run(ctx: BenchContext) -> Section:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed; run scripts/test once (it installs it) or apt-get install wrk")
    seconds = 5 if ctx.quick else WINDOW_S
    clients = 200 if ctx.quick else CLIENTS
    work = ctx.fresh_dir("realtime")
    data_dir = work / "data"
    data_dir.mkdir()
    sites = [add_site(data_dir, f"site{i}.example")["id"] for i in range(SITES)]
    probe_site = add_site(data_dir, "probe.example")["id"]
    script = work / "beacons.lua"
    script.write_text(LUA % {
        "sites": "{" + ",".join(json.dumps(s) for s in sites) + "}",
        "uas": "{" + ",".join(json.dumps(u) for u in UAS) + "}",
        "seed": os.getpid(),
    })
    rounds = 1 if ctx.quick else ROUNDS
    section = Section(
        f"Real time: {WORKERS} workers, wrk -c{CONNECTIONS} single beacons over {SITES} sites, "
        f"{clients} SSE clients, {seconds} s per window, {rounds} rounds of (A no real time, S no subscribers, B with clients) "
        "on one server"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, clients * 2 + 512)), hard))

    mp = multiprocessing.get_context("fork")
    alone_runs: list[dict[str, float]] = []  # A
    serving_runs: list[dict[str, float]] = []  # S
    loaded_runs: list[dict[str, float]] = []  # B
    results: list[dict[str, Any]] = []

    with _server(data_dir) as server:
        # Warm-up, unmeasured: ingest (the UA parser, the first segments), then a first real-time
        # request, which starts the live service's buffer (its back-fill, its imports).
        wrk(server.url, script, 5)
        httpx.get(f"{server.url}/api/v2/stats/{sites[0]}", timeout=60).raise_for_status()
        live = live_service_pids(server)
        if not live:
            raise RuntimeError("the server runs no live service")
        _settle(live)
        wait_until_idle(server.proc.pid)  # type: ignore[union-attr]

        def alone_window() -> None:
            # No client, and the live service paused: no real-time work at all. It keeps its
            # buffer and its open WAL files, and reads what it missed once resumed.
            _signal(live, signal.SIGSTOP)
            try:
                alone_runs.append(measured_wrk(server, script, seconds))
            finally:
                _signal(live, signal.SIGCONT)

        def serving_window() -> None:
            _settle(live)  # caught up on an earlier window's events: not this window's work
            serving_runs.append(measured_wrk(server, script, seconds))

        def loaded_window() -> None:
            _settle(live)
            ready, go, stop, out = mp.Event(), mp.Event(), mp.Event(), mp.Queue()
            proc = mp.Process(target=_client_process,
                              args=(server.port, sites, probe_site, clients, ready, go, stop, out))
            proc.start()
            ready.wait(90)
            time.sleep(1)
            go.set()
            time.sleep(0.5)
            loaded_runs.append(measured_wrk(server, script, seconds, proc.pid))
            stop.set()
            results.append(out.get(timeout=120))
            proc.join(30)
            _settle(live)  # the clients' departures

        windows = {"A": alone_window, "S": serving_window, "B": loaded_window}
        orders = ["".join(in_turn(n, *windows)) for n in range(rounds)]
        for order in orders:
            for label in order:
                windows[label]()
    alone, serving, loaded = mean_of(alone_runs), mean_of(serving_runs), mean_of(loaded_runs)
    per_round = list(zip(alone_runs, serving_runs, loaded_runs, strict=True))  # (A, S, B)
    ratios = [b["rps"] / s["rps"] for _, s, b in per_round]  # with / without subscribers
    whole = [b["rps"] / a["rps"] for a, _, b in per_round]  # with subscribers / no real time
    ratio = statistics.median(ratios)
    result = {
        "latencies": sorted(x for r in results for x in r["latencies"]),
        "held": min(r["held"] for r in results),
        "with_events": min(r["with_events"] for r in results),
        "with_updates": min(r["with_updates"] for r in results),
        "events": sum(r["events"] for r in results),
        "updates": sum(r["updates"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "probes": sum(r["probes"] for r in results),
        "probes_seen": sum(r["probes_seen"] for r in results),
    }
    section.notes.append(
        "ingest events/s per round (its order), A no real time / S no subscribers / B with "
        "clients (B/S, B/A; cores busy outside the server, wrk and the clients, e.g. other jobs "
        "or interrupts, A / S / B): "
        + ", ".join(f"{o}: {a['rps']:,.0f} / {s['rps']:,.0f} / {b['rps']:,.0f} "
                    f"({b['rps'] / s['rps']:.2f}, {b['rps'] / a['rps']:.2f}; "
                    f"{a['others_cores']:.2f} / {s['others_cores']:.2f} / {b['others_cores']:.2f})"
                    for o, (a, s, b) in zip(orders, per_round, strict=True))
    )
    section.notes.append(
        "server CPU per event per round, A / S / B (of which the live service): "
        + ", ".join(" / ".join(f"{w['cpu_ms_per_event'] * 1000:.0f} ({w['live_ms_per_event'] * 1000:.0f})"
                               for w in round_) + " µs"
                    for round_ in per_round)
    )
    section.notes.append(
        "the busier worker's share of the two workers' CPU per round, A / S / B (open sockets "
        "half-way through the window, the busier worker's / the other's): "
        + ", ".join(" / ".join(f"{w['worker_cpu_share'] * 100:.0f} % "
                               f"({w['sockets_busier']:.0f}/{w['sockets_other']:.0f})" for w in round_)
                    for round_ in per_round)
    )
    section.notes.append(
        "accepted event → SSE client per round, p50 / p95: "
        + ", ".join(f"{_percentile(r['latencies'], 0.5):.2f} / {_percentile(r['latencies'], 0.95):.2f} s"
                    for r in results)
    )
    section.notes.append(
        f"with clients / no subscribers over the {len(ratios)} rounds: median {ratio:.2f}, range "
        f"{min(ratios):.2f}–{max(ratios):.2f}, of the means {loaded['rps'] / serving['rps']:.2f}; "
        f"with clients / no real time: median {statistics.median(whole):.2f}, range "
        f"{min(whole):.2f}–{max(whole):.2f}, of the means {loaded['rps'] / alone['rps']:.2f}"
    )

    lat = result["latencies"]
    p50, p95 = _percentile(lat, 0.50), _percentile(lat, 0.95)
    section.add("A. ingest, no real time (live service paused)", alone["rps"], "events/s")
    section.add("S. ingest, live buffer fed, no subscribers", serving["rps"], "events/s", alone["rps"])
    section.add(f"B. ingest with {clients} SSE clients", loaded["rps"], "events/s", serving["rps"])
    section.add(f"B / S, with / without subscribers: median of {len(ratios)} rounds", ratio * 100, "%",
                target="≥ 90 %", met=ratio >= 0.9)
    section.add("B / S: lowest round", min(ratios) * 100, "%")
    section.add("B / S: highest round", max(ratios) * 100, "%")
    section.add(f"B / A, with subscribers / no real time: median of {len(whole)} rounds",
                statistics.median(whole) * 100, "%")
    section.add("B / A: lowest round", min(whole) * 100, "%")
    section.add("B / A: highest round", max(whole) * 100, "%")
    for label, runs in (("A", alone), ("S", serving), ("B", loaded)):
        section.add(f"server CPU per accepted event, {label}", runs["cpu_ms_per_event"] * 1000, "µs")
        section.add(f"… of which the live service, {label}", runs["live_ms_per_event"] * 1000, "µs")
    section.add("ingest p99 latency with clients (mean of rounds; baseline: S)", loaded["p99_us"] / 1000,
                "ms", serving["p99_us"] / 1000)
    section.add("accepted event → SSE client, p50", p50 * 1000, "ms")
    section.add("accepted event → SSE client, p95", p95 * 1000, "ms", target="≤ 1,000 ms", met=p95 <= 1.0)
    section.add("SSE clients held through the load", result["held"], "clients",
                target=f"all {clients} (aim {CLIENTS:,})", met=result["held"] >= clients)
    section.add("clients that received events (fewest in a round)", result["with_events"], "clients")
    section.add("clients that received stats updates after the first (fewest in a round)",
                result["with_updates"], "clients")
    section.add("event messages delivered to clients (all rounds)", result["events"], "messages")
    section.add("stats_update messages delivered to clients (all rounds)", result["updates"], "messages")
    section.add("client process CPU during the loaded phases", result["cpu"], "s")
    section.notes += [
        f"probes: {result['probes_seen']} of {result['probes']} seen on the stream "
        f"(one every {PROBE_MS} ms, latency from the server's acknowledgement to arrival)",
        f"wrk errors A/S/B: {alone['errors']}/{serving['errors']}/{loaded['errors']}, non-2xx "
        f"{alone['non2xx']}/{serving['non2xx']}/{loaded['non2xx']}",
        "server, wrk and the client process share the same cores",
    ]
    return section
