"""Rotation on request: ``littlestats load`` sees every event accepted before it started.

Each worker's active segment rotates by itself every ``segment_seconds``; until then its events are
not in any Parquet file, so a load by hand would miss them. ``rotate_active_segments`` (run by the
load) asks every worker to rotate at once and waits until they have:

1. It notes the active segments that live writers hold (their ``flock`` is taken). Every event
   acknowledged before this moment is in one of them or in a segment already closed; a segment
   opened later holds only later events.
2. It writes a new request file, ``<run-dir>/rotate-request`` (written aside and renamed in place).
3. Every worker runs a ``RotationWatch``: a thread that looks at the file a few times a second and,
   when it changes, rotates the worker's segment under the writer's lock — a group commit is
   written wholly before the rotation or wholly after, so nothing is lost or written twice.
4. The load waits until each noted segment is renamed to ``.closed`` and its writer has let go of
   it (a sealer skips a locked file), then seals and loads as usual.

A file rather than a signal or an HTTP call because workers are separate processes that a caller
cannot address one by one (the kernel spreads connections among them), and a file needs no
cooperation from gunicorn. A worker that does not answer within the timeout (stopped, or
overloaded) is reported and its events wait for its own rotation and the next load.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ingest.wal import ACTIVE_SUFFIX, CLOSED_SUFFIX, SegmentWriter, try_lock

log = logging.getLogger(__name__)

REQUEST_FILE = "rotate-request"
# How often a worker looks for a request: a `stat` call, so a load waits at most this long.
POLL_SECONDS = 0.2
WAIT_SECONDS = 10.0


def _request_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class RotationWatch:
    """A worker's thread that rotates its active segment whenever a new request file appears."""

    def __init__(self, run_dir: Path, writer: SegmentWriter, poll_seconds: float = POLL_SECONDS) -> None:
        self.path = run_dir / REQUEST_FILE
        self.writer = writer
        self.poll_seconds = poll_seconds
        self._seen = _request_key(self.path)  # a request older than the worker is already met
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-watch", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (and wait for the thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            key = _request_key(self.path)
            if key is None or key == self._seen:
                continue
            self._seen = key
            try:
                self.writer.rotate_now()
            except Exception:  # the next request, or the timed rotation, tries again
                log.exception("rotating the write-ahead log on request failed")


def _held(path: Path) -> bool:
    """Whether a live process holds ``path``'s lock (a writer, or a sealer at work on it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)  # releases the lock if we took it


def held_active_segments(wal_dir: Path) -> list[Path]:
    """Active segments whose writers are alive (an orphan's lock is free; sealing takes it)."""
    if not wal_dir.is_dir():
        return []
    return sorted(p for p in wal_dir.iterdir() if p.suffix == ACTIVE_SUFFIX and _held(p))


def request_rotation(run_dir: Path) -> None:
    """Ask every worker's ``RotationWatch`` to rotate now."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REQUEST_FILE
    tmp = path.with_name(f".{REQUEST_FILE}.{os.getpid()}")
    tmp.write_text(f"{time.time():.6f} {secrets.token_hex(8)}\n")
    os.replace(tmp, path)  # a new inode each time: a watcher cannot mistake it for the last one


def _rotated(segment: Path) -> bool:
    closed = segment.with_suffix(CLOSED_SUFFIX)
    if segment.exists():
        return not _held(segment)  # its writer died: sealing takes it as it is
    return not _held(closed)  # renamed; done once the writer has let go (or it is sealed)


def wait_for_rotation(segments: Iterable[Path], timeout: float = WAIT_SECONDS) -> list[Path]:
    """Wait until every segment has been rotated and released; those that were not in time."""
    waiting = list(segments)
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [s for s in waiting if not _rotated(s)]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return waiting


def rotate_active_segments(wal_dir: Path, run_dir: Path, timeout: float = WAIT_SECONDS) -> list[Path]:
    """Have every live worker rotate its active segment, and wait for it (see the module's text).

    Returns the segments whose writers did not rotate within ``timeout`` seconds (normally none).
    """
    active = held_active_segments(wal_dir)
    if not active:
        return []
    request_rotation(run_dir)
    late = wait_for_rotation(active, timeout)
    for segment in late:
        log.warning("the writer of %s did not rotate it within %.0f s; its events are loaded after"
                    " its own rotation (every segment_seconds)", segment.name, timeout)
    return late

