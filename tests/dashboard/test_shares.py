"""Share links in real Chromium against a real server (authentication on) holding generated traffic:
a link shows the site's numbers as the API answers them, asks for its password, is gone once
revoked, is framed only by the origins saved on it; a public site is open at its domain."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from littlestats.controlplane import ControlPlane
from tests.dashboard.harness import Dashboard
from tests.generator import TrafficSpec, generate
from tests.server import LiveServer, running_server
from tests.tracker.harness import Warehouse

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEZONE = "Europe/Berlin"
PASSWORD = "share password 7"
OWNER_PASSWORD = "owner password 8"
KPI_FIELDS = {"visitors": "visitors", "visits": "visits", "views": "views", "bounce_rate": "bounceRate"}


@dataclass
class Shared:
    server: LiveServer
    api: httpx.Client  # the owner's token
    site: dict[str, Any]

    def share(self, **body: Any) -> dict[str, Any]:
        r = self.api.post(f"/api/v2/sites/{self.site['id']}/shares", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def stats(self, **params: str) -> dict[str, Any]:
        r = self.api.get(f"/api/v2/sites/{self.site['id']}/stats", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    data_dir = tmp_path_factory.mktemp("share-pages") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        control = ControlPlane(data_dir / "control.sqlite3")
        site = control.create_site("shared.example", name="Shared Shop", timezone=TIMEZONE).public()
        control.create_goal(site["id"], "event", "Signup")
        control.close()
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        spec = TrafficSpec(visitors=150, days=5, start=end - timedelta(days=5), sites=(site["id"],),
                           timezones={site["id"]: TIMEZONE}, loads=1, late_fraction=0.0,
                           duplicate_fraction=0.0, seed=21)
        generate(spec).write_raw(data_dir / "raw")
        Warehouse(srv, site["id"]).load()
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            yield Shared(srv, api, site)


@pytest.fixture
def dash(shared: Shared, browser: Browser) -> Iterator[Dashboard]:
    d = Dashboard(shared.server, browser)
    yield d
    d.close()
    assert not d.errors, f"the page reported errors: {d.errors}"


def _requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


def _check_numbers(shared: Shared, dash: Dashboard, page: Page, **params: str) -> dict[str, Any]:
    """The KPIs and the top pages shown equal the owner's API answer for the same question."""
    stats = shared.stats(period="30d", **params)
    assert stats["visitors"] > 50
    shown = dash.kpis(page)
    for kpi, field in KPI_FIELDS.items():
        assert float(shown[kpi]["value"]) == pytest.approx(stats[field]), kpi
    pages = shared.api.get(f"/api/v2/sites/{shared.site['id']}/pages",
                           params={"period": "30d", "limit": "10", "metrics": "visitors,views"}).json()["pages"]
    rows = dash.rows(page, "pages")
    assert [r["value"] for r in rows] == [p["page"] for p in pages]
    assert [int(r["metrics"]["visitors"]) for r in rows] == [p["visitors"] for p in pages]
    return stats


def test_a_link_without_password_shows_the_sites_numbers_read_only(shared: Shared, dash: Dashboard) -> None:
    share = shared.share(label="open")
    ctx = dash.browser.new_context(locale="en-US")
    dash.contexts.append(ctx)
    page = ctx.new_page()
    dash.pages.append(page)
    requests = _requests(page)
    page.goto(shared.server.url + share["path"])
    dash.wait_ready(page)
    _check_numbers(shared, dash, page)
    expect(page.locator(".site-title")).to_have_text("Shared Shop")
    # Read-only: no settings, no other sites, no account, no live event list — the live count only.
    assert page.locator(".settings-link, a[href='/'], a[href='/settings'], form.logout, .crumb-site").count() == 0
    expect(page.locator(".live-count[data-active]")).to_have_attribute("data-active", re.compile(r"^\d+$"))
    page.locator(".live-count").click()
    assert page.locator("dialog.live-view").count() == 0
    # A click on a row filters, as on the owner's dashboard, and the URL keeps the state.
    page.click('[data-panel="pages"] .rows > li:first-child button')
    page.wait_for_url(re.compile(r"filter=page"))
    dash.wait_ready(page)
    assert page.url.startswith(shared.server.url + share["path"] + "?")
    # Every request of the page went to the share's own routes (or its assets).
    api_calls = [u for u in requests if "/api/" in u]
    assert api_calls and all(u.startswith(f"{shared.server.url}{share['path']}/api/v2/") for u in api_calls)
    assert not [u for u in requests if "/realtime/" in u or "/events?" in u]


def test_a_password_link_asks_for_it_and_refuses_a_wrong_one(shared: Shared, dash: Dashboard) -> None:
    share = shared.share(label="locked", password=PASSWORD)
    page = dash.open(share["path"], wait=False)
    expect(page.locator("input[name=password]")).to_be_visible()
    assert page.locator(".dashboard").count() == 0
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_have_text("Wrong password.")
    assert f"HTTP 401 POST {shared.server.url}{share['path']}" in dash.errors
    dash.errors.clear()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    dash.wait_ready(page)
    _check_numbers(shared, dash, page)
    # Another browser, without the password, still gets the form and no numbers.
    other = dash.open(share["path"], wait=False)
    expect(other.locator("input[name=password]")).to_be_visible()
    assert other.request.get(f"{shared.server.url}{share['path']}/api/v2/sites/{shared.site['id']}/stats").status == 401


def test_a_revoked_link_shows_the_not_found_page(shared: Shared, dash: Dashboard) -> None:
    share = shared.share(label="to revoke")
    page = dash.open(share["path"])
    dash.wait_ready(page)
    assert shared.api.delete(f"/api/v2/sites/{shared.site['id']}/shares/{share['id']}").status_code == 200
    response = page.reload()
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("main")).to_contain_text("revoked")
    assert "Shared Shop" not in page.content()
    dash.errors.clear()  # the 404 itself


