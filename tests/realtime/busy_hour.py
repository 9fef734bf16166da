"""A busy recent past in raw Parquet, laid out as ``serve`` seals it: one file per 30-second WAL
segment (and site and hour), events spread evenly over the last ``minutes``. For the live
service's start-up load (``api.live_service.build_hub``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.schema import RAW_EVENT_SCHEMA
from ingest.seal import partition_dir, write_parquet_atomic

SEGMENT_MS = 30_000
PAGES = [f"/page/{i}" for i in range(500)]
SOURCES = ["Google", "Direct / None", "Twitter", "news.example.org"]
COUNTRIES = ["DE", "US", "FR", "GB"]


def write_busy_past(raw_dir: Path, site_id: str, events: int, visitors: int, minutes: float = 60,
                    now_ms: int | None = None, seed: int = 0, segment_ms: int = SEGMENT_MS) -> int:
    """Write ``events`` pageviews of ``visitors`` distinct visitors, accepted over the last
    ``minutes``, one file per ``segment_ms`` (an hour: as the hourly compaction leaves them);
    returns the number of files written."""
    rng = np.random.default_rng(seed)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    start = now_ms - int(minutes * 60_000)
    received = np.sort(rng.integers(start, now_ms - 1000, size=events, dtype=np.int64))
    keys = rng.integers(1, 2**63, size=visitors, dtype=np.int64).astype(np.uint64)
    visitor = keys[rng.integers(0, visitors, size=events)]
    page = rng.integers(0, len(PAGES), size=events)
    files = 0
    bounds = np.searchsorted(received, np.arange(start - start % segment_ms, now_ms + segment_ms, segment_ms))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo == hi:
            continue
        first = int(received[lo])
        segment = time.strftime("%Y%m%dT%H%M%S", time.gmtime(first // 1000)) + f"-{seed:05d}-busy{files:04d}"
        for hour_lo, hour_hi in _hours(received, int(lo), int(hi)):
            table = _table(site_id, segment, received[hour_lo:hour_hi], visitor[hour_lo:hour_hi],
                           page[hour_lo:hour_hi], hour_lo)
            path = partition_dir(raw_dir, site_id, int(received[hour_lo])) / f"part-{segment}.parquet"
            write_parquet_atomic(table, path)
            files += 1
    return files


def _hours(received: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
    hours = received[lo:hi] // 3_600_000
    cuts = [lo + int(i) for i in np.flatnonzero(np.diff(hours)) + 1]
    edges = [lo, *cuts, hi]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _table(site_id: str, segment: str, received: np.ndarray, visitor: np.ndarray, page: np.ndarray,
           first: int) -> pa.Table:
    n = len(received)
    ts = pa.array(received, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    values = {
        "event_id": pa.array([f"{segment}-{first + i}" for i in range(n)], pa.string()),
        "site_id": pa.array([site_id] * n, pa.string()),
        "ts": ts,
        "received_at": ts,
        "type": pa.array(["pageview"] * n, pa.string()),
        "visitor_key": pa.array(visitor, pa.uint64()),
        "visitor_key_source": pa.array(["tracker"] * n, pa.string()),
        "hostname": pa.array(["busy.example.com"] * n, pa.string()),
        "pathname": pa.array([PAGES[p] for p in page], pa.string()),
        "source": pa.array([SOURCES[p % len(SOURCES)] for p in page], pa.string()),
        "country": pa.array([COUNTRIES[p % len(COUNTRIES)] for p in page], pa.string()),
        "device": pa.array(["desktop"] * n, pa.string()),
        "browser": pa.array(["Firefox"] * n, pa.string()),
        "os": pa.array(["Linux"] * n, pa.string()),
    }
    arrays = [values[f.name] if f.name in values else pa.nulls(n, f.type) for f in RAW_EVENT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)
