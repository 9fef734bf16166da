"""A private NATS server with JetStream (the broker of the live feed)."""

from __future__ import annotations

import functools
import json
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from cluster.engines.process import LOOPBACK, Engine, EngineError, free_port, log_tail, wait_until


class Nats(Engine):
    """A private NATS server with JetStream, its store in ``directory/jetstream``.
    ``url`` is ``nats://127.0.0.1:PORT``."""

    name = "nats"

    def __init__(self, directory: Path, *, port: int | None = None, max_memory: str = "256MB",
                 max_file: str = "2GB", tie_to_parent: bool = True) -> None:
        super().__init__(directory, tie_to_parent=tie_to_parent)
        self.port = port or 0
        self.max_memory = max_memory
        self.max_file = max_file

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def _start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            raise EngineError("nats-server is not installed (run scripts/cluster-engines)")
        fixed = bool(self.port)
        for _attempt in range(3):
            port = self.port if fixed else free_port()
            conf = self.dir / "nats.conf"
            name = f"littlestats-{secrets.token_hex(6)}"  # tells our server from another's
            conf.write_text(
                f'listen: "{LOOPBACK}:{port}"\n'
                f'server_name: "{name}"\n'
                "jetstream {\n"
                f'  store_dir: "{self.dir / "jetstream"}"\n'
                f"  max_memory_store: {self.max_memory}\n"
                f"  max_file_store: {self.max_file}\n"
                "}\n")
            proc = self._spawn("nats-server", [binary, "-c", str(conf)], self.log)
            try:
                wait_until(f"nats-server on {LOOPBACK}:{port}",
                           functools.partial(_nats_info, port, name),
                           timeout=30, log=self.log, processes=[proc])
            except EngineError:
                self.processes.remove(proc)
                proc.stop()
                if fixed or "address already in use" not in log_tail(self.log, 5).lower():
                    raise
                continue
            self.port = port
            return

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "port": self.port, "log": str(self.log)}


def _nats_info(port: int, server_name: str) -> bool:
    """Whether the NATS server ``server_name`` greets on ``port`` (``INFO {json}`` first)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
            s.settimeout(0.5)
            line = b""
            while not line.endswith(b"\r\n") and len(line) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                line += chunk
    except OSError:
        return False
    if not line.startswith(b"INFO "):
        return False
    return bool(json.loads(line[5:]).get("server_name") == server_name)
