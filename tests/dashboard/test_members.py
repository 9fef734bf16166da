"""Members in the dashboard, in Chromium with authentication on: an owner invites someone from the
site's settings, the invitee opens the one-time link, sets a password and sees the site read-only;
a viewer is refused the settings; a logged-in user joins with a button."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.test_auth import add_user, create_site, sign_in
from tests.server import LiveServer, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OWNER = ("olga@example.com", "owner's long passphrase")
EXISTING = ("erik@example.com", "erik's long passphrase")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("members") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        add_user(data_dir, *OWNER)
        add_user(data_dir, *EXISTING)
        yield srv


def _invite(page: Page, server: LiveServer, site: dict[str, Any], email: str, role: str) -> str:
    """Invite through the settings page's Members section; the link it shows."""
    page.goto(f"{server.url}/sites/{site['id']}/settings")
    members = page.locator("#members")
    expect(members.locator("tr[data-member='olga@example.com']")).to_contain_text("owner")
    members.locator("#invite-email").fill(email)
    members.locator("#invite-role").select_option(role)
    members.get_by_role("button", name="Invite").click()
    link = members.get_by_label("Invitation link")
    expect(link).to_be_visible()
    value = link.input_value()
    assert value.startswith(f"{server.url}/invite/inv_")
    expect(members.locator(f"li[data-invitation='{email}']")).to_contain_text(role)
    return value


def test_invitee_sets_a_password_and_sees_the_site_read_only(server: LiveServer, browser: Browser) -> None:
    owner = sign_in(browser, server, OWNER)
    site = create_site(owner, "team.example")
    link = _invite(owner, server, site, "vera@example.com", "viewer")

    guest = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    guest.on("pageerror", lambda e: errors.append(str(e)))
    guest.goto(link)
    expect(guest.locator("h1")).to_contain_text("Join team.example")
    expect(guest.locator("#email")).to_have_value("vera@example.com")
    guest.fill("#password", "vera's long passphrase")
    guest.fill("#password2", "not the same")
    guest.click("form button[type=submit]")
    expect(guest.locator(".error")).to_contain_text("differ")
    guest.fill("#password", "vera's long passphrase")
    guest.fill("#password2", "vera's long passphrase")
    guest.click("form button[type=submit]")
    guest.wait_for_url(f"**/sites/{site['id']}")
    expect(guest.locator(".site-title")).to_contain_text("team.example")
    expect(guest.locator(".settings-link")).to_have_count(0)  # a viewer sees no settings
    patched = guest.evaluate("""async (id) => {
      const csrf = JSON.parse(document.querySelector('meta[name=littlestats]')?.content || '{}').csrf;
      const r = await fetch('/api/v2/sites/' + id, {method: 'PATCH', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf || ''},
        body: JSON.stringify({name: 'x'})});
      return [r.status, (await r.json()).error]; }""", site["id"])
    assert patched[0] == 403 and "admin role" in patched[1], patched  # the API refuses the role
    # ... and the page refuses them when she goes there directly
    response = guest.goto(f"{server.url}/sites/{site['id']}/settings")
    assert response is not None and response.status == 403
    expect(guest.locator("h1")).to_contain_text("Not allowed")
    # the link worked once
    again = httpx.get(link, timeout=10)
    assert again.status_code == 410 and "already used" in again.text
    assert not errors

    # the owner sees the new member, makes her an admin: she now sees the settings
    owner.reload()
    row = owner.locator("#members tr[data-member='vera@example.com']")
    expect(row).to_contain_text("vera@example.com")
    row.locator("select").select_option("admin")
    guest.goto(f"{server.url}/sites/{site['id']}/settings")
    expect(guest.locator("#members-title")).to_be_visible()
    expect(guest.locator("#members #invite-email")).to_have_count(0)  # admins do not manage members
    expect(guest.locator("#danger-title")).to_have_count(0)  # nor delete the site


def test_a_logged_in_user_joins_with_a_button(server: LiveServer, browser: Browser) -> None:
    owner = sign_in(browser, server, OWNER)
    site = create_site(owner, "joined.example")
    link = _invite(owner, server, site, EXISTING[0], "admin")
    erik = sign_in(browser, server, EXISTING)
    erik.goto(link)
    expect(erik.locator("h1")).to_contain_text("Join joined.example")
    erik.get_by_role("button", name="Join").click()
    erik.wait_for_url(f"**/sites/{site['id']}")
    expect(erik.locator(".settings-link")).to_be_visible()  # an admin
    owner.reload()
    expect(owner.locator(f"#members tr[data-member='{EXISTING[0]}']")).to_contain_text(EXISTING[0])
