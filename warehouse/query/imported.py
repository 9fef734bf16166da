# ruff: noqa: S608 -- SQL is composed from our own identifiers; every client value is a $param.
"""Imported daily aggregates added to answers (``imported=true``), the way Plausible shows them.

An import from another tool (``interop.plausible``) leaves daily rows per dimension in the
``imported_*`` tables. A query asking ``imported: true`` is answered natively (the planner's path,
unchanged) and, when an imported table can answer the same question, that table's sums for the
whole site-local days of the range are added bucket by bucket and value by value:

* imported rows count only for days *before the site's first native day* (its first hour in
  ``hourly_rollup``), so an import never doubles what the tracker sent, whatever its dates;
* one table must hold every dimension the query groups or filters by (``imported_sources`` holds
  source, referrer domain and UTM tags; ``imported_browsers`` browser and version; …); without
  dimensions ``imported_visitors`` answers (custom events from ``imported_custom_events``);
* ``bounce_rate``, ``visit_duration``, ``views_per_visit`` are recomputed from summed bounces,
  durations, pageviews and visits, so they are exact; ``visitors`` is a sum of daily uniques: exact
  for a single imported day, *approximate* when a bucket adds several days, adds native and imported
  days, or adds rows the source split finer (browser versions under a browser) — the answer lists it
  in ``imported.approximate``;
* what no imported table can answer — hourly buckets, ``time_on_page``, ``conversion_rate``, goal or
  property filters, dimensions like ``language`` — is answered natively and says why
  (``imported.included: false``, ``skipReason``), as Plausible does.

``run`` / ``run_sync`` are what ``runner.run`` / ``runner.run_sync`` call when ``q.imported`` is
set; the rest are pure functions of the query and the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from warehouse.query import runner
from warehouse.query.model import MAX_LIMIT, PROP_PREFIX, Query
from warehouse.query.planner import Plan, plan
from warehouse.query.sql import SQL, Params, date_bucket, key_dimensions, predicate
from warehouse.tables import IMPORTED_TABLES

BLOCKS = ("visitors", "visits", "views", "events", "bounces", "duration")  # duration: seconds
#: metric → the building blocks it is computed from
NEEDS: dict[str, tuple[str, ...]] = {
    "visitors": ("visitors",), "visits": ("visits",), "views": ("views",), "events": ("events",),
    "bounce_rate": ("bounces", "visits"), "visit_duration": ("duration", "visits"),
    "views_per_visit": ("views", "visits"),
}


@dataclass(frozen=True)
class Source:
    """An imported table: the dimensions it holds (ours → its column) and its building blocks."""

    table: str
    columns: dict[str, str]
    blocks: dict[str, str]


_SESSION = {"visitors": "visitors", "visits": "visits", "views": "pageviews", "bounces": "bounces",
            "duration": "visit_duration"}
VISITORS = Source("imported_visitors", {}, _SESSION)
SOURCES = (
    Source("imported_sources", {"source": "source", "referrer_domain": "referrer_domain",
                                **{f"utm_{t}": f"utm_{t}" for t in ("source", "medium", "campaign", "content", "term")}},
           _SESSION),
    Source("imported_pages", {"page": "page", "hostname": "hostname"},
           {"visitors": "visitors", "visits": "visits", "views": "pageviews"}),
    Source("imported_entry_pages", {"entry_page": "entry_page"}, {**_SESSION, "visits": "entrances"}),
    Source("imported_exit_pages", {"exit_page": "exit_page"}, {**_SESSION, "visits": "exits"}),
    Source("imported_custom_events", {"event": "name"}, {"visitors": "visitors", "events": "events"}),
    # Plausible writes an unknown region as '' and an unknown city as 0; ours are null, and a city
    # is its GeoNames id as text.
    Source("imported_locations", {"country": "country", "region": "nullif(region, '')",
                                  "city": "CAST(nullif(city, 0) AS VARCHAR)"}, _SESSION),
    Source("imported_devices", {"device": "device"}, _SESSION),
    Source("imported_browsers", {"browser": "browser", "browser_version": "browser_version"}, _SESSION),
    Source("imported_operating_systems", {"os": "operating_system", "os_version": "operating_system_version"},
           _SESSION),
)


def choose(q: Query) -> tuple[Source | None, str | None]:
    """The imported table that answers ``q``, or why none does."""
    if q.granularity == "hour":
        return None, "imported data are daily: hourly buckets show native data only"
    unsupported = [m for m in q.metrics if m not in NEEDS]
    if unsupported:
        return None, f"{', '.join(unsupported)} cannot be computed from imported daily aggregates"
    dims = set(q.plain_dimensions) | {f.dimension for f in q.filters}
    odd = sorted(d for d in dims if d == "goal" or d.startswith(PROP_PREFIX))
    if odd:
        return None, f"imported aggregates have no {' or '.join(odd)} to filter or group by"
    source = VISITORS if not dims else next((s for s in SOURCES if dims <= set(s.columns)), None)
    if source is None:
        return None, f"no imported table holds {' and '.join(sorted(dims))} together"
    have = set(source.blocks) | ({"events"} if source is VISITORS else set())
    missing = [m for m in q.metrics if not set(NEEDS[m]) <= have]
    if missing:
        return None, f"{source.table} cannot give {', '.join(missing)}"
    return source, None


def status_sql(site_id: str) -> SQL:
    """The site's first and last imported day and its first native hour."""
    union = " UNION ALL ".join(f"SELECT date FROM {t.name} WHERE site_id = $site" for t in IMPORTED_TABLES)
    return SQL(
        f"WITH u AS ({union}) SELECT (SELECT min(date) FROM u) AS first, (SELECT max(date) FROM u) AS last,"
        " (SELECT min(hour) FROM hourly_rollup WHERE site_id = $site AND dimension = 'total') AS native",
        {"site": site_id},
    )


