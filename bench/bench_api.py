"""Query API latency: every dashboard panel, pre-aggregate path and fact path, vs a raw Parquet scan.

Data: 1 M (``--quick``) or 10 M generated events over 30 days (``tests.generator``), loaded by the
real loader into a DuckDB warehouse (kept in ``bench/results/work/api-<size>`` between runs). Each
panel is one ``Query`` (the same the HTTP endpoint builds) run through ``warehouse.query`` on a
read-only connection with 2 DuckDB threads, as the warehouse process runs it:

* **planned** — whatever the planner picks (the pre-aggregates for every unfiltered panel);
* **facts** — the same question forced onto the fact tables;
* **filtered** — the panel with ``country==DE`` (whatever the planner picks: the visit rows for
  stats and the time series, the facts for breakdowns by page or event);
* **baseline** — a plain DuckDB scan of the raw Parquet answering the same question (distinct
  visitors and pageviews by the panel's dimension over the range), measured in the same run.

Reported: p50 and p95 per panel and path, with the baseline's p95 as the ratio's denominator.
Targets on 2 cores: p95 < 50 ms for every unfiltered panel, < 300 ms with a filter.
Usage: ``python -m bench --only api [--quick]``. Excludes HTTP and the worker→warehouse socket hop
(~1 ms; see notes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import BenchContext, Section

THREADS = 2
SITE = "site-b"  # Europe/Berlin: site-local days are not UTC days
TZ = {"site-a": "UTC", "site-b": "Europe/Berlin"}
RANGE = ["2026-03-01", "2026-03-30"]
SESSION = ["visitors", "visits", "views", "bounce_rate", "visit_duration"]

#: panel → (dimensions, metrics, raw-Parquet column for the baseline or None)
PANELS: dict[str, tuple[list[str], list[str], str | None]] = {
    "stats": ([], ["visitors", "visits", "views", "events", "bounce_rate", "visit_duration", "views_per_visit"], None),
    "timeseries (day)": (["time:day"], ["views", "visits", "visitors"], "day"),
    "sources": (["source"], SESSION, "source"),
    "referrers": (["referrer_domain"], SESSION, "referrer_domain"),
    "pages": (["page"], ["visitors", "views"], "pathname"),
    "entry-pages": (["entry_page"], SESSION, "pathname"),
    "exit-pages": (["exit_page"], SESSION, "pathname"),
    "countries": (["country"], SESSION, "country"),
    "devices": (["device"], SESSION, "device"),
    "browsers": (["browser"], SESSION, "browser"),
    "os": (["os"], SESSION, "os"),
    "utm": (["utm_source"], SESSION, "utm_source"),
    "languages": (["language"], SESSION, "language"),
    "screens": (["screen"], SESSION, "screen"),
    "events": (["event"], ["visitors", "events"], "name"),
}


def _prepare(root: Path, events: int) -> None:
    from bench.bench_warehouse import EVENTS_PER_VISITOR
    from tests.generator import TrafficSpec, generate
    from warehouse.database import connect
    from warehouse.layout import loaded_closed_days, resort_days
    from warehouse.load import discover_files, load_pending

    spec = TrafficSpec(visitors=int(events / EVENTS_PER_VISITOR), days=30, loads=2, seed=7,
                       late_fraction=0.0, duplicate_fraction=0.0, timezones=TZ)
    generate(spec).write_raw(root / "raw")
    con = connect(root / "warehouse.duckdb", threads=THREADS)
    load_pending(con, root / "raw", TZ)
    # as the warehouse process leaves a backfill of closed days: each day's rows grouped by site
    resort_days(con, loaded_closed_days({f.partition_hour.date() for f in discover_files(root / "raw")}))
    con.close()
    (root / "ready").write_text("ok")


def _timed(fn: Callable[[], Any], budget_s: float, min_n: int = 5, max_n: int = 40) -> list[float]:
    fn()  # warm-up (file cache, DuckDB plan cache)
    samples: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(samples) < max_n and (len(samples) < min_n or time.monotonic() < deadline):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def _p(samples: list[float], q: float) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def raw_scan(raw: Any, glob: str, site: str, tz: str, date_range: list[str], column: str | None,
             filtered: bool) -> Callable[[], Any]:
    """The baseline of a panel: a plain DuckDB scan of the raw Parquet (``glob``) for distinct
    visitors and pageviews by the panel's raw ``column`` (``day``: the site-local date; ``None``:
    totals) over ``date_range``, optionally with ``country = 'DE'``."""
    from warehouse.query.model import parse_query

    q = parse_query(site, tz, {"date_range": date_range})
    params = {"site": site, "lo": q.date_range.start, "hi": q.date_range.end, "tz": tz, "glob": glob}
    where = "site_id = $site AND ts >= $lo AND ts < $hi" + (" AND country = 'DE'" if filtered else "")
    if column is None:
        sql = (f"SELECT count(DISTINCT visitor_key), count(*) FILTER (WHERE type = 'pageview')"  # noqa: S608
               f" FROM read_parquet($glob) WHERE {where}")
    else:
        key = "CAST(timezone($tz, ts) AS DATE)" if column == "day" else column
        sql = (f"SELECT {key} AS k, count(DISTINCT visitor_key) AS v,"  # noqa: S608
               f" count(*) FILTER (WHERE type = 'pageview') FROM read_parquet($glob) WHERE {where}"
               f" GROUP BY k ORDER BY v DESC LIMIT 100")
    if column != "day":
        params.pop("tz")
    return lambda: raw.execute(sql, params).fetchall()


def prepared_warehouse(ctx: BenchContext, size: int, section: Section) -> Path:
    """The data directory of the API benchmark's warehouse of ``size`` events, generated and
    loaded once and kept between runs (the dashboard benchmark uses the same one)."""
    label = f"{size // 1_000_000} M"
    root = ctx.workdir / f"api-{label.replace(' ', '')}"
    if not (root / "ready").exists():
        root = ctx.fresh_dir(f"api-{label.replace(' ', '')}")
        t0 = time.monotonic()
        _prepare(root, size)
        section.notes.append(f"generated and loaded {label} events in {time.monotonic() - t0:.0f} s")
    # A warehouse kept from an earlier version: migrate it here, not in the timed server's start.
    from warehouse import migrations
    from warehouse.database import connect

    con = connect(root / "warehouse.duckdb", read_only=True)
    version = migrations.schema_version(con)
    con.close()
    if version < migrations.LATEST:
        t0 = time.monotonic()
        connect(root / "warehouse.duckdb").close()
        section.notes.append(f"migrated the kept warehouse from version {version} in {time.monotonic() - t0:.0f} s")
    return root


def register_sites(root: Path) -> None:
    """Give the generated sites (their ids are the generator's) rows in the control plane, so the
    server answers for them."""
    import sqlite3

    from littlestats.controlplane import ControlPlane

    control = ControlPlane(root / "control.sqlite3")
    for site_id, tz in TZ.items():
        if control.get_site(site_id) is None:
            made = control.create_site(f"{site_id}.example", timezone=tz)
            db = sqlite3.connect(root / "control.sqlite3")
            db.execute("UPDATE sites SET id = ? WHERE id = ?", (site_id, made.id))
            db.commit()
            db.close()
    control.close()


def run(ctx: BenchContext) -> Section:
    import duckdb

    from warehouse.query.model import parse_query
    from warehouse.query.runner import OnConnection, run_with

    size = 1_000_000 if ctx.quick else 10_000_000
    label = f"{size // 1_000_000} M"
    section = Section(f"Query API: dashboard panels on {label} events / 30 days (p50/p95 ms)")
    root = prepared_warehouse(ctx, size, section)
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True, config={"threads": THREADS})
    con.execute("SET TimeZone = 'UTC'")
    raw = duckdb.connect(config={"threads": THREADS})
    raw.execute("SET TimeZone = 'UTC'")
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    section.notes.append(f"{events:,} events in the warehouse; site {SITE} ({TZ[SITE]}), range {RANGE[0]}..{RANGE[1]}")

    execute = OnConnection(con)

    glob = str(root / "raw" / "**" / "*.parquet")

    def baseline(column: str | None, filtered: bool) -> Callable[[], Any]:
        return raw_scan(raw, glob, SITE, TZ[SITE], RANGE, column, filtered)

    budget = 2.0 if ctx.quick else 3.0
    for panel, (dims, metrics, column) in PANELS.items():
        body = {"date_range": RANGE, "dimensions": dims, "metrics": metrics}
        q = parse_query(SITE, TZ[SITE], body)
        qf = parse_query(SITE, TZ[SITE], {**body, "filters": [["is", "country", ["DE"]]]})
        stats = panel == "stats"

        def ask(query: Any, force: str | None = None, two: bool = stats) -> Any:
            a = run_with(query, execute, force)
            if two:  # stats also asks for the previous period (change)
                run_with(query.with_range(query.date_range.previous()), execute, force)
            return a

        path = run_with(q, execute).path
        fpath = run_with(qf, execute).path
        planned = _timed(lambda: ask(q), budget)  # noqa: B023 -- called right here
        facts = _timed(lambda: ask(q, "facts"), budget)  # noqa: B023
        filtered = _timed(lambda: ask(qf), budget)  # noqa: B023
        # The raw scan reads thousands of hourly files: a few samples are enough to compare.
        base = _timed(baseline(column, False), 0, min_n=2)
        base_f = _timed(baseline(column, True), 0, min_n=2)
        k = 2 if stats else 1  # the baseline answers one period; stats asks two
        print(f"  {panel}: {path} p95 {_p(planned, 95):.1f} ms, facts {_p(facts, 95):.1f} ms, "
              f"filtered ({fpath}) {_p(filtered, 95):.1f} ms, raw scan {_p(base, 95):.1f} ms", flush=True)
        section.add(f"{panel}: {path} p50", _p(planned, 50), "ms")
        section.add(f"{panel}: {path} p95", _p(planned, 95), "ms", baseline=k * _p(base, 95),
                    target="< 50 ms", met=_p(planned, 95) < 50)
        section.add(f"{panel}: facts p50", _p(facts, 50), "ms")
        section.add(f"{panel}: facts p95", _p(facts, 95), "ms", baseline=k * _p(base, 95))
        section.add(f"{panel}: country==DE ({fpath}) p50", _p(filtered, 50), "ms")
        section.add(f"{panel}: country==DE ({fpath}) p95", _p(filtered, 95), "ms", baseline=k * _p(base_f, 95),
                    target="< 300 ms", met=_p(filtered, 95) < 300)
    section.notes.append(
        f"{THREADS} DuckDB threads, read-only connection, in-process engine (the API adds HTTP and one "
        "Unix-socket round trip to the warehouse process). Baseline: a plain DuckDB scan of the raw "
        "Parquet for distinct visitors + pageviews by the panel's dimension over the same range "
        "(sessions metrics cannot be answered from raw events without sessionizing)."
    )
    con.close()
    raw.close()
    _http(root, section, budget)
    return section


#: named endpoint (path after /sites/:id/) per panel, for the HTTP measurement.
ENDPOINTS = {"stats": "stats", "timeseries (day)": "timeseries?granularity=day", "sources": "sources",
             "referrers": "referrers", "pages": "pages", "entry-pages": "entry-pages", "exit-pages": "exit-pages",
             "countries": "countries", "devices": "devices", "browsers": "browsers", "os": "os", "utm": "utm",
             "languages": "languages", "screens": "screens", "events": "events"}


def _http(root: Path, section: Section, budget: float) -> None:
    """The same panels through the real server: HTTP → worker → Unix socket → warehouse process."""

    import httpx

    from tests.server import running_server

    register_sites(root)
    with running_server(root, 2, env={"LITTLESTATS_LOAD_INTERVAL_SECONDS": "3600"}) as srv:
        token = (root / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            deadline = time.monotonic() + 60
            while c.get(f"/api/v2/health/{SITE}").json().get("warehouse") != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("warehouse process did not start")
                time.sleep(0.5)
            dates = f"start={RANGE[0]}&end={RANGE[1]}"
            for panel, endpoint in ENDPOINTS.items():
                sep = "&" if "?" in endpoint else "?"
                url = f"/api/v2/sites/{SITE}/{endpoint}{sep}{dates}"

                def get(u: str) -> None:
                    r = c.get(u)
                    assert r.status_code == 200, r.text

                plain = _timed(lambda: get(url), budget)  # noqa: B023 -- called right here
                filtered = _timed(lambda: get(url + "&filter=country==DE"), budget)  # noqa: B023
                print(f"  HTTP {panel}: p95 {_p(plain, 95):.1f} ms, filtered {_p(filtered, 95):.1f} ms", flush=True)
                section.add(f"HTTP GET {endpoint.split('?')[0]} p50", _p(plain, 50), "ms")
                section.add(f"HTTP GET {endpoint.split('?')[0]} p95", _p(plain, 95), "ms",
                            target="< 50 ms", met=_p(plain, 95) < 50)
                section.add(f"HTTP GET {endpoint.split('?')[0]} country==DE p50", _p(filtered, 50), "ms")
                section.add(f"HTTP GET {endpoint.split('?')[0]} country==DE p95", _p(filtered, 95), "ms",
                            target="< 300 ms", met=_p(filtered, 95) < 300)
    section.notes.append("HTTP rows: `littlestats serve` with 2 workers on the same data, sequential requests "
                         "from one client on loopback (includes JSON rendering and the socket hop).")
