"""docs/schema.md is generated from the declarations, and its example queries run as written."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from tests.generator import TrafficSpec, generate
from warehouse.database import connect
from warehouse.docs import DOC_PATH, example_queries, render
from warehouse.load import load_pending
from warehouse.tables import ALL_TABLES


def test_committed_doc_is_up_to_date() -> None:
    assert DOC_PATH.read_text() == render(), "run: python -m warehouse.docs"


def test_doc_describes_every_table_and_raw_column() -> None:
    text = DOC_PATH.read_text()
    for table in ALL_TABLES:
        assert f"### `{table.name}`" in text
        for column in table.column_names:
            assert f"| `{column}` |" in text
    assert "| `props_str` |" in text


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doc")
    spec = TrafficSpec(visitors=200, days=5, loads=1, seed=4)
    generate(spec).write_raw(root / "raw")
    con = connect(root / "warehouse.duckdb")
    load_pending(con, root / "raw", spec.timezones)
    con.close()
    return root


@pytest.mark.parametrize("index", range(len(example_queries(render()))))
def test_example_query_runs_as_written(index: int, data_dir: Path) -> None:
    sql = example_queries(DOC_PATH.read_text())[index]
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    cwd = os.getcwd()
    os.chdir(data_dir)  # raw-file examples use paths relative to the data directory
    try:
        rows = con.execute(sql).fetchall()
    finally:
        os.chdir(cwd)
        con.close()
    assert rows, f"example {index} returned nothing:\n{sql}"
    assert any(v not in (None, 0) for v in rows[0])