def days(q: Query, status: Any) -> tuple[dict[str, Any], tuple[date, date] | None]:
    """What the answer will say about imports, and the imported days ``[lo, hi)`` to add (none:
    nothing to add)."""
    first, last, native = status.rows[0] if status.rows else (None, None, None)
    meta: dict[str, Any] = {"requested": bool(q.imported), "included": False, "available": first is not None,
                            "from": first.isoformat() if first else None, "to": last.isoformat() if last else None}
    if not q.imported:
        return meta, None
    if first is None or last is None:
        return {**meta, "skipReason": "the site has no imported data"}, None
    r = q.date_range
    start, end = r.local_start(), r.local_end()
    d0 = start.date() if start.time() == start.time().min else start.date() + timedelta(days=1)
    hi = min(end.date(), last + timedelta(days=1))
    if native is not None:
        hi = min(hi, native.astimezone(r.zone).date())
    lo: date = max(d0, first)
    if lo >= hi:
        return {**meta, "skipReason": "no imported day lies wholly in this range before the site's native data"}, None
    return meta, (lo, hi)


def imported_sql(q: Query, source: Source, lo: date, hi: date) -> SQL:
    """Building blocks of ``q`` from ``source`` over days ``[lo, hi)``: the keys ``k0..`` as the
    native path groups them, the blocks, ``n`` (most rows summed for one day and key) and ``days``."""
    p = Params()
    site = p(q.site_id)
    conds = [f"site_id = {site}", f"date >= {p(lo)}", f"date < {p(hi)}"]
    conds += [predicate(source.columns[f.dimension], f, p) for f in q.filters]
    cols = [source.columns[d] for d in q.plain_dimensions]
    if q.search is not None and cols:
        conds.append(f"contains(lower(CAST({cols[0]} AS VARCHAR)), lower({p(q.search)}))")
    sums = ", ".join(f"sum({source.blocks[b]}) AS {b}" if b in source.blocks else f"0 AS {b}" for b in BLOCKS)
    dims = "".join(f"{c} AS d{i}, " for i, c in enumerate(cols))
    per_day = f"SELECT date, {dims}{sums}, count(*) AS n FROM {source.table} WHERE {' AND '.join(conds)} GROUP BY ALL"
    if source is VISITORS:
        events = (f"SELECT date, sum(events) AS events FROM imported_custom_events WHERE site_id = {site}"
                  f" AND date >= {p(lo)} AND date < {p(hi)} GROUP BY date")
        blocks = ", ".join(f"coalesce(v.{b}, 0) AS {b}" for b in BLOCKS if b != "events")
        per_day = (f"SELECT coalesce(v.date, e.date) AS date, {blocks}, coalesce(e.events, 0) AS events,"
                   f" coalesce(v.n, 0) AS n FROM ({per_day}) v FULL OUTER JOIN ({events}) e ON v.date = e.date")
    keys = ([date_bucket(q.granularity, "date")] if q.granularity else []) + [f"d{i}" for i in range(len(cols))]
    select = "".join(f"{k} AS k{i}, " for i, k in enumerate(keys))
    total = ", ".join(f"sum({b}) AS {b}" for b in BLOCKS)
    text = (f"SELECT {select}{total}, max(n) AS n, count(DISTINCT date) AS days FROM ({per_day}) r"
            f"{' GROUP BY ALL' if keys else ''}")
    return SQL(text, p.values)


def native_query(q: Query) -> Query:
    """The native half: every row (merging reorders and pages), with the metrics the blocks need."""
    metrics = list(q.metrics)
    for m in q.metrics:
        metrics += [b for b in NEEDS[m] if b in ("visits", "views", "visitors", "events") and b not in metrics]
    return replace(q, imported=None, metrics=tuple(metrics), order_by=(), limit=MAX_LIMIT, offset=0)


def _native_blocks(values: dict[str, Any]) -> dict[str, float]:
    visits = int(values.get("visits") or 0)
    return {
        "visitors": int(values.get("visitors") or 0), "visits": visits,
        "views": int(values.get("views") or 0), "events": int(values.get("events") or 0),
        # the unrounded ratios times visits give back the exact sums
        "bounces": round(float(values.get("bounce_rate") or 0) * visits / 100),
        "duration": float(values.get("visit_duration") or 0) * visits,
    }


