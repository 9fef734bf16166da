"""Ingest throughput and latency against a trivial Falcon endpoint on the same gunicorn settings.

Load comes from ``wrk`` (installed by ``scripts/test``) on the same machine, so both the baseline
and LittleStats share the cores with the load generator in the same way. Measures single beacons
and batches of 50 events, each for ``DURATION`` seconds after a warm-up, plus worker memory.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.harness import WRK_DONE_LUA, BenchContext, Section, run_wrk
from tests.ingest.helpers import UA
from tests.server import LiveServer, add_site, free_port

WORKERS = 2
CONNECTIONS = 64

LUA = r"""
local uas = %(uas)s
local site = "%(site)s"
local batch = %(batch)d
local counter = 0
math.randomseed(os.time() + %(seed)d)
local function event(i)
  local v = math.random(1, 50000)
  return string.format('{"type":"pageview","url":"https://example.com/page/%%d?utm_source=s%%d","referrer":"https://www.google.com/","visitorId":"v%%d","screen":"1920x1080","language":"en-US"}', v %% 200, v %% 7, v)
end
request = function()
  counter = counter + 1
  local body
  if batch == 0 then
    body = event(counter)
  else
    local parts = {}
    for i = 1, batch do parts[i] = event(counter * batch + i) end
    body = '{"siteId":"' .. site .. '","events":[' .. table.concat(parts, ",") .. ']}'
  end
  local headers = {}
  headers["Content-Type"] = "text/plain"
  headers["User-Agent"] = uas[math.random(1, #uas)]
  return wrk.format("POST", "/api/v2/track/" .. site, headers, body)
end
""" + WRK_DONE_LUA


def wrk(url: str, script: Path, seconds: float) -> dict[str, float]:
    return run_wrk(url, script, seconds, CONNECTIONS)


def write_script(path: Path, site: str, batch: int) -> Path:
    uas = "{" + ",".join(json.dumps(u) for k, u in UA.items() if k not in ("googlebot", "headless")) + "}"
    path.write_text(LUA % {"uas": uas, "site": site, "batch": batch, "seed": os.getpid()})
    return path


def rss_mb(pids: list[int]) -> tuple[float, float]:
    """(largest current RSS, largest peak RSS) of the given processes, in MB."""
    current, peak = 0.0, 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        current = max(current, int(fields["VmRSS"].split()[0]) / 1024)
        peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)
    return current, peak


def session_pids(leader: int) -> list[int]:
    """Every process of a server's session (master, workers, helpers)."""
    out = subprocess.run(["pgrep", "-s", str(os.getpgid(leader))], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system) each still-running process has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def session_cpu_seconds(leader: int) -> float:
    return sum(cpu_seconds(session_pids(leader)).values())


def measured_wrk(url: str, script: Path, seconds: float, leader: int, workers: list[int]) -> dict[str, float]:
    """A wrk run plus the CPU each side used per request: the server's workers, its other
    processes (gunicorn master, warehouse process, live service), and wrk itself."""
    pids = session_pids(leader)
    before, children = cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk(url, script, seconds)
    after, children_after = cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    used = {pid: after[pid] - before[pid] for pid in after if pid in before}
    per_request = 1e6 / max(result["requests"], 1)
    result["cpu_workers_us"] = sum(t for pid, t in used.items() if pid in workers) * per_request
    result["cpu_other_us"] = sum(t for pid, t in used.items() if pid not in workers) * per_request
    wrk_seconds = (children_after.ru_utime + children_after.ru_stime) - (children.ru_utime + children.ru_stime)
    result["cpu_wrk_us"] = wrk_seconds * per_request
    return result


def cpu_note(name: str, run: dict[str, float]) -> str:
    total = run["cpu_workers_us"] + run["cpu_other_us"] + run["cpu_wrk_us"]
    return (f"CPU per request, {name}: workers {run['cpu_workers_us']:.0f} µs, other server processes "
            f"{run['cpu_other_us']:.0f} µs, wrk {run['cpu_wrk_us']:.0f} µs (total {total:.0f} µs)")


def wait_until_idle(leader: int, timeout: float = 30.0) -> None:
    """Wait until a just-started server has finished starting up.

    ``littlestats serve`` answers ``/healthz`` as soon as its workers do, while the warehouse
    process is still importing its libraries and running its start-up load (~2 s of CPU): measured
    right away, that start-up would be counted against the first run and not the baseline's.
    """
    deadline = time.monotonic() + timeout
    used = session_cpu_seconds(leader)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = session_cpu_seconds(leader)
        if now - used < 0.05:
            return
        used = now


def start_trivial(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.trivial", str(port), str(WORKERS)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("trivial server did not start")


def run(ctx: BenchContext) -> Section:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed; run scripts/test once (it installs it) or apt-get install wrk")
    seconds = 5 if ctx.quick else 15
    work = ctx.fresh_dir("ingest")
    data_dir = work / "data"
    data_dir.mkdir()
    site = add_site(data_dir)["id"]
    section = Section(f"Ingest: {WORKERS} gunicorn/uvicorn workers, wrk -c{CONNECTIONS}, {seconds} s per run")

    trivial_port = free_port()
    trivial = start_trivial(trivial_port)
    try:
        wait_until_idle(trivial.pid)
        single_script = write_script(work / "single.lua", site, 0)
        batch_script = write_script(work / "batch.lua", site, 50)
        wrk(f"http://127.0.0.1:{trivial_port}", single_script, 2)  # warm-up
        base_workers = [pid for pid in session_pids(trivial.pid) if pid != trivial.pid]
        base_single = measured_wrk(f"http://127.0.0.1:{trivial_port}", single_script, seconds,
                                   trivial.pid, base_workers)
        base_batch = measured_wrk(f"http://127.0.0.1:{trivial_port}", batch_script, seconds,
                                  trivial.pid, base_workers)
    finally:
        os.killpg(trivial.pid, signal.SIGTERM)
        trivial.wait()

    server = LiveServer(data_dir, free_port(), WORKERS, env={"LITTLESTATS_LOG_LEVEL": "warning"})
    server.start()
    try:
        assert server.proc is not None
        wait_until_idle(server.proc.pid)
        url = server.url
        wrk(url, single_script, 2)  # warm-up: caches, first segment
        workers = server.worker_pids()
        single = measured_wrk(url, single_script, seconds, server.proc.pid, workers)
        batch = measured_wrk(url, batch_script, seconds, server.proc.pid, workers)
        rss, peak = rss_mb(workers)
    finally:
        server.stop()

    section.add("single beacon: requests/s", single["rps"], "req/s", base_single["rps"],
                "≥ 0.50 × trivial", single["rps"] >= 0.5 * base_single["rps"])
    section.add("single beacon: p50 latency", single["p50_us"] / 1000, "ms", base_single["p50_us"] / 1000)
    section.add("single beacon: p99 latency", single["p99_us"] / 1000, "ms", base_single["p99_us"] / 1000)
    section.add("batch of 50: events/s", batch["rps"] * 50, "events/s", base_batch["rps"] * 50,
                "≥ 50,000 events/s", batch["rps"] * 50 >= 50_000)
    section.add("batch of 50: p50 latency", batch["p50_us"] / 1000, "ms", base_batch["p50_us"] / 1000)
    section.add("batch of 50: p99 latency", batch["p99_us"] / 1000, "ms", base_batch["p99_us"] / 1000)
    section.add("worker RSS (largest, after load)", rss, "MB", target="< 200 MB", met=peak < 200)
    section.add("worker peak RSS (largest)", peak, "MB", target="< 200 MB", met=peak < 200)
    errors = sum(r["errors"] + r["non2xx"] for r in (single, batch))
    section.notes.append(f"socket errors + non-2xx answers during LittleStats runs: {errors}")
    section.notes.append("baseline = Falcon ASGI endpoint answering 204 on the same gunicorn settings (bench/trivial.py)")
    for name, run in (("single beacon, trivial", base_single), ("single beacon, LittleStats", single),
                      ("batch of 50, trivial", base_batch), ("batch of 50, LittleStats", batch)):
        section.notes.append(cpu_note(name, run))
    return section
