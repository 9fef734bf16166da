"""Control-plane store: users, API tokens, sites, their members, goals, invitations, the audit log
and daily salts.

A small SQLite database in WAL mode that every process (ingest workers, the warehouse process, the
CLI) opens on its own. It never lives in the DuckDB file the loader holds for writing (SPEC §6).
Tokens and invitation links are stored as SHA-256 hashes only; the plain value is shown once, when
created. Who may do what on a site is its members' roles (``site_members``; docs/access.md); the
``sites.owner_id`` column of schema version 1 is no longer read (version 5 made each such owner an
owner member) and is left NULL for new sites. Members, invitations, the audit log and share links
have their queries in ``littlestats.access_store``, report subscriptions, alert rules and webhooks
in ``littlestats.notify_store``; ``ControlPlane`` inherits both.
"""

from __future__ import annotations

import mmap
import os
import secrets
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from littlestats.access_store import (
    ROLES,
    SCOPES,
    AccessStore,
    AuditEntry,
    Invitation,
    LastOwner,
    Member,
    Share,
    role_rank,
)
from littlestats.funnel_store import FunnelStore
from littlestats.ids import hash_token, new_id, now_iso
from littlestats.migrations import migrate
from littlestats.notify_store import NotifyStore
from warehouse.query.model import GoalSpec

# The records of littlestats.access_store are the control plane's too: callers import them here.
__all__ = ["ROLES", "SCOPES", "AuditEntry", "ControlPlane", "Goal", "Invitation", "LastOwner", "Member", "Segment", "Share", "Site",
           "SiteCache", "SiteSettings", "Token", "User", "hash_token", "new_id", "role_rank"]


@dataclass(frozen=True)
class SiteSettings:
    """Per-site switches kept in the `settings` JSON column."""

    allowed_hostnames: tuple[str, ...] = ()
    respect_dnt: bool = False
    excluded_paths: tuple[str, ...] = ()
    excluded_ips: tuple[str, ...] = ()
    # Query-string parameters kept beside the built-in ones (`ingest.pipeline.KEPT_QUERY_PARAMS`);
    # every other parameter is dropped before an event is written.
    allowed_query_params: tuple[str, ...] = ()
    # The site's read-only dashboard is open to anyone at /share/{domain} (docs/sharing.md).
    public: bool = False
    # Revenue is reported in this ISO 4217 currency (None: no revenue metrics); amounts in another
    # currency are converted at query time with the owner's rates (one unit of it in `currency`).
    currency: str | None = None
    exchange_rates: tuple[tuple[str, float], ...] = ()
    # Drop events whose referrer is on the referrer-spam list / whose client IP is in a cloud
    # provider's networks (ingest/traffic.py); on unless the site turns them off.
    drop_referrer_spam: bool = True
    drop_datacenter_ips: bool = True

    @classmethod
    def from_json(cls, raw: str | bytes) -> SiteSettings:
        data = orjson.loads(raw or "{}")
        return cls(
            allowed_hostnames=tuple(data.get("allowed_hostnames", ())),
            respect_dnt=bool(data.get("respect_dnt", False)),
            excluded_paths=tuple(data.get("excluded_paths", ())),
            excluded_ips=tuple(data.get("excluded_ips", ())),
            allowed_query_params=tuple(data.get("allowed_query_params", ())),
            public=bool(data.get("public", False)),
            currency=data.get("currency"),
            exchange_rates=tuple((str(c), float(r)) for c, r in data.get("exchange_rates", ())),
            drop_referrer_spam=bool(data.get("drop_referrer_spam", True)),
            drop_datacenter_ips=bool(data.get("drop_datacenter_ips", True)),
        )

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


