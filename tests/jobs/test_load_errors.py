"""`littlestats load` failing says what went wrong and what to do, in one line, not a traceback.

The full disk is real: the data directory is copied onto a small tmpfs mounted in a private mount
namespace (``unshare``, as an unprivileged user with user namespaces), and the load runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.generator import TrafficSpec, generate
from tests.server import cli

pytestmark = pytest.mark.slow


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True)
    return probe.returncode == 0


def test_a_full_disk_is_named_as_such_in_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if not _can_mount_tmpfs(mount):
        pytest.skip("needs `unshare` with user and mount namespaces to mount a small tmpfs")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    generate(TrafficSpec(visitors=300, days=2, seed=5, loads=1)).write_raw(data_dir / "raw")
    raw_bytes = sum(p.stat().st_size for p in (data_dir / "raw").rglob("*.parquet"))
    # Room for the raw files and a little more: the warehouse file cannot be written.
    size_kib = raw_bytes // 1024 + 512
    script = (f"mount -t tmpfs -o size={size_kib}k tmpfs {mount} && cp -a {data_dir} {mount}/data"
              f" && exec {sys.executable} -m littlestats load --data-dir {mount}/data")
    out = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "cannot rollback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("Error: load failed: no space left on the disk of")
    assert "(ENOSPC). Free some space, then run `littlestats load` again" in errors[0]


def test_a_held_warehouse_file_is_named_in_one_line(tmp_path: Path) -> None:
    """Another process holding the DuckDB file (not `serve`, which would do the load itself)."""
    import duckdb

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cli(data_dir, "load")  # creates the warehouse
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time;"
                               f" con = duckdb.connect({str(data_dir / 'warehouse.duckdb')!r});"
                               " print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        out = subprocess.run([sys.executable, "-m", "littlestats", "load", "--data-dir", str(data_dir)],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "LITTLESTATS_JOB_WAIT_SECONDS": "2"})
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 1 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the warehouse file is held by another process" in errors[0], out.stderr
    assert duckdb.__version__  # the lock message above is DuckDB's, quoted
