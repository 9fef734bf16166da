"""Enrichment: a validated beacon becomes a raw event, or is dropped with a typed reason.

Reading ``STEPS`` is reading the design (after Plausible's ingestion pipeline). Each step either
enriches the event in place or returns a ``Drop``. Dropped events are answered 2xx (a bot must not
learn it was spotted) and counted by reason in the metrics.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingest.beacon import Beacon, BeaconError
from ingest.geo import CountryLookup
from ingest.identity import fallback_visitor_key, tracker_visitor_key
from ingest.referrer import classify_referrer, strip_www
from ingest.useragent import classify
from littlestats.controlplane import Site

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
TIMING_SAMPLE = 16


class Drop(enum.StrEnum):
    """Why an accepted request's event was not counted."""

    PREFETCH = "prefetch"
    BOT = "bot"
    HEADLESS = "headless"
    DO_NOT_TRACK = "do_not_track"
    EXCLUDED_IP = "excluded_ip"
    EXCLUDED_PATH = "excluded_path"
    HOSTNAME_NOT_ALLOWED = "hostname_not_allowed"


@dataclass(slots=True)
class RequestContext:
    """What the request (not the event body) tells us. The IP lives only here, in memory."""

    site: Site
    ip: str | None
    user_agent: str
    headers: dict[str, str]
    received_ms: int
    salt_for: Callable[[date], bytes]
    client_ts_window_ms: int = 24 * 3600 * 1000
    # receive time − the client's `sentAt`: how far the client's clock is behind ours.
    clock_offset_ms: int = 0


@dataclass(slots=True)
class Draft:
    beacon: Beacon
    ctx: RequestContext
    event: dict[str, Any] = field(default_factory=dict)


Step = Callable[[Draft], Drop | None]


def uuid7(ms: int) -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, 74 random bits."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 68 & 0xFFF) << 64
        | 0b10 << 62
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- steps --------------------------------------------------------------------------------------


def drop_prefetch(d: Draft) -> Drop | None:
    h = d.ctx.headers
    if "prefetch" in (h.get("purpose", "") + h.get("sec-purpose", "") + h.get("x-moz", "")).lower():
        return Drop.PREFETCH
    return None


def drop_bots(d: Draft) -> Drop | None:
    info = classify(d.beacon.user_agent or d.ctx.user_agent)
    if info.verdict == "bot":
        return Drop.BOT
    if info.verdict == "headless":
        return Drop.HEADLESS
    e = d.event
    e["browser"], e["browser_version"] = info.browser, info.browser_version
    e["os"], e["os_version"], e["device"] = info.os, info.os_version, info.device
    return None


def drop_do_not_track(d: Draft) -> Drop | None:
    if d.ctx.site.settings.respect_dnt:
        h = d.ctx.headers
        if h.get("dnt") == "1" or h.get("sec-gpc") == "1":
            return Drop.DO_NOT_TRACK
    return None


def drop_excluded_ip(d: Draft) -> Drop | None:
    excluded = d.ctx.site.settings.excluded_ips
    if excluded and d.ctx.ip:
        try:
            addr = ipaddress.ip_address(d.ctx.ip)
            if any(addr in ipaddress.ip_network(n, strict=False) for n in excluded):
                return Drop.EXCLUDED_IP
        except ValueError:
            pass
    return None


