"""Erasing a visitor and a user through the API of a real ``littlestats serve``.

Two sites get the same traffic from one generator (``tests.generator``, as raw Parquet, plus live
beacons through the tracker endpoint), except that ``full`` also has two people: one known by the
tracker's visitor id, one identified as a user on two devices (one only through live beacons).
Some of their live beacons are still in the workers' write-ahead log when the erasure runs. After
``DELETE …/visitors/{id}`` and ``DELETE …/users/{id}`` every number the API answers for ``full``
equals ``without``'s, and no Parquet file, WAL segment or warehouse column holds them any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from api.routes import BREAKDOWNS
from ingest.identity import tracker_visitor_key
from ingest.wal import read_records
from littlestats.config import load_settings
from littlestats.controlplane import ControlPlane
from tests.api.conftest import wait_for_warehouse
from tests.generator import TrafficSpec, _write, generate
from tests.server import LiveServer, cli, running_server
from warehouse.client import WarehouseClient

pytestmark = pytest.mark.slow

VISITOR_ID = "person-ls-vid"
LAPTOP_ID = "laptop-ls-vid"  # the identified user's second device: seen only live
USER = "user-42"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@dataclass
class Erased:
    server: LiveServer
    admin: httpx.Client
    full: dict[str, Any]
    without: dict[str, Any]
    keys: set[int]  # every visitor key of the two people on `full`
    person: int  # the key of the one erased by visitor id
    by_visitor: httpx.Response
    by_user: httpx.Response
    expected_rows: tuple[int, int]  # raw rows of each person (generated + posted)
    today: str


def batch(site: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"siteId": site["domainKey"], "events": [
        {"website": site["domainKey"], "userAgent": FIREFOX, **e} for e in events]}


def post(url: str, site: dict[str, Any], events: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{url}/api/v2/track/{site['domainKey']}", json=batch(site, events), timeout=30)
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


def load(data_dir: Path) -> None:
    """What ``littlestats load`` asks the running warehouse process (without a CLI's start-up)."""
    WarehouseClient(load_settings({"data_dir": data_dir}, environ={})).call({"op": "load", "rotate": True}, 300)


def live_events(visitor_id: str, base_ms: int, pages: int) -> list[dict[str, Any]]:
    """A visit of ``pages`` pageviews a minute apart (client ``ts``, so both sites get the same)."""
    return [{"type": "pageview", "url": f"/live/{i % 3}", "visitorId": visitor_id, "ts": base_ms + i * 60_000}
            for i in range(pages)]


@pytest.fixture(scope="module")
def erased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Erased]:
    data_dir = tmp_path_factory.mktemp("erase-api") / "data"
    data_dir.mkdir()
    # segments rotate only on request: the last beacons are in the WAL when the erasure starts
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "3600"}) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        full = admin.post("/api/v2/sites", json={"domain": "full.example"}).json()
        without = admin.post("/api/v2/sites", json={"domain": "without.example"}).json()
        wait_for_warehouse(admin, full["id"])
        for site in (full, without):  # goals, so conversions are compared too
            admin.post(f"/api/v2/sites/{site['id']}/goals", json={"kind": "event", "value": "Signup"})
            admin.post(f"/api/v2/sites/{site['id']}/goals", json={"kind": "page", "value": "/pricing"})
        control = ControlPlane(load_settings({"data_dir": data_dir}, environ={}).control_db)
        secret = control.get_site(full["id"]).secret
        control.close()

        # Generated history: the busiest visitor is the person (their key as the tracker's id
        # makes it), the next one identifies as the user on their first event.
        traffic = generate(TrafficSpec(visitors=80, days=2, sites=(full["id"],), timezones={full["id"]: "UTC"},
                                       duplicate_fraction=0.0, loads=1, seed=5))
        events = traffic.events
        busiest = (events.group_by("visitor_key").agg(pl.len().alias("n")).sort("n", "visitor_key", descending=True)
                   ["visitor_key"].to_list())
        person, phone = tracker_visitor_key(secret, VISITOR_ID), busiest[1]
        first_of_phone = events.filter(pl.col("visitor_key") == phone)["event_id"].min()
        events = events.with_columns(
            pl.when(pl.col("visitor_key") == busiest[0]).then(pl.lit(person, pl.UInt64))
            .otherwise(pl.col("visitor_key")).alias("visitor_key"),
            pl.when(pl.col("event_id") == first_of_phone).then(pl.lit(USER)).otherwise(pl.col("user_id"))
            .alias("user_id"))
        others = events.filter(~pl.col("visitor_key").is_in([person, phone]))
        _write(events, data_dir / "raw", "gen")
        _write(others.with_columns(pl.lit(without["id"]).alias("site_id"), pl.col("event_id") + "w"),
               data_dir / "raw", "gen")

        # Live traffic, the same on both sites except for the two people.
        now_ms = int(time.time() * 1000)
        shared = live_events("someone-else", now_ms - 3 * 3_600_000, 4)
        for site in (full, without):
            post(srv.url, site, shared)
        post(srv.url, full, live_events(VISITOR_ID, now_ms - 2 * 3_600_000, 3))
        post(srv.url, full, [{"type": "identify", "id": USER, "url": "/account", "visitorId": LAPTOP_ID,
                              "ts": now_ms - 3_600_000}])
        load(data_dir)
        # more of them after the load: still in the workers' active WAL segments
        post(srv.url, full, live_events(VISITOR_ID, now_ms - 20 * 60_000, 2))
        post(srv.url, full, live_events(LAPTOP_ID, now_ms - 10 * 60_000, 2))
        assert any(p.suffix == ".seg" and any(read_records(p)) for p in (data_dir / "wal").iterdir())

        by_visitor = admin.delete(f"/api/v2/sites/{full['id']}/visitors/{VISITOR_ID}")
        by_user = admin.delete(f"/api/v2/sites/{full['domainKey']}/users/{USER}")
        load(data_dir)
        expected = (events.filter(pl.col("visitor_key") == person).height + 5,
                    events.filter(pl.col("visitor_key") == phone).height + 3)
        keys = {person, phone, tracker_visitor_key(secret, LAPTOP_ID)}
        today = datetime.now(UTC).date().isoformat()
        yield Erased(srv, admin, full, without, keys, person, by_visitor, by_user, expected, today)
        admin.close()


