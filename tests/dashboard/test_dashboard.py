"""The dashboard in real Chromium against a real server holding generated traffic: what it shows
equals what the API answers for the same URL, and the generated truth."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import expect

from littlestats.controlplane import ControlPlane
from tests.dashboard.harness import Dashboard, Loaded
from tests.server import cli
from tests.tracker.harness import DESKTOP_UA

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SESSION = "visitors,visits,views,bounce_rate,visit_duration"
UTM = [(f"utm_{t}", "/utm", {"type": f"utm_{t}", "metrics": SESSION}, "utm", "value")
       for t in ("source", "medium", "campaign", "term", "content")]
#: panel → its tabs: (tab id, endpoint, extra parameters, answer key, row field) — what each tab
#: shows, written down here from the API's documentation rather than read from the page's code.
PANELS: dict[str, list[tuple[str, str, dict[str, str], str, str]]] = {
    "sources": [
        ("sources", "/sources", {"metrics": SESSION}, "sources", "source"),
        ("referrers", "/referrers", {"metrics": SESSION}, "referrers", "referrer"),
        *UTM,
    ],
    "pages": [
        ("pages", "/pages", {"metrics": "visitors,views"}, "pages", "page"),
        ("entry-pages", "/entry-pages", {"metrics": SESSION}, "entryPages", "page"),
        ("exit-pages", "/exit-pages", {"metrics": SESSION}, "exitPages", "page"),
    ],
    "locations": [("countries", "/countries", {"metrics": SESSION}, "countries", "country"),
                  ("regions", "/regions", {"metrics": SESSION}, "regions", "region"),
                  ("cities", "/cities", {"metrics": SESSION}, "cities", "city")],
    "devices": [
        ("devices", "/devices", {"metrics": SESSION}, "devices", "device"),
        ("browsers", "/browsers", {"metrics": SESSION}, "browsers", "browser"),
        ("os", "/os", {"metrics": SESSION}, "os", "os"),
    ],
    "languages": [
        ("languages", "/languages", {"metrics": SESSION}, "languages", "language"),
        ("screens", "/screens", {"metrics": SESSION}, "screens", "screen"),
    ],
    "events": [("events", "/events", {}, "names", "name")],
    "goals": [("goals", "/conversions", {}, "goals", "name")],
}
#: KPI → field of /stats
KPI_FIELDS = {"visitors": "visitors", "visits": "visits", "views": "views",
              "views_per_visit": "viewsPerVisit", "bounce_rate": "bounceRate",
              "visit_duration": "avgDuration"}


def _query(page_url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(page_url).query)


def _api_params(query: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The API parameters of a dashboard URL: the same names, minus the page's own."""
    return [(k, v) for k, vs in query.items() if k not in ("compare", "metric") for v in vs]