@functools.lru_cache(maxsize=16384)
def split_url(url: str) -> tuple[str | None, str, str | None]:
    """(hostname, pathname, query) of a page URL; hash routes (``#/pricing``) are part of the path."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower() or None
    except ValueError:
        parts, host = urlsplit("/"), None
    path = parts.path or "/"
    if parts.fragment.startswith("/"):
        path = path.rstrip("/") + "/#" + parts.fragment
    if not path.startswith("/"):
        path = "/" + path
    return host, path, parts.query or None


@functools.lru_cache(maxsize=16384)
def utm_tags(query: str | None) -> tuple[str | None, ...]:
    """The UTM fields of a query string, in ``UTM_FIELDS`` order."""
    values = parse_qs(query, keep_blank_values=False) if query else {}
    return tuple((values[k][0][:500] if k in values else None) for k in UTM_FIELDS)


def put_url(d: Draft) -> Drop | None:
    host, path, query = split_url(d.beacon.url)
    settings = d.ctx.site.settings
    if host and settings.allowed_hostnames:
        allowed = {strip_www(h.lower()) for h in settings.allowed_hostnames}
        if strip_www(host) not in allowed and not any(
            a.startswith("*.") and host.endswith(a[1:]) for a in allowed
        ):
            return Drop.HOSTNAME_NOT_ALLOWED
    if any(_path_matches(path, pattern) for pattern in settings.excluded_paths):
        return Drop.EXCLUDED_PATH
    d.event.update(hostname=host, pathname=path, query=query)
    return None


def _path_matches(path: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def put_utm(d: Draft) -> Drop | None:
    d.event.update(zip(UTM_FIELDS, utm_tags(d.event.get("query")), strict=True))
    return None


def put_referrer(d: Draft) -> Drop | None:
    referral = classify_referrer(
        d.beacon.referrer, d.event.get("hostname"), d.ctx.site.domain, d.event.get("utm_source")
    )
    d.event.update(
        referrer=referral.referrer, referrer_domain=referral.domain, source=referral.source
    )
    return None


def put_geolocation(d: Draft, lookup: CountryLookup, country_header: str) -> Drop | None:
    country = None
    if country_header:
        value = d.ctx.headers.get(country_header.lower(), "").strip().upper()
        if len(value) == 2 and value.isalpha() and value not in ("XX", "T1"):
            country = value
    d.event["country"] = country or lookup.country(d.ctx.ip)
    return None


def put_props(d: Draft) -> Drop | None:
    props = d.beacon.props
    strings = {k: v for k, v in props.items() if isinstance(v, str)}
    numbers = {k: v for k, v in props.items() if isinstance(v, float)}
    bools = {k: v for k, v in props.items() if isinstance(v, bool)}
    d.event.update(props_str=strings or None, props_num=numbers or None, props_bool=bools or None)
    return None


def put_visitor_key(d: Draft) -> Drop | None:
    site = d.ctx.site
    if d.beacon.visitor_id:
        d.event["visitor_key"] = tracker_visitor_key(site.secret, d.beacon.visitor_id)
        d.event["visitor_key_source"] = "tracker"
    else:
        day = datetime.fromtimestamp(d.ctx.received_ms / 1000, tz=UTC).date()
        d.event["visitor_key"] = fallback_visitor_key(
            d.ctx.salt_for(day), site.id, d.ctx.ip or "", d.beacon.user_agent or d.ctx.user_agent
        )
        d.event["visitor_key_source"] = "fallback"
    return None


def put_time(d: Draft) -> Drop | None:
    """Event time: the client's ``ts`` corrected by the batch's clock offset, never in the future.

    A buffered event keeps its real time. A client clock that runs fast or slow is corrected by
    ``sentAt`` when the batch carries it; without it, a time ahead of ours is clamped to the
    receive time (a fast clock must not lose the visitor's events).
    """
    now = d.ctx.received_ms
    ts = d.beacon.ts
    if ts is None:
        ts = now
    else:
        ts += d.ctx.clock_offset_ms
        if ts > now:
            ts = now
        elif now - ts > d.ctx.client_ts_window_ms:
            raise BeaconError("'ts' is older than the accepted window for buffered events (24 h)")
    d.event["ts"] = ts
    d.event["received_at"] = now
    d.event["event_id"] = uuid7(ts)
    return None


def put_fields(d: Draft) -> Drop | None:
    b = d.beacon
    d.event.update(
        site_id=d.ctx.site.id,
        type=b.type,
        name=b.name if b.type == "event" else None,
        title=b.title,
        screen=b.screen,
        language=b.language,
        timezone=b.timezone,
        engagement_ms=b.engagement_ms if b.type in ("page_exit", "engagement") else None,
        user_id=b.user_id if b.type == "identify" else None,
    )
    if b.type == "identify" and not d.event.get("pathname"):
        d.event["pathname"] = "/"
    return None


class Pipeline:
    """The ordered enrichment steps, with per-step timing and drop counts for the metrics."""

    def __init__(self, countries: CountryLookup, country_header: str = "") -> None:
        self.steps: list[tuple[str, Step]] = [
            ("drop_prefetch", drop_prefetch),
            ("drop_bots", drop_bots),  # also puts browser, OS and device
            ("drop_do_not_track", drop_do_not_track),
            ("drop_excluded_ip", drop_excluded_ip),
            ("put_url", put_url),  # drops hostnames not allowed and excluded paths
            ("put_utm", put_utm),
            ("put_referrer", put_referrer),
            ("put_geolocation", lambda d: put_geolocation(d, countries, country_header)),
            ("put_props", put_props),
            ("put_visitor_key", put_visitor_key),
            ("put_time", put_time),  # raises BeaconError for a `ts` out of range
            ("put_fields", put_fields),
        ]
        self.step_seconds: dict[str, float] = {name: 0.0 for name, _ in self.steps}
        self._runs = 0

    def run(self, beacon: Beacon, ctx: RequestContext) -> dict[str, Any] | Drop:
        draft = Draft(beacon, ctx)
        self._runs += 1
        if self._runs % TIMING_SAMPLE != 1:
            for _, step in self.steps:
                outcome = step(draft)
                if outcome is not None:
                    return outcome
            return draft.event
        # One run in TIMING_SAMPLE is timed step by step (scaled up), so the metrics show where
        # time goes without taxing every event.
        clock = time.perf_counter
        timings = self.step_seconds
        for name, step in self.steps:
            started = clock()
            outcome = step(draft)
            timings[name] += (clock() - started) * TIMING_SAMPLE
            if outcome is not None:
                return outcome
        return draft.event
