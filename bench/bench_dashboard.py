"""Dashboard speed: from navigation to every panel rendered, in headless Chromium on loopback.

Data: the API benchmark's warehouse (``bench_api``: 10 M generated events over 30 days, 1 M with
``--quick``), served by ``littlestats serve --dev`` with 2 workers. One browser context loads the
dashboard of site ``site-b`` for the benchmark's range again and again — unfiltered, then with
``filter=country==DE`` — and times, inside the page, navigation start → the moment the KPIs, the
chart and all seven panels show the answer for the URL (``tests/dashboard/harness.READY``). The
first load of a context is cold (assets fetched); the rest find the hashed assets in the cache, as a
returning user does.

Reported: p50/p95 of the page (targets: p95 < 500 ms unfiltered, < 1 s filtered), the p95 of the
API requests the page made (browser resource timing), and the bytes transferred per load. Before the
browser runs, where the time goes: the page's warehouse questions (``QUESTIONS``: the KPIs for the
range and the previous one, the chart, the first tab of every panel) run in process on the same
file, each one alone (its CPU time: DuckDB's threads included) and all at once (wall time, as the
warehouse process meets them), with the path the planner took.
Usage: ``python -m bench --only dashboard [--quick]``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchContext, Section

SITE = "site-b"
RANGE = ("2026-03-01", "2026-03-30")

# Navigation start → every part ready, measured by the page's own clock; the API requests'
# durations and the bytes of this load from resource timing.
MEASURE = """
() => {
  const entries = performance.getEntriesByType('resource');
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    ms: window.__readyAt,
    api: entries.filter((e) => e.name.includes('/api/v2/sites/')).map((e) => e.duration),
    apiStart: Math.min(...entries.filter((e) => e.name.includes('/api/v2/sites/')).map((e) => e.startTime)),
    apiEnd: Math.max(...entries.filter((e) => e.name.includes('/api/v2/sites/')).map((e) => e.responseEnd)),
    bytes: entries.reduce((n, e) => n + (e.transferSize || 0), nav ? nav.transferSize : 0),
    requests: entries.length + 1,
    failed: [...document.querySelectorAll('[role=alert]')].map((e) => e.textContent),
  };
}
"""


_SESSION = ["visitors", "visits", "views", "bounce_rate", "visit_duration"]
_STATS = ["visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit"]
_PREVIOUS = ("2026-01-30", "2026-02-28")  # the 30 days before RANGE: the KPIs' comparison
#: What the dashboard asks the warehouse on a load (dashboard/web/src): name → (dimensions, metrics, range).
QUESTIONS: dict[str, tuple[list[str], list[str], tuple[str, str]]] = {
    "stats": ([], _STATS, RANGE),
    "stats, previous period": ([], _STATS, _PREVIOUS),
    "timeseries (visitors by day)": (["time:day"], ["visitors"], RANGE),
    "pages": (["page"], ["visitors", "views"], RANGE),
    "sources": (["source"], _SESSION, RANGE),
    "countries": (["country"], _SESSION, RANGE),
    "devices": (["device"], _SESSION, RANGE),
    "languages": (["language"], _SESSION, RANGE),
    "event names": (["event"], ["visitors", "events"], RANGE),
}


def _questions(root: Path, section: Section, rounds: int) -> None:
    """CPU time of each question alone, and the wall time of all of them at once, in process with
    the warehouse process's 2 DuckDB threads: what the page's API requests cost the warehouse."""
    import threading

    import duckdb

    from warehouse.query.model import parse_query
    from warehouse.query.planner import plan

    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True, config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")

    def run(sql: str, params: dict[str, Any]) -> None:
        cur = con.cursor()
        try:
            cur.execute(sql, params).fetchall()
        finally:
            cur.close()

    for name, filters in (("unfiltered", []), ("country==DE", [["is", "country", ["DE"]]])):
        plans = {}
        for question, (dims, metrics, dates) in QUESTIONS.items():
            body = {"date_range": list(dates), "dimensions": dims, "metrics": metrics, "limit": 10, "filters": filters}
            plans[question] = plan(parse_query(SITE, "Europe/Berlin", body))
        cpu: dict[str, list[float]] = {q: [] for q in plans}
        burst: list[float] = []
        for p in plans.values():  # warm-up
            run(p.sql.text, p.sql.params)
        for _ in range(rounds):
            for q, p in plans.items():
                t = time.process_time()
                run(p.sql.text, p.sql.params)
                cpu[q].append((time.process_time() - t) * 1000)
            threads = [threading.Thread(target=run, args=(p.sql.text, p.sql.params)) for p in plans.values()]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            burst.append((time.perf_counter() - t) * 1000)
        total = 0.0
        for q, p in plans.items():
            section.add(f"{name}: {q} ({p.path}), CPU median", statistics.median(cpu[q]), "ms")
            total += statistics.median(cpu[q])
        section.add(f"{name}: the page's questions, CPU sum", total, "ms")
        section.add(f"{name}: the page's questions at once, wall median", statistics.median(burst), "ms")
        print(f"  {name}: questions' CPU {total:.0f} ms, all at once {statistics.median(burst):.0f} ms wall", flush=True)
    con.close()


def _p(samples: list[float], q: int) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def run(ctx: BenchContext) -> Section:
    from playwright.sync_api import sync_playwright

    from bench import bench_api
    from tests.dashboard.harness import READY
    from tests.server import running_server
    from tests.tracker.harness import launch

    size = 1_000_000 if ctx.quick else 10_000_000
    label = f"{size // 1_000_000} M"
    section = Section(f"Dashboard: navigation → every panel rendered, {label} events / 30 days (ms)")
    root = bench_api.prepared_warehouse(ctx, size, section)
    _questions(root, section, 3 if ctx.quick else 7)
    bench_api.register_sites(root)
    loads = 10 if ctx.quick else 30
    ready = f"() => {{ const ok = ({READY})(); if (ok && !window.__readyAt) window.__readyAt = performance.now(); return ok; }}"

    with running_server(root, 2, "--dev", env={"LITTLESTATS_LOAD_INTERVAL_SECONDS": "3600"}) as srv:
        import httpx

        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/api/v2/health/{SITE}").json().get("warehouse") != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError("warehouse process did not start")
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = launch(p)
            for name, extra, target in (("unfiltered", "", 500.0), ("country==DE", "&filter=country%3D%3DDE", 1000.0)):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                url = f"{srv.url}/sites/{SITE}?start={RANGE[0]}&end={RANGE[1]}{extra}"
                runs: list[dict[str, Any]] = []
                for _ in range(loads + 1):
                    page.goto(url)
                    page.wait_for_function(ready, polling="raf", timeout=60_000)
                    measured = page.evaluate(MEASURE)
                    if measured["failed"]:  # an error shown counts as rendered: not a valid sample
                        raise RuntimeError(f"the dashboard showed errors: {measured['failed'][:3]}")
                    runs.append(measured)
                context.close()
                cold, warm = runs[0], runs[1:]
                times = [r["ms"] for r in warm]
                api = [d for r in warm for d in r["api"]]
                print(f"  {name}: cold {cold['ms']:.0f} ms, p50 {_p(times, 50):.0f} ms, p95 {_p(times, 95):.0f} ms; "
                      f"API p95 {_p(api, 95):.0f} ms", flush=True)
                section.add(f"{name}: first load (cold cache)", cold["ms"], "ms")
                section.add(f"{name}: p50", _p(times, 50), "ms")
                section.add(f"{name}: p95", _p(times, 95), "ms", baseline=_p(api, 95),
                            target=f"< {target:.0f} ms", met=_p(times, 95) < target)
                section.add(f"{name}: API requests p95 (as the page saw them)", _p(api, 95), "ms")
                section.add(f"{name}: navigation → first API request (median)",
                            statistics.median(r["apiStart"] for r in warm), "ms")
                section.add(f"{name}: last API answer → rendered (median)",
                            statistics.median(r["ms"] - r["apiEnd"] for r in warm), "ms")
                section.add(f"{name}: bytes transferred, first load", cold["bytes"], "B")
                section.add(f"{name}: bytes transferred, later loads (median)",
                            statistics.median(r["bytes"] for r in warm), "B")
                section.add(f"{name}: requests per load", cold["requests"], "")
            browser.close()
    section.notes.append(
        f"{loads} timed loads per row after one cold load, one browser context each; ratio = page p95 / "
        "the p95 of its API requests (the page waits for ~12 of them, 2 workers answer them). Assets "
        "are hashed and cached for a year, so later loads transfer the shell and the API answers only."
    )
    return section

