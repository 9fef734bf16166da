"""Import and export from the dashboard, in Chromium with authentication on: the owner uploads a
GoatCounter export from the site's settings and follows it to "done"; a malformed file's error
names its line; the Plausible zip, the raw Parquet and a details view's CSV download through the
session cookie and equal the API's answers and the generated truth; an import is deleted.

One server and one site for the module; the tests run in file order (the last one deletes the
import the others read).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.dashboard.test_auth import add_user, create_site, sign_in
from tests.interop import formats as F
from tests.server import LiveServer, running_server
from tests.tracker.harness import Warehouse

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OWNER = ("dana@example.com", "owner's long passphrase")
START, END = "2025-02-28", "2025-03-04"  # around the fixture's three days, in any time zone


@dataclass
class Imported:
    server: LiveServer
    page: Page
    site: dict[str, Any]
    hits: list[F.Hit]
    import_id: str

    @property
    def settings(self) -> str:
        return f"{self.server.url}/sites/{self.site['id']}/settings"

    def api(self, path: str) -> Any:
        """An API answer through the page's own session (its cookie)."""
        r = self.page.request.get(self.server.url + path)
        assert r.ok, r.text()
        return r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("data-card") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        add_user(data_dir, *OWNER)
        yield srv


def _upload(page: Page, source: str, path: Path) -> Locator:
    card = page.locator("#data")
    card.locator("#import-source").select_option(source)
    card.locator("#import-file").set_input_files(str(path))
    card.get_by_role("button", name="Upload and import").click()
    expect(card.locator(".import-form .form-ok")).to_contain_text(f"Uploaded {path.name}")
    return card.locator(".import-list li", has_text=path.name)


