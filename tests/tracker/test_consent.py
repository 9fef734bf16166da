"""Consent-free by default (SPEC §4): the tracker stores nothing on the visitor's device, and the
numbers are still right; a persistent id only by the site's choice or the visitor's consent.

The first test uses the suite's server. The second needs the server's day to change: it runs a
server of its own and gives it the next day's salt by a restart with a new salt for the day (what
the server does itself at midnight, UTC), since a running worker keeps the day's salt in memory.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright

from littlestats.controlplane import ControlPlane
from tests.server import LiveServer, running_server
from tests.tracker.harness import CHROMIUM, CHROMIUM_ARGS, DESKTOP_UA, Harness, PageServer, launch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A second person on the same network: the server tells visitors apart by IP + user agent.
OTHER_UA = DESKTOP_UA.replace("Chrome/124.0.0.0", "Chrome/125.0.0.0")

STORED = """() => ({cookie: document.cookie, local: localStorage.length, session: sessionStorage.length,
                   keys: Object.keys(localStorage)})"""
NOTHING = {"cookie": "", "local": 0, "session": 0, "keys": []}


def stored(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(STORED))


def assert_nothing_stored(ctx: BrowserContext, page: Page) -> None:
    """Nothing in the page's storages, and nothing in the whole browser context."""
    assert stored(page) == NOTHING
    state = ctx.storage_state()
    assert state["cookies"] == []
    assert all(origin.get("localStorage", []) == [] for origin in state["origins"]), state["origins"]


def linked_pages(h: Harness, names: list[str], **attrs: str | bool) -> list[str]:
    """Pages that link each to the next (``#next``); returns their URLs."""
    urls = []
    for i, name in enumerate(names):
        link = f'<a id="next" href="/{names[i + 1]}.html">next</a>' if i + 1 < len(names) else ""
        urls.append(h.add_page(f"/{name}.html", name, link, flush_interval="200", **attrs))
    return urls


def test_default_stores_nothing_and_still_counts_views_visits_and_bounces(
        harness: Harness, playwright: Playwright) -> None:
    h = harness
    a, b, _ = linked_pages(h, ["c-a", "c-b", "c-c"])
    # What the test does, counted here: one visitor reads three pages, another bounces.
    did = {"views": 0, "visits": 0, "bounces": 0, "entry": Counter[str](), "exit": Counter[str]()}

    ctx = h.context()
    page = ctx.new_page()
    page.goto(a)
    assert_nothing_stored(ctx, page)
    for _ in range(2):
        with page.expect_navigation():
            page.click("#next")
        assert_nothing_stored(ctx, page)
    page.evaluate("track('read', {pages: 3})")  # a custom event: the visit is not a bounce
    page.reload()  # a reload is a new page load: still nothing stored
    assert_nothing_stored(ctx, page)
    page.close(run_before_unload=True)
    did["views"] += 4
    did["visits"] += 1
    did["entry"]["/c-a.html"] += 1
    did["exit"]["/c-c.html"] += 1

    other = launch(playwright, user_agent=OTHER_UA)
    try:
        octx = h.context(browser=other, user_agent=OTHER_UA)
        opage = octx.new_page()
        opage.goto(b)
        assert_nothing_stored(octx, opage)
        opage.close(run_before_unload=True)
        did["views"] += 1
        did["visits"] += 1
        did["bounces"] += 1
        did["entry"]["/c-b.html"] += 1
        did["exit"]["/c-b.html"] += 1
        h.wait_for(lambda e: len(e.pageviews) == did["views"] and len(e.of_type("page_exit")) == did["views"])
        events = h.settle()
    finally:
        other.close()

    # No visitorId left the browser: every event is keyed by the server's daily salt.
    assert {r["visitor_key_source"] for r in events.rows} == {"fallback"}
    assert len(events.visitor_keys()) == 2
    assert len(events.pageviews) == did["views"]

    wh = h.warehouse
    wh.load()
    sessions = wh.sessions()
    assert len(sessions) == did["visits"]
    assert sum(s["pageviews"] for s in sessions) == did["views"]
    assert sum(bool(s["is_bounce"]) for s in sessions) == did["bounces"]
    assert Counter(s["entry_page"] for s in sessions) == did["entry"]
    assert Counter(s["exit_page"] for s in sessions) == did["exit"]

    # The API answers the same (the suite's server runs with --dev: no token needed).
    base = f"{h.server.url}/api/v2/sites/{h.site['id']}"
    stats = httpx.get(f"{base}/stats", params={"period": "today"}, timeout=30).json()
    assert (stats["visitors"], stats["visits"], stats["views"]) == (2, did["visits"], did["views"])
    assert stats["bounceRate"] == pytest.approx(100 * did["bounces"] / did["visits"])
    entries = httpx.get(f"{base}/entry-pages", params={"period": "today", "metrics": "visits"}, timeout=30).json()
    assert {r["page"]: r["visits"] for r in entries["entryPages"]} == dict(did["entry"])


