"""Real engines for the cluster tests: PostgreSQL, NATS and Ceph (S3) on 127.0.0.1.

Each is started once per test run and shared by every test process of the run (pytest-xdist
workers): the first process that needs one starts a keeper (tests/cluster/engine_keeper.py) under
a file lock in the run's common temporary folder, and the others read how to reach it from the
keeper's state file. The keeper stops the engine when the run ends. ``cluster_settings`` gives a
node's settings for them, with a fresh bucket and catalog database per test.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = {"postgres": 90.0, "nats": 30.0, "ceph": 240.0}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_root(factory: pytest.TempPathFactory) -> Path:
    """The folder every process of this run shares (xdist workers each have their own basetemp
    inside it)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _run_pid() -> int:
    """The run's main pytest process: an xdist worker's parent, or this process."""
    return os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()


def shared_engine(kind: str, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """How to reach this run's one ``kind`` engine, starting it if no process has yet."""
    root = _run_root(factory) / "engines"
    root.mkdir(exist_ok=True)
    state = root / f"{kind}.json"
    with open(root / f"{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others wait here, then read the state
        if state.exists():
            info = json.loads(state.read_text())
            if _alive(int(info["keeper"])) and "error" not in info:
                return info
            state.unlink()
        log = root / f"{kind}-keeper.log"
        with open(log, "ab") as out:
            keeper = subprocess.Popen(
                [sys.executable, "-m", "tests.cluster.engine_keeper", kind, str(root / kind),
                 str(state), str(_run_pid())],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT[kind]
        while not state.exists():
            if keeper.poll() is not None or time.monotonic() > deadline:
                keeper.kill()
                pytest.fail(f"the {kind} engine did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        info = json.loads(state.read_text())
        if "error" in info:
            pytest.fail(f"the {kind} engine did not start: {info['error']}")
        return info


@dataclass(frozen=True)
class RunningPostgres:
    dsn: str
    port: int
    user: str
    password: str
    database: str
    log: str

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (a unique name unless given); its DSN."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)


@dataclass(frozen=True)
class RunningNats:
    url: str
    port: int
    log: str


@dataclass(frozen=True)
class RunningCeph:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    log: str

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (a unique name unless given); its name."""
        from cluster.s3 import ensure_bucket

        name = name or f"test-{secrets.token_hex(6)}"
        ensure_bucket(self.endpoint, name, self.access_key, self.secret_key, self.region)
        return name


def _fields(cls: type, info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in cls.__dataclass_fields__}  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> RunningPostgres:
    """This run's PostgreSQL (DSN of a database ``littlestats``; make more with create_database)."""
    return RunningPostgres(**_fields(RunningPostgres, shared_engine("postgres", tmp_path_factory)))


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> RunningNats:
    """This run's NATS server with JetStream."""
    return RunningNats(**_fields(RunningNats, shared_engine("nats", tmp_path_factory)))


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> RunningCeph:
    """This run's Ceph: a monitor, an OSD and the RADOS gateway's S3 endpoint, with a user."""
    return RunningCeph(**_fields(RunningCeph, shared_engine("ceph", tmp_path_factory)))


@pytest.fixture
def cluster_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``cluster_settings(node_name="n1", *, s3=True, catalog=True, broker=True, **more)``: a
    cluster node's settings (``littlestats.config.Settings`` fields) for this run's engines.

    Every node of one test shares one fresh bucket and one fresh catalog database (unique names,
    so tests never see each other's objects or tables); each node has its own data directory
    under the test's tmp_path. Only the engines asked for are started.
    """
    shared: dict[str, str] = {}

    def make(node_name: str = "n1", *, s3: bool = True, catalog: bool = True, broker: bool = True,
             **more: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {"node_name": node_name, "data_dir": tmp_path / node_name}
        if s3:
            ceph: RunningCeph = request.getfixturevalue("ceph")
            if "bucket" not in shared:
                shared["bucket"] = ceph.create_bucket()
            settings.update(s3_endpoint=ceph.endpoint, s3_bucket=shared["bucket"], s3_prefix="",
                            s3_region=ceph.region, s3_access_key=ceph.access_key,
                            s3_secret_key=ceph.secret_key)
        if catalog:
            pg: RunningPostgres = request.getfixturevalue("postgres")
            if "dsn" not in shared:
                shared["dsn"] = pg.create_database()
            settings["catalog_dsn"] = shared["dsn"]
        if broker:
            settings["broker_url"] = request.getfixturevalue("nats").url
        settings.update(more)
        return settings

    return make