def _expected_rows(dash: Dashboard, site_id: str, tab: tuple, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    _, endpoint, extra, key, field = tab
    limited = params + list(extra.items()) + ([("limit", "10")] if endpoint != "/conversions" else [])
    rows = dash.api(f"/sites/{site_id}{endpoint}", limited)[key][:10]
    return [("" if r[field] is None else str(r[field]), str(r["visitors"])) for r in rows]


def _shown_rows(dash: Dashboard, page: Any, panel: str) -> list[tuple[str, str]]:
    return [(r["value"], r["metrics"]["visitors"]) for r in dash.rows(page, panel)]


def _check_kpis(dash: Dashboard, page: Any, site_id: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    stats = dash.api(f"/sites/{site_id}/stats", params)
    shown = dash.kpis(page)
    for kpi, field in KPI_FIELDS.items():
        assert float(shown[kpi]["value"]) == pytest.approx(stats[field]), kpi
        change = stats["change"][field]
        assert (None if shown[kpi]["change"] is None else float(shown[kpi]["change"])) == change, kpi
    return stats


def _check_panels(dash: Dashboard, page: Any, site_id: str, params: list[tuple[str, str]], tabs: bool) -> int:
    """Every panel's first rows equal the API's; with ``tabs``, every tab of every panel."""
    checked = 0
    for panel, panel_tabs in PANELS.items():
        for i, tab in enumerate(panel_tabs if tabs else panel_tabs[:1]):
            if i > 0:
                page.click(f'[data-panel="{panel}"] [data-tab-id="{tab[0]}"]')
            page.wait_for_selector(f'[data-panel="{panel}"][data-tab="{tab[0]}"][data-ready="true"]')
            expected = _expected_rows(dash, site_id, tab, params)
            assert _shown_rows(dash, page, panel) == expected, f"{panel}/{tab[0]}"
            checked += len(expected)
        if tabs and len(panel_tabs) > 1:
            page.click(f'[data-panel="{panel}"] [data-tab-id="{panel_tabs[0][0]}"]')
    return checked


def _period(stats: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(stats["period"]["start"]), datetime.fromisoformat(stats["period"]["end"])


def test_every_kpi_and_the_first_rows_of_every_panel_equal_the_api(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    params = [("period", "7d")]
    stats = _check_kpis(dashboard, page, loaded.id, params)
    # The numbers are the traffic's, not only the API's: counted from the generated events.
    truth = loaded.truth(*_period(stats))
    assert truth["visitors"] > 100
    assert {k: int(dashboard.kpis(page)[k]["value"]) for k in truth} == truth
    assert _check_panels(dashboard, page, loaded.id, params, tabs=True) > 60
    # A city is shown by its name (its row's value is the GeoNames id).
    page.click('[data-panel="locations"] [data-tab-id="cities"]')
    berlin = page.locator('[data-panel="locations"] li[data-value="2950159"] .label')
    assert berlin.inner_text() == "Berlin"
    page.click('[data-panel="locations"] [data-tab-id="countries"]')
    # Numbers are formatted for the browser's locale (en-US here).
    views = dashboard.kpis(page)["views"]["text"]
    assert views == (f"{stats['views']:,}" if stats["views"] < 10_000 else views)


def test_clicking_a_row_filters_every_panel_and_the_chip_edits_it(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    page.click('[data-panel="locations"] li[data-value="DE"] button')
    page.wait_for_url(re.compile(r"filter=country"))
    assert _query(page.url) == {"period": ["7d"], "filter": ["country==DE"]}
    dashboard.wait_ready(page)
    params = [("period", "7d"), ("filter", "country==DE")]
    stats = _check_kpis(dashboard, page, loaded.id, params)
    truth = loaded.truth(*_period(stats), country="DE")
    assert stats["visits"] == truth["visits"] and stats["visitors"] == truth["visitors"]
    assert [r["value"] for r in dashboard.rows(page, "locations")] == ["DE"]
    _check_panels(dashboard, page, loaded.id, params, tabs=False)

    # A second filter combines with the first.
    page.click('[data-panel="devices"] li[data-value="mobile"] button')
    page.wait_for_url(re.compile(r"device"))
    dashboard.wait_ready(page)
    both = params + [("filter", "device==mobile")]
    assert _query(page.url)["filter"] == ["country==DE", "device==mobile"]
    _check_kpis(dashboard, page, loaded.id, both)
    _check_panels(dashboard, page, loaded.id, both, tabs=False)

    # The chip turns "is" into "is not"; its ✕ removes it.
    chip = page.locator('.chip[data-filter="country==DE"]')
    chip.locator(".chip-text").click()
    chip.locator("select").select_option("!=")
    chip.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"country%21%3DDE"))
    dashboard.wait_ready(page)
    not_de = [("period", "7d"), ("filter", "country!=DE"), ("filter", "device==mobile")]
    _check_kpis(dashboard, page, loaded.id, not_de)
    assert "DE" not in [r["value"] for r in dashboard.rows(page, "locations")]
    page.locator('.chip[data-filter="device==mobile"] .chip-remove').click()
    page.locator('.chip[data-filter="country!=DE"] .chip-remove').click()
    page.wait_for_function("() => !location.search.includes('filter')")
    dashboard.wait_ready(page)
    _check_kpis(dashboard, page, loaded.id, [("period", "7d")])


def test_a_regex_filter_saved_as_a_segment_filters_every_panel(loaded: Loaded, dashboard: Dashboard) -> None:
    """A regex filter in the URL (one value, its | an alternation) is what the API answers for it;
    "Save as segment" stores it and the page then filters by the segment's name instead."""
    page = dashboard.open(f"/sites/{loaded.id}?period=7d&filter=country~%3D%5E(DE%7CFR)%24")
    regex = [("period", "7d"), ("filter", "country~=^(DE|FR)$")]
    stats = _check_kpis(dashboard, page, loaded.id, regex)
    assert stats["visitors"] == dashboard.api(f"/sites/{loaded.id}/stats", [
        ("period", "7d"), ("filter", "country==DE|FR")])["visitors"]
    assert sorted(r["value"] for r in dashboard.rows(page, "locations")) == ["DE", "FR"]
    page.get_by_role("button", name="Save as segment").click()
    page.fill("#segment-name", "DE or FR")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(r"segment=DE"))
    assert _query(page.url) == {"period": ["7d"], "segment": ["DE or FR"]}
    dashboard.wait_ready(page)
    by_segment = [("period", "7d"), ("segment", "DE or FR")]
    assert _check_kpis(dashboard, page, loaded.id, by_segment)["visitors"] == stats["visitors"]
    _check_panels(dashboard, page, loaded.id, by_segment, tabs=False)
    assert page.locator("#segment-select").input_value() == "DE or FR"
    page.locator('.chip[data-segment="DE or FR"] .chip-remove').click()
    page.wait_for_function("() => !location.search.includes('segment')")
    dashboard.wait_ready(page)
    _check_kpis(dashboard, page, loaded.id, [("period", "7d")])


def test_period_picker_custom_range_keyboard_and_comparison(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}")
    assert _query(page.url) == {}  # 30 days is the default, as in the API
    _check_kpis(dashboard, page, loaded.id, [("period", "30d")])

    page.select_option("#period-select", "today")
    page.wait_for_url(re.compile(r"period=today"))
    dashboard.wait_ready(page)
    _check_kpis(dashboard, page, loaded.id, [("period", "today")])
    hours = dashboard.api(f"/sites/{loaded.id}/timeseries", {"period": "today"})["data"]
    assert len(hours) in (23, 24, 25)  # by hour for a day

    page.keyboard.press("w")  # the picker's shortcut for the last 7 days
    page.wait_for_url(re.compile(r"period=7d"))
    dashboard.wait_ready(page)
    stats = _check_kpis(dashboard, page, loaded.id, [("period", "7d")])

    page.select_option("#compare-select", "previous_period")
    page.wait_for_url(re.compile(r"compare=previous_period"))
    dashboard.wait_ready(page)
    # The chart redraws with the comparison series once its own timeseries answer is in.
    expect(page.locator(".u-legend")).to_contain_text("Previous period", timeout=10_000)
    was = page.locator('[data-kpi="visits"] .kpi-previous').inner_text()
    assert was == f"was {stats['previous']['visits']:,}"
    page.select_option("#compare-select", "year_over_year")
    page.wait_for_url(re.compile(r"compare=year_over_year"))
    dashboard.wait_ready(page)
    expect(page.locator(".u-legend")).to_contain_text("Last year", timeout=10_000)
    last_year = dashboard.api(f"/sites/{loaded.id}/stats", [("period", "7d"), ("compare", "year_over_year")])
    expect(page.locator('[data-kpi="visits"] .kpi-previous')).to_have_text(
        f"was {last_year['previous']['visits']:,}")
    page.select_option("#compare-select", "previous_period")
    page.wait_for_url(re.compile(r"compare=previous_period"))
    dashboard.wait_ready(page)

    page.click('[data-kpi="views"]')
    page.wait_for_url(re.compile(r"metric=views"))
    dashboard.wait_ready(page)
    assert page.locator(".chart").get_attribute("data-metric") == "views"
    expect(page.locator(".u-legend")).to_contain_text("Total pageviews", timeout=10_000)

    start, end = stats["period"]["start"][:10], stats["period"]["end"][:10]
    page.select_option("#period-select", "custom")
    page.fill('.custom-range input >> nth=0', start)
    page.fill('.custom-range input >> nth=1', end)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"start="))
    assert _query(page.url)["start"] == [start] and _query(page.url)["end"] == [end]
    dashboard.wait_ready(page)
    _check_kpis(dashboard, page, loaded.id, [("start", start), ("end", end)])

    page.go_back()  # the state is the URL: back restores the previous period
    page.wait_for_url(re.compile(r"period=7d"))
    dashboard.wait_ready(page)
    _check_kpis(dashboard, page, loaded.id, [("period", "7d")])


