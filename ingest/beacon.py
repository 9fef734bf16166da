"""The wire protocol (SPEC §3): request bodies → validated beacons, or a 4xx naming the problem.

Validation is about *shape*: types, sizes, counts. Whether an event is counted (bots, excluded
paths, ...) is the enrichment pipeline's business, not this module's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.schema import EVENT_TYPES


class BeaconError(ValueError):
    """Input the client must fix. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_batch_events: int = 100
    max_props: int = 30
    max_prop_key_length: int = 64
    max_prop_value_length: int = 500
    max_string_length: int = 2000

    @functools.cached_property
    def string_fields(self) -> tuple[tuple[str, int], ...]:
        """(wire name, maximum length) of each optional string field, in ``Beacon``'s order."""
        return tuple((key, limit or self.max_string_length) for key, _, limit in STRING_FIELDS)


@dataclass(slots=True)
class Beacon:
    """One validated event as the client sent it, before enrichment."""

    type: str
    url: str
    website: str | None = None
    referrer: str | None = None
    title: str | None = None
    screen: str | None = None
    language: str | None = None
    timezone: str | None = None
    user_agent: str | None = None
    visitor_id: str | None = None
    cache: dict[str, Any] | None = None
    name: str | None = None
    props: dict[str, str | float | bool] = field(default_factory=dict)
    user_id: str | None = None
    engagement_ms: int | None = None
    ts: int | None = None  # client epoch ms


@dataclass(slots=True)
class Envelope:
    """A parsed request body: the events it carries and whether it was the batch form."""

    events: list[Beacon | BeaconError]
    batch: bool
    site: str | None  # `siteId` of a batch
    sent_at: int | None = None  # the client's clock when it sent the batch (epoch ms)


def parse_body(body: bytes, limits: Limits) -> Envelope:
    """Parse a request body in the single or the batch form."""
    if not body.strip():
        raise BeaconError("request body is empty; send one event or {\"siteId\", \"events\": [...]}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BeaconError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BeaconError("request body must be a JSON object")
    if "events" in data:
        events = data["events"]
        if not isinstance(events, list):
            raise BeaconError("'events' must be an array of event objects")
        if not events:
            raise BeaconError("'events' is empty")
        if len(events) > limits.max_batch_events:
            raise BeaconError(
                f"a batch holds at most {limits.max_batch_events} events, this one has {len(events)}",
                status=413,
            )
        site = data.get("siteId")
        if site is not None and not isinstance(site, str):
            raise BeaconError("'siteId' must be a string")
        sent_at = _number(data, "sentAt")
        parsed: list[Beacon | BeaconError] = []
        for i, raw in enumerate(events):
            try:
                parsed.append(parse_event(raw, limits, batch=True))
            except BeaconError as exc:
                parsed.append(BeaconError(f"events[{i}]: {exc}", exc.status))
        return Envelope(parsed, batch=True, site=site, sent_at=int(sent_at) if sent_at is not None else None)
    return Envelope([parse_event(data, limits, batch=False)], batch=False, site=None)


def _string(raw: dict[str, Any], key: str, limit: int, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise BeaconError(f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise BeaconError(f"'{key}' must be a string")
    if len(value) > limit:
        raise BeaconError(f"'{key}' is longer than {limit} characters")
    if "\x00" in value:
        raise BeaconError(f"'{key}' contains a NUL character")
    return value


def _number(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BeaconError(f"'{key}' must be a finite number")
    return float(value)


def parse_props(data: Any, limits: Limits, what: str = "data") -> dict[str, str | float | bool]:
    """Custom properties: a flat object of string, number and boolean values (nulls skipped)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BeaconError(f"'{what}' must be an object of properties")
    if len(data) > limits.max_props:
        raise BeaconError(f"'{what}' has {len(data)} properties; at most {limits.max_props} are allowed")
    props: dict[str, str | float | bool] = {}
    for key, value in data.items():
        if not key or len(key) > limits.max_prop_key_length:
            raise BeaconError(
                f"property names must be 1 to {limits.max_prop_key_length} characters long"
            )
        if "\x00" in key:
            raise BeaconError("property names must not contain NUL characters")
        if value is None:
            continue
        if isinstance(value, bool):
            props[key] = value
        elif isinstance(value, (int, float)):
            if not math.isfinite(value) or abs(value) > 1e300:
                raise BeaconError(f"property {key!r} must be a finite number")
            props[key] = float(value)
        elif isinstance(value, str):
            if len(value) > limits.max_prop_value_length:
                raise BeaconError(
                    f"property {key!r} is longer than {limits.max_prop_value_length} characters"
                )
            if "\x00" in value:
                raise BeaconError(f"property {key!r} contains a NUL character")
            props[key] = value
        else:
            raise BeaconError(f"property {key!r} must be a string, number or boolean")
    return props


# Optional string fields: wire name → (Beacon attribute, maximum length; 0 = max_string_length).
# In Beacon's field order: they follow `type` and `url`.
STRING_FIELDS = (
    ("website", "website", 200),
    ("referrer", "referrer", 0),
    ("title", "title", 0),
    ("screen", "screen", 32),
    ("language", "language", 35),
    ("timezone", "timezone", 64),
    ("userAgent", "user_agent", 1000),
    ("visitorId", "visitor_id", 128),
)
_KNOWN_TYPES = frozenset(EVENT_TYPES)


def parse_event(raw: Any, limits: Limits, batch: bool) -> Beacon:
    # On the request path for every event: one pass over the optional strings, the common case
    # (absent, or a short clean string) checked inline; `_string` only words the error.
    if type(raw) is not dict:
        raise BeaconError("an event must be a JSON object")
    kind = raw.get("type")
    if kind is None:
        kind = "pageview"
    elif type(kind) is not str or kind not in _KNOWN_TYPES:
        raise BeaconError(f"'type' must be one of {', '.join(EVENT_TYPES)}")
    n = limits.max_string_length
    url = raw.get("url")
    if type(url) is not str or len(url) > n or "\x00" in url:
        url = _string(raw, "url", n, required=kind != "identify")
    strings: list[str | None] = []
    for key, limit in limits.string_fields:
        value = raw.get(key)
        if value is not None and (type(value) is not str or len(value) > limit or "\x00" in value):
            _string(raw, key, limit)  # raises the error that names the problem
        strings.append(value)
    website, referrer, title, screen, language, timezone, user_agent, visitor_id = strings
    beacon = Beacon(kind, url or "/", website, referrer, title, screen, language, timezone, user_agent, visitor_id)
    if kind == "event":
        name = _string(raw, "name", 200, required=True)
        if not (name or "").strip():
            raise BeaconError("'name' must not be empty for a custom event")
        beacon.name = name
    elif kind == "identify":
        beacon.user_id = _string(raw, "id", 256, required=True)
    if "engagementTime" in raw:
        engagement = _number(raw, "engagementTime")
        if engagement is not None:
            if not 0 <= engagement <= 86_400_000:
                raise BeaconError("'engagementTime' must be between 0 and 86400000 ms")
            beacon.engagement_ms = int(engagement)
    if "ts" in raw:
        ts = _number(raw, "ts")
        beacon.ts = int(ts) if ts is not None else None
    cache = raw.get("cache")
    if cache is not None:
        if type(cache) is not dict:
            raise BeaconError("'cache' must be an object")
        beacon.cache = cache
    if "data" in raw:
        beacon.props = parse_props(raw["data"], limits)
    return beacon
