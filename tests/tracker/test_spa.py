"""A single-page app: views on pushState/replaceState/popstate, campaigns kept across them."""

from __future__ import annotations

import time

import pytest

from tests.tracker.harness import SPA_BODY, Harness, dwell

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_spa_navigation_views_exits_and_campaign(harness: Harness) -> None:
    h = harness
    url = h.add_page("/app/", "App", SPA_BODY, flush_interval="200")
    h.pages.prefixes["/app/"] = h.pages.pages["/app/"]
    page = h.new_page()

    page.goto(url + "?utm_source=ads&utm_medium=cpc&utm_campaign=launch")
    dwell(page)
    t0 = time.monotonic()
    page.click("#pricing")
    page.wait_for_timeout(700)  # on /app/pricing
    page.click("#docs")
    dwell(page)  # the view of /app/docs ends the view of /app/pricing
    t1 = time.monotonic()
    page.evaluate("history.replaceState({}, '', location.href)")  # same URL: not a view
    page.click("#anchor")  # a fragment without hash routing: not a view
    dwell(page)
    page.go_back()  # to /app/docs (the entry before the fragment)
    page.go_back()  # popstate back to /app/pricing
    page.wait_for_function("location.pathname === '/app/pricing'")
    dwell(page)
    page.evaluate("track('purchase', {value: 99.99, currency: 'USD', first: false})")
    page.evaluate("history.replaceState({}, '', '/app/thanks'); render()")  # a new URL: a view
    dwell(page)
    page.close(run_before_unload=True)

    h.wait_for(lambda e: len(e.pageviews) == 5 and len(e.of_type("page_exit")) == 5)
    events = h.settle()

    assert events.paths() == ["/app/", "/app/pricing", "/app/docs", "/app/pricing", "/app/thanks"]
    # Every view leaves a page exit for the page it left, and closing the tab one for the last.
    assert events.paths("page_exit") == ["/app/", "/app/pricing", "/app/docs", "/app/pricing",
                                         "/app/thanks"]
    # The title the app set after navigating, not the previous page's.
    assert [r["title"] for r in events.pageviews][1:] == [
        "App /app/pricing", "App /app/docs", "App /app/pricing", "App /app/thanks"]
    assert len(events.visitor_keys()) == 1

    # The landing campaign stays with every later view and with the conversion (SPEC §10).
    for row in events.rows:
        assert (row["utm_source"], row["utm_medium"], row["utm_campaign"]) == ("ads", "cpc", "launch")
    purchase = events.named("purchase")
    assert len(purchase) == 1
    assert purchase[0]["pathname"] == "/app/pricing"
    assert purchase[0]["props_num"] == {"value": 99.99}
    assert purchase[0]["props_str"] == {"currency": "USD"}
    assert purchase[0]["props_bool"] == {"first": False}

    exits = events.of_type("page_exit")
    pricing_ms = exits[1]["engagement_ms"]
    assert 700 <= pricing_ms <= (t1 - t0) * 1000

    # In the warehouse: one visit of five views, credited to the campaign, with its conversion.
    wh = h.warehouse
    wh.load()
    (visit,) = wh.sessions()
    assert (visit["entry_page"], visit["exit_page"]) == ("/app/", "/app/thanks")
    assert (visit["pageviews"], visit["custom_events"], visit["is_bounce"]) == (5, 1, False)
    assert (visit["source"], visit["utm_source"], visit["utm_campaign"]) == ("ads", "ads", "launch")
    assert visit["engagement_ms"] == exits[-1]["engagement_ms"]
    assert visit["device"] == "desktop" and visit["browser"] == "Chrome"


def test_a_new_campaign_replaces_the_old_one_within_a_visit(harness: Harness) -> None:
    h = harness
    url = h.add_page("/app/", "App", SPA_BODY, flush_interval="200")
    h.pages.prefixes["/app/"] = h.pages.pages["/app/"]
    page = h.new_page()
    page.goto(url + "?utm_source=ads")
    dwell(page)
    page.click("#pricing")
    dwell(page)
    page.evaluate("go('/app/docs?utm_source=mail&utm_campaign=promo')")
    dwell(page)
    page.click("#home")
    h.wait_for(lambda e: len(e.pageviews) == 4)
    events = h.settle()
    assert [(r["pathname"], r["utm_source"], r["utm_campaign"]) for r in events.pageviews] == [
        ("/app/", "ads", None),
        ("/app/pricing", "ads", None),
        ("/app/docs", "mail", "promo"),
        ("/app/", "mail", "promo"),
    ]


def test_hash_routing_is_opt_in(harness: Harness) -> None:
    h = harness
    body = '<a id="a" href="#/alpha">a</a><a id="b" href="#/beta">b</a>'
    hashed = h.add_page("/hashed.html", "Hashed", body, hash=True, flush_interval="200")
    plain = h.add_page("/plain.html", "Plain", body, flush_interval="200")

    page = h.new_page()
    page.goto(hashed)
    for step in ("#a", "#b", "location.hash = '#/alpha'"):
        dwell(page)
        page.evaluate(step) if step.startswith("location") else page.click(step)
    dwell(page)
    page.goto(plain)
    for step in ("#a", "#b"):
        dwell(page)
        page.click(step)
    dwell(page)
    page.close(run_before_unload=True)

    h.wait_for(lambda e: "/plain.html" in e.paths("page_exit"))
    events = h.settle()
    assert events.paths() == [
        "/hashed.html", "/hashed.html/#/alpha", "/hashed.html/#/beta", "/hashed.html/#/alpha",
        "/plain.html",
    ]
