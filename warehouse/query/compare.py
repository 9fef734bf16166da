"""Comparisons: a query answered for its range and for a second range, side by side.

A ``Query`` with ``compare`` set (``previous_period``, ``year_over_year`` or a custom range; see
``model.parse_compare`` and ``DateRange.year_before``) is run twice by the runner — as asked, and
with the comparison range — and ``merge`` puts the second answer next to the first: every row
gains ``comparison`` (the metrics' values in the comparison range) and ``change`` (per metric,
``absolute``: now − then, and ``percent``: the relative change, ``None`` when the base is 0).

Rows are matched like this:

* a total: the one row with the one row (a total that compares always has its row, zeros when
  nothing happened);
* a breakdown: by the values of its dimensions (a row the comparison range does not have compares
  with zeros); the comparison is asked without paging (up to ``MAX_LIMIT`` rows), so a row on the
  current page is found even if it ranked lower then — if the comparison had more rows than that
  and the value is not among them, its comparison is unknown (``None``);
* a time series: bucket by position (the first day of this range with the first day of that one),
  the comparison's own bucket given as ``comparison[time dimension]``; a bucket with no
  counterpart (a 31-day month compared with a 30-day one) has ``None`` values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from warehouse.query.model import MAX_LIMIT, Query

PERCENT_DIGITS = 1


def base_query(q: Query) -> Query:
    """``q`` without its comparison (what is run for the current range)."""
    return replace(q, compare=None)


def comparison_query(q: Query) -> Query:
    """``q`` over its comparison range, unpaged so every current row can find its counterpart."""
    assert q.compare is not None
    then = replace(q, date_range=q.compare, compare=None)
    return replace(then, limit=MAX_LIMIT, offset=0) if q.plain_dimensions else then


def _zero(metric: str) -> int | float:
    from warehouse.query.runner import INTEGER_METRICS

    return 0 if metric in INTEGER_METRICS else 0.0


def change(now: Any, then: Any, digits: int) -> dict[str, float | int | None]:
    """``{"absolute": now - then, "percent": 100 * (now - then) / then}`` (``None`` when unknown)."""
    if now is None or then is None:
        return {"absolute": None, "percent": None}
    absolute = now - then
    absolute = round(absolute, digits) if isinstance(absolute, float) else absolute
    percent = round(100.0 * (now - then) / then, PERCENT_DIGITS) if then else None
    return {"absolute": absolute, "percent": percent}


def merge(q: Query, rows: list[dict[str, Any]], then: list[dict[str, Any]], then_q: Query) -> list[dict[str, Any]]:
    """``rows`` (the answer for ``q``) with ``comparison`` and ``change`` from ``then`` (the answer
    for ``comparison_query(q)``, that is ``then_q``)."""
    from warehouse.query.runner import ROUNDING, buckets, render_bucket

    time_dim = q.time_dimension
    dims = list(q.plain_dimensions)
    position: dict[Any, int] = {}
    then_buckets: list[str] = []
    if time_dim:
        position = {render_bucket(b, q): i for i, b in enumerate(buckets(q))}
        then_buckets = [render_bucket(b, then_q) for b in buckets(then_q)]
        then_position = {b: i for i, b in enumerate(then_buckets)}

    def key(row: dict[str, Any], pos: dict[Any, int]) -> tuple[Any, ...]:
        return ((pos.get(row[time_dim]),) if time_dim else ()) + tuple(row[d] for d in dims)

    if not time_dim and not dims:  # a total: one row, zeros when nothing happened
        rows = rows or [{m: _zero(m) for m in q.metrics}]
        then = then or [{m: _zero(m) for m in q.metrics}]
    found = {key(r, then_position if time_dim else {}): r for r in then}
    complete = not dims or len(then) < MAX_LIMIT
    out = []
    for row in rows:
        k = key(row, position)
        other = found.get(k)
        known = other is not None or (complete and (not time_dim or k[0] is not None and k[0] < len(then_buckets)))
        values: dict[str, Any] = {}
        if time_dim:
            values[time_dim] = then_buckets[k[0]] if k[0] is not None and k[0] < len(then_buckets) else None
        for m in q.metrics:
            values[m] = (other[m] if other is not None else 0) if known else None
        out.append({**row, "comparison": values,
                    "change": {m: change(row[m], values[m], ROUNDING.get(m, 0)) for m in q.metrics}})
    return out