def test_erasure_answers_a_summary_of_what_it_removed(erased: Erased) -> None:
    assert erased.by_visitor.status_code == 200, erased.by_visitor.text
    assert erased.by_user.status_code == 200, erased.by_user.text
    visitor, user = erased.by_visitor.json(), erased.by_user.json()
    assert visitor["siteId"] == user["siteId"] == erased.full["id"]
    assert visitor["visitorKeys"] == 1
    assert user["visitorKeys"] == 2  # the phone it was identified on in the past, the laptop live
    assert visitor["rawRowsRemoved"] == erased.expected_rows[0]
    assert user["rawRowsRemoved"] == erased.expected_rows[1]
    assert visitor["walSegmentsSealed"] >= 1  # the workers' segments were rotated and sealed first
    assert visitor["rowsRemoved"]["events"] == erased.expected_rows[0] - 2  # the 2 in the WAL were not loaded
    assert visitor["rawFilesRewritten"] + visitor["rawFilesRemoved"] >= 2
    text = orjson.dumps([visitor, user]).decode()
    assert USER not in text and VISITOR_ID not in text
    assert not any(str(k) in text for k in erased.keys)


def test_each_erasure_is_in_the_audit_log_in_counts_only(erased: Erased) -> None:
    test_the_command_asks_the_running_server(erased)  # one more, from the command line
    r = erased.admin.get(f"/api/v2/sites/{erased.full['id']}/audit")
    assert r.status_code == 200, r.text
    runs = [e for e in r.json()["entries"] if e["action"] == "erasure.run"]
    by = sorted((e["details"]["by"], e["details"]["rawRowsRemoved"], e["actor"]["email"] == "cli") for e in runs)
    assert by == sorted([("visitor", erased.expected_rows[0], False), ("user", erased.expected_rows[1], False),
                         ("user", 0, True)])
    text = orjson.dumps(runs).decode()
    assert USER not in text and VISITOR_ID not in text and not any(str(k) in text for k in erased.keys)


def _without_site(value: Any) -> Any:
    if isinstance(value, dict):
        # ids differ: the other site's copies of the events have their own
        return {k: _without_site(v) for k, v in value.items()
                if k not in ("siteId", "id", "visitId", "nextCursor", "createdAt")}
    if isinstance(value, list):
        return [_without_site(v) for v in value]
    return value


def test_every_number_equals_the_site_that_never_had_them(erased: Erased) -> None:
    window = {"start": "2026-02-28", "end": erased.today}
    paths = ["stats", "timeseries", *BREAKDOWNS, "utm", "events", "events/properties", "conversions"]
    compared = 0
    for path in paths:
        hourly = {"start": "2026-03-01", "end": "2026-03-03", "granularity": "hour"}
        for params in (window, hourly if path == "timeseries" else None):
            if params is None:
                continue
            a = erased.admin.get(f"/api/v2/sites/{erased.full['id']}/{path}", params=params)
            b = erased.admin.get(f"/api/v2/sites/{erased.without['id']}/{path}", params=params)
            assert a.status_code == b.status_code == 200, (path, a.text, b.text)
            assert _without_site(a.json()) == _without_site(b.json()), path
            compared += 1
    assert compared == len(paths) + 1
    stats = erased.admin.get(f"/api/v2/sites/{erased.full['id']}/stats", params=window).json()
    assert stats["visitors"] > 50 and stats["views"] > 100  # the comparison is about real numbers
    goals = erased.admin.get(f"/api/v2/sites/{erased.full['id']}/conversions", params=window).json()["goals"]
    assert len(goals) == 2 and all(g["conversions"] > 0 for g in goals)


