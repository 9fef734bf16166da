"""Browser-test plumbing for the dashboard: pages in Chromium, what they show, what the API answers
for the same question, and the generated truth to check both against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import polars as pl
from playwright.sync_api import Browser, BrowserContext, Page

from tests.generator import Traffic
from tests.server import LiveServer

# Reports what the browser refused under the Content-Security-Policy, and uncaught errors.
PROBE = """
window.__problems = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__problems.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI);
});
"""

# Every part of the dashboard has loaded what the current URL asks for.
READY = """
() => {
  const root = document.querySelector('.dashboard');
  if (!root || root.dataset.search !== location.search) return false;
  const parts = [...document.querySelectorAll('[data-for]')];
  const charts = [...document.querySelectorAll('[data-for-search]')];
  return parts.length >= 8 && charts.length === 1
    && parts.every((e) => e.dataset.ready === 'true' && e.dataset.for === root.dataset.query)
    && charts.every((e) => e.dataset.ready === 'true' && e.dataset.forSearch === location.search);
}
"""

ROWS = """
(panel) => [...document.querySelectorAll(`[data-panel="${panel}"] .rows > li`)].map((li) => ({
  value: li.dataset.value,
  label: li.querySelector('.label').textContent,
  metrics: Object.fromEntries([...li.querySelectorAll('[data-metric]')].map((e) => [e.dataset.metric, e.dataset.value])),
}))
"""

KPIS = """
() => Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map((b) => [b.dataset.kpi, {
  value: b.querySelector('.kpi-value').dataset.value,
  text: b.querySelector('.kpi-value').textContent,
  change: (b.querySelector('[data-change]') || {dataset: {}}).dataset.change ?? null,
}]))
"""


@dataclass
class Loaded:
    """The suite's site with generated traffic, and the truth about it."""

    server: LiveServer
    site: dict[str, Any]
    traffic: Traffic

    @property
    def id(self) -> str:
        return str(self.site["id"])

    def events_in(self, start: datetime, end: datetime) -> pl.DataFrame:
        ev = self.traffic.events
        return ev.filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    def truth(self, start: datetime, end: datetime, country: str | None = None) -> dict[str, int]:
        """Visitors, visits and views in [start, end) counted from the generated events."""
        events = self.events_in(start, end)
        visits = self.traffic.visits.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
        if country is not None:
            matching = self.traffic.visits.filter(pl.col("country") == country).select("visit_id")
            events = events.join(matching, on="visit_id", how="semi")
            visits = visits.filter(pl.col("country") == country)
        return {
            "visitors": events.select(pl.col("visitor_key").n_unique()).item(),
            "visits": visits.height,
            "views": events.filter(pl.col("type") == "pageview").height,
        }


@dataclass
class Dashboard:
    """Opens dashboard pages in fresh Chromium contexts and reads what they show."""

    server: LiveServer
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def open(self, path: str, width: int = 1280, scheme: str = "light", wait: bool = True) -> Page:
        ctx = self.browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                       locale="en-US")
        ctx.add_init_script(PROBE)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
                if r.status >= 400 else None)
        page.goto(self.server.url + path)
        self.pages.append(page)
        if wait and path.startswith("/sites/") and not path.endswith("/settings"):
            self.wait_ready(page)
        return page

    def wait_ready(self, page: Page, timeout: float = 30_000) -> None:
        page.wait_for_function(READY, timeout=timeout)

    def rows(self, page: Page, panel: str) -> list[dict[str, Any]]:
        return list(page.evaluate(ROWS, panel))

    def kpis(self, page: Page) -> dict[str, dict[str, Any]]:
        return dict(page.evaluate(KPIS))

    def api(self, path: str, params: dict[str, Any] | list[tuple[str, str]] | None = None) -> Any:
        query = ("?" + urlencode(params, doseq=True)) if params else ""
        r = httpx.get(f"{self.server.url}/api/v2{path}{query}", timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def api_error(self, path: str, params: dict[str, Any]) -> str:
        """The message of the API's 4xx for this question."""
        r = httpx.get(f"{self.server.url}/api/v2{path}?{urlencode(params, doseq=True)}", timeout=60)
        assert 400 <= r.status_code < 500, r.text
        return str(r.json()["error"])

    def close(self) -> None:
        for page in self.pages:
            try:
                problems = page.evaluate("window.__problems")
            except Exception:  # the page is gone
                continue
            self.errors.extend(problems or [])
        for ctx in self.contexts:
            ctx.close()
        self.contexts.clear()
