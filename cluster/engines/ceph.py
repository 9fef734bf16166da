"""A private Ceph cluster serving S3 (object storage for the raw events)."""

from __future__ import annotations

import functools
import json
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cluster.engines.process import (
    LOOPBACK,
    Engine,
    EngineError,
    Process,
    free_port,
    log_tail,
    run,
    wait_until,
)


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
        setup_log = self.log_of("setup")
        mon_data = self.dir / "mon" / "ceph-a"
        if fresh:  # nothing of a start that did not finish is kept
            for sub in ("mon", "osd", "rgw"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
                (self.dir / sub).mkdir()
            run(["ceph-authtool", "--create-keyring", str(self.dir / "keyring"), "--gen-key",
                 "-n", "mon.", "--cap", "mon", "allow *"], "ceph-authtool", setup_log)
        for attempt in range(3):
            self.mon_port = free_port()
            self._write_conf(state["fsid"])
            monmap = self.dir / "monmap"
            # A new monitor map every start: the monitor's port is chosen now.
            run(["monmaptool", "--create", "--clobber", "--fsid", state["fsid"],
                 "--addv", "a", f"[v2:{LOOPBACK}:{self.mon_port}]", "--enable-all-features",
                 "--set-min-mon-release", "pacific", str(monmap)], "monmaptool", setup_log)
            if not (mon_data / "store.db").exists():
                run(["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap",
                     str(monmap), "--keyring", str(self.dir / "keyring")], "ceph-mon --mkfs",
                    setup_log)
            else:
                run(["ceph-mon", "-c", str(self.conf), "-i", "a", "--inject-monmap", str(monmap)],
                    "ceph-mon --inject-monmap", setup_log)
            mon = self._spawn("ceph-mon", ["ceph-mon", "-c", str(self.conf), "-i", "a", "-f"],
                              self.log_of("mon.a.out"))
            if self._wait_or_retry(mon, attempt, f"ceph-mon on {LOOPBACK}:{self.mon_port}",
                                   functools.partial(self._answers, "mon", "stat"), 60,
                                   self.log_of("mon.a")):
                break

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

        for attempt in range(3):
            self.rgw_port = free_port()
            rgw = self._spawn("radosgw", [
                "radosgw", "-c", str(self.conf), "-n", "client.rgw.a", "-f",
                "--rgw-frontends", f"beast endpoint={LOOPBACK}:{self.rgw_port}"],
                self.log_of("rgw.out"))
            if self._wait_or_retry(rgw, attempt, f"radosgw on {LOOPBACK}:{self.rgw_port}",
                                   functools.partial(_http_answers, self.rgw_port), 120,
                                   self.log_of("rgw"), also=[mon, osd]):
                break
        if fresh:
            run(["radosgw-admin", "-c", str(self.conf), "-n", "client.admin", "user", "create",
                 f"--uid={self.user}", "--display-name=LittleStats",
                 f"--access-key={self.access_key}", f"--secret={self.secret_key}"],
                "radosgw-admin user create", setup_log)
            state_file.write_text(json.dumps(state))

    def _wait_or_retry(self, proc: Process, attempt: int, what: str, ready: Callable[[], bool],
                       timeout: float, log: Path, also: Sequence[Process] = ()) -> bool:
        """Wait for ``proc`` to answer: True when it does, False if it lost its port to another
        program (try another), or an error."""
        try:
            wait_until(what, ready, timeout=timeout, log=log, processes=[*also, proc],
                       interval=0.25)
            return True
        except EngineError:
            self.processes.remove(proc)
            proc.stop()
            lost_port = "address already in use" in (log_tail(log, 20) + log_tail(proc.log, 20)).lower()
            if attempt < 2 and lost_port:
                return False
            raise

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
