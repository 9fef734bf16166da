"""A private PostgreSQL server (the shared catalog and the load leases)."""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any

from cluster.engines.process import (
    LOOPBACK,
    Engine,
    EngineError,
    disk_bytes,
    exits_zero,
    free_port,
    log_tail,
    run,
    wait_until,
)

PG_BIN_ROOT = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; run as root, its server runs as this (Debian's) user.
PG_SYSTEM_USER = "postgres"

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
    ``directory/home`` links to (removed by ``destroy()``; gone, too, when the system empties its
    temporary directory, and then the next start begins a new cluster).
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
            target = link.resolve()
            target.mkdir(mode=0o700, exist_ok=True)
            return target
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
            with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(self.password + "\n")
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
                           functools.partial(exits_zero, ready),
                           timeout=60, log=self.log, processes=[proc])
            except EngineError:
                self.processes.remove(proc)
                proc.stop()
                if fixed or "already in use" not in log_tail(self.log, 20):
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
