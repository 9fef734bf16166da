"""Prometheus metrics, shared by every gunicorn worker (prometheus_client multiprocess mode).

``littlestats serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at ``<data-dir>/run/metrics`` before the
workers start; outside ``serve`` (tests, CLI) metrics live in-process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
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


def render() -> tuple[bytes, str]:
    """The metrics text of every worker (or of this process outside ``serve``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
