"""Delivery: buffered events reach the server exactly once, whatever the page and browser do."""

from __future__ import annotations

import json

import pytest

from tests.tracker.harness import SPA_BODY, Harness, dwell, sent, set_visibility

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFUSE_BEACONS = """
window.__refused = 0;
navigator.sendBeacon = () => { window.__refused++; return false; };
"""

BLOCK_STORAGE = """
for (const name of ['localStorage', 'sessionStorage']) {
  Object.defineProperty(window, name, {configurable: true, get() {
    throw new DOMException("Access is denied for this document.", "SecurityError");
  }});
}
"""


def test_closing_the_tab_delivers_a_full_buffer_exactly_once(harness: Harness) -> None:
    h = harness
    url = h.add_page("/buffer.html", "Buffer", flush_interval="60000")
    page = h.new_page()
    page.goto(url)
    for i in range(7):
        page.evaluate("i => track('step', {i})", i)
    # Nothing has left yet: the pageview and seven events wait in the buffer (ten flush at once).
    assert sent(page) == {"beacon": 0, "fetch": 0}
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.named("step")) == 7 and len(e.of_type("page_exit")) == 1)
    events = h.settle()
    assert len(events.pageviews) == 1
    assert sorted(r["props_num"]["i"] for r in events.named("step")) == [float(i) for i in range(7)]
    assert len(events.rows) == 1 + 7 + 1 + len(events.of_type("engagement"))
    # Buffered events keep the time they happened, not the time they were sent.
    assert [r["ts"] for r in events.rows] == sorted(r["ts"] for r in events.rows)
    assert all(r["received_at"] >= r["ts"] for r in events.rows)


def test_the_tenth_event_flushes_the_buffer(harness: Harness) -> None:
    h = harness
    url = h.add_page("/size.html", "Size", flush_interval="60000")
    page = h.new_page()
    page.goto(url)
    for i in range(9):  # with the pageview: ten events
        page.evaluate("i => track('n', {i})", i)
    assert sent(page) == {"beacon": 0, "fetch": 1}
    h.wait_for(lambda e: len(e.named("n")) == 9)
    page.evaluate("track('n', {i: 9})")
    assert sent(page) == {"beacon": 0, "fetch": 1}  # the eleventh waits for the next flush
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.named("n")) == 10)
    events = h.settle()
    assert len(events.named("n")) == 10 and len(events.pageviews) == 1


