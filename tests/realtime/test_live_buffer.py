"""LiveBuffer: the metric definitions of SPEC §5 applied to the live window, windows, memory caps."""

from __future__ import annotations

from typing import Any

from api.live import (
    ACTIVE_MS,
    HOUR_MS,
    MINUTE_MS,
    RETAIN_MS,
    VISIT_GAP_MS,
    LiveBuffer,
    live_event,
    parse_cursor,
)

T0 = 1_800_000_000_000 // HOUR_MS * HOUR_MS + 40 * MINUTE_MS  # hh:40:00


class Feeder:
    def __init__(self, buffer: LiveBuffer) -> None:
        self.buffer = buffer
        self.n = 0

    def add(self, visitor: int, at: int, *, type: str = "pageview", page: str = "/", ts: int | None = None,
            site: str = "s1", **extra: Any) -> None:
        raw = {"site_id": site, "ts": at if ts is None else ts, "received_at": at, "type": type,
               "visitor_key": visitor, "pathname": page, "source": extra.pop("source", "Direct / None"),
               "device": "desktop", "browser": "Firefox", "os": "Linux", **extra}
        self.n += 1
        self.buffer.add(live_event(raw), (at, "seg", self.n), at)


def test_visits_visitors_and_bounces_follow_the_shared_definitions() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    f.add(1, T0)  # visitor 1: one pageview -> bounce
    f.add(2, T0, page="/a")  # visitor 2: two pageviews -> not a bounce
    f.add(2, T0 + MINUTE_MS, page="/b")
    f.add(3, T0)  # visitor 3: a pageview and a custom event -> not a bounce
    f.add(3, T0 + 1000, type="event", name="signup")
    f.add(4, T0, type="engagement")  # engagement never counts as a pageview
    stats = buf.stats("s1", T0 + MINUTE_MS + 30_000)
    assert stats["hour"] == {"start": stats["hour"]["start"], "views": 4, "visits": 4, "visitors": 4,
                                  "bounceRate": 25.0, "events": 1}
    assert stats["activeVisitors"] == 4
    assert stats["lastMinute"] == {"views": 1, "events": 0}  # only /b is within the last 60 s


def test_a_gap_over_30_minutes_starts_a_new_visit() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    start = T0 - 40 * MINUTE_MS  # hh:00
    f.add(1, start)
    f.add(1, start + 10 * MINUTE_MS)
    f.add(1, start + 10 * MINUTE_MS + VISIT_GAP_MS + 1)  # over 30 min after the last event: new visit
    f.add(2, start)
    f.add(2, start + VISIT_GAP_MS)  # exactly 30 min: the same visit
    stats = buf.stats("s1", start + 45 * MINUTE_MS)
    assert stats["hour"]["visits"] == 3
    assert stats["hour"]["visitors"] == 2
    assert stats["hour"]["bounceRate"] == 33.3  # only visitor 1's second visit


def test_a_late_event_joins_its_visit_instead_of_starting_one() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    f.add(1, T0, page="/second")
    f.add(1, T0 + 1000, page="/first", ts=T0 - 5 * MINUTE_MS)  # buffered by the tracker, sent late
    stats = buf.stats("s1", T0 + 2000)
    assert stats["hour"]["visits"] == 1 and stats["hour"]["bounceRate"] == 0.0


def test_a_visit_started_last_hour_is_not_counted_as_started_this_hour() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    hour = T0 // HOUR_MS * HOUR_MS
    f.add(1, hour - 10 * MINUTE_MS)
    f.add(1, hour + 10 * MINUTE_MS)
    stats = buf.stats("s1", hour + 11 * MINUTE_MS)
    assert stats["hour"]["visits"] == 0
    assert stats["hour"]["visitors"] == 1
    assert stats["hour"]["views"] == 1


def test_top_lists_count_recent_visitors_and_attribute_the_visit_source() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    f.add(1, T0, page="/", source="Google", country="DE")
    f.add(1, T0 + 1000, page="/pricing", country="DE")  # internal navigation: still a Google visit
    f.add(2, T0, page="/pricing", source="Direct / None", country="FR")
    f.add(2, T0 + 1000, page="/pricing", country="FR")
    stats = buf.stats("s1", T0 + 2000)
    assert stats["topPages"][0] == {"page": "/pricing", "visitors": 2, "views": 3}
    assert {s["source"]: s["visitors"] for s in stats["topSources"]} == {"Google": 1, "Direct / None": 1}
    assert {c["country"]: c["visitors"] for c in stats["topCountries"]} == {"DE": 1, "FR": 1}


def test_windows_slide_and_old_events_expire() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    f.add(1, T0, page="/old")
    f.add(2, T0 + ACTIVE_MS, page="/new")
    now = T0 + ACTIVE_MS + 1000
    buf.expire(now)
    stats = buf.stats("s1", now)
    assert stats["activeVisitors"] == 1
    assert {p["page"] for p in stats["topPages"]} == {"/old", "/new"}  # 30-minute window
    later = T0 + RETAIN_MS + ACTIVE_MS + 1
    buf.expire(later)
    assert buf.size == 0 and "s1" not in buf.sites
    stats = buf.stats("s1", later)
    assert stats["activeVisitors"] == 0 and stats["topPages"] == []


