"""Object storage benchmark: sealed raw files uploaded to, listed in and read from a Ceph RADOS
gateway on this machine (``cluster.objectstore``).

Measures, against a private Ceph (one monitor, one OSD on a sparse file, RGW; ``cluster.engines``):

* upload of the part files ingest seals every ``segment_seconds`` (many small files: three sites,
  48 hours each), in files/s and MB/s;
* upload of a backlog of big part files (a busy site's hours), in MB/s;
* listing every raw file of the bucket (``ObjectStore.list_raw``), in files/s;
* the loader's read (``warehouse.load.read_raw``) of the objects, in rows/s, against the same
  read of the local copies (the baseline).

Needs the Debian packages of ``scripts/cluster-engines``; skipped without them. Run it under the
shared lock: ``flock bench/results/.lock python -m bench --only objectstore``.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bench.harness import BenchContext, Section

if TYPE_CHECKING:
    from littlestats.config import Settings

BASE_MS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
SITES = ("site-a", "site-b", "site-c")


def _event(i: int, site: str, ts: int) -> bytes:
    return orjson.dumps({
        "event_id": f"e{i:09d}", "site_id": site, "ts": ts, "received_at": ts, "type": "pageview",
        "visitor_key": i * 2_654_435_761 % 2**63, "visitor_key_source": "tracker",
        "pathname": f"/blog/post-{i % 200}", "referrer_host": "www.google.com",
        "source": "Google", "country": "DE", "device": "desktop", "browser": "Firefox",
        "os": "Linux", "props_str": {"plan": "pro"} if i % 10 == 0 else None,
    })


def _write_segment(wal_dir: Path, name: str, payloads: list[bytes]) -> None:
    from ingest.wal import CLOSED_SUFFIX, encode_records

    (wal_dir / f"{name}{CLOSED_SUFFIX}").write_bytes(bytes(encode_records(payloads)))


def _seal(settings: Settings, segments: dict[str, list[bytes]]) -> list[Path]:
    from ingest.seal import seal_all

    for name, payloads in segments.items():
        _write_segment(settings.wal_dir, name, payloads)
    results = seal_all(settings.wal_dir, settings.raw_dir)
    return [path for r in results for path in r.files]


def run(ctx: BenchContext) -> Section:
    section = Section("Object storage: raw files to and from a local Ceph RADOS gateway")
    if shutil.which("radosgw") is None:
        section.notes.append("skipped: Ceph is not installed (scripts/cluster-engines)")
        return section
    from cluster.engines import Ceph
    from cluster.objectstore import ObjectStore
    from littlestats.config import load_settings
    from warehouse.load import discover_files, read_raw

    work = ctx.fresh_dir("objectstore")
    hours = 12 if ctx.quick else 48
    big_files = 2 if ctx.quick else 8
    with Ceph(work / "ceph") as ceph:
        settings = load_settings({
            "data_dir": work / "node", "node_name": "bench", "s3_endpoint": ceph.endpoint,
            "s3_bucket": "bench", "s3_access_key": ceph.access_key,
            "s3_secret_key": ceph.secret_key, "s3_region": ceph.region}, environ={})
        settings.ensure_dirs()
        store = ObjectStore.from_settings(settings)
        store.filesystem.create_dir("bench")

        # Small files: what sealing writes every 30 s (one part per site and hour of a segment).
        per_hour = 400
        segments: dict[str, list[bytes]] = {}
        for k in range(2):
            segments[f"20260301T0000{k:02d}-1-{k:06d}-aaaaaa"] = [
                _event(k * 10**7 + i, SITES[i % 3], BASE_MS + (i // 3 % hours) * 3_600_000 + i)
                for i in range(per_hour * 3 * hours)]
        small = _seal(settings, segments)
        copy = work / "copy"
        shutil.copytree(settings.raw_dir, copy)
        small_bytes = sum(p.stat().st_size for p in small)
        started = time.monotonic()
        result = store.upload_local(settings.raw_dir)
        seconds = time.monotonic() - started
        assert result.uploaded == len(small) and result.failed == 0, result.summary()
        section.add(f"upload: {len(small)} small part files (~{small_bytes / len(small) / 1e3:.0f}"
                    " kB each)", len(small) / seconds, "files/s")
        section.add("upload: small part files", small_bytes / 1e6 / seconds, "MB/s")

        # Big files: a backlog of a busy site's hours.
        rows_big = 20_000 if ctx.quick else 150_000
        segments = {f"20260302T0000{k:02d}-1-{k:06d}-bbbbbb": [
            _event(10**8 + k * 10**6 + i, "site-a", BASE_MS + 86_400_000 + k * 3_600_000 + i)
            for i in range(rows_big)] for k in range(big_files)}
        big = _seal(settings, segments)
        big_bytes = sum(p.stat().st_size for p in big)
        started = time.monotonic()
        result = store.upload_local(settings.raw_dir)
        seconds = time.monotonic() - started
        assert result.uploaded == len(big) and result.failed == 0, result.summary()
        section.add(f"upload: {len(big)} big part files (~{big_bytes / len(big) / 1e6:.1f} MB each)",
                    big_bytes / 1e6 / seconds, "MB/s")

        started = time.monotonic()
        listed = store.list_raw()
        seconds = time.monotonic() - started
        assert len(listed) == len(small) + len(big)
        section.add(f"list: every raw file ({len(listed)})", len(listed) / seconds, "files/s")

        remote_small = [f for f in listed if "aaaaaa" in f.rel]
        local_small = discover_files(copy)
        started = time.monotonic()
        rows = read_raw(local_small).height
        local_rate = rows / (time.monotonic() - started)
        started = time.monotonic()
        assert read_raw(remote_small).height == rows
        section.add(f"read: {len(remote_small)} small files from the bucket", rows /
                    (time.monotonic() - started), "rows/s", local_rate)
        section.add("read: the same files from local disk (baseline)", local_rate, "rows/s")
        section.notes.append(
            f"small files: {len(small)} files, {small_bytes / 1e6:.1f} MB, {rows:,} rows;"
            f" big files: {len(big)} files, {big_bytes / 1e6:.1f} MB; uploads run"
            " 8 at a time (cluster.objectstore.PARALLEL)")
    return section
