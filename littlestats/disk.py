"""A full disk, told apart from other write failures, and reported once per episode.

Every process that writes to the data directory (ingest workers: the write-ahead log; the warehouse
process: sealing, loads, compaction) reports its write outcomes to the process's ``DISK``:

* the first failure of an episode is logged loudly (``ERROR ... disk is full ...``) with what to
  do; further failures of the same episode are counted, not logged, so a full disk does not also
  flood the log;
* ``littlestats_write_errors_total{part, reason}`` counts every failure, and
  ``littlestats_disk_full`` is 1 while a process of the server sees the disk full;
* the next successful write (or, for a process that is not writing, free space seen again by
  ``recheck``) ends the episode with an ``INFO`` line saying how long it lasted.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from littlestats import metrics

log = logging.getLogger("littlestats.disk")

#: Below this many free bytes the data directory counts as full: a write-ahead-log segment
#: reserves 1 MiB at a time, a Parquet file and a DuckDB checkpoint need a few.
MIN_FREE_BYTES = 4 * 1024 * 1024

#: What a client that was refused because of a full disk is told to wait, in seconds.
RETRY_AFTER_SECONDS = 10

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or a quota is full.

    Covers ``OSError`` (``ENOSPC``, ``EDQUOT``, ``EFBIG``), SQLite's ``database or disk is full``
    and the messages of DuckDB and Arrow, which carry the system error as text.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and "full" in str(current):
            return True
        text = str(current).lower()
        if "no space left on device" in text or "disk quota exceeded" in text or "file too large" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


class DiskWatch:
    """This process's view of the data directory's disk: full or not, since when."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.full_since: float | None = None
        self.errors = 0  # failures in the current episode

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def failed(self, part: str, exc: BaseException, path: Path | None = None) -> bool:
        """Report a failed write of ``part`` (``wal``, ``seal``, ``load``, ...); whether it was a
        full disk. Other errors are counted here and left to the caller to log."""
        full = is_disk_full(exc)
        metrics.WRITE_ERRORS.labels(part=part, reason="disk_full" if full else "io").inc()
        if not full:
            return False
        with self._lock:
            first = self.full_since is None
            if first:
                self.full_since = time.monotonic()
                self.errors = 0
            self.errors += 1
        if first:
            metrics.DISK_FULL.set(1)
            where = f" ({path})" if path is not None else ""
            log.error(
                "disk is full: %s write failed%s: %s. Beacons are refused with 503 and "
                "Retry-After, loads wait; nothing accepted is lost. Free space on the data "
                "directory's disk: the server recovers by itself.", part, where, exc,
            )
        return True

    def succeeded(self) -> None:
        """Report a successful write: ends a full-disk episode."""
        if self.full_since is None:
            return
        with self._lock:
            since, errors = self.full_since, self.errors
            self.full_since = None
        if since is not None:
            metrics.DISK_FULL.set(0)
            log.info("disk space is back: writes succeed again after %.1f s (%d writes refused)",
                     time.monotonic() - since, errors)

    def recheck(self, data_dir: Path) -> None:
        """End the episode when the disk has room again, for a process not writing meanwhile."""
        if self.full_since is None:
            return
        try:
            room = free_bytes(data_dir)
        except OSError:
            return
        if room >= MIN_FREE_BYTES:
            self.succeeded()


#: This process's watch (every process of ``serve`` has its own).
DISK = DiskWatch()
