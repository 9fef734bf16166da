"""Each source end to end on a real ``littlestats serve``: the file is imported with the CLI while
the server runs, loaded by its warehouse process, and the API's numbers equal the ones counted
from the generated history (``tests.interop.formats``). Then: importing again is a no-op, deleting
removes every trace, events on days with live traffic are skipped, and a kill -9 mid-import
resumes without double counting.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.interop import formats as F
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

RANGE = {"start": "2025-03-01", "end": "2025-03-03"}


@dataclass
class Env:
    server: LiveServer
    api: httpx.Client
    data_dir: Path
    files: Path

    def site(self, domain: str) -> dict[str, Any]:
        r = self.api.post("/api/v2/sites", json={"domain": domain})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def run_import(self, source: str, path: Path, site: dict[str, Any], *extra: str) -> str:
        return cli(self.data_dir, "import", source, str(path), "--site", site["id"], *extra)

    def numbers(self, site: dict[str, Any]) -> dict[str, Any]:
        stats = self.api.get(f"/api/v2/sites/{site['id']}/stats", params=RANGE).json()
        pages = self.api.get(f"/api/v2/sites/{site['id']}/pages", params={**RANGE, "limit": 100}).json()
        events = self.api.get(f"/api/v2/sites/{site['id']}/events", params=RANGE).json()
        return {
            "views": stats["views"], "visitors": stats["visitors"],
            "pages": {p["page"]: p["views"] for p in pages["pages"]},
            "events": {n["name"]: n["events"] for n in events["names"]},
        }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("imports")
    data_dir = root / "data"
    data_dir.mkdir()
    files = root / "files"
    files.mkdir()
    with running_server(data_dir, 1, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as api:
            yield Env(srv, api, data_dir, files)


def _want(hits: list[F.Hit], daily: bool = False) -> dict[str, Any]:
    e = F.expected(hits, daily_visitors=daily)
    return {"views": e["views"], "visitors": e["visitors"], "pages": dict(e["pages"]),
            "events": dict(e["events"])}


Writer = Callable[[Path, list[F.Hit], str], None]
CASES: dict[str, tuple[str, str, Writer, bool, bool]] = {
    # name: (source, file name, writer, duplicates in the data, visitors by day (IP + UA))
    "v2-sqlite": ("littlestats-v2", "d1.sqlite", lambda p, h, d: F.write_v2(p, h, d), True, False),
    "v2-dump": ("littlestats-v2", "d1-export.sql", lambda p, h, d: F.write_v2(p, h, d, dump=True), True, False),
    "v1": ("littlestats-v1", "v1.sqlite", F.write_v1, True, True),
    "goatcounter": ("goatcounter", "goatcounter-export.csv", lambda p, h, d: F.write_goatcounter(p, h), False, False),
    "umami": ("umami", "website_event.csv", F.write_umami, False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_source_gives_the_numbers_of_its_history(env: Env, case: str) -> None:
    source, name, write, duplicates, daily = CASES[case]
    domain = f"{case}.example"
    site = env.site(domain)
    hits = F.history(duplicates=duplicates, seed=len(case))
    path = env.files / f"{case}-{name}"
    write(path, hits, domain)
    out = env.run_import(source, path, site)
    assert "imported" in out, out
    assert env.numbers(site) == _want(hits, daily)
    record = next(r for r in env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"])
    assert record["status"] == "done" and record["progress"] == 1.0
    if duplicates:  # the original's racing flushes: dropped and reported
        assert record["skipped"]["duplicates"] == sum(h.duplicate for h in hits) > 0
    if source in ("littlestats-v1", "goatcounter"):
        assert record["skipped"]["bots"] == sum(h.bot for h in hits) > 0
    if source == "littlestats-v1":  # raw IPs and user agents are used, never stored
        # the facts are loaded from these files only: every value of every row, decoded
        stored = [repr(pq.ParquetFile(p).read().to_pylist())
                  for p in (env.data_dir / "raw" / f"site_id={site['id']}").rglob("*.parquet")]
        assert stored and not [t for t in stored if "198.51.100." in t or "Gecko/20100101" in t]
        assert any("Firefox" in t for t in stored)  # what the user agent told is kept, parsed
    if source == "littlestats-v2":  # heartbeats and exits are no views, whatever the old tables say
        kinds = {h.kind for h in F.counted(hits)}
        assert {"heartbeat", "exit"} <= kinds


def test_importing_the_same_file_twice_counts_it_once_and_says_so(env: Env) -> None:
    site = env.site("twice.example")
    hits = F.history(visitors=10, seed=3)
    path = env.files / "twice.csv"
    F.write_goatcounter(path, hits)
    env.run_import("goatcounter", path, site)
    again = env.run_import("goatcounter", path, site)
    assert "already imported" in again and "nothing to do" in again
    assert env.numbers(site) == _want(hits)
    assert len(env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"]) == 1


def test_delete_removes_the_events_their_visits_and_raw_files(env: Env) -> None:
    site, control = env.site("delete.example"), env.site("control.example")
    kept_hits = F.history(visitors=8, seed=11)
    # the same visitors a few minutes later: their events join the kept import's visits, so
    # deleting them must split those visits again
    gone_hits = [F.Hit(h.visitor, h.ip, h.ua, h.ts + timedelta(minutes=3), h.kind, "/later", h.referrer,
                       h.name, bot=h.bot) for h in kept_hits]
    kept, gone = env.files / "kept.csv", env.files / "gone.csv"
    F.write_goatcounter(kept, kept_hits)
    F.write_goatcounter(gone, gone_hits)
    env.run_import("goatcounter", kept, control)
    alone = env.api.get(f"/api/v2/sites/{control['id']}/stats", params=RANGE).json()
    env.run_import("goatcounter", kept, site)
    env.run_import("goatcounter", gone, site)
    both = env.numbers(site)
    assert both["views"] == 2 * _want(kept_hits)["views"]
    merged = env.api.get(f"/api/v2/sites/{site['id']}/stats", params=RANGE).json()
    assert merged["visits"] == alone["visits"]  # one visit each, not two
    records = env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"]
    second = next(r for r in records if r["fileName"] == "gone.csv")
    out = cli(env.data_dir, "imports", "delete", second["id"])
    assert f"deleted import {second['id']}" in out
    assert env.numbers(site) == _want(kept_hits)
    after = env.api.get(f"/api/v2/sites/{site['id']}/stats", params=RANGE).json()
    for metric in ("views", "visits", "visitors", "bounceRate", "avgDuration"):
        assert after[metric] == alone[metric], metric  # as if it had never been imported
    raw = env.data_dir / "raw" / f"site_id={site['id']}"
    assert not [p for p in raw.rglob("*.parquet") if second["id"] in p.name]
    # loaded hours were merged into part-hourly.parquet files (warehouse.compact): rewritten
    ids = [i for path in sorted(raw.rglob("*.parquet"))
           for i in pq.ParquetFile(path).read(columns=["event_id"]).column("event_id").to_pylist()]
    assert ids and not [i for i in ids if i.startswith(second["id"])]
    assert len(ids) == len(set(ids)) == len(F.counted([h for h in kept_hits if h.kind in ("pageview", "event")]))
    listed = [r["id"] for r in env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"]]
    assert second["id"] not in listed
    # and it can be imported again, counting once
    env.run_import("goatcounter", gone, site)
    assert env.numbers(site) == both


def test_events_on_days_with_live_traffic_are_skipped_and_counted(env: Env) -> None:
    site = env.site("overlap.example")
    now = datetime.now(UTC)
    r = httpx.post(f"{env.server.url}/api/v2/track/{site['domainKey']}",
                   json={"type": "pageview", "website": site["domainKey"], "url": "/live",
                         "userAgent": F.FIREFOX}, headers={"User-Agent": F.FIREFOX})
    assert r.status_code == 200, r.text
    # an export whose last rows are today's: the tracker already counted those
    hits = F.history(visitors=6, seed=5)
    today = [F.Hit("late", "198.51.100.99", F.FIREFOX, now.replace(hour=0, minute=1), "pageview", "/today")]
    path = env.files / "overlap.csv"
    F.write_goatcounter(path, hits + today)
    out = env.run_import("goatcounter", path, site)
    assert "1 overlap with live" in out, out
    record = env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"][0]
    assert record["skipped"]["overlap_with_live"] == 1
    assert record["cutoff"].startswith(now.date().isoformat())
    assert env.numbers(site) == _want(hits)
    day = now.date().isoformat()
    live = env.api.get(f"/api/v2/sites/{site['id']}/pages", params={"start": day, "end": day}).json()
    assert {p["page"]: p["views"] for p in live["pages"]} == {"/live": 1}


def _batches_done(data_dir: Path, site_id: str) -> int:
    with sqlite3.connect(data_dir / "control.sqlite3", timeout=30) as db:
        row = db.execute("SELECT batches_done FROM imports WHERE site_id = ?", (site_id,)).fetchone()
    return int(row[0]) if row else 0


def test_an_import_killed_midway_resumes_without_double_counting(env: Env) -> None:
    site = env.site("resume.example")
    hits = F.history(visitors=150, seed=9, duplicates=True)
    path = env.files / "resume.sqlite"
    F.write_v2(path, hits, "resume.example")
    args = [sys.executable, "-m", "littlestats", "import", "littlestats-v2", str(path), "--site",
            site["id"], "--batch-events", "50", "--data-dir", str(env.data_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _batches_done(env.data_dir, site["id"]) < 3:
        assert proc.poll() is None, "the import finished before it could be killed: use more rows"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    record = env.api.get(f"/api/v2/sites/{site['id']}/imports").json()["imports"][0]
    assert record["status"] == "running" and 0 < record["progress"] < 1
    cli(env.data_dir, "load")  # what the killed import wrote is loaded meanwhile
    out = env.run_import("littlestats-v2", path, site)
    assert "imported" in out
    assert env.numbers(site) == _want(hits)


def _wait_done(env: Env, site: dict[str, Any], ident: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = env.api.get(f"/api/v2/sites/{site['id']}/imports/{ident}").json()
        if record["status"] in ("done", "failed") or time.monotonic() > deadline:
            return record
        time.sleep(0.2)


def test_api_upload_raw_body_then_again_then_delete(env: Env) -> None:
    site = env.site("upload.example")
    hits = F.history(visitors=150, seed=21)
    path = env.files / "upload.csv"
    F.write_goatcounter(path, hits)
    body = path.read_bytes()
    assert len(body) > 64 * 1024  # above every other route's body limit
    url = f"/api/v2/sites/{site['id']}/imports"
    r = env.api.post(url, params={"source": "goatcounter", "filename": "export.csv"}, content=body)
    assert r.status_code == 202, r.text
    ident = r.json()["import"]["id"]
    record = _wait_done(env, site, ident)
    assert record["status"] == "done", record
    assert record["fileName"] == "export.csv" and record["eventsWritten"] > 0
    cli(env.data_dir, "load")
    assert env.numbers(site) == _want(hits)
    again = env.api.post(url, params={"source": "goatcounter"}, content=body)
    assert again.status_code == 200 and again.json()["alreadyImported"] is True
    assert "nothing to do" in again.json()["message"]
    assert not list((env.data_dir / "imports" / "uploads").glob("*"))  # uploads are not kept
    gone = env.api.delete(f"{url}/{ident}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert env.numbers(site)["views"] == 0
    assert env.api.get(f"{url}/{ident}").status_code == 404


def test_api_upload_multipart(env: Env) -> None:
    site = env.site("multipart.example")
    hits = F.history(visitors=12, seed=22)
    path = env.files / "website_event.csv"
    F.write_umami(path, hits, "multipart.example")
    r = env.api.post(f"/api/v2/sites/{site['id']}/imports", data={"source": "umami"},
                     files={"file": ("website_event.csv", path.read_bytes(), "text/csv")})
    assert r.status_code == 202, r.text
    record = _wait_done(env, site, r.json()["import"]["id"])
    assert record["status"] == "done" and record["fileName"] == "website_event.csv"
    cli(env.data_dir, "load")
    assert env.numbers(site) == _want(hits)


def test_api_refuses_bad_uploads_with_a_clear_4xx(env: Env) -> None:
    site = env.site("refuse.example")
    url = f"/api/v2/sites/{site['id']}/imports"
    r = env.api.post(url, content=b"2,Path\n")
    assert r.status_code == 400 and "'source'" in r.json()["error"]
    r = env.api.post(url, params={"source": "matomo"}, content=b"x")
    assert r.status_code == 400 and "matomo" in r.json()["error"]
    r = env.api.post(url, params={"source": "umami"}, content=b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]
    assert env.api.get(f"{url}/imp0000").status_code == 404


def test_a_malformed_upload_fails_naming_file_line_and_column(env: Env) -> None:
    site = env.site("malformed.example")
    hits = F.history(visitors=4, seed=23)
    rows = F.goat_rows(hits)
    human = [i for i, row in enumerate(rows) if row[7] == "0"]
    rows[human[2]][-1] = "yesterday-ish"  # the Date of the 3rd human row (bots are skipped unread)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(F.GOAT_HEADER)
    writer.writerows(rows)
    r = env.api.post(f"/api/v2/sites/{site['id']}/imports",
                     params={"source": "goatcounter", "filename": "bad.csv"}, content=buf.getvalue())
    assert r.status_code == 202, r.text
    record = _wait_done(env, site, r.json()["import"]["id"])
    assert record["status"] == "failed"
    # the line the row starts on (a quoted title before it spans two lines)
    reader = csv.reader(io.StringIO(buf.getvalue()))
    start = 1
    for row in reader:
        if "yesterday-ish" in row:
            line = start
        start = reader.line_num + 1
    assert record["message"] == f"bad.csv, line {line}, column Date: 'yesterday-ish' is not an RFC 3339 time"
