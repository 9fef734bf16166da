"""Signing in to the dashboard (authentication on, no --dev): login, logout, a wrong password,
CSRF, and one owner's site invisible to another. The pages, sessions and CLI are the server side's
(dashboard/routes.py, dashboard/sessions.py); these tests drive them through the app in Chromium."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.server import LiveServer, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
if not (DASHBOARD / "sessions.py").exists():
    pytest.skip("the dashboard's sign-in (dashboard/sessions.py) is not in this build", allow_module_level=True)

ALICE = ("alice@example.com", "correct horse battery staple")
BOB = ("bob@example.com", "another long passphrase")


def add_user(data_dir: Path, email: str, password: str) -> None:
    subprocess.run([sys.executable, "-m", "littlestats", "users", "add", email, "--password-stdin",
                    "--data-dir", str(data_dir)], input=password + "\n", text=True, check=True,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("dashboard-auth") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        add_user(data_dir, *ALICE)
        add_user(data_dir, *BOB)
        yield srv


def sign_in(browser: Browser, server: LiveServer, user: tuple[str, str], path: str = "/") -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(server.url + path)
    assert "/login" in page.url  # no session: sent to the login page
    page.fill("input[type=email], input[name=email]", user[0])
    page.fill("input[type=password]", user[1])
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def create_site(page: Page, domain: str) -> dict[str, Any]:
    """A site owned by the signed-in user, created by the page's own session (with its CSRF token)."""
    return dict(page.evaluate("""async (domain) => {
      const csrf = JSON.parse(document.querySelector('meta[name=littlestats]').content).csrf;
      const r = await fetch('/api/v2/sites', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({domain})});
      return await r.json();
    }""", domain))


def test_login_opens_the_page_asked_for_and_logout_ends_the_session(auth_server: LiveServer, browser: Browser) -> None:
    page = sign_in(browser, auth_server, ALICE, "/settings")
    assert page.url.endswith("/settings")
    page.get_by_text(ALICE[0]).first.wait_for()  # the header names the user
    site = create_site(page, "alice.example")
    page.goto(f"{auth_server.url}/sites/{site['id']}")
    page.locator(".kpis[data-ready=true]").wait_for()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(lambda url: "/login" in url)
    page.goto(auth_server.url + "/")
    assert "/login" in page.url
    page.context.close()


def test_a_wrong_password_is_refused(auth_server: LiveServer, browser: Browser) -> None:
    page = browser.new_context().new_page()
    page.goto(auth_server.url + "/login")
    page.fill("input[type=email], input[name=email]", ALICE[0])
    page.fill("input[type=password]", "not the password")
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_load_state()
    assert "/login" in page.url
    page.goto(auth_server.url + "/")
    assert "/login" in page.url
    page.context.close()


def test_a_write_without_the_csrf_token_is_refused(auth_server: LiveServer, browser: Browser) -> None:
    page = sign_in(browser, auth_server, ALICE)
    status = page.evaluate("""async () => (await fetch('/api/v2/sites', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({domain: 'csrf.example'})})).status""")
    assert status == 403
    sites = page.evaluate("async () => (await (await fetch('/api/v2/sites')).json()).sites.map((s) => s.domain)")
    assert "csrf.example" not in sites
    page.context.close()


def test_a_second_user_cannot_open_the_first_users_site(auth_server: LiveServer, browser: Browser) -> None:
    alice = sign_in(browser, auth_server, ALICE)
    site = create_site(alice, "private.example")
    alice.context.close()
    bob = sign_in(browser, auth_server, BOB)
    for path in (f"/sites/{site['id']}", f"/sites/{site['id']}/settings"):
        r = bob.goto(auth_server.url + path)
        assert r is not None and r.status == 404, path
    status = bob.evaluate("async (id) => (await fetch('/api/v2/sites/' + id + '/stats')).status", site["id"])
    assert status == 404
    assert httpx.get(f"{auth_server.url}/sites/{site['id']}").status_code in (303, 302)  # no session at all
    bob.context.close()
