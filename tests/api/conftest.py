from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server import LiveServer, cli, running_server


@dataclass
class AuthServer:
    """A real `littlestats serve` with authentication on, an admin and a second user."""

    server: LiveServer
    admin_token: str
    other_token: str
    site: dict  # owned by the admin

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def wait_for_warehouse(client: httpx.Client, site_id: str, timeout: float = 60) -> None:
    """Block until the server's warehouse process answers (it starts a few seconds after HTTP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/api/v2/health/{site_id}").json().get("warehouse") == "ok":
            return
        time.sleep(0.2)
    raise RuntimeError("the warehouse process did not start")


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    data_dir: Path = tmp_path_factory.mktemp("auth") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        admin = (data_dir / "admin-token").read_text().strip()
        other = cli(data_dir, "token", "create", "--user", "other@example.com").strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {admin}"}) as c:
            site = c.post("/api/v2/sites", json={"domain": "owned.example", "timezone": "Europe/Berlin"}).json()
            wait_for_warehouse(c, site["id"])
        yield AuthServer(srv, admin, other, site)
