"""Data out over HTTP: CSV answers of every stats endpoint, and the raw events as Parquet.

One real server; beacons in over HTTP (page paths and property values with commas, quotes and
line breaks), a load, then every stats endpoint asked for JSON and for CSV: the CSV parsed back
holds the same rows and columns. The raw export holds exactly the events sent (counted here, not
by the server), with every column of the documented raw schema, and opens in pyarrow and DuckDB.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
TRICKY_PATHS = ["/a,b", '/say"hi"', "/plain"]
PLAN = 'pro, "yearly"\nplan'  # a comma, quotes and a line break in one value
EVENT_NAME = "Sign,up"


@dataclass
class Setup:
    server: LiveServer
    client: httpx.Client
    other: httpx.Client
    site: dict[str, Any]
    params: dict[str, str]
    sent: list[dict[str, Any]]  # every event sent, with its ts as a datetime
    t0: datetime


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("export") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        other_token = cli(data_dir, "token", "create", "--user", "other@example.com").strip()
        client = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        other = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {other_token}"}, timeout=30)
        site = client.post("/api/v2/sites", json={"domain": "csv.example", "timezone": "UTC"}).json()
        assert client.post(f"/api/v2/sites/{site['id']}/goals",
                           json={"kind": "event", "value": EVENT_NAME}).status_code == 201
        t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        sent: list[dict[str, Any]] = []

        def send(ua: str, visitor: str, events: list[dict[str, Any]]) -> None:
            for e in events:
                e["visitorId"] = visitor
            body = {"siteId": site["domainKey"], "events": [
                {**{k: v for k, v in e.items() if k != "at"}, "ts": int(e["at"].timestamp() * 1000)}
                for e in events]}
            r = httpx.post(f"{srv.url}/api/v2/track/{site['domainKey']}", json=body,
                           headers={"User-Agent": ua, "Content-Type": "text/plain"})
            assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
            sent.extend(events)

        send(FIREFOX, "A", [
            {"type": "pageview", "url": "/a,b?utm_source=news,letter", "referrer": "https://www.google.com/",
             "at": t0 + timedelta(minutes=1)},
            {"type": "pageview", "url": '/say"hi"', "at": t0 + timedelta(minutes=2)},
            {"type": "event", "name": EVENT_NAME, "data": {"plan": PLAN}, "url": '/say"hi"',
             "at": t0 + timedelta(minutes=3)},
        ])
        send(CHROME, "B", [
            {"type": "pageview", "url": "/plain", "at": t0 + timedelta(hours=1, minutes=5)},
            {"type": "event", "name": EVENT_NAME, "data": {"plan": "basic"}, "url": "/plain",
             "at": t0 + timedelta(hours=1, minutes=6)},
            {"type": "page_exit", "url": "/plain", "engagementTime": 5000, "at": t0 + timedelta(hours=1, minutes=7)},
        ])
        send(CHROME, "C", [{"type": "pageview", "url": "/a,b", "at": t0 + timedelta(hours=2, minutes=30)}])
        wait_for_warehouse(client, site["id"])
        cli(data_dir, "load")
        params = {"start": (t0 - timedelta(hours=1)).isoformat(), "end": (t0 + timedelta(hours=4)).isoformat()}
        deadline = time.monotonic() + 30
        while client.get(f"/api/v2/sites/{site['id']}/stats", params=params).json()["views"] < 4:
            assert time.monotonic() < deadline, "the load did not show the events"
            cli(data_dir, "load")
        yield Setup(srv, client, other, site, params, sent, t0)
        client.close()
        other.close()


# -- CSV ------------------------------------------------------------------------------------


def expected_cells(row: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A JSON row as the CSV cells docs/export.md promises (written here, independently)."""
    out: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(expected_cells(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out[f"{prefix}{key}"] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        elif value is None:
            out[f"{prefix}{key}"] = ""
        elif isinstance(value, bool):
            out[f"{prefix}{key}"] = "true" if value else "false"
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def parse_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, r, strict=True)) for r in reader]


#: (endpoint, extra params, where its rows are in the JSON answer: a key, or None for one row)
ENDPOINTS: list[tuple[str, dict[str, str], str | None]] = [
    ("stats", {}, None),
    ("timeseries", {"granularity": "hour"}, "data"),
    ("referrers", {}, "referrers"), ("sources", {}, "sources"), ("pages", {}, "pages"),
    ("entry-pages", {}, "entryPages"), ("exit-pages", {}, "exitPages"), ("countries", {}, "countries"),
    ("devices", {}, "devices"), ("browsers", {}, "browsers"), ("os", {}, "os"),
    ("languages", {}, "languages"), ("screens", {}, "screens"),
    ("utm", {}, "utm"),
    ("events", {}, "events"),
    ("events/properties", {}, "properties"),
    ("events/properties", {"property": "plan"}, "values"),
    ("conversions", {}, "goals"),
]


@pytest.mark.parametrize(("endpoint", "extra", "key"), ENDPOINTS,
                         ids=[f"{e}{'-' + '-'.join(x.values()) if x else ''}" for e, x, _ in ENDPOINTS])
