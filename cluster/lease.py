"""Load leases in PostgreSQL, and the fence that makes a lost lease harmless.

A cluster has one loader at a time. Every node's load job asks for the lease ``load`` in the
table ``littlestats_leases`` of the catalog's PostgreSQL database (``settings.catalog_dsn``); the
node that gets it loads, renews it in the background every third of its time to live, and the
others try again at their next load time. A lease that is not renewed (its node was killed,
stopped, or cut off from PostgreSQL) expires, and the next node to ask takes it over.

Every acquisition hands out a **fencing token**, one more than the lease's last one: tokens only
grow, whoever holds the lease. A holder can lose its lease without knowing it in time (a long
pause between two statements), so expiry alone cannot keep two loaders apart. The token does:
every load transaction first writes its token into the lake's ``lease_fence`` table
(``fence``), in the same transaction as the load's rows. It refuses to commit when the fence
already holds a larger token, and two transactions that both write the fence row conflict in
the catalog, so only one of them commits. A new holder commits its token at once (``claim``);
from then on nothing a former holder had under way can commit.

One lease for the whole load, not one per site: a load transaction deletes and rewrites rows of
every fact and pre-aggregate table and of the ``loaded_files`` manifest, and the catalog detects
conflicts per table, not per row. Two loaders of different sites would conflict at every commit
and one would redo its work, so per-site leases would only add retries.

Times are the PostgreSQL server's (``now()``), so node clocks need not agree. A holder counts
its lease lost at its own deadline, measured on its monotonic clock from the moment it *sent*
the acquiring or renewing statement: the server's expiry is never earlier than that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import psycopg

    from littlestats.config import Settings

log = logging.getLogger("littlestats.cluster.lease")

#: The lease every cluster node's load job takes.
LOAD_LEASE = "load"

#: Seconds a connection attempt to PostgreSQL may take.
CONNECT_TIMEOUT = 5

_CREATE = """
CREATE TABLE IF NOT EXISTS littlestats_leases (
    name text PRIMARY KEY,
    holder text,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
)"""

# One statement: a new lease row, or a free or expired one taken over with the next token.
# A live lease (held and not expired) is left alone and nothing is returned.
_ACQUIRE = """
INSERT INTO littlestats_leases AS l (name, holder, token, acquired_at, renewed_at, expires_at)
VALUES (%(name)s, %(holder)s, 1, now(), now(), now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder, token = l.token + 1, acquired_at = now(),
        renewed_at = now(), expires_at = excluded.expires_at
    WHERE l.holder IS NULL OR l.expires_at <= now()
RETURNING token, expires_at"""

# Only the holder with this token, before expiry: an expired lease is lost even if nobody took it.
_RENEW = """
UPDATE littlestats_leases
SET renewed_at = now(), expires_at = now() + make_interval(secs => %(ttl)s)
WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s AND expires_at > now()
RETURNING expires_at"""

# The row stays (holder NULL): the next acquisition still gets a larger token.
_RELEASE = """
UPDATE littlestats_leases SET holder = NULL, expires_at = now()
WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s"""

_SHOW = """
SELECT name, holder, token, acquired_at, renewed_at, expires_at, expires_at > now() AND holder IS
    NOT NULL AS live
FROM littlestats_leases ORDER BY name"""


class LeaseLost(RuntimeError):
    """The lease was lost (expired, taken over, or a newer token is in the fence): the work done
    under it must stop, and what it had not committed is rolled back."""


@dataclass(frozen=True)
class Grant:
    """A lease as acquired or last renewed by this process."""

    name: str
    holder: str
    token: int
    expires_at: datetime  # the server's clock
    deadline: float  # this process's monotonic clock: the lease counts as lost from then on


@dataclass(frozen=True)
class LeaseState:
    """A row of the lease table, as an operator sees it."""

    name: str
    holder: str | None
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    live: bool


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (every lease statement is a transaction of its own)."""
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                           application_name="littlestats-lease")


