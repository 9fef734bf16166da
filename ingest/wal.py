"""Write-ahead log: the durable, per-worker append path.

Every ingest worker appends to its own segment file — no locks between workers. A request's events
are acknowledged only after the segment has been fsynced; one writer thread gathers the events of
many concurrent requests into each fsync (group commit).

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
import os
import queue
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
ACTIVE_SUFFIX = ".seg"
CLOSED_SUFFIX = ".closed"


def new_segment_id(now: float | None = None) -> str:
    """Segment ids sort by creation time and never collide across processes."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"


def encode_record(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> Iterator[bytes]:
    """Every intact record of a segment, stopping at the first torn or corrupt one."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + length
        if length > MAX_RECORD or end > len(data):
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        yield payload
        offset = end


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


@dataclass
class _Pending:
    payloads: list[bytes]
    done: Callable[[BaseException | None], None]


class SegmentWriter:
    """Appends records to this process's active segment with group commit.

    ``append`` is thread-safe and returns at once; ``done`` is called from the writer thread once
    the records are on disk (or with the exception that stopped them). ``on_rotate`` is called with
    the path of each closed segment, e.g. to seal it into Parquet.
    """

    def __init__(
        self,
        wal_dir: Path,
        segment_seconds: float = 30.0,
        group_commit_ms: float = 2.0,
        on_rotate: Callable[[Path], None] | None = None,
    ) -> None:
        self.wal_dir = wal_dir
        self.segment_seconds = segment_seconds
        self.group_commit = group_commit_ms / 1000.0
        self.on_rotate = on_rotate
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._opened_hour = -1
        self._bytes = 0
        self._closed = False
        self.fsyncs = 0
        wal_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    # public API ------------------------------------------------------------------------------
    def append(self, payloads: list[bytes], done: Callable[[BaseException | None], None]) -> None:
        if self._closed:
            done(RuntimeError("the write-ahead log is closed"))
            return
        self._queue.put(_Pending(payloads, done))

    async def append_async(self, payloads: list[bytes]) -> None:
        """Append and wait until the records are durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(exc: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, exc)

        self.append(payloads, done)
        await fut

    def close(self) -> Path | None:
        """Flush, stop the writer thread and close the active segment; return its closed path."""
        if self._closed:
            return None
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        return self._last_closed

    @property
    def active_path(self) -> Path | None:
        return self._path

    # writer thread ----------------------------------------------------------------------------
    _last_closed: Path | None = None

    def _run(self) -> None:
        timeout = max(0.05, min(1.0, self.segment_seconds / 4))
        while True:
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._maybe_rotate()
                continue
            if first is None:
                self._rotate()
                return
            batch = [first]
            stop = False
            deadline = time.monotonic() + self.group_commit
            # Gather whatever else arrives within the group-commit window into this fsync.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                self._rotate()
                return
            self._maybe_rotate()

    def _commit(self, batch: list[_Pending]) -> None:
        error: BaseException | None = None
        try:
            self._maybe_rotate()
            if self._fd is None:
                self._open()
            assert self._fd is not None
            data = b"".join(encode_record(p) for item in batch for p in item.payloads)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
            self._bytes += len(data)
            self.fsyncs += 1
        except BaseException as exc:  # the requests must hear about it, not hang
            error = exc
        for item in batch:
            item.done(error)

    def _open(self) -> None:
        now = time.time()
        path = self.wal_dir / (new_segment_id(now) + ACTIVE_SUFFIX)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fsync_dir(self.wal_dir)
        self._fd, self._path = fd, path
        self._opened_at = now
        self._opened_hour = int(now // 3600)
        self._bytes = 0

    def _maybe_rotate(self) -> None:
        if self._fd is None:
            return
        now = time.time()
        if now - self._opened_at >= self.segment_seconds or int(now // 3600) != self._opened_hour:
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
