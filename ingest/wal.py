"""Write-ahead log: the durable, per-worker append path.

Every ingest worker appends to its own segment file — no locks between workers. A request's events
are acknowledged only once they are on disk; the requests that arrive together share one durable
write (group commit).

Segment files live in ``wal/``:

* ``<segment-id>.seg``    — being written; its writer holds an exclusive ``flock`` on it.
* ``<segment-id>.closed`` — rotated (every ``segment_seconds`` and at each UTC hour), ready to seal.

A ``.seg`` whose lock can be taken belongs to a dead process (``kill -9``) and is sealed like a
closed one. Records are ``<u32 length><u32 crc32><payload>``; a torn record at the tail of a crashed
segment was never acknowledged and is ignored.

An active segment is zero-filled ahead of its records (``ZERO_FILL`` bytes at a time, each fill a
durable write) and records overwrite the zeros in place: a durable write that does not change the
file's size needs no journal commit, which halves what each group commit costs (measured on ext4:
~150 against ~290 µs a write, ~45 against ~85 µs of CPU). The fills are made by a background
thread, ahead of need, so the event loop does not wait for them (~2.5 ms each). So a reader of an
active or crashed segment stops at a zero length (a payload is never empty): nothing has been
written there yet. A rotated segment is cut back to its records.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
ACTIVE_SUFFIX = ".seg"
CLOSED_SUFFIX = ".closed"
# Group commit pacing (see SegmentWriter): the event loop serves requests at least this long
# between two durable writes.
COMMIT_INTERVAL = 0.002
# How far ahead of its records an active segment is zero-filled, in one durable write (~2.5 ms
# for 1 MiB here; a segment of single beacons grows ~1.5 MB/s a worker at full load, of batches
# ~15 MB/s). The next fill starts in the background once less than FILL_AHEAD is left.
ZERO_FILL = 1 << 20
FILL_AHEAD = ZERO_FILL // 2
_ZEROS = bytes(ZERO_FILL)


_sequence = itertools.count()


def new_segment_id(now: float | None = None) -> str:
    """Segment ids sort by creation time (and, within a process, by sequence) and never collide."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}-{os.getpid()}-{next(_sequence):06d}-{secrets.token_hex(3)}"



_pack_header = HEADER.pack
_crc32 = zlib.crc32


def add_record(records: bytearray, payload: bytes) -> None:
    """Append one encoded record to a request's buffer of records (``commit_async`` takes it).

    A request's records go into one buffer as each event is serialised, and the event's own
    ``bytes`` is freed at once: keeping dozens of freshly serialised events alive until the commit
    fragmented the C allocator's free lists (orjson sizes its output buffer generously and shrinks
    it), which made every serialisation several times slower under load.
    """
    records += _pack_header(len(payload), _crc32(payload))
    records += payload


def encode_record(payload: bytes) -> bytes:
    """One record as it is stored: header (length, CRC-32), then the payload."""
    return bytes(encode_records([payload]))


def encode_records(payloads: list[bytes]) -> bytearray:
    """Records as they are stored, one after another (``add_record`` for each)."""
    records = bytearray()
    for payload in payloads:
        add_record(records, payload)
    return records


