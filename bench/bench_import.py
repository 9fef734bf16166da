"""Import benchmark: a GoatCounter CSV export of 1,000,000 pageviews (100,000 with ``--quick``).

Measures, on a fresh data directory with no server running:

* import: the file read, turned into raw events (``interop.sources.goatcounter``) and written as
  raw Parquet, in events/s;
* load: those raw files loaded into the facts and pre-aggregates by the loader live traffic goes
  through (``warehouse.service.Warehouse.load``), in events/s: the baseline, since an import ends
  with that load;
* both together: what ``littlestats import`` takes from file to dashboard.

Run it under the shared lock: ``flock bench/results/.lock python -m bench --only import``.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import BenchContext, Section

PAGES = [f"/blog/post-{i}" for i in range(200)] + ["/", "/pricing", "/docs", '/search?q="a,b"']
REFERRERS = [("", ""), ("https://www.google.com/", "h"), ("Hacker News", "g"),
             ("https://example.org/links?x=1", "h"), ("newsletter", "c")]
SYSTEMS = [("Firefox 120", "Linux"), ("Chrome 119", "Windows 10"), ("Safari 17.1", "iOS 17.1"),
           ("Chrome 119", "Android 14")]


def write_export(path: Path, rows: int, seed: int = 1) -> None:
    """A GoatCounter version 2 export: ``rows`` pageviews of ``rows // 20`` sessions over 30 days."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    sessions = max(1, rows // 20)
    with path.open("w", newline="") as f:
        f.write("2,Path,Title,Event,User-Agent,Browser,System,Session,Bot,Referrer,Referrer scheme,"
                "Screen size,Location,FirstVisit,Date\n")
        step = timedelta(days=30) / rows
        for i in range(rows):
            page = rng.choice(PAGES)
            referrer, scheme = rng.choice(REFERRERS)
            browser, system = rng.choice(SYSTEMS)
            when = (start + step * i).strftime("%Y-%m-%dT%H:%M:%SZ")
            quoted = f'"{page.replace(chr(34), chr(34) * 2)}"' if "," in page or '"' in page else page
            f.write(f"{quoted},Post {i % 200},false,,{browser},{system},s{rng.randrange(sessions)},0,"
                    f"{referrer},{scheme},\"1920,1080,1\",DE,false,{when}\n")


def run(ctx: BenchContext) -> Section:
    from interop.imports import cutoff_for, prepare
    from interop.imports import run as run_import
    from interop.records import ImportStore
    from littlestats.config import load_settings
    from littlestats.controlplane import ControlPlane
    from warehouse.service import Warehouse

    rows = 100_000 if ctx.quick else 1_000_000
    work = ctx.fresh_dir("import")
    export = work / "goatcounter-export.csv"
    write_export(export, rows)
    settings = load_settings({"data_dir": work / "data"})
    settings.ensure_dirs()
    site = ControlPlane(settings.control_db).create_site("bench.example", name="bench")
    store = ImportStore(settings.control_db)

    started = time.monotonic()
    record = prepare(store, site, "goatcounter", export)
    done = run_import(settings, store, record, site, export, cutoff_for(None))
    imported = time.monotonic() - started

    wh = Warehouse(settings)
    try:
        started = time.monotonic()
        result = wh.load()
        loaded = time.monotonic() - started
    finally:
        wh.close()
    assert result.new_events == done.events_written == rows, (result.new_events, done.events_written)

    section = Section(f"Import: GoatCounter CSV export, {rows:,} pageviews")
    load_rate = rows / loaded
    section.add("import: CSV → raw Parquet", rows / imported, "events/s", load_rate)
    section.add("load of the imported events (the live loader; baseline)", load_rate, "events/s")
    section.add("import + load, file to dashboard", rows / (imported + loaded), "events/s", load_rate)
    section.notes.append(f"file {export.stat().st_size / 2**20:,.0f} MiB; import {imported:.1f} s,"
                         f" load {loaded:.1f} s ({result.chunks} transactions)")
    return section