@dataclass(frozen=True)
class Site:
    id: str
    domain_key: str
    domain: str
    name: str
    timezone: str
    retention_days: int
    settings: SiteSettings
    secret: bytes = field(repr=False)
    created_at: str

    def public(self) -> dict[str, Any]:
        """The site as the API shows it (SPEC §7)."""
        return {
            "id": self.id,
            "domainKey": self.domain_key,
            "domain": self.domain,
            "name": self.name,
            "timezone": self.timezone,
            "retentionDays": self.retention_days,
            "allowedHostnames": list(self.settings.allowed_hostnames),
            "respectDnt": self.settings.respect_dnt,
            "excludedPaths": list(self.settings.excluded_paths),
            "allowedQueryParams": list(self.settings.allowed_query_params),
            "public": self.settings.public,
            "revenue": None if self.settings.currency is None else {
                "currency": self.settings.currency, "rates": dict(self.settings.exchange_rates)},
            "dropReferrerSpam": self.settings.drop_referrer_spam,
            "dropDatacenterIps": self.settings.drop_datacenter_ips,
            "createdAt": self.created_at,
        }


@dataclass(frozen=True)
class Token:
    """An API token's metadata (the token itself is never stored, only its hash).

    ``scopes``: what it may be used for (``SCOPES``); ``sites``: the site ids it is limited to
    (``None``: every site of its user); ``expires_at``: ISO time after which it is refused
    (``None``: never). Whatever it allows, its user's role on a site is checked at each request.
    """

    id: str
    user_id: str
    name: str
    created_at: str
    scopes: tuple[str, ...] = SCOPES
    sites: tuple[str, ...] | None = None
    expires_at: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "userId": self.user_id, "name": self.name, "createdAt": self.created_at,
                "scopes": list(self.scopes), "sites": None if self.sites is None else list(self.sites),
                "expiresAt": self.expires_at}

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return datetime.fromisoformat(self.expires_at) <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class User:
    id: str
    email: str | None
    name: str
    is_admin: bool
    created_at: str


@dataclass(frozen=True)
class Goal:
    """A conversion goal: a pageview of a path or pattern (``page``), or a custom event
    (``event``), optionally only with property ``prop_key`` = ``prop_value``; ``revenue`` marks a
    goal whose events carry revenue. ``name`` is what filters and breakdowns call it."""

    id: str
    site_id: str
    kind: str  # "event" | "page"
    value: str
    created_at: str
    name: str = ""
    prop_key: str | None = None
    prop_value: str | None = None
    revenue: bool = False

    def public(self) -> dict[str, Any]:
        prop = {"key": self.prop_key, "value": self.prop_value} if self.prop_key is not None else None
        return {"id": self.id, "name": self.name, "kind": self.kind, "value": self.value, "property": prop,
                "revenue": self.revenue, "createdAt": self.created_at}


def _goal(row: sqlite3.Row) -> Goal:
    return Goal(row["id"], row["site_id"], row["kind"], row["value"], row["created_at"], row["name"],
                row["prop_key"], row["prop_value"], bool(row["revenue"]))


@dataclass(frozen=True)
class Segment:
    """A saved, named filter set of a site: ``filters`` as the query API takes them."""

    id: str
    site_id: str
    name: str
    filters: list[Any]
    created_by: str | None
    created_at: str
    updated_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "filters": self.filters, "createdBy": self.created_by,
                "createdAt": self.created_at, "updatedAt": self.updated_at}


def _segment(row: sqlite3.Row) -> Segment:
    return Segment(row["id"], row["site_id"], row["name"], orjson.loads(row["filters"]), row["created_by"],
                   row["created_at"], row["updated_at"])


def _site(row: sqlite3.Row) -> Site:
    return Site(
        id=row["id"],
        domain_key=row["domain_key"],
        domain=row["domain"],
        name=row["name"],
        timezone=row["timezone"],
        retention_days=row["retention_days"],
        settings=SiteSettings.from_json(row["settings"]),
        secret=bytes(row["secret"]),
        created_at=row["created_at"],
    )


