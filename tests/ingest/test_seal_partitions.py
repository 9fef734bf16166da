"""Sealing puts every event of a segment into the Parquet file of its own site and UTC hour."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from ingest.seal import seal_segment
from ingest.wal import SegmentWriter


def test_interleaved_sites_and_hours_each_land_in_their_own_partition(tmp_path: Path) -> None:
    rng = random.Random(7)
    base = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # the start of a UTC hour
    # Times on both sides of hour boundaries (the last and first millisecond of an hour), in an
    # order that is neither by site nor by time.
    offsets = [-1, 0, 1, 3_599_999, 3_600_000, 7_200_000 - 1, 7_200_000, 30 * 60_000]
    events = []
    for i in range(400):
        site = rng.choice(["a", "b", "c"])
        ts = base + rng.choice(offsets) + rng.choice([0, 86_400_000])
        events.append({"event_id": f"e{i:05d}", "site_id": site, "ts": ts, "received_at": ts,
                       "type": "pageview", "visitor_key": i, "visitor_key_source": "tracker",
                       "pathname": "/", "source": "Direct / None", "device": "desktop",
                       "browser": "Firefox", "os": "Linux", "props_str": {"i": str(i)} if i % 5 == 0 else None})
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=60)
    writer.append([orjson.dumps(e) for e in events])
    closed = writer.close()
    assert closed is not None

    result = seal_segment(closed, tmp_path / "raw")
    assert result is not None and result.events == len(events)

    def partition(event: dict) -> str:
        when = datetime.fromtimestamp(event["ts"] / 1000, tz=UTC)
        return f"site_id={event['site_id']}/date={when:%Y-%m-%d}/hour={when:%H}"

    expected = Counter(partition(e) for e in events)
    found: Counter[str] = Counter()
    seen = set()
    for path in result.files:
        key = str(path.parent.relative_to(tmp_path / "raw"))
        rows = pq.read_table(path).to_pylist()
        found[key] += len(rows)
        for row in rows:
            i = int(row["event_id"][1:])
            assert partition(events[i]) == key
            assert dict(row["props_str"] or []) == (events[i]["props_str"] or {})
            seen.add(i)
        assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)  # ordered by time
    assert found == expected
    assert seen == set(range(len(events)))
