"""Operating it: configuration, dev-mode safety, structured logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from littlestats.config import ConfigError, load_settings
from tests.server import running_server


def test_settings_come_from_file_then_environment_then_options(tmp_path: Path) -> None:
    (tmp_path / "littlestats.toml").write_text('port = 9000\nworkers = 3\ntrusted_proxies = ["10.0.0.0/8"]\n')
    env = {"LITTLESTATS_WORKERS": "4"}
    s = load_settings({"data_dir": tmp_path, "workers": None}, environ=env)
    assert (s.port, s.workers, s.trusted_proxies) == (9000, 4, ("10.0.0.0/8",))
    assert load_settings({"data_dir": tmp_path, "workers": 5}, environ=env).workers == 5


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LITTLESTATS_PORT": "http"}, "setting 'port'"),
        ({"LITTLESTATS_TRUSTED_PROXIES": "not-a-network"}, "trusted_proxies"),
        ({"LITTLESTATS_LOG_FORMAT": "xml"}, "log_format"),
        ({"LITTLESTATS_GEOIP_MMDB": "/nonexistent.mmdb"}, "geoip_mmdb"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"data_dir": tmp_path}, environ=environ)


def test_dev_mode_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "littlestats", "serve", "--dev", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "only listens on loopback" in out.stderr


@pytest.mark.slow
def test_json_logs_are_one_object_per_line(data_dir: Path) -> None:
    with running_server(data_dir, 2, "--dev", env={"LITTLESTATS_LOG_FORMAT": "json"}) as server:
        pass
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "pid", "message"} <= set(records[0])
    assert any(r["logger"].startswith("gunicorn") for r in records)


@pytest.mark.slow
def test_warehouse_process_runs_at_background_priority(data_dir: Path) -> None:
    with running_server(data_dir, 1, "--dev") as server:
        assert server.proc is not None
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        daemons = [int(pid) for pid in children if b"jobs.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        workers = [int(pid) for pid in children if int(pid) not in daemons]
        assert daemons and workers
        assert os.getpriority(os.PRIO_PROCESS, daemons[0]) == os.getpriority(os.PRIO_PROCESS, workers[0]) + 10
