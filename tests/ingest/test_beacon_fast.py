"""The msgspec fast path of `parse_body` answers exactly as the reference path, for any body.

The fast path only ever accepts: whatever it cannot vouch for goes to `_parse_body_reference`,
which words the errors. So for every body, valid or not, `parse_body` must give what the
reference gives: the same envelope (numbers of the same type and sign included), or the same
error with the same status.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.beacon import (
    MAX_NUMBER,
    STRING_FIELDS,
    BeaconError,
    Envelope,
    Limits,
    _parse_body_fast,
    _parse_body_reference,
    parse_body,
)
from ingest.schema import EVENT_TYPES

# The defaults, and limits small enough that the generated values cross every one of them.
LIMITS = [
    Limits(),
    Limits(max_batch_events=3, max_props=2, max_prop_key_length=3, max_prop_value_length=5, max_string_length=12),
]

BEACON = {
    "type": "pageview",
    "url": "https://example.com/page/1?utm_source=s1",
    "referrer": "https://www.google.com/",
    "visitorId": "v1",
    "screen": "1920x1080",
    "language": "en-US",
}


class RawNumber(str):
    """A JSON number written as is (`1e400`, `-0`, `0.50E+1`, 400 digits, ...)."""


class Object(list[tuple[str, Any]]):
    """A JSON object as its key-value pairs: keys may repeat, as they may on the wire."""


raw_numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True).map(
    lambda s: RawNumber(s.strip())
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, -1, 1, 86_400_000, 86_400_001, MAX_NUMBER, MAX_NUMBER + 1, -MAX_NUMBER - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, float(MAX_NUMBER), -float(MAX_NUMBER), float(2**53), 1e300, 86_400_000.5, 1.7976931348623157e308]),
    raw_numbers,
)
# Either side of every length limit (the defaults and the small ones).
LENGTHS = sorted({n + d for n in (2, 3, 5, 12, 32, 35, 64, 128, 200, 256, 500, 1000, 2000) for d in (-1, 0, 1)})
# Text from every plane, lone surrogates (written as escapes) and NUL included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
texts = st.one_of(
    st.text(max_size=20),
    any_text,
    st.sampled_from(["", " ", "\t\n", "\x00", "a\x00", "/", "/a b", "é", "\u2028", "\U0001f600", "\ud800", "\udc00x"]),
    st.sampled_from(LENGTHS).map(lambda n: "x" * n),
    st.sampled_from(LENGTHS).map(lambda n: "é" * n),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3).map(lambda d: Object(d.items())),
    max_leaves=6,
)


def objects(keys: st.SearchStrategy[str], vals: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[Object]:
    """Objects whose keys may repeat (the wire allows it; the last value wins)."""
    return st.lists(st.tuples(keys, vals), max_size=max_size).map(Object)


prop_keys = st.one_of(texts, st.sampled_from(["", "k", "abc", "abcd", "a\x00"]))
caches = st.one_of(
    st.fixed_dictionaries({"visitId": texts, "iat": numbers, "sessionStart": numbers}).map(lambda d: Object(d.items())),
    objects(any_text, values, 4),
    values,
)
EXTRA_KEYS = st.sampled_from(["siteId", "sentAt", "events", "user_agent", "Url", "x", ""]) | any_text

# What the tracker sends: every field valid, lengths and ranges up to their limits.
clean_chars = st.characters(codec="utf-8", exclude_characters="\x00")
finite_raw_numbers = raw_numbers.filter(lambda s: abs(float(s)) <= MAX_NUMBER)


@functools.cache
def clean_text(max_length: int, min_length: int = 0) -> st.SearchStrategy[str]:
    at_limit = "é" * max_length if min_length == 0 else "x" * max_length
    return st.text(clean_chars, min_size=min_length, max_size=min(max_length, 20)) | st.just(at_limit)


@functools.cache
def good_props(limits: Limits) -> st.SearchStrategy[Object]:
    key = clean_text(limits.max_prop_key_length, min_length=1)
    value = st.one_of(
        st.none(), st.booleans(), st.integers(-MAX_NUMBER, MAX_NUMBER), st.floats(-MAX_NUMBER, MAX_NUMBER),
        st.sampled_from([MAX_NUMBER, -MAX_NUMBER, float(MAX_NUMBER), -0.0, 0]), finite_raw_numbers,
        clean_text(limits.max_prop_value_length),
    )
    return st.dictionaries(key, value, max_size=limits.max_props).map(lambda d: Object(d.items()))


good_numbers = st.one_of(
    st.integers(-MAX_NUMBER, MAX_NUMBER), st.floats(-MAX_NUMBER, MAX_NUMBER),
    raw_numbers.filter(lambda s: abs(float(s)) <= MAX_NUMBER),
)
tracker_cache_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), clean_text(40)
)
tracker_caches = st.fixed_dictionaries({"visitId": clean_text(20), "iat": tracker_cache_values}).map(lambda d: Object(d.items()))
# Any object is a valid `cache`: nested values and integers past 64 bits too (orjson reads those
# as floats), which the fast path must leave to the reference.
good_caches = tracker_caches | objects(
    clean_text(8),
    tracker_cache_values | st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**300]) | st.lists(st.integers(), max_size=2),
    3,
)


@st.composite
def good_events(draw: st.DrawFn, limits: Limits, in_batch: bool = False, tracker: bool = False) -> Object:
    """An event every field of which is valid; with ``tracker``, only in the forms the tracker sends."""
    kind = draw(st.sampled_from([*EVENT_TYPES, "event", "identify"]))  # the kinds with rules, more often
    pairs: list[tuple[str, Any]] = [("type", kind), ("url", draw(clean_text(limits.max_string_length)))]
    if kind == "event":
        pairs.append(("name", draw(clean_text(200, min_length=1).filter(str.strip))))
        if draw(st.booleans()):
            pairs.append(("revenue", draw(good_revenue)))
    if kind == "identify":
        pairs.append(("id", draw(clean_text(256))))
    optional: list[tuple[str, st.SearchStrategy[Any]]] = [
        *((wire, clean_text(limit)) for wire, limit in limits.string_fields),
        ("engagementTime", st.sampled_from([0, 86_400_000, 0.0, -0.0, 1.5]) | st.integers(0, 86_400_000) | st.floats(0, 86_400_000)),
        ("ts", good_numbers),
        ("scrollDepth", st.sampled_from([0, 100, 0.0, 49.5]) | st.integers(0, 100)),
        ("cache", tracker_caches if tracker else good_caches),
        ("data", good_props(limits)),
    ]
    if not in_batch:  # the batch's fields: ignored in a single event
        optional += [("siteId", clean_text(5)), ("sentAt", good_numbers)]
    for key, strategy in optional:
        if draw(st.booleans()):
            pairs.append((key, draw(st.none() | strategy)))
    return Object(draw(st.permutations(pairs)))


good_revenue = st.builds(
    lambda amount, currency: Object([("amount", amount), ("currency", currency)]),
    st.integers(-10**12, 10**12) | st.floats(-1e12, 1e12) | st.sampled_from([0, -0.0, 99.9]),
    st.sampled_from(["EUR", "usd", "Jpy"]),
)


@functools.cache
def field_values(limits: Limits) -> dict[str, st.SearchStrategy[Any]]:
    """Each field's values, valid or not: the near misses first."""
    over_max = [float(2**53), -float(2**53), MAX_NUMBER + 1, 2**64, 10**301, 1e308, RawNumber("9007199254740992.5")]
    prop_key = clean_text(limits.max_prop_key_length, min_length=1) | st.sampled_from(
        ["", "x" * (limits.max_prop_key_length + 1), "a\x00"]
    ) | prop_keys
    prop_value = st.sampled_from(
        [*over_max, "x" * (limits.max_prop_value_length + 1), "\x00", [1], Object([("a", 1)]), 1, "s", True, None]
    ) | leaves | values
    # A valid set of properties (as many as allowed, often) and one or two more, valid or not.
    props = st.builds(lambda good, more: Object(good + more), good_props(limits), st.lists(st.tuples(prop_key, prop_value), min_size=1, max_size=2))
    too_long = st.sampled_from(sorted({limits.max_string_length, 200, 256} | {limit for _, limit in limits.string_fields})).map(lambda n: "x" * (n + 1))
    return {
        "type": st.sampled_from([*EVENT_TYPES, "click", "", "Pageview"]) | leaves,
        "url": too_long | texts | leaves,
        **{wire: too_long | texts | leaves for wire, _, _ in STRING_FIELDS},
        "name": st.sampled_from(["", " ", "\t\n\u2028", "\x00"]) | too_long | texts | leaves,
        "id": too_long | texts | leaves,
        "engagementTime": st.sampled_from([-1, -0.5, 86_400_000.5, 86_400_001, True]) | numbers | leaves,
        "ts": numbers | leaves,
        "scrollDepth": st.sampled_from([-1, -0.5, 100.5, 101, True]) | numbers | leaves,
        "cache": caches,
        "data": props | values,
        "revenue": good_revenue | st.sampled_from([
            Object([("amount", 10**12 + 1), ("currency", "EUR")]), Object([("amount", "1"), ("currency", "EUR")]),
            Object([("amount", 1), ("currency", "EURO")]), Object([("amount", 1)]),
            Object([("amount", 1), ("currency", "EUR"), ("tax", 1)]), Object([("amount", True), ("currency", "EUR")]),
            RawNumber("1e400"), 5, "EUR", [1]]) | values,
    }


