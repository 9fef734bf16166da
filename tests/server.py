"""A real ``littlestats serve`` on loopback for end-to-end tests (no mocks of our components)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, however it dies (a CI
    timeout, kill -9), so a server in its own session is never left running and skewing later
    runs. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a ``littlestats`` command against ``data_dir`` and return its standard output."""
    out = subprocess.run(
        [sys.executable, "-m", "littlestats", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return out.stdout


def add_site(data_dir: Path, domain: str = "example.com", *extra: str) -> dict[str, Any]:
    return json.loads(cli(data_dir, "sites", "add", domain, *extra))


def session_pids(leader: int) -> list[int]:
    """Every process of the session ``leader`` started (a server's master, workers, helpers)."""
    out = subprocess.run(["pgrep", "-s", str(os.getpgid(leader))], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


@dataclass
class LiveServer:
    data_dir: Path
    port: int
    workers: int
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "littlestats", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_end_with_parent,  # only a prctl() call: safe between fork and exec
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"littlestats serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"littlestats serve did not become healthy:\n{self.log()}")

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until ``/readyz`` says every part is up (the warehouse process and the live
        service start a few seconds after the workers answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).json().get("status") == "ready":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"littlestats serve did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def worker_pids(self) -> list[int]:
        """PIDs of the gunicorn workers (children of the master running in our session; not the
        warehouse process nor the live service)."""
        assert self.proc is not None
        pids = []
        for pid in session_pids(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if pid != self.proc.pid and b"jobs.daemon" not in cmdline and b"api.live_service" not in cmdline:
                pids.append(pid)
        return pids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill_all(self) -> None:
        """``kill -9`` every process of the server: master, workers, warehouse process."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextmanager
def running_server(data_dir: Path, workers: int = 2, *args: str, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    server = LiveServer(data_dir, free_port(), workers, tuple(args), env or {})
    server.start()
    try:
        yield server
    finally:
        server.stop()
