"""What every engine shares: its processes in a group of their own, writing to a log file; free
loopback ports; waiting until an engine answers; the start/stop/context-manager shape."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

LOOPBACK = "127.0.0.1"


class EngineError(RuntimeError):
    """An engine would not install, start or answer; the message names its log file."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: its own session (so its group can be killed as one), and SIGTERM
    when the process that started it dies, so a crashed test run leaves no engine behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """One engine process, in a session (and process group) of its own, writing to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, user: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 tie_to_parent: bool = True, stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.log = log
        self.stop_signal = stop_signal
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file: IO[bytes] = open(log, "ab")  # closed in stop()
        extra: dict[str, Any] = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            extra.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=cwd,
            preexec_fn=_die_with_parent if tie_to_parent else None, **extra)
        self.pgid = self.popen.pid  # start_new_session: the leader's pid is the group's id

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        """Raise if the process has exited (it should be serving)."""
        code = self.popen.poll()
        if code is not None:
            raise EngineError(f"{self.name} exited with status {code}; its log {self.log}:\n"
                              f"{log_tail(self.log)}")

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the process to stop, wait, then kill its whole process group."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)  # helpers it forked, or a server that hung
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self._log_file.close()


def wait_until(what: str, ready: Callable[[], bool], *, timeout: float, log: Path,
               processes: Sequence[Process] = (), interval: float = 0.1) -> float:
    """Poll ``ready`` until true; seconds taken. Fails early if a process exits, and names ``log``."""
    start = time.monotonic()
    while True:
        for p in processes:
            p.check()
        if ready():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise EngineError(f"{what} did not answer within {timeout:.0f} s; see its log {log}:\n"
                              f"{log_tail(log)}")
        time.sleep(interval)


def run(argv: Sequence[str], what: str, log: Path, *, user: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 120.0,
        input: str | None = None) -> str:
    """Run a setup command to completion; its output is appended to ``log`` and returned."""
    extra: dict[str, Any] = {}
    if user is not None:
        pw = pwd.getpwnam(user)
        extra.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout,
                              input=input, check=False, **extra)
    except FileNotFoundError as exc:
        raise EngineError(f"{what}: {argv[0]} is not installed (run scripts/cluster-engines)") from exc
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{what}: {' '.join(argv)} took over {timeout:.0f} s; see {log}") from exc
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise EngineError(f"{what} failed (status {done.returncode}): {' '.join(argv)}\n"
                          f"{(done.stderr or done.stdout).strip()[-2000:]}\n(log: {log})")
    return done.stdout


def exits_zero(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), check=False, capture_output=True).returncode == 0


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of these processes and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def disk_bytes(path: Path) -> int:
    """Bytes of disk actually used under ``path`` (sparse files count what they hold)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class Engine:
    """Start/stop and context manager for one engine in ``directory``."""

    name = "engine"

    def __init__(self, directory: Path, *, tie_to_parent: bool = True) -> None:
        self.dir = Path(directory).resolve()
        self.tie_to_parent = tie_to_parent
        self.processes: list[Process] = []
        self.start_seconds = 0.0

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.log"

    def start(self) -> Self:
        self.dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process of the engine (in reverse order of start); the data stays."""
        while self.processes:
            self.processes.pop().stop()

    def destroy(self) -> None:
        """Stop, and remove the engine's data."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def running(self) -> bool:
        return bool(self.processes) and all(p.running() for p in self.processes)

    def rss(self) -> int:
        return rss_bytes([p.pid for p in self.processes])

    def disk(self) -> int:
        return disk_bytes(self.dir)

    def describe(self) -> dict[str, Any]:
        """How clients reach the engine (JSON-able), and its log file."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _spawn(self, name: str, argv: Sequence[str], log: Path, **kwargs: Any) -> Process:
        p = Process(name, argv, log, tie_to_parent=self.tie_to_parent, **kwargs)
        self.processes.append(p)
        return p