def test_memory_caps_evict_the_oldest_events_and_say_so() -> None:
    buf = LiveBuffer(max_events=50, max_events_per_site=30)
    f = Feeder(buf)
    for i in range(40):
        f.add(i, T0 + i, site="big", page=f"/{i}")
    for i in range(25):
        f.add(i, T0 + 100 + i, site="small")
    assert len(buf.sites["big"].events) + len(buf.sites["small"].events) == buf.size == 50
    assert len(buf.sites["big"].events) <= 30
    big = buf.stats("big", T0 + 200)
    assert big["buffer"]["complete"] is False
    assert big["hour"]["views"] == 40  # hourly counters are kept, only event detail is evicted
    assert sum(p["views"] for p in big["topPages"]) <= 30 and big["activeVisitors"] <= 30
    assert buf.stats("small", T0 + 200)["buffer"]["complete"] is True


def test_the_visitor_cap_forgets_the_least_recently_seen_of_the_largest_site_in_batches() -> None:
    buf = LiveBuffer(max_visitors=200)
    f = Feeder(buf)
    for i in range(150):
        f.add(i, T0 + i, site="big")
    for i in range(50):
        f.add(1000 + i, T0 + 200 + i, site="small")
    assert buf.visitor_count == 200 and buf.stats("big", T0 + 300)["buffer"]["complete"] is True
    f.add(0, T0 + 300, site="big")  # seen again: now the most recent of its site
    f.add(2000, T0 + 301, site="small")  # visitor 201: over the cap
    # Down to 1 % under the cap (198) in one go, from the largest site, least recently seen first.
    assert buf.visitor_count == len(buf.sites["big"].visitors) + len(buf.sites["small"].visitors) == 198
    assert len(buf.sites["small"].visitors) == 51
    big = buf.sites["big"].visitors
    assert 0 in big and 1 not in big and 2 not in big and 3 not in big and 4 in big
    assert buf.stats("big", T0 + 400)["buffer"]["complete"] is False
    assert buf.stats("big", T0 + 400)["hour"]["visitors"] == 150  # the hour's counts stay exact


def test_resume_returns_the_events_after_a_cursor() -> None:
    buf = LiveBuffer()
    f = Feeder(buf)
    for i in range(5):
        f.add(1, T0 + i, page=f"/{i}")
    cursor = parse_cursor(f"{T0 + 2}.seg.3")
    assert cursor == (T0 + 2, "seg", 3)
    assert [e.page for e in buf.sites["s1"].since(cursor)] == ["/3", "/4"]
    assert parse_cursor("not-a-cursor") is None


def test_event_messages_carry_no_visitor_key() -> None:
    buf = LiveBuffer()
    Feeder(buf).add(123456789, T0, page="/x", country="DE")
    event = buf.sites["s1"].events[0]
    assert b"123456789" not in event.message()
    assert set(event.public()) == {"type", "name", "page", "hostname", "source", "country", "device",
                                   "browser", "os", "ts", "time"}


def test_the_live_visit_gap_is_the_warehouse_one() -> None:
    # The live buffer does not import the warehouse (polars) into every worker; this keeps the
    # two definitions of a visit's gap one and the same.
    from warehouse.sessionize import VISIT_GAP

    assert VISIT_GAP.total_seconds() * 1000 == VISIT_GAP_MS


def test_an_event_is_decoded_from_a_whole_wal_record_keeping_only_what_the_buffer_needs() -> None:
    import msgspec
    import orjson

    from api.live import decode_event
    from ingest.schema import COLUMN_NAMES

    record = dict.fromkeys(COLUMN_NAMES)
    record.update({"event_id": "e1", "site_id": "s1", "ts": T0 - 5, "received_at": T0, "type": "event",
                   "name": "signup", "visitor_key": 2**64 - 1, "visitor_key_source": "tracker",
                   "hostname": "example.com", "pathname": "/a", "source": "Google", "device": "mobile",
                   "browser": "Chrome", "os": "Android", "props_str": {"plan": "pro"},
                   "props_num": {"n": 1.5}, "props_bool": {"b": True}})
    event = decode_event(orjson.dumps(record))
    assert (event.site_id, event.ts, event.received_at, event.type, event.name, event.visitor) == (
        "s1", T0 - 5, T0, "event", "signup", 2**64 - 1)
    assert (event.page, event.hostname, event.source, event.country, event.device, event.browser,
            event.os) == ("/a", "example.com", "Google", None, "mobile", "Chrome", "Android")
    # The fields the buffer keeps of its own are no column of a record (the decoder would fill them).
    own = {f.encode_name for f in msgspec.structs.fields(event)} - set(COLUMN_NAMES)
    assert own == {"key", "alive", "serialised"}
    assert event.alive and event.serialised is None


def test_a_backlog_is_counted_in_batches_that_keep_the_caps() -> None:
    buf = LiveBuffer(max_events=50, max_events_per_site=50, max_visitors=100)
    raw = {"site_id": "s1", "type": "pageview", "pathname": "/", "source": "Direct / None"}
    items = [((T0 + i, "seg", i), live_event({**raw, "ts": T0 + i, "received_at": T0 + i, "visitor_key": i}))
             for i in range(2500)]
    by_site = buf.extend(items, T0 + 2500)  # e.g. the recent past loaded at start, in one go
    assert [e.visitor for e in by_site["s1"]] == list(range(2500))  # all of them, in feed order
    assert buf.size == len(buf.sites["s1"].events) == 50 and buf.visitor_count <= 100
    assert buf.stats("s1", T0 + 2500)["hour"]["views"] == 2500  # the hour's counts stay exact
