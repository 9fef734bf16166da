"""The wire protocol (SPEC §3): request bodies → validated beacons, or a 4xx naming the problem.

Validation is about *shape*: types, sizes, counts. Whether an event is counted (bots, excluded
paths, ...) is the enrichment pipeline's business, not this module's.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType

from ingest.schema import EVENT_TYPES


class BeaconError(ValueError):
    """Input the client must fix. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# Fixed bounds of the wire protocol (the configurable ones are `Limits`).
MAX_EVENT_NAME_LENGTH = 200  # `name` of a custom event
MAX_USER_ID_LENGTH = 256  # `id` of an identify event
# `engagementTime` (ms) and `scrollDepth` (percent of the page's height) above these count as
# these: a tab left open for days, a page that grew shorter after it was scrolled. Negative
# values are refused.
MAX_ENGAGEMENT_MS = 86_400_000  # a day
MAX_SCROLL_DEPTH = 100
# The largest magnitude of any number on the wire (`ts`, `sentAt`, numeric properties), whether it
# is written as an integer (2**64) or a float (1e308): JavaScript's Number.MAX_SAFE_INTEGER, past
# which the tracker's own numbers stop being exact.
MAX_NUMBER = 2**53 - 1
# `revenue.amount` of a custom event: at most a trillion in magnitude (any real order's value; a
# larger one is a unit mistake, refused rather than summed into every revenue figure).
MAX_REVENUE = 1e12
CURRENCY = re.compile(r"[A-Z]{3}")


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

    @functools.cached_property
    def wire_decoder(self) -> msgspec.json.Decoder[Any]:
        """The fast path's decoder, checking these limits (see ``_wire_decoder``)."""
        return _wire_decoder(self)


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
    revenue: tuple[float, str] | None = None  # (amount, ISO 4217 currency) of a custom event
    scroll_depth: int | None = None  # percent, 0-100


@dataclass(slots=True)
class Envelope:
    """A parsed request body: the events it carries and whether it was the batch form."""

    events: list[Beacon | BeaconError]
    batch: bool
    site: str | None  # `siteId` of a batch
    sent_at: int | None = None  # the client's clock when it sent the batch (epoch ms)


def parse_body(body: bytes, limits: Limits) -> Envelope:
    """Parse a request body in the single or the batch form."""
    envelope = _parse_body_fast(body, limits)
    return envelope if envelope is not None else _parse_body_reference(body, limits)


def _parse_body_reference(body: bytes, limits: Limits) -> Envelope:
    """Every body: the definition of what is accepted, and the words of every error."""
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
    if abs(value) > MAX_NUMBER:
        raise BeaconError(f"'{key}' must be a number between -{MAX_NUMBER} and {MAX_NUMBER}")
    return float(value)


def _capped(raw: dict[str, Any], key: str, cap: int, what: str) -> int | None:
    """A measurement of 0 or more (``None`` when absent); above ``cap`` it counts as ``cap``."""
    value = _number(raw, key)
    if value is None:
        return None
    if value < 0:
        raise BeaconError(f"'{key}' must be {what}, 0 or more")
    return int(min(value, cap))


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
            if not math.isfinite(value) or abs(value) > MAX_NUMBER:
                raise BeaconError(f"property {key!r} must be a number between -{MAX_NUMBER} and {MAX_NUMBER}")
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


def parse_revenue(data: Any) -> tuple[float, str] | None:
    """``revenue`` of a custom event: ``{"amount": number, "currency": "EUR"}`` (null: none).

    The amount is a finite number of at most ``MAX_REVENUE`` in magnitude (refunds may be
    negative); the currency an ISO 4217 code of three letters, taken in upper case. A string,
    number or boolean is no revenue and left out: ``track(name, {revenue: 5})`` sends a plain
    property called ``revenue``, which the tracker passes on here too."""
    if data is None or isinstance(data, (str, int, float)):  # (bool is an int)
        return None
    if not isinstance(data, dict) or set(data) - {"amount", "currency"}:
        raise BeaconError("'revenue' must be an object {\"amount\": number, \"currency\": \"EUR\"}")
    amount, currency = data.get("amount"), data.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) \
            or abs(amount) > MAX_REVENUE:
        raise BeaconError(f"'revenue.amount' must be a finite number between -{MAX_REVENUE:.0e} and {MAX_REVENUE:.0e}")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency.upper()):
        raise BeaconError("'revenue.currency' must be an ISO 4217 currency code of three letters, e.g. EUR")
    return float(amount), currency.upper()


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
        name = _string(raw, "name", MAX_EVENT_NAME_LENGTH, required=True)
        if not (name or "").strip():
            raise BeaconError("'name' must not be empty for a custom event")
        beacon.name = name
        beacon.revenue = parse_revenue(raw.get("revenue"))
    elif kind == "identify":
        beacon.user_id = _string(raw, "id", MAX_USER_ID_LENGTH, required=True)
    if kind != "event" and raw.get("revenue") is not None:
        raise BeaconError("'revenue' is only for custom events (type 'event')")
    beacon.engagement_ms = _capped(raw, "engagementTime", MAX_ENGAGEMENT_MS, "a number of milliseconds")
    beacon.scroll_depth = _capped(raw, "scrollDepth", MAX_SCROLL_DEPTH, "a percentage")
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


