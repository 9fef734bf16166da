"""Scale: 100 M events over 30 days on one machine, plus 11 months of history for 12-month views.

Data (generated once, kept in ``bench/results/work/scale-<size>`` between runs): five sites in five
time zones, the largest (``big``, Europe/Berlin) with 62 % of the traffic; 100 M events in the 30
days from 2026-03-01 and a tenth of that over the 11 months before (so a 12-month view reads a year
of real pre-aggregates). Traffic is generated in batches of distinct visitors, each batch over the
whole period, then written as the warehouse process leaves closed hours: one merged file per site
and hour (``part-hourly.parquet``). ``--quick`` is the same shape at a tenth of the size (10 M),
so the two runs give the 10 M → 100 M growth of every figure.

Measured steps, each in a fresh process with 2 DuckDB and 2 polars threads and the default
``warehouse_memory_limit`` (2 GB), as the warehouse process runs:

1. **history** — load the 11 months' backlog (not a target; it sets the stage);
2. **load** — the 30 days' backlog through ``warehouse.load.load_pending`` (target: 100 M in
   ≤ 20 min, peak RSS < 4 GB), with the time of every chunk, so a load that slows down as the
   tables grow shows; beside it, the same run's plain ``INSERT … SELECT * FROM read_parquet`` of
   the 30 days (the baseline);
3. **group** — the closed days' rows grouped by site (what a backfill or the daily run does);
4. **steady** — with everything loaded, one minute's ~10,000 events (visits continuing, 2 % late)
   after an unmeasured minute (target < 2 s), then the checkpoint;
5. **panels** — every dashboard panel on ``big``, 30 days and 12 months, unfiltered and with
   ``country==DE``, p50/p95 through ``warehouse.query`` on a read-only connection (targets:
   < 100 ms unfiltered, < 1 s filtered, < 200 ms for 12-month views), beside a raw Parquet scan of
   the same question.

Load figures are kept (``load.json``) so that the panels can be measured again on a quiet machine
without reloading: delete ``warehouse.duckdb`` to measure the load again.
Usage: ``python -m bench --only scale [--quick]``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import BenchContext, Section

THREADS = 2
TZ = {"big": "Europe/Berlin", "mid": "America/New_York", "s1": "UTC", "s2": "Asia/Tokyo",
      "s3": "Australia/Sydney"}
SHARE = {"big": 0.62, "mid": 0.20, "s1": 0.06, "s2": 0.06, "s3": 0.06}
SITE = "big"
START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 30
HISTORY_START = datetime(2025, 4, 1, tzinfo=UTC)
HISTORY_SHARE = 0.10
BATCH_EVENTS = 1_500_000
#: Events per generated visitor that fall in the period (TrafficSpec's defaults make 7.9 a visitor, but
#: later visits run past the period's end and are cut: about 78 % are kept, in 30 days as in 11 months).
EVENTS_PER_VISITOR = 6.18
STEADY_EVENTS = 10_000
RANGE_30 = ["2026-03-01", "2026-03-30"]
RANGE_12M = ["2025-04-01", "2026-03-30"]


# ---------------------------------------------------------------------------------------------
# Data


def _batches(total: int, start: datetime, days: int, seed0: int, steady: bool) -> list[dict[str, Any]]:
    """Generation jobs: per site, batches of about ``BATCH_EVENTS`` events over the whole period."""
    jobs = []
    seed = seed0
    for site, share in SHARE.items():
        events = int(total * share)
        n = max(1, round(events / BATCH_EVENTS))
        for b in range(n):
            jobs.append({"site": site, "events": events // n, "start": start.isoformat(),
                         "days": days, "seed": seed, "last": steady and site == SITE and b == n - 1})
            seed += 1
    return jobs


def _generate(job: dict[str, Any], stage: str) -> dict[str, int]:
    """One batch, written to ``stage`` as one file per UTC day (merged per hour later)."""
    import polars as pl
    import pyarrow.parquet as pq

    from tests.generator import TrafficSpec, generate, to_raw_table

    site = job["site"]
    extra = 2 * STEADY_EVENTS if job["last"] else 0
    spec = TrafficSpec(visitors=int((job["events"] + extra) / EVENTS_PER_VISITOR), days=job["days"],
                       start=datetime.fromisoformat(job["start"]), sites=(site,),
                       timezones={site: TZ[site]}, loads=1, seed=job["seed"], late_fraction=0.0,
                       duplicate_fraction=0.0)
    # The generator lets a visitor's later visits run past the period (its tail reaches years on):
    # only the period's events are kept, so the history and the 30 days never share an hour.
    end = spec.start + timedelta(days=job["days"])
    events = generate(spec).events.filter(pl.col("ts") < end).sort("ts", "event_id")
    held = {"steady": 0, "warm": 0}
    if job["last"]:
        # The steady minutes: the events following the batch's bulk in time (visits continuing),
        # plus 2 % late events from its last 24 hours; a warm-up minute first, then the measured one.
        events = events.with_row_index("_i")
        late_n = STEADY_EVENTS // 50
        minute = STEADY_EVENTS - late_n
        bulk_n = events.height - 2 * minute
        cut = events["ts"][bulk_n - 1]
        late = (events.head(bulk_n).filter(pl.col("ts") > cut - pl.duration(hours=24))
                .sample(2 * late_n, seed=job["seed"])["_i"])
        for name, (lo, late_part) in {"warm": (bulk_n, late.head(late_n)),
                                      "steady": (bulk_n + minute, late.tail(late_n))}.items():
            part = events.filter(pl.col("_i").is_in(late_part.implode())
                                 | ((pl.col("_i") >= lo) & (pl.col("_i") < lo + minute)))
            held[name] = part.height
            _write_hours(part.drop("_i"), Path(stage).parent / name, f"part-{name}.parquet")
        taken = pl.concat([late, pl.Series("_i", range(bulk_n, events.height), dtype=late.dtype)])
        events = events.filter(~pl.col("_i").is_in(taken.implode())).drop("_i")
    day = pl.col("ts").dt.date()
    for (d,), part in events.with_columns(day.alias("_day")).partition_by("_day", as_dict=True).items():
        path = Path(stage) / f"site_id={site}" / f"date={d}" / f"b{job['seed']}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_raw_table(part), path, compression="lz4")
    return {"events": events.height, **held}


def _write_hours(events: Any, raw: Path, name: str) -> int:
    """Events as one file per site and hour (the merged layout), sorted by (ts, event_id)."""
    import polars as pl

    from ingest.seal import write_parquet_atomic
    from tests.generator import to_raw_table

    keyed = events.with_columns(pl.col("ts").dt.truncate("1h").alias("_hour"))
    files = 0
    for (site, hour), part in keyed.partition_by(["site_id", "_hour"], as_dict=True).items():
        path = raw / f"site_id={site}" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / name
        write_parquet_atomic(to_raw_table(part.drop("_hour").sort("ts", "event_id")), path)
        files += 1
    return files


def _merge_day(day_dir: str, raw: str) -> int:
    """A site-day's batch files merged into one ``part-hourly.parquet`` per hour, each sorted by
    (ts, event_id), as ``warehouse.compact`` leaves a closed hour."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ingest.seal import write_parquet_atomic
    from warehouse.load import HOURLY_NAME

    table = pa.concat_tables([pq.read_table(f) for f in sorted(Path(day_dir).glob("*.parquet"))])
    table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("event_id", "ascending")]))
    hours = pc.floor_temporal(table["ts"], unit="hour")
    site = Path(day_dir).parent.name
    files = 0
    for hour in pc.unique(hours).to_pylist():
        part = table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
        path = Path(raw) / site / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}" / HOURLY_NAME
        write_parquet_atomic(part, path)
        files += 1
    shutil.rmtree(day_dir)
    return files


