"""The "Reports and alerts" card of a site's settings, in Chromium with authentication on, against
a real SMTP server (aiosmtpd) and a real HTTPS webhook receiver (trustme): what the buttons do
arrives there."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.dashboard.test_auth import add_user, create_site, sign_in
from tests.notify.conftest import Inbox, Receiver, receiver, smtp  # noqa: F401 (fixtures)
from tests.server import LiveServer, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OWNER = ("rita@example.com", "rita's long passphrase")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Inbox, int],  # noqa: F811
           receiver: Receiver) -> Iterator[LiveServer]:  # noqa: F811
    data_dir: Path = tmp_path_factory.mktemp("reports-card") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_SMTP_HOST": "127.0.0.1", "LITTLESTATS_SMTP_PORT": str(smtp[1]),
           "LITTLESTATS_SMTP_SECURITY": "none", "LITTLESTATS_SMTP_FROM": "reports@stats.example",
           "LITTLESTATS_WEBHOOK_CA_FILE": str(receiver.ca_file)}
    with running_server(data_dir, 1, env=env) as srv:
        add_user(data_dir, *OWNER)
        srv.wait_ready()
        yield srv


def test_the_card_subscribes_alerts_and_registers_a_webhook_that_really_receive(
        server: LiveServer, browser: Browser, smtp: tuple[Inbox, int], receiver: Receiver) -> None:  # noqa: F811
    inbox = smtp[0]
    inbox.take()
    receiver.requests.clear()
    page = sign_in(browser, server, OWNER)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    site = create_site(page, "card.example")
    page.goto(f"{server.url}/sites/{site['id']}/settings")
    card = page.locator("#reports")
    expect(card.locator("h2")).to_have_text("Reports and alerts")

    card.locator("#report-email").fill("ana@card.example")
    card.locator("#report-frequency").select_option("monthly")
    card.get_by_role("button", name="Subscribe").click()
    row = card.locator("li[data-report='ana@card.example']")
    expect(row).to_contain_text("monthly")
    row.get_by_role("button", name="Send test").click()
    expect(card.locator("#reports-notice")).to_contain_text("Sent “Monthly report for card.example")
    [(_, to, msg)] = inbox.take()
    assert to == ["ana@card.example"] and msg["Subject"].startswith("Monthly report for card.example, ")

    card.locator("#alert-threshold").fill("50")
    card.locator("#alert-recipients").fill("ops@card.example, dev@card.example")
    card.get_by_role("button", name="Create alert").click()
    expect(card.locator("li[data-alert]")).to_contain_text("spike of 50%")
    expect(card.locator("li[data-alert]")).to_contain_text("ops@card.example, dev@card.example")

    card.locator("#webhook-url").fill(receiver.url)
    card.get_by_role("button", name="Add webhook").click()
    secret = card.get_by_label("Webhook secret").input_value()
    assert secret.startswith("whsec_")
    hook = card.locator(f"li[data-webhook='{receiver.url}']")
    hook.get_by_role("button", name="Send test").click()
    expect(card.locator("#reports-notice")).to_contain_text("Test delivery: delivered (200)")
    [(headers, body)] = receiver.requests
    mac = hmac.new(secret.encode(), headers["x-littlestats-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["x-littlestats-signature"] == "sha256=" + mac.hexdigest()
    hook.get_by_role("button", name="Deliveries").click()
    expect(hook.locator("tr[data-delivery]")).to_contain_text("delivered")

    page.reload()  # the secret was shown once
    expect(card.locator("li[data-webhook]")).to_have_count(1)
    expect(card.get_by_label("Webhook secret")).to_have_count(0)
    assert not errors, errors
