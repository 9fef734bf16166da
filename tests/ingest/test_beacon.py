"""The wire protocol: shapes accepted and refused, with errors that name the problem."""

from __future__ import annotations

import orjson
import pytest

from ingest.beacon import Beacon, BeaconError, Limits, parse_body

LIMITS = Limits()


def test_event_without_type_is_a_pageview() -> None:
    env = parse_body(b'{"url": "/a"}', LIMITS)
    assert not env.batch
    beacon = env.events[0]
    assert isinstance(beacon, Beacon) and beacon.type == "pageview" and beacon.url == "/a"


def test_batch_form_keeps_bad_events_separate() -> None:
    env = parse_body(b'{"siteId": "s", "events": [{"url": "/a"}, {"type": 5}, {"type": "event", "url": "/"}]}', LIMITS)
    assert env.batch and env.site == "s"
    assert isinstance(env.events[0], Beacon)
    assert isinstance(env.events[1], BeaconError) and "events[1]" in str(env.events[1])
    assert isinstance(env.events[2], BeaconError) and "'name' is required" in str(env.events[2])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"url": 5}', "'url' must be a string"),
        (b'{"url": "/", "type": "click"}', "'type' must be one of"),
        (b'{"url": "/", "engagementTime": -1}', "engagementTime"),
        (b'{"url": "/", "ts": "yesterday"}', "'ts' must be a finite number"),
        (b'{"url": "/", "data": [1]}', "'data' must be an object"),
        (b'{"url": "/", "data": {"a": {"b": 1}}}', "property 'a' must be a string, number or boolean"),
        (b'{"url": "/", "cache": "x"}', "'cache' must be an object"),
        (b'{"type": "identify"}', "'id' is required"),
        (b'{"events": {}}', "'events' must be an array"),
        (b'{"events": []}', "'events' is empty"),
        (b'{"url": "/\\u0000"}', "NUL"),
    ],
)
def test_bad_input_is_refused_with_a_named_problem(body: bytes, message: str) -> None:
    with pytest.raises(BeaconError, match=message) as info:
        env = parse_body(body, LIMITS)
        # Batch items carry their error rather than raising.
        for item in env.events:
            if isinstance(item, BeaconError):
                raise item
    assert 400 <= info.value.status < 500


def test_too_many_properties_and_events_are_refused() -> None:
    many = "{" + ",".join(f'"k{i}": {i}' for i in range(LIMITS.max_props + 1)) + "}"
    with pytest.raises(BeaconError, match="at most 30 are allowed"):
        parse_body(('{"url": "/", "data": ' + many + "}").encode(), LIMITS)
    events = ",".join('{"url": "/"}' for _ in range(LIMITS.max_batch_events + 1))
    with pytest.raises(BeaconError, match="at most 100 events") as info:
        parse_body(('{"events": [' + events + "]}").encode(), LIMITS)
    assert info.value.status == 413


def test_properties_keep_their_types() -> None:
    env = parse_body(b'{"type": "event", "name": "buy", "url": "/", "data": {"s": "x", "n": 2, "f": 1.5, "b": false, "z": null}}', LIMITS)
    beacon = env.events[0]
    assert isinstance(beacon, Beacon)
    assert beacon.props == {"s": "x", "n": 2.0, "f": 1.5, "b": False}
    assert isinstance(beacon.props["b"], bool)


def test_every_optional_string_lands_in_its_own_field() -> None:
    from ingest.beacon import STRING_FIELDS

    raw = {wire: f"value of {wire}" for wire, _, _ in STRING_FIELDS}
    beacon = parse_body(orjson.dumps({"url": "/p", **raw}), LIMITS).events[0]
    assert isinstance(beacon, Beacon) and beacon.url == "/p"
    for wire, attr, _ in STRING_FIELDS:
        assert getattr(beacon, attr) == f"value of {wire}"


@pytest.mark.parametrize("number", ["18446744073709551616", "1e308", "9007199254740992", "-1e20"])
@pytest.mark.parametrize("field", ["data", "ts", "sentAt"])
def test_numbers_past_the_declared_magnitude_are_refused_as_such_however_written(field: str, number: str) -> None:
    """2**64 and 1e308 alike: past MAX_NUMBER (2**53 - 1), in integer or float notation, the same
    400 naming the bound — never "not finite" for a finite number."""
    bodies = {"data": '{"url": "/", "data": {"n": NUMBER}}', "ts": '{"url": "/", "ts": NUMBER}',
              "sentAt": '{"sentAt": NUMBER, "events": [{"url": "/"}]}'}
    body = bodies[field].replace("NUMBER", number).encode()
    with pytest.raises(BeaconError, match="must be a number between -9007199254740991 and 9007199254740991"):
        parse_body(body, LIMITS)


@pytest.mark.parametrize("number", ["9007199254740991", "-9007199254740991", "1.5e15", "0.25"])
def test_numbers_within_the_declared_magnitude_are_kept(number: str) -> None:
    beacon = parse_body(b'{"url": "/", "data": {"n": NUMBER}}'.replace(b"NUMBER", number.encode()), LIMITS).events[0]
    assert isinstance(beacon, Beacon) and beacon.props == {"n": float(number)}
