"""Private instances of the engines a cluster runs on: Ceph (S3), PostgreSQL and NATS.

For tests and for trying a cluster on one machine (``littlestats cluster engines``): each engine
lives in a directory of ours, listens on 127.0.0.1 on a port chosen when it starts (several runs
share a machine, so never a fixed one), and is ready when ``start()`` returns. ``stop()`` leaves
nothing running: every process of an engine is in a process group of its own, and the whole
group is killed. A production cluster runs the same engines as services (docs/cluster.md).

The Debian packages are installed by ``scripts/cluster-engines``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

LOOPBACK = "127.0.0.1"
PG_BIN_ROOT = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; run as root, its server runs as this (Debian's) user.
PG_SYSTEM_USER = "postgres"


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


def _tail(path: Path, lines: int = 15) -> str:
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
                              f"{_tail(self.log)}")

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
                              f"{_tail(log)}")
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


def _exits_zero(argv: Sequence[str]) -> bool:
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


# PostgreSQL ---------------------------------------------------------------------------------


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(PG_BIN_ROOT.glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise EngineError("PostgreSQL is not installed (run scripts/cluster-engines)")
    return found[-1].parent


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether user ``uid`` can walk down to ``path`` (every ancestor searchable for it)."""
    for parent in [*reversed(path.parents)]:
        st = parent.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


