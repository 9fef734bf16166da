"""Reading back what ingest wrote, for assertions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds

UA = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
    "opera": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0",
    "samsung": "Mozilla/5.0 (Linux; Android 13; SM-S908B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "ipad": "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    "android_phone": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "android_tablet": "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "chromeos": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "firefox_mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "headless": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
}


# What each browser's user agent must become: (UA key, browser, OS, device class).
UA_EXPECTED = [
    ("edge", "Edge", "Windows", "desktop"),
    ("opera", "Opera", "Windows", "desktop"),
    ("samsung", "Samsung Internet", "Android", "mobile"),
    ("iphone", "Mobile Safari", "iOS", "mobile"),
    ("ipad", "Mobile Safari", "iOS", "tablet"),
    ("android_phone", "Chrome", "Android", "mobile"),
    ("android_tablet", "Chrome", "Android", "tablet"),
    ("chromeos", "Chrome", "Chrome OS", "desktop"),
    ("firefox_mac", "Firefox", "Mac OS X", "desktop"),
]


def raw_rows(data_dir: Path) -> list[dict[str, Any]]:
    raw = data_dir / "raw"
    if not raw.exists():
        return []
    table = ds.dataset(raw, format="parquet", partitioning="hive").to_table()
    return table.to_pylist()


def wait_for_rows(
    data_dir: Path, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = raw_rows(data_dir)
        if done(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"timed out; {len(rows)} rows in Parquet")


def stream(server: Any, site: str, indices: list[int], acked: set[int], failed: set[int], lock: threading.Lock) -> None:
    """Post beacons ``/crash/<i>`` for ``indices`` to ``server`` (single beacons and small batches
    in turn), recording each index as acknowledged (200) or failed; used to crash a server mid-stream."""
    with httpx.Client(timeout=10, headers={"User-Agent": UA["chrome"]}) as client:
        for i in indices:
            # Alternate single beacons and small batches so both paths are crashed into.
            if i % 3:
                body = {"url": f"/crash/{i}"}
            else:
                body = {"siteId": site, "events": [{"url": f"/crash/{i}"}]}
            try:
                r = client.post(f"{server.url}/api/v2/track/{site}", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            with lock:
                (acked if ok else failed).add(i)
            if not ok:
                time.sleep(0.02)
