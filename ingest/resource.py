"""``POST /api/v2/track/{site}``: the beacon endpoint (SPEC §3)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import falcon
import falcon.asgi
import orjson

from ingest.beacon import Beacon, BeaconError, Limits, parse_body
from ingest.geo import client_ip
from ingest.ids import uuid4
from ingest.pipeline import Drop, Pipeline, RequestContext
from ingest.wal import SegmentWriter, add_record
from littlestats import metrics
from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, Site, SiteCache
from littlestats.disk import DISK, RETRY_AFTER_SECONDS, is_disk_full
from littlestats.http import json_response, read_body
from littlestats.worker import ReplacedAnswer, connection_of

log = logging.getLogger(__name__)

VISIT_IDLE_MS = 30 * 60 * 1000


def visit_cache(beacon: Beacon | None, now_ms: int) -> dict[str, Any]:
    """The tracker's visit cache, continued when its last event was under 30 minutes ago.

    Only a hint for the tracker (its idle timer stays in step with ours); the warehouse
    sessionizes from event times and never trusts this value.
    """
    cache = beacon.cache if beacon is not None else None
    if cache:
        visit_id, iat = cache.get("visitId"), cache.get("iat")
        start = cache.get("sessionStart")
        if (
            isinstance(visit_id, str)
            and 0 < len(visit_id) <= 64
            and isinstance(iat, (int, float))
            and 0 <= now_ms - iat < VISIT_IDLE_MS
        ):
            return {
                "visitId": visit_id,
                "iat": now_ms,
                "sessionStart": start if isinstance(start, (int, float)) else iat,
            }
    return {"visitId": uuid4(), "iat": now_ms, "sessionStart": now_ms}


# Below this, receive time − sentAt is mostly network transit, not a wrong clock: correcting by it
# would shift each batch by its own transit time and reorder events across batches.
CLOCK_SKEW_THRESHOLD_MS = 30_000


def clock_offset(sent_at: int | None, now_ms: int) -> int:
    """How far to move a batch's client times: the client clock's error, when it is clearly wrong."""
    if sent_at is None:
        return 0
    offset = now_ms - sent_at
    return offset if abs(offset) > CLOCK_SKEW_THRESHOLD_MS else 0


def refusal_message(exc: BaseException) -> str:
    """Why a beacon's events were not stored, for the client; nothing of them was kept."""
    if DISK.full:
        return (f"the server's disk is full, so the events were not stored; "
                f"retry after {RETRY_AFTER_SECONDS} s")
    return f"the events could not be stored ({exc}); retry after {RETRY_AFTER_SECONDS} s"


def refusal_response(exc: BaseException) -> bytes:
    """The whole HTTP response that replaces a held answer whose events could not be written:
    ``503`` with ``Retry-After``, CORS-readable like every beacon answer, closing the connection."""
    body = orjson.dumps({"error": refusal_message(exc)})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {RETRY_AFTER_SECONDS}\r\n"
        "access-control-allow-origin: *\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def _write_failed(exc: BaseException) -> None:
    if not DISK.failed("wal", exc):
        log.error("write-ahead log write failed: %s; beacons are refused with 503 meanwhile", exc)


class DailySalts:
    """Today's salt, fetched from the control plane once per day per process."""

    def __init__(self, store: ControlPlane) -> None:
        self.store = store
        self._cache: dict[date, bytes] = {}

    def __call__(self, day: date) -> bytes:
        salt = self._cache.get(day)
        if salt is None:
            if len(self._cache) > 4:
                self._cache.clear()
            salt = self._cache[day] = self.store.salt_for(day)
        return salt


