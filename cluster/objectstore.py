"""Raw events on S3-compatible object storage: every node's sealed files in one shared bucket.

On a cluster node (``s3_endpoint`` set) the write-ahead log stays the durability point and sealing
works as on one machine: a segment becomes local hourly part files under ``raw/``. Then each part
is uploaded to ``s3://<s3_bucket>/<s3_prefix>raw/<the same Hive path>/part-<node>-<segment>.parquet``
and removed locally once the upload succeeded (``ObjectStore.upload_local``). The node's name in
the object name keeps two nodes' files apart whatever their segment ids. An upload writes the same
bytes to the same name, so it can be repeated: a node that stopped between sealing and uploading
(or could not reach the store) uploads what its ``raw/`` still holds at its next pass.

The loader takes its candidates from ``ObjectStore.list_raw`` (only the date partitions asked for
are listed) as ``warehouse.load.RawFile`` records whose ``path`` is an ``s3://`` URI; the loader's
own ``read_raw`` reads them with the raw schema, as it reads local files.

Retention (``remove_raw_before``, ``apply_retention``) and deleting a site (``purge_site``) work
on the objects. A deleted site is also marked under ``raw/.deleted-sites/`` in the bucket: no node
uploads its files from then on, and ``list_raw`` leaves it out.

Object-store parts are not merged into hourly files (``warehouse.compact`` works on local files).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cluster.s3 import s3_filesystem, storage_options
from ingest.seal import deleted_sites as local_deleted_sites
from littlestats.config import Settings
from warehouse.load import RawFile, discover_files

if TYPE_CHECKING:
    import polars as pl
    from pyarrow.fs import FileInfo, S3FileSystem

log = logging.getLogger("littlestats.objectstore")

#: Uploads (and listings of several partitions) in flight at once: each waits on the network.
PARALLEL = 8

#: Emptied local hour directories are removed once the hour ended this long ago: sealing creates
#: the directories of recent hours all the time, and one removed just as a segment is sealed into it
#: fails that sealing pass (the segment stays in the WAL and is sealed at the next one).
PRUNE_AFTER = timedelta(hours=2)

#: A date range of at most this many days is listed date by date; a longer or open one lists the
#: site's date partitions first.
ENUMERATE_DAYS = 62

#: While uploads keep failing, the failure is logged again this often (not at every pass).
FAILURE_LOG_SECONDS = 60.0

DELETED_SITES_DIR = ".deleted-sites"
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ObjectStoreError(RuntimeError):
    """Object storage is not configured right; the message says which setting to fix."""


@dataclass
class UploadResult:
    """What one upload pass did."""

    uploaded: int = 0
    bytes: int = 0
    discarded: int = 0  # files of deleted sites, removed without uploading
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        rate = self.bytes / 1e6 / self.seconds if self.seconds else 0.0
        text = (f"{self.uploaded} raw files uploaded ({self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s,"
                f" {rate:.1f} MB/s)")
        if self.discarded:
            text += f", {self.discarded} of deleted sites discarded"
        if self.failed:
            text += f", {self.failed} failed and stay local"
        return text


def object_name(node_name: str, local_name: str) -> str:
    """The object name of a local part file: ``part-<segment>.parquet`` becomes
    ``part-<node>-<segment>.parquet``."""
    return f"part-{node_name}-{local_name.removeprefix('part-')}"


def _prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


class ObjectStore:
    """The raw files of a cluster in one bucket of S3-compatible object storage."""

    def __init__(self, *, endpoint: str, bucket: str, prefix: str = "", region: str = "us-east-1",
                 access_key: str = "", secret_key: str = "", node_name: str = "") -> None:
        if not endpoint:
            raise ObjectStoreError("s3_endpoint is not set (e.g. http://10.0.0.5:7480)")
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise ObjectStoreError(f"s3_endpoint {endpoint!r} must start with http:// or https://")
        if not bucket:
            raise ObjectStoreError("s3_bucket is not set (create it with `littlestats cluster init`)")
        if node_name and not _NODE_NAME.match(node_name):
            raise ObjectStoreError(f"node_name {node_name!r} may hold only letters, digits, '.', '_'"
                                   " and '-' (up to 63), starting with a letter or digit")
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.prefix = _prefix(prefix)
        self.region = region or "us-east-1"
        self.access_key = access_key
        self.secret_key = secret_key
        self.node_name = node_name
        self._upload_lock = threading.Lock()
        self._failing_since: float | None = None
        self._failure_logged = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        """The object store a node's settings name (``s3_*``, ``node_name``)."""
        return cls(endpoint=settings.s3_endpoint, bucket=settings.s3_bucket,
                   prefix=settings.s3_prefix, region=settings.s3_region,
                   access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                   node_name=settings.node_name)

    def __repr__(self) -> str:
        return f"ObjectStore({self.raw_uri!r} at {self.endpoint})"

    # Where things are ---------------------------------------------------------------------------
    @property
    def raw_root(self) -> str:
        """The raw root as pyarrow's file system names it (``bucket/prefix/raw``)."""
        return f"{self.bucket}/{self.prefix}raw"

    @property
    def raw_uri(self) -> str:
        """The raw root as a URI (``s3://bucket/prefix/raw``)."""
        return f"s3://{self.raw_root}"

    def uri(self, rel: str) -> str:
        """The URI of the raw object at ``rel`` (``site_id=…/date=…/hour=…/part-….parquet``)."""
        return f"{self.raw_uri}/{rel}"

    @cached_property
    def filesystem(self) -> S3FileSystem:
        """A pyarrow ``S3FileSystem`` for the store (thread-safe; made once)."""
        return s3_filesystem(self.endpoint, self.access_key, self.secret_key, self.region)

    @property
    def storage_options(self) -> dict[str, str]:
        """The options polars reads and writes the store's ``s3://`` URIs with."""
        return storage_options(self.endpoint, self.access_key, self.secret_key, self.region)

    # Upload -------------------------------------------------------------------------------------
    def upload_local(self, raw_dir: Path) -> UploadResult:
        """Upload every sealed part file under ``raw_dir`` and remove each one uploaded.

        Files of sites deleted (locally or in the bucket) are removed without uploading. A file
        that fails stays and is uploaded by a later pass; failures are logged once a minute while
        they last, with what to check. Passes in one process run one after the other.
        """
        if not self.node_name:
            raise ObjectStoreError("node_name is not set: every node needs a name of its own"
                                   " (its raw files in object storage carry it)")
        with self._upload_lock:
            started = time.monotonic()
            result = UploadResult()
            files = discover_files(raw_dir)
            try:
                deleted = local_deleted_sites(raw_dir) | (self.deleted_sites() if files else set())
            except OSError as exc:  # the store cannot be reached: nothing can be uploaded
                result.failed = len(files)
                result.errors.append(f"listing {self.raw_uri}/{DELETED_SITES_DIR}: {exc}")
                files = []
            if files:
                keep = []
                for f in files:
                    if f.site_id in deleted:
                        Path(f.path).unlink(missing_ok=True)
                        result.discarded += 1
                    else:
                        keep.append(f)
                with ThreadPoolExecutor(PARALLEL, thread_name_prefix="s3-upload") as pool:
                    for f, outcome in zip(keep, pool.map(self._upload_one, keep), strict=True):
                        if outcome is None:
                            continue  # uploaded and removed by another process of the node
                        if isinstance(outcome, int):
                            result.uploaded += 1
                            result.bytes += outcome
                        else:
                            result.failed += 1
                            result.errors.append(f"{f.rel}: {outcome}")
            _prune_empty_dirs(raw_dir, datetime.now(UTC) - PRUNE_AFTER)
            result.seconds = time.monotonic() - started
        self._report(result)
        return result

    def _upload_one(self, f: RawFile) -> int | str | None:
        """Upload one local part file, then remove it: its size, the error's text, or ``None``
        when the file is gone already."""
        path = Path(f.path)
        try:
            data = path.read_bytes()  # whole, so a failure cannot leave a partial object behind
        except FileNotFoundError:
            return None
        key = f"{self.raw_root}/{f.rel.rsplit('/', 1)[0]}/{object_name(self.node_name, path.name)}"
        try:
            with self.filesystem.open_output_stream(key) as out:
                out.write(data)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        path.unlink(missing_ok=True)
        return len(data)

    def _report(self, result: UploadResult) -> None:
        now = time.monotonic()
        if result.failed:
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failure_logged >= FAILURE_LOG_SECONDS:
                self._failure_logged = now
                log.error(
                    "could not upload %d raw files to %s (first: %s); they stay in the local raw"
                    " directory and are retried at every sealing pass. Check that %s answers, that"
                    " s3_access_key/s3_secret_key are right and that the bucket exists (`littlestats"
                    " cluster init --config FILE` creates it)",
                    result.failed, self.raw_uri, result.errors[0], self.endpoint)
        elif self._failing_since is not None:
            log.info("uploads to %s work again (they failed for %.0f s)", self.raw_uri,
                     now - self._failing_since)
            self._failing_since = None
            self._failure_logged = 0.0
        if result.uploaded or result.discarded:
            log.info("object storage: %s", result.summary())

    # Listing ------------------------------------------------------------------------------------
    def list_raw(self, start: date | None = None, end: date | None = None,
                 sites: Iterable[str] | None = None) -> list[RawFile]:
        """The raw files in the bucket (optionally of ``sites``, of partitions dated
        ``start``..``end``), in the order ``warehouse.load.discover_files`` gives local ones.

        Only the date partitions asked for are listed: date by date for a range of up to
        ``ENUMERATE_DAYS`` days (``end`` defaults to tomorrow), else from the site's date listing.
        Sites marked deleted are left out.
        """
        wanted = set(sites) if sites is not None else None
        deleted = self.deleted_sites()
        site_ids = [s for s in self._children(self.raw_root, "site_id=")
                    if s not in deleted and (wanted is None or s in wanted)]
        days: list[str] | None = None  # the dates to list in every site, when few
        if start is not None:
            last = end or (datetime.now(UTC) + timedelta(days=1)).date()
            if (last - start).days < ENUMERATE_DAYS:
                days = [(start + timedelta(days=i)).isoformat()
                        for i in range((last - start).days + 1)]

        def dates_of(site_id: str) -> list[str]:
            if days is not None:
                return days
            return [d for d in self._children(f"{self.raw_root}/site_id={site_id}", "date=")
                    if (start is None or d >= start.isoformat())
                    and (end is None or d <= end.isoformat())]

        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="s3-list") as pool:
            per_site = list(pool.map(dates_of, site_ids))
            partitions = [(s, d) for s, ds in zip(site_ids, per_site, strict=True) for d in ds]
            listed = pool.map(lambda p: self._files_of_date(*p), partitions)
            found = [f for files in listed for f in files]
        found.sort(key=lambda f: (f.site_id, f.rel))
        return found

    def _files_of_date(self, site_id: str, day_text: str) -> list[RawFile]:
        from pyarrow.fs import FileSelector, FileType

        base = f"{self.raw_root}/site_id={site_id}/date={day_text}/"
        infos = self.filesystem.get_file_info(
            FileSelector(base, recursive=True, allow_not_found=True))
        day = date.fromisoformat(day_text)
        options = self.storage_options
        files = []
        for info in infos:
            rest = info.path[len(base):]
            hour_part, _, name = rest.partition("/")
            if (info.type != FileType.File or not hour_part.startswith("hour=")
                    or not hour_part[5:].isdigit() or "/" in name
                    or not name.startswith("part-") or not name.endswith(".parquet")):
                continue
            when = datetime(day.year, day.month, day.day, int(hour_part[5:]), tzinfo=UTC)
            rel = f"site_id={site_id}/date={day_text}/{rest}"
            files.append(RawFile(f"s3://{info.path}", rel, site_id, when, info.size or 0,
                                 storage_options=options))
        return files

    def _children(self, path: str, prefix: str) -> list[str]:
        """The partition values of the ``prefix…`` directories directly under ``path``."""
        return sorted(name[len(prefix):] for name in self._names(path) if name.startswith(prefix))

    def _names(self, path: str, directories: bool = True) -> list[str]:
        from pyarrow.fs import FileSelector, FileType

        kind = FileType.Directory if directories else FileType.File
        infos: list[FileInfo] = self.filesystem.get_file_info(
            FileSelector(path, recursive=False, allow_not_found=True))
        return [info.base_name for info in infos if info.type == kind]

    # Retention and deleted sites ----------------------------------------------------------------
    def remove_raw_before(self, site_id: str, cutoff: datetime) -> int:
        """Delete the site's raw hour partitions that end at or before ``cutoff``; returns how
        many (as ``warehouse.retention.remove_raw_before`` does for local files)."""
        removed = 0
        site = f"{self.raw_root}/site_id={site_id}"
        for day_text in self._children(site, "date="):
            day = datetime.fromisoformat(day_text).replace(tzinfo=UTC)
            if day >= cutoff:
                break
            for hour_text in self._children(f"{site}/date={day_text}", "hour="):
                if day + timedelta(hours=int(hour_text) + 1) <= cutoff:
                    self.filesystem.delete_dir(f"{site}/date={day_text}/hour={hour_text}")
                    removed += 1
        return removed

    def apply_retention(self, site_retention: dict[str, int], now: datetime | None = None) -> int:
        """Remove, for each site with a retention (``site_retention``: site id → days, 0 = keep
        forever), its raw hour partitions older than that; returns how many were removed.

        Run it after the catalog's rows are deleted (``warehouse.retention.apply_retention``),
        as on one machine: a file whose rows are gone is never loaded again, being too old."""
        now = now or datetime.now(UTC)
        removed = 0
        for site_id, days in sorted(site_retention.items()):
            if days > 0:
                removed += self.remove_raw_before(site_id, now - timedelta(days=days))
        if removed:
            log.info("object storage retention: %d raw hour partitions removed", removed)
        return removed

    def purge_site(self, site_id: str) -> int:
        """Delete every raw object of ``site_id``; returns how many were deleted.

        The site is first marked deleted in the bucket, so no node uploads its files from then on
        (a node uploading at that very moment may still add one: purging again removes it, so run
        this for every deleted site at each retention run; it is cheap when nothing is left)."""
        self.mark_site_deleted(site_id)
        from pyarrow.fs import FileSelector, FileType

        site = f"{self.raw_root}/site_id={site_id}"
        infos = self.filesystem.get_file_info(FileSelector(site, recursive=True,
                                                           allow_not_found=True))
        count = sum(1 for info in infos if info.type == FileType.File)
        if infos:
            self.filesystem.delete_dir(site)
        if count:
            log.info("object storage: %d raw files of deleted site %s removed", count, site_id)
        return count

    def mark_site_deleted(self, site_id: str) -> None:
        """Record in the bucket that ``site_id`` is deleted (idempotent)."""
        with self.filesystem.open_output_stream(
                f"{self.raw_root}/{DELETED_SITES_DIR}/{site_id}") as out:
            out.write(b"")

    def unmark_site_deleted(self, site_id: str) -> None:
        """Undo ``mark_site_deleted`` (a delete that could not be completed)."""
        from pyarrow.fs import FileType

        path = f"{self.raw_root}/{DELETED_SITES_DIR}/{site_id}"
        if self.filesystem.get_file_info(path).type == FileType.File:
            self.filesystem.delete_file(path)

    def deleted_sites(self) -> frozenset[str]:
        """The ids of the sites marked deleted in the bucket."""
        return frozenset(self._names(f"{self.raw_root}/{DELETED_SITES_DIR}", directories=False))

    # Reading for analysts -----------------------------------------------------------------------
    def scan(self) -> pl.LazyFrame:
        """Every raw event in the bucket as one lazy frame in this release's raw schema (files of
        deleted sites not yet purged included)."""
        import polars as pl

        from warehouse.load import RAW_POLARS_SCHEMA

        return pl.scan_parquet(f"{self.raw_uri}/**/*.parquet", storage_options=self.storage_options,
                               hive_partitioning=False, schema=RAW_POLARS_SCHEMA,
                               missing_columns="insert")