def _pool_map(fn: Any, items: list[Any], *args: Any) -> list[Any]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(fn, item, *args) for item in items]
        out = []
        for k, f in enumerate(futures, 1):
            out.append(f.result())
            if k % max(1, len(futures) // 10) == 0:
                print(f"    {fn.__name__}: {k}/{len(futures)}", flush=True)
        return out


def _prepare(root: Path, total: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part, (events, start, days, seed) in {
        "history": (int(total * HISTORY_SHARE), HISTORY_START, (START - HISTORY_START).days, 10_000),
        "recent": (total, START, DAYS, 1),
    }.items():
        stage = root / f"stage-{part}"
        shutil.rmtree(stage, ignore_errors=True)
        done = _pool_map(_generate, _batches(events, start, days, seed, part == "recent"), str(stage))
        counts[part] = sum(d["events"] for d in done)
        counts["steady"] = counts.get("steady", 0) + sum(d["steady"] for d in done)
        counts["warm"] = counts.get("warm", 0) + sum(d["warm"] for d in done)
        day_dirs = sorted(str(p) for p in stage.glob("site_id=*/date=*"))
        counts[f"{part}_files"] = sum(_pool_map(_merge_day, day_dirs, str(root / f"raw-{part}")))
        shutil.rmtree(stage)
    return counts


# ---------------------------------------------------------------------------------------------
# Measured steps (each in a fresh process)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(mode: str, root_text: str) -> None:
    """One measured step in this process; prints its figures as JSON on the last line."""
    from warehouse.database import connect

    root = Path(root_text)
    out: dict[str, Any] = {}
    started = time.monotonic()
    if mode == "baseline":
        import duckdb

        from warehouse.load import discover_files

        con = duckdb.connect(str(root / "baseline.duckdb"), config={"threads": THREADS,
                                                                   "memory_limit": "2GB"})
        # the 30 days' backlog: the files the load step took (partitions from START on)
        paths = [str(f.path) for f in discover_files(root / "raw", start=START.date())]
        con.execute("CREATE TABLE raw AS SELECT * FROM read_parquet($p) LIMIT 0", {"p": paths[:1]})
        con.execute("INSERT INTO raw SELECT * FROM read_parquet($p, union_by_name = true)", {"p": paths})
        out["rows"] = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
        con.close()
    elif mode in ("history", "load"):
        from warehouse.load import discover_files, load_pending

        raw = root / "raw"
        source = root / ("raw-history" if mode == "history" else "raw-recent")
        _move_into(source, raw)
        con = connect(root / "warehouse.duckdb", threads=THREADS, memory_limit="2GB")
        timeline: list[tuple[float, int, float]] = []

        def progress(done: int, total: int) -> None:
            timeline.append((round(time.monotonic() - started, 1), done, round(_vm_rss_mb())))
            if len(timeline) % 10 == 0:
                print(f"    {mode}: {done:,}/{total:,} rows in {timeline[-1][0]:.0f} s, "
                      f"RSS {timeline[-1][2]:,.0f} MB", file=sys.stderr, flush=True)

        files = [f for f in discover_files(raw)]
        result = load_pending(con, raw, TZ, progress=progress, files=files)
        out.update(rows=result.new_events, chunks=result.chunks, timeline=timeline)
        out["load_seconds"] = time.monotonic() - started
        t = time.monotonic()
        con.execute("CHECKPOINT")
        out["checkpoint_seconds"] = time.monotonic() - t
        con.close()
    elif mode == "group":
        from warehouse.layout import loaded_closed_days, resort_days
        from warehouse.load import discover_files

        con = connect(root / "warehouse.duckdb", threads=THREADS, memory_limit="2GB")
        days = loaded_closed_days({f.partition_hour.date() for f in discover_files(root / "raw")})
        out["rows"] = sum(resort_days(con, days).values())
        con.close()
    elif mode == "steady":
        from warehouse.load import load_pending

        con = connect(root / "warehouse.duckdb", threads=THREADS, memory_limit="2GB")
        held = {p.name for p in root.glob("steady/*/date=*")} | {p.name for p in root.glob("warm/*/date=*")}
        since = min(date.fromisoformat(d.split("=", 1)[1]) for d in held) - timedelta(days=1)
        for minute in ("warm", "steady"):
            _move_into(root / minute, root / "raw")
            started = time.monotonic()
            result = load_pending(con, root / "raw", TZ, start=since)
        out["rows"] = result.new_events
        out["seconds"] = time.monotonic() - started
        t = time.monotonic()
        con.execute("CHECKPOINT")
        out["checkpoint_seconds"] = time.monotonic() - t
        con.close()
    out["seconds"] = out.get("seconds", time.monotonic() - started)
    out["peak_rss_mb"] = _vm_hwm_mb()
    print(json.dumps(out))


def _unload_raw(root: Path) -> None:
    """Put the files an earlier run loaded back where the steps take them from (the history, the
    30 days, the two steady minutes), so that the loads can be measured again."""
    raw = root / "raw"
    if not raw.exists():
        return
    for path in sorted(raw.rglob("*.parquet")):
        rel = path.relative_to(raw)
        day = date.fromisoformat(rel.parts[1].split("=", 1)[1])
        if path.name in ("part-steady.parquet", "part-warm.parquet"):
            into = root / path.stem.removeprefix("part-")
        else:
            into = root / ("raw-history" if day < START.date() else "raw-recent")
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    shutil.rmtree(raw)


def _move_into(source: Path, raw: Path) -> None:
    if not source.exists():
        return
    for path in sorted(source.rglob("*.parquet")):
        target = raw / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    shutil.rmtree(source)


def _measure(mode: str, root: Path) -> dict[str, Any]:
    env = {**os.environ, "POLARS_MAX_THREADS": str(THREADS)}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from bench.bench_scale import worker; worker({mode!r}, {str(root)!r})"],
        stdout=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"scale step {mode} failed (its stderr is above)")
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    data["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return data


# ---------------------------------------------------------------------------------------------
# Panels


def _panels(root: Path, section: Section, quick: bool) -> None:
    import duckdb

    from bench.bench_api import PANELS, _p, _timed, raw_scan
    from warehouse.query.model import parse_query
    from warehouse.query.runner import OnConnection, run_with

    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True, config={"threads": THREADS})
    con.execute("SET TimeZone = 'UTC'")
    raw = duckdb.connect(config={"threads": THREADS})
    raw.execute("SET TimeZone = 'UTC'")
    execute = OnConnection(con)
    glob = str(root / "raw" / f"site_id={SITE}" / "**" / "*.parquet")
    tz = TZ[SITE]
    budget = 2.0

    def baseline(column: str | None, filtered: bool, rng: list[str]) -> Any:
        return raw_scan(raw, glob, SITE, tz, rng, column, filtered)

    worst: dict[str, float] = {}
    for rng_name, rng in (("30 days", RANGE_30), ("12 months", RANGE_12M)):
        for panel, (dims, metrics, column) in PANELS.items():
            if rng_name == "12 months" and dims == ["time:day"]:
                dims = ["time:month"]
            body = {"date_range": rng, "dimensions": dims, "metrics": metrics}
            q = parse_query(SITE, tz, body)
            qf = parse_query(SITE, tz, {**body, "filters": [["is", "country", ["DE"]]]})
            two = panel == "stats"

            def ask(query: Any, two: bool = two) -> Any:
                a = run_with(query, execute)
                if two:  # stats also asks for the previous period (change)
                    run_with(query.with_range(query.date_range.previous()), execute)
                return a

            path, fpath = run_with(q, execute).path, run_with(qf, execute).path
            plain = _timed(lambda: ask(q), budget)  # noqa: B023 -- called right here
            filtered = _timed(lambda: ask(qf), budget, max_n=20)  # noqa: B023
            n = 2 if quick and rng_name == "30 days" else 1  # a raw scan takes seconds (at 100 M, 6–23 s)
            base = _timed(baseline(column, False, rng), 0, min_n=n, max_n=n)
            base_f = _timed(baseline(column, True, rng), 0, min_n=n, max_n=n)
            k = 2 if two else 1
            unfiltered_target = 200 if rng_name == "12 months" else 100
            print(f"  {rng_name} {panel}: {path} p95 {_p(plain, 95):.1f} ms, filtered ({fpath}) "
                  f"{_p(filtered, 95):.1f} ms, raw scan {_p(base, 95):.0f} / {_p(base_f, 95):.0f} ms",
                  flush=True)
            section.add(f"{rng_name} {panel}: {path} p50", _p(plain, 50), "ms")
            section.add(f"{rng_name} {panel}: {path} p95", _p(plain, 95), "ms", baseline=k * _p(base, 95),
                        target=f"< {unfiltered_target} ms", met=_p(plain, 95) < unfiltered_target)
            section.add(f"{rng_name} {panel}: country==DE ({fpath}) p95", _p(filtered, 95), "ms",
                        baseline=k * _p(base_f, 95), target="< 1000 ms", met=_p(filtered, 95) < 1000)
            for key, value in ((f"{rng_name} unfiltered", _p(plain, 95)),
                               (f"{rng_name} filtered", _p(filtered, 95))):
                worst[key] = max(worst.get(key, 0.0), value)
    for key, value in worst.items():
        section.notes.append(f"slowest panel p95, {key}: {value:,.0f} ms")
    con.close()
    raw.close()


# ---------------------------------------------------------------------------------------------


def run(ctx: BenchContext) -> Section:
    total = 10_000_000 if ctx.quick else 100_000_000
    label = f"{total // 1_000_000} M"
    section = Section(f"Scale: {label} events over 30 days (+ 11 months of history), one machine")
    root = ctx.workdir / f"scale-{label.replace(' ', '')}"
    marker = root / "prepared.json"
    prepared = json.loads(marker.read_text()) if marker.exists() else {}
    if prepared.get("total") != total:
        root = ctx.fresh_dir(root.name)
        t0 = time.monotonic()
        counts = _prepare(root, total)
        prepared = {"total": total, **counts, "seconds": round(time.monotonic() - t0)}
        marker.write_text(json.dumps(prepared))
        print(f"  generated {prepared}", flush=True)
    section.notes.append(
        f"data: {prepared['recent']:,} events in 30 days ({prepared['recent_files']:,} hourly files) "
        f"+ {prepared['history']:,} over the 11 months before ({prepared['history_files']:,} files), "
        f"5 sites ({', '.join(f'{s} {v:.0%}' for s, v in SHARE.items())}); generated in "
        f"{prepared['seconds']} s")

    # Each step's figures are kept as it ends, so an interrupted run goes on where it stopped
    # (delete load.json and warehouse.duckdb to measure the loads again).
    loaded_marker = root / "load.json"
    figures: dict[str, Any] = json.loads(loaded_marker.read_text()) if loaded_marker.exists() else {}
    if not figures:
        for path in root.glob("*.duckdb*"):
            path.unlink()
        _unload_raw(root)
        figures["measured"] = datetime.now(UTC).isoformat(timespec="minutes")
    for step in ("history", "load", "group", "steady", "baseline"):
        if figures.get(step, {}).get("seconds"):
            continue
        print(f"  {step} …", flush=True)
        figures[step] = _measure(step, root)
        if step == "baseline":
            (root / "baseline.duckdb").unlink()
        print(f"  {step}: {json.dumps({k: v for k, v in figures[step].items() if k != 'timeline'})}",
              flush=True)
        loaded_marker.write_text(json.dumps(figures))
    section.notes.append(f"loads measured from {figures['measured']} on")

    load, base = figures["load"], figures["baseline"]
    minutes = load["load_seconds"] / 60
    section.add(f"history load ({figures['history']['rows']:,} events, 11 months)",
                figures["history"]["load_seconds"], "s")
    section.add(f"{label} load time", load["load_seconds"], "s", baseline=base["seconds"],
                target="≤ 20 min" if not ctx.quick else "", met=minutes <= 20 if not ctx.quick else None)
    section.add(f"{label} load CPU (process, all threads)", load["cpu_seconds"], "s",
                baseline=base["cpu_seconds"])
    section.add(f"{label} load peak RSS", load["peak_rss_mb"], "MB", baseline=base["peak_rss_mb"],
                target="< 4096 MB", met=load["peak_rss_mb"] < 4096)
    section.add("checkpoint at the end of the load", load["checkpoint_seconds"], "s")
    timeline = load["timeline"]
    if len(timeline) > 4:
        # seconds per million rows, first and last tenth of the load: does it slow down as it grows?
        tenth = max(1, len(timeline) // 10)

        def rate(a: list[Any], b: list[Any]) -> float:
            return (b[0] - a[0]) / max(1, (b[1] - a[1])) * 1e6

        section.add("load: s per M rows, first tenth", rate(timeline[0], timeline[tenth]), "s")
        section.add("load: s per M rows, last tenth", rate(timeline[-1 - tenth], timeline[-1]), "s")
        section.add("load: highest RSS after a chunk", max(t[2] for t in timeline), "MB")
    section.add("closed days grouped by site (rows rewritten)", figures["group"]["seconds"], "s")
    steady = figures["steady"]
    section.add(f"steady-state load of {steady['rows']:,} events with everything loaded",
                steady["seconds"], "s", target="< 2 s", met=steady["seconds"] < 2)
    section.add("checkpoint after it", steady["checkpoint_seconds"], "s")
    db = root / "warehouse.duckdb"
    section.add("warehouse file", db.stat().st_size / 2**30, "GB")
    raw_files = sum(1 for _ in (root / "raw").rglob("*.parquet"))
    section.add("raw files", raw_files, "files")
    raw_bytes = sum(p.stat().st_size for p in (root / "raw").rglob("*.parquet"))
    section.add("raw Parquet", raw_bytes / 2**30, "GB")
    _panels(root, section, ctx.quick)
    section.notes.append(
        f"{THREADS} DuckDB threads, POLARS_MAX_THREADS={THREADS}, DuckDB memory_limit 2GB; each load "
        "step in a fresh process (peak RSS = VmHWM, CPU from wait4); panels on a read-only "
        "connection in process, p95 of repeated runs after a warm-up; raw scans read the site's "
        f"hourly files. Load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return section
