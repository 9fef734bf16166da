"""Local-day buckets by offset arithmetic equal DuckDB's time-zone conversion, across DST changes."""

from __future__ import annotations

import duckdb
import pytest

from warehouse.query.model import parse_query
from warehouse.query.sql import Params, bucket

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Asia/Kolkata",
         "Australia/Lord_Howe", "Pacific/Apia", "America/St_Johns"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("granularity", ["day", "week", "month"])
def test_offset_buckets_equal_time_zone_conversion(zone: str, granularity: str) -> None:
    q = parse_query("s", zone, {"date_range": ["2025-01-01", "2026-12-31"], "metrics": ["visitors"]})
    p = Params()
    fast = bucket(granularity, "ts", p, zone, q.date_range)
    slow = bucket(granularity, "ts", p, zone)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    p.values.update(lo=q.date_range.start, hi=q.date_range.end)
    # every 7 minutes over two years, plus every second around each hour boundary
    rows = con.execute(
        "WITH t AS (SELECT unnest(generate_series($lo, $hi - INTERVAL 1 SECOND, INTERVAL 7 MINUTE)) AS ts"  # noqa: S608
        " UNION ALL SELECT unnest(generate_series(date_trunc('hour', $lo), $hi - INTERVAL 1 HOUR, INTERVAL 1 HOUR))"
        " + INTERVAL (s) SECOND FROM range(-2, 3) r(s))"
        f" SELECT count(*), count(*) FILTER (WHERE {fast} IS DISTINCT FROM {slow}) FROM t"
        " WHERE ts >= $lo AND ts < $hi",
        p.values,
    ).fetchall()
    con.close()
    total, wrong = rows[0]
    assert total > 100_000 and wrong == 0