class TrackResource:
    def __init__(
        self,
        settings: Settings,
        sites: SiteCache,
        pipeline: Pipeline,
        wal: SegmentWriter,
        salts: DailySalts,
        on_accept: Any = None,
    ) -> None:
        self.settings = settings
        self.sites = sites
        self.pipeline = pipeline
        self.wal = wal
        self.salts = salts
        self.on_accept = on_accept  # e.g. the live buffer; called with the accepted events
        self.limits = Limits(
            max_batch_events=settings.max_batch_events,
            max_props=settings.max_props,
            max_prop_key_length=settings.max_prop_key_length,
            max_prop_value_length=settings.max_prop_value_length,
            max_string_length=settings.max_string_length,
        )
        self.trusted = settings.trusted_networks()
        self.window_ms = settings.client_ts_window_hours * 3600 * 1000

    async def on_options(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        resp.status = falcon.HTTP_204  # PublicCORS adds the preflight headers

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        started = time.perf_counter()
        accepted: int | None = 0
        try:
            accepted = await self._track(req, resp, site, started)
        except falcon.HTTPError as exc:
            metrics.EVENTS_REJECTED.labels(status=str(exc.status_code)).inc()
            raise
        except Exception as exc:
            # A write on the way failed for want of space (today's salt, created at the first
            # beacon of a UTC day, is written to the control plane): 503, as for the WAL.
            if not is_disk_full(exc):
                raise
            DISK.failed("control", exc)
            metrics.EVENTS_REJECTED.labels(status="503").inc()
            raise falcon.HTTPServiceUnavailable(
                description=refusal_message(exc), retry_after=RETRY_AFTER_SECONDS
            ) from None
        finally:
            if accepted is not None:  # None: counted once the held answer is released
                metrics.TRACK.record(accepted, time.perf_counter() - started)

    async def _track(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site_ref: str, started: float
    ) -> int | None:
        """Answer the request; the number of events made durable, or ``None`` when the answer is
        held until they are (the commit's callback then counts them)."""
        body = await read_body(req, self.settings.max_body_bytes)
        site = self.sites.get(site_ref)
        if site is None:
            raise falcon.HTTPNotFound(description=f"unknown site {site_ref!r}; create it with `littlestats sites add`")
        try:
            envelope = parse_body(body, self.limits)
        except BeaconError as exc:
            raise falcon.HTTPError(exc.status, description=str(exc)) from None
        if envelope.batch and envelope.site is not None and not _names(site, envelope.site):
            raise falcon.HTTPBadRequest(description="'siteId' does not match the site in the URL")

        now_ms = int(time.time() * 1000)
        headers = req.headers  # names already lower-case under ASGI
        peer = req.scope.get("client")  # Falcon's remote_addr, without parsing forwarding headers
        ctx = RequestContext(
            site=site,
            ip=client_ip(peer[0] if peer else "127.0.0.1", headers.get("x-forwarded-for"), self.trusted),
            user_agent=headers.get("user-agent", ""),
            headers=headers,
            received_ms=now_ms,
            salt_for=self.salts,
            client_ts_window_ms=self.window_ms,
            clock_offset_ms=clock_offset(envelope.sent_at, now_ms),
        )
        records = bytearray()  # the accepted events, encoded for the WAL (`add_record`)
        count = 0
        # Kept only for a listener: holding every event dict until the commit costs memory.
        accepted: list[dict[str, Any]] | None = [] if self.on_accept is not None else None
        rejected: list[dict[str, Any]] = []
        dropped = 0
        last_beacon: Beacon | None = None
        for index, item in enumerate(envelope.events):
            if isinstance(item, BeaconError):
                rejected.append({"index": index, "error": str(item)})
                continue
            last_beacon = item
            if item.website is not None and not _names(site, item.website):
                rejected.append({"index": index, "error": "'website' does not match the site in the URL"})
                continue
            try:
                outcome = self.pipeline.run(item, ctx)
            except BeaconError as exc:
                rejected.append({"index": index, "error": str(exc)})
                continue
            if isinstance(outcome, Drop):
                metrics.EVENTS_DROPPED.labels(reason=outcome.value).inc()
                dropped += 1
                continue
            add_record(records, orjson.dumps(outcome))
            count += 1
            if accepted is not None:
                accepted.append(outcome)

        if not envelope.batch and rejected:
            raise falcon.HTTPBadRequest(description=rejected[0]["error"])
        held = False
        if count:
            connection = connection_of(req.scope)
            release = connection.hold_response() if connection is not None else None
            if release is not None:
                # Answered without waiting: the worker holds the answer back until the commit is
                # on disk (or answers 503 instead if the write fails).
                on_durable = self._on_durable(release, count, accepted, started)
                held = True
                try:
                    self.wal.commit_soon(records, on_durable)
                except RuntimeError as exc:  # the log is closed: the worker is stopping
                    on_durable(exc)
                else:
                    if connection is not None and connection.all_waiting():
                        self.wal.commit_now()  # nobody else can join this group: don't wait
            else:
                try:
                    await self.wal.commit_async(records)
                except (OSError, RuntimeError) as exc:
                    _write_failed(exc)
                    raise falcon.HTTPServiceUnavailable(
                        description=refusal_message(exc), retry_after=RETRY_AFTER_SECONDS
                    ) from None
                DISK.succeeded()
                if self.on_accept is not None:
                    self.on_accept(accepted)
        if rejected:
            metrics.EVENTS_REJECTED.labels(status="400").inc(len(rejected))

        cache = visit_cache(last_beacon, now_ms)
        if envelope.batch:
            json_response(
                resp,
                {"success": True, "accepted": count, "dropped": dropped,
                 "rejected": rejected, "cache": cache},
            )
        else:
            status = falcon.HTTP_200 if count else falcon.HTTP_202
            json_response(resp, {"success": True, "cache": cache}, status)
        return None if held else count

    def _on_durable(
        self,
        release: Callable[[BaseException | None], None],
        count: int,
        accepted: list[dict[str, Any]] | None,
        started: float,
    ) -> Callable[[BaseException | None], None]:
        """What the group commit calls for a held answer: send it (or drop the connection), then
        count the request as ``on_post`` does for one that waited."""
        on_accept = self.on_accept

        def on_durable(error: BaseException | None) -> None:
            if error is None:
                release(None)
                DISK.succeeded()
            else:
                # Nothing of the request was kept: the client hears 503 and retries, never 200.
                _write_failed(error)
                release(ReplacedAnswer(refusal_response(error)))
                metrics.EVENTS_REJECTED.labels(status="503").inc()
            metrics.TRACK.record(count if error is None else 0, time.perf_counter() - started)
            if error is None and on_accept is not None:
                on_accept(accepted)

        return on_durable


def _names(site: Site, ref: str) -> bool:
    return ref in (site.id, site.domain_key)
