"""A classic multi-page site: full page loads, a campaign landing, a custom event, an identify."""

from __future__ import annotations

import time

import pytest

from tests.tracker.harness import Harness

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("persistent_id", [False, True], ids=["default", "persistent-id"])
def test_static_site_visit_lands_exactly_once_with_time_on_page(harness: Harness, persistent_id: bool) -> None:
    h = harness
    home = h.add_page("/index.html", "Home", '<a id="about" href="/about.html">About us</a>',
                      flush_interval="200", persistent_id=persistent_id)
    h.add_page("/about.html", "About", "<p>About us</p>", flush_interval="200", persistent_id=persistent_id)
    page = h.new_page()

    t0 = time.monotonic()
    page.goto(home + "?utm_source=newsletter&utm_medium=email&utm_campaign=spring")
    page.wait_for_timeout(1200)  # time spent reading the home page
    t_click = time.monotonic()
    with page.expect_navigation():
        page.click("#about")
    t1 = time.monotonic()
    page.evaluate("track('signup', {plan: 'pro', seats: 3, trial: true, nested: {x: 1}})")
    page.evaluate("identify('user-42', {plan: 'pro', vip: true})")
    page.wait_for_timeout(800)  # time spent on the about page
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.pageviews) == 2 and len(e.of_type("page_exit")) == 2
               and len(e.of_type("identify")) == 1)
    t2 = time.monotonic()
    events = h.settle()

    assert events.paths() == ["/index.html", "/about.html"]
    assert [r["title"] for r in events.pageviews] == ["Home", "About"]
    assert events.paths("page_exit") == ["/index.html", "/about.html"]
    assert len(events.named("signup")) == 1
    assert {r["type"] for r in events.rows} <= {"pageview", "page_exit", "engagement", "event", "identify"}
    assert len(events.rows) == len(events.pageviews) + len(events.of_type("page_exit")) + len(
        events.of_type("engagement")
    ) + 2

    # One visitor in a normal desktop browser: by default known by the server's daily-salted key
    # (nothing stored in the browser); with data-persistent-id by the tracker's random id.
    assert len(events.visitor_keys()) == 1
    assert {r["visitor_key_source"] for r in events.rows} == {"tracker" if persistent_id else "fallback"}
    first = events.pageviews[0]
    assert (first["browser"], first["device"], first["os"]) == ("Chrome", "desktop", "Linux")
    assert first["screen"] == "1280x800"
    assert first["language"] and first["timezone"]
    assert first["hostname"] == "127.0.0.1"

    # The landing page's campaign holds for the whole visit, including the conversion: on every
    # event when the tracker keeps the visit in localStorage; by default (nothing stored, so the
    # next page load cannot know it) on the landing page's events, and the visit has it (below).
    for row in events.rows:
        if persistent_id or row["pathname"] == "/index.html":
            assert (row["utm_source"], row["utm_medium"], row["utm_campaign"]) == (
                "newsletter", "email", "spring"), row
            assert row["source"] == "newsletter"
        else:
            assert row["utm_source"] is None, row

    # Typed properties; the nested object is left out rather than failing the event.
    signup = events.named("signup")[0]
    assert signup["props_str"] == {"plan": "pro"}
    assert signup["props_num"] == {"seats": 3.0}
    assert signup["props_bool"] == {"trial": True}
    assert signup["pathname"] == "/about.html"
    ident = events.of_type("identify")[0]
    assert ident["user_id"] == "user-42"
    assert ident["props_str"] == {"plan": "pro"} and ident["props_bool"] == {"vip": True}

    # Time on page is visible time: at least the time the test spent on each page, at most the
    # wall time around it. Only the last report of a page view counts (it is cumulative).
    def time_on(path: str) -> int:
        reports = [r["engagement_ms"] for r in events.rows
                   if r["type"] in ("page_exit", "engagement") and r["pathname"] == path]
        assert reports == sorted(reports), "engagement reports are cumulative"
        return int(reports[-1])

    assert 1200 <= time_on("/index.html") <= (t1 - t0) * 1000
    assert 800 <= time_on("/about.html") <= (t2 - t_click) * 1000
    assert all(r["engagement_ms"] is None for r in events.pageviews)

    # The warehouse, after `littlestats load`: one visit with the right numbers.
    wh = h.warehouse
    wh.load()
    (visit,) = wh.sessions()
    assert (visit["entry_page"], visit["exit_page"]) == ("/index.html", "/about.html")
    assert (visit["pageviews"], visit["custom_events"], visit["is_bounce"]) == (2, 1, False)
    assert (visit["source"], visit["utm_campaign"]) == ("newsletter", "spring")
    assert visit["user_id"] == "user-42"
    assert visit["engagement_ms"] == time_on("/about.html")
    # Duration (SPEC §5): from the first view to the last action, plus the last page's visible
    # time -- which also covers the stretch of that page before its last action, hence `overlap`.
    ms = {r["type"]: r["ts"] for r in events.rows if r["pathname"] == "/about.html"}
    overlap = (ms["identify"] - ms["pageview"]).total_seconds() * 1000
    assert 1200 + 800 <= visit["duration_ms"] <= (t2 - t0) * 1000 + overlap
    loaded = wh.events()
    assert [(e["type"], e["pathname"]) for e in loaded] == [
        (r["type"], r["pathname"]) for r in events.rows]
    assert {e["session_id"] for e in loaded} == {visit["session_id"]}
    props = {(p["event_type"], p["key"]): (p["value_type"], p["string_value"], p["number_value"],
                                            p["bool_value"]) for p in wh.props()}
    assert props == {
        ("event", "plan"): ("string", "pro", None, None),
        ("event", "seats"): ("number", None, 3.0, None),
        ("event", "trial"): ("boolean", None, None, True),
        ("identify", "plan"): ("string", "pro", None, None),
        ("identify", "vip"): ("boolean", None, None, True),
    }