class ControlPlane(AccessStore, NotifyStore, FunnelStore):
    """Access to the control-plane database. One instance per process; thread-safe.

    Beside the database, ``<name>.generation`` holds a counter that grows whenever a site is
    changed or deleted; every process maps it (``sites_generation``), so a worker's ``SiteCache``
    learns of a change with one memory read per lookup, without a query.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._generation_map: mmap.mmap | None = None
        with self._tx() as db:
            self._migrate(db)

    # connection handling ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the schema to this version's (``littlestats.migrations``), in one transaction."""
        migrate(db, self.path)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # sites ----------------------------------------------------------------------------------
    def create_site(
        self,
        domain: str,
        name: str | None = None,
        owner_id: str | None = None,
        timezone: str = "UTC",
        retention_days: int = 0,
        settings: SiteSettings | None = None,
    ) -> Site:
        site_id = new_id()
        domain_key = new_id(6)
        with self._tx() as db:
            db.execute(
                "INSERT INTO sites (id, domain_key, domain, name, timezone,"
                " retention_days, settings, secret, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    site_id,
                    domain_key,
                    domain,
                    name or domain,
                    timezone,
                    retention_days,
                    (settings or SiteSettings()).to_json(),
                    secrets.token_bytes(32),
                    now_iso(),
                ),
            )
            if owner_id is not None:  # whoever creates a site is its first owner
                db.execute("INSERT INTO site_members (site_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)",
                           (site_id, owner_id, now_iso()))
        site = self.get_site(site_id)
        assert site is not None
        return site

    def get_site(self, id_or_key: str) -> Site | None:
        """A site by its internal id or its public domain key (``None`` once it is being deleted)."""
        row = (
            self._conn()
            .execute("SELECT * FROM sites WHERE (id = ? OR domain_key = ?)"
                     " AND id NOT IN (SELECT id FROM deleted_sites)", (id_or_key, id_or_key))
            .fetchone()
        )
        return _site(row) if row else None

    def list_sites(self, member_id: str | None = None) -> list[Site]:
        """Every site (those `member_id` has a role on, when given), oldest first."""
        live = "id NOT IN (SELECT id FROM deleted_sites)"
        if member_id is None:
            rows = self._conn().execute(f"SELECT * FROM sites WHERE {live} ORDER BY created_at, rowid").fetchall()  # noqa: S608
        else:
            rows = (
                self._conn()
                .execute(f"SELECT * FROM sites WHERE id IN (SELECT site_id FROM site_members WHERE user_id = ?)"  # noqa: S608
                         f" AND {live} ORDER BY created_at, rowid", (member_id,))
                .fetchall()
            )
        return [_site(r) for r in rows]

    def update_site(self, site_id: str, **changes: Any) -> Site | None:
        allowed = {"domain", "name", "timezone", "retention_days", "settings"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        if "settings" in changes and isinstance(changes["settings"], SiteSettings):
            changes["settings"] = changes["settings"].to_json()
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)  # names from `allowed`
            with self._tx() as db:
                db.execute(
                    f"UPDATE sites SET {assignments} WHERE id = ?",  # noqa: S608
                    (*changes.values(), site_id),
                )
            self._bump_generation()  # every worker applies the new settings at its next lookup
        return self.get_site(site_id)

    def mark_site_deleted(self, site_id: str) -> None:
        """First step of deleting a site: from now on no process finds it (ingest answers 404),
        and its events are dropped wherever they still are (WAL, sealed files)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO deleted_sites (id, deleted_at) VALUES (?, ?)", (site_id, now_iso()))
        self._bump_generation()

    def unmark_site_deleted(self, site_id: str) -> None:
        """Undo ``mark_site_deleted`` when the delete could not be completed (it is retried)."""
        with self._tx() as db:
            db.execute("DELETE FROM deleted_sites WHERE id = ?", (site_id,))
        self._bump_generation()

    def deleted_site_ids(self) -> set[str]:
        """Every site ever deleted (or being deleted)."""
        return {r["id"] for r in self._conn().execute("SELECT id FROM deleted_sites").fetchall()}

    def delete_site(self, site_id: str) -> bool:
        """Forget the site and its goals; it stays in ``deleted_site_ids``."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO deleted_sites (id, deleted_at) VALUES (?, ?)", (site_id, now_iso()))
            deleted = db.execute("DELETE FROM sites WHERE id = ?", (site_id,)).rowcount > 0
        self._bump_generation()
        return deleted

    # the sites generation (see the class docstring) ---------------------------------------------
    def generation_map(self) -> mmap.mmap:
        """The shared memory holding the sites generation (its first 8 bytes; compare for
        equality only)."""
        if self._generation_map is None:
            path = self.path.with_name(self.path.stem + ".generation")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._generation_map = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        return self._generation_map

    def sites_generation(self) -> int:
        """The current sites generation (grows with every change of a site)."""
        return int(struct.unpack_from("Q", self.generation_map(), 0)[0])

    def _bump_generation(self) -> None:
        # After the commit: a process that sees the new value and looks the site up sees the change.
        with self._tx():  # serialises bumps between processes
            m = self.generation_map()
            struct.pack_into("Q", m, 0, struct.unpack_from("Q", m, 0)[0] + 1)

    # users and tokens -------------------------------------------------------------------------
    def create_user(self, email: str | None = None, name: str = "", is_admin: bool = False) -> User:
        user = User(new_id(), email, name, is_admin, now_iso())
        with self._tx() as db:
            db.execute(
                "INSERT INTO users (id, email, name, is_admin, created_at) VALUES (?, ?, ?, ?, ?)",
                (user.id, user.email, user.name, int(user.is_admin), user.created_at),
            )
        return user

    def get_user(self, user_id: str) -> User | None:
        row = self._conn().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return None
        return User(row["id"], row["email"], row["name"], bool(row["is_admin"]), row["created_at"])

    def find_user_by_email(self, email: str) -> User | None:
        row = self._conn().execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
        return self.get_user(row["id"]) if row else None

    def find_admin(self) -> User | None:
        """The first admin user, if any (``littlestats serve`` creates one on first start)."""
        row = self._conn().execute(
            "SELECT id FROM users WHERE is_admin = 1 ORDER BY created_at, rowid LIMIT 1"
        ).fetchone()
        return self.get_user(row["id"]) if row else None

    def list_users(self) -> list[User]:
        rows = self._conn().execute("SELECT * FROM users ORDER BY created_at, rowid").fetchall()
        return [User(r["id"], r["email"], r["name"], bool(r["is_admin"]), r["created_at"]) for r in rows]

    def create_token(self, user_id: str, name: str = "", scopes: tuple[str, ...] | None = None,
                     sites: tuple[str, ...] | None = None, expires_at: str | None = None) -> str:
        """Create an API token for `user_id` and return it in plain text (the only time it is).

        ``scopes=None`` gives every scope, ``sites=None`` every site of the user (``Token``)."""
        token = "ls_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (id, user_id, name, token_hash, created_at, scopes, sites, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id(), user_id, name, hash_token(token), now_iso(),
                 None if scopes is None else orjson.dumps(list(scopes)).decode(),
                 None if sites is None else orjson.dumps(list(sites)).decode(), expires_at),
            )
        return token

    _TOKEN_COLUMNS = "id, user_id, name, created_at, scopes, sites, expires_at"

    def _token(self, row: Any) -> Token:
        scopes = SCOPES if row["scopes"] is None else tuple(orjson.loads(row["scopes"]))
        sites = None if row["sites"] is None else tuple(orjson.loads(row["sites"]))
        return Token(row["id"], row["user_id"], row["name"], row["created_at"], scopes, sites, row["expires_at"])

    def list_tokens(self, user_id: str | None = None) -> list[Token]:
        """Every token (of ``user_id`` only, when given), oldest first."""
        sql = f"SELECT {self._TOKEN_COLUMNS} FROM tokens"  # noqa: S608
        args: tuple[str, ...] = ()
        if user_id is not None:
            sql, args = sql + " WHERE user_id = ?", (user_id,)
        return [self._token(r) for r in self._conn().execute(sql + " ORDER BY created_at, rowid", args).fetchall()]

    def get_token(self, token_id: str) -> Token | None:
        row = self._conn().execute(
            f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()  # noqa: S608
        return self._token(row) if row else None

    def find_token(self, token: str) -> Token | None:
        """The metadata of a plain-text token, if it is valid."""
        row = self._conn().execute(
            f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE token_hash = ?", (hash_token(token),)).fetchone()  # noqa: S608
        return self._token(row) if row else None

    def delete_token(self, token_id: str) -> bool:
        """Revoke a token: it stops working for every request from now on."""
        with self._tx() as db:
            return db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0

    def user_for_token(self, token: str) -> User | None:
        row = (
            self._conn()
            .execute("SELECT user_id FROM tokens WHERE token_hash = ?", (hash_token(token),))
            .fetchone()
        )
        return self.get_user(row["user_id"]) if row else None

    def password_hash(self, user_id: str) -> str | None:
        """The user's password hash (argon2, see ``dashboard.passwords``); ``None``: no password."""
        row = self._conn().execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
        return row["password_hash"] if row else None

    def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        with self._tx() as db:
            return db.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)).rowcount > 0

    # goals ------------------------------------------------------------------------------------
    def list_goals(self, site_id: str) -> list[Goal]:
        rows = (
            self._conn()
            .execute("SELECT * FROM goals WHERE site_id = ? ORDER BY created_at, rowid", (site_id,))
            .fetchall()
        )
        return [_goal(r) for r in rows]

    def goal_specs(self, site_id: str) -> list[GoalSpec]:
        """The site's goals as the query engine takes them (``Query.goals``)."""
        return list(self.goal_specs_by_id(site_id).values())

    def goal_specs_by_id(self, site_id: str) -> dict[str, GoalSpec]:
        """The site's goals by id, as the query engine takes them (funnels' goal steps)."""
        return {g.id: GoalSpec(g.name, g.kind, g.value, g.prop_key, g.prop_value, g.revenue)
                for g in self.list_goals(site_id)}

    def get_goal(self, site_id: str, goal_id: str) -> Goal | None:
        row = (
            self._conn()
            .execute("SELECT * FROM goals WHERE site_id = ? AND id = ?", (site_id, goal_id))
            .fetchone()
        )
        return _goal(row) if row else None

    def create_goal(self, site_id: str, kind: str, value: str, name: str | None = None,
                    prop_key: str | None = None, prop_value: str | None = None, revenue: bool = False) -> Goal:
        """A goal (see ``Goal``); ``name`` defaults to ``goal_name``'s. Idempotent by name: the
        goal already called ``name`` is returned as it is (the caller compares definitions)."""
        from warehouse.query.model import goal_name

        name = name or goal_name(kind, value, prop_key, prop_value)
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO goals (id, site_id, kind, value, prop_key, prop_value, revenue, name,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id(), site_id, kind, value, prop_key, prop_value, int(revenue), name, now_iso()),
            )
            row = db.execute("SELECT * FROM goals WHERE site_id = ? AND name = ?", (site_id, name)).fetchone()
        return _goal(row)

    def delete_goal(self, site_id: str, goal_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM goals WHERE site_id = ? AND id = ?", (site_id, goal_id)).rowcount > 0

    # segments ---------------------------------------------------------------------------------
    def list_segments(self, site_id: str) -> list[Segment]:
        rows = self._conn().execute(
            "SELECT * FROM segments WHERE site_id = ? ORDER BY name, id", (site_id,)).fetchall()
        return [_segment(r) for r in rows]

    def find_segment(self, site_id: str, name_or_id: str) -> Segment | None:
        """The site's segment with this id, or else this name."""
        row = self._conn().execute(
            "SELECT * FROM segments WHERE site_id = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1",
            (site_id, name_or_id, name_or_id, name_or_id)).fetchone()
        return _segment(row) if row else None

    def create_segment(self, site_id: str, name: str, filters: list[Any], created_by: str | None) -> Segment | None:
        """A new segment; ``None`` when the site already has one by this name."""
        now = now_iso()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO segments (id, site_id, name, filters, created_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (new_id(), site_id, name, orjson.dumps(filters).decode(), created_by, now, now))
            if cur.rowcount == 0:
                return None
            row = db.execute("SELECT * FROM segments WHERE site_id = ? AND name = ?", (site_id, name)).fetchone()
        return _segment(row)

    def update_segment(self, site_id: str, segment_id: str, name: str | None,
                       filters: list[Any] | None) -> Segment | None:
        """Rename a segment and/or replace its filters; ``None`` when it does not exist. A name
        another segment of the site has raises ``sqlite3.IntegrityError``."""
        with self._tx() as db:
            if name is not None:
                db.execute("UPDATE segments SET name = ? WHERE site_id = ? AND id = ?", (name, site_id, segment_id))
            if filters is not None:
                db.execute("UPDATE segments SET filters = ? WHERE site_id = ? AND id = ?",
                           (orjson.dumps(filters).decode(), site_id, segment_id))
            db.execute("UPDATE segments SET updated_at = ? WHERE site_id = ? AND id = ?",
                       (now_iso(), site_id, segment_id))
            row = db.execute("SELECT * FROM segments WHERE site_id = ? AND id = ?", (site_id, segment_id)).fetchone()
        return _segment(row) if row else None

    def delete_segment(self, site_id: str, segment_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM segments WHERE site_id = ? AND id = ?", (site_id, segment_id)).rowcount > 0

    def public_site(self, domain: str) -> Site | None:
        """The oldest site with this domain whose dashboard is public (``SiteSettings.public``)."""
        for row in self._conn().execute(
                "SELECT * FROM sites WHERE domain = ? AND id NOT IN (SELECT id FROM deleted_sites)"
                " ORDER BY created_at, rowid", (domain,)).fetchall():
            site = _site(row)
            if site.settings.public:
                return site
        return None

    # server secrets ---------------------------------------------------------------------------
    def server_secret(self, name: str) -> bytes:
        """A random 32-byte secret shared by every process, created on first use.

        Used to sign short-lived tokens (e.g. real-time stream tokens) that any worker must verify.
        The table is created here, outside the versioned schema, so it needs no migration slot.
        """
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS server_secrets (name TEXT PRIMARY KEY, secret BLOB NOT NULL)"
        )
        row = conn.execute("SELECT secret FROM server_secrets WHERE name = ?", (name,)).fetchone()
        if row:
            return bytes(row["secret"])
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO server_secrets (name, secret) VALUES (?, ?)",
                (name, secrets.token_bytes(32)),
            )
            row = db.execute("SELECT secret FROM server_secrets WHERE name = ?", (name,)).fetchone()
        return bytes(row["secret"])

    # daily salts (SPEC §4) -------------------------------------------------------------------
    def salt_for(self, day: date) -> bytes:
        """The random salt of a UTC day, created on first use.

        Salts older than yesterday are deleted, so a fallback visitor hash cannot be recomputed
        (and so linked across days) once its day is over.
        """
        key = day.isoformat()
        row = self._conn().execute("SELECT salt FROM salts WHERE day = ?", (key,)).fetchone()
        if row:
            return bytes(row["salt"])
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO salts (day, salt) VALUES (?, ?)", (key, secrets.token_bytes(16))
            )
            db.execute("DELETE FROM salts WHERE day < date(?, '-1 day')", (key,))
            row = db.execute("SELECT salt FROM salts WHERE day = ?", (key,)).fetchone()
        return bytes(row["salt"])


class SiteCache:
    """Per-process cache of site lookups for the hot ingest path.

    Known sites are cached for `ttl` seconds; unknown ids for a shorter time, so a site created
    with `littlestats sites add` is accepted within a second or two by every worker. A site
    changed or deleted in any process empties the cache at once: each lookup compares the
    control plane's sites generation (one read of shared memory) with the one it last saw.
    """

    def __init__(self, store: ControlPlane, ttl: float = 10.0, negative_ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._entries: dict[str, tuple[float, Site | None]] = {}
        self._generation = memoryview(store.generation_map()).cast("Q")
        self._seen = self._generation[0]

    def get(self, id_or_key: str) -> Site | None:
        generation = self._generation[0]  # on every beacon: one read of shared memory (~40 ns)
        if generation != self._seen:
            self._entries.clear()
            self._seen = generation
        now = time.monotonic()
        hit = self._entries.get(id_or_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        site = self.store.get_site(id_or_key)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[id_or_key] = (now + (self.ttl if site else self.negative_ttl), site)
        return site

