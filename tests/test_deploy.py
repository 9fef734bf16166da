"""The deployment files in ``deploy/`` work as documented: a real nginx and a real Caddy in front of
a real ``littlestats serve``, the systemd unit checked by systemd's own verifier, and the
configuration reference in ``docs/operations.md`` complete.

The proxies run as foreground processes of the test (no system service), on free loopback ports,
with configs made from the committed files by substituting ports and paths; each substitution must
match, so a changed deploy file fails here instead of being silently left untested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from websockets.sync.client import connect

from littlestats.config import ENV_PREFIX, Settings, load_settings
from tests.realtime.clients import CHROME, Collector
from tests.server import LiveServer, _end_with_parent, add_site, free_port, running_server

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OPERATIONS = ROOT / "docs" / "operations.md"

# An address whose country the bundled IP database knows (JP), standing for a visitor on the
# internet; the test client itself connects from 127.0.0.1.
VISITOR_IP = "133.242.0.3"
VISITOR_COUNTRY = "JP"


def substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    """``text`` with each ``old`` replaced, insisting that each occurs."""
    for old, new in replacements:
        assert old in text, f"deploy file no longer contains {old!r}: update tests/test_deploy.py"
        text = text.replace(old, new)
    return text


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"proxy did not listen on {port}:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def beacon(base: str, key: str, page: str, verify: Any = True, **headers: str) -> None:
    r = httpx.post(f"{base}/api/v2/track/{key}", json={"url": f"https://example.com{page}"},
                   headers={"User-Agent": CHROME, **headers}, verify=verify, timeout=10)
    assert r.status_code == 200, r.text


@dataclasses.dataclass
class Backend:
    server: LiveServer
    key: str


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """``littlestats serve`` trusting the proxy on 127.0.0.1, as docs/operations.md says to set it."""
    data_dir = tmp_path_factory.mktemp("deploy") / "data"
    data_dir.mkdir()
    key = add_site(data_dir)["domainKey"]
    env = {"LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32,::1/128"}
    with running_server(data_dir, 2, "--dev", env=env) as server:
        server.wait_ready()
        yield Backend(server, key)


# --- nginx -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Nginx:
    https: str
    http: str
    tls: ssl.SSLContext  # trusts the test's self-signed certificate


class Stream(Collector):
    """An SSE reader on a thread, trusting ``tls`` (the test's certificate) for https."""

    def __init__(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.status: int | None = None
        self.content_type = ""
        self._stop = False
        self.started = threading.Event()
        threading.Thread(target=self._run, args=(url, tls or True), daemon=True).start()
        assert self.started.wait(10), "the stream did not open"

    def _run(self, url: str, verify: ssl.SSLContext | bool) -> None:
        try:
            with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}, verify=verify,
                              timeout=httpx.Timeout(10, read=60)) as r:
                self.status, self.content_type = r.status_code, r.headers.get("content-type", "")
                self.started.set()
                data: list[str] = []
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and data:
                        self.add(json.loads("\n".join(data)))
                        data = []
        except BaseException as exc:  # surfaced by wait_for
            if not self._stop:
                self.error = exc
        finally:
            self.started.set()
            self.closed.set()

    def close(self) -> None:
        self._stop = True


@pytest.fixture(scope="module")
def nginx(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("nginx is not installed (scripts/test installs it from Debian)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the test needs it to make a certificate")
    prefix = tmp_path_factory.mktemp("nginx")
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    https_port, http_port = free_port(), free_port()
    site = substitute((DEPLOY / "nginx.conf").read_text(), [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{backend.server.port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("/etc/letsencrypt/live/stats.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/stats.example.com/privkey.pem", str(key)),
    ])
    (prefix / "littlestats.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        + "events { worker_connections 1024; }\n"
        + f"http {{\n    access_log {prefix}/access.log;\n{temp}\n    include {prefix}/littlestats.conf;\n}}\n"
    )
    args = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    log = prefix / "error.log"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_end_with_parent)
    try:
        wait_for_port(https_port, proc, log)
        wait_for_port(http_port, proc, log)
        yield Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}",
                    ssl.create_default_context(cafile=str(cert)))
    finally:
        stop(proc)


def first_event(client: Collector, page: str, timeout: float) -> dict[str, Any]:
    client.wait_for(lambda c: any(e["page"] == page for e in c.events()), timeout=timeout)
    return next(e for e in client.events() if e["page"] == page)


@pytest.mark.slow
def test_nginx_passes_the_visitors_address_so_the_country_is_theirs(backend: Backend, nginx: Nginx) -> None:
    # nginx appends the address it sees (127.0.0.1, trusted) to the X-Forwarded-For it received
    # (as from a CDN in front); LittleStats takes the right-most untrusted address.
    stream = Stream(f"{backend.server.url}/api/v2/realtime/{backend.key}")
    try:
        stream.wait_for(lambda c: bool(c.of_type("stats_update")))
        for page, headers in (("/from-visitor", {"X-Forwarded-For": VISITOR_IP}), ("/no-header", {})):
            beacon(nginx.https, backend.key, page, nginx.tls, **headers)
        assert first_event(stream, "/from-visitor", 10)["country"] == VISITOR_COUNTRY
        # Without the header the client is the proxy's peer, 127.0.0.1: no country.
        assert first_event(stream, "/no-header", 10)["country"] is None
    finally:
        stream.close()


@pytest.mark.slow
def test_an_sse_stream_through_nginx_delivers_each_event_within_a_second(backend: Backend, nginx: Nginx) -> None:
    stream = Stream(f"{nginx.https}/api/v2/realtime/{backend.key}?page=/sse-*", nginx.tls)
    try:
        assert stream.status == 200, stream.messages
        assert stream.content_type.startswith("text/event-stream")
        stream.wait_for(lambda c: bool(c.of_type("stats_update")))
        delays = []
        for n in range(5):
            page = f"/sse-{n}"
            sent = time.monotonic()
            beacon(nginx.https, backend.key, page, nginx.tls)
            first_event(stream, page, 5)
            delays.append(time.monotonic() - sent)
        assert max(delays) < 1.0, delays
    finally:
        stream.close()


@pytest.mark.slow
def test_a_websocket_through_nginx_is_upgraded_and_gets_events(backend: Backend, nginx: Nginx) -> None:
    url = nginx.https.replace("https://", "wss://") + f"/api/v2/realtime/{backend.key}?page=/ws"
    with connect(url, ssl=nginx.tls, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "stats_update"
        beacon(nginx.https, backend.key, "/ws", nginx.tls)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "event":
                assert message["event"]["page"] == "/ws"
                return
        raise AssertionError("no event over the WebSocket")


@pytest.mark.slow
def test_nginx_keeps_metrics_private_and_redirects_plain_http(backend: Backend, nginx: Nginx) -> None:
    assert httpx.get(f"{nginx.https}/metrics", verify=nginx.tls).status_code == 404
    direct = httpx.get(f"{backend.server.url}/metrics")
    assert direct.status_code == 200 and "littlestats_events_accepted_total" in direct.text
    assert httpx.get(f"{nginx.https}/readyz", verify=nginx.tls).json()["status"] == "ready"
    plain = httpx.get(f"{nginx.http}/api/v2/stats/{backend.key}")
    assert plain.status_code == 308
    assert plain.headers["location"].startswith("https://127.0.0.1")


@pytest.mark.slow
def test_an_oversized_beacon_through_nginx_gets_littlestats_413_naming_the_limit(backend: Backend, nginx: Nginx) -> None:
    body = json.dumps({"url": "https://example.com/", "props": {"x": "y" * 100_000}})
    r = httpx.post(f"{nginx.https}/api/v2/track/{backend.key}", content=body, verify=nginx.tls,
                   headers={"User-Agent": CHROME, "Content-Type": "text/plain"})
    assert r.status_code == 413
    assert "limit" in r.json()["error"]


# --- Caddy -------------------------------------------------------------------------------------


def caddy_binary() -> str:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.skip("caddy is not installed (scripts/test installs it from Debian, which has it since 12)")
    return binary


def caddy_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config")}


@pytest.mark.slow
def test_caddyfile_is_valid(tmp_path: Path) -> None:
    binary = caddy_binary()
    out = subprocess.run([binary, "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
                         capture_output=True, text=True, env=caddy_env(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_caddy_streams_at_once_keeps_metrics_private_and_replaces_forged_addresses(
    backend: Backend, tmp_path: Path
) -> None:
    binary = caddy_binary()
    port = free_port()
    config = substitute((DEPLOY / "Caddyfile").read_text(), [
        ("{\n\temail admin@example.com\n}", "{\n\tadmin off\n\tauto_https off\n}"),
        ("stats.example.com {", f"http://127.0.0.1:{port} {{"),
        ("reverse_proxy 127.0.0.1:8000 {", f"reverse_proxy 127.0.0.1:{backend.server.port} {{"),
    ])
    (tmp_path / "Caddyfile").write_text(config)
    log = tmp_path / "caddy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "run", "--adapter", "caddyfile", "--config", str(tmp_path / "Caddyfile")],
                                stdout=out, stderr=subprocess.STDOUT, env=caddy_env(tmp_path),
                                preexec_fn=_end_with_parent)
    try:
        wait_for_port(port, proc, log)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/metrics").status_code == 404
        stream = Stream(f"{base}/api/v2/realtime/{backend.key}?page=/caddy-*")
        try:
            assert stream.status == 200
            stream.wait_for(lambda c: bool(c.of_type("stats_update")))
            sent = time.monotonic()
            # Caddy sets X-Forwarded-For to the address that connected to it (not trusted by
            # Caddy), so a client cannot choose its country by sending the header itself.
            beacon(base, backend.key, "/caddy-1", **{"X-Forwarded-For": VISITOR_IP})
            event = first_event(stream, "/caddy-1", 5)
            assert time.monotonic() - sent < 1.0
            assert event["country"] is None
        finally:
            stream.close()
    finally:
        stop(proc)


# --- systemd -----------------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit's sections as (key, value) lists; keys may repeat (``Environment=``)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} is outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in unit_entries(DEPLOY / "littlestats.service")["Service"]:
        values.setdefault(key, []).append(value)
    return values


def test_unit_runs_the_installed_console_script_as_a_hardened_service() -> None:
    s = service()
    command = shlex.split(s["ExecStart"][0])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(command[0]).name in scripts and command[1] == "serve"
    assert Path(command[0]).parent.name == "bin", "the console script of a virtualenv: <venv>/bin/littlestats"
    # pip puts that script next to the interpreter, as it did for this test's install.
    assert (Path(sys.executable).parent / Path(command[0]).name).exists()

    environment = dict(e.split("=", 1) for v in s["Environment"] for e in shlex.split(v))
    data_dir = "/var/lib/" + s["StateDirectory"][0]
    assert environment["LITTLESTATS_DATA_DIR"] == data_dir
    assert data_dir in s["ReadWritePaths"][0].split()
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("Restart", "on-failure"),
                       ("KillMode", "mixed")):
        assert s[key] == [value], key
    assert s["User"] and s["User"][0] != "root"
    assert int(s["LimitNOFILE"][0]) >= 65536
    assert s["EnvironmentFile"][0].lstrip("-").startswith("/etc/")
    # serve stops its workers (20 s), the warehouse process (30 s) and the live service (10 s).
    assert int(s["TimeoutStopSec"][0]) >= 60
    # The unit's settings are settings LittleStats knows.
    load_settings({"data_dir": "/nonexistent"}, environ={k: v for k, v in environment.items()
                                                       if k != "LITTLESTATS_DATA_DIR"})


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    installed = Path(sys.executable).parent / "littlestats"
    unit = tmp_path / "littlestats.service"
    text = (DEPLOY / "littlestats.service").read_text()
    command = shlex.split(service()["ExecStart"][0])[0]
    unit.write_text(text.replace(command, str(installed)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if "littlestats.service" in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


@pytest.mark.slow
def test_the_units_command_and_environment_serve_and_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    """What systemd would run, short of systemd: the console script, the unit's and the example
    file's environment (data directory and port moved into the test's), SIGTERM to the main
    process alone as ``KillMode=mixed`` sends it; within ``TimeoutStopSec`` everything has exited
    and every accepted event is in Parquet."""
    s = service()
    env = {**os.environ}
    env.update(dict(e.split("=", 1) for v in s["Environment"] for e in shlex.split(v)))
    env.update(dict(line.split("=", 1) for line in (DEPLOY / "littlestats.env").read_text().splitlines()
                    if line.strip() and not line.startswith("#")))
    data_dir, port = tmp_path / "data", free_port()
    env.update({"LITTLESTATS_DATA_DIR": str(data_dir), "LITTLESTATS_PORT": str(port)})
    data_dir.mkdir()
    key = add_site(data_dir)["domainKey"]
    command = [str(Path(sys.executable).parent / "littlestats"), *shlex.split(s["ExecStart"][0])[1:]]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_end_with_parent)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for n in range(20):
            beacon(base, key, f"/unit-{n}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=int(s["TimeoutStopSec"][0]))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left after the stop: {left}"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records and all({"ts", "level", "message"} <= set(r) for r in records)
    assert not [p for p in (data_dir / "wal").iterdir() if p.suffix in (".seg", ".closed")]
    pages = duckdb.execute("SELECT count(*) FROM read_parquet(?) WHERE pathname LIKE '/unit-%'",
                           [f"{data_dir}/raw/**/*.parquet"]).fetchone()
    assert pages == (20,)


def test_example_environment_file_holds_only_known_settings() -> None:
    lines = [line for line in (DEPLOY / "littlestats.env").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    environ = dict(line.split("=", 1) for line in lines)
    assert environ and all(k.startswith(ENV_PREFIX) for k in environ)
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {k[len(ENV_PREFIX):].lower() for k in environ} <= fields
    load_settings({"data_dir": "/nonexistent"}, environ=environ)


# --- the configuration reference ---------------------------------------------------------------


def documented_settings() -> dict[str, tuple[str, str]]:
    """Rows of the settings table in docs/operations.md: name → (environment variable, default)."""
    rows = {}
    for line in OPERATIONS.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \| `(\w+)` \| (.*?) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def shown_default(value: Any) -> str:
    """A default as the table shows it: TOML syntax in backticks."""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def test_operations_doc_lists_every_setting_with_its_variable_and_default() -> None:
    rows = documented_settings()
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(rows) == set(fields), "docs/operations.md's settings table and Settings differ"
    for name, field in fields.items():
        variable, default = rows[name]
        assert variable == ENV_PREFIX + name.upper()
        if field.default is not dataclasses.MISSING:
            assert default == shown_default(field.default), name
