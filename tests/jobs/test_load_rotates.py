"""``littlestats load`` against a running server loads every event accepted before it started.

Segments are made to rotate only once an hour here, so without the rotation on request a load
would find nothing of what was just sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from littlestats.config import load_settings
from tests.server import add_site, cli, running_server
from warehouse.client import WarehouseClient

pytestmark = pytest.mark.slow

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
ENV = {"LITTLESTATS_SEGMENT_SECONDS": "3600", "LITTLESTATS_LOAD_INTERVAL_SECONDS": "3600"}


def warehouse_process(data_dir: Path, timeout: float = 60) -> WarehouseClient:
    """The server's warehouse process, once it answers (it starts a few seconds after HTTP)."""
    client = WarehouseClient(load_settings({"data_dir": data_dir}, environ={}))
    deadline = time.monotonic() + timeout
    while not client.available():
        assert time.monotonic() < deadline, "the warehouse process did not start"
        time.sleep(0.2)
    return client


def loaded_paths(data_dir: Path, site_id: str) -> list[str]:
    """Every event's path in the warehouse's fact table, as the warehouse process answers."""
    rows = warehouse_process(data_dir).query_sync(
        "SELECT pathname FROM events WHERE site_id = ?", [site_id]).rows
    return [r[0] for r in rows]


def test_load_sees_the_event_just_sent(data_dir: Path) -> None:
    site = add_site(data_dir)
    with running_server(data_dir, 2, "--dev", env=ENV) as server:
        warehouse_process(data_dir)  # so `load` asks it, as it does once a server has started
        r = httpx.post(f"{server.url}/api/v2/track/{site['domainKey']}",
                       json={"url": "https://example.com/just-sent"}, headers={"User-Agent": FIREFOX})
        assert r.status_code == 200, r.text
        out = cli(data_dir, "load")
        assert out.startswith("load: ") and " 1 new events" in out, out
        assert loaded_paths(data_dir, site["id"]) == ["/just-sent"]


class Poster:
    """Threads that post beacons, each with its own path, and note which were acknowledged."""

    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.acked: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(n,)) for n in range(threads)]

    def _post(self, n: int) -> None:
        with httpx.Client(headers={"User-Agent": FIREFOX}, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                path = f"/t{n}/{i}"
                try:
                    r = client.post(self.url, json={"url": f"https://example.com{path}",
                                                    "visitorId": f"v{n}-{i % 7}"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {exc!r}")
                    return
                if r.status_code != 200:
                    self.failures.append(f"{path}: {r.status_code} {r.text}")
                    return
                with self._lock:
                    self.acked.append(path)
                i += 1

    def snapshot(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    def __enter__(self) -> Poster:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def test_load_while_beacons_arrive_loses_nothing_and_duplicates_nothing(data_dir: Path) -> None:
    site = add_site(data_dir)
    with running_server(data_dir, 2, "--dev", env=ENV) as server:
        warehouse_process(data_dir)
        with Poster(f"{server.url}/api/v2/track/{site['domainKey']}", threads=3) as poster:
            time.sleep(1.5)
            before = poster.snapshot()  # acknowledged before the load began
            started = time.monotonic()
            first = cli(data_dir, "load")
            took = time.monotonic() - started
            during = poster.snapshot() - before
            loaded = loaded_paths(data_dir, site["id"])
            time.sleep(0.5)  # beacons keep arriving after the load, too
        assert not poster.failures, poster.failures[:3]
        assert len(before) > 20 and during, (len(before), len(during))
        missing = before - set(loaded)
        assert not missing, f"{len(missing)} events acknowledged before the load are not loaded"
        assert len(loaded) == len(set(loaded))
        print(f"load with beacons arriving took {took:.2f} s: {first.strip()}")

        second = cli(data_dir, "load")
        final = loaded_paths(data_dir, site["id"])
        acked = poster.snapshot()
        assert len(final) == len(acked), second  # each acknowledged event exactly once
        assert set(final) == acked
