"""Upgrades: a data directory written by an earlier version opens with this one.

``tests/fixtures/datadir-v1`` was made by ``tests/fixtures/make_datadir.py`` with the code of the
first schema (control plane version 1 without ``users.password_hash``, a warehouse from before
versions were recorded). The tests open copies of it with the current code.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from littlestats import migrations as control_migrations
from littlestats.controlplane import ControlPlane
from tests.server import running_server
from warehouse import migrations as warehouse_migrations
from warehouse.migrations import Migration
from warehouse.query.funnels import parse_funnel
from warehouse.tables import EVENTS, SESSIONS

FIXTURE = Path(__file__).parent / "fixtures" / "datadir-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def old_dir(tmp_path: Path) -> Path:
    """A copy of the fixture data directory (tests must not change the committed one)."""
    target = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", target)
    return target


def control_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def user_columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(users)")]


def warehouse_versions(path: Path) -> list[int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [row[0] for row in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    finally:
        con.close()


def test_fixture_is_the_first_schema(old_dir: Path) -> None:
    # What the rest of this file upgrades from: if this fails, the fixture was regenerated.
    assert control_version(old_dir / "control.sqlite3") == 1 == EXPECTED["controlVersion"]
    assert "password_hash" not in user_columns(old_dir / "control.sqlite3")
    con = duckdb.connect(str(old_dir / "warehouse.duckdb"), read_only=True)
    try:
        assert warehouse_migrations.schema_version(con) == 1
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    assert "schema_version" not in tables and "events" in tables


@pytest.mark.slow
def test_serve_opens_the_old_data_directory_migrated_with_its_numbers(old_dir: Path) -> None:
    token = (old_dir / "admin-token").read_text().strip()
    day = EXPECTED["date"]
    with running_server(old_dir, 1) as server:
        url = f"{server.url}/api/v2/sites/{EXPECTED['site']}/stats"
        deadline = time.monotonic() + 60
        while True:
            r = httpx.get(url, params={"start": day, "end": day},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        stats: dict[str, Any] = r.json()
        assert {k: stats[k] for k in EXPECTED["stats"]} == EXPECTED["stats"]
        log = server.log()
    assert control_version(old_dir / "control.sqlite3") == control_migrations.LATEST
    assert "password_hash" in user_columns(old_dir / "control.sqlite3")
    assert "migrated to schema version 2 (users.password_hash" in log
    assert "migrated to schema version 3 (dashboard sessions" in log
    assert warehouse_versions(old_dir / "warehouse.duckdb") == [m.version for m in warehouse_migrations.MIGRATIONS]
    # Columns added by migrations land where the declarations put them (the loader inserts rows
    # by position).
    con = duckdb.connect(str(old_dir / "warehouse.duckdb"), read_only=True)
    try:
        for table in (EVENTS, SESSIONS):
            got = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns"
                                             " WHERE table_name = ? ORDER BY ordinal_position", [table.name]).fetchall()]
            assert tuple(got) == table.column_names, table.name
    finally:
        con.close()


def test_control_plane_migration_keeps_the_rows_and_runs_once(old_dir: Path) -> None:
    path = old_dir / "control.sqlite3"
    store = ControlPlane(path)
    try:
        users = store.list_users()
        assert [u.email for u in users] == ["admin@localhost"]
        assert store.get_site(EXPECTED["domainKey"]) is not None
        token = (old_dir / "admin-token").read_text().strip()
        assert store.find_token(token) is not None
    finally:
        store.close()
    assert control_version(path) == control_migrations.LATEST
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT password_hash FROM users").fetchall() == [(None,)]
        db.execute("BEGIN IMMEDIATE")
        assert control_migrations.migrate(db) == []  # already there: nothing to do
        db.execute("COMMIT")


def test_an_upgraded_control_plane_saves_segments(old_dir: Path) -> None:
    store = ControlPlane(old_dir / "control.sqlite3")
    try:
        site = store.get_site(EXPECTED["domainKey"])
        assert site is not None
        saved = store.create_segment(site.id, "Germany", [["is", "country", ["DE"]]], None)
        assert saved is not None and store.find_segment(site.id, "Germany") == saved
        assert store.create_segment(site.id, "Germany", [], None) is None  # names are unique per site
    finally:
        store.close()


def test_an_upgraded_control_plane_keeps_funnels_of_its_old_sites(old_dir: Path) -> None:
    store = ControlPlane(old_dir / "control.sqlite3")
    try:
        site = store.get_site(EXPECTED["domainKey"])
        assert site is not None
        funnel = parse_funnel({"steps": [{"page": "/"}, {"event": "Signup"}], "per": "visitor", "days": 3})
        saved = store.create_funnel(site.id, "Signup", funnel, None)
        assert [f.funnel for f in store.list_funnels(site.id)] == [funnel] and saved.name == "Signup"
        store.delete_site(site.id)  # a site's funnels go with it
        assert store.get_funnel(site.id, saved.id) is None
    finally:
        store.close()


def test_a_control_plane_from_a_newer_version_is_refused(old_dir: Path) -> None:
    path = old_dir / "control.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {control_migrations.LATEST + 1}")
    with pytest.raises(control_migrations.SchemaTooNew, match="written by a newer release"):
        ControlPlane(path)
    assert control_version(path) == control_migrations.LATEST + 1


def test_serve_refuses_a_warehouse_from_a_newer_version_and_says_why(old_dir: Path) -> None:
    con = duckdb.connect(str(old_dir / "warehouse.duckdb"))
    warehouse_migrations.migrate(con)
    con.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())",
                [warehouse_migrations.LATEST + 1])
    con.close()
    out = subprocess.run([sys.executable, "-m", "littlestats", "serve", "--data-dir", str(old_dir),
                          "--port", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"warehouse schema version {warehouse_migrations.LATEST + 1}" in out.stderr
    assert "Upgrade LittleStats" in out.stderr


def test_a_new_warehouse_migration_runs_in_order_once(old_dir: Path) -> None:
    path = old_dir / "warehouse.duckdb"
    released = [m.version for m in warehouse_migrations.MIGRATIONS]
    step = warehouse_migrations.LATEST + 1
    steps = (*warehouse_migrations.MIGRATIONS,
             Migration(step, "loaded_files.note", ("ALTER TABLE loaded_files ADD COLUMN note VARCHAR",
                                                   "UPDATE loaded_files SET note = 'before the new step'")))
    con = duckdb.connect(str(path))
    try:
        files = con.execute("SELECT count(*) FROM loaded_files").fetchone()[0]  # type: ignore[index]
        assert files == 1
        assert [s.version for s in warehouse_migrations.migrate(con, path, steps)] == [*released[1:], step]
        assert con.execute("SELECT note FROM loaded_files").fetchall() == [("before the new step",)]
        assert con.execute("SELECT count(*) FROM events").fetchone() == (4,)
        assert warehouse_migrations.migrate(con, path, steps) == []
        with pytest.raises(warehouse_migrations.WarehouseTooNew):
            warehouse_migrations.migrate(con, path)  # this code's list stops before the new step
    finally:
        con.close()
    assert warehouse_versions(path) == [*released, step]


def test_a_failing_warehouse_migration_leaves_the_previous_version(old_dir: Path) -> None:
    path = old_dir / "warehouse.duckdb"
    steps = (*warehouse_migrations.MIGRATIONS,
             Migration(warehouse_migrations.LATEST + 1, "broken",
                       ("ALTER TABLE loaded_files ADD COLUMN note VARCHAR",
                        "ALTER TABLE no_such_table ADD COLUMN x INTEGER")))
    con = duckdb.connect(str(path))
    try:
        with pytest.raises(duckdb.CatalogException):
            warehouse_migrations.migrate(con, path, steps)
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'loaded_files'").fetchall()]
        assert "note" not in columns
        assert warehouse_migrations.schema_version(con) == warehouse_migrations.LATEST
    finally:
        con.close()