class LeaseTable:
    """The ``littlestats_leases`` table: acquire, renew and release in one statement each."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._con: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._con is None or self._con.closed:
            self._con = connect(self.dsn)
        return self._con

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        import psycopg

        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except psycopg.OperationalError:
                # a broken connection is not reused: the next call connects again
                if self._con is not None:
                    with contextlib.suppress(Exception):
                        self._con.close()
                    self._con = None
                raise

    def create(self) -> None:
        """Create the table (idempotent, also when other nodes create it at the same moment)."""
        import psycopg

        with self._lock:
            try:
                self._connection().execute(_CREATE)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                pass  # PostgreSQL's IF NOT EXISTS does not cover a creation in flight elsewhere

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        """The lease ``name`` for ``holder`` for ``ttl`` seconds, with a token larger than any
        before; ``None`` while another holder's lease is live."""
        sent = time.monotonic()
        rows = self._run(_ACQUIRE, {"name": name, "holder": holder, "ttl": float(ttl)})
        if not rows:
            return None
        token, expires_at = rows[0]
        return Grant(name, holder, int(token), expires_at, sent + ttl)

    def renew(self, grant: Grant, ttl: float) -> Grant | None:
        """``grant`` extended by ``ttl`` seconds from now; ``None`` when it is lost."""
        sent = time.monotonic()
        rows = self._run(_RENEW, {"name": grant.name, "holder": grant.holder,
                                  "token": grant.token, "ttl": float(ttl)})
        if not rows:
            return None
        return Grant(grant.name, grant.holder, grant.token, rows[0][0], sent + ttl)

    def release(self, grant: Grant) -> bool:
        """Give the lease up now (another node may take it at once); whether it was still held."""
        with self._lock:
            cur = self._connection().execute(
                _RELEASE, {"name": grant.name, "holder": grant.holder, "token": grant.token})
            return cur.rowcount == 1

    def states(self) -> list[LeaseState]:
        """Every lease, live or not."""
        return [LeaseState(*row) for row in self._run(_SHOW, {})]

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