def read_records(path: Path) -> Iterator[bytes]:
    """Every intact record of a segment, streamed, stopping at the first torn or corrupt one, and at
    the zero-filled space after the last record of an active (or crashed) segment."""
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                return
            length, crc = HEADER.unpack(header)
            if length == 0 or length > MAX_RECORD:
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
    """Appends records to this process's active segment; nobody is told before they are on disk.

    ``commit_soon`` (a request's records, built with ``add_record``, and a callback) is the request
    path, a paced group commit on the event loop: requests queue their records and go on; a commit
    writes everything queued with one ``O_DSYNC`` write (it returns once the data is on disk) and
    then calls every queued callback (the beacon endpoint's releases the request's held answer, see
    ``littlestats.worker``). ``commit_async`` is the same for a caller that awaits. A commit starts
    no sooner than ``commit_interval`` seconds after the previous one ended: under load each
    durable write carries every request of the last few milliseconds, while a request arriving at
    an idle worker commits at once, and ``commit_now`` ends the wait when the caller knows that no
    other request can join (every client of the worker waits for an answer). There is no thread
    hand-off: with one, every commit cost a few GIL transfers and wake-ups, about what it saved by
    not blocking the loop.

    ``append`` is the synchronous equivalent. Segments rotate (rename to ``.closed``) after
    ``segment_seconds``, at each UTC hour and past ``segment_max_bytes``; ``maybe_rotate`` is also
    called by a timer so an idle worker's segment is sealed on time. ``on_rotate`` receives each
    closed segment's path.
    """

    def __init__(
        self,
        wal_dir: Path,
        segment_seconds: float = 30.0,
        on_rotate: Callable[[Path], None] | None = None,
        segment_max_bytes: int = 32 * 1024 * 1024,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        self.wal_dir = wal_dir
        self.segment_seconds = segment_seconds
        # Also rotate by size, so sealing a segment needs bounded memory whatever the traffic.
        self.segment_max_bytes = segment_max_bytes
        self.commit_interval = commit_interval
        self.on_rotate = on_rotate
        # Held while the segment file changes: a write, a rotation (the housekeeping timer rotates
        # from its own thread).
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._opened_hour = -1
        self._size = 0  # bytes of records in the active segment, on disk
        self._filled = 0  # bytes of the active segment on disk: records, then zeros
        # The zero fill under way in the background (it writes past `_filled`, where no record
        # goes until it is done), and the thread that makes it (started on first use).
        self._filling: Future[int] | None = None
        self._filler: ThreadPoolExecutor | None = None
        self._closed = False
        self._last_closed: Path | None = None
        # The next group commit (event loop side): each request's encoded records.
        self._pending: list[bytes | bytearray] = []
        self._waiters: list[Callable[[BaseException | None], None]] = []
        self._commit_loop: asyncio.AbstractEventLoop | None = None  # set while one is scheduled
        self._commit_timer: asyncio.TimerHandle | None = None  # one waiting out the interval
        self._next_commit_at = 0.0  # loop.time() before which no commit starts
        self.fsyncs = 0  # durable writes
        wal_dir.mkdir(parents=True, exist_ok=True)

    # public API ------------------------------------------------------------------------------
    def append(self, payloads: list[bytes]) -> None:
        """Append records and return once they are on disk."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the write-ahead log is closed")
            self._write([encode_records(payloads)])

    async def append_async(self, payloads: list[bytes]) -> None:
        """Append records; resolves once they are on disk, sharing the write with other requests."""
        await self.commit_async(encode_records(payloads))

    async def commit_async(self, records: bytes | bytearray) -> None:
        """Append encoded records (``add_record``); resolves once they are on disk, sharing the
        write with other requests."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.commit_soon(records, partial(_settle_future, fut))
        await fut

    def commit_soon(self, records: bytes | bytearray, on_durable: Callable[[BaseException | None], None]) -> None:
        """Queue encoded records for the next group commit, from the event loop; ``on_durable`` is
        called on the loop once they are on disk (with ``None``), or with the error that kept
        them off it. Nothing waits: the caller goes on at once."""
        if self._closed:
            raise RuntimeError("the write-ahead log is closed")
        self._pending.append(records)
        self._waiters.append(on_durable)
        loop = asyncio.get_running_loop()
        if self._commit_loop is not loop:
            self._commit_loop = loop
            wait = self._next_commit_at - loop.time()
            if wait > 0:
                self._commit_timer = loop.call_later(wait, self._commit)
            else:
                # After the callbacks already queued on this loop turn, so every request that is
                # ready right now joins this commit.
                loop.call_soon(self._commit)

    def commit_now(self) -> None:
        """Start the queued commit without waiting out the interval, for a caller that knows no
        other request can join it (every client of the worker waits for an answer)."""
        timer, loop = self._commit_timer, self._commit_loop
        if timer is not None and loop is not None:
            self._commit_timer = None
            timer.cancel()
            loop.call_soon(self._commit)

    def maybe_rotate(self) -> None:
        """Rotate the active segment if it is old enough or its hour has ended."""
        with self._lock:
            self._maybe_rotate()

    def rotate_now(self) -> None:
        """Rotate the active segment now, whatever its age (``ingest.rotation``: a load by hand)."""
        with self._lock:
            self._rotate()

    def close(self) -> Path | None:
        """Commit what is queued, close the active segment and return its closed path."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            chunks, waiters, loop = self._pending, self._waiters, self._commit_loop
            self._pending, self._waiters, self._commit_loop = [], [], None
            if self._commit_timer is not None:
                self._commit_timer.cancel()
                self._commit_timer = None
            error: BaseException | None = None
            try:
                self._write(chunks)
            except OSError as exc:
                error = exc
            _settle_on(loop, waiters, error)
            self._rotate()
            if self._filler is not None:
                self._filler.shutdown(wait=True)
            return self._last_closed

    @property
    def active_path(self) -> Path | None:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    # the group commit (event loop side) -------------------------------------------------------
    def _commit(self) -> None:
        loop, self._commit_loop, self._commit_timer = self._commit_loop, None, None
        chunks, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        if not waiters:
            return  # close() took them
        error: BaseException | None = None
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the write-ahead log is closed")
                self._write(chunks)
        except Exception as exc:  # every waiter hears of it
            error = exc
        if loop is not None:
            self._next_commit_at = loop.time() + self.commit_interval
        _settle_all(waiters, error)

    # file operations (called with the lock held) ----------------------------------------------
    def _write(self, chunks: list[bytes | bytearray]) -> None:
        """Write encoded records after the last durable byte, over the zero fill; returns once
        they are on disk (O_DSYNC)."""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not data:  # also no chunks at all
            return
        self._maybe_rotate()
        if self._fd is None:
            self._open()
        fd = self._fd
        assert fd is not None
        view, offset = memoryview(data), self._size
        try:
            if offset + len(data) > self._filled:
                self._finish_fill()  # the background fill did not keep up: wait for it
                if offset + len(data) > self._filled:
                    self._filled = _zero_fill(fd, self._filled, offset + len(data))
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError:
            self._abandon_tail()
            raise
        self._size = offset
        self.fsyncs += 1
        if self._filled - offset < FILL_AHEAD and self._filling is None:
            self._start_fill(fd)

    def _start_fill(self, fd: int) -> None:
        """Zero-fill the next ``ZERO_FILL`` bytes past ``_filled`` in the background; records keep
        going over the zeros already there meanwhile."""
        if self._filler is None:
            self._filler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-fill")
        self._filling = self._filler.submit(_zero_fill, fd, self._filled, self._filled + 1)

    def _finish_fill(self) -> None:
        """Wait for the background fill, if one is under way, and count its zeros as filled."""
        filling, self._filling = self._filling, None
        if filling is not None:
            self._filled = filling.result()

    def _abandon_tail(self) -> None:
        # A torn record would hide every later one from recovery: cut the segment back to its
        # last complete size and start a fresh one for whatever comes next.
        if self._size == 0 and self._fd is not None and self._path is not None:
            # Nothing of it was ever acknowledged (typically: the disk is full). Remove it rather
            # than leave an empty segment behind for each refused write.
            self._finish_fill()
            fd, path = self._fd, self._path
            self._fd, self._path = None, None
            with contextlib.suppress(OSError):
                os.unlink(path)
                fsync_dir(self.wal_dir)
            os.close(fd)
            return
        self._rotate()  # cuts the segment back to its last complete record

    def _open(self) -> None:
        now = time.time()
        path = self.wal_dir / (new_segment_id(now) + ACTIVE_SUFFIX)
        # O_DSYNC: every write returns only once its data (and the size that finds it) is on disk.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DSYNC, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fsync_dir(self.wal_dir)
        self._fd, self._path = fd, path
        self._size = self._filled = 0
        self._opened_at = now
        self._opened_hour = int(now // 3600)

    def _maybe_rotate(self) -> None:
        if self._fd is None:
            return
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
        self._finish_fill()  # no fill may write past the cut, or to a closed descriptor
        closed = self._path.with_suffix(CLOSED_SUFFIX)
        with contextlib.suppress(OSError):  # without it, readers still stop at the zeros
            os.ftruncate(self._fd, self._size)
        os.rename(self._path, closed)
        fsync_dir(self.wal_dir)
        os.close(self._fd)  # releases the flock
        self._fd, self._path = None, None
        self._last_closed = closed
        if self.on_rotate is not None:
            with contextlib.suppress(Exception):
                self.on_rotate(closed)


def _zero_fill(fd: int, start: int, end: int) -> int:
    """Write durable zeros from ``start`` (the segment's filled size) past ``end``, ``ZERO_FILL``
    bytes at a time; the segment's new filled size.

    If the disk refuses (full, or a file-size limit), the records are written past the zeros all
    the same: a write that extends the file is durable too, only dearer, and may still fit.
    """
    target = (end // ZERO_FILL + 1) * ZERO_FILL
    offset = start
    try:
        while offset < target:
            offset += os.pwrite(fd, memoryview(_ZEROS)[: min(ZERO_FILL, target - offset)], offset)
    except OSError:
        pass
    return offset


def _settle_on(
    loop: asyncio.AbstractEventLoop | None,
    callbacks: list[Callable[[BaseException | None], None]],
    error: BaseException | None,
) -> None:
    """Run the callbacks on their event loop: at once when that is this thread's, else through a
    thread-safe call."""
    if not callbacks:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or loop is running:
        _settle_all(callbacks, error)
    else:
        with contextlib.suppress(RuntimeError):  # that loop has been closed: nobody waits
            loop.call_soon_threadsafe(_settle_all, callbacks, error)


def _settle_all(callbacks: list[Callable[[BaseException | None], None]], error: BaseException | None) -> None:
    for callback in callbacks:
        try:
            callback(error)
        except Exception:  # one failing listener must not keep the others waiting
            log.exception("a commit listener failed")


def _settle_future(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def sealable_segments(wal_dir: Path) -> list[Path]:
    """Closed segments, and active ones whose writer has died, oldest first."""
    if not wal_dir.is_dir():
        return []
    found = [
        p for p in wal_dir.iterdir() if p.suffix in (CLOSED_SUFFIX, ACTIVE_SUFFIX) and p.is_file()
    ]
    return sorted(found, key=lambda p: p.name)