def raw_uploader(settings: Settings) -> Callable[[], UploadResult] | None:
    """On a node with object storage (``s3_endpoint`` set): the pass that uploads its sealed raw
    files, for the warehouse process to run after each sealing pass. ``None`` on one machine."""
    if not settings.s3_endpoint:
        return None
    store = ObjectStore.from_settings(settings)
    if not settings.node_name:
        raise ObjectStoreError("node_name is not set: every node with s3_endpoint needs a name of"
                               " its own (its raw files in object storage carry it)")
    return lambda: store.upload_local(settings.raw_dir)


def _prune_empty_dirs(raw_dir: Path, before: datetime) -> None:
    """Remove the emptied partition directories of hours that ended before ``before``."""
    for site_dir in _dirs(raw_dir, "site_id="):
        for date_dir in _dirs(site_dir, "date="):
            try:
                day = datetime.fromisoformat(date_dir.name[5:]).replace(tzinfo=UTC)
            except ValueError:
                continue
            for hour_dir in _dirs(date_dir, "hour="):
                if hour_dir.name[5:].isdigit() and day + timedelta(hours=int(hour_dir.name[5:]) + 1) <= before:
                    _rmdir(hour_dir)
            if day + timedelta(days=1) <= before:
                _rmdir(date_dir)
        _rmdir(site_dir)


def _dirs(path: Path, prefix: str) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path)
                if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _rmdir(path: Path) -> None:
    """Remove ``path`` if it is empty (another writer may have just put something in it)."""
    try:
        path.rmdir()
    except OSError:
        pass
