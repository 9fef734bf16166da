"""Script options: Do-Not-Track, localhost, outbound links and file downloads; and the server's
bot filter seeing through an un-disguised headless browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright

from tests.tracker.harness import (
    NETWORK_PROBE_SCRIPT,
    VISIBILITY_SCRIPT,
    Harness,
    dwell,
    launch,
    page_html,
    sent,
    set_visibility,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRACKER_DIR = Path(__file__).resolve().parents[2] / "tracker"
DNT_ON = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"


def _exercise(page: Page) -> None:
    """Everything that would normally send something."""
    page.evaluate("track('x', {a: 1}); identify('u'); littlestats.trackPageView()")
    page.evaluate("history.pushState({}, '', '/somewhere-else')")
    dwell(page)
    set_visibility(page, "hidden")


def test_do_not_track_is_respected_when_the_site_asks(harness: Harness) -> None:
    h = harness
    respectful = h.add_page("/dnt.html", "DNT", respect_dnt=True, flush_interval="200")
    page = h.new_page(init_scripts=(DNT_ON, VISIBILITY_SCRIPT, NETWORK_PROBE_SCRIPT))
    page.goto(respectful)
    _exercise(page)
    assert sent(page) == {"beacon": 0, "fetch": 0}
    assert page.evaluate("typeof littlestats.destroy") == "function"

    # Without data-respect-dnt the same browser is counted.
    plain = h.add_page("/dnt-off.html", "DNT off", flush_interval="200")
    page.goto(plain)
    h.wait_for(lambda e: e.paths() == ["/dnt-off.html"])


def test_localhost_is_skipped_unless_allowed(harness: Harness) -> None:
    h = harness
    url = h.add_page("/local.html", "Local", allow_localhost=False, flush_interval="200")
    page = h.new_page()
    page.goto(url)  # the test pages are on 127.0.0.1
    _exercise(page)
    assert sent(page) == {"beacon": 0, "fetch": 0}
    events = h.settle()
    assert events.rows == []


def test_outbound_link_and_file_download_clicks(harness: Harness) -> None:
    h = harness
    links = """
      <a id="pdf" href="/files/report.pdf">report</a>
      <a id="zip" href="https://cdn.example/app.ZIP">app</a>
      <a id="internal" href="/inner.html">inner</a>
      <a id="out" href="https://partner.example/offer?x=1">partner</a>
      <script>
        // the page handles these itself (as a download manager or router would), except #out
        for (const id of ['pdf', 'zip', 'internal']) {
          document.getElementById(id).addEventListener('click', e => e.preventDefault());
        }
      </script>"""
    url = h.add_page("/links.html", "Links", links, outbound_links=True, file_downloads=True,
                     flush_interval="200")
    ctx = h.context()
    ctx.route("https://partner.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>Partner</title>"))
    page = ctx.new_page()
    page.goto(url)
    for link in ("#pdf", "#zip", "#internal"):
        page.click(link)
    page.click("#zip", button="middle")
    page.click("#pdf", button="right")  # a context menu, not a download
    with page.expect_navigation():
        page.click("#out")  # leaves the site: the event must survive the navigation
    h.wait_for(lambda e: len(e.named("Outbound Link: Click")) == 1)
    events = h.settle()

    downloads = events.named("File Download")
    assert [r["props_str"]["url"] for r in downloads] == [
        h.pages.url + "/files/report.pdf", "https://cdn.example/app.ZIP", "https://cdn.example/app.ZIP"]
    (outbound,) = events.named("Outbound Link: Click")
    assert outbound["props_str"] == {"url": "https://partner.example/offer?x=1"}
    assert outbound["pathname"] == "/links.html"
    assert len(events.pageviews) == 1


def test_custom_file_extensions(harness: Harness) -> None:
    h = harness
    links = """<a id="csv" href="/export.csv">csv</a><a id="pdf" href="/doc.pdf">pdf</a>
      <script>document.addEventListener('click', e => e.preventDefault());</script>"""
    url = h.add_page("/ext.html", "Ext", links, file_downloads="csv, .xlsx", flush_interval="200")
    page = h.new_page()
    page.goto(url)
    page.click("#pdf")
    page.click("#csv")
    h.wait_for(lambda e: len(e.named("File Download")) == 1)
    events = h.settle()
    assert [r["props_str"]["url"] for r in events.named("File Download")] == [
        h.pages.url + "/export.csv"]


@pytest.fixture(scope="module")
def headless_browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright, user_agent=None)
    yield b
    b.close()


def test_an_undisguised_headless_browser_is_not_counted(harness: Harness, headless_browser: Browser) -> None:
    h = harness
    url = h.add_page("/bot.html", "Bot", flush_interval="200")
    ctx = h.context(user_agent=None, browser=headless_browser)
    page = ctx.new_page()
    assert "HeadlessChrome" in page.evaluate("navigator.userAgent")
    with page.expect_response(lambda r: "/api/v2/track/" in r.url) as answer:
        page.goto(url)
    body = answer.value.json()
    assert (body["accepted"], body["dropped"]) == (0, 1)
    events = h.settle()
    assert events.rows == []


def test_data_host_overrides_the_scripts_origin(harness: Harness) -> None:
    h = harness
    other_name = h.server.url.replace("127.0.0.1", "localhost")  # same server, another origin
    url = h.add_page("/host.html", "Host", host=other_name, flush_interval="100")
    page = h.new_page()
    with page.expect_request(lambda r: "/api/v2/track/" in r.url) as request:
        page.goto(url)
    assert request.value.url == f"{other_name}/api/v2/track/{h.site['domainKey']}"
    h.wait_for(lambda e: e.paths() == ["/host.html"])


def test_the_api_is_found_next_to_the_script_behind_a_path_prefix(harness: Harness) -> None:
    h = harness
    # The site proxies the tracker under /stats/: its API calls go to /stats/api/v2/track/...
    h.pages.pages["/stats/tracker.js"] = (TRACKER_DIR / "tracker.js").read_text()
    h.pages.pages["/prefix.html"] = page_html("Prefix", "", (
        f'<script src="/stats/tracker.js" data-site-id="{h.site["domainKey"]}" '
        'data-allow-localhost data-flush-interval="100"></script>'))
    page = h.new_page()
    with page.expect_request(lambda r: "/api/v2/track/" in r.url) as request:
        page.goto(h.pages.url + "/prefix.html")
    assert request.value.url == f"{h.pages.url}/stats/api/v2/track/{h.site['domainKey']}"


def test_a_second_snippet_on_the_page_is_ignored(harness: Harness) -> None:
    h = harness
    twice = h.snippet(flush_interval="100") + h.snippet(flush_interval="100")
    h.pages.pages["/twice.html"] = page_html("Twice", "", twice)
    page = h.new_page()
    page.goto(h.pages.url + "/twice.html")
    page.evaluate("track('once')")
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.of_type("page_exit")) == 1 and len(e.named("once")) == 1)
    events = h.settle()
    assert (len(events.pageviews), len(events.named("once")), len(events.of_type("page_exit"))) == (
        1, 1, 1)