def test_a_beacon_moves_the_live_visitor_count(dash_server: Any, control: ControlPlane, dashboard: Dashboard) -> None:
    site = control.create_site("live.example", name="Live").public()
    page = dashboard.open(f"/sites/{site['id']}")
    # A site without data says what to do: the snippet and how to check the tracker.
    notice = page.locator("[data-empty]")
    assert "No data yet" in notice.inner_text()
    assert site["domainKey"] in notice.locator("pre").inner_text()
    page.wait_for_selector('.live-count[data-active="0"]')

    r = httpx.post(f"{dash_server.url}/api/v2/track/{site['domainKey']}",
                   json={"type": "pageview", "website": site["domainKey"], "url": "/live-now",
                         "visitorId": "live-visitor"},
                   headers={"User-Agent": DESKTOP_UA, "Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    page.wait_for_selector('.live-count[data-active="1"]', timeout=15_000)

    page.click(".live-count")
    dialog = page.locator("dialog.live-view")
    dialog.locator("text=/live-now").first.wait_for()
    assert dialog.locator("[data-live-active]").inner_text() == "1"


def test_details_search_and_paging(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    page.click('[data-panel="pages"] .panel-foot button')
    dialog = page.locator("dialog.details")
    page.wait_for_selector('dialog.details[data-loaded="0:"]')  # its own first page, not the panel's rows
    api = dashboard.api(f"/sites/{loaded.id}/pages", {"period": "7d", "limit": "21",
                                                      "metrics": "visitors,views,visits,bounce_rate,time_on_page,scroll_depth"})
    shown = dialog.locator("tbody tr td:first-child").all_inner_texts()
    assert shown == [r["page"] for r in api["pages"][:20]]
    headers = dialog.locator("thead th").all_inner_texts()
    assert [h.lower() for h in headers[-2:]] == ["time on page", "scroll depth"]  # shown in capitals
    dialog.get_by_role("button", name="Next").click()
    page.wait_for_selector('dialog.details[data-loaded="20:"]', timeout=60_000)  # a loaded CI machine
    assert dialog.locator("tbody tr td:first-child").all_inner_texts() == [r["page"] for r in api["pages"][20:21]] + \
        dialog.locator("tbody tr td:first-child").all_inner_texts()[1:]
    dialog.get_by_label("Search top pages").fill("page/1")
    page.wait_for_selector('dialog.details[data-loaded="0:page/1"]')
    searched = dialog.locator("tbody tr td:first-child").all_inner_texts()
    expected = dashboard.api(f"/sites/{loaded.id}/pages", {"period": "7d", "q": "page/1", "limit": "21",
                                                          "metrics": "visitors,views,visits,bounce_rate,time_on_page,scroll_depth"})
    assert searched == [r["page"] for r in expected["pages"][:20]]
    assert searched and all("page/1" in s for s in searched)
    # A row of the details view filters the dashboard too.
    dialog.locator("tbody tr button").first.click()
    page.wait_for_url(re.compile(r"filter=page"))
    assert _query(page.url)["filter"] == [f"page=={searched[0]}"]


def test_a_goal_added_in_settings_shows_its_conversions(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}/settings")
    page.fill("#goal-value", "Signup")
    page.get_by_role("button", name="Add goal").click()
    page.wait_for_selector('[data-goal="Signup"]')
    goals = dashboard.api(f"/sites/{loaded.id}/goals")["goals"]
    assert [(g["kind"], g["value"]) for g in goals] == [("event", "Signup")]

    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    rows = dashboard.rows(page, "goals")
    conv = dashboard.api(f"/sites/{loaded.id}/conversions", {"period": "7d"})["goals"][0]
    assert rows[0]["value"] == "Signup"
    assert rows[0]["metrics"] == {"visitors": str(conv["visitors"]), "conversions": str(conv["conversions"]),
                                  "conversion_rate": str(conv["conversionRate"]), "revenue": None}
    truth = loaded.events_in(*_period(dashboard.api(f"/sites/{loaded.id}/stats", {"period": "7d"})))
    signups = truth.filter((truth["type"] == "event") & (truth["name"] == "Signup"))
    assert conv["conversions"] == signups.height and conv["visitors"] == signups["visitor_key"].n_unique()

    # A page pattern and an event goal narrowed by a property, from the same form.
    page = dashboard.open(f"/sites/{loaded.id}/settings")
    page.select_option("#goal-kind", "page")
    page.fill("#goal-value", "/page/1*")
    page.get_by_role("button", name="Add goal").click()
    page.wait_for_selector('[data-goal="Visit /page/1*"]')
    page.select_option("#goal-kind", "event")
    page.fill("#goal-value", "Signup")
    page.fill("#goal-prop-key", "plan")
    page.fill("#goal-prop-value", "pro")
    page.check("#goal-revenue")
    page.get_by_role("button", name="Add goal").click()
    page.wait_for_selector('[data-goal="Signup (plan = pro)"]')
    goals = {g["name"]: g for g in dashboard.api(f"/sites/{loaded.id}/goals")["goals"]}
    assert goals["Signup (plan = pro)"]["property"] == {"key": "plan", "value": "pro"}
    assert goals["Signup (plan = pro)"]["revenue"] is True

    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    shown = {r["value"]: r for r in dashboard.rows(page, "goals")}
    views = truth.filter((truth["type"] == "pageview") & truth["pathname"].str.contains(r"^/page/1[^/]*$"))
    assert shown["Visit /page/1*"]["metrics"]["conversions"] == str(views.height)
    assert shown["Visit /page/1*"]["label"].startswith("Visit /page/1*")

    # The revenue currency and rates from the settings form; revenue goals then show revenue.
    page = dashboard.open(f"/sites/{loaded.id}/settings")
    page.fill("#revenue-currency", "EUR")
    page.fill("#revenue-rates", "USD=0.5\nGBP=1.2")
    page.locator('form[aria-labelledby="general-title"] button[type="submit"]').click()
    page.wait_for_selector('form[aria-labelledby="general-title"] [role="status"]')
    assert dashboard.api(f"/sites/{loaded.id}")["revenue"] == {"currency": "EUR", "rates": {"GBP": 1.2, "USD": 0.5}}
    page = dashboard.open(f"/sites/{loaded.id}?period=7d")
    shown = {r["value"]: r for r in dashboard.rows(page, "goals")}
    rates = {"EUR": 1.0, "USD": 0.5, "GBP": 1.2}
    pro = truth.filter((truth["type"] == "event") & (truth["name"] == "Signup") & (truth["_prop_plan"] == "pro")
                       & truth["revenue_currency"].is_in(list(rates)))
    revenue = sum(a * rates[c] for a, c in zip(pro["revenue_amount"], pro["revenue_currency"], strict=True))
    assert revenue > 0 and float(shown["Signup (plan = pro)"]["metrics"]["revenue"]) == pytest.approx(revenue, abs=0.01)
    assert shown["Visit /page/1*"]["metrics"]["revenue"] is None  # not a revenue goal

    # Under a goal filter every breakdown shows its rows' conversion rates, as the API answers them.
    page = dashboard.open(f"/sites/{loaded.id}?period=7d&filter=goal%3D%3DSignup")
    sources = {r["value"]: r["metrics"] for r in dashboard.rows(page, "sources")}
    api = dashboard.api(f"/sites/{loaded.id}/sources", {"period": "7d", "filter": "goal==Signup"})["sources"]
    assert sources and {k: float(v["conversion_rate"]) for k, v in sources.items()} == {
        r["source"]: r["conversionRate"] for r in api[:len(sources)]}


def test_sites_page_lists_visitors_today(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open("/")
    card = page.locator(f'.site-card[data-site="{loaded.id}"]')
    today = dashboard.api(f"/sites/{loaded.id}/stats", {"period": "today", "metrics": "visitors"})["visitors"]
    card.locator(f'.kpi-value[data-value="{today}"]').wait_for()
    card.locator(".sparkline canvas").wait_for()
    page.get_by_role("button", name="Add a site").click()
    page.get_by_label("Domain").fill("new.example")
    page.get_by_role("button", name="Add site").click()
    page.locator(".notice pre").wait_for()
    sites = {s["domain"]: s for s in dashboard.api("/sites")["sites"]}
    assert sites["new.example"]["domainKey"] in page.locator(".notice pre").inner_text()


def test_settings_pages_change_the_site_and_manage_tokens(dash_server: Any, control: ControlPlane,
                                                          dashboard: Dashboard) -> None:
    site = control.create_site("settings.example", name="Before").public()
    page = dashboard.open(f"/sites/{site['id']}/settings")
    page.get_by_label("Name", exact=True).fill("After")
    page.get_by_label("Excluded paths").fill("/admin/*\n/preview")
    page.get_by_label("Respect Do-Not-Track").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved.").wait_for()
    saved = dashboard.api(f"/sites/{site['id']}")
    assert (saved["name"], saved["excludedPaths"], saved["respectDnt"]) == ("After", ["/admin/*", "/preview"], True)
    assert site["domainKey"] in page.locator("pre[aria-label=\"Tracker snippet\"]").inner_text()

    delete = page.get_by_role("button", name="Delete site and data")
    page.get_by_label("to confirm").fill("settings.exampl")
    assert delete.is_disabled()  # only the exact domain enables it
    page.get_by_label("to confirm").fill("settings.example")
    delete.click()
    page.wait_for_url(dash_server.url + "/")
    assert httpx.get(f"{dash_server.url}/api/v2/sites/{site['id']}").status_code == 404

    # Under --dev nobody is signed in to own a new token (the page says how to make one); a
    # token made with the CLI is listed and revoked from the page.
    made = cli(dash_server.data_dir, "token", "create", "--user", "ops@example.com", "--name", "reporting").strip()
    page = dashboard.open("/settings")
    page.get_by_text("littlestats token create --user EMAIL").wait_for()
    row = next(t for t in dashboard.api("/tokens")["tokens"] if t["name"] == "reporting")
    assert made not in page.content()  # shown once, by the CLI; never listed
    page.get_by_role("button", name="Revoke token reporting").click()
    page.locator(f'[data-token="{row["id"]}"]').wait_for(state="detached")
    assert row["id"] not in [t["id"] for t in dashboard.api("/tokens")["tokens"]]


def test_an_api_error_shows_in_each_part_that_failed(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d&filter=colour==red")
    expected = dashboard.api_error(f"/sites/{loaded.id}/stats", {"period": "7d", "filter": "colour==red"})
    assert "filter" in expected
    for part in ('.kpis[role="alert"]', '[data-panel="sources"] [role="alert"]', '[data-panel="pages"] [role="alert"]',
                 '.chart[role="alert"]'):
        assert expected in page.locator(part).inner_text(), part
    assert page.locator("h1.site-title").inner_text() == "Shop"  # the rest of the page still works
    # The browser logs each refused request; here they are the point, not a fault.
    assert dashboard.errors and all("400" in e for e in dashboard.errors), dashboard.errors
    dashboard.errors.clear()
