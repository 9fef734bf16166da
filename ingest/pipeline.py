"""Enrichment: a validated beacon becomes a raw event, or is dropped with a typed reason.

Reading the step lists is reading the design (after Plausible's ingestion pipeline). Each step
either enriches the event in place or returns a ``Drop``. Dropped events are answered 2xx (a bot
must not learn it was spotted) and counted by reason in the metrics.

``REQUEST_STEPS`` look only at the request (its headers and IP), so they run once per request and
every event of a batch shares what they found; ``EVENT_STEPS`` run for each event.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit, urlunsplit

from ingest.beacon import Beacon, BeaconError
from ingest.geo import CountryLookup
from ingest.identity import fallback_visitor_key, tracker_visitor_key
from ingest.ids import uuid7
from ingest.referrer import classify_referrer, strip_www
from ingest.schema import COLUMN_NAMES
from ingest.traffic import (
    DatacenterRanges,
    ReferrerSpam,
    bundled_datacenter_ranges,
    bundled_referrer_spam,
)
from ingest.useragent import classify
from littlestats.controlplane import Site

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Query-string parameters an event keeps: the campaign tags and the referral parameters links carry
# (`?ref=`, `?source=`, `?via=`), plus the site's `allowed_query_params`. Every other one is
# dropped before the event is written, from the page URL and the referrer alike: URLs carry e-mail
# addresses, reset tokens and session ids, which must never reach a file. A trailing `*` is a prefix.
KEPT_QUERY_PARAMS = ("utm_*", "ref", "source", "via")
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
    DATACENTER_IP = "datacenter_ip"
    REFERRER_SPAM = "referrer_spam"


@dataclass(slots=True)
class RequestContext:
    """What the request (not the event body) tells us. The IP lives only here, in memory."""

    site: Site
    ip: str | None
    user_agent: str
    headers: Mapping[str, str]
    received_ms: int
    salt_for: Callable[[date], bytes]
    client_ts_window_ms: int = 24 * 3600 * 1000
    # receive time − the client's `sentAt`: how far the client's clock is behind ours.
    clock_offset_ms: int = 0
    # What REQUEST_STEPS found: the fields every event of the request starts from, or the drop
    # that applies to all of them (set by the first Pipeline.run of the request).
    shared: dict[str, Any] | Drop | None = None
    # Why the request's own user agent is not counted (bot, headless), if it is not; its browser,
    # OS and device fields are in `shared` otherwise (set by `read_user_agent`).
    user_agent_drop: Drop | None = None


Event = dict[str, Any]
RequestStep = Callable[[RequestContext, Event], "Drop | None"]
EventStep = Callable[[Beacon, RequestContext, Event], "Drop | None"]


# --- request steps: once per request -------------------------------------------------------


def drop_prefetch(ctx: RequestContext, event: Event) -> Drop | None:
    h = ctx.headers
    if "prefetch" in (h.get("purpose", "") + h.get("sec-purpose", "") + h.get("x-moz", "")).lower():
        return Drop.PREFETCH
    return None


def drop_do_not_track(ctx: RequestContext, event: Event) -> Drop | None:
    if ctx.site.settings.respect_dnt:
        h = ctx.headers
        if h.get("dnt") == "1" or h.get("sec-gpc") == "1":
            return Drop.DO_NOT_TRACK
    return None


def drop_excluded_ip(ctx: RequestContext, event: Event) -> Drop | None:
    excluded = ctx.site.settings.excluded_ips
    if excluded and ctx.ip:
        try:
            addr = ipaddress.ip_address(ctx.ip)
            if any(addr in ipaddress.ip_network(n, strict=False) for n in excluded):
                return Drop.EXCLUDED_IP
        except ValueError:
            pass
    return None


def drop_datacenter_ip(ctx: RequestContext, event: Event, ranges: DatacenterRanges) -> Drop | None:
    """A client IP in a cloud provider's published networks (``ingest.traffic``): a server, not a
    visitor. Sites behind a corporate proxy hosted in a cloud turn it off (``dropDatacenterIps``)."""
    if ctx.site.settings.drop_datacenter_ips and ctx.ip in ranges:
        return Drop.DATACENTER_IP
    return None


def put_geolocation(ctx: RequestContext, event: Event, lookup: CountryLookup, country_header: str) -> Drop | None:
    country = None
    if country_header:
        value = ctx.headers.get(country_header.lower(), "").strip().upper()
        if len(value) == 2 and value.isalpha() and value not in ("XX", "T1"):
            country = value
            if lookup.reader is None:  # no database could add a region or city
                event["country"] = country
                return None
    found, place = lookup.locate(ctx.ip)
    event["country"] = country or found
    # A region or city is kept only where the database agrees with the country chosen.
    if found and event["country"] == found:
        event["region"], event["city"], event["city_name"] = place
    return None


def read_user_agent(ctx: RequestContext, event: Event) -> Drop | None:
    """The request's browser, OS and device, for every event that does not name its own user agent.

    Never drops here: an event with its own ``userAgent`` is judged by that one (``drop_bots``).
    """
    fields = user_agent_fields(ctx.user_agent)
    if isinstance(fields, Drop):
        ctx.user_agent_drop = fields
    else:
        event.update(fields)
    return None


# --- event steps: once per event ------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def user_agent_fields(user_agent: str) -> Event | Drop:
    """The browser, OS and device fields of a user agent, or why it is not counted."""
    info = classify(user_agent)
    if info.verdict == "bot":
        return Drop.BOT
    if info.verdict == "headless":
        return Drop.HEADLESS
    return {"browser": info.browser, "browser_version": info.browser_version,
            "os": info.os, "os_version": info.os_version, "device": info.device}


def drop_bots(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    if not beacon.user_agent:  # the request's user agent, read once per request
        return ctx.user_agent_drop
    fields = user_agent_fields(beacon.user_agent)
    if isinstance(fields, Drop):
        return fields
    event.update(fields)
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
    if parts.fragment.startswith("/"):  # a hash route: its own query string is not kept
        path = path.rstrip("/") + "/#" + parts.fragment.split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    return host, path, parts.query or None


def _param_kept(name: str, extra: tuple[str, ...]) -> bool:
    name = name.strip().lower()
    for pattern in (*KEPT_QUERY_PARAMS, *extra):
        pattern = pattern.lower()
        if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
            return True
    return False


@functools.lru_cache(maxsize=16384)
def keep_query_params(query: str | None, extra: tuple[str, ...] = ()) -> str | None:
    """``query`` with only the parameters kept (``KEPT_QUERY_PARAMS`` and ``extra``), in their
    order and encoding; ``None`` when none is left."""
    if not query:
        return None
    kept = [pair for pair in query.split("&") if pair and _param_kept(unquote_plus(pair.split("=", 1)[0]), extra)]
    return "&".join(kept) or None


@functools.lru_cache(maxsize=16384)
def clean_referrer(referrer: str | None, extra: tuple[str, ...] = ()) -> str | None:
    """The referrer URL without credentials, fragment and any query parameter not kept."""
    if not referrer:
        return referrer
    try:
        parts = urlsplit(referrer.strip())
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, keep_query_params(parts.query, extra) or "", ""))
    except ValueError:
        return None  # not a URL: nothing to classify, nothing to keep


@functools.lru_cache(maxsize=16384)
def utm_tags(query: str | None) -> dict[str, str | None]:
    """The UTM fields of a query string (shared and cached: never modify the result)."""
    values = parse_qs(query, keep_blank_values=False) if query else {}
    return {k: (values[k][0][:500] if k in values else None) for k in UTM_FIELDS}


def put_url(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    host, path, query = split_url(beacon.url)
    settings = ctx.site.settings
    if host and settings.allowed_hostnames:
        allowed = {strip_www(h.lower()) for h in settings.allowed_hostnames}
        if strip_www(host) not in allowed and not any(
            a.startswith("*.") and host.endswith(a[1:]) for a in allowed
        ):
            return Drop.HOSTNAME_NOT_ALLOWED
    if settings.excluded_paths and any(_path_matches(path, p) for p in settings.excluded_paths):
        return Drop.EXCLUDED_PATH
    event["hostname"], event["pathname"] = host, path
    event["query"] = keep_query_params(query, settings.allowed_query_params) if query else None
    return None


def _path_matches(path: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def put_utm(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    event.update(utm_tags(event["query"]))
    return None


def put_referrer(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    referrer = clean_referrer(beacon.referrer, ctx.site.settings.allowed_query_params) if beacon.referrer else None
    referral = classify_referrer(referrer, event["hostname"], ctx.site.domain, event["utm_source"])
    event["referrer"], event["referrer_domain"], event["source"] = referral.referrer, referral.domain, referral.source
    return None


def drop_referrer_spam(beacon: Beacon, ctx: RequestContext, event: Event, spam: ReferrerSpam) -> Drop | None:
    """A referrer on the referrer-spam list (the host or a parent domain), unless the site turned
    the check off (``dropReferrerSpam``)."""
    if ctx.site.settings.drop_referrer_spam and spam.matches(event["referrer_domain"]):
        return Drop.REFERRER_SPAM
    return None


def put_props(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    props = beacon.props
    if not props:
        event["props_str"] = event["props_num"] = event["props_bool"] = None
        return None
    strings = {k: v for k, v in props.items() if isinstance(v, str)}
    numbers = {k: v for k, v in props.items() if isinstance(v, float)}
    bools = {k: v for k, v in props.items() if isinstance(v, bool)}
    event["props_str"], event["props_num"], event["props_bool"] = strings or None, numbers or None, bools or None
    return None


def put_visitor_key(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    site = ctx.site
    if beacon.visitor_id:
        event["visitor_key"] = tracker_visitor_key(site.secret, beacon.visitor_id)
        event["visitor_key_source"] = "tracker"
    else:
        day = datetime.fromtimestamp(ctx.received_ms / 1000, tz=UTC).date()
        event["visitor_key"] = fallback_visitor_key(
            ctx.salt_for(day), site.id, ctx.ip or "", beacon.user_agent or ctx.user_agent
        )
        event["visitor_key_source"] = "fallback"
    return None


def put_time(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    """Event time: the client's ``ts`` corrected by the batch's clock offset, never in the future.

    A buffered event keeps its real time. A client clock that runs fast or slow is corrected by
    ``sentAt`` when the batch carries it; without it, a time ahead of ours is clamped to the
    receive time (a fast clock must not lose the visitor's events).
    """
    now = ctx.received_ms
    ts = beacon.ts
    if ts is None:
        ts = now
    else:
        ts += ctx.clock_offset_ms
        if ts > now:
            ts = now
        elif now - ts > ctx.client_ts_window_ms:
            raise BeaconError("'ts' is older than the accepted window for buffered events (24 h)")
    event["ts"] = ts
    event["received_at"] = now
    event["event_id"] = uuid7(ts)
    return None


def put_fields(beacon: Beacon, ctx: RequestContext, event: Event) -> Drop | None:
    kind = beacon.type
    event["site_id"] = ctx.site.id
    event["type"] = kind
    event["name"] = beacon.name if kind == "event" else None
    event["title"] = beacon.title
    event["screen"] = beacon.screen
    event["language"] = beacon.language
    event["timezone"] = beacon.timezone
    event["engagement_ms"] = beacon.engagement_ms if kind in ("page_exit", "engagement") else None
    event["scroll_depth"] = beacon.scroll_depth if kind in ("page_exit", "engagement") else None
    event["user_id"] = beacon.user_id if kind == "identify" else None
    event["revenue_amount"], event["revenue_currency"] = beacon.revenue or (None, None)
    if kind == "identify" and not event["pathname"]:
        event["pathname"] = "/"
    return None


class Pipeline:
    """The ordered enrichment steps, with per-step timing and drop counts for the metrics."""

    def __init__(self, countries: CountryLookup, country_header: str = "", *,
                 referrer_spam: bool = True, datacenter_ips: bool = True) -> None:
        """``referrer_spam`` / ``datacenter_ips``: the instance's switches for those drop steps
        (each site can still turn them off for itself)."""
        # The lists are loaded once per process, and only when their step is on.
        ranges = bundled_datacenter_ranges() if datacenter_ips else None
        spam = bundled_referrer_spam() if referrer_spam else None
        request_steps: list[tuple[str, RequestStep | None]] = [
            ("drop_prefetch", drop_prefetch),
            ("drop_do_not_track", drop_do_not_track),
            ("drop_excluded_ip", drop_excluded_ip),
            ("drop_datacenter_ip", (lambda ctx, e: drop_datacenter_ip(ctx, e, ranges)) if ranges is not None else None),
            ("put_geolocation", lambda ctx, e: put_geolocation(ctx, e, countries, country_header)),  # + region, city
            ("read_user_agent", read_user_agent),
        ]
        event_steps: list[tuple[str, EventStep | None]] = [
            ("drop_bots", drop_bots),  # an event's own user agent: puts browser, OS and device
            ("put_url", put_url),  # drops hostnames not allowed and excluded paths; keeps allowed query params
            ("put_utm", put_utm),
            ("put_referrer", put_referrer),  # the referrer's query params filtered as the page's
            ("drop_referrer_spam", (lambda b, ctx, e: drop_referrer_spam(b, ctx, e, spam)) if spam is not None else None),
            ("put_props", put_props),
            ("put_visitor_key", put_visitor_key),
            ("put_time", put_time),  # raises BeaconError for a `ts` out of range
            ("put_fields", put_fields),
        ]
        self.request_steps: list[tuple[str, RequestStep]] = [(n, f) for n, f in request_steps if f is not None]
        self.event_steps: list[tuple[str, EventStep]] = [(n, f) for n, f in event_steps if f is not None]
        self.step_seconds: dict[str, float] = {
            name: 0.0 for name, _ in [*self.request_steps, *self.event_steps]
        }
        self._event_steps = [step for _, step in self.event_steps]
        self._request_steps = [step for _, step in self.request_steps]
        self._columns: Event = dict.fromkeys(COLUMN_NAMES)
        self._runs = 0
        self._requests = 0

    def run(self, beacon: Beacon, ctx: RequestContext) -> Event | Drop:
        shared = ctx.shared
        if shared is None:
            shared = ctx.shared = self._run_request_steps(ctx)
        if isinstance(shared, Drop):
            return shared
        event = shared.copy()
        self._runs += 1
        if self._runs % TIMING_SAMPLE != 1:
            for step in self._event_steps:
                outcome = step(beacon, ctx, event)
                if outcome is not None:
                    return outcome
            return event
        return self._timed(self.event_steps, beacon, ctx, event)

    def _run_request_steps(self, ctx: RequestContext) -> Event | Drop:
        # Every column from the start (null until a step sets it): each event's copy is made at
        # its full size at once, instead of growing through three resizes of its hash table, and
        # large allocations are what got slow as the C allocator's free lists fragmented.
        event: Event = self._columns.copy()
        self._requests += 1
        if self._requests % TIMING_SAMPLE != 1:
            for step in self._request_steps:
                outcome = step(ctx, event)
                if outcome is not None:
                    return outcome
            return event
        return self._timed(self.request_steps, ctx, event)

    def _timed(self, steps: Sequence[tuple[str, Callable[..., Drop | None]]], *args: Any) -> Event | Drop:
        """Run ``steps`` on ``args`` (the event last) timing each one. One event (and one request) in
        TIMING_SAMPLE comes here, its times scaled up, so the metrics show where time goes without
        taxing every event."""
        clock = time.perf_counter
        timings = self.step_seconds
        for name, step in steps:
            started = clock()
            outcome = step(*args)
            timings[name] += (clock() - started) * TIMING_SAMPLE
            if outcome is not None:
                return outcome
        event: Event = args[-1]
        return event