# --- consent, and the day changing ---------------------------------------------------------------

BANNER = '<button id="accept" onclick="littlestats.consent(true)">Accept</button>'


@pytest.fixture(scope="module")
def day_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("consent") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, "--dev", env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        yield srv


def next_day(server: LiveServer) -> None:
    """The server moves on to a new day's salt, as at midnight: stopped, today's salt replaced by a
    fresh one, started again (on the same port, so pages keep their snippet)."""
    server.stop()
    today = datetime.now(UTC).date().isoformat()
    with sqlite3.connect(server.data_dir / "control.sqlite3") as db:
        changed = db.execute("UPDATE salts SET salt = ? WHERE day = ?", (secrets.token_bytes(16), today)).rowcount
    assert changed == 1, "the server had no salt for today"
    server.start()


def age_visit(page: Page) -> None:
    """Half an hour passes: the stored visit is over, the next page load starts a new one."""
    page.evaluate("""() => {
        const v = JSON.parse(localStorage.ls_visit);
        v.t -= 31 * 60 * 1000;
        localStorage.ls_visit = JSON.stringify(v);
    }""")


def test_consent_keeps_the_visitor_across_days_and_withdrawal_removes_everything(
        day_server: LiveServer, page_server: PageServer, playwright: Playwright) -> None:
    control = ControlPlane(day_server.data_dir / "control.sqlite3")
    site = control.create_site("example.com", name="consent test").public()
    control.close()
    browser = launch(playwright)
    other = launch(playwright, user_agent=OTHER_UA)
    h = Harness(day_server, page_server, browser, site)
    try:
        banner = h.add_page("/consent-banner.html", "Banner", BANNER, flush_interval="200")
        article = h.add_page("/consent-article.html", "Article", "", flush_interval="200")
        opted_in = h.add_page("/consent-persistent.html", "Persistent", "", flush_interval="200",
                              persistent_id=True)
        consenting = h.context()
        person = consenting.new_page()
        site_kept = h.context()
        persistent = site_kept.new_page()
        anonymous = h.context(browser=other, user_agent=OTHER_UA).new_page()

        # Day 1. The banner: nothing stored until the visitor accepts; then an id is kept.
        person.goto(banner)
        assert stored(person) == NOTHING
        person.click("#accept")
        keys = stored(person)["keys"]  # the visit too, once an event has gone out since (timing)
        assert "ls_id" in keys and set(keys) <= {"ls_id", "ls_visit"}, keys
        person_id = person.evaluate("localStorage.ls_id")
        # The visit that was running goes on under the server's key (one visit is never split
        # between two visitors); the id counts from the next visit, half an hour later.
        person.evaluate("track('accepted')")
        person.wait_for_function("!!localStorage.ls_visit")
        age_visit(person)
        person.goto(article)
        # data-persistent-id: the site keeps an id from the first page on.
        persistent.goto(opted_in)
        assert sorted(stored(persistent)["keys"]) == ["ls_id", "ls_visit"]
        persistent_id = persistent.evaluate("localStorage.ls_id")
        anonymous.goto(article)
        h.wait_for(lambda e: len(e.pageviews) == 4 and len(e.named("accepted")) == 1)
        day1 = h.read()

        next_day(day_server)

        # Day 2: the same browsers come back.
        age_visit(person)
        person.goto(article)
        persistent.goto(opted_in)
        anonymous.goto(article)
        assert stored(anonymous) == NOTHING
        second_tab = consenting.new_page()
        second_tab.goto(banner)  # a second tab of the same person, on a page without the attribute
        assert sorted(stored(second_tab)["keys"]) == ["ls_id", "ls_visit"]
        day2 = h.wait_for(lambda e: len(e.pageviews) == 8)
        # Withdrawal: everything the tracker stored is gone, and no id is sent any more -- from
        # this tab, and from the other one already open.
        person.evaluate("littlestats.consent(false)")
        assert_nothing_stored(consenting, person)
        person.evaluate("track('withdrawn')")
        second_tab.evaluate("track('withdrawn')")
        assert_nothing_stored(consenting, second_tab)
        person.reload()
        assert_nothing_stored(consenting, person)
        h.wait_for(lambda e: len(e.named("withdrawn")) == 2 and len(e.pageviews) == 9)
        events = h.settle()
    finally:
        h.close_contexts()
        browser.close()
        other.close()
    assert not h.page_errors, h.page_errors

    def keys(rows: list[dict[str, Any]], path: str, kind: str = "pageview") -> list[tuple[str, int]]:
        return [(r["visitor_key_source"], r["visitor_key"]) for r in rows
                if r["pathname"] == path and r["type"] == kind]

    day1_ids = {r["event_id"] for r in day1.rows}
    day2_ids = {r["event_id"] for r in day2.rows} - day1_ids
    first = [r for r in events.rows if r["event_id"] in day1_ids]
    second = [r for r in events.rows if r["event_id"] in day2_ids]
    withdrawn = [r for r in events.rows if r["event_id"] not in day1_ids | day2_ids]

    # Day 1: the banner visit (before and after the click) under the server's key; the next
    # visit under the consented id.
    (banner_view,) = keys(first, "/consent-banner.html")
    assert banner_view[0] == "fallback"
    assert keys(first, "/consent-banner.html", "event") == [banner_view]
    (p1,) = [k for k in keys(first, "/consent-article.html") if k[0] == "tracker"]
    (a1,) = [k for k in keys(first, "/consent-article.html") if k[0] == "fallback"]
    (s1,) = keys(first, "/consent-persistent.html")
    assert s1[0] == "tracker"
    # Day 2: the ids keep their visitors; the person without one counts again (as in Plausible).
    (p2,) = [k for k in keys(second, "/consent-article.html") if k[0] == "tracker"]
    assert keys(second, "/consent-banner.html") == [p1]  # the second tab: the same visitor
    (a2,) = [k for k in keys(second, "/consent-article.html") if k[0] == "fallback"]
    (s2,) = keys(second, "/consent-persistent.html")
    assert p2 == p1 and s2 == s1
    assert a2 != a1
    assert len({p1, s1, a1, banner_view}) == 4
    # After consent(false), in the same visit and after a reload: the server's key again.
    assert [k[0] for k in keys(withdrawn, "/consent-article.html", "event")] == ["fallback"]
    assert [k[0] for k in keys(withdrawn, "/consent-banner.html", "event")] == ["fallback"]
    assert [k[0] for k in keys(withdrawn, "/consent-article.html")] == ["fallback"]
    assert person_id != persistent_id and len(person_id) == 36  # random UUIDs


def test_a_page_that_is_not_a_secure_context_keeps_no_id(harness: Harness, playwright: Playwright) -> None:
    """Plain http on a real host name is not a secure context: no crypto.randomUUID, so even
    data-persistent-id keeps nothing and the visitor is counted as by default."""
    h = harness
    h.add_page("/insecure.html", "Insecure", "", flush_interval="200", persistent_id=True)
    port = h.pages.url.rsplit(":", 1)[1]
    insecure = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_ARGS, f"--user-agent={DESKTOP_UA}", "--host-resolver-rules=MAP insecure.test 127.0.0.1"])
    try:
        ctx = h.context(browser=insecure)
        page = ctx.new_page()
        page.goto(f"http://insecure.test:{port}/insecure.html")
        assert page.evaluate("isSecureContext") is False
        page.evaluate("littlestats.consent(true)")
        assert_nothing_stored(ctx, page)
        page.evaluate("track('insecure')")
        events = h.wait_for(lambda e: len(e.named("insecure")) == 1 and len(e.pageviews) == 1)
    finally:
        h.close_contexts()
        insecure.close()
    assert {r["visitor_key_source"] for r in events.rows} == {"fallback"}
    assert events.pageviews[0]["hostname"] == "insecure.test"
