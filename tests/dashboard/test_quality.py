"""What every page must be: accessible (axe-core finds no serious or critical violation), usable
at 375 px without horizontal scrolling, in light and dark mode, under a strict CSP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.dashboard.harness import Dashboard, Loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _serious(page: Any) -> list[str]:
    violations = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in violations if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violation(loaded: Loaded, dashboard: Dashboard, scheme: str) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d&compare=previous_period", scheme=scheme)
    assert _serious(page) == []
    page.click('[data-panel="sources"] .panel-foot button')  # the details dialog
    page.locator("dialog.details tbody tr").first.wait_for()
    assert _serious(page) == []
    for path in ("/", f"/sites/{loaded.id}/settings", "/settings"):
        other = dashboard.open(path, scheme=scheme)
        other.locator("main h1").wait_for()
        other.wait_for_load_state("networkidle")
        assert _serious(other) == [], path


def test_375_px_wide_has_no_horizontal_scroll(loaded: Loaded, dashboard: Dashboard) -> None:
    page = dashboard.open(f"/sites/{loaded.id}?period=7d&filter=page~page", width=375)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.locator(".kpis").bounding_box()["width"] <= 375  # type: ignore[index]
    for path in ("/", f"/sites/{loaded.id}/settings", "/settings"):
        other = dashboard.open(path, width=375)
        other.locator("main h1").wait_for()
        other.wait_for_load_state("networkidle")
        assert other.evaluate("document.documentElement.scrollWidth") <= 375, path


def test_dark_mode_follows_the_system_setting(loaded: Loaded, dashboard: Dashboard) -> None:
    background = "() => getComputedStyle(document.body).backgroundColor"
    light = dashboard.open(f"/sites/{loaded.id}?period=7d").evaluate(background)
    dark = dashboard.open(f"/sites/{loaded.id}?period=7d", scheme="dark").evaluate(background)
    assert light != dark
    assert sum(int(c) for c in dark[4:-1].split(",")[:3]) < 150  # a dark colour


def test_pages_and_assets_carry_the_security_and_cache_headers(loaded: Loaded) -> None:
    base = loaded.server.url
    shell = httpx.get(f"{base}/sites/{loaded.id}")
    assert shell.status_code == 200
    csp = shell.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert shell.headers["x-frame-options"] == "DENY" and shell.headers["cache-control"] == "no-cache"
    asset = shell.text.split('src="', 1)[1].split('"', 1)[0]
    js = httpx.get(base + asset, headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
    assert "immutable" in js.headers["cache-control"] and "javascript" in js.headers["content-type"]


def test_every_panel_at_once_from_several_pages_is_answered(loaded: Loaded) -> None:
    """A dashboard asks ~12 questions at once; four of them opening together must all be answered
    (the warehouse socket's listen backlog once refused the excess with 503s)."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["stats", "timeseries", "sources", "referrers", "pages", "entry-pages", "exit-pages",
             "countries", "devices", "browsers", "os", "languages"]
    urls = [f"{loaded.server.url}/api/v2/sites/{loaded.id}/{name}?period=7d" for name in names * 4]
    # Threads, not asyncio: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(len(urls)) as pool:
        codes = list(pool.map(lambda url: httpx.get(url, timeout=60).status_code, urls))
    assert codes == [200] * len(urls)
