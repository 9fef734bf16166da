from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright

from littlestats.controlplane import ControlPlane
from tests.server import LiveServer, running_server
from tests.tracker.harness import Harness, PageServer, launch


@pytest.fixture(scope="session")
def stats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real `littlestats serve --dev` (two workers) for the tracker suite; each test has its
    own site, so tests never see each other's events."""
    data_dir = tmp_path_factory.mktemp("tracker") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 2, "--dev", env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        yield srv


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    pages = PageServer()
    yield pages
    pages.close()


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Playwright turns the back/forward cache off by default; real browsers have it on, and the
    # tracker must not count a restored page again.
    b = launch(playwright, ignore_default_args=["--disable-back-forward-cache"])
    yield b
    b.close()


@pytest.fixture(scope="session")
def control(stats_server: LiveServer) -> Iterator[ControlPlane]:
    store = ControlPlane(stats_server.data_dir / "control.sqlite3")
    yield store
    store.close()


@pytest.fixture
def harness(
    stats_server: LiveServer, page_server: PageServer, browser: Browser, control: ControlPlane
) -> Iterator[Harness]:
    # A site of its own per test (created in-process: the CLI would cost a Python start-up).
    site = control.create_site("example.com", name="tracker test").public()
    h = Harness(stats_server, page_server, browser, site)
    yield h
    h.close_contexts()
    assert not h.page_errors, f"the page threw: {h.page_errors}"