# The fast path. The tracker's beacons are well formed, and checking them in Python (orjson's
# dicts, then `parse_event`) is a cost on every request: ~28,000 instructions for a beacon, against
# ~19,000 when msgspec decodes the body straight into typed fields, checking types, lengths and
# ranges in C in the same pass (a batch of 50: 2.6 × faster). It only has to be right about
# *accepting*: whatever it cannot vouch for goes to `_parse_body_reference`, which says what is
# wrong, so the errors and their words are the reference's alone.


def _wire_decoder(limits: Limits) -> msgspec.json.Decoder[Any]:
    """A decoder for bodies that `_parse_body_reference` accepts with these limits, or an error.

    Unknown fields are refused rather than skipped: msgspec skips a value without checking its
    UTF-8 or that its number is finite, which orjson does. For the same reason every value has a
    type, ``cache`` included (scalars; integers within int64, which orjson keeps as ``int``).
    """

    def text(max_length: int) -> Any:
        return Annotated[str, Meta(max_length=max_length)] | None

    prop_key = Annotated[str, Meta(min_length=1, max_length=limits.max_prop_key_length)]
    prop_value = (
        Annotated[str, Meta(max_length=limits.max_prop_value_length)]
        | Annotated[float, Meta(ge=-MAX_NUMBER, le=MAX_NUMBER)]
        | bool
        | None
    )
    cache_value = str | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | float | bool | None
    wire_number = Annotated[float, Meta(ge=-MAX_NUMBER, le=MAX_NUMBER)] | None
    event_type: Any = Literal[EVENT_TYPES]
    event_fields: list[tuple[str, Any, None]] = [
        ("type", event_type | None, None),
        ("url", text(limits.max_string_length), None),
        *((attr, text(limit), None) for (_, attr, _), (_, limit) in zip(STRING_FIELDS, limits.string_fields, strict=True)),
        ("name", text(MAX_EVENT_NAME_LENGTH), None),
        ("id", text(MAX_USER_ID_LENGTH), None),
        ("engagement_time", Annotated[float, Meta(ge=0, le=MAX_NUMBER)] | None, None),
        ("ts", wire_number, None),
        ("scroll_depth", Annotated[float, Meta(ge=0, le=MAX_NUMBER)] | None, None),
        ("cache", dict[str, cache_value] | None, None),
        ("data", Annotated[dict[prop_key, prop_value], Meta(max_length=limits.max_props)] | None, None),
        ("revenue", dict[str, str | float] | None, None),
    ]
    rename = {attr: wire for wire, attr, _ in STRING_FIELDS}
    rename |= {"engagement_time": "engagementTime", "scroll_depth": "scrollDepth", "site_id": "siteId",
               "sent_at": "sentAt"}
    event = msgspec.defstruct("WireEvent", event_fields, rename=rename, forbid_unknown_fields=True)
    # A body is an event that may also carry the batch's fields; `events` present = the batch form.
    events = Annotated[list[event], Meta(min_length=1, max_length=limits.max_batch_events)]  # type: ignore[valid-type]
    body_fields: list[tuple[str, Any, Any]] = [
        ("events", events | UnsetType, UNSET),
        ("site_id", str | None, None),
        ("sent_at", wire_number, None),
    ]
    body = msgspec.defstruct("WireBody", body_fields, bases=(event,), rename=rename, forbid_unknown_fields=True)
    return msgspec.json.Decoder(body)


def _parse_body_fast(body: bytes, limits: Limits) -> Envelope | None:
    """The envelope `_parse_body_reference` would return, or ``None`` to leave the body to it.

    ``None`` for what the decoder refuses (any error, an unknown field, a nested value in
    ``cache``), a NUL anywhere, and the rules that span fields (``url``, ``name``, ``id`` by
    ``type``); in a batch, for any bad event.
    """
    if b"\\u0000" in body:
        return None
    try:
        wire = limits.wire_decoder.decode(body)
    except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError for a string not UTF-8
        return None
    if wire.events is UNSET:
        beacon = _wire_beacon(wire)
        return Envelope([beacon], batch=False, site=None) if beacon is not None else None
    beacons: list[Beacon | BeaconError] = []
    for event in wire.events:
        beacon = _wire_beacon(event)
        if beacon is None:
            return None
        beacons.append(beacon)
    sent_at = int(wire.sent_at) if wire.sent_at is not None else None
    return Envelope(beacons, batch=True, site=wire.site_id, sent_at=sent_at)


def _wire_beacon(wire: Any) -> Beacon | None:
    """`parse_event` for a decoded event, or ``None`` where it would raise."""
    kind = wire.type or "pageview"
    url = wire.url
    if url is None and kind != "identify":
        return None
    beacon = Beacon(
        kind, url or "/", wire.website, wire.referrer, wire.title, wire.screen, wire.language,
        wire.timezone, wire.user_agent, wire.visitor_id, wire.cache,
    )
    if kind == "event":
        if wire.name is None or not wire.name.strip():
            return None
        beacon.name = wire.name
        if wire.revenue is not None:
            try:
                beacon.revenue = parse_revenue(wire.revenue)
            except BeaconError:
                return None
    elif kind == "identify":
        if wire.id is None:
            return None
        beacon.user_id = wire.id
    if kind != "event" and wire.revenue is not None:
        return None
    if wire.engagement_time is not None:
        beacon.engagement_ms = int(min(wire.engagement_time, MAX_ENGAGEMENT_MS))
    if wire.ts is not None:
        beacon.ts = int(wire.ts)
    if wire.scroll_depth is not None:
        beacon.scroll_depth = int(min(wire.scroll_depth, MAX_SCROLL_DEPTH))
    if wire.data:
        beacon.props = {key: value for key, value in wire.data.items() if value is not None}
    return beacon
