"""Time spans as scan predicates (``warehouse.spans``), checked against brute force."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from warehouse.spans import Spans

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_overlapping_and_touching_intervals_merge() -> None:
    spans = Spans.covering([(_at(10), _at(20)), (_at(0), _at(5)), (_at(5), _at(8)), (_at(15), _at(30))])
    assert spans.parts == ((_at(0), _at(8)), (_at(10), _at(30)))


def test_past_the_limit_the_smallest_gaps_close() -> None:
    # gaps of 1, 100, 2 and 50 minutes: with 3 spans the 100- and 50-minute gaps stay
    intervals = [(_at(0), _at(1)), (_at(2), _at(3)), (_at(103), _at(104)), (_at(106), _at(107)),
                 (_at(157), _at(158))]
    assert Spans.covering(intervals, limit=3).parts == (
        (_at(0), _at(3)), (_at(103), _at(107)), (_at(157), _at(158)))
    assert Spans.covering(intervals, limit=1).parts == ((_at(0), _at(158)),)


def test_no_intervals_is_an_error() -> None:
    with pytest.raises(ValueError, match="no intervals"):
        Spans.covering([])


def test_whole_hours() -> None:
    spans = Spans.covering([(_at(10), _at(20)), (_at(61), _at(62)), (_at(300), _at(360))]).to_hours()
    assert spans.parts == ((_at(0), _at(120)), (_at(300), _at(360)))


@pytest.mark.parametrize("seed", range(5))
def test_the_predicate_selects_exactly_the_rows_in_some_span(seed: int) -> None:
    rng = random.Random(seed)
    intervals = []
    for _ in range(rng.randint(1, 40)):
        start = rng.uniform(0, 10_000)
        intervals.append((_at(start), _at(start + rng.uniform(0.001, 300))))
    limit = rng.randint(1, 20)
    spans = Spans.covering(intervals, limit=limit)
    assert len(spans.parts) <= limit
    assert all(a[1] < b[0] for a, b in zip(spans.parts, spans.parts[1:], strict=False))
    times = [_at(rng.uniform(-100, 10_400)) for _ in range(2_000)] + [lo for lo, _ in intervals]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE t (ts TIMESTAMPTZ)")
    con.executemany("INSERT INTO t VALUES (?)", [[t] for t in times])
    params: dict[str, object] = {}
    got = sorted(r[0] for r in con.execute(f"SELECT ts FROM t WHERE {spans.where('ts', params)}",  # noqa: S608
                                           params).fetchall())
    assert got == sorted(t for t in times if any(lo <= t < hi for lo, hi in spans.parts))
    # every original interval is covered
    assert all(any(lo <= a and b <= hi for lo, hi in spans.parts) for a, b in intervals)