class _Embedder(BaseHTTPRequestHandler):
    """Another site on another origin: its page frames the URL in its query string."""

    def do_GET(self) -> None:
        src = html.escape(parse_qs(urlparse(self.path).query).get("src", [""])[0])
        body = f'<!doctype html><title>blog</title><iframe src="{src}" width="900" height="700"></iframe>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def embedder() -> Iterator[str]:
    """The origin of a second local web server (a local one: Chromium keeps public origins from
    framing local addresses)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embedder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _embed(dash: Dashboard, shared: Shared, embedder: str, share: dict[str, Any]) -> Page:
    ctx = dash.browser.new_context(locale="en-US")
    dash.contexts.append(ctx)
    page = ctx.new_page()
    dash.pages.append(page)
    page.goto(f"{embedder}/post?" + urlencode({"src": f"{shared.server.url}{share['path']}?embed=true"}))
    return page


def test_an_embed_is_framed_by_the_saved_origins_only(shared: Shared, dash: Dashboard, embedder: str) -> None:
    embeddable = shared.share(label="blog", embedOrigins=[embedder])
    page = _embed(dash, shared, embedder, embeddable)
    frame = page.frame_locator("iframe")
    expect(frame.locator(".dashboard")).to_be_visible(timeout=30_000)
    expect(frame.locator("main.embed")).to_have_count(1)
    assert frame.locator("header.top").count() == 0  # the compact frame: no header
    child = page.frames[1]
    child.wait_for_function("() => [...document.querySelectorAll('[data-for]')].every((e) => e.dataset.ready === 'true')")
    stats = shared.stats(period="30d")
    assert child.locator('[data-kpi="visitors"] .kpi-value').get_attribute("data-value") == str(stats["visitors"])
    response = httpx.get(f"{shared.server.url}{embeddable['path']}?embed=true")
    assert f"frame-ancestors {embedder};" in response.headers["content-security-policy"]

    # A link without saved origins (or saved for another site) is refused by the browser in a frame.
    for share in (shared.share(label="no embed"), shared.share(label="elsewhere", embedOrigins=["https://other.example"])):
        refused = _embed(dash, shared, embedder, share)
        for _ in range(100):  # Chromium puts its error page in the frame it refused to show
            if len(refused.frames) > 1 and refused.frames[1].url.startswith("chrome-error:"):
                break
            refused.wait_for_timeout(100)
        assert refused.frames[1].url.startswith("chrome-error:"), refused.frames[1].url
        assert refused.frame_locator("iframe").locator(".dashboard").count() == 0
    dash.errors[:] = [e for e in dash.errors if "frame-ancestors" not in e and "Refused to frame" not in e]


def test_a_public_site_is_open_at_its_domain(shared: Shared, dash: Dashboard) -> None:
    site = f"/api/v2/sites/{shared.site['id']}"
    assert shared.api.patch(site, json={"public": True}).status_code == 200
    try:
        page = dash.open("/share/shared.example?period=30d", wait=False)
        dash.wait_ready(page)
        _check_numbers(shared, dash, page)
        expect(page.locator(".site-title")).to_have_text("Shared Shop")
    finally:
        assert shared.api.patch(site, json={"public": False}).status_code == 200
    gone = dash.open("/share/shared.example", wait=False)
    expect(gone.locator("h1")).to_have_text("Not found")
    dash.errors.clear()


def test_the_owner_makes_and_revokes_a_link_in_the_site_settings(shared: Shared, dash: Dashboard) -> None:
    out = subprocess.run([sys.executable, "-m", "littlestats", "users", "passwd", "admin@localhost", "--password-stdin",
                          "--data-dir", str(shared.server.data_dir)], input=OWNER_PASSWORD + "\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    owner = dash.open("/login", wait=False)
    owner.fill("input[name=email]", "admin@localhost")
    owner.fill("input[name=password]", OWNER_PASSWORD)
    owner.click("button[type=submit]")
    owner.wait_for_url(re.compile(r"/$"))
    owner.goto(f"{shared.server.url}/sites/{shared.site['id']}/settings")
    card = owner.locator("#sharing")
    card.locator("input[name=label]").fill("Board")
    card.locator("input[name=password]").fill(PASSWORD)
    card.locator("button[type=submit]").click()
    url = card.locator("[data-share-url]").inner_text()
    assert url.startswith(f"{shared.server.url}/share/")
    made = next(s for s in shared.api.get(f"/api/v2/sites/{shared.site['id']}/shares").json()["shares"]
                if s["label"] == "Board")
    assert made["hasPassword"] and url.split("/share/")[1].startswith(made["slugHint"])
    expect(card.locator(f'li[data-share="{made["id"]}"]')).to_contain_text("password")

    viewer = dash.open(url.removeprefix(shared.server.url), wait=False)
    viewer.fill("input[name=password]", PASSWORD)
    viewer.click("button[type=submit]")
    dash.wait_ready(viewer)

    card.locator(f'li[data-share="{made["id"]}"] button').click()
    expect(card.locator(f'li[data-share="{made["id"]}"]')).to_have_count(0)
    response = viewer.reload()
    assert response is not None and response.status == 404
    dash.errors.clear()  # the 404 itself

    site = f"/api/v2/sites/{shared.site['id']}"
    for on in (True, False):
        with owner.expect_response(lambda r: r.request.method == "PATCH" and r.url.endswith(site)) as patched:
            card.locator("[data-public]").set_checked(on)
        assert patched.value.status == 200
        assert shared.api.get(site).json()["public"] is on
        expect(card.locator("[data-public]")).to_be_checked(checked=on)
