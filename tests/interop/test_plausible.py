"""Plausible CE's CSV export in and out, against a real ``littlestats serve`` and its DuckDB.

One server for the module: site ``native`` gets generated traffic loaded by the real loader; its
export is imported into ``copy`` (which has no traffic), so every daily number of ``copy`` with
``imported=true`` must equal ``native``'s own; ``fixture`` gets an export written the way Plausible
writes one (``plausible_csv``), checked against sums of the rows the generator wrote.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from interop.plausible import PlausibleFormatError, delete_import, import_zip
from interop.plausible_layout import EXPORT_COLUMNS
from littlestats.config import Settings
from tests.api.conftest import wait_for_warehouse
from tests.generator import TrafficSpec, generate
from tests.interop import plausible_csv
from tests.server import cli, running_server

pytestmark = pytest.mark.slow

TZ = "Europe/Berlin"
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 4)
DAYS = [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
BREAKDOWNS = ("sources", "countries", "regions", "devices", "browsers", "os", "entry-pages", "exit-pages", "pages")


@dataclass
class Env:
    url: str
    data_dir: Path
    token: str
    native: str
    copy: str
    fixture: str
    export: bytes

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def get(self, site: str, path: str, **params: Any) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/api/v2/sites/{site}/{path}", params=params)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("plausible") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            ids = [c.post("/api/v2/sites", json={"domain": f"{name}.example", "timezone": TZ}).json()["id"]
                   for name in ("native", "copy", "fixture")]
            wait_for_warehouse(c, ids[0])
        traffic = generate(TrafficSpec(visitors=150, days=3, sites=(ids[0],), timezones={ids[0]: TZ},
                                       loads=1, late_fraction=0, duplicate_fraction=0, seed=22))
        traffic.write_raw(data_dir / "raw")
        cli(data_dir, "load")
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            r = c.get(f"/api/v2/sites/{ids[0]}/export", params={"start": FIRST.isoformat(), "end": LAST.isoformat()})
        assert r.status_code == 200, r.text
        yield Env(srv.url, data_dir, token, *ids, r.content)


def test_export_is_plausibles_layout(env: Env, tmp_path: Path) -> None:
    archive = zipfile.ZipFile(io.BytesIO(env.export))
    suffix = f"_{FIRST:%Y%m%d}_{LAST:%Y%m%d}.csv"
    assert sorted(archive.namelist()) == sorted(t + suffix for t in EXPORT_COLUMNS)
    for table, columns in EXPORT_COLUMNS.items():
        lines = archive.read(table + suffix).decode().split("\n")
        assert lines[0] == ",".join(f'"{c}"' for c in columns)  # ClickHouse CSVWithNames header
        assert lines[-1] == ""  # LF after the last row
        assert lines[1].startswith('"2026-03-0'), lines[1]  # dates quoted, first day first
    visitors = archive.read("imported_visitors" + suffix).decode().splitlines()[1:]
    # one row per day, numbers bare, and the day's numbers are the API's
    for line in visitors:
        day, v, pv, bounces, visits, duration = line.split(",")
        stats = env.get(env.native, "stats", start=day.strip('"'), end=day.strip('"'))
        assert (int(v), int(pv), int(visits)) == (stats["visitors"], stats["views"], stats["visits"])
        assert round(100 * int(bounces) / int(visits), 1) == stats["bounceRate"]
    assert len(visitors) == len(DAYS)


def test_export_names_the_file_and_refuses_bad_ranges(env: Env) -> None:
    with env.client() as c:
        r = c.get(f"/api/v2/sites/{env.native}/export", params={"start": "2026-03-01", "end": "2026-03-02"})
        assert r.headers["content-type"] == "application/zip"
        assert r.headers["content-disposition"].startswith('attachment; filename="native_example_')
        assert c.get(f"/api/v2/sites/{env.native}/export", params={"start": "March"}).json()["error"] \
            .startswith("invalid parameter 'start'")
        bad = c.get(f"/api/v2/sites/{env.native}/export", params={"start": "2026-03-02", "end": "2026-03-01"})
        assert bad.status_code == 400 and "'end'" in bad.json()["error"]
        assert c.get(f"/api/v2/sites/{env.fixture}/export").status_code == 404  # no data, no range
    assert httpx.get(f"{env.url}/api/v2/sites/{env.native}/export").status_code == 401


def _import_copy(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(env.export)
    result = import_zip(env.copy, path, "roundtrip", settings=env.settings)
    assert result.first == FIRST and result.last <= LAST
    assert sum(result.rows.values()) == sum(len(zipfile.ZipFile(path).read(n).splitlines()) - 1
                                            for n in zipfile.ZipFile(path).namelist())


def _close(a: dict[str, Any], b: dict[str, Any], visits: int) -> None:
    # visit_duration is whole seconds in Plausible's layout: the total is off by at most half a
    # second, and each answer is rounded to 0.1 s
    assert abs(a["avgDuration"] - b["avgDuration"]) <= 0.1 + 0.5 / max(visits, 1) + 1e-9


def test_reimported_export_gives_the_same_daily_numbers(env: Env, tmp_path: Path) -> None:
    _import_copy(env, tmp_path)
    _import_copy(env, tmp_path)  # the same import id again: replaced, not added
    metrics = "visitors,visits,views,bounceRate,avgDuration,events"
    for day in DAYS:
        d = day.isoformat()
        native = env.get(env.native, "stats", start=d, end=d, metrics=metrics)
        copy = env.get(env.copy, "stats", start=d, end=d, metrics=metrics, imported="true")
        assert copy["imported"]["included"] is True and copy["imported"]["approximate"] == []
        for m in ("visitors", "visits", "views", "bounceRate", "events"):
            assert copy[m] == native[m], (d, m)
        _close(copy, native, native["visits"])
        for name in BREAKDOWNS:
            key = {"entry-pages": "entryPages", "exit-pages": "exitPages"}.get(name, name)
            mine = env.get(env.native, name, start=d, end=d, limit=1000)[key]
            if not mine:
                continue
            other = env.get(env.copy, name, start=d, end=d, limit=1000, imported="true")
            assert other["imported"]["included"] is True
            field = next(k for k in mine[0] if k not in ("visitors", "visits", "views", "bounceRate", "avgDuration"))
            got = {r[field]: r for r in other[key]}
            # Plausible's layout has no row for an unknown country, so the visits without a
            # country or region differ
            unknown = {None} if name in ("countries", "regions") else set()
            assert set(got) - unknown == {r[field] for r in mine} - unknown, (d, name)
            for row in mine:
                if row[field] is None and unknown:
                    continue
                twin = got[row[field]]
                for m in ("visits", "views", "bounceRate"):
                    if m in row:
                        assert twin[m] == row[m], (d, name, row[field], m)
                if "visitors" not in other["imported"]["approximate"]:
                    assert twin["visitors"] == row["visitors"], (d, name, row[field])
                if "avgDuration" in row:
                    _close(twin, row, row["visits"])
    series = env.get(env.copy, "timeseries", start=FIRST.isoformat(), end=LAST.isoformat(), imported="true")
    native = env.get(env.native, "timeseries", start=FIRST.isoformat(), end=LAST.isoformat())
    assert series["data"] == native["data"]


def test_the_flag_adds_imported_data_only_when_asked(env: Env, tmp_path: Path) -> None:
    _import_copy(env, tmp_path)
    span = {"start": FIRST.isoformat(), "end": LAST.isoformat()}
    plain = env.get(env.copy, "stats", **span)
    assert plain["visitors"] == 0 and "imported" not in plain
    off = env.get(env.copy, "stats", **span, imported="false")
    assert off["visitors"] == 0
    assert off["imported"] == {"requested": False, "included": False, "available": True,
                               "from": FIRST.isoformat(), "to": off["imported"]["to"]}
    on = env.get(env.copy, "stats", **span, imported="true")
    native = env.get(env.native, "stats", **span)
    assert on["visits"] == native["visits"] and on["views"] == native["views"]
    assert on["bounceRate"] == native["bounceRate"]
    # unique visitors over four days are a sum of daily uniques: said, not hidden
    assert on["imported"]["approximate"] == ["visitors"]
    assert on["visitors"] >= native["visitors"]
    with env.client() as c:
        q = c.post(f"/api/v2/sites/{env.copy}/query", json={
            "metrics": ["visits"], "dimensions": ["device"], "date_range": [FIRST.isoformat(), LAST.isoformat()],
            "imported": True}).json()
        assert q["meta"]["imported"]["included"] is True
        assert sum(r["metrics"][0] for r in q["results"]) == native["visits"]
        bad = c.get(f"/api/v2/sites/{env.copy}/stats", params={"imported": "yes"})
        assert bad.status_code == 400 and "'imported'" in bad.json()["error"]
        bad = c.post(f"/api/v2/sites/{env.copy}/query", json={"metrics": ["visits"], "imported": "yes"})
        assert bad.status_code == 400 and "'imported'" in bad.json()["error"]


def test_what_aggregates_cannot_answer_is_said(env: Env, tmp_path: Path) -> None:
    _import_copy(env, tmp_path)
    span = {"start": FIRST.isoformat(), "end": LAST.isoformat(), "imported": "true"}
    hourly = env.get(env.copy, "timeseries", **span, granularity="hour")
    assert hourly["imported"]["included"] is False and "hourly" in hourly["imported"]["skipReason"]
    languages = env.get(env.copy, "languages", **span)
    assert languages["imported"]["included"] is False and "language" in languages["imported"]["skipReason"]
    mixed = env.get(env.copy, "devices", **span, filter="browser==Firefox")
    assert mixed["imported"]["included"] is False and mixed["devices"] == []
    same_table = env.get(env.copy, "browsers", **span, filter="browser==Firefox")
    assert same_table["imported"]["included"] is True
    assert [r["browser"] for r in same_table["browsers"]] == ["Firefox"]


def test_delete_removes_the_import(env: Env, tmp_path: Path) -> None:
    _import_copy(env, tmp_path)
    path = tmp_path / "export.zip"
    import_zip(env.copy, path, "to-delete", settings=env.settings)
    span = {"start": FIRST.isoformat(), "end": LAST.isoformat(), "imported": "true"}
    before = env.get(env.copy, "stats", **span)["visits"]
    assert delete_import("to-delete", settings=env.settings) > 0
    after = env.get(env.copy, "stats", **span)["visits"]
    native = env.get(env.native, "stats", start=FIRST.isoformat(), end=LAST.isoformat())["visits"]
    assert before == 2 * native and after == native  # "roundtrip" stays
    assert delete_import("to-delete", settings=env.settings) == 0


def test_plausibles_own_files_import_with_their_quirks(env: Env, tmp_path: Path) -> None:
    first = date(2025, 6, 1)
    export = plausible_csv.generate(first, 5, seed=4, old_layout=False)
    result = import_zip(env.fixture, export.write_zip(tmp_path / "plausible.zip"), "fixture-new",
                        settings=env.settings)
    assert result.outside_range == 1  # the row dated after the file name's range
    old = plausible_csv.generate(date(2025, 5, 1), 3, seed=5, old_layout=True)
    import_zip(env.fixture, old.write_zip(tmp_path / "old.zip"), "fixture-old", settings=env.settings)

    days = [r for r in export.rows("imported_visitors") if r["date"] <= "2025-06-05"]
    span = {"start": "2025-06-01", "end": "2025-06-05", "imported": "true"}
    stats = env.get(env.fixture, "stats", **span)
    visits = sum(r["visits"] for r in days)
    assert stats["visits"] == visits
    assert stats["views"] == sum(r["pageviews"] for r in days)
    assert stats["visitors"] == sum(r["visitors"] for r in days)
    assert stats["bounceRate"] == round(100 * sum(r["bounces"] for r in days) / visits, 1)
    assert stats["avgDuration"] == round(sum(r["visit_duration"] for r in days) / visits, 1)
    assert stats["events"] == sum(r["events"] for r in export.rows("imported_custom_events"))

    pages = {r["page"]: r for r in env.get(env.fixture, "pages", **span)["pages"]}
    for page in plausible_csv.PAGES:  # commas and quotes survive the quoting
        rows = [r for r in export.rows("pages") if r["page"] == page]
        assert pages[page]["views"] == sum(r["pageviews"] for r in rows)
    sources = {r["source"]: r for r in env.get(env.fixture, "sources", **span)["sources"]}
    direct = [r for r in export.rows("imported_sources") if r["source"] == ""]
    assert sources["Direct / None"]["visits"] == sum(r["visits"] for r in direct)
    devices = {r["device"]: r for r in env.get(env.fixture, "devices", **span)["devices"]}
    desk = [r for r in export.rows("imported_devices") if r["device"] in ("Desktop", "Laptop")]
    assert devices["desktop"]["visits"] == sum(r["visits"] for r in desk)
    assert None in devices  # an empty device is unknown, like ours
    campaign = env.get(env.fixture, "utm", **span, type="campaign")["utm"]
    assert "spring, 2024" in [r["value"] for r in campaign]
    wider = env.get(env.fixture, "stats", start="2025-06-01", end="2025-06-10", imported="true")
    assert wider["visits"] == visits  # the row dated 2025-06-08 was outside its file's range

    old_span = {"start": "2025-05-01", "end": "2025-05-03", "imported": "true"}
    old_pages = env.get(env.fixture, "pages", **old_span)["pages"]
    assert sum(r["views"] for r in old_pages) == sum(r["pageviews"] for r in old.rows("pages"))
    old_devices = env.get(env.fixture, "devices", **old_span)["devices"]
    assert sum(r["visits"] for r in old_devices) == sum(r["visits"] for r in old.rows("imported_devices"))
    assert sum(r["views"] for r in old_devices) == 0  # the old layout has no pageviews column


def _zip(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, text)
    return path


@pytest.mark.parametrize(("name", "text", "where"), [
    ("imported_visitors_20250101_20250131.csv",
     '"date","visitors","pageviews","bounces","visits","visit_duration"\n"2025-01-01",1,2,0,1,5\n"2025-01-02",x,2,0,1,5\n',
     ["imported_visitors_20250101_20250131.csv", "line 3", "column 'visitors'", "'x'"]),
    ("imported_visitors_20250101_20250131.csv",
     '"date","visitors","pageviews","bounces","visits"\n"2025-01-01",1,2,0,1\n',
     ["imported_visitors_20250101_20250131.csv", "line 1", "column 'visit_duration'"]),
    ("imported_devices_20250101_20250131.csv",
     '"date","device","visitors","visits","visit_duration","bounces"\n"2025-01-01","Desktop",1,1,1\n',
     ["imported_devices_20250101_20250131.csv", "line 2", "5 fields"]),
    ("imported_pages_20250101_20250131.csv",
     '"date","page","visitors","pageviews"\n"01/02/2025","/",1,1\n',
     ["line 2", "column 'date'", "not a date"]),
    ("visits.csv", '"date"\n', ["visits.csv", "not a file of Plausible's CSV export"]),
])
def test_malformed_files_are_refused_naming_file_line_and_column(
        env: Env, tmp_path: Path, name: str, text: str, where: list[str]) -> None:
    before = env.get(env.fixture, "stats", start="2025-01-01", end="2025-01-31", imported="true")["visits"]
    with pytest.raises(PlausibleFormatError) as exc:
        import_zip(env.fixture, _zip(tmp_path, name, text), "bad", settings=env.settings)
    for part in where:
        assert part in str(exc.value)
    assert env.get(env.fixture, "stats", start="2025-01-01", end="2025-01-31", imported="true")["visits"] == before


def test_an_import_never_doubles_native_days(env: Env, tmp_path: Path) -> None:
    # the native site's own export imported into it: every imported day has native data
    path = tmp_path / "export.zip"
    path.write_bytes(env.export)
    import_zip(env.native, path, "onto-native", settings=env.settings)
    try:
        span = {"start": FIRST.isoformat(), "end": LAST.isoformat()}
        native = env.get(env.native, "stats", **span)
        merged = env.get(env.native, "stats", **span, imported="true")
        assert {k: merged[k] for k in ("visitors", "visits", "views")} == \
            {k: native[k] for k in ("visitors", "visits", "views")}
        assert merged["imported"]["included"] is False and "native" in merged["imported"]["skipReason"]
    finally:
        assert delete_import("onto-native", settings=env.settings) > 0


def test_deleting_the_site_removes_its_imports(env: Env, tmp_path: Path) -> None:
    from warehouse.client import WarehouseClient

    with env.client() as c:
        site = c.post("/api/v2/sites", json={"domain": "gone.example", "timezone": TZ}).json()["id"]
    path = tmp_path / "export.zip"
    path.write_bytes(env.export)
    import_zip(site, path, "gone", settings=env.settings)
    count = "SELECT count(*) FROM imported_visitors WHERE site_id = ?"
    wh = WarehouseClient(env.settings)
    assert wh.query_sync(count, [site]).scalar() == len(DAYS)
    with env.client() as c:
        assert c.delete(f"/api/v2/sites/{site}").status_code == 200
    assert wh.query_sync(count, [site]).scalar() == 0


def test_the_import_command_brings_a_plausible_export_in_and_deletes_it(env: Env, tmp_path: Path) -> None:
    """`littlestats import plausible FILE --site`, `imports list` and `imports delete`: the same
    framework as the raw-event sources (idempotent by the file's content)."""
    with env.client() as c:
        site = c.post("/api/v2/sites", json={"domain": "cli-import.example", "timezone": TZ}).json()
    path = tmp_path / "export.zip"
    path.write_bytes(env.export)
    out = cli(env.data_dir, "import", "plausible", str(path), "--site", site["id"])
    assert "imported" in out, out
    again = cli(env.data_dir, "import", "plausible", str(path), "--site", site["id"])
    assert "already imported" in again, again
    span = {"start": FIRST.isoformat(), "end": LAST.isoformat()}
    native = env.get(env.native, "stats", **span)
    assert env.get(site["id"], "stats", **span, imported="true")["visits"] == native["visits"]
    listed = orjson.loads(cli(env.data_dir, "imports", "list", "--site", site["id"]))["imports"]
    assert [(r["source"], r["status"]) for r in listed] == [("plausible", "done")]
    cli(env.data_dir, "imports", "delete", listed[0]["id"])
    assert env.get(site["id"], "stats", **span, imported="true")["visits"] == 0
    bad = _zip(tmp_path, "imported_visitors_20260301_20260304.csv", '"date","visitors"\n"2026-03-01","many"\n')
    failed = subprocess.run([sys.executable, "-m", "littlestats", "import", "plausible", str(bad), "--site",
                             site["id"], "--data-dir", str(env.data_dir)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "imported_visitors" in failed.stderr and "line 1, column 'pageviews'" in failed.stderr, failed.stderr


def test_the_export_command_writes_what_the_api_sends(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    said = cli(env.data_dir, "export", "--site", env.native, "--start", FIRST.isoformat(), "--end", LAST.isoformat(),
               "--out", str(out))
    assert "daily rows" in said, said
    ours, api = zipfile.ZipFile(out), zipfile.ZipFile(io.BytesIO(env.export))
    assert sorted(ours.namelist()) == sorted(api.namelist())
    for name in api.namelist():
        assert ours.read(name) == api.read(name), name
