"""Page lifecycle: tab switches, back/forward-cache restores and repeated views are not new views;
time on page counts visible time only."""

from __future__ import annotations

import time

import pytest

from tests.tracker.harness import SPA_BODY, VISIBILITY_SCRIPT, Harness, dwell, set_visibility

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_tab_switch_reports_engagement_and_hidden_time_does_not_count(harness: Harness) -> None:
    h = harness
    url = h.add_page("/tabs.html", "Tabs", flush_interval="200")
    page = h.new_page()
    t0 = time.monotonic()
    page.goto(url)
    page.wait_for_timeout(800)
    set_visibility(page, "hidden")  # the user switches to another tab ...
    t1 = time.monotonic()
    h.wait_for(lambda e: len(e.of_type("engagement")) == 1)
    page.wait_for_timeout(1200)  # ... stays there ...
    t2 = time.monotonic()
    set_visibility(page, "visible")  # ... and comes back
    page.wait_for_timeout(600)
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.of_type("page_exit")) == 1)
    t3 = time.monotonic()
    events = h.settle()

    assert len(events.pageviews) == 1, "coming back to a tab is not a new view"
    (hidden_report,) = events.of_type("engagement")
    assert 800 <= hidden_report["engagement_ms"] <= (t1 - t0) * 1000 + 100
    (exit_report,) = events.of_type("page_exit")
    # At most the wall time the page was visible: had the 1.2 s hidden counted, this would fail.
    visible_ms = (t1 - t0) + (t3 - t2)
    assert 800 + 600 <= exit_report["engagement_ms"] <= visible_ms * 1000 + 100

    # A one-page visit bounces, and its duration is the page's visible time.
    h.warehouse.load()
    (visit,) = h.warehouse.sessions()
    assert (visit["pageviews"], visit["is_bounce"]) == (1, True)
    assert visit["duration_ms"] == visit["engagement_ms"] == exit_report["engagement_ms"]


def test_back_forward_cache_restore_is_not_a_new_view(harness: Harness) -> None:
    h = harness
    watch = "<script>addEventListener('pageshow', e => { window.__restored = e.persisted; });</script>"
    first = h.add_page("/bf-a.html", "A", '<a id="next" href="/bf-b.html">B</a>' + watch,
                       flush_interval="200")
    h.add_page("/bf-b.html", "B", "", flush_interval="200")
    page = h.new_page()
    page.goto(first)
    dwell(page, 400)
    with page.expect_navigation():
        page.click("#next")
    dwell(page, 300)
    page.go_back(wait_until="commit")
    page.wait_for_function("window.__restored !== undefined")
    assert page.evaluate("window.__restored") is True, "the page was not restored from bfcache"
    dwell(page, 500)
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.of_type("page_exit")) == 3)
    events = h.settle()
    assert events.paths() == ["/bf-a.html", "/bf-b.html"]
    assert events.paths("page_exit") == ["/bf-a.html", "/bf-b.html", "/bf-a.html"]
    a_first, _, a_again = events.of_type("page_exit")
    # The restored page goes on with the same view: its visible time keeps adding up.
    assert a_again["engagement_ms"] >= a_first["engagement_ms"] + 500


def test_same_url_twice_within_two_seconds_is_one_view(harness: Harness) -> None:
    h = harness
    url = h.add_page("/app/", "App", SPA_BODY, flush_interval="200")
    h.pages.prefixes["/app/"] = h.pages.pages["/app/"]
    page = h.new_page()
    page.goto(url)
    page.evaluate("littlestats.trackPageView(); littlestats.trackPageView()")
    page.evaluate("history.pushState({}, '', location.href)")
    page.evaluate("history.replaceState({}, '', location.href)")
    dwell(page)
    page.wait_for_timeout(2000)  # past the 2 s window, the same URL counts again when asked for
    page.evaluate("littlestats.trackPageView()")
    page.evaluate("go('/app/b')")
    dwell(page)
    page.evaluate("go('/app/')")  # back to a URL seen a moment ago: a navigation, so a view
    dwell(page)
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.of_type("page_exit")) == 4)
    events = h.settle()
    assert events.paths() == ["/app/", "/app/", "/app/b", "/app/"]


# The heartbeat runs every 10 minutes; the test takes hold of its callback instead of waiting.
CATCH_HEARTBEAT = """
const realSetInterval = window.setInterval, realClearTimeout = window.clearTimeout;
window.setInterval = function (fn, ms) {
  const id = realSetInterval.apply(this, arguments);
  if (ms === 600000) { window.__beat = fn; window.__beatId = id; }
  return id;
};
window.clearTimeout = function (id) {
  if (id !== undefined && id === window.__beatId) window.__beatCleared = true;
  return realClearTimeout.apply(this, arguments);
};
"""


def test_heartbeat_reports_visible_time_while_the_page_is_read(harness: Harness) -> None:
    h = harness
    url = h.add_page("/beat.html", "Beat", flush_interval="100")
    page = h.new_page(init_scripts=(CATCH_HEARTBEAT, VISIBILITY_SCRIPT))
    page.goto(url)
    dwell(page, 400)
    page.evaluate("window.__beat()")  # ten minutes of reading later
    h.wait_for(lambda e: len(e.of_type("engagement")) == 1)
    set_visibility(page, "hidden")  # the tab switch reports too ...
    page.evaluate("window.__beat()")  # ... but a hidden page has no heartbeat
    set_visibility(page, "visible")
    dwell(page, 300)
    page.evaluate("window.__beat()")
    h.wait_for(lambda e: len(e.of_type("engagement")) == 3)
    page.evaluate("littlestats.destroy()")
    assert page.evaluate("window.__beatCleared") is True
    events = h.settle()

    assert len(events.pageviews) == 1
    reports = [r["engagement_ms"] for r in events.of_type("engagement")]
    assert len(reports) == 3 and reports == sorted(reports) and reports[0] >= 400
    assert reports[2] - reports[1] >= 300