def _metric(m: str, b: dict[str, float]) -> float | None:
    if m in ("visitors", "visits", "views", "events"):
        return b[m]
    if not b["visits"]:
        return None
    return {"bounce_rate": 100.0 * b["bounces"] / b["visits"], "visit_duration": b["duration"] / b["visits"],
            "views_per_visit": b["views"] / b["visits"]}[m]


Row = tuple[tuple[Any, ...], dict[str, Any]]


def _sort(rows: list[Row], q: Query, names: list[str]) -> None:
    """The order ``final_select`` gives native answers, applied to merged rows (stable sorts,
    least significant first)."""
    def value(row: Row, name: str) -> Any:
        return row[0][names.index(name)] if name in names else row[1][name]

    def nulls_first(name: str) -> Callable[[Row], tuple[bool, Any]]:
        return lambda r: (value(r, name) is not None, value(r, name))

    def nulls_last(name: str) -> Callable[[Row], tuple[bool, Any]]:
        return lambda r: (value(r, name) is None, value(r, name))

    for name in reversed(names):
        rows.sort(key=nulls_first(name))
    order = list(q.order_by)
    if not order:
        order = ([(q.time_dimension, "asc")] if q.time_dimension else []) + (
            [(q.metrics[0], "desc")] if q.plain_dimensions else [])
    for name, direction in reversed(order):
        if direction == "desc":  # reversed, so nulls (sorted first) end up last; stable all the same
            rows.sort(key=nulls_first(name), reverse=True)
        else:
            rows.sort(key=nulls_last(name))


def merge(q: Query, native_plan: Plan, native: Any, imported: Any, meta: dict[str, Any]) -> runner.Answer:
    """Add the imported blocks to the native rows, recompute, order, page and shape the answer."""
    names = key_dimensions(q)
    n = len(names)
    metrics = native_query(q).metrics
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for raw in native.rows:
        by_key[tuple(raw[:n])] = _native_blocks(dict(zip(metrics, raw[n:], strict=True)))
    approximate = False
    cols = list(imported.columns)
    for raw in imported.rows:
        row = dict(zip(cols, raw, strict=True))
        key = tuple(raw[:n])
        mine = by_key.get(key)
        mixed = mine is not None and any(mine[b] for b in ("visitors", "visits", "views", "events"))
        approximate = approximate or mixed or int(row["n"] or 0) > 1 or int(row["days"] or 0) > 1
        total = mine or dict.fromkeys(BLOCKS, 0)
        by_key[key] = {b: total[b] + (float(row[b] or 0) if b == "duration" else int(row[b] or 0)) for b in BLOCKS}
    counted = {"visitors", "views", "events"} & set(q.metrics)
    if set(q.metrics) & {"visits", "bounce_rate", "visit_duration", "views_per_visit"}:
        counted.add("visits")
    counted = counted or {"visitors"}
    rows = [(k, {**b, **{m: _metric(m, b) for m in q.metrics}}) for k, b in by_key.items()
            if any(b[c] for c in counted)]
    _sort(rows, q, names)
    if q.plain_dimensions:
        rows = rows[q.offset: q.offset + q.limit]
    shaped = runner.assemble(q, [native_plan], [_Rows([*names, *q.metrics],
                                                      [(*k, *(v[m] for m in q.metrics)) for k, v in rows])])
    shaped.reason = f"{native_plan.reason}; imported daily aggregates added"
    approx = ["visitors"] if approximate and "visitors" in q.metrics else []
    shaped.imported = {**meta, "included": True, "approximate": approx}
    return shaped


@dataclass
class _Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]


async def run(q: Query, warehouse: runner.AsyncWarehouse, force: str | None = None) -> runner.Answer:
    """``q`` answered with imported aggregates added (through an async warehouse)."""
    status = status_sql(q.site_id)
    meta, span = days(q, await warehouse.query(status.text, status.params))
    source, skip = choose(q)
    if span is None or source is None:
        answer = await runner.run(replace(q, imported=None), warehouse, force)
        answer.imported = {**meta, **({"skipReason": skip} if skip and q.imported and span else {})}
        return answer
    p = plan(native_query(q), force)
    extra = imported_sql(q, source, *span)
    native = await warehouse.query(p.sql.text, p.sql.params)
    return merge(q, p, native, await warehouse.query(extra.text, extra.params), meta)


def run_sync(q: Query, warehouse: runner.SyncWarehouse, force: str | None = None) -> runner.Answer:
    """``q`` answered with imported aggregates added (through a blocking warehouse)."""
    status = status_sql(q.site_id)
    meta, span = days(q, warehouse.query_sync(status.text, status.params))
    source, skip = choose(q)
    if span is None or source is None:
        answer = runner.run_sync(replace(q, imported=None), warehouse, force)
        answer.imported = {**meta, **({"skipReason": skip} if skip and q.imported and span else {})}
        return answer
    p = plan(native_query(q), force)
    extra = imported_sql(q, source, *span)
    native = warehouse.query_sync(p.sql.text, p.sql.params)
    return merge(q, p, native, warehouse.query_sync(extra.text, extra.params), meta)
