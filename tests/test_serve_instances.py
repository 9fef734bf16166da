"""Several servers on one host keep out of each other's way; ``--dev`` makes no admin token."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.server import add_site, running_server

pytestmark = pytest.mark.slow


def test_two_servers_start_side_by_side_and_keep_their_sockets_in_their_data_dirs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # gunicorn's own default for its control socket is $XDG_RUNTIME_DIR or ~/.gunicorn, one per
    # user: a home of the test's own shows whether either server goes there.
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    first, second = tmp_path / "one", tmp_path / "two"
    with running_server(first, 1, "--dev", env=env) as one, \
            running_server(second, 1, "--dev", env=env) as two:
        for server, data_dir in ((one, first), (two, second)):
            site = add_site(data_dir, f"{data_dir.name}.example")
            answer = httpx.post(f"{server.url}/api/v2/track/{site['domainKey']}",
                                json={"url": f"https://{data_dir.name}.example/"},
                                headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"})
            assert answer.status_code in (200, 202), answer.text
            control = data_dir / "run" / "gunicorn.ctl"
            assert stat.S_ISSOCK(control.stat().st_mode)
            assert stat.S_IMODE(control.stat().st_mode) == 0o600
        assert "Failed to start control socket" not in one.log() + two.log()
    assert not (home / ".gunicorn").exists()
    assert os.listdir(home) == []


def test_dev_mode_creates_no_admin_token_and_says_why(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, 1, "--dev") as server:
        assert httpx.get(f"{server.url}/api/v2/sites").status_code == 200  # auth is off
    assert not (data_dir / "admin-token").exists()
    assert "no admin token is created" in server.log()


def test_a_data_dir_too_long_for_the_sockets_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 100)
    run = subprocess.run([sys.executable, "-m", "littlestats", "serve", "--dev", "--port", "1",
                          "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "too long for the server's sockets" in run.stderr and "shorter --data-dir" in run.stderr
    assert "Traceback" not in run.stderr
