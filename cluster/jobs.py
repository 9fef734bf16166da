"""The warehouse process's jobs on a cluster node (``settings.clustered``).

On one machine the warehouse process owns a DuckDB file (``warehouse.service.Warehouse``). On a
cluster node it runs ``ClusterWarehouse`` instead, the same jobs on shared storage:

* **queries** read the shared lake (``cluster.catalog.connect_shared``, the lake as the
  connection's database): every node answers from the same committed snapshots;
* **sealing and upload**: the node's WAL segments are sealed into local Parquet parts and
  uploaded to object storage (``cluster.objectstore``), the WAL staying the durability point;
* **the load** runs on whichever node holds the load lease (``cluster.lease``): every node
  tries at every load time; the holder lists the raw files in object storage that the lake's
  ``loaded_files`` manifest lacks and loads them with ``warehouse.load.load_pending``, one
  transaction per chunk, each writing the lease's token into the fence; it renews the lease
  in the background, checks it between chunks, and stops at once when it is lost. It gives the
  lease back when done, so the next load may run on any node;
* **lake maintenance** (``cluster.catalog.maintain``: inlined rows written out, small files
  merged, old snapshots expired) runs after a load that loaded something, at most every
  ``MAINTAIN_EVERY`` per node, still holding the lease: a rewrite of a table conflicts with a
  load's commit to it;
* **retention** runs under the same lease (it deletes from the same tables).

A loader killed in the middle of a chunk never committed it: its lease expires
``load_lease_seconds`` after its last renewal, and the next node's load redoes the chunk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from cluster.catalog import connect_shared, maintain, retry_conflicts
from cluster.lease import LOAD_LEASE, HeldLease, LeaseLost, claim, fence, try_acquire
from ingest.seal import seal_all
from littlestats.config import Settings
from warehouse.load import LoadResult, load_pending, pending_files
from warehouse.protocol import WarehouseError
from warehouse.retention import RetentionResult, apply_retention, is_expired
from warehouse.service import Progress, Warehouse

log = logging.getLogger("littlestats.cluster.jobs")

#: A node maintains the lake after a load at most this often.
MAINTAIN_EVERY = timedelta(minutes=5)


def holder_name(settings: Settings) -> str:
    """Who holds a lease: the node's name and this process (a restarted node is a new holder,
    which waits for its former process's lease to expire like any other node)."""
    return f"{settings.node_name}/{os.getpid()}"


