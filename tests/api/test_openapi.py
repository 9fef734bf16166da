"""The OpenAPI document covers every route, and schemathesis finds no failure against a live server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.docs import openapi
from api.routes import ROUTES
from tests.api.conftest import AuthServer, wait_for_warehouse
from tests.server import cli, running_server


def test_document_covers_every_route() -> None:
    doc = openapi()
    for method, path in ROUTES:
        assert method.lower() in doc["paths"][path], (method, path)
    for path in ("/api/v2/track/{site}", "/api/v2/stats/{site}", "/api/v2/realtime/{site}"):
        assert path in doc["paths"]
    assert doc["openapi"].startswith("3.1")


@pytest.mark.slow
def test_docs_are_served(auth_server: AuthServer) -> None:
    r = httpx.get(f"{auth_server.url}/api/v2/openapi.json")
    assert r.status_code == 200 and r.json()["paths"]
    page = httpx.get(f"{auth_server.url}/api/v2/docs")
    assert page.status_code == 200 and "/api/v2/sites/{site}/timeseries" in page.text


@pytest.mark.slow
def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_server(data_dir, 2, env={"LITTLESTATS_SEGMENT_SECONDS": "1"}) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
            site = c.post("/api/v2/sites", json={"domain": "fuzz.example"}).json()
            c.post(f"/api/v2/sites/{site['id']}/goals", json={"kind": "event", "value": "Signup"})
            for i, kind in enumerate(["pageview", "pageview", "event"]):
                httpx.post(f"{srv.url}/api/v2/track/{site['domainKey']}", json={
                    "type": kind, "name": "Signup" if kind == "event" else None, "url": f"/p{i}",
                    "visitorId": f"v{i}", "data": {"plan": "pro"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"})
            wait_for_warehouse(c, site["id"])
        time.sleep(2)
        cli(data_dir, "load")
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.site" = "{site["id"]}"\n')
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
             f"{srv.url}/api/v2/openapi.json", "--url", srv.url,
             "-H", f"Authorization: Bearer {token}",
             "--max-examples", "12", "--workers", "2", "--seed", "1", "--phases", "examples,coverage,fuzzing",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance",
             "--exclude-path-regex", "/realtime/|/track/",
             "--exclude-method", "DELETE", "--generation-allow-x00", "false",
             "--request-timeout", "30"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if "AST constructor recursion depth mismatch" in out.stdout + out.stderr:
            # A SystemError CPython 3.11 raises now and then while hypothesis parses source in
            # schemathesis's two worker threads: a crash of the fuzzer itself, not an answer of
            # ours (it names no request). Its run is repeated once.
            out = subprocess.run(command, capture_output=True, text=True, timeout=600)
        print(out.stdout[-1500:])
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:] + srv.log()[-3000:]
