"""The dashboard in Firefox: log in, every panel renders, the numbers are the API's, a row filters.

Debian's headless ``firefox-esr`` over WebDriver BiDi (``tests/firefox.py``) against a real
``littlestats serve`` with authentication on, holding generated traffic of known truth. Skipped
only when Firefox is not installed (``scripts/test`` installs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from tests.dashboard.harness import KPIS, PROBE, READY, ROWS, Loaded
from tests.dashboard.test_auth_pages import set_password
from tests.firefox import Firefox, firefox_binary
from tests.generator import TrafficSpec, generate
from tests.server import LiveServer, cli, running_server
from tests.tracker.harness import Warehouse

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(firefox_binary() is None,
                       reason="Firefox is not installed: apt-get install firefox-esr (scripts/test does)"),
]

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"
SESSION = "visitors,visits,views,bounce_rate,visit_duration"
#: panel → (endpoint, parameters, answer key, row field) of its first tab, from the API's docs
FIRST_TABS = {
    "sources": ("/sources", {"metrics": SESSION}, "sources", "source"),
    "pages": ("/pages", {"metrics": "visitors,views"}, "pages", "page"),
    "locations": ("/countries", {"metrics": SESSION}, "countries", "country"),
    "devices": ("/devices", {"metrics": SESSION}, "devices", "device"),
    "languages": ("/languages", {"metrics": SESSION}, "languages", "language"),
}
KPI_FIELDS = {"visitors": "visitors", "visits": "visits", "views": "views",
              "views_per_visit": "viewsPerVisit", "bounce_rate": "bounceRate",
              "visit_duration": "avgDuration"}


@dataclass
class Site:
    loaded: Loaded
    token: str

    def api(self, path: str, params: list[tuple[str, str]]) -> Any:
        r = httpx.get(f"{self.loaded.server.url}/api/v2/sites/{self.loaded.id}{path}?{urlencode(params)}",
                      headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A user with a password, and a site of theirs with eight days of traffic, loaded."""
    data_dir = tmp_path_factory.mktemp("firefox") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        set_password(data_dir, EMAIL, PASSWORD, command="add")
        token = cli(data_dir, "token", "create", "--user", EMAIL).strip()
        r = httpx.post(f"{srv.url}/api/v2/sites", json={"domain": "firefox.example"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 201, r.text
        created = r.json()
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        spec = TrafficSpec(visitors=200, days=8, start=end - timedelta(days=8), sites=(created["id"],),
                           timezones={created["id"]: "UTC"}, loads=1, late_fraction=0.0,
                           duplicate_fraction=0.0, seed=7)
        traffic = generate(spec)
        traffic.write_raw(data_dir / "raw")
        Warehouse(srv, created["id"]).load()
        yield Site(Loaded(srv, created, traffic), token)


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    browser = Firefox(tmp_path_factory.mktemp("firefox-profile") / "profile")
    # The dashboard harness' probe: what the Content-Security-Policy refused lands in __problems.
    browser.add_preload_script(f"() => {{ {PROBE} }}")
    yield browser
    browser.close()


def log_in(firefox: Firefox, server: LiveServer, next_path: str) -> str:
    tab = firefox.new_tab()
    firefox.navigate(tab, f"{server.url}/login?next={next_path}")
    firefox.type_into(tab, "#email", EMAIL)
    firefox.type_into(tab, "#password", PASSWORD)
    firefox.click(tab, 'button[type="submit"]')
    firefox.wait_for(tab, "location.pathname !== '/login' && document.readyState === 'complete'")
    return tab


def shown_rows(firefox: Firefox, tab: str, panel: str) -> list[tuple[str, str]]:
    return [(r["value"], r["metrics"]["visitors"]) for r in firefox.call(tab, ROWS, panel)]


def expected_rows(site: Site, panel: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    endpoint, extra, key, field = FIRST_TABS[panel]
    rows = site.api(endpoint, params + [*extra.items(), ("limit", "10")])[key][:10]
    return [("" if r[field] is None else str(r[field]), str(r["visitors"])) for r in rows]


def check_dashboard(firefox: Firefox, tab: str, site: Site, params: list[tuple[str, str]]) -> dict[str, Any]:
    """Waits until every panel has rendered what the URL asks for; the KPIs and each panel's
    first rows equal what the API answers for the same parameters. Returns the API's stats."""
    firefox.wait_for(tab, f"({READY})()")
    stats = site.api("/stats", params)
    shown = firefox.evaluate(tab, f"({KPIS})()")
    for kpi, field in KPI_FIELDS.items():
        assert float(shown[kpi]["value"]) == pytest.approx(stats[field]), kpi
    for panel in FIRST_TABS:
        expected = expected_rows(site, panel, params)
        assert expected, f"{panel}: the generated traffic should fill every panel"
        assert shown_rows(firefox, tab, panel) == expected, panel
    return dict(stats)


def test_the_dashboard_in_firefox_shows_the_apis_numbers_and_filters_on_a_click(
        site: Site, firefox: Firefox) -> None:
    loaded = site.loaded
    tab = log_in(firefox, loaded.server, f"/sites/{loaded.id}%3Fperiod%3D7d")
    assert firefox.evaluate(tab, "location.pathname + location.search") == f"/sites/{loaded.id}?period=7d"

    stats = check_dashboard(firefox, tab, site, [("period", "7d")])
    # Counted from the generated events, not only the API's word.
    start, end = (datetime.fromisoformat(stats["period"][k]) for k in ("start", "end"))
    truth = loaded.truth(start, end)
    assert truth["visitors"] > 50
    assert {k: stats[k] for k in truth} == truth

    # A real click on the top known country filters the whole dashboard by it.
    country = next(value for value, _ in shown_rows(firefox, tab, "locations") if value)
    firefox.click(tab, f'[data-panel="locations"] li[data-value="{country}"] button')
    firefox.wait_for(tab, "location.search.includes('filter=')")
    query = parse_qs(urlparse(firefox.evaluate(tab, "location.href")).query)
    assert query == {"period": ["7d"], "filter": [f"country=={country}"]}
    filtered = check_dashboard(firefox, tab, site, [("period", "7d"), ("filter", f"country=={country}")])
    assert filtered["visits"] == loaded.truth(start, end, country=country)["visits"] < stats["visits"]
    assert [r[0] for r in shown_rows(firefox, tab, "locations")] == [country]
    assert firefox.evaluate(tab, "document.querySelectorAll('.chip').length") == 1

    assert firefox.evaluate(tab, "window.__problems") == []
    assert firefox.log == [], "Firefox logged errors"
    assert firefox.failed_responses == []
    # The log would have shown an error: one the page reports now arrives.
    firefox.evaluate(tab, "setTimeout(() => { throw new Error('probe'); }), 1")
    deadline = time.monotonic() + 10
    while not any("probe" in entry for entry in firefox.log) and time.monotonic() < deadline:
        firefox.evaluate(tab, "1")
        time.sleep(0.1)
    assert any("probe" in entry for entry in firefox.log), firefox.log

