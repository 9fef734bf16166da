"""Takes the dashboard screenshots of the docs (``docs/dashboard-light.png``, ``-dark.png``).

Starts ``littlestats serve --dev`` on loopback in a temporary directory, loads 62 days of generated
traffic (page paths renamed to look like a small product site) and photographs one site's
dashboard in Chromium at 1280 px, light and dark. Run through ``scripts/screenshots``.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
from playwright.sync_api import sync_playwright

from littlestats.controlplane import ControlPlane
from tests.dashboard.harness import READY
from tests.generator import PAGES, TrafficSpec, generate
from tests.server import running_server
from tests.tracker.harness import Warehouse, launch

NICE = ["/", "/pricing", "/blog", "/docs", "/signup", "/blog/privacy-first-analytics", "/docs/install",
        "/docs/tracker", "/blog/duckdb-in-production", "/features", "/about", "/docs/api", "/changelog",
        "/blog/parquet-for-events", "/contact", "/careers", "/docs/self-hosting", "/legal/privacy"]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        with running_server(data, 1, "--dev") as srv:
            control = ControlPlane(data / "control.sqlite3")
            site = control.create_site("acme.example", name="Acme Docs", timezone="Europe/Berlin").public()
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            traffic = generate(TrafficSpec(visitors=7000, days=62, start=end - timedelta(days=62),
                                           sites=(site["id"],), timezones={site["id"]: "Europe/Berlin"},
                                           loads=1, late_fraction=0, duplicate_fraction=0, seed=7))
            rename = {p: NICE[i % len(NICE)] for i, p in enumerate(PAGES[:40])}
            traffic.events = traffic.events.with_columns(
                pl.col("pathname").replace(rename), pl.col("hostname").replace({"example.com": "acme.example"}))
            traffic.write_raw(data / "raw")
            Warehouse(srv, site["id"]).load()
            httpx.post(f"{srv.url}/api/v2/sites/{site['id']}/goals", json={"kind": "event", "value": "Signup"})
            httpx.post(f"{srv.url}/api/v2/sites/{site['id']}/goals", json={"kind": "page", "value": "/pricing"})
            httpx.post(f"{srv.url}/api/v2/sites/{site['id']}/funnels", json={
                "name": "Docs to signup", "steps": [{"page": "/docs/**"}, {"page": "/pricing"}, {"event": "Signup"}],
                "per": "visitor", "days": 7})
            with sync_playwright() as p:
                browser = launch(p)
                for scheme in ("light", "dark"):
                    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme,
                                              locale="en-US", device_scale_factor=1)
                    page = ctx.new_page()
                    page.goto(f"{srv.url}/sites/{site['id']}?compare=previous_period")
                    page.wait_for_function(READY, timeout=60_000)
                    page.wait_for_timeout(1500)  # the live count's first update
                    path = out / f"dashboard-{scheme}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(path)
                    ctx.close()
                browser.close()
            control.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs")
