from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Playwright, sync_playwright

from tests.server import LiveServer, add_site, running_server
from tests.tracker.harness import CHROMIUM


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def server(data_dir: Path) -> Iterator[LiveServer]:
    """A real `littlestats serve --dev` with two gunicorn workers on loopback.

    Segments rotate every second so tests see Parquet quickly.
    """
    with running_server(data_dir, 2, "--dev", env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        yield srv


@pytest.fixture
def site(data_dir: Path) -> dict:
    return add_site(data_dir)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for one test module's browser tests (the tracker's, the dashboard's).

    Module scope, not session: a running sync Playwright keeps its asyncio loop set as the test
    process's running loop, so any later test in the same process that calls ``asyncio.run`` (or
    starts a second Playwright) would fail. It ends with the module that used it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run scripts/test, or apt-get install chromium")
    with sync_playwright() as p:
        yield p