def test_no_file_segment_or_table_holds_them(erased: Erased) -> None:
    data_dir = erased.server.data_dir
    parquet = sorted(data_dir.rglob("*.parquet"))
    assert len(parquet) > 20
    for path in parquet:
        table = pq.read_table(path, columns=["visitor_key", "user_id"])
        assert not set(table["visitor_key"].to_pylist()) & erased.keys, path
        assert USER not in table["user_id"].to_pylist(), path
    for path in (data_dir / "wal").iterdir():
        for payload in read_records(path):
            record = orjson.loads(payload)
            assert record.get("visitor_key") not in erased.keys and USER not in payload.decode(), path
    wh = WarehouseClient(load_settings({"data_dir": data_dir}, environ={}))
    columns = wh.query_sync("SELECT table_name, column_name, data_type FROM information_schema.columns"
                            " WHERE table_schema = 'main'").rows
    checked = 0
    for table, column, data_type in columns:
        if data_type in ("UBIGINT", "BIGINT"):
            sql = f'SELECT count(*) FROM "{table}" WHERE "{column}"::HUGEINT IN (SELECT unnest(?::HUGEINT[]))'  # noqa: S608
            hits = wh.query_sync(sql, [sorted(erased.keys)]).scalar()
        elif data_type == "VARCHAR":
            hits = wh.query_sync(f'SELECT count(*) FROM "{table}" WHERE "{column}" = ?', [USER]).scalar()  # noqa: S608
        else:
            continue
        checked += 1
        assert hits == 0, f"{table}.{column}"
    assert checked > 50
    assert not list((data_dir / "erasures").glob("*.json"))


def test_a_visitor_id_too_long_is_a_400_and_erases_nothing(erased: Erased) -> None:
    r = erased.admin.delete(f"/api/v2/sites/{erased.full['id']}/visitors/{'x' * 129}")
    assert r.status_code == 400 and "visitor id" in r.json()["error"]
    r = erased.admin.delete(f"/api/v2/sites/nosuchsite/users/{USER}")
    assert r.status_code == 404


def test_the_command_asks_the_running_server(erased: Erased) -> None:
    out = cli(erased.server.data_dir, "erase", "--site", erased.full["domainKey"], "--user", "nobody")
    summary = orjson.loads(out)
    assert summary["siteId"] == erased.full["id"]
    assert summary["visitorKeys"] == 0 and summary["rawRowsRemoved"] == 0


def test_events_after_the_erasure_are_kept(erased: Erased) -> None:
    """The erasure covers what was accepted before it; the person can come back as a new visit."""
    url, full = erased.server.url, erased.full
    before = erased.admin.get(f"/api/v2/sites/{full['id']}/stats", params={"period": "today"}).json()["views"]
    post(url, full, live_events(VISITOR_ID, int(time.time() * 1000) - 60_000, 1))
    deadline = time.monotonic() + 60
    while True:
        load(erased.server.data_dir)
        views = erased.admin.get(f"/api/v2/sites/{full['id']}/stats", params={"period": "today"}).json()["views"]
        if views == before + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert views == before + 1


def test_events_accepted_during_an_erasure_are_erased_or_kept_consistently(erased: Erased) -> None:
    """Beacons of the person keep arriving while they are erased: each one acknowledged before the
    erasure started is gone; the others are kept, in the raw files and the warehouse alike."""
    url, full, data_dir = erased.server.url, erased.full, erased.server.data_dir
    answered: dict[str, datetime] = {}
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                page = f"/during/{n}"
                r = client.post(f"{url}/api/v2/track/{full['domainKey']}",
                                json=batch(full, [{"type": "pageview", "url": page, "visitorId": VISITOR_ID}]))
                assert r.status_code == 200
                answered[page] = datetime.now(UTC)
                n += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    time.sleep(1.0)
    r = erased.admin.delete(f"/api/v2/sites/{full['id']}/visitors/{VISITOR_ID}")
    time.sleep(0.5)
    stop.set()
    thread.join()
    assert r.status_code == 200, r.text
    started = datetime.fromisoformat(r.json()["startedAt"])
    assert r.json()["rawRowsRemoved"] >= 2  # the event of the previous test, and some of these
    load(data_dir)

    raw: set[str] = set()
    for path in data_dir.rglob("*.parquet"):
        table = pq.read_table(path, columns=["visitor_key", "pathname"]).to_pylist()
        raw |= {row["pathname"] for row in table if row["visitor_key"] == erased.person}
    wh = WarehouseClient(load_settings({"data_dir": data_dir}, environ={}))
    loaded = {row[0] for row in wh.query_sync("SELECT pathname FROM events WHERE site_id = ? AND visitor_key = ?",
                                              [full["id"], erased.person]).rows}
    assert raw == loaded  # raw files and warehouse agree
    assert raw and raw <= set(answered)  # some were accepted after the start: kept
    assert all(answered[page] >= started for page in raw)
    assert any(answered[page] < started for page in answered)  # and some before it: erased