@st.composite
def events(draw: st.DrawFn, limits: Limits, in_batch: bool = False) -> Object:
    """A valid event with up to three things changed: a field set to any value, valid or not,
    a field dropped, an unknown field added, or a field repeated."""
    pairs = list(draw(good_events(limits, in_batch)))
    fields = field_values(limits)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        edit = draw(st.sampled_from(["set", "set", "drop", "extra", "repeat"]))
        if edit == "set":
            key = draw(st.sampled_from([*fields, "data", "data", "cache", "name", "id", "type", "url"]))
            pairs = [(k, v) for k, v in pairs if k != key] + [(key, draw(fields[key]))]
        elif edit == "drop" and pairs:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        elif edit == "extra":
            pairs.append((draw(EXTRA_KEYS), draw(values)))
        elif edit == "repeat" and pairs:
            key = draw(st.sampled_from(pairs))[0]
            pairs.append((key, draw(fields.get(key, values))))
    return Object(draw(st.permutations(pairs)))


def encode(value: Any, ascii_only: bool) -> str:
    """JSON text, with the repeated keys, raw numbers and escapes the generators ask for."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, Object):
        return "{" + ",".join(f"{encode(k, ascii_only)}:{encode(v, ascii_only)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii_only) for v in value) + "]"
    if isinstance(value, str) and not ascii_only and any("\ud800" <= c <= "\udfff" for c in value):
        ascii_only = True  # a lone surrogate can only be sent as an escape
    return json.dumps(value, ensure_ascii=ascii_only)  # floats: `NaN`, `Infinity` (not JSON) too


@st.composite
def bodies(draw: st.DrawFn, limits: Limits) -> bytes:
    form = draw(st.sampled_from(["single", "single", "single", "batch", "batch", "json", "bytes"]))
    if form == "bytes":
        return draw(st.binary(max_size=200))
    if form == "single":
        document: Any = draw(events(limits))
    elif form == "batch":
        batch = draw(st.lists(events(limits, in_batch=True), min_size=1, max_size=min(limits.max_batch_events + 1, 5)) | values)
        pairs = [("events", batch), ("siteId", draw(clean_text(5) | values)), ("sentAt", draw(good_numbers | values))]
        pairs = draw(st.lists(st.sampled_from(pairs), min_size=1, unique_by=lambda pair: pair[0]))  # `events` maybe not
        if draw(st.booleans()):
            pairs += list(draw(events(limits)))  # an event's fields beside the batch's: ignored
        document = Object(draw(st.permutations(pairs)))
    else:
        document = draw(values)
    text = encode(document, ascii_only=draw(st.booleans())).encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(["none"] * 6 + ["pad", "byte", "cut"]))
    if mutation == "pad":
        pad = st.sampled_from([b"", b" ", b"\n\t\r ", b"\x0c", b"\xef\xbb\xbf", b"x", b"{}", b"\x00"])
        text = draw(pad) + text + draw(pad)
    elif mutation == "byte" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + bytes([draw(st.integers(0, 255))]) + text[at + 1 :]
    elif mutation == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    return text


def outcome(parse: Any, body: bytes, limits: Limits) -> Any:
    """What a parser answers, in a form that tells `1` from `1.0` and `0.0` from `-0.0`."""
    try:
        return described(parse(body, limits))
    except BeaconError as exc:
        return ("refused", str(exc), exc.status)


def described(envelope: Envelope) -> Any:
    items = [
        ("error", str(item), item.status) if isinstance(item, BeaconError) else repr(item)
        for item in envelope.events
    ]
    return (items, envelope.batch, repr(envelope.site), repr(envelope.sent_at))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_fast_path_answers_as_the_reference_for_any_body(data: st.DataObject) -> None:
    limits = data.draw(st.sampled_from(LIMITS))
    body = data.draw(bodies(limits))
    fast = _parse_body_fast(body, limits)
    event("fast path" if fast is not None else "left to the reference")  # --hypothesis-show-statistics
    assert outcome(parse_body, body, limits) == outcome(_parse_body_reference, body, limits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_valid_beacons_take_the_fast_path(data: st.DataObject) -> None:
    limits = data.draw(st.sampled_from(LIMITS))
    single = data.draw(good_events(limits, tracker=True))
    batch = Object([("siteId", "s"), ("sentAt", 1.5), ("events", data.draw(st.lists(good_events(limits, in_batch=True, tracker=True), min_size=1, max_size=min(limits.max_batch_events, 4))))])
    for document in (single, batch):
        body = encode(document, ascii_only=data.draw(st.booleans())).encode()
        fast = _parse_body_fast(body, limits)
        assert fast is not None, body
        assert described(fast) == outcome(_parse_body_reference, body, limits)


def test_the_tracker_beacon_takes_the_fast_path() -> None:
    body = json.dumps(BEACON).encode()
    batch = json.dumps({"siteId": "s", "sentAt": 1, "events": [BEACON] * 100}).encode()
    for raw in (body, batch):
        fast = _parse_body_fast(raw, LIMITS[0])
        assert fast is not None and fast == _parse_body_reference(raw, LIMITS[0])
    too_many = json.dumps({"events": [BEACON] * 101}).encode()
    assert _parse_body_fast(too_many, LIMITS[0]) is None
    assert outcome(parse_body, too_many, LIMITS[0]) == ("refused", "a batch holds at most 100 events, this one has 101", 413)


def test_what_the_fast_path_cannot_vouch_for_is_left_to_the_reference() -> None:
    for extra in ({"unknown": 1}, {"url": "/\x00"}, {"cache": {"a": [1]}}, {"cache": {"a": 2**64 - 1}}, {"url": None}, {"type": "event"}):
        body = json.dumps({**BEACON, **extra}).encode()
        assert _parse_body_fast(body, LIMITS[0]) is None
        assert outcome(parse_body, body, LIMITS[0]) == outcome(_parse_body_reference, body, LIMITS[0])


# One thing wrong (or just inside a limit) in the tracker's beacon: the rules that span fields, and
# every limit from either side. Each is checked alone, and inside a batch.
_ABOVE_MAX = float(2**53)  # just past MAX_NUMBER
ABSENT = RawNumber("absent")  # the field left out (None is sent as `null`)
NEAR_MISSES: list[tuple[str, Any]] = [
    *(("type", v) for v in ["click", "", "Pageview", 1, True, [], {}, None, ABSENT]),
    *(("url", v) for v in ["", "x" * 2000, "x" * 2001, "a\x00", 5, True, None, ABSENT]),
    *((wire, v) for wire, limit in Limits().string_fields for v in ["x" * limit, "x" * (limit + 1), "\x00", 5, "", None]),
    *(("name", v) for v in ["", " ", "\t\u2028", "x" * 200, "x" * 201, "\x00", 5, None, ABSENT]),
    *(("id", v) for v in ["", "x" * 256, "x" * 257, "\x00", 5, None, ABSENT]),
    *(("engagementTime", v) for v in [-1, -0.0, 0, 86_400_000, 86_400_000.5, 86_400_001, True, "1", None, RawNumber("1e400"), RawNumber("8.64e7")]),
    *(("scrollDepth", v) for v in [-1, -0.0, 0, 50, 100, 100.5, 101, True, "1", None, RawNumber("1e400")]),
    *(("ts", v) for v in [True, "1", MAX_NUMBER, MAX_NUMBER + 1, 2**64, 10**30, -(2**63) - 1, 1.5, -0.0, RawNumber("1e308"), RawNumber("1e309"), RawNumber("-0")]),
    *(("cache", v) for v in ["x", [], {}, {"a": [1]}, {"a": 2**63}, {"a": 2**64}, {"a": 10**400}, {"a": -(2**63) - 1}, {"a": "\x00"}, None]),
    *(("data", v) for v in [
        [], "x", {}, None, {"": 1}, {"x" * 64: 1}, {"x" * 65: 1}, {"a\x00": 1}, {"a": "\x00"}, {"a": MAX_NUMBER}, {"a": _ABOVE_MAX}, {"a": 1e308},
        {"a": -_ABOVE_MAX}, {"a": 10**301}, {"a": "x" * 500}, {"a": "x" * 501}, {"a": [1]}, {"a": {}}, {"a": None}, {"a": True},
        {"a": RawNumber("-0")}, {"a": 2**64}, {f"k{i}": i for i in range(30)}, {f"k{i}": i for i in range(31)},
        {**{f"k{i}": i for i in range(30)}, "z": None},
    ]),
    ("unknown", 1), ("siteId", 5), ("sentAt", True), ("sentAt", 2**64), ("sentAt", RawNumber("1e308")), ("events", None), ("events", {}), ("events", []),
]


def _as_json(value: Any) -> Any:
    return Object((k, _as_json(v)) for k, v in value.items()) if isinstance(value, dict) else value


@pytest.mark.parametrize(("key", "value"), NEAR_MISSES, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("kind", ["pageview", "event", "identify"])
def test_one_thing_wrong_is_answered_as_the_reference(kind: str, key: str, value: Any) -> None:
    event = {**BEACON, "type": kind, "name": "signup", "id": "user-1", key: value}
    if value is ABSENT:
        del event[key]
    if kind == "identify" and key != "url":
        del event["url"]  # `identify` needs no page
    for document in (event, {"siteId": "s", "sentAt": 1, "events": [event]}):
        for ascii_only in (True, False):
            body = encode(_as_json(document), ascii_only).encode("utf-8", "surrogatepass")
            assert outcome(parse_body, body, LIMITS[0]) == outcome(_parse_body_reference, body, LIMITS[0])
