"""The shared catalog (DuckLake: PostgreSQL + S3) against a local warehouse file, same data.

Needs a running cluster's engines (``littlestats cluster engines``) and its ``cluster.toml``:

    python -m bench.catalog_compare --config cluster.toml --work DIR [--events 1000000]

Steps, each printed as it finishes:

1. **bulk** — ``--events`` generated events over 30 days (``tests.generator``, as the API benchmark
   makes them) loaded by ``warehouse.load.load_pending`` into a new local file and into the lake;
2. **steady** — three later hours of ~10 k events each (the next minutes' traffic), each loaded
   on its own into both, as the scheduled load does;
3. **queries** — in a fresh process per store ("a reader node"), the dashboard's unfiltered panels
   (pre-aggregates) and the same panels filtered by ``country==DE``, run through
   ``warehouse.query`` with 2 DuckDB threads: p50 / p95 per panel;
   The lake is maintained (``cluster.catalog.maintain``) after the loads, as the loader does;
4. **inlining** — 20 small loads (~1.5 k events) into fresh lakes with data inlining off and on:
   seconds per load, files in the lake and p95 of the stats panel before and after maintenance.

Both stores get the same files; the lake is a new catalog (``--catalog-db``, created in the
PostgreSQL server of ``catalog_dsn``) and a new prefix in the bucket.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.bench_api import PANELS, RANGE, SITE, TZ
from bench.bench_warehouse import EVENTS_PER_VISITOR

THREADS = 2


def _settings(config: Path, catalog_db: str | None = None, prefix: str | None = None) -> Any:
    from littlestats.config import load_settings

    settings = load_settings({}, environ={"LITTLESTATS_CONFIG": str(config)})
    if catalog_db:
        dsn = settings.catalog_dsn.rsplit("/", 1)[0] + "/" + catalog_db
        settings = dataclasses.replace(settings, catalog_dsn=dsn)
    if prefix is not None:
        settings = dataclasses.replace(settings, s3_prefix=prefix)
    return settings


def _new_catalog(settings: Any, name: str) -> None:
    import psycopg

    admin = settings.catalog_dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}"')
        pg.execute(f'CREATE DATABASE "{name}"')


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


def _write_steady(raw: Path, hour: int, seed: int) -> int:
    from tests.generator import TrafficSpec, generate

    start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=30, hours=hour)
    spec = TrafficSpec(visitors=1_300, days=1 / 24, loads=1, seed=100 + seed, start=start,
                       late_fraction=0.0, duplicate_fraction=0.0, timezones=TZ)
    traffic = generate(spec)
    traffic.write_raw(raw, label=f"steady{seed}")
    return traffic.event_count


def _connect(kind: str, work: Path, config: Path, read_only: bool = False) -> Any:
    if kind == "local":
        from warehouse.database import connect

        return connect(work / "local.duckdb", read_only=read_only, threads=THREADS)
    from cluster.catalog import connect_shared

    return connect_shared(_settings(config, "bench_lake", "bench"), read_only=read_only,
                          threads=THREADS)


def loads(work: Path, config: Path, events: int) -> None:
    from tests.generator import TrafficSpec, generate
    from warehouse.load import load_pending

    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    (work / "local.duckdb").unlink(missing_ok=True)
    spec = TrafficSpec(visitors=int(events / EVENTS_PER_VISITOR), days=30, loads=2, seed=7,
                       late_fraction=0.0, duplicate_fraction=0.0, timezones=TZ)
    traffic = generate(spec)
    traffic.write_raw(raw)
    print(f"generated {traffic.event_count:,} events", flush=True)
    del traffic
    settings = _settings(config, "bench_lake", "bench")
    _new_catalog(settings, "bench_lake")
    from cluster.catalog import init

    init(settings)
    for kind in ("local", "lake"):
        con = _connect(kind, work, config)
        t = time.monotonic()
        result = load_pending(con, raw, TZ)
        print(f"bulk {kind}: {time.monotonic() - t:.1f} s ({result.summary()})", flush=True)
        con.close()
    for k in range(3):
        n = _write_steady(raw, k, k)
        for kind in ("local", "lake"):
            t = time.monotonic()
            con = _connect(kind, work, config)
            opened = time.monotonic() - t
            result = load_pending(con, raw, TZ)
            print(f"steady {k} {kind}: {n:,} events, connect {opened:.2f} s, load"
                  f" {time.monotonic() - t - opened:.2f} s ({result.summary()})", flush=True)
            con.close()
    print(f"lake after the loads: {_lake_files(settings)}", flush=True)
    con = _connect("lake", work, config)
    print(f"maintenance: {catalog_maintain(con)}", flush=True)
    con.close()
    print(f"lake after maintenance: {_lake_files(settings)}", flush=True)


def catalog_maintain(con: Any) -> Any:
    from cluster.catalog import maintain

    return maintain(con, keep=timedelta(0))


def _panel_queries() -> list[tuple[str, Any]]:
    from warehouse.query.model import parse_query

    asked = []
    for panel, (dims, metrics, _column) in PANELS.items():
        body = {"date_range": RANGE, "dimensions": dims, "metrics": metrics}
        asked.append((panel, parse_query(SITE, TZ[SITE], body)))
        asked.append((f"{panel} country==DE",
                      parse_query(SITE, TZ[SITE], {**body, "filters": [["is", "country", ["DE"]]]})))
    return asked


def queries(kind: str, work: Path, config: Path, budget: float = 2.0) -> dict[str, Any]:
    """Every panel, planned and filtered, in this (fresh) process; p50/p95 ms and the answers."""
    from warehouse.query.runner import OnConnection, run_with

    t = time.monotonic()
    con = _connect(kind, work, config, read_only=True)
    opened = time.monotonic() - t
    execute = OnConnection(con)
    out: dict[str, Any] = {"connect_s": opened, "panels": {}}
    for name, q in _panel_queries():
        first = time.perf_counter()
        answer = run_with(q, execute)
        cold = (time.perf_counter() - first) * 1000
        samples: list[float] = []
        deadline = time.monotonic() + budget
        while len(samples) < 40 and (len(samples) < 5 or time.monotonic() < deadline):
            t0 = time.perf_counter()
            run_with(q, execute)
            samples.append((time.perf_counter() - t0) * 1000)
        out["panels"][name] = {"path": answer.path, "cold": cold, "p50": _p(samples, 50),
                               "p95": _p(samples, 95), "rows": len(answer.rows),
                               "answer": json.dumps(answer.rows, default=str, sort_keys=True)}
    con.close()
    return out


def inlining(work: Path, config: Path) -> None:
    import cluster.catalog as catalog
    from warehouse.load import load_pending
    from warehouse.query.model import parse_query
    from warehouse.query.runner import OnConnection, run_with

    q = parse_query(SITE, TZ[SITE], {"date_range": ["2026-03-31", "2026-04-01"],
                                     "metrics": ["visitors", "visits", "views", "bounce_rate"]})
    for limit in (0, catalog.DATA_INLINING_ROW_LIMIT):
        catalog.DATA_INLINING_ROW_LIMIT = limit
        name = f"bench_inline_{limit}"
        settings = _settings(config, name, name)
        _new_catalog(settings, name)
        catalog.init(settings)
        raw = work / f"raw-{name}"
        shutil.rmtree(raw, ignore_errors=True)
        times = []
        for k in range(20):
            from tests.generator import TrafficSpec, generate

            start = datetime(2026, 3, 31, tzinfo=UTC) + timedelta(minutes=3 * k)
            generate(TrafficSpec(visitors=200, days=1 / 480, loads=1, seed=k, start=start,
                                 late_fraction=0.0, duplicate_fraction=0.0, timezones=TZ)
                     ).write_raw(raw, label=f"m{k}")
            con = catalog.connect_shared(settings, threads=THREADS)
            t = time.monotonic()
            load_pending(con, raw, TZ)
            times.append(time.monotonic() - t)
            con.close()
        print(f"inlining limit {limit}: load p50 {statistics.median(times):.2f} s,"
              f" max {max(times):.2f} s", flush=True)
        for when in ("before maintenance", "after maintenance"):
            if when.startswith("after"):
                con = catalog.connect_shared(settings, threads=THREADS)
                print(f"  {catalog.maintain(con, keep=timedelta(0))}", flush=True)
                con.close()
            con = catalog.connect_shared(settings, read_only=True, threads=THREADS)
            samples = []
            for _ in range(20):
                t0 = time.perf_counter()
                run_with(q, OnConnection(con))
                samples.append((time.perf_counter() - t0) * 1000)
            con.close()
            print(f"  {when}: {_lake_files(settings)}, stats p95 {_p(samples, 95):.1f} ms", flush=True)


def _lake_files(settings: Any) -> str:
    import psycopg

    with psycopg.connect(settings.catalog_dsn) as pg:
        data = pg.execute("SELECT count(*) FROM ducklake_data_file WHERE end_snapshot IS NULL").fetchall()
        deletes = pg.execute("SELECT count(*) FROM ducklake_delete_file WHERE end_snapshot IS NULL").fetchall()
    return f"{data[0][0]} data files, {deletes[0][0]} delete files"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--step", choices=["all", "loads", "queries", "inlining", "reader"],
                        default="all")
    parser.add_argument("--kind", default="lake")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of samples per panel")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "reader":
        print(json.dumps(queries(args.kind, args.work, args.config, args.budget)))
        return
    if args.step in ("all", "loads"):
        loads(args.work, args.config, args.events)
    if args.step in ("all", "queries"):
        found = {}
        for kind in ("local", "lake"):
            out = subprocess.run([sys.executable, "-m", "bench.catalog_compare", "--config",
                                  str(args.config), "--work", str(args.work), "--step", "reader",
                                  "--kind", kind, "--budget", str(args.budget)],
                                 capture_output=True, text=True, check=True,
                                 env=os.environ)
            found[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"reader connect: local {found['local']['connect_s']:.2f} s,"
              f" lake {found['lake']['connect_s']:.2f} s")
        for name, local in found["local"]["panels"].items():
            lake = found["lake"]["panels"][name]
            same = "same" if lake["answer"] == local["answer"] else "DIFFERENT"
            print(f"{name:32} {local['path']:13} local p50 {local['p50']:6.1f} p95 {local['p95']:6.1f}"
                  f" | lake p50 {lake['p50']:6.1f} p95 {lake['p95']:6.1f} cold {lake['cold']:6.0f}"
                  f" ms | answers {same}")
    if args.step in ("all", "inlining"):
        inlining(args.work, args.config)


if __name__ == "__main__":
    main()