def test_a_refused_beacon_goes_by_fetch_exactly_once(harness: Harness) -> None:
    h = harness
    url = h.add_page("/refused.html", "Refused", flush_interval="60000")
    page = h.new_page(init_scripts=(REFUSE_BEACONS,))
    page.goto(url)
    page.evaluate("track('before-hide', {n: 1}); track('before-hide', {n: 2})")
    # A tab switch flushes by beacon; the browser refuses it (over its quota, say).
    page.evaluate("""() => {
        window.__fetches = 0;
        const realFetch = window.fetch;
        window.fetch = function () { window.__fetches++; return realFetch.apply(this, arguments); };
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    assert page.evaluate("[window.__refused, window.__fetches]") == [1, 1]
    h.wait_for(lambda e: len(e.named("before-hide")) == 2)

    # And when the tab closes with the beacon refused, keepalive fetch still delivers.
    page.evaluate("track('at-close')")
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.named("at-close")) == 1 and len(e.of_type("page_exit")) == 1)
    events = h.settle()
    assert len(events.pageviews) == 1
    assert len(events.named("before-hide")) == 2
    assert len(events.named("at-close")) == 1
    assert len(events.of_type("engagement")) == 1


def test_blocked_storage_never_breaks_the_page_and_still_counts_one_visitor(harness: Harness) -> None:
    h = harness
    first = h.add_page("/blocked-1.html", "One", '<a id="next" href="/blocked-2.html">next</a>',
                       flush_interval="200")
    h.add_page("/blocked-2.html", "Two", "", flush_interval="200")
    page = h.new_page(init_scripts=(BLOCK_STORAGE,))
    page.goto(first)
    with page.expect_navigation():
        page.click("#next")
    # Consent cannot be kept without storage: no id, and nothing thrown.
    page.evaluate("littlestats.consent(true); track('still-works', {ok: true}); identify('u-1')")
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.pageviews) == 2 and len(e.of_type("page_exit")) == 2
               and len(e.of_type("identify")) == 1)
    events = h.settle()
    assert events.paths() == ["/blocked-1.html", "/blocked-2.html"]
    assert len(events.named("still-works")) == 1
    # No visitorId without storage: the server's daily-salted key keeps one visitor across pages.
    assert {r["visitor_key_source"] for r in events.rows} == {"fallback"}
    assert len(events.visitor_keys()) == 1
    # (the harness fails the test if the page threw anything)


def test_destroy_flushes_then_stops_everything(harness: Harness) -> None:
    h = harness
    url = h.add_page("/app/", "App", SPA_BODY, flush_interval="60000")
    h.pages.prefixes["/app/"] = h.pages.pages["/app/"]
    page = h.new_page()
    native = page.evaluate("() => [history.pushState, history.replaceState].map(String)")
    page.goto(url)
    page.evaluate("track('before-destroy')")
    assert page.evaluate("history.pushState.toString()") != native[0]  # patched while running
    page.evaluate("littlestats.destroy()")
    assert sent(page)["fetch"] + sent(page)["beacon"] == 1  # the buffer went out at once

    # History methods are the browser's own again; no listener or timer is left to send anything.
    assert page.evaluate("() => [history.pushState, history.replaceState].map(String)") == native
    page.evaluate("go('/app/pricing')")
    page.evaluate("track('after-destroy'); identify('nobody'); littlestats.trackPageView()")
    page.go_back()
    set_visibility(page, "hidden")
    set_visibility(page, "visible")
    page.click("#docs")
    dwell(page, 300)
    assert sent(page) == {"beacon": 0, "fetch": 1}
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.named("before-destroy")) == 1)
    events = h.settle()
    assert [(r["type"], r["pathname"]) for r in events.rows] == [
        ("pageview", "/app/"), ("event", "/app/")]


def test_visit_cache_follows_the_server_and_expires_after_30_idle_minutes(harness: Harness) -> None:
    h = harness
    # The visit is kept in localStorage only when the tracker may store there (data-persistent-id).
    url = h.add_page("/visit.html", "Visit", flush_interval="100", persistent_id=True)
    page = h.new_page()
    with page.expect_response(lambda r: "/api/v2/track/" in r.url) as first:
        page.goto(url + "?utm_source=ads")
    answer = first.value.json()["cache"]
    page.wait_for_function("(JSON.parse(localStorage.ls_visit) || {}).c")
    stored = page.evaluate("JSON.parse(localStorage.ls_visit)")
    assert stored["c"] == answer
    assert stored["u"] == {"utm_source": "ads"}

    # The next batch carries the server's visit back, and the answer continues the same visit.
    with page.expect_request(lambda r: "/api/v2/track/" in r.url) as second:
        page.evaluate("track('again')")
    sent_events = json.loads(second.value.post_data or "{}")["events"]
    assert [e["cache"]["visitId"] for e in sent_events] == [answer["visitId"]]
    assert sent_events[0]["url"].endswith("/visit.html?utm_source=ads")
    page.wait_for_function(
        "v => JSON.parse(localStorage.ls_visit).c.iat > v.iat", arg=answer)
    assert page.evaluate("JSON.parse(localStorage.ls_visit).c.visitId") == answer["visitId"]

    # Thirty idle minutes later (we age the stored visit), the next event starts a new visit:
    # no cache sent, and the old campaign is gone.
    page.evaluate("""() => {
        const v = JSON.parse(localStorage.ls_visit);
        v.t -= 31 * 60 * 1000;
        localStorage.ls_visit = JSON.stringify(v);
    }""")
    with page.expect_request(lambda r: "/api/v2/track/" in r.url) as third:
        page.evaluate("history.pushState({}, '', '/visit-2.html')")
    (view,) = json.loads(third.value.post_data or "{}")["events"][-1:]
    assert view["type"] == "pageview" and "cache" not in view
    assert view["url"].endswith("/visit-2.html")
    h.wait_for(lambda e: "/visit-2.html" in e.paths())


CLOCK_TEN_MINUTES_FAST = """
const realNow = Date.now;
Date.now = () => realNow() + 10 * 60 * 1000;
"""


def test_a_visitor_with_a_fast_clock_is_still_counted(harness: Harness) -> None:
    h = harness
    url = h.add_page("/clock.html", "Clock", flush_interval="100")
    page = h.new_page(init_scripts=(CLOCK_TEN_MINUTES_FAST,))
    with page.expect_response(lambda r: "/api/v2/track/" in r.url) as answer:
        page.goto(url)
    assert answer.value.json()["accepted"] == 1, answer.value.json()
    events = h.wait_for(lambda e: "/clock.html" in e.paths())
    (view,) = [r for r in events.of_type("pageview") if r["pathname"] == "/clock.html"]
    # `sentAt` corrected the ten minutes: the view is stored at (about) the server's time.
    assert abs((view["received_at"] - view["ts"]).total_seconds()) < 5


def test_oversized_properties_are_trimmed_and_big_batches_split(harness: Harness) -> None:
    h = harness
    url = h.add_page("/big.html", "Big", flush_interval="60000")
    page = h.new_page()
    page.goto(url)
    page.evaluate("""() => {
        const data = {long: 'é'.repeat(600), ['k'.repeat(70)]: 1, nested: {a: 1}, nan: NaN};
        for (let i = 0; i < 40; i++) data['p' + i] = i;
        track('wide', data);
        // Eight more events of ~10 KB each: with the pageview, ten events over the request limit.
        for (let i = 0; i < 8; i++) {
            const fat = {};
            for (let j = 0; j < 20; j++) fat['f' + j] = String(i).repeat(500);
            track('fat', fat);
        }
    }""")
    assert sent(page)["fetch"] > 1, "a batch over the request limit must be split"
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.named("fat")) == 8 and len(e.named("wide")) == 1)
    events = h.settle()
    (wide,) = events.named("wide")
    assert wide["props_str"] == {"long": "é" * 500}
    assert len(wide["props_num"]) == 29  # 30 properties at most; the long name was left out
    assert all(len(r["props_str"]) == 20 for r in events.named("fat"))
