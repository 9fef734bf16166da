from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import LiveServer, add_site, running_server


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
