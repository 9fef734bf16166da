"""The ASGI application every gunicorn (uvicorn) worker serves.

ASGI rather than WSGI because Falcon serves WebSockets only under ASGI, and the real-time feed
needs them. Each worker builds its own ``Services`` at startup (after the fork): its own
write-ahead-log segment, its own control-plane connection, its own caches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import orjson

from ingest.geo import CountryLookup
from ingest.pipeline import Pipeline
from ingest.resource import DailySalts, TrackResource
from ingest.rotation import RotationWatch
from ingest.seal import seal_all, seal_segment
from ingest.useragent import classify
from ingest.wal import SegmentWriter
from littlestats import metrics
from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, SiteCache
from littlestats.disk import DISK, MIN_FREE_BYTES, RETRY_AFTER_SECONDS, free_bytes, is_disk_full
from littlestats.http import PublicCORS, error_serializer, json_response, unexpected_error

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a worker's resources share. Built once per worker process."""

    settings: Settings
    control: ControlPlane
    sites: SiteCache
    pipeline: Pipeline
    wal: SegmentWriter
    salts: DailySalts
    sealer: ThreadPoolExecutor
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        settings.ensure_dirs()
        control = _open_control_plane(settings)
        sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sealer")
        # Rotated segments are sealed by the warehouse process, not here: sealing is CPU work
        # that would compete with requests for this worker's GIL.
        wal = SegmentWriter(settings.wal_dir, segment_seconds=settings.segment_seconds)
        services = cls(
            settings=settings,
            control=control,
            sites=SiteCache(control),
            pipeline=Pipeline(CountryLookup(settings.geoip_mmdb), settings.country_header,
                              referrer_spam=settings.drop_referrer_spam,
                              datacenter_ips=settings.drop_datacenter_ips),
            wal=wal,
            salts=DailySalts(control),
            sealer=sealer,
        )
        # Segments left by crashed workers are sealed by whichever worker starts next.
        sealer.submit(_seal_orphans, settings)
        # Compile the user-agent rules now, not on the first beacon (it takes a few hundred ms).
        classify("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
        return services

    def stop(self) -> None:
        closed = self.wal.close()
        self.sealer.shutdown(wait=True)
        if closed is not None:
            _seal_one(closed, self.settings.raw_dir)
        self.flush_metrics()

    def flush_metrics(self) -> None:
        """Add what this worker counted in plain numbers to the shared metrics."""
        metrics.TRACK.flush()
        timings = self.pipeline.step_seconds
        for step, seconds in list(timings.items()):
            if seconds:
                metrics.STEP_SECONDS.labels(step=step).inc(seconds)
                timings[step] = 0.0


def _open_control_plane(settings: Settings) -> ControlPlane:
    """The control plane, waiting while the disk is too full to open it.

    Opening SQLite creates its log files when no other process has the database open, which fails
    on a full disk. A worker that failed to start would make gunicorn stop the whole server, so a
    worker started meanwhile waits here for space (gunicorn replaces it if that takes longer than
    its timeout) instead.
    """
    while True:
        try:
            return ControlPlane(settings.control_db)
        except sqlite3.Error as exc:
            if not (is_disk_full(exc) or free_bytes(settings.data_dir) < MIN_FREE_BYTES):
                raise
            DISK.failed("control", exc, settings.control_db)
        time.sleep(1.0)


def _seal_one(path: Path, raw_dir: Path) -> None:
    try:
        if seal_segment(path, raw_dir) is not None:
            metrics.SEGMENTS_SEALED.inc()
    except Exception:
        log.exception("sealing %s failed; it stays in the WAL and is retried", path)


def _seal_orphans(settings: Settings) -> None:
    results = seal_all(settings.wal_dir, settings.raw_dir)
    if results:
        metrics.SEGMENTS_SEALED.inc(len(results))


class Lifecycle:
    """Builds the worker's services at ASGI startup and closes them (sealing the WAL) at shutdown."""

    def __init__(self, app: LittleStatsApp) -> None:
        self.app = app

    async def process_startup(self, scope: Any, event: Any) -> None:
        self.app.startup()

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        self.app.shutdown()


class Liveness:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        json_response(resp, {"status": "ok"})


class Readiness:
    """``GET /readyz``: each part of the server, and whether this worker can accept beacons.

    ``parts``: ``ingest`` (control plane readable, write-ahead log open and writable, disk not
    full), ``warehouse`` (the warehouse process answers on its socket), ``live`` (the live service
    accepts connections), ``disk`` (free space of the data directory's disk). Each has a
    ``status``: ``up``, ``starting``, ``restarting`` (the supervisor restarts it after a stop),
    ``down``; ``disk``: ``ok`` or ``full``.

    The answer is 503 (with ``Retry-After``) when ingest is not up: beacons sent here would be
    refused, so a load balancer should send them elsewhere. While only the warehouse or the live
    service is down the answer stays 200 with ``"status": "degraded"`` (beacons are still taken;
    queries or live streams answer 503 meanwhile); ``?strict=1`` makes any part that is not up a
    503, for a check that guards the query API too.
    """

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        settings = self.services.settings
        supervised = _supervisor_state(settings)
        warehouse, live = await asyncio.gather(
            asyncio.to_thread(_warehouse_part, settings, supervised.get("warehouse")),
            _live_part(settings, supervised.get("live")),
        )
        disk = _disk_part(settings)
        ingest = self._ingest_part(disk)
        parts = {"ingest": ingest, "warehouse": warehouse, "live": live, "disk": disk}
        others_up = all(p["status"] in ("up", "in-process") for p in (warehouse, live))
        ready = ingest["status"] == "up" and (others_up or not req.get_param_as_bool("strict"))
        status = "not ready" if not ready else ("ready" if others_up else "degraded")
        problems = [f"{name}: {problem}" for name, part in parts.items()
                    for problem in part.get("problems", [])]
        json_response(resp, {"status": status, "parts": parts, "problems": problems},
                      falcon.HTTP_200 if ready else falcon.HTTP_503)
        if not ready:
            resp.set_header("Retry-After", str(RETRY_AFTER_SECONDS))

    def _ingest_part(self, disk: dict[str, Any]) -> dict[str, Any]:
        problems = []
        try:
            self.services.control.list_sites(member_id="")
        except Exception as exc:
            problems.append(f"control plane: {exc}")
        if self.services.wal.closed:
            problems.append("write-ahead log is closed")
        if not os.access(self.services.settings.wal_dir, os.W_OK):
            problems.append(f"{self.services.settings.wal_dir} is not writable")
        if disk["status"] != "ok":
            problems.append("the disk is full: beacons are refused with 503")
        return {"status": "up" if not problems else "down", "problems": problems}


def _supervisor_state(settings: Settings) -> dict[str, dict[str, Any]]:
    """What ``serve``'s supervisor says of each helper process (empty outside ``serve``)."""
    from littlestats.server import STATE_FILE

    try:
        state = orjson.loads((settings.run_dir / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _down(supervised: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A part that does not answer: restarting (with when), starting, or down."""
    if supervised is None:
        return {"status": "down", "problems": [f"{what} does not answer"]}
    part = {"status": supervised.get("state", "down"), "restarts": supervised.get("restarts", 0)}
    if supervised.get("state") == "restarting":
        part["nextStart"] = supervised.get("nextStart")
        part["lastExit"] = supervised.get("lastExit")
        part["problems"] = [f"{what} stopped ({supervised.get('lastExit')}); the server restarts it"]
    else:
        part["status"] = "starting"
        part["problems"] = [f"{what} is starting"]
    return part


def _warehouse_part(settings: Settings, supervised: dict[str, Any] | None) -> dict[str, Any]:
    from warehouse.client import WarehouseClient

    if WarehouseClient(settings).available():
        return {"status": "up", "restarts": (supervised or {}).get("restarts", 0)}
    return _down(supervised, "the warehouse process")


async def _live_part(settings: Settings, supervised: dict[str, Any] | None) -> dict[str, Any]:
    from api.live_service import socket_path

    path = socket_path(settings)
    if supervised is None and not path.exists():
        return {"status": "in-process"}  # served without ``serve``: each worker follows the WAL
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return _down(supervised, "the live service")
    writer.close()
    return {"status": "up", "restarts": (supervised or {}).get("restarts", 0)}


def _disk_part(settings: Settings) -> dict[str, Any]:
    try:
        room = free_bytes(settings.data_dir)
    except OSError as exc:
        return {"status": "full", "problems": [f"cannot read free space: {exc}"]}
    if DISK.full or room < MIN_FREE_BYTES:
        return {"status": "full", "freeBytes": room,
                "problems": [f"{room:,} bytes free on the disk of {settings.data_dir}"]}
    return {"status": "ok", "freeBytes": room}


class Metrics:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self.services.flush_metrics()
        resp.data, resp.content_type = metrics.render()


class LittleStatsApp:
    """Holds the Falcon app and the worker's services, and wires resources to routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        middleware: list[Any] = [Lifecycle(self), PublicCORS()]
        self.falcon = falcon.asgi.App(middleware=middleware, cors_enable=False)
        self.falcon.set_error_serializer(error_serializer)
        self.falcon.add_error_handler(Exception, unexpected_error)
        self.falcon.req_options.strip_url_path_trailing_slash = True
        self._timer: threading.Timer | None = None
        self._rotation: RotationWatch | None = None

    def startup(self) -> None:
        if self.services is not None:
            raise RuntimeError("the application is already started")
        self.services = Services.start(self.settings)
        self.add_routes(self.services)
        self._schedule_housekeeping()
        # `littlestats load` asks every worker to rotate its segment now (ingest.rotation).
        self._rotation = RotationWatch(self.settings.run_dir, self.services.wal)
        self._rotation.start()
        # What start-up built (parser rules, routes, modules) lives as long as the worker: keep it
        # out of the cyclic collector's scans. A request's garbage is freed by reference counting,
        # so the young generation is collected every 10,000 allocations rather than 700; the
        # collector was ~10 % of a busy ingest worker's CPU.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._rotation is not None:
            self._rotation.stop()
        if self.services is not None:
            self.services.stop()

    def _schedule_housekeeping(self) -> None:
        def tick() -> None:
            if self.services is not None:
                self.services.flush_metrics()
                try:
                    self.services.wal.maybe_rotate()  # an idle worker's segment is sealed on time
                except OSError as exc:
                    DISK.failed("wal", exc)
                DISK.recheck(self.settings.data_dir)
            self._schedule_housekeeping()

        interval = min(5.0, max(0.1, self.settings.segment_seconds / 4))
        self._timer = threading.Timer(interval, tick)
        self._timer.daemon = True
        self._timer.start()

    def add_routes(self, services: Services) -> None:
        app = self.falcon
        app.add_route("/healthz", Liveness())
        app.add_route("/readyz", Readiness(services))
        app.add_route("/metrics", Metrics(services))
        app.add_route(
            "/api/v2/track/{site}",
            TrackResource(services.settings, services.sites, services.pipeline, services.wal, services.salts),
        )
        # Later components register their routes here (tracker script, query API, real time).
        for module_name in ("tracker.resource", "api.routes", "api.realtime", "dashboard.routes"):
            try:
                module = __import__(module_name, fromlist=["add_routes"])
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                continue
            module.add_routes(app, services)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # a refused upgrade gets its HTTP status (401, 404), not 403
            from api.realtime import websocket_refusals

            await websocket_refusals(self.falcon, scope, receive, send)
            return
        await self.falcon(scope, receive, send)


def create_app(settings: Settings | None = None) -> LittleStatsApp:
    """The ASGI entry point (``littlestats.app:create_app()``); settings from the environment."""
    from littlestats.config import load_settings

    return LittleStatsApp(settings or load_settings())
