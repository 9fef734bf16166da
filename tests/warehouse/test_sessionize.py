"""Sessionization on small frames: the SPEC §5 definitions, one behaviour per test."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.warehouse.frames import T0, event, frame
from warehouse.sessionize import sessionize


def visits(*events: dict) -> pl.DataFrame:
    return sessionize(frame(*events))[1]


def test_events_within_30_minutes_form_one_visit() -> None:
    s = visits(event(0), event(10, pathname="/a"), event(39, pathname="/b"))
    assert s.height == 1
    assert s["pageviews"].to_list() == [3]
    assert s["ended_at"][0] == T0 + timedelta(minutes=39)


def test_gap_over_30_minutes_starts_a_new_visit() -> None:
    s = visits(event(0), event(30.001))
    assert s.height == 2


def test_gap_of_exactly_30_minutes_continues_the_visit() -> None:
    s = visits(event(0), event(30), event(60))
    assert s.height == 1


def test_visitors_and_sites_never_share_a_visit() -> None:
    s = visits(event(0), event(1, visitor_key=2), event(2, site_id="s2"))
    assert s.height == 3


def test_session_id_is_the_first_event_id() -> None:
    s = visits(event(5, event_id="b"), event(0, event_id="a"), event(40, event_id="c"))
    assert sorted(s["session_id"].to_list()) == ["a", "c"]


def test_ties_in_time_are_ordered_by_event_id() -> None:
    s = visits(event(0, event_id="y", pathname="/second"), event(0, event_id="x", pathname="/first"))
    assert s["entry_page"].to_list() == ["/first"]
    assert s["session_id"].to_list() == ["x"]


def test_duration_adds_the_final_pages_engagement() -> None:
    s = visits(
        event(0),
        event(2, pathname="/a"),
        event(3, type="engagement", pathname="/a", engagement_ms=50_000),
        event(4, type="page_exit", pathname="/a", engagement_ms=65_000),
    )
    # last pageview at 2 min, final page engaged 65 s; the exit's own time does not stretch it
    assert s["duration_ms"].to_list() == [2 * 60_000 + 65_000]
    assert s["engagement_ms"].to_list() == [65_000]


def test_custom_event_on_the_last_page_is_not_counted_twice() -> None:
    s = visits(
        event(0),
        event(2, pathname="/a"),
        event(3, type="event", name="Signup", pathname="/a"),
        event(4, type="page_exit", pathname="/a", engagement_ms=90_000),
    )
    # the page was seen for 90 s from its pageview at 2 min; the signup at 3 min lies inside that
    assert s["duration_ms"].to_list() == [2 * 60_000 + 90_000]


def test_engagement_of_earlier_pages_is_not_the_final_pages() -> None:
    s = visits(event(0), event(1, type="page_exit", engagement_ms=40_000), event(3, pathname="/b"))
    assert s["engagement_ms"].to_list() == [0]
    assert s["duration_ms"].to_list() == [3 * 60_000]


def test_an_exit_in_the_same_millisecond_as_the_last_pageview_is_the_previous_pages() -> None:
    # The tracker sends the page it leaves an exit just before the next page's view; both often
    # carry the same millisecond, and the exit's event id may sort either way.
    for exit_id in ("a-exit", "z-exit"):
        s = visits(event(0, "e0"), event(2, exit_id, type="page_exit", engagement_ms=311),
                   event(2, "m-view", pathname="/b"),
                   event(4, "e4", type="page_exit", pathname="/b", engagement_ms=132))
        assert s["engagement_ms"].to_list() == [132]
        assert s["duration_ms"].to_list() == [2 * 60_000 + 132]


def test_a_visit_of_engagement_reports_only_keeps_their_engagement() -> None:
    s = visits(event(0, type="engagement", engagement_ms=5_000))
    assert s["engagement_ms"].to_list() == [5_000]


def test_single_pageview_without_custom_event_is_a_bounce() -> None:
    s = visits(event(0), event(1, type="page_exit", engagement_ms=90_000))
    assert s["is_bounce"].to_list() == [True]
    assert s["duration_ms"].to_list() == [90_000]


def test_custom_event_makes_a_single_pageview_visit_not_a_bounce() -> None:
    s = visits(event(0), event(1, type="event", name="Signup"))
    assert s["is_bounce"].to_list() == [False]
    assert s["custom_events"].to_list() == [1]
    assert s["duration_ms"].to_list() == [60_000]


def test_two_pageviews_are_not_a_bounce() -> None:
    assert visits(event(0), event(1))["is_bounce"].to_list() == [False]


def test_entry_and_exit_pages_are_first_and_last_pageview() -> None:
    s = visits(
        event(0, pathname="/in"),
        event(1, type="event", name="x", pathname="/in"),
        event(2, pathname="/mid"),
        event(3, pathname="/out"),
        event(4, type="page_exit", pathname="/out", engagement_ms=1),
    )
    assert (s["entry_page"][0], s["exit_page"][0]) == ("/in", "/out")
    assert s["events"][0] == 5


def test_source_referrer_and_utm_come_from_the_first_event() -> None:
    s = visits(
        event(0, source="Google", referrer="https://google.com/", referrer_domain="google.com",
              utm_campaign="spring"),
        event(1, source="Direct / None"),
    )
    row = s.row(0, named=True)
    assert (row["source"], row["referrer_domain"], row["utm_campaign"]) == ("Google", "google.com", "spring")


def test_visit_crossing_midnight_stays_one_visit() -> None:
    s = visits(event(11 * 60 + 50), event(12 * 60 + 10))  # 23:50 → 00:10
    assert s.height == 1
    assert s["started_at"][0].date() != s["ended_at"][0].date()


def test_first_visit_is_new_and_later_visits_return() -> None:
    s = visits(event(0), event(100), event(5, visitor_key=2))
    by_start = s.sort("visitor_key", "started_at")
    assert by_start["is_new"].to_list() == [True, False, True]


def test_visitor_known_from_earlier_loads_is_not_new() -> None:
    returning = pl.DataFrame({"site_id": ["s1"], "visitor_key": [1]}, schema={"site_id": pl.String, "visitor_key": pl.UInt64})
    _, s = sessionize(frame(event(0), event(0, visitor_key=2)), returning)
    assert s.sort("visitor_key")["is_new"].to_list() == [False, True]


def test_user_id_is_the_last_identified() -> None:
    s = visits(event(0), event(1, type="identify", user_id="u1"), event(2, user_id="u2"))
    assert s["user_id"].to_list() == ["u2"]


def test_late_event_joins_existing_visit() -> None:
    # The same frame in any arrival order gives the same visits.
    a = visits(event(0, event_id="a"), event(50, event_id="c"))
    b = visits(event(0, event_id="a"), event(50, event_id="c"), event(25, event_id="b"))
    assert a.height == 2
    assert b.height == 1
    assert b["session_id"].to_list() == ["a"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.floats(0, 600, allow_nan=False)), min_size=1, max_size=40))
def test_visits_partition_events_by_the_30_minute_rule(points: list[tuple[int, float]]) -> None:
    events = [event(m, event_id=f"e{i:03d}", visitor_key=v) for i, (v, m) in enumerate(points)]
    with_ids, s = sessionize(frame(*events))
    assert s["events"].sum() == len(events)
    assert with_ids["session_id"].n_unique() == s.height
    # a new visit starts exactly where a visitor's gap exceeds 30 minutes
    expected = 0
    for v in {p[0] for p in points}:
        times = sorted(m for vv, m in points if vv == v)
        expected += 1 + sum(1 for a, b in zip(times, times[1:], strict=False) if b - a > 30)
    assert s.height == expected


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(12))))
def test_input_order_does_not_matter(order: list[int]) -> None:
    minutes = [0, 3, 7, 40, 41, 90, 95, 200, 201, 202, 260, 300]
    events = [event(minutes[i], event_id=f"e{i:02d}", visitor_key=1 + i % 2) for i in order]
    reference = [event(m, event_id=f"e{i:02d}", visitor_key=1 + i % 2) for i, m in enumerate(minutes)]
    assert visits(*events).equals(visits(*reference))