class ClusterWarehouse(Warehouse):
    """The warehouse of a cluster node: queries on the shared lake, loads under the load lease."""

    def __init__(self, settings: Settings) -> None:
        from cluster.objectstore import ObjectStore

        self.settings = settings
        self.con = connect_shared(settings, threads=settings.warehouse_threads or None,
                                  memory_limit=settings.warehouse_memory_limit or None)
        self.writer = self.con.cursor()
        self.write_lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        self.store = ObjectStore.from_settings(settings)
        self.holder = holder_name(settings)
        self.lease: HeldLease | None = None  # while this node holds the load lease
        self._maintained = time.monotonic()  # none right at start: loads catch up first

    # The lease ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _leased(self, what: str) -> Iterator[HeldLease | None]:
        """The load lease for the duration of the block (``None``: another node holds it)."""
        lease = try_acquire(self.settings.catalog_dsn, LOAD_LEASE, self.holder,
                            self.settings.load_lease_seconds)
        if lease is None:
            log.debug("%s: another node holds the load lease", what)
            yield None
            return
        try:
            with self.write_lock:
                self.lease = lease
                try:
                    yield lease
                finally:
                    self.lease = None
        finally:
            lease.release()

    def _claim(self, lease: HeldLease) -> None:
        """Commit ``lease``'s token into the fence before changing anything, so that no former
        holder's transaction still under way commits after this node's work began (one with its
        commit in flight conflicts with the claim: once it is through, the claim is retried)."""
        retry_conflicts(lambda: claim(self.writer, lease))

    # Jobs -----------------------------------------------------------------------------------
    def load(
        self, start: date | None = None, end: date | None = None, progress: Progress | None = None,
        seal: bool = True, recent_days: int | None = None,
    ) -> LoadResult:
        """Seal and upload this node's finished WAL segments, then, if this node gets the load
        lease, load every raw file in object storage that no node has loaded yet (exactly once:
        the manifest is in the lake, written in each chunk's transaction with its rows)."""
        if recent_days is not None:
            start = (datetime.now(UTC) - timedelta(days=recent_days)).date()
        if seal:
            seal_all(self.settings.wal_dir, self.settings.raw_dir)
            self.store.upload_local(self.settings.raw_dir)
        tz, retention = self._sites()
        now = datetime.now(UTC)
        with self._leased("load") as lease:
            if lease is None:
                return LoadResult()
            files = [f for f in self.store.list_raw(start, end)
                     if not is_expired(f.partition_hour, retention.get(f.site_id, 0), now)]
            pending = pending_files(self.writer, files)
            if not pending:  # nothing to do: no claim either (a commit, a lake snapshot)
                return LoadResult()
            try:
                self._claim(lease)
                result = load_pending(self.writer, self.settings.raw_dir, tz, files=pending,
                                      progress=_checking(lease, progress),
                                      chunk_rows=self.settings.load_chunk_rows,
                                      before_commit=lambda con: fence(con, lease))
            except LeaseLost as exc:
                log.warning("load stopped: %s; the node that holds the lease now loads the rest",
                            exc)
                return LoadResult()
            except duckdb.TransactionException as exc:
                # another writer committed to the same tables meanwhile (a former holder, or
                # a new one after this node lost its lease): nothing of this chunk is kept
                log.warning("load stopped: its commit conflicted with another node's (%s);"
                            " the next load goes on", exc)
                return LoadResult()
            if result.files:
                log.info("load (lease token %d): %s", lease.token, result.summary())
                self._maintain(lease)
        return result

    def _maintain(self, lease: HeldLease) -> None:
        """Maintain the lake if this node has not for ``MAINTAIN_EVERY`` (holding the lease)."""
        if time.monotonic() - self._maintained < MAINTAIN_EVERY.total_seconds():
            return
        self._maintained = time.monotonic()
        try:
            lease.check()
            done = maintain(self.writer)
        except (LeaseLost, duckdb.Error) as exc:
            log.warning("lake maintenance stopped (%s); it runs again after a later load", exc)
            return
        log.info("lake maintenance: %d tables' inlined rows written out, %d files rewritten,"
                 " %d merged, %d snapshots expired, %d files removed in %.1f s", done.flushed,
                 done.rewritten, done.merged, done.expired, done.removed, done.seconds)

    def retention(self, now: datetime | None = None) -> RetentionResult:
        """Apply every site's retention to the lake and to the raw files in object storage, on
        the node that gets the load lease."""
        _, retention = self._sites()
        with self._leased("retention") as lease:
            if lease is None:
                return RetentionResult()
            self._claim(lease)
            result = apply_retention(self.writer, self.settings.raw_dir, retention,
                                     self.settings.rollup_retention_days, now)
            lease.check()
            removed = self.store.apply_retention(retention, now)
        log.info("retention: %s; %d raw objects removed", result.summary(), removed)
        return result

    def resort_closed_days(self, now: datetime | None = None) -> dict[str, int]:
        """Nothing: the lake's files are not regrouped by site."""
        return {}

    def checkpoint(self) -> None:
        """Nothing: every lake commit is durable in the catalog and object storage."""

    # Not yet on a cluster ---------------------------------------------------------------------
    def _not_on_cluster(self, what: str) -> WarehouseError:
        return WarehouseError(f"{what} is not available on a cluster node yet")

    def reaggregate(self, start: date, end: date) -> tuple[int, int]:
        raise self._not_on_cluster("re-aggregation")

    def purge_site(self, site_id: str) -> int:
        raise self._not_on_cluster("purging a site")

    def erase(self, *args: Any, **kwargs: Any) -> Any:
        raise self._not_on_cluster("erasure")

    def import_aggregates(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        raise self._not_on_cluster("importing")

    def delete_aggregates(self, import_id: str) -> int:
        raise self._not_on_cluster("deleting an import")

    def delete_import(self, site_id: str, import_id: str) -> dict[str, Any]:
        raise self._not_on_cluster("deleting an import")

    def snapshot(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        raise self._not_on_cluster("a backup snapshot")

    def close(self) -> None:
        with self.write_lock:
            self.writer.close()
            self.con.close()


def _checking(lease: HeldLease, progress: Progress | None) -> Callable[[int, int], None]:
    """``progress`` that first checks the lease: a lost lease stops the load between chunks."""

    def step(done: int, total: int) -> None:
        lease.check()
        if progress is not None:
            progress(done, total)

    return step
