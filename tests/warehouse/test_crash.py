"""Killing the loader (SIGKILL) at random points and running it again equals one clean run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.generator import TrafficSpec, generate
from tests.warehouse.snapshot import assert_same, snapshot_file


def run_load(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "littlestats", "load", "--data-dir", str(data_dir)],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_loader_killed_at_random_points_leaves_the_same_tables(tmp_path: Path) -> None:
    traffic = generate(TrafficSpec(visitors=600, days=4, seed=11, loads=1))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    traffic.write_raw(clean / "raw")
    shutil.copytree(clean / "raw", killed / "raw")
    # small transactions so kills land before, inside and between them
    env = {"LITTLESTATS_LOAD_CHUNK_ROWS": "3000"}

    subprocess.run([sys.executable, "-m", "littlestats", "load", "--data-dir", str(clean)],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=300)
    expected = snapshot_file(clean / "warehouse.duckdb")

    rng = random.Random(5)
    kills = 0
    for _ in range(6):
        proc = run_load(killed, env)
        time.sleep(rng.uniform(1.0, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = run_load(killed, env)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    assert kills >= 3, "the loader finished before it could be killed; use more data"
    assert_same(expected, snapshot_file(killed / "warehouse.duckdb"))
