"""A deleted or changed site, seen at once by every process's site cache; a deleted site's events
dropped when their WAL segment is sealed. Real SQLite, shared memory, WAL segments and Parquet."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq

from ingest.seal import deleted_sites, mark_site_deleted, seal_segment, unmark_site_deleted
from ingest.wal import SegmentWriter
from littlestats.controlplane import ControlPlane, SiteCache, SiteSettings


def test_a_site_deleted_elsewhere_is_unknown_at_the_next_lookup(tmp_path: Path) -> None:
    worker, api = ControlPlane(tmp_path / "control.sqlite3"), ControlPlane(tmp_path / "control.sqlite3")
    site = api.create_site("example.com")
    cache = SiteCache(worker, ttl=3600)
    assert cache.get(site.domain_key) == site and cache.get(site.id) == site
    api.mark_site_deleted(site.id)  # another process, as the API's DELETE does
    assert cache.get(site.domain_key) is None and cache.get(site.id) is None
    assert api.list_sites() == [] and api.get_site(site.id) is None
    api.unmark_site_deleted(site.id)  # the delete could not be completed
    assert cache.get(site.domain_key) == site
    api.delete_site(site.id)
    assert cache.get(site.domain_key) is None
    assert api.deleted_site_ids() == {site.id}


def test_a_site_changed_elsewhere_is_seen_at_the_next_lookup(tmp_path: Path) -> None:
    worker, api = ControlPlane(tmp_path / "control.sqlite3"), ControlPlane(tmp_path / "control.sqlite3")
    site = api.create_site("example.com")
    cache = SiteCache(worker, ttl=3600)
    assert cache.get(site.id).settings.allowed_query_params == ()  # type: ignore[union-attr]
    before = worker.sites_generation()
    api.update_site(site.id, settings=SiteSettings(allowed_query_params=("page",)))
    assert worker.sites_generation() == before + 1
    assert cache.get(site.id).settings.allowed_query_params == ("page",)  # type: ignore[union-attr]
    assert api.get_site(site.id).public()["allowedQueryParams"] == ["page"]  # type: ignore[union-attr]


def _event(site_id: str, n: int) -> dict:
    ts = 1_770_000_000_000 + n
    return {"event_id": f"{site_id}-{n}", "site_id": site_id, "ts": ts, "received_at": ts, "type": "pageview",
            "visitor_key": n, "visitor_key_source": "tracker", "pathname": "/", "source": "Direct / None",
            "device": "desktop", "browser": "Firefox", "os": "Linux"}


def test_sealing_drops_the_events_of_deleted_sites(tmp_path: Path) -> None:
    wal, raw = tmp_path / "wal", tmp_path / "raw"
    writer = SegmentWriter(wal, segment_seconds=3600)
    writer.append([orjson.dumps(_event("kept" if n % 2 else "gone", n)) for n in range(10)])
    closed = writer.close()
    assert closed is not None
    mark_site_deleted(raw, "gone")
    mark_site_deleted(raw, "gone")  # idempotent
    assert deleted_sites(raw) == {"gone"}
    result = seal_segment(closed, raw)
    assert result is not None and (result.events, result.dropped) == (5, 5)
    assert not (raw / "site_id=gone").exists()
    [kept] = result.files
    assert pq.read_table(kept).column("site_id").to_pylist() == ["kept"] * 5
    unmark_site_deleted(raw, "gone")
    assert deleted_sites(raw) == frozenset()


def test_a_segment_of_deleted_sites_only_seals_to_nothing(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "wal", segment_seconds=3600)
    writer.append([orjson.dumps(_event("gone", n)) for n in range(3)])
    closed = writer.close()
    assert closed is not None
    mark_site_deleted(tmp_path / "raw", "gone")
    result = seal_segment(closed, tmp_path / "raw")
    assert result is not None and (result.events, result.dropped, result.files) == (0, 3, ())
    assert not closed.exists() and not (tmp_path / "raw" / "site_id=gone").exists()
