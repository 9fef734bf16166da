"""Write-ahead log: the durable, per-worker append path.

Every ingest worker appends to its own segment file — no locks between workers. A request's events
are acknowledged only after the segment has been fsynced; the events of every request that arrives
while one fsync is in flight share the next one (group commit).

Segment files live in ``wal/``:

* ``<segment-id>.seg``    — being written; its writer holds an exclusive ``flock`` on it.
* ``<segment-id>.closed`` — rotated (every ``segment_seconds`` and at each UTC hour), ready to seal.

A ``.seg`` whose lock can be taken belongs to a dead process (``kill -9``) and is sealed like a
closed one. Records are ``<u32 length><u32 crc32><payload>``; a torn record at the tail of a crashed
segment was never acknowledged and is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
ACTIVE_SUFFIX = ".seg"
CLOSED_SUFFIX = ".closed"


_sequence = itertools.count()


def new_segment_id(now: float | None = None) -> str:
    """Segment ids sort by creation time (and, within a process, by sequence) and never collide."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}-{os.getpid()}-{next(_sequence):06d}-{secrets.token_hex(3)}"


def encode_record(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> Iterator[bytes]:
    """Every intact record of a segment, streamed, stopping at the first torn or corrupt one."""
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                return
            length, crc = HEADER.unpack(header)
            if length > MAX_RECORD:
                return
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            yield payload


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends records to this process's active segment, fsynced before anyone is told.

    ``append_async`` is the request path, a pipelined group commit: requests queue their records
    in memory; the event loop writes everything queued to the segment (page cache, fast) and hands
    the ``fdatasync`` to a dedicated thread. While that one fsync is in flight the loop keeps
    serving requests, whose records form the next commit as soon as the fsync returns. So a slow
    disk costs latency, not throughput, and there is one thread hand-off per fsync, not per request.

    ``append`` is the synchronous equivalent. Segments rotate (rename to ``.closed``) after
    ``segment_seconds``, at each UTC hour and past ``segment_max_bytes``; ``maybe_rotate`` is also called by a timer so an
    idle worker's segment is sealed on time. ``on_rotate`` receives each closed segment's path.
    """

    def __init__(
        self,
        wal_dir: Path,
        segment_seconds: float = 30.0,
        on_rotate: Callable[[Path], None] | None = None,
        segment_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.wal_dir = wal_dir
        self.segment_seconds = segment_seconds
        # Also rotate by size, so sealing a segment needs bounded memory whatever the traffic.
        self.segment_max_bytes = segment_max_bytes
        self.on_rotate = on_rotate
        # Held while the segment file changes: a write, an fsync, a rotation.
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._opened_hour = -1
        self._size = 0  # bytes of the active segment known to be on disk
        self._written = 0  # bytes written to it (more than _size while an fsync is pending)
        self._closed = False
        self._last_closed: Path | None = None
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._commit_scheduled = False
        self._syncing = False
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-fsync")
        self.fsyncs = 0
        wal_dir.mkdir(parents=True, exist_ok=True)

    # public API ------------------------------------------------------------------------------
    def append(self, payloads: list[bytes]) -> None:
        """Append records and return once they are on disk."""
        with self._lock:
            written = self._write(payloads)
            self._sync(written)

    async def append_async(self, payloads: list[bytes]) -> None:
        """Append records; resolves once they are on disk, sharing the fsync with other requests."""
        if self._closed:
            raise RuntimeError("the write-ahead log is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.extend(payloads)
        self._waiters.append(fut)
        if not self._commit_scheduled and not self._syncing:
            self._commit_scheduled = True
            # Runs after the callbacks already queued on this loop turn, so every request that
            # is ready right now joins this commit.
            loop.call_soon(self._start_commit, loop)
        await fut

    def maybe_rotate(self) -> None:
        """Rotate the active segment if it is old enough or its hour has ended."""
        with self._lock:
            self._maybe_rotate()

    def close(self) -> Path | None:
        """Write and fsync what is queued, close the active segment and return its closed path."""
        self._syncer.shutdown(wait=True)  # lets an fsync in flight finish
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            payloads, waiters = self._pending, self._waiters
            self._pending, self._waiters = [], []
            error: BaseException | None = None
            try:
                self._sync(self._write(payloads))
            except OSError as exc:
                error = exc
            for fut in waiters:
                fut.get_loop().call_soon_threadsafe(_settle, fut, error)
            self._rotate()
            return self._last_closed

    @property
    def active_path(self) -> Path | None:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    # the pipelined commit (event loop side) ---------------------------------------------------
    def _start_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        self._commit_scheduled = False
        if self._syncing or not self._pending or self._closed:
            return
        payloads, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        try:
            with self._lock:
                written = self._write(payloads)
        except OSError as exc:
            for fut in waiters:
                _settle(fut, exc)
            return
        self._syncing = True
        future = loop.run_in_executor(self._syncer, self._sync_locked, written)
        future.add_done_callback(lambda f: self._commit_done(f, waiters, loop))

    def _commit_done(
        self, f: asyncio.Future[None], waiters: list[asyncio.Future[None]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._syncing = False
        error = None if f.cancelled() else f.exception()
        for fut in waiters:
            _settle(fut, error)
        if self._pending and not self._commit_scheduled:
            self._commit_scheduled = True
            loop.call_soon(self._start_commit, loop)

    # file operations (called with the lock held, or from _sync_locked) -----------------------
    def _write(self, payloads: list[bytes]) -> int:
        """Write records after the last synced byte; return the segment size to sync up to."""
        if not payloads:
            return self._size
        self._maybe_rotate()
        if self._fd is None:
            self._open()
        assert self._fd is not None
        data = b"".join([encode_record(p) for p in payloads])
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            self._abandon_tail()
            raise
        self._written = self._size + len(data)
        return self._written

    def _sync_locked(self, size: int) -> None:
        with self._lock:
            self._sync(size)

    def _sync(self, size: int) -> None:
        if self._fd is None or size == self._size:
            return
        try:
            os.fdatasync(self._fd)
        except OSError:
            self._abandon_tail()
            raise
        self._size = size
        self.fsyncs += 1

    def _abandon_tail(self) -> None:
        # A torn or unsynced record would hide every later one from recovery: cut the segment
        # back to its last synced size and start a fresh one for whatever comes next.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
        self._written = self._size
        self._rotate()

    def _open(self) -> None:
        now = time.time()
        path = self.wal_dir / (new_segment_id(now) + ACTIVE_SUFFIX)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fsync_dir(self.wal_dir)
        self._fd, self._path = fd, path
        self._size = self._written = 0
        self._opened_at = now
        self._opened_hour = int(now // 3600)

    def _maybe_rotate(self) -> None:
        if self._fd is None or self._written != self._size:
            return  # an fsync is pending: the next write rotates instead
        now = time.time()
        if (
            now - self._opened_at >= self.segment_seconds
            or int(now // 3600) != self._opened_hour
            or self._size >= self.segment_max_bytes
        ):
            self._rotate()

    def _rotate(self) -> None:
        if self._fd is None or self._path is None:
            return
        closed = self._path.with_suffix(CLOSED_SUFFIX)
        os.rename(self._path, closed)
        fsync_dir(self.wal_dir)
        os.close(self._fd)  # releases the flock
        self._fd, self._path = None, None
        self._last_closed = closed
        if self.on_rotate is not None:
            with contextlib.suppress(Exception):
                self.on_rotate(closed)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def sealable_segments(wal_dir: Path) -> list[Path]:
    """Closed segments, and active ones whose writer has died, oldest first."""
    if not wal_dir.is_dir():
        return []
    found = [
        p for p in wal_dir.iterdir() if p.suffix in (CLOSED_SUFFIX, ACTIVE_SUFFIX) and p.is_file()
    ]
    return sorted(found, key=lambda p: p.name)