def test_csv_has_the_same_rows_and_columns_as_json(setup: Setup, endpoint: str, extra: dict[str, str],
                                                   key: str | None) -> None:
    url = f"/api/v2/sites/{setup.site['id']}/{endpoint}"
    data = setup.client.get(url, params={**setup.params, **extra}).json()
    r = setup.client.get(url, params={**setup.params, **extra, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = [data] if key is None else data[key]
    assert rows, f"{endpoint} answered no rows: the comparison would prove nothing"
    expected = [expected_cells(row) for row in rows]
    header, got = parse_csv(r.text)
    assert got == expected
    assert set(header) == set().union(*(e.keys() for e in expected))


def test_query_endpoint_answers_csv(setup: Setup) -> None:
    body = {"metrics": ["visitors", "views"], "dimensions": ["page"],
            "date_range": [setup.params["start"], setup.params["end"]]}
    url = f"/api/v2/sites/{setup.site['id']}/query"
    data = setup.client.post(url, json=body).json()
    r = setup.client.post(url, json=body, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    header, got = parse_csv(r.text)
    assert header == ["page", "visitors", "views"]
    assert got == [{"page": str(x["dimensions"][0]), "visitors": str(x["metrics"][0]), "views": str(x["metrics"][1])}
                   for x in data["results"]]
    assert {g["page"] for g in got} == set(TRICKY_PATHS)


def test_quoting_follows_rfc_4180(setup: Setup) -> None:
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/pages", params={**setup.params, "format": "csv"})
    assert r.text.startswith("page,visitors,views\r\n")
    assert '\r\n"/a,b",' in r.text  # a comma: quoted
    assert '\r\n"/say""hi""",' in r.text  # quotes: quoted and doubled
    values = setup.client.get(f"/api/v2/sites/{setup.site['id']}/events/properties",
                              params={**setup.params, "property": "plan", "format": "csv"}).text
    assert '"pro, ""yearly""\nplan"' in values  # a line break inside a quoted field
    assert PLAN in [row["value"] for row in parse_csv(values)[1]]


def test_accept_header_asks_for_csv_and_names_a_file(setup: Setup) -> None:
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/pages", params=setup.params,
                         headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment")
    match = re.search(r'filename="([^"]+)"', disposition)
    assert match and match.group(1).startswith(f"littlestats-{setup.site['id']}-pages-")
    assert match.group(1).endswith(".csv")
    # a browser's Accept (anything, HTML first) still gets JSON
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/pages", params=setup.params,
                         headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.headers["content-type"].startswith("application/json")


def test_unknown_format_is_a_400_naming_the_allowed_ones(setup: Setup) -> None:
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/pages", params={**setup.params, "format": "xml"})
    assert r.status_code == 400
    assert "'format'" in r.json()["error"] and "json, csv" in r.json()["error"]


def test_errors_stay_json_when_csv_is_asked(setup: Setup) -> None:
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/pages", params={"period": "nope", "format": "csv"})
    assert r.status_code == 400 and "'period'" in r.json()["error"]
    r = setup.other.get(f"/api/v2/sites/{setup.site['id']}/pages", params={"format": "csv"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


# -- raw Parquet ----------------------------------------------------------------------------


def documented_raw_columns() -> list[str]:
    """Column names of the raw schema table in docs/schema.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    section = text.split("## Raw event Parquet columns", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)


def raw_export(setup: Setup, tmp_path: Path, **params: str) -> Path:
    r = setup.client.get(f"/api/v2/sites/{setup.site['id']}/export/raw", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert ".parquet" in r.headers["content-disposition"]
    path = tmp_path / "export.parquet"
    path.write_bytes(r.content)
    return path


def test_raw_export_holds_exactly_the_events_sent(setup: Setup, tmp_path: Path) -> None:
    path = raw_export(setup, tmp_path)
    table = pq.read_table(path)
    assert table.column_names == documented_raw_columns()
    assert table.num_rows == len(setup.sent)
    assert len(set(table.column("event_id").to_pylist())) == table.num_rows
    got = Counter((r["type"], r["pathname"], r["ts"]) for r in table.select(["type", "pathname", "ts"]).to_pylist())
    want = Counter((e["type"], e["url"].split("?")[0], e["at"]) for e in setup.sent)
    assert got == want
    plans = {r["props_str"][0][1] for r in table.select(["props_str"]).to_pylist() if r["props_str"]}
    assert plans == {PLAN, "basic"}
    con = duckdb.connect()
    assert con.execute("SELECT count(*), count(DISTINCT visitor_key) FROM read_parquet(?)",
                       [str(path)]).fetchone() == (len(setup.sent), 3)


def test_raw_export_of_a_range_holds_only_its_events(setup: Setup, tmp_path: Path) -> None:
    start, end = setup.t0 + timedelta(hours=1), setup.t0 + timedelta(hours=1, minutes=6, seconds=30)
    path = raw_export(setup, tmp_path, start=start.isoformat(), end=end.isoformat())
    table = pq.read_table(path)
    want = sorted(e["at"] for e in setup.sent if start <= e["at"] < end)
    assert len(want) == 2
    assert sorted(table.column("ts").to_pylist()) == want


def test_an_empty_range_gives_a_valid_empty_file(setup: Setup, tmp_path: Path) -> None:
    path = raw_export(setup, tmp_path, start="2020-01-01", end="2020-01-31")
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == documented_raw_columns()
    con = duckdb.connect()
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone() == (0,)
    names = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]
    assert names == documented_raw_columns()


def test_raw_export_refuses_bad_ranges_and_other_owners(setup: Setup) -> None:
    url = f"/api/v2/sites/{setup.site['id']}/export/raw"
    r = setup.client.get(url, params={"start": "2026-13-01", "end": "2026-12-31"})
    assert r.status_code == 400 and "'start'" in r.json()["error"]
    r = setup.client.get(url, params={"start": "2026-01-01"})
    assert r.status_code == 400 and "'end'" in r.json()["error"]
    r = setup.client.get(url, params={"format": "csv"})
    assert r.status_code == 400 and "parquet" in r.json()["error"]
    assert setup.other.get(url).status_code == 404
    assert httpx.get(setup.server.url + url).status_code == 401