class Postgres(Engine):
    """A private PostgreSQL server: its own data directory and socket directory, TCP on 127.0.0.1,
    password authentication, one database. ``dsn`` is ``postgresql://USER:PW@127.0.0.1:PORT/DB``.

    PostgreSQL will not run as root: when we are root, the server runs as Debian's ``postgres``
    user, and if that user cannot reach ``directory`` (a private parent such as pytest's temporary
    folder) the cluster's files live in a folder under the system's temporary directory that
    ``directory/data`` links to (removed by ``destroy()``).
    """

    name = "postgres"

    def __init__(self, directory: Path, *, database: str = "littlestats", user: str = "littlestats",
                 port: int | None = None, tie_to_parent: bool = True) -> None:
        super().__init__(directory, tie_to_parent=tie_to_parent)
        self.database = database
        self.user = user
        self.port = port or 0
        self.password = ""

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def _run_as(self) -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _home(self) -> Path:
        """Where the server's own files live: ``dir`` if the server's user can reach it."""
        run_as = self._run_as()
        if run_as is None:
            return self.dir
        pw = pwd.getpwnam(run_as)
        if _reachable_by(self.dir, pw.pw_uid, pw.pw_gid):
            return self.dir
        link = self.dir / "home"
        if link.is_symlink():
            return link.resolve()
        outside = Path(tempfile.gettempdir()) / f"littlestats-pg-{secrets.token_hex(6)}"
        outside.mkdir(mode=0o700)
        link.symlink_to(outside)
        return outside

    def _start(self) -> None:
        bindir = pg_bin_dir()
        run_as = self._run_as()
        home = self._home()
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            os.chown(home, pw.pw_uid, pw.pw_gid)
        pgdata, sockets = home / "pgdata", home / "sockets"
        password_file = self.dir / "password"
        if not (pgdata / "PG_VERSION").exists():
            self.password = secrets.token_urlsafe(18)
            password_file.write_text(self.password)
            password_file.chmod(0o600)
            pwfile = home / "pwfile"
            pwfile.write_text(self.password + "\n")
            if run_as is not None:
                os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)
            try:
                run([str(bindir / "initdb"), "-D", str(pgdata), "-U", self.user, "-E", "UTF8",
                     "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
                     f"--pwfile={pwfile}", "--no-instructions"],
                    "initdb", self.log, user=run_as)
            finally:
                pwfile.unlink(missing_ok=True)
        else:
            self.password = password_file.read_text().strip()
        sockets.mkdir(exist_ok=True)
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            os.chown(sockets, pw.pw_uid, pw.pw_gid)
        fixed = bool(self.port)
        for _attempt in range(3):
            port = self.port if fixed else free_port()
            proc = self._spawn(
                "PostgreSQL",
                [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(port), "-k", str(sockets),
                 "-c", f"listen_addresses={LOOPBACK}", "-c", "shared_buffers=32MB",
                 "-c", "max_connections=100", "-c", "logging_collector=off"],
                self.log, user=run_as, stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
            # Through our own socket directory: a server of someone else's on the port says nothing.
            ready = [str(bindir / "pg_isready"), "-q", "-h", str(sockets), "-p", str(port)]
            try:
                wait_until(f"PostgreSQL on {LOOPBACK}:{port}",
                           functools.partial(_exits_zero, ready),
                           timeout=60, log=self.log, processes=[proc])
            except EngineError:
                self.processes.remove(proc)
                proc.stop()
                if fixed or "already in use" not in _tail(self.log, 5):
                    raise
                continue
            self.port = port
            break
        env = {**os.environ, "PGPASSWORD": self.password}
        exists = run([str(bindir / "psql"), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user,
                      "-d", "postgres", "-tA", "-v", f"db={self.database}"],
                     "PostgreSQL database lookup", self.log, env=env,
                     input="SELECT 1 FROM pg_database WHERE datname = :'db';\n")
        if exists.strip() != "1":
            self.create_database(self.database)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, underscores) and return its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and underscores only")
        run([str(pg_bin_dir() / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user,
             name], f"createdb {name}", self.log, env={**os.environ, "PGPASSWORD": self.password})
        return self.dsn_for(name)

    def destroy(self) -> None:
        link = self.dir / "home"
        outside = link.resolve() if link.is_symlink() else None
        super().destroy()
        if outside is not None:
            shutil.rmtree(outside, ignore_errors=True)

    def disk(self) -> int:
        link = self.dir / "home"
        return disk_bytes(self.dir) + (disk_bytes(link.resolve()) if link.is_symlink() else 0)

    def describe(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "port": self.port, "user": self.user, "password": self.password,
                "database": self.database, "log": str(self.log)}


# NATS ---------------------------------------------------------------------------------------


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
                if fixed or "address already in use" not in _tail(self.log, 5).lower():
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


# Ceph ---------------------------------------------------------------------------------------


class Ceph(Engine):
    """A private Ceph cluster serving S3: one monitor, one OSD whose store is a sparse file of
    ``osd_size`` bytes, and the RADOS gateway (RGW) on 127.0.0.1, with one S3 user.

    Authentication between the daemons is off (the whole cluster is on loopback; clients of RGW
    still sign their requests with the user's keys). ``endpoint``, ``access_key`` and
    ``secret_key`` are what an S3 client needs.
    """

    name = "ceph"

    def __init__(self, directory: Path, *, osd_size: int = 4 << 30, user: str = "littlestats",
                 tie_to_parent: bool = True) -> None:
        super().__init__(directory, tie_to_parent=tie_to_parent)
        self.osd_size = osd_size
        self.user = user
        self.mon_port = 0
        self.rgw_port = 0
        self.access_key = ""
        self.secret_key = ""
        self.region = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.rgw_port}"

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    def log_of(self, daemon: str) -> Path:
        return self.dir / "log" / f"{daemon}.log"

    def _write_conf(self, fsid: str) -> None:
        d = self.dir
        self.conf.write_text(f"""\
[global]
fsid = {fsid}
mon host = v2:{LOOPBACK}:{self.mon_port}
public addr = {LOOPBACK}
cluster addr = {LOOPBACK}
auth cluster required = none
auth service required = none
auth client required = none
# With authentication off, the monitor's client connections still need these modes.
ms mon client mode = crc secure
keyring = {d}/keyring
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
pid file =
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
[mon]
mon data = {d}/mon/$cluster-$id
mon cluster log file = {d}/log/cluster.log
[osd]
osd data = {d}/osd/$cluster-$id
osd objectstore = bluestore
bluestore block path = {d}/osd/$cluster-$id/block.file
bluestore block create = true
bluestore block size = {self.osd_size}
# A small machine's settings: the default aims at 4 GB of memory per OSD.
osd memory target = 536870912
bluestore cache autotune = false
bluestore cache size = 67108864
[client]
admin socket =
log file = {d}/log/client.log
[client.rgw.a]
rgw data = {d}/rgw
rgw frontends = beast endpoint={LOOPBACK}:{self.rgw_port}
admin socket = {d}/run/$name.asok
log file = {d}/log/rgw.log
""")

    def _ceph(self, *args: str, what: str = "ceph", timeout: float = 60.0) -> str:
        return run(["ceph", "-c", str(self.conf), "--connect-timeout", "30", *args], what,
                   self.log_of("setup"), timeout=timeout)

    def _start(self) -> None:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph"):
            if shutil.which(tool) is None:
                raise EngineError(f"{tool} is not installed (run scripts/cluster-engines)")
        for sub in ("log", "run", "mon", "osd", "rgw"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        state_file = self.dir / "state.json"
        fresh = not state_file.exists()
        if fresh:
            fsid = str(uuid.uuid4())
            state: dict[str, Any] = {"fsid": fsid, "osd_uuid": str(uuid.uuid4()),
                                     "access_key": secrets.token_hex(10).upper(),
                                     "secret_key": secrets.token_urlsafe(30)}
        else:
            state = json.loads(state_file.read_text())
        self.access_key, self.secret_key = state["access_key"], state["secret_key"]
        self.mon_port = free_port()
        self.rgw_port = free_port()
        self._write_conf(state["fsid"])
        setup_log = self.log_of("setup")
        monmap = self.dir / "monmap"
        # A new monitor map every start: the monitor's port is chosen now (an old map is replaced).
        run(["monmaptool", "--create", "--clobber", "--fsid", state["fsid"],
             "--addv", "a", f"[v2:{LOOPBACK}:{self.mon_port}]", "--enable-all-features",
             "--set-min-mon-release", "pacific", str(monmap)], "monmaptool", setup_log)
        mon_data = self.dir / "mon" / "ceph-a"
        if fresh:
            shutil.rmtree(mon_data, ignore_errors=True)
            run(["ceph-authtool", "--create-keyring", str(self.dir / "keyring"), "--gen-key",
                 "-n", "mon.", "--cap", "mon", "allow *"], "ceph-authtool", setup_log)
            run(["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                 "--keyring", str(self.dir / "keyring")], "ceph-mon --mkfs", setup_log)
        else:
            run(["ceph-mon", "-c", str(self.conf), "-i", "a", "--inject-monmap", str(monmap)],
                "ceph-mon --inject-monmap", setup_log)
        mon = self._spawn("ceph-mon", ["ceph-mon", "-c", str(self.conf), "-i", "a", "-f"],
                          self.log_of("mon.a.out"))
        wait_until(f"ceph-mon on {LOOPBACK}:{self.mon_port}",
                   functools.partial(self._answers, "mon", "stat"), timeout=60,
                   log=self.log_of("mon.a"), processes=[mon])

        if fresh:
            osd_id = self._ceph("osd", "new", state["osd_uuid"], what="ceph osd new").strip()
            state["osd_id"] = osd_id
            (self.dir / "osd" / f"ceph-{osd_id}").mkdir(exist_ok=True)
            run(["ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs",
                 "--osd-uuid", state["osd_uuid"]], "ceph-osd --mkfs", setup_log, timeout=180)
        osd_id = str(state["osd_id"])
        osd = self._spawn("ceph-osd", ["ceph-osd", "-c", str(self.conf), "-i", osd_id, "-f"],
                          self.log_of(f"osd.{osd_id}.out"))
        wait_until("ceph-osd", self._osd_up, timeout=120, log=self.log_of(f"osd.{osd_id}"),
                   processes=[mon, osd], interval=0.5)

        rgw = self._spawn("radosgw", ["radosgw", "-c", str(self.conf), "-n", "client.rgw.a", "-f"],
                          self.log_of("rgw.out"))
        wait_until(f"radosgw on {LOOPBACK}:{self.rgw_port}",
                   functools.partial(_http_answers, self.rgw_port), timeout=120,
                   log=self.log_of("rgw"), processes=[mon, osd, rgw], interval=0.25)
        if fresh:
            run(["radosgw-admin", "-c", str(self.conf), "-n", "client.admin", "user", "create",
                 f"--uid={self.user}", "--display-name=LittleStats",
                 f"--access-key={self.access_key}", f"--secret={self.secret_key}"],
                "radosgw-admin user create", setup_log)
            state_file.write_text(json.dumps(state))

    def _answers(self, *args: str) -> bool:
        done = subprocess.run(["ceph", "-c", str(self.conf), "--connect-timeout", "2", *args],
                              capture_output=True, check=False, timeout=30)
        return done.returncode == 0

    def _osd_up(self) -> bool:
        done = subprocess.run(["ceph", "-c", str(self.conf), "--connect-timeout", "5", "osd",
                               "stat", "-f", "json"], capture_output=True, check=False, timeout=30)
        if done.returncode != 0:
            return False
        stat_ = json.loads(done.stdout)
        return int(stat_.get("num_up_osds", 0)) >= 1

    @property
    def log(self) -> Path:
        return self.log_of("setup")

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "access_key": self.access_key,
                "secret_key": self.secret_key, "region": self.region,
                "log": str(self.dir / "log")}


def _http_answers(port: int) -> bool:
    """Whether an HTTP server answers ``GET /`` on ``port`` (any status)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as s:
            s.settimeout(2)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False
