"""``littlestats export --format raw`` and ``littlestats sql`` while ``littlestats serve`` runs.

The raw export writes the events sent (counted here) Hive-partitioned like ``raw/``; the first
analyst query of docs/schema.md runs through ``littlestats sql`` against the live warehouse, in
every output format; writes are refused; with no server running the command opens the file itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ingest.schema import COLUMN_NAMES
from littlestats.cli import main
from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, running_server
from warehouse.database import connect
from warehouse.docs import DOC_PATH, example_queries

pytestmark = pytest.mark.slow

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@dataclass
class Setup:
    server: LiveServer
    data_dir: Path
    site: dict[str, Any]
    sent: list[datetime]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(data_dir: Path, *args: str, stdin: str | None = None) -> Ran:
    """Run a ``littlestats`` command in this process (the real command, without paying a new
    interpreter's imports each time) against ``data_dir``."""
    result = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=stdin, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("cli-export") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "1"}
    with running_server(data_dir, 1, env=env) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            site = c.post("/api/v2/sites", json={"domain": "cli.example", "timezone": "UTC"}).json()
            now = datetime.now(UTC).replace(microsecond=0)
            # two hours of today's UTC date (or the last two hours of yesterday's, just after midnight)
            times = [now - timedelta(minutes=5 * i) for i in range(7)] + [now - timedelta(hours=1, minutes=1)]
            events = [{"type": "pageview", "url": f"/p{i}", "visitorId": f"v{i % 3}",
                       "ts": int(t.timestamp() * 1000)} for i, t in enumerate(times)]
            r = httpx.post(f"{srv.url}/api/v2/track/{site['domainKey']}",
                           json={"siteId": site["domainKey"], "events": events},
                           headers={"User-Agent": UA, "Content-Type": "text/plain"})
            assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
            wait_for_warehouse(c, site["id"])
            deadline = time.monotonic() + 60
            while c.get(f"/api/v2/sites/{site['id']}/stats", params={"period": "7d"}).json()["views"] < len(events):
                assert time.monotonic() < deadline, "the events were not loaded"
                time.sleep(0.3)
        yield Setup(srv, data_dir, site, [t.replace(microsecond=0) for t in times])


def test_raw_export_writes_the_events_hive_partitioned(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run(setup.data_dir, "export", "--format", "raw", "--site", setup.site["domainKey"], "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"exported {len(setup.sent)} events" in result.stdout
    files = sorted(out.rglob("*.parquet"))
    hours = {(t.date().isoformat(), f"{t.hour:02d}") for t in setup.sent}
    assert [f.relative_to(out).as_posix() for f in files] == sorted(
        f"site_id={setup.site['id']}/date={d}/hour={h}/part-export.parquet" for d, h in hours)
    con = duckdb.connect()
    glob = str(out / "*" / "*" / "*" / "*.parquet")
    got = con.execute("SELECT site_id, date, hour, ts FROM read_parquet(?, hive_partitioning = true) ORDER BY ts",
                      [glob]).fetchall()
    assert [r[3] for r in got] == sorted(setup.sent)
    assert all(r[0] == setup.site["id"] and str(r[1]) == r[3].astimezone(UTC).date().isoformat()
               and int(r[2]) == r[3].astimezone(UTC).hour for r in got)
    assert pq.read_table(files[0]).column_names == list(COLUMN_NAMES)
    # again, into the same folder: the files are replaced, not doubled
    again = run(setup.data_dir, "export", "--raw", "--site", setup.site["id"], "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [glob]).fetchone() == (len(setup.sent),)


def test_raw_export_of_a_range_and_bad_input(setup: Setup, tmp_path: Path) -> None:
    start = min(setup.sent) + timedelta(minutes=1)
    end = max(setup.sent)
    out = tmp_path / "range"
    result = run(setup.data_dir, "export", "--raw", "--site", setup.site["id"], "--start", start.isoformat(),
                 "--end", end.isoformat(), "--out", str(out))
    assert result.returncode == 0, result.stderr
    want = [t for t in setup.sent if start <= t < end]
    got = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(out / "**" / "*.parquet")]).fetchone()
    assert got == (len(want),)
    bad = run(setup.data_dir, "export", "--raw", "--site", "no-such-site", "--out", str(out))
    assert bad.returncode != 0 and "no site 'no-such-site'" in bad.stderr
    bad = run(setup.data_dir, "export", "--raw", "--site", setup.site["id"], "--start", "2026-01-01", "--out", str(out))
    assert bad.returncode != 0 and "--end" in bad.stderr


def first_analyst_query(site_id: str) -> str:
    """The first example of docs/schema.md, for this site and the days around today."""
    today = date.today()
    sql = example_queries(DOC_PATH.read_text())[0]
    for old, new in (("2026-03-01", today - timedelta(days=1)), ("2026-03-03", today + timedelta(days=1)),
                     ("2026-03-04", today + timedelta(days=2))):
        sql = sql.replace(old, new.isoformat())
    return sql.replace("'site-a'", f"'{site_id}'")


def test_the_first_analyst_query_of_the_docs_runs_while_serve_runs(setup: Setup, tmp_path: Path) -> None:
    sql = first_analyst_query(setup.site["id"])
    visitors = len({i % 3 for i in range(len(setup.sent))})
    result = run(setup.data_dir, "sql", sql, "--format", "json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["visitors"], row["views"]) == (visitors, len(setup.sent))
    result = run(setup.data_dir, "sql", "-", "--format", "csv", stdin=sql)  # the query from a file
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "visitors,visits,views,bounce_rate,avg_duration_s"
    result = run(setup.data_dir, "sql", sql)  # a table for people
    assert result.returncode == 0 and "visitors" in result.stdout and "(1 rows)" in result.stdout
    out = tmp_path / "summary.parquet"
    result = run(setup.data_dir, "sql", sql, "--format", "parquet", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).to_pylist()[0]["views"] == len(setup.sent)


def test_sql_refuses_writes_and_caps_rows(setup: Setup) -> None:
    result = run(setup.data_dir, "sql", "DELETE FROM events")
    assert result.returncode != 0 and "DELETE" in result.stderr
    result = run(setup.data_dir, "sql", "SELECT * FROM range(10)", "--format", "csv", "--max-rows", "4")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["range", "0", "1", "2", "3"] and "only the first 4" in result.stderr
    result = run(setup.data_dir, "sql", "SELECT 1", "--format", "parquet")
    assert result.returncode != 0 and "--out" in result.stderr


def test_sql_without_a_running_server_opens_the_file_itself(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    connect(data_dir / "warehouse.duckdb").close()  # an empty warehouse, as a first load leaves it
    result = run(data_dir, "sql", "SELECT count(*) AS n FROM sessions", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 0}]
    result = run(data_dir, "sql", "SELECT * FROM read_csv('/etc/passwd')")
    assert result.returncode != 0 and "read_csv" in result.stderr
