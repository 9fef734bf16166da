"""Privacy at rest, against a real ``littlestats serve`` (two workers) and its data directory.

* Personal data in URLs (an e-mail address, a token) never reaches any file: not the write-ahead
  log, not Parquet, not DuckDB, not the control plane — while the parameters the product uses
  (``utm_*``, and the site's ``allowedQueryParams``) are kept.
* The data directory is the user's alone: every directory 700, every file 600, including what an
  earlier run left looser (fixed, and logged, at start).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
EMAIL = "someone.private@example.com"
TOKEN = "RESETTOKEN8d1f3c55"
# Every form the secrets could take in a file: as sent, URL-encoded, and either in UTF-16 (SQLite
# and DuckDB store UTF-8; Parquet is read back decoded below, since zstd hides its bytes).
NEEDLES = [EMAIL.encode(), b"someone.private%40example.com", TOKEN.encode(), "someone.private".encode("utf-16-le")]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def server(data_dir: Path) -> Iterator[LiveServer]:
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        yield srv


def files_under(root: Path) -> list[Path]:
    return [Path(d) / name for d, _, names in os.walk(root) for name in names]


def files_holding_secrets(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files_under(root):
        try:
            data = path.read_bytes()
        except (FileNotFoundError, OSError):
            continue  # a socket, or removed meanwhile
        hits = [n.decode("latin-1") for n in NEEDLES if n in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def post_beacons(server: LiveServer, site: dict, n: int) -> None:
    url = (f"https://shop.example/welcome?email={EMAIL.replace('@', '%40')}&token={TOKEN}"
           f"&utm_source=newsletter&page=2&Session_Id=abc")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(n):
            referrer = f"https://user:pw@mail.example.net/inbox/{i}?email={EMAIL}&token={TOKEN}&utm_medium=mail#{TOKEN}"
            r = client.post(f"/api/v2/track/{site['domainKey']}", json={
                "type": "pageview", "website": site["domainKey"], "url": url, "referrer": referrer,
                "visitorId": f"v{i}", "userAgent": FIREFOX})
            assert r.status_code == 200, r.text
        r = client.post(f"/api/v2/track/{site['domainKey']}", json={"siteId": site["domainKey"], "events": [
            {"type": "pageview", "url": f"/app#/reset?token={TOKEN}", "visitorId": "hash-route", "userAgent": FIREFOX},
            {"type": "event", "name": "Signup", "url": f"/signup?email={EMAIL}", "visitorId": "v0", "userAgent": FIREFOX},
        ]})
        assert r.json()["accepted"] == 2


def load_all(server: LiveServer, admin: httpx.Client, site_id: str, events: int) -> None:
    wait_for_warehouse(admin, site_id)  # else `load` finds the DuckDB file held by the starting one
    deadline = time.monotonic() + 60
    while admin.get(f"/api/v2/health/{site_id}").json().get("events") != events:
        assert time.monotonic() < deadline, "the events were not loaded"
        time.sleep(0.5)
        cli(server.data_dir, "load")


def test_personal_data_in_urls_never_reaches_disk(server: LiveServer) -> None:
    token = (server.data_dir / "admin-token").read_text().strip()
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    site = admin.post("/api/v2/sites", json={"domain": "shop.example"}).json()
    r = admin.patch(f"/api/v2/sites/{site['id']}", json={"allowedQueryParams": ["page"]})
    assert r.status_code == 200 and r.json()["allowedQueryParams"] == ["page"]

    post_beacons(server, site, 5)
    # In the write-ahead log (the events are acknowledged only once they are written there).
    assert files_holding_secrets(server.data_dir) == {}
    load_all(server, admin, site["id"], 7)
    assert files_holding_secrets(server.data_dir) == {}
    server.stop()
    assert files_holding_secrets(server.data_dir) == {}

    # Parquet is compressed: read every value back.
    parquet = [p for p in files_under(server.data_dir / "raw") if p.suffix == ".parquet"]
    assert parquet
    text = repr([pq.read_table(p).to_pylist() for p in parquet])
    assert "someone.private" not in text and TOKEN not in text
    assert "utm_source=newsletter&page=2" in text  # what the product uses is kept

    # DuckDB (compressed too): every text column of every table.
    con = duckdb.connect(str(server.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name FROM information_schema.columns"
                              " WHERE table_schema = 'main' AND data_type = 'VARCHAR'").fetchall()
        assert ("events", "query") in columns and ("events", "referrer") in columns
        for table, column in columns:
            hits = con.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" ILIKE ? OR "{column}" LIKE ?',  # noqa: S608
                               ["%someone.private%", f"%{TOKEN}%"]).fetchone()[0]
            assert hits == 0, f"{table}.{column}"
        rows = con.execute("SELECT pathname, query, referrer, utm_source, utm_medium FROM events"
                           " WHERE type = 'pageview' ORDER BY pathname, referrer").fetchall()
    finally:
        con.close()
    assert rows[0] == ("/app/#/reset", None, None, None, None)
    assert rows[1:] == [("/welcome", "utm_source=newsletter&page=2",
                         f"https://mail.example.net/inbox/{n}?utm_medium=mail", "newsletter", None)
                        for n in range(5)]


def test_the_data_directory_is_private(data_dir: Path) -> None:
    # What an earlier version left: a readable directory, config file and database.
    (data_dir / "littlestats.toml").write_text('log_level = "info"\n')
    os.chmod(data_dir / "littlestats.toml", 0o644)
    (data_dir / "wal").mkdir(mode=0o755)
    os.chmod(data_dir / "wal", 0o755)
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as server:
        token = (data_dir / "admin-token").read_text().strip()
        admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        site = admin.post("/api/v2/sites", json={"domain": "shop.example"}).json()
        assert admin.post(f"/api/v2/realtime/{site['id']}/token").status_code == 200  # the stream secret
        post_beacons(server, site, 3)
        load_all(server, admin, site["id"], 5)
        assert "made " in server.log() and "private" in server.log()
        loose_while_running = loose_entries(data_dir)
    assert loose_while_running == []
    assert loose_entries(data_dir) == []
    names = {p.name for p in files_under(data_dir)}
    assert {"control.sqlite3", "warehouse.duckdb", "admin-token", "littlestats.toml"} <= names
    assert any(n.endswith(".parquet") for n in names)


def loose_entries(root: Path) -> list[str]:
    """Entries not private: directories other than 700, regular files other than 600, anything
    else (sockets) with a group or other permission."""
    loose = []
    for path in [root, *(Path(d) / n for d, dirs, files in os.walk(root) for n in (*dirs, *files))]:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        bits = stat.S_IMODE(mode)
        if (stat.S_ISDIR(mode) and bits != 0o700) or (stat.S_ISREG(mode) and bits != 0o600) or bits & 0o077:
            loose.append(f"{path.relative_to(root)} {bits:o}")
    return loose
