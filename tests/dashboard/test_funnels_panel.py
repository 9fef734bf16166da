"""The Funnels panel and the site settings' "New funnel" form in real Chromium: funnels created with
the form appear; the panel's steps equal the API's answer for the same URL (funnel, period,
filters); a filter click changes them; a site without funnels says how to create one."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from littlestats.controlplane import ControlPlane
from tests.dashboard.harness import Dashboard, Loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = """
() => [...document.querySelectorAll('[data-panel="funnels"] .funnel-steps > li')].map((li) => ({
  step: Number(li.dataset.step), visitors: Number(li.dataset.visitors),
  conversion: Number(li.dataset.conversion), dropOff: Number(li.dataset.dropOff),
}))
"""


def _shown(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate(STEPS))


def _answered(dash: Dashboard, site_id: str, page: Any) -> list[dict[str, Any]]:
    """What the API answers for the page's URL: its funnel, period and filters."""
    query = parse_qs(urlparse(page.url).query)
    funnel = query.pop("funnel", [page.locator('[data-panel="funnels"]').get_attribute("data-funnel")])[0]
    params = [(k, v) for k, vs in query.items() if k not in ("compare", "metric") for v in vs]
    steps = dash.api(f"/sites/{site_id}/funnels/{funnel}/answer", params)["steps"]
    return [{"step": s["step"], "visitors": s["visitors"], "conversion": s["conversionFromFirst"],
             "dropOff": s["dropOff"]} for s in steps]


def _create(page: Any, name: str, steps: list[tuple[str, str]], days: int | None = None) -> None:
    """A funnel through the settings' form; a goal step's value is the goal's name."""
    form = page.locator("form.funnel-form")
    form.get_by_label("Funnel name").fill(name)
    for i, (kind, value) in enumerate(steps):
        if i >= 2:
            form.get_by_role("button", name="Add step").click()
        page.locator(f"#funnel-step-kind-{i}").select_option(kind)
        if kind == "goal":
            page.locator(f"#funnel-step-{i}").select_option(label=value)
        else:
            page.locator(f"#funnel-step-{i}").fill(value)
    if days is not None:
        page.locator("#funnel-per").select_option("visitor")
        page.locator("#funnel-days").fill(str(days))
    form.get_by_role("button", name="Create funnel").click()
    page.locator(f'#funnels li[data-funnel="{name}"]').wait_for()


def test_funnels_made_in_settings_show_the_apis_steps_and_follow_filters(loaded: Loaded, dashboard: Dashboard) -> None:
    settings = dashboard.open(f"/sites/{loaded.id}/settings")
    # A goal with a property condition, to be a funnel step.
    settings.select_option("#goal-kind", "event")
    settings.fill("#goal-value", "Download")
    settings.fill("#goal-prop-key", "plan")
    settings.fill("#goal-prop-value", "team")
    settings.get_by_role("button", name="Add goal").click()
    settings.wait_for_selector('[data-goal="Download (plan = team)"]')
    settings = dashboard.open(f"/sites/{loaded.id}/settings")
    _create(settings, "Two pages", [("page", "/page/*"), ("page", "/page/**")])
    _create(settings, "Pages then signup",
            [("page", "/page/*"), ("event", "Signup"), ("goal", "Download (plan = team)")], days=7)
    # An invalid definition is refused with the API's message, naming the step.
    settings.locator("form.funnel-form").get_by_label("Funnel name").fill("Bad")
    settings.locator("#funnel-step-0").fill("no-slash")
    settings.locator("#funnel-step-1").fill("/x")
    settings.get_by_role("button", name="Create funnel").click()
    assert "steps[0]" in settings.locator("#funnels .form-error").inner_text()
    dashboard.errors.clear()  # the refused POST is logged by the browser: here it is the point
    funnels = {f["name"]: f for f in dashboard.api(f"/sites/{loaded.id}/funnels")["funnels"]}
    goal = next(g for g in dashboard.api(f"/sites/{loaded.id}/goals")["goals"] if g["name"] == "Download (plan = team)")
    assert funnels["Pages then signup"]["steps"] == [{"page": "/page/*"}, {"event": "Signup"}, {"goal": goal["id"]}]
    assert (funnels["Pages then signup"]["per"], funnels["Pages then signup"]["days"]) == ("visitor", 7)

    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    shown = _shown(page)
    assert shown == _answered(dashboard, loaded.id, page)
    assert len(shown) == 2 and shown[0]["visitors"] > 50 and shown[1]["visitors"] > 0

    # The choice of funnel is in the URL.
    page.locator('[data-panel="funnels"] select').select_option(label="Pages then signup")
    page.wait_for_url(re.compile(r"funnel=" + funnels["Pages then signup"]["id"]))
    dashboard.wait_ready(page)
    three = _shown(page)
    assert len(three) == 3 and three == _answered(dashboard, loaded.id, page)
    assert [li.inner_text().split("\n")[0] for li in page.locator('[data-panel="funnels"] .label').all()] == \
        ["1. /page/*", "2. Signup", "3. Download (plan = team)"]

    # A filter click anywhere on the dashboard changes the funnel's numbers too.
    page.click('[data-panel="locations"] li[data-value="DE"] button')
    page.wait_for_url(re.compile(r"filter=country"))
    dashboard.wait_ready(page)
    filtered = _shown(page)
    assert filtered == _answered(dashboard, loaded.id, page)
    assert filtered[0]["visitors"] < three[0]["visitors"]
    # Reloading the URL shows the same funnel and numbers.
    url = urlparse(page.url).path + "?" + urlparse(page.url).query
    assert _shown(dashboard.open(url)) == filtered

    # The goal deleted, the panel says which step is gone (the API's 409); then the funnel is
    # deleted too, leaving the suite's site with the goals it had.
    settings = dashboard.open(f"/sites/{loaded.id}/settings")
    settings.get_by_role("button", name="Delete goal Download (plan = team)").click()
    settings.wait_for_selector('[data-goal="Download (plan = team)"]', state="detached")
    gone = dashboard.open(url, wait=False).locator('[data-panel="funnels"] [role="alert"]')
    assert "steps[2]" in gone.inner_text() and goal["id"] in gone.inner_text()
    assert dashboard.errors and all(" 409 " in e or "409" in e for e in dashboard.errors), dashboard.errors
    dashboard.errors.clear()
    settings.get_by_role("button", name="Delete funnel Pages then signup").click()
    settings.wait_for_selector('#funnels li[data-funnel="Pages then signup"]', state="detached")


def test_a_site_without_funnels_says_how_to_make_one(dash_server: Any, control: ControlPlane,
                                                      dashboard: Dashboard) -> None:
    site = control.create_site("nofunnels.example", name="No funnels").public()
    page = dashboard.open(f"/sites/{site['id']}")
    empty = page.locator('[data-panel="funnels"] .panel-empty')
    assert "No funnels yet" in empty.inner_text()
    assert empty.get_by_role("link").get_attribute("href") == f"/sites/{site['id']}/settings#funnels"
