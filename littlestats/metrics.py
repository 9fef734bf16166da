"""Prometheus metrics, shared by every gunicorn worker (prometheus_client multiprocess mode).

``littlestats serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at ``settings.metrics_dir`` (in
``/dev/shm``, off the data disk: the files are memory-mapped, and a full disk under them would kill
the process with SIGBUS) before the workers start; outside ``serve`` (tests, CLI) metrics live
in-process.
"""

from __future__ import annotations

import bisect
import os
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

EVENTS_ACCEPTED = Counter(
    "littlestats_events_accepted_total", "Events made durable in the write-ahead log."
)
EVENTS_DROPPED = Counter(
    "littlestats_events_dropped_total", "Events answered 2xx but not counted.", ["reason"]
)
EVENTS_REJECTED = Counter(
    "littlestats_events_rejected_total", "Events or requests refused with a 4xx.", ["status"]
)
REQUEST_LATENCY = Histogram(
    "littlestats_track_request_seconds",
    "Latency of POST /api/v2/track, from body read to acknowledgement.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STEP_SECONDS = Counter(
    "littlestats_ingest_step_seconds_total", "Time spent in each enrichment step.", ["step"]
)
SEGMENTS_SEALED = Counter(
    "littlestats_segments_sealed_total", "Write-ahead-log segments sealed into Parquet."
)
WRITE_ERRORS = Counter(
    "littlestats_write_errors_total",
    "Failed writes to the data directory, by part (wal, seal, load, ...) and reason (disk_full, io).",
    ["part", "reason"],
)
DISK_FULL = Gauge(
    "littlestats_disk_full",
    "1 while a process of the server finds the data directory's disk full, else 0.",
    multiprocess_mode="livemax",
)
PROCESS_RESTARTS = Counter(
    "littlestats_process_restarts_total",
    "Restarts of the supervised processes (warehouse, live) after they stopped unexpectedly.",
    ["process"],
)


class TrackTally:
    """Accepted events and request latency of the beacon endpoint, added to the metrics in bulk.

    In multiprocess mode every increment of a Prometheus value is a locked write to a memory-mapped
    file plus a ``getpid()`` system call; a beacon made four of them. The request path counts here
    instead, in plain numbers, and ``flush`` adds them to ``EVENTS_ACCEPTED`` and
    ``REQUEST_LATENCY`` at most every ``FLUSH_SECONDS`` (and before ``/metrics`` answers), so a
    scrape is never more than that behind the requests served.
    """

    FLUSH_SECONDS = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bounds = list(REQUEST_LATENCY._upper_bounds)  # the histogram's buckets, +Inf last
        self._reset()
        self._flushed_at = time.monotonic()

    def _reset(self) -> None:
        self._accepted = 0
        self._latency_sum = 0.0
        self._latency_counts = [0] * len(self._bounds)

    def record(self, accepted: int, seconds: float) -> None:
        with self._lock:
            self._accepted += accepted
            self._latency_sum += seconds
            self._latency_counts[bisect.bisect_left(self._bounds, seconds)] += 1
        if time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            accepted, latency_sum, counts = self._accepted, self._latency_sum, self._latency_counts
            self._reset()
            self._flushed_at = time.monotonic()
        if accepted:
            EVENTS_ACCEPTED.inc(accepted)
        if any(counts):
            # prometheus_client has no bulk observe: add to the histogram's sum and buckets as
            # `observe` would, one increment per bucket rather than per request.
            REQUEST_LATENCY._sum.inc(latency_sum)
            for bucket, count in zip(REQUEST_LATENCY._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)


TRACK = TrackTally()


def mark_dead(pid: int) -> None:
    """Forget the ``live*`` gauges of a process that has ended (gunicorn's ``child_exit`` and the
    supervisor call this), so a dead worker's last value does not stick."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def render() -> tuple[bytes, str]:
    """The metrics text of every worker (or of this process outside ``serve``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
