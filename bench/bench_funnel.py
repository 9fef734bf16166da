"""Funnels: a 4-step funnel over 30 days of the 10 M-event warehouse (``warehouse.query.funnels``).

Data: the API benchmark's warehouse (``bench_api.prepared_warehouse``: 10 M generated events over
30 days, or 1 M with ``--quick``), read-only with 2 DuckDB threads as the warehouse process runs
it. The funnel: ``/`` → ``/page/*`` → ``/pricing`` → custom event ``Signup`` on site ``site-b``
(Europe/Berlin), answered per visit, per visitor within 7 days, per visit with
``country==DE`` and per visit broken down by source (two statements: totals and the breakdown).

Each case runs in 3 rounds (the machine may be shared); reported: the median over rounds of p50,
p95 and CPU per answer (process CPU time, both DuckDB threads), with the rounds' range. Baseline,
in the same run: the fact path's visitor count over the same range (``stats`` forced onto the
facts: one scan of the range's events and a distinct count), the least work any answer from the
events does. Target: p95 < 500 ms for the per-visit funnel. Usage: ``python -m bench --only funnel``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.bench_api import RANGE, SITE, THREADS, TZ, _p, prepared_warehouse
from bench.harness import BenchContext, Section

STEPS = [{"page": "/"}, {"page": "/page/*"}, {"page": "/pricing"}, {"event": "Signup"}]
ROUNDS = 3


def _samples(fn: Callable[[], Any], n: int) -> tuple[list[float], list[float]]:
    """``n`` timed calls after a warm-up: wall ms and process CPU ms of each."""
    fn()
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def run(ctx: BenchContext) -> Section:
    import duckdb

    from warehouse.query.funnels import parse_funnel, run_funnel_sync
    from warehouse.query.model import parse_query
    from warehouse.query.runner import OnConnection, run_with

    size = 1_000_000 if ctx.quick else 10_000_000
    label = f"{size // 1_000_000} M"
    section = Section(f"Funnels: a 4-step funnel on {label} events / 30 days (ms)")
    root = prepared_warehouse(ctx, size, section)
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True, config={"threads": THREADS})
    con.execute("SET TimeZone = 'UTC'")

    local = OnConnection(con)
    base_q = parse_query(SITE, TZ[SITE], {"date_range": RANGE, "metrics": ["visitors"]})
    cases: dict[str, Callable[[], Any]] = {
        "baseline: visitors from the facts": lambda: run_with(
            base_q, local, "facts"),
    }
    per_visit = parse_funnel({"steps": STEPS})
    per_visitor = parse_funnel({"steps": STEPS, "per": "visitor", "days": 7})
    plain = parse_query(SITE, TZ[SITE], {"date_range": RANGE})
    filtered = parse_query(SITE, TZ[SITE], {"date_range": RANGE, "filters": [["is", "country", ["DE"]]]})
    by_source = parse_query(SITE, TZ[SITE], {"date_range": RANGE, "dimensions": ["source"]})
    cases["per visit"] = lambda: run_funnel_sync(plain, per_visit, local)
    cases["per visitor, 7 days"] = lambda: run_funnel_sync(plain, per_visitor, local)
    cases["per visit, country==DE"] = lambda: run_funnel_sync(filtered, per_visit, local)
    cases["per visit, by source"] = lambda: run_funnel_sync(by_source, per_visit, local)
    answer = run_funnel_sync(plain, per_visit, local)
    section.notes.append(f"per-visit answer: {answer.totals} visitors through the 4 steps; site {SITE}, "
                         f"{RANGE[0]}..{RANGE[1]}")

    n = 5 if ctx.quick else 8
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            wall, cpu = _samples(fn, n)
            results[name].append((_p(wall, 50), _p(wall, 95), statistics.median(cpu)))
    base_p95 = statistics.median(r[1] for r in results["baseline: visitors from the facts"])
    base_cpu = statistics.median(r[2] for r in results["baseline: visitors from the facts"])
    for name, rounds in results.items():
        p50s, p95s, cpus = ([r[i] for r in rounds] for i in range(3))
        spread = f"rounds {min(p95s):.0f}–{max(p95s):.0f}"
        print(f"  {name}: p50 {statistics.median(p50s):.0f} ms, p95 {statistics.median(p95s):.0f} ms ({spread}), "
              f"CPU {statistics.median(cpus):.0f} ms", flush=True)
        section.add(f"{name}: p50", statistics.median(p50s), "ms")
        target = name == "per visit"
        section.add(f"{name}: p95 (median of {ROUNDS} rounds; {spread})", statistics.median(p95s), "ms",
                    baseline=None if name.startswith("baseline") else base_p95,
                    **({"target": "< 500 ms", "met": statistics.median(p95s) < 500} if target else {}))
        section.add(f"{name}: CPU per answer (range {min(cpus):.0f}–{max(cpus):.0f})", statistics.median(cpus), "ms",
                    baseline=None if name.startswith("baseline") else base_cpu)
    section.notes.append(f"{THREADS} DuckDB threads, read-only connection, in-process engine (the API adds HTTP and "
                         "one Unix-socket round trip to the warehouse process); CPU is the process's, both threads.")
    con.close()
    return section
