"""``POST /api/v2/sql``: analysts' read-only SQL over the live warehouse of a running server.

Two owners with a site each. Queries answer while beacons keep arriving; anything but one read
query over the documented tables is refused with a 400 saying why (and changes nothing); a
non-admin token sees only its own sites' rows in every table; a runaway query is stopped at the
time limit; rows are capped at the row limit.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server
from warehouse.tables import ALL_TABLES

pytestmark = pytest.mark.slow

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@dataclass
class Setup:
    server: LiveServer
    data_dir: Path
    admin: httpx.Client
    other: httpx.Client
    mine: dict[str, Any]  # the admin's site
    theirs: dict[str, Any]  # the other owner's site
    sent: dict[str, int]  # events sent per site id


def track(url: str, site: dict[str, Any], n: int, visitor: str) -> None:
    events = [{"type": "pageview", "url": f"/p{i}", "visitorId": visitor} for i in range(n)]
    r = httpx.post(f"{url}/api/v2/track/{site['domainKey']}", json={"siteId": site["domainKey"], "events": events},
                   headers={"User-Agent": UA, "Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json()["accepted"] == n, r.text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("sql") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SEGMENT_SECONDS": "1", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "1",
           "LITTLESTATS_SQL_TIME_LIMIT_SECONDS": "20"}
    with running_server(data_dir, 1, env=env) as srv:
        admin_token = (data_dir / "admin-token").read_text().strip()
        other_token = cli(data_dir, "token", "create", "--user", "other@example.com").strip()
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
        other = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {other_token}"}, timeout=60)
        mine = admin.post("/api/v2/sites", json={"domain": "mine.example"}).json()
        theirs = other.post("/api/v2/sites", json={"domain": "theirs.example"}).json()
        assert theirs["id"] != mine["id"]
        track(srv.url, mine, 5, "a")
        track(srv.url, theirs, 3, "b")
        wait_for_warehouse(admin, mine["id"])
        wait_for(lambda: counts(admin) == {mine["id"]: 5, theirs["id"]: 3})
        yield Setup(srv, data_dir, admin, other, mine, theirs, {mine["id"]: 5, theirs["id"]: 3})
        admin.close()
        other.close()


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll until ``condition()`` holds (the server loads every second)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def sql(client: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    return client.post("/api/v2/sql", json={"sql": text, **extra})


def counts(client: httpx.Client) -> dict[str, int]:
    r = sql(client, "SELECT site_id, count(*) AS n FROM events GROUP BY site_id ORDER BY site_id")
    assert r.status_code == 200, r.text
    return {site: n for site, n in r.json()["rows"]}


def test_admin_sees_every_site_and_the_answer_has_columns(setup: Setup) -> None:
    r = sql(setup.admin, "SELECT site_id, count(*) AS n FROM events GROUP BY site_id ORDER BY site_id")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == [{"name": "site_id", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"}]
    assert dict(body["rows"]) == setup.sent
    assert body["rowCount"] == 2 and body["truncated"] is False


def test_a_non_admin_token_sees_only_its_own_sites_rows(setup: Setup) -> None:
    theirs = setup.theirs["id"]
    assert counts(setup.other) == {theirs: setup.sent[theirs]}
    r = sql(setup.other, "SELECT count(*) FROM events WHERE site_id = '" + setup.mine["id"] + "'")  # noqa: S608 (SQL text is what this API takes)
    assert r.json()["rows"] == [[0]]
    # every table an analyst may name holds only the caller's site
    for table in ALL_TABLES:
        r = sql(setup.other, f"SELECT count(*) FILTER (WHERE site_id <> '{theirs}'), count(*) FROM {table.name}")  # noqa: S608
        assert r.status_code == 200, (table.name, r.text)
        foreign, total = r.json()["rows"][0]
        assert foreign == 0, table.name
        if table.name in ("events", "sessions", "hourly_rollup", "daily_visitors", "loaded_files"):
            assert total > 0, table.name  # the view is not simply empty
    # a site-less owner sees nothing at all
    nobody = cli(setup.data_dir, "token", "create", "--user", "nobody@example.com").strip()
    with httpx.Client(base_url=setup.server.url, headers={"Authorization": f"Bearer {nobody}"}) as c:
        assert sql(c, "SELECT count(*) FROM events").json()["rows"] == [[0]]


REFUSED = {
    "INSERT INTO events SELECT * FROM events": "INSERT",
    "DELETE FROM events": "DELETE",
    "UPDATE sessions SET pageviews = 0": "UPDATE",
    "DROP TABLE events": "DROP",
    "ATTACH '/tmp/littlestats-attack.duckdb' AS x": "ATTACH",
    "COPY events TO '/tmp/littlestats-attack.csv'": "COPY",
    "COPY (SELECT 1) TO '/tmp/littlestats-attack.csv'": "COPY",
    "PRAGMA database_list": "PRAGMA",
    "SET threads = 1": "SET",
    "RESET threads": "SET",
    "CALL pragma_version()": "CALL",
    "INSTALL httpfs": "LOAD",
    "LOAD httpfs": "LOAD",
    "EXPORT DATABASE '/tmp/littlestats-attack'": "EXPORT",
    "CREATE TABLE x AS SELECT 1": "CREATE",
    "SELECT 1; DELETE FROM events": "exactly one statement",
    "SELECT * FROM read_parquet('raw/*/*/*/*.parquet')": "read_parquet",
    "SELECT * FROM read_csv('/etc/passwd')": "read_csv",
    "SELECT * FROM read_text('/etc/passwd')": "read_text",
    "SELECT * FROM '/etc/passwd'": "unknown table",
    "SELECT * FROM glob('*')": "glob",
    "SELECT * FROM query('SELECT * FROM main.events')": "query",
    "SELECT * FROM duckdb_settings()": "duckdb_settings",
    "SELECT * FROM duckdb_tables": "unknown table",
    "SELECT * FROM pg_settings": "unknown table",
    "WITH pg_settings AS (SELECT 1) SELECT * FROM pg_settings": "system table",
    "SELECT * FROM main.events": "without a catalog or schema",
    "SELECT * FROM warehouse.main.events": "without a catalog or schema",
    "SELECT * FROM temp.main.analyst_sites": "without a catalog or schema",
    "SELECT current_setting('memory_limit')": "current_setting",
    "SELECT (SELECT count(*) FROM read_parquet('x.parquet')) AS n": "read_parquet",
    "EXPLAIN SELECT 1": "EXPLAIN",
    "SHOW TABLES": "unknown table",
    "SELECT * FROM information_schema.tables": "without a catalog or schema",
    "FROM read_blob('/etc/passwd')": "read_blob",
    "SELECT system.main.current_setting('threads')": "current_setting",
    "": "empty",
}


@pytest.mark.parametrize("text", list(REFUSED), ids=list(range(len(REFUSED))))
def test_anything_but_one_read_query_is_refused(setup: Setup, text: str) -> None:
    before = counts(setup.admin)
    r = sql(setup.admin, text)
    assert r.status_code == 400, r.text
    assert REFUSED[text] in r.json()["error"]
    assert counts(setup.admin) == before
    assert not any(Path("/tmp").glob("littlestats-attack*"))


def test_errors_in_the_query_are_400_with_duckdbs_message(setup: Setup) -> None:
    r = sql(setup.admin, "SELEC 1")
    assert r.status_code == 400 and "syntax error" in r.json()["error"]
    r = sql(setup.admin, "SELECT no_such_column FROM events")
    assert r.status_code == 400 and "no_such_column" in r.json()["error"]
    for body in (b"not json", b'{"query": "SELECT 1"}', b'{"sql": 1}'):
        r = setup.admin.post("/api/v2/sql", content=body)
        assert r.status_code == 400 and "sql" in r.json()["error"]
    assert sql(setup.admin, "SELECT 1", maxRows=0).status_code == 400
    r = sql(setup.admin, "SELECT 1", timeLimit=10_000)
    assert r.status_code == 400 and "timeLimit" in r.json()["error"]
    assert httpx.post(f"{setup.server.url}/api/v2/sql", json={"sql": "SELECT 1"}).status_code == 401


def test_odd_values_and_odd_queries_never_give_a_500(setup: Setup) -> None:
    r = sql(setup.admin, "SELECT 'infinity'::DATE AS d, INTERVAL 1 DAY AS i, 1::HUGEINT AS h, uuid() AS u, "
                         "[1, 2] AS l, {'a': 1} AS s, 'x'::BLOB AS b, 'nan'::DOUBLE AS n")
    assert r.status_code == 200, r.text
    assert r.json()["rows"][0][2] == 1
    for fmt in ("csv", "parquet"):
        assert setup.admin.post("/api/v2/sql", params={"format": fmt}, json={"sql": "SELECT 'infinity'::DATE AS d"}
                                ).status_code == 200
    nested = "SELECT * FROM " + "(SELECT * FROM " * 500 + "events" + ") t" * 500
    r = sql(setup.admin, nested)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = sql(setup.admin, "SELECT '\u0000' AS nul")  # DuckDB's parser cannot read a NUL character
    assert r.status_code == 400 and "NUL character" in r.json()["error"]
    r = sql(setup.admin, "SELECT chr(0) AS nul")
    assert r.status_code == 200


def test_the_time_limit_stops_a_runaway_query(setup: Setup) -> None:
    started = time.monotonic()
    r = sql(setup.admin, "SELECT count(*) FROM range(1000000000) a, range(1000000000) b "
                         "WHERE a.range + b.range = -1", timeLimit=1)
    elapsed = time.monotonic() - started
    assert r.status_code == 400, r.text
    assert "time limit of 1 s" in r.json()["error"]
    assert elapsed < 10
    assert counts(setup.admin) == setup.sent  # and the warehouse still answers


def test_rows_are_capped_at_the_row_limit(setup: Setup) -> None:
    r = sql(setup.admin, "SELECT range AS n FROM range(10) ORDER BY n", maxRows=3)
    assert r.status_code == 200
    assert r.json()["rows"] == [[0], [1], [2]] and r.json()["truncated"] is True
    assert r.headers["x-truncated"] == "true"


def test_csv_and_parquet_answers(setup: Setup) -> None:
    text = "SELECT pathname, count(*) AS views FROM events GROUP BY pathname ORDER BY pathname"
    r = setup.admin.post("/api/v2/sql", json={"sql": text}, params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.split("\r\n")
    assert lines[0] == "pathname,views" and lines[1] == "/p0,2"
    r = setup.admin.post("/api/v2/sql", json={"sql": text}, headers={"Accept": "application/vnd.apache.parquet"})
    assert r.status_code == 200
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == ["pathname", "views"] and table.num_rows == 5
    r = setup.admin.post("/api/v2/sql", json={"sql": text}, params={"format": "xlsx"})
    assert r.status_code == 400 and "json, csv, parquet" in r.json()["error"]


def test_queries_answer_while_the_server_ingests(setup: Setup) -> None:
    stop = threading.Event()
    sent = [0]

    def keep_sending() -> None:
        while not stop.is_set():
            track(setup.server.url, setup.mine, 5, f"load-{sent[0]}")
            sent[0] += 5

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = sql(setup.admin, "SELECT count(*) FROM events WHERE pathname = '/p0'")
            assert r.status_code == 200, r.text
            seen.append(r.json()["rows"][0][0])
            if seen[-1] > setup.sent[setup.mine["id"]] // 5 + 2:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join()
    assert seen == sorted(seen)  # never goes back
    assert seen[-1] > 1, f"the queries never saw the new events ({seen})"
    assert sent[0] > 0