@pytest.fixture(scope="module")
def imported(server: LiveServer, browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The owner's site with a GoatCounter export uploaded through the card, loaded."""
    page = sign_in(browser, server, OWNER)
    site = create_site(page, "data.example")
    hits = F.history(visitors=30, seed=31)
    path = tmp_path_factory.mktemp("files") / "goatcounter-export.csv"
    F.write_goatcounter(path, hits)
    page.goto(f"{server.url}/sites/{site['id']}/settings")
    expect(page.locator("#data-title")).to_have_text("Import and export")
    item = _upload(page, "goatcounter", path)
    expect(item).to_have_attribute("data-status", "done", timeout=120_000)
    Warehouse(server, site["id"]).load()
    return Imported(server, page, site, hits, str(item.get_attribute("data-import")))


def test_an_uploaded_goatcounter_export_reaches_done_with_its_event_count(imported: Imported) -> None:
    # GoatCounter exports pageviews and events, no exits or heartbeats; bots are skipped
    want = sum(1 for h in F.counted(imported.hits) if h.kind in ("pageview", "event"))
    bots = sum(1 for h in imported.hits if h.bot)
    item = imported.page.locator(f"li[data-import='{imported.import_id}']")
    expect(item).to_have_attribute("data-events", str(want))
    expect(item.locator(".import-status")).to_have_text("Done")
    expect(item.locator(".import-counts")).to_contain_text(f"{bots} bots")
    record = imported.api(f"/api/v2/sites/{imported.site['id']}/imports/{imported.import_id}").json()
    assert record["eventsWritten"] == want and record["status"] == "done"


def test_a_malformed_file_shows_its_line_and_is_deleted(imported: Imported, tmp_path: Path) -> None:
    page = imported.page
    rows = F.goat_rows(F.history(visitors=3, seed=5))
    bad = next(i for i, r in enumerate(rows) if r[7] == "0")  # a bot's row is skipped unread
    rows[bad][2] = "maybe"  # its Event; the header is line 1
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([F.GOAT_HEADER, *rows])
    path = tmp_path / "broken.csv"
    path.write_text(buf.getvalue())
    item = _upload(page, "goatcounter", path)
    expect(item).to_have_attribute("data-status", "failed", timeout=60_000)
    expect(item.locator(".import-message")).to_have_text(f"broken.csv, line {bad + 2}, column Event: 'maybe' is not true or false")
    page.once("dialog", lambda d: d.accept())
    item.get_by_role("button", name="Delete the import of broken.csv").click()
    expect(item).to_have_count(0)
    listed = imported.api(f"/api/v2/sites/{imported.site['id']}/imports").json()["imports"]
    assert [r["id"] for r in listed] == [imported.import_id]


def test_plausible_zip_and_raw_parquet_download_as_the_api_answers(imported: Imported, tmp_path: Path) -> None:
    page = imported.page
    page.goto(imported.settings)
    page.fill("#export-start", START)
    page.fill("#export-end", END)
    link = page.locator("#export-plausible")
    href = link.get_attribute("href")
    assert href == f"/api/v2/sites/{imported.site['id']}/export?start={START}&end={END}"
    with page.expect_download() as info:
        link.click()
    got = zipfile.ZipFile(info.value.path())
    api = zipfile.ZipFile(io.BytesIO(imported.api(href).body()))
    names = got.namelist()
    visitors_file = next(n for n in names if n.startswith("imported_visitors_"))
    assert names == api.namelist()
    # the same files, byte for byte (the zip's own bytes differ only in each entry's write time)
    assert all(got.read(n) == api.read(n) for n in names)
    daily = list(csv.DictReader(io.StringIO(got.read(visitors_file).decode())))
    views = sum(1 for h in F.counted(imported.hits) if h.kind == "pageview")
    assert sum(int(d["pageviews"]) for d in daily) == views

    raw = page.locator("#export-raw")
    assert raw.get_attribute("href") == f"/api/v2/sites/{imported.site['id']}/export/raw?start={START}&end={END}"
    with page.expect_download() as info:
        raw.click()
    events = pl.read_parquet(info.value.path())
    assert Path(info.value.path()).read_bytes() == imported.api(str(raw.get_attribute("href"))).body()
    assert events.height == sum(1 for h in F.counted(imported.hits) if h.kind in ("pageview", "event"))


def test_details_download_csv_equals_the_api(imported: Imported) -> None:
    page = imported.page
    page.goto(f"{imported.server.url}/sites/{imported.site['id']}?start={START}&end={END}")
    panel = page.locator("#panel-pages")
    expect(panel).to_have_attribute("data-ready", "true")
    panel.get_by_role("button", name="Details").click()
    dialog = page.locator("dialog.details")
    expect(dialog).to_have_attribute("data-loaded", "0:")
    link = dialog.get_by_role("link", name="Download CSV")
    href = str(link.get_attribute("href"))
    assert href.startswith(f"/api/v2/sites/{imported.site['id']}/pages?start={START}&end={END}&")
    assert "format=csv" in href
    with page.expect_download() as info:
        link.click()
    body = Path(info.value.path()).read_bytes()
    assert body == imported.api(href).body()
    table = list(csv.DictReader(io.StringIO(body.decode())))
    views = Counter(h.path for h in F.counted(imported.hits) if h.kind == "pageview")
    assert {r["page"]: int(r["views"]) for r in table} == dict(views)


def test_the_card_fits_375_px_and_is_reached_with_tab(imported: Imported) -> None:
    page = imported.page
    page.set_viewport_size({"width": 375, "height": 800})
    try:
        page.goto(imported.settings)
        expect(page.locator(f"li[data-import='{imported.import_id}']")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.focus("#export-start")
        reached: list[str] = []  # the card's controls in Tab order (a date field takes 3 Tabs)
        for _ in range(30):
            page.keyboard.press("Tab")
            name = page.evaluate("document.activeElement.id || document.activeElement.getAttribute('aria-label')")
            if name and name not in reached:
                reached.append(name)
        assert reached[:6] == ["export-start", "export-end", "export-plausible", "export-raw", "import-source", "import-file"]
        assert "Delete the import of goatcounter-export.csv" in reached
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_deleting_the_import_empties_the_list(imported: Imported) -> None:
    page = imported.page
    page.goto(imported.settings)
    item = page.locator(f"li[data-import='{imported.import_id}']")
    expect(item).to_have_attribute("data-status", "done")
    page.once("dialog", lambda d: d.accept())
    item.get_by_role("button", name="Delete the import of goatcounter-export.csv").click()
    expect(page.locator(".import-list li")).to_have_count(0, timeout=60_000)
    assert imported.api(f"/api/v2/sites/{imported.site['id']}/imports").json()["imports"] == []
    stats = imported.api(f"/api/v2/sites/{imported.site['id']}/stats?start={START}&end={END}").json()
    assert stats["views"] == 0 and stats["visitors"] == 0  # its events left the reports
