"""An erasure killed (SIGKILL) at any step is completed by the next start or a re-run, exactly.

``littlestats erase`` runs as a real process; the ``erase_fault`` setting makes it stop at a named
step (after the journal is written, after the first raw file is rewritten, inside the warehouse
transaction, after its commit) until the test kills it. Then either the erasure is run again or the
warehouse is simply opened again (as the next start or ``littlestats load`` does); the result must
equal an erasure that ran without interruption, table for table, and hold no trace of the person.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from littlestats.config import load_settings
from tests.warehouse.snapshot import assert_same, snapshot_file
from tests.warehouse.test_erase import (
    VISITOR_ID,
    World,
    build_world,
    make_sites,
    scan_for_traces,
    write_data,
)
from warehouse.erase import journal_dir
from warehouse.service import Warehouse

pytestmark = pytest.mark.slow


def littlestats(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "littlestats", *args, "--data-dir", str(data_dir)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def reopen(data_dir: Path, erase: tuple[str, int] | None = None) -> None:
    """Open the warehouse as the next start does (in this process: it runs the same code as
    ``littlestats load`` without a second interpreter's start-up), optionally erase, then load."""
    wh = Warehouse(load_settings({"data_dir": data_dir}, environ={}))
    try:
        if erase is not None:
            wh.erase(erase[0], [erase[1]])
        wh.load()  # and the WAL segment the erasure sealed is loaded
    finally:
        wh.close()


def person_events(data_dir: Path, key: int) -> int:
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM events WHERE visitor_key = ?", [key]).fetchall()[0][0])
    finally:
        con.close()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path, Path]:
    """``base``: traffic loaded, a WAL segment pending. ``clean``: a copy erased without faults."""
    root = tmp_path_factory.mktemp("erase-crash")
    settings, sites, secret = make_sites(root / "base")
    world = build_world(sites, secret)
    write_data(world, root / "base")
    wh = Warehouse(settings)
    try:
        wh.load(seal=False)
    finally:
        wh.close()
    shutil.copytree(root / "base", root / "clean")
    reopen(root / "clean", erase=(sites["b.example"], world.person))
    return world, root / "base", root / "clean"


@pytest.mark.parametrize(("step", "recover_by"), [
    ("journal", "erase"), ("rewrite", "load"), ("facts", "load"), ("committed", "erase"),
])
def test_erasure_killed_at_a_step_is_completed_exactly(
    prepared: tuple[World, Path, Path], tmp_path: Path, step: str, recover_by: str,
) -> None:
    world, base, clean = prepared
    site = world.sites["b.example"]
    data_dir = tmp_path / "data"
    shutil.copytree(base, data_dir)
    loaded = person_events(data_dir, world.person)
    assert loaded > 0

    proc = littlestats(data_dir, "erase", "--site", site, "--visitor", VISITOR_ID,
                       env={"LITTLESTATS_ERASE_FAULT": f"pause:{step}"})
    marker = data_dir / "run" / f"erase-paused-{step}"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, f"the erasure never reached {step}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The journal says an erasure is unfinished; the warehouse holds the old state or the new one.
    assert len(list(journal_dir(data_dir).glob("*.json"))) == 1
    assert person_events(data_dir, world.person) == (0 if step == "committed" else loaded)

    reopen(data_dir, erase=(site, world.person) if recover_by == "erase" else None)

    assert_same(snapshot_file(clean / "warehouse.duckdb"), snapshot_file(data_dir / "warehouse.duckdb"))
    assert scan_for_traces(data_dir, {world.person}, set()) == []
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("part-*.parquet")) == \
        sorted(p.relative_to(clean) for p in clean.rglob("part-*.parquet"))