class HeldLease:
    """A lease this process holds, renewed by a background thread every ``ttl / 3`` seconds.

    ``lost`` is set as soon as a renewal is refused, or when the deadline passes without one
    succeeding (PostgreSQL unreachable); ``on_lost`` is called then, once. Work under the lease
    calls ``check()`` between steps and writes ``token`` into the fence in each transaction.
    """

    def __init__(self, dsn: str, grant: Grant, ttl: float,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.grant = grant
        self.ttl = ttl
        self.lost = threading.Event()
        self.reason = ""
        self._on_lost = on_lost
        self._table = LeaseTable(dsn)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"lease-{grant.name}")
        self._thread.start()

    @property
    def token(self) -> int:
        return self.grant.token

    @property
    def name(self) -> str:
        return self.grant.name

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.reason = reason
        self.lost.set()
        log.warning("lease %s (token %d) lost: %s", self.grant.name, self.grant.token, reason)
        if self._on_lost is not None:
            self._on_lost(reason)

    def _renew_loop(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval) and not self.lost.is_set():
            if time.monotonic() >= self.grant.deadline:
                self._lose("not renewed before it expired")
                return
            try:
                renewed = self._table.renew(self.grant, self.ttl)
            except Exception as exc:
                # PostgreSQL unreachable: try again soon, until the deadline says it is lost
                log.warning("could not renew lease %s (%s); retrying", self.grant.name, exc)
                interval = max(0.05, min(self.ttl / 10, self.grant.deadline - time.monotonic()))
                continue
            if renewed is None:
                self._lose("expired or taken over by another node")
                return
            self.grant = renewed
            interval = self.ttl / 3

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lease is lost, or its deadline has passed."""
        if not self.lost.is_set() and time.monotonic() >= self.grant.deadline:
            self._lose("not renewed before it expired")
        if self.lost.is_set():
            raise LeaseLost(f"lease {self.grant.name} (token {self.grant.token}) lost: {self.reason}")

    def release(self) -> None:
        """Stop renewing and give the lease up (unless it is lost already)."""
        self._stop.set()
        self._thread.join(timeout=CONNECT_TIMEOUT + 1)
        if not self.lost.is_set():
            try:
                self._table.release(self.grant)
            except Exception as exc:  # it expires by itself
                log.warning("could not release lease %s (%s); it expires by itself",
                            self.grant.name, exc)
            self.lost.set()
            self.reason = "released"
        self._table.close()

    def __enter__(self) -> HeldLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_acquire(dsn: str, name: str, holder: str, ttl: float,
                on_lost: Callable[[str], None] | None = None) -> HeldLease | None:
    """The lease ``name``, held and renewed in the background, or ``None`` when another holder's
    lease is live."""
    import psycopg

    table = LeaseTable(dsn)
    try:
        try:
            grant = table.acquire(name, holder, ttl)
        except psycopg.errors.UndefinedTable:  # the cluster's first lease
            table.create()
            grant = table.acquire(name, holder, ttl)
    finally:
        table.close()
    if grant is None:
        return None
    log.info("lease %s acquired by %s with token %d", name, holder, grant.token)
    return HeldLease(dsn, grant, ttl, on_lost)


def init_step(settings: Settings) -> str:
    """The lease table as a step of ``littlestats cluster init``: what it did, in a line. (A
    node's first load creates it too.)"""
    if not settings.catalog_dsn:
        return "skipped: no catalog_dsn"
    table = LeaseTable(settings.catalog_dsn)
    try:
        table.create()
        held = [s for s in table.states() if s.live]
    finally:
        table.close()
    return "table littlestats_leases ready" + (
        "; held now: " + ", ".join(f"{s.name} by {s.holder} (token {s.token})" for s in held)
        if held else "")


# The fence, in the lake ------------------------------------------------------------------------

FENCE_TABLE = "lease_fence"


def ensure_fence(con: duckdb.DuckDBPyConnection, name: str = LOAD_LEASE) -> None:
    """Create the fence table and its row for ``name`` if missing (one transaction)."""
    con.execute("BEGIN")
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {FENCE_TABLE} (name VARCHAR, token BIGINT,"
                    " holder VARCHAR, committed_at TIMESTAMP WITH TIME ZONE)")
        con.execute(f"INSERT INTO {FENCE_TABLE} SELECT $name, 0, NULL, now()"  # noqa: S608
                    f" WHERE NOT EXISTS (SELECT 1 FROM {FENCE_TABLE} WHERE name = $name)",
                    {"name": name})
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise


def fence(con: duckdb.DuckDBPyConnection, lease: HeldLease) -> None:
    """Write ``lease``'s token into the fence, inside the caller's open transaction, or raise
    ``LeaseLost`` when the fence holds a larger one (a newer holder has committed).

    Every writer rewrites the same fence row, so of two transactions in flight only the first
    to commit does; the other's commit fails with a conflict and nothing of it is kept."""
    lease.check()
    updated = con.execute(
        f"UPDATE {FENCE_TABLE} SET token = $token, holder = $holder, committed_at = now()"  # noqa: S608
        " WHERE name = $name AND token <= $token",
        {"token": lease.token, "holder": lease.grant.holder, "name": lease.name},
    ).fetchall()
    if not updated or updated[0][0] != 1:
        newest = con.execute(f"SELECT max(token) FROM {FENCE_TABLE} WHERE name = $name",  # noqa: S608
                             {"name": lease.name}).fetchall()[0][0]
        raise LeaseLost(f"lease {lease.name}: token {lease.token} is fenced off (the fence holds"
                        f" {newest}: a newer holder has committed)")


def claim(con: duckdb.DuckDBPyConnection, lease: HeldLease) -> None:
    """Commit ``lease``'s token into the fence at once, so that no former holder's transaction
    still under way can commit from now on."""
    ensure_fence(con, lease.name)
    con.execute("BEGIN")
    try:
        fence(con, lease)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise
