"""A newcomer's install: the wheel alone runs the server, and the README's Quick start works.

The wheel is built from this checkout and installed with no extras into a brand-new virtualenv
(through uv and its cache, so it takes seconds). Then:

* every module of every package in it is imported there — an import of a package only the ``dev``
  extra installs fails here;
* the wheel carries the data files the server serves;
* the README's set-up and Quick start commands are run as written, in a shell, with only the
  placeholders filled in (``DOMAIN_KEY``, ``SITE_ID``, and a free port for ``8000``): a README
  command that changes meaning or stops working fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("littlestats", "ingest", "warehouse", "api", "jobs", "tracker")

IMPORT_EVERY_MODULE = """
import importlib, importlib.util, json, pkgutil, sys
imported, failed = [], []
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    names = [top] + [m.name for m in pkgutil.walk_packages(package.__path__, top + ".")]
    for name in names:
        if name.endswith(".__main__"):
            continue  # runs the command line
        try:
            module = importlib.import_module(name)
        except BaseException as exc:
            failed.append(f"{name}: {exc!r}")
        else:
            imported.append([name, module.__file__])
dev_only = [n for n in ("pytest", "hypothesis", "playwright", "schemathesis", "mypy")
            if importlib.util.find_spec(n) is not None]
print(json.dumps({"imported": imported, "failed": failed, "dev_only": dev_only}))
"""


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: `pip install uv` (scripts/test installs it)")
    return uv


@dataclass
class Install:
    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _not_source(directory: str, names: list[str]) -> set[str]:
    """What a checkout holds besides its source: virtualenvs, build output, caches, data."""
    skip = {n for n in names if n.startswith(".") or n.endswith(".egg-info")
            or n in ("__pycache__", "node_modules")}
    if Path(directory) == ROOT:
        skip |= {"build", "dist", "data"} & set(names)
    return skip


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The wheel of this checkout, installed with no extras into a new virtualenv."""
    uv, base = _uv(), tmp_path_factory.mktemp("newcomer")
    # Built from a copy: setuptools keeps a build/ directory in the tree it builds, which could hold
    # modules deleted since, and two test processes building in one tree would trip over it.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_not_source)
    subprocess.run([uv, "build", "--wheel", "--quiet", "--out-dir", str(base / "dist"), str(source)],
                   check=True, timeout=600)
    (wheel,) = (base / "dist").glob("littlestats-*.whl")
    venv = base / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
                   check=True, timeout=600)
    return Install(wheel, venv)


def test_every_module_of_the_installed_packages_imports_without_the_dev_extra(
    install: Install, tmp_path: Path,
) -> None:
    # Run from an empty directory, so that nothing is imported from this checkout.
    run = subprocess.run([str(install.bin / "python"), "-c", IMPORT_EVERY_MODULE, *PACKAGES],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["dev_only"] == []  # the virtualenv really has no dev extra
    assert answer["failed"] == []
    sources = {str(p.relative_to(ROOT).with_suffix("")).replace("/", ".").removesuffix(".__init__")
               for top in PACKAGES for p in (ROOT / top).rglob("*.py")
               if p.name != "__main__.py" and (p.parent / "__init__.py").exists()}
    imported = {name for name, _ in answer["imported"]}
    assert sources <= imported, f"not in the wheel: {sorted(sources - imported)}"
    assert all(str(install.venv) in path for _, path in answer["imported"])


def test_the_wheel_carries_the_files_the_server_serves(install: Install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    assert "tracker/tracker.js" in names
    # every non-Python file a package's code opens by its own path
    for top in PACKAGES:
        for path in (ROOT / top).glob("*.py"):
            for found in re.findall(r'with_name\("([^"]+)"\)', path.read_text()):
                assert f"{top}/{found}" in names, f"{top}/{found}, opened by {path.name}, is not in the wheel"


def readme_blocks(heading: str) -> list[str]:
    """The commands of the first ``bash`` block under a README heading (continuations joined)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"README's '{heading}' has no bash block"
    return [c.strip() for c in block.group(1).replace("\\\n", " ").splitlines() if c.strip()]


class Shell:
    """Runs README commands with the fresh virtualenv activated, in a home of the test's own."""

    def __init__(self, install: Install, home: Path, port: int) -> None:
        self.install, self.home, self.port = install, home, port
        self.values: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        # what `. .venv/bin/activate` sets; the README's default data directory is in this home
        return {"PATH": f"{self.install.bin}:{os.environ['PATH']}", "VIRTUAL_ENV": str(self.install.venv),
                "HOME": str(self.home), "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": ""}

    def fill(self, command: str) -> str:
        command = command.replace("localhost:8000", f"localhost:{self.port}")
        if command.startswith("littlestats serve"):
            command = command.replace("littlestats serve", f"littlestats serve --port {self.port}", 1)
        for placeholder, value in self.values.items():
            command = command.replace(placeholder, value)
        return command

    def run(self, command: str) -> str:
        filled = self.fill(command)
        run = subprocess.run(["bash", "-c", filled], cwd=self.home, env=self.env(), capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, f"README command failed: {filled}\n{run.stdout}\n{run.stderr}"
        return run.stdout

    @contextmanager
    def serving(self, command: str) -> Iterator[subprocess.Popen[bytes]]:
        log = open(self.home / "serve.log", "wb")
        proc = subprocess.Popen(["bash", "-c", f"exec {self.fill(command)}"], cwd=self.home,
                                env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, f"`{command}` exited:\n{self.log()}"
                assert time.monotonic() < deadline, f"`{command}` did not answer:\n{self.log()}"
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals every process
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()

    def log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")


@pytest.fixture
def home() -> Iterator[Path]:
    """A home directory of the test's own, short enough for the Unix sockets under it (a socket's
    path is limited to about 100 bytes; pytest's own temporary directories are longer)."""
    with tempfile.TemporaryDirectory(prefix="ls-") as tmp:
        (Path(tmp) / "home").mkdir()
        yield Path(tmp) / "home"


def test_the_readme_quick_start_works_as_written(install: Install, home: Path) -> None:
    setup = readme_blocks("Set up on a fresh machine")
    # The install the fixture made with uv from the wheel is the one the README gives: plain
    # `pip install .`, no extras, no editable install.
    assert setup[0] == "python3 -m venv .venv && .venv/bin/pip install . && . .venv/bin/activate"
    serve = setup[1]
    assert serve == "littlestats serve --dev"
    quick = readme_blocks("Quick start")
    assert not any(c.startswith("littlestats serve") for c in quick)

    shell = Shell(install, home, free_port())
    data_dir = home / ".local" / "share" / "littlestats"  # the documented default
    seen: dict[str, str] = {}
    started = time.monotonic()
    with shell.serving(serve) as server:
        for command in quick:
            out = shell.run(command)
            words = shlex.split(command, comments=True)
            if words[:3] == ["littlestats", "sites", "add"]:
                site = json.loads(out)
                shell.values = {"SITE_ID": site["id"], "DOMAIN_KEY": site["domainKey"]}
                seen["site"] = out
            elif words[0] == "curl" and "/api/v2/track/" in command:
                assert json.loads(out)["success"] is True, out
                seen["beacon"] = out
            elif words[0] == "curl" and "/api/v2/stats/" in command:
                live = json.loads(out)
                if live["activeVisitors"] != 1:  # a person reads it a moment later; allow 5 s
                    deadline = time.monotonic() + 5
                    while live["activeVisitors"] != 1 and time.monotonic() < deadline:
                        time.sleep(0.2)
                        live = json.loads(shell.run(command))
                assert live["activeVisitors"] == 1 and live["hour"]["views"] == 1, live
                seen["live"] = out
            elif words[:2] == ["littlestats", "load"]:
                assert out.startswith("load: ") and " 1 new events" in out, out
                seen["load"] = out
            elif words[0] == "curl" and "/stats?" in command:
                stats = json.loads(out)
                assert "visitors" in stats, out
                assert (stats["visitors"], stats["views"], stats["visits"]) == (1, 1, 1), stats
                seen["stats"] = out
            elif words[0] == "curl" and "tracker.js" in command:
                assert re.match(r"HTTP/\S+ 200", out), out
                assert "javascript" in out.lower()
                body = httpx.get(f"http://127.0.0.1:{shell.port}/tracker.js").content
                assert body == (ROOT / "tracker" / "tracker.js").read_bytes()
                seen["tracker"] = out
        assert set(seen) == {"site", "beacon", "live", "load", "stats", "tracker"}, seen
        assert (data_dir / "warehouse.duckdb").exists()
        for path in ("/api/v2/openapi.json", "/api/v2/docs"):
            assert httpx.get(f"http://127.0.0.1:{shell.port}{path}").status_code == 200, path
        stop_at = time.monotonic()
    stopping = time.monotonic() - stop_at
    assert server.returncode == 0, shell.log()
    print(f"Quick start: {time.monotonic() - started:.1f} s, of which stopping {stopping:.1f} s")
    log = shell.log()
    assert "Traceback" not in log, log
    assert not (data_dir / "admin-token").exists()  # --dev makes none, and says why
    assert "no admin token is created" in log
    assert not (home / ".gunicorn").exists()
