"""Revenue: ``track(name, {revenue: {amount, currency}})`` sends it as the event's revenue."""

from __future__ import annotations

import pytest

from tests.tracker.harness import Harness

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_track_sends_revenue_apart_from_the_properties(harness: Harness) -> None:
    h = harness
    url = h.add_page("/shop.html", "Shop")
    page = h.new_page()
    page.goto(url)
    page.evaluate("track('Purchase', {revenue: {amount: 99.9, currency: 'eur'}, plan: 'pro'})")
    page.evaluate("track('Tip', {revenue: 5})")  # a plain property of that name: no revenue
    page.close(run_before_unload=True)
    h.wait_for(lambda e: len(e.named("Purchase")) == 1 and len(e.named("Tip")) == 1)
    events = h.settle()
    purchase, tip = events.named("Purchase")[0], events.named("Tip")[0]
    assert (purchase["revenue_amount"], purchase["revenue_currency"]) == (99.9, "EUR")
    assert purchase["props_str"] == {"plan": "pro"} and purchase["props_num"] is None
    assert (tip["revenue_amount"], tip["revenue_currency"]) == (None, None)
    assert tip["props_num"] == {"revenue": 5.0}
