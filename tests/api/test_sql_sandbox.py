"""``warehouse.sql`` on a generated warehouse: every example query of docs/schema.md gives through
the read-only path exactly what it gives on the file opened directly, and a site restriction
answers what a ``WHERE site_id = …`` on the file answers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.generator import TrafficSpec, generate
from warehouse.database import connect
from warehouse.docs import DOC_PATH, example_queries
from warehouse.load import load_pending
from warehouse.sql import SqlRefused, run_readonly

EXAMPLES = [q for q in example_queries(DOC_PATH.read_text()) if "read_parquet" not in q]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    spec = TrafficSpec(visitors=120, days=3, loads=1, seed=7)
    generate(spec).write_raw(root / "raw")
    con = connect(root / "warehouse.duckdb")
    load_pending(con, root / "raw", spec.timezones)
    con.close()
    return root / "warehouse.duckdb"


def test_the_examples_are_all_checked() -> None:
    assert len(EXAMPLES) >= 10  # every example but the raw-file one


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_doc_example_runs_read_only_with_the_same_answer(warehouse: Path, index: int) -> None:
    sql = EXAMPLES[index]
    # one thread: examples with ties under a LIMIT pick the same rows on both runs
    direct = duckdb.connect(str(warehouse), read_only=True, config={"threads": 1})
    try:
        want = direct.execute(sql).fetchall()
        answer = run_readonly(direct, sql, None, time_limit=30, max_rows=1000)
    finally:
        direct.close()
    assert answer.table.num_rows == len(want) and not answer.truncated
    got = [tuple(r.values()) for r in answer.table.to_pylist()]
    assert got == want


def test_a_site_restriction_equals_a_where_on_the_file(warehouse: Path) -> None:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        sites = [r[0] for r in con.execute("SELECT DISTINCT site_id FROM events ORDER BY 1").fetchall()]
        assert len(sites) >= 2
        one = sites[0]
        want = con.execute("SELECT count(*), count(DISTINCT visitor_key) FROM events WHERE site_id = ?",
                           [one]).fetchall()
        got = run_readonly(con, "SELECT count(*) AS n, count(DISTINCT visitor_key) AS v FROM events", [one],
                           time_limit=30, max_rows=10)
        assert [tuple(r.values()) for r in got.table.to_pylist()] == want
        with pytest.raises(SqlRefused):
            run_readonly(con, "SELECT * FROM read_parquet('raw/*/*/*/*.parquet')", [one], time_limit=5, max_rows=1)
    finally:
        con.close()


@pytest.mark.parametrize("sql", [
    "FROM events USING SAMPLE 10",
    "SELECT * FROM (FROM sessions) s WHERE s.pageviews > 1 LIMIT 3",
    "SELECT count(*) FROM events e1 POSITIONAL JOIN events e2",
    "UNPIVOT (SELECT site_id, views, visits FROM hourly_rollup) ON views, visits INTO NAME k VALUE v",
    "SELECT to_json(s) FROM sessions s LIMIT 1",
    "DESCRIBE sessions",
    "SUMMARIZE hourly_rollup",
])
def test_unusual_read_syntax_is_checked_and_runs(warehouse: Path, sql: str) -> None:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        answer = run_readonly(con, sql, None, time_limit=30, max_rows=10)
    finally:
        con.close()
    assert answer.table.num_rows > 0


def test_a_query_nested_too_deeply_to_check_is_refused(warehouse: Path) -> None:
    nested = "SELECT * FROM " + "(SELECT * FROM " * 500 + "events" + ") t" * 500
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        with pytest.raises(SqlRefused, match="nested too deeply"):
            run_readonly(con, nested, None, time_limit=5, max_rows=1)
    finally:
        con.close()
