"""Warehouse load throughput and memory: sessionize + load vs a plain DuckDB Parquet import.

For 1 M (and, without ``--quick``, 10 M) generated events over 30 days, each measured in a fresh
process with 2 DuckDB and 2 polars threads:

* **baseline** — ``INSERT INTO raw SELECT * FROM read_parquet('raw/**/*.parquet')``;
* **load** — ``warehouse.load.load_pending``: dedup, sessionize, facts, every pre-aggregate.

Both read the same raw files: the generated parts merged into one file per site and hour, the
layout the warehouse process leaves behind once an hour has closed (``warehouse.compact``; the
compaction's own time is reported in the notes).

Reported: events/s and peak RSS of each, and their ratio. Then the steady state: in one process,
like the running warehouse, the 1 M warehouse loads one minute's ~10,000 events (not measured),
then the next minute's ~10,000 (visits continuing, late events) in one measured scheduled load.

Targets on 2 cores: 10 M events in under 2 minutes with peak RSS under 4 GB; 10 k steady-state
load under 2 s. Usage: ``python -m bench --only warehouse [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchContext, Section
from warehouse.database import CHECKPOINT_THRESHOLD

THREADS = 2
EVENTS_PER_VISITOR = 7.9  # what TrafficSpec's defaults produce on average
STEADY_EVENTS = 10_000
TZ = {"site-a": "UTC", "site-b": "Europe/Berlin"}


BATCH_EVENTS = 1_000_000


def _prepare(root: Path, events: int, seed: int = 1) -> tuple[int, int]:
    """Raw Parquet for ``events`` events over 30 days, and the next two minutes' ~10 k events each.

    Traffic is generated in batches of about 1 M events (distinct visitors, each batch over the
    whole 30 days, written as its own part files), so generating 10 M stays within a few GB. From
    the last batch, the ~20 k events following its bulk in time (visits continuing) plus 2 % late
    events from its last 24 hours are held back: the first minute's half (``warm/``) is loaded
    before the measured one (``steady/``), as the running warehouse process has loaded the minute
    before (its DuckDB caches are warm; a fresh process first reads the table metadata).
    """
    import gc

    import polars as pl

    from tests.generator import Traffic, TrafficSpec, generate

    batches = max(1, round(events / BATCH_EVENTS))
    per_batch = events // batches
    bulk_total = steady_total = 0
    for b in range(batches):
        last = b == batches - 1
        want = per_batch + (events - per_batch * batches if last else 0)
        extra = 2 * STEADY_EVENTS if last else 0
        spec = TrafficSpec(visitors=int(1.1 * (want + extra) / EVENTS_PER_VISITOR), days=30,
                           loads=1, seed=seed + b, late_fraction=0.0, duplicate_fraction=0.0)
        traffic = generate(spec)
        ordered = traffic.events.sort("ts", "event_id").with_row_index("_i")
        in_warm = in_steady = pl.lit(False)
        if last:
            late_n = STEADY_EVENTS // 50
            cut_ts = ordered["ts"][want - 1]
            late = (ordered.head(want)
                    .filter(pl.col("ts") > cut_ts - pl.duration(hours=24))
                    .sample(2 * late_n, seed=seed)["_i"])
            minute = STEADY_EVENTS - late_n  # in-order events per minute
            in_warm = (pl.col("_i").is_in(late.head(late_n).implode())
                       | ((pl.col("_i") >= want) & (pl.col("_i") < want + minute)))
            in_steady = (pl.col("_i").is_in(late.tail(late_n).implode())
                         | ((pl.col("_i") >= want + minute) & (pl.col("_i") < want + 2 * minute)))
        empty = traffic.duplicates.clear()
        bulk = Traffic(spec, ordered.filter((pl.col("_i") < want) & ~in_steady & ~in_warm).drop("_i"),
                       empty, traffic.visits)
        bulk.write_raw(root / "raw")
        bulk_total += bulk.event_count
        if last:
            steady = Traffic(spec, ordered.filter(in_steady).drop("_i"), empty, traffic.visits)
            # its own file names: moved into raw/ later, they must not replace loaded files
            steady.write_raw(root / "steady", label="steady")
            Traffic(spec, ordered.filter(in_warm).drop("_i"), empty, traffic.visits).write_raw(
                root / "warm", label="warm")
            steady_total = steady.event_count
        del traffic, ordered, bulk
        gc.collect()
    return bulk_total, steady_total


def worker(mode: str, root: str) -> None:
    """Run one measured step in this (fresh) process and print its timing as JSON."""
    from warehouse.database import connect

    base = Path(root)
    started = time.monotonic()
    if mode == "baseline":
        import duckdb

        con = duckdb.connect(str(base / "baseline.duckdb"), config={"threads": THREADS})
        con.execute("CREATE TABLE raw AS SELECT * FROM read_parquet($p) LIMIT 0",
                    {"p": str(base / "raw" / "**" / "*.parquet")})
        con.execute("INSERT INTO raw SELECT * FROM read_parquet($p)",
                    {"p": str(base / "raw" / "**" / "*.parquet")})
        rows = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
        con.close()
    else:
        from datetime import date, timedelta

        from warehouse.load import load_pending

        con = connect(base / "warehouse.duckdb", threads=THREADS, memory_limit="2GB")
        start = None
        if mode == "steady":
            # like the scheduled load: only the recent days' partitions are scanned
            days = {p.name for p in base.glob("steady/*/date=*")} | {p.name for p in base.glob("warm/*/date=*")}
            start = min(date.fromisoformat(d.split("=", 1)[1]) for d in days) - timedelta(days=1)
            # each minute's new files arrive in the raw directory, then one load runs; the
            # previous minute's load (not measured) is what the running process did before
            for minute in ("warm", "steady"):
                for path in sorted((base / minute).rglob("*.parquet")):
                    target = base / "raw" / path.relative_to(base / minute)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    path.rename(target)
                started = time.monotonic()
                result = load_pending(con, base / "raw", TZ, start=start)
        if mode != "steady":
            result = load_pending(con, base / "raw", TZ, start=start)
        rows = result.new_events
        if mode == "steady":
            # the running process does not close after each minute: the load's time is until
            # its data is visible; the checkpoint DuckDB runs whenever its log grows past the
            # threshold (every few minutes) is measured on its own
            seconds = time.monotonic() - started
            started = time.monotonic()
            con.execute("CHECKPOINT")
            checkpoint = time.monotonic() - started
            con.close()
            print(json.dumps({"seconds": seconds, "rows": rows, "checkpoint_seconds": checkpoint,
                              "peak_rss_mb": _vm_hwm_mb()}))
            return
        con.close()
    print(json.dumps({"seconds": time.monotonic() - started, "rows": rows, "peak_rss_mb": _vm_hwm_mb()}))


def _compact(root: Path) -> str:
    """Merge the generated part files into one file per site and hour, as the warehouse process
    does once an hour has closed (``warehouse.compact``): the raw layout a backlog of closed hours
    has. Nothing is loaded yet, so the merged files stay pending."""
    from warehouse.compact import compact_raw
    from warehouse.database import connect

    scratch = root / "compact.duckdb"
    con = connect(scratch)  # an empty manifest: every file is pending
    before = sum(1 for _ in (root / "raw").rglob("*.parquet"))
    started, cpu = time.monotonic(), time.process_time()
    result = compact_raw(con, root / "raw")
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    con.close()
    for path in root.glob("compact.duckdb*"):
        path.unlink()
    after = sum(1 for _ in (root / "raw").rglob("*.parquet"))
    if not result.hours:
        return f"raw files already one per site and hour ({after:,} files)"
    return (f"raw parts compacted per site and hour before the runs (not measured as load): "
            f"{before:,} files → {after:,} in {seconds:.1f} s ({cpu:.1f} s CPU, "
            f"{result.rows / max(seconds, 1e-9):,.0f} rows/s)")


def _vm_hwm_mb() -> float:
    """This process's peak RSS since exec (wait4's ru_maxrss would include the forked parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(mode: str, root: Path) -> dict[str, Any]:
    env = {**os.environ, "POLARS_MAX_THREADS": str(THREADS)}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from bench.bench_warehouse import worker; worker({mode!r}, {str(root)!r})"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{err.decode()[-3000:]}")
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    # CPU seconds of the whole process (all threads): robust to other load on a shared machine
    data["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return data


def run(ctx: BenchContext) -> Section:
    """Measure the sizes for this run and return the report section."""
    section = Section("Warehouse: sessionize + load vs plain Parquet import")
    sizes = [1_000_000] if ctx.quick else [1_000_000, 10_000_000]
    for size in sizes:
        label = f"{size // 1_000_000} M"
        root = ctx.workdir / f"warehouse-{label.replace(' ', '')}"
        marker = root / "prepared.json"
        prepared = json.loads(marker.read_text()) if marker.exists() else {}
        if prepared.get("size") == size:  # raw files of an earlier run, untouched: reuse them
            bulk_events, steady_events = prepared["bulk"], prepared["steady"]
            for db in root.glob("*.duckdb*"):
                db.unlink()
            section.notes.append(f"{label}: reused {bulk_events:,} generated events (+{steady_events:,})")
        else:
            root = ctx.fresh_dir(root.name)
            t0 = time.monotonic()
            bulk_events, steady_events = _prepare(root, size)
            marker.write_text(json.dumps({"size": size, "bulk": bulk_events, "steady": steady_events}))
            section.notes.append(f"{label}: generated and wrote {bulk_events:,} events "
                                 f"(+{steady_events:,} held back) in {time.monotonic() - t0:.0f} s")
        if not prepared.get("compacted"):
            section.notes.append(f"{label}: {_compact(root)}")
            marker.write_text(json.dumps({"size": size, "bulk": bulk_events, "steady": steady_events,
                                          "compacted": True}))
        base = _measure("baseline", root)
        ours = _measure("load", root)
        assert ours["rows"] == bulk_events == base["rows"], (ours, base, bulk_events)
        big = size >= 10_000_000
        section.add(f"{label} load throughput", ours["rows"] / ours["seconds"], "events/s",
                    baseline=base["rows"] / base["seconds"],
                    target="10 M in < 120 s" if big else "",
                    met=ours["seconds"] < 120 if big else None)
        section.add(f"{label} load time", ours["seconds"], "s", baseline=base["seconds"])
        section.add(f"{label} load CPU time (process, all threads)", ours["cpu_seconds"], "s",
                    baseline=base["cpu_seconds"])
        section.add(f"{label} peak RSS", ours["peak_rss_mb"], "MB", baseline=base["peak_rss_mb"],
                    target="< 4096 MB" if big else "", met=ours["peak_rss_mb"] < 4096 if big else None)
        if size == sizes[0]:
            marker.unlink()  # the steady step moves files into raw/: not reusable afterwards
            steady = _measure("steady", root)
            section.add(f"steady-state load of {steady['rows']:,} new events (after {label})",
                        steady["seconds"], "s", target="< 2 s", met=steady["seconds"] < 2)
            section.add("checkpoint after it (DuckDB runs one when its log passes "
                        f"{CHECKPOINT_THRESHOLD}: every few minutes, not every load)",
                        steady["checkpoint_seconds"], "s")
            section.add("steady-state CPU time (process, incl. start-up and the unmeasured minute before)",
                        steady["cpu_seconds"], "s")
    section.notes.append(f"{THREADS} DuckDB threads, POLARS_MAX_THREADS={THREADS}, DuckDB memory_limit 2GB; "
                         "each step in a fresh process, peak RSS = its VmHWM, CPU time from wait4(); "
                         f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return section
