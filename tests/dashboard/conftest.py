"""A real `littlestats serve --dev` holding generated traffic of known truth, and headless Chromium.

One server and one loaded site for the whole suite (loading costs seconds); tests that change
what they read (a beacon, a goal) use a site of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Playwright

from littlestats.controlplane import ControlPlane
from tests.dashboard.harness import Dashboard, Loaded
from tests.generator import TrafficSpec, generate
from tests.server import LiveServer, running_server
from tests.tracker.harness import Warehouse, launch

TIMEZONE = "Europe/Berlin"


@pytest.fixture(scope="session")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, "--dev", env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        warehouse = Warehouse(srv, "")
        deadline = time.monotonic() + 60
        while not warehouse.client.available():  # it starts a few seconds after HTTP
            assert time.monotonic() < deadline, "the server's warehouse process never answered"
            time.sleep(0.2)
        yield srv


@pytest.fixture(scope="session")
def control(dash_server: LiveServer) -> Iterator[ControlPlane]:
    store = ControlPlane(dash_server.data_dir / "control.sqlite3")
    yield store
    store.close()


@pytest.fixture(scope="session")
def loaded(dash_server: LiveServer, control: ControlPlane) -> Loaded:
    """A site with ten days of generated traffic up to the current hour, loaded into the warehouse."""
    site = control.create_site("shop.example", name="Shop", timezone=TIMEZONE).public()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    spec = TrafficSpec(visitors=600, days=10, start=end - timedelta(days=10), sites=(site["id"],),
                       timezones={site["id"]: TIMEZONE}, loads=1, late_fraction=0.0,
                       duplicate_fraction=0.0, seed=20)
    traffic = generate(spec)
    traffic.write_raw(dash_server.data_dir / "raw")
    Warehouse(dash_server, site["id"]).load()
    return Loaded(dash_server, site, traffic)


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright)
    yield b
    b.close()


@pytest.fixture
def dashboard(dash_server: LiveServer, browser: Browser) -> Iterator[Dashboard]:
    d = Dashboard(dash_server, browser)
    yield d
    d.close()
    assert not d.errors, f"the page reported errors: {d.errors}"
