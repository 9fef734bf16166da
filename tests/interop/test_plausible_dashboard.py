"""The dashboard's "Include imported data" toggle, in Chromium, against a real ``serve --dev``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Playwright

from interop.plausible import import_zip
from littlestats.config import Settings
from tests.dashboard.harness import Dashboard
from tests.interop import plausible_csv
from tests.server import LiveServer, running_server
from tests.tracker.harness import launch

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RANGE = "?start=2025-06-01&end=2025-06-05"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, plausible_csv.Export]]:
    data_dir = tmp_path_factory.mktemp("plausible-dash") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, "--dev") as srv:
        site = httpx.post(f"{srv.url}/api/v2/sites", json={"domain": "moved.example", "timezone": "UTC"}).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/api/v2/health/{site['id']}").json().get("warehouse") != "ok":
            assert time.monotonic() < deadline, "the warehouse process never answered"
            time.sleep(0.2)
        export = plausible_csv.generate(date(2025, 6, 1), 5, seed=9)
        zip_path = export.write_zip(data_dir.parent / "plausible.zip")
        import_zip(site["id"], zip_path, "dash", settings=Settings(data_dir=data_dir))
        yield srv, site["id"], export


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright)
    yield b
    b.close()


def test_the_toggle_adds_imported_data_to_every_panel(
        server: tuple[LiveServer, str, plausible_csv.Export], browser: Browser, tmp_path: Path) -> None:
    srv, site, export = server
    dash = Dashboard(srv, browser)
    try:
        page = dash.open(f"/sites/{site}{RANGE}")
        assert dash.kpis(page)["visits"]["value"] == "0"  # off by default, like Plausible's toggle
        page.get_by_label("Include imported data").check()
        page.wait_for_url(f"**/sites/{site}{RANGE}&imported=true")
        dash.wait_ready(page)
        visits = sum(r["visits"] for r in export.rows("imported_visitors") if r["date"] <= "2025-06-05")
        assert dash.kpis(page)["visits"]["value"] == str(visits)
        note = page.locator(".imported-note").text_content() or ""
        assert "visitors approximate" in note  # five days of daily uniques, summed
        api = dash.api(f"/sites/{site}/pages", {"start": "2025-06-01", "end": "2025-06-05", "imported": "true"})
        shown = {r["value"]: r["metrics"] for r in dash.rows(page, "pages")}
        for row in api["pages"]:
            if row["page"] in shown:
                assert shown[row["page"]]["visitors"] == str(row["visitors"])
        assert set(shown) and set(shown) <= {r["page"] for r in api["pages"]}
    finally:
        dash.close()
    assert not dash.errors, dash.errors
