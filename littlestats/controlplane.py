"""Control-plane store: users, API tokens, sites, their members, goals, invitations, the audit log
and daily salts.

A small SQLite database in WAL mode that every process (ingest workers, the warehouse process, the
CLI) opens on its own. It never lives in the DuckDB file the loader holds for writing (SPEC §6).
Tokens and invitation links are stored as SHA-256 hashes only; the plain value is shown once, when
created. Who may do what on a site is its members' roles (``site_members``; docs/access.md); the
``sites.owner_id`` column of schema version 1 is no longer read (version 5 made each such owner an
owner member) and is left NULL for new sites.
"""

from __future__ import annotations

import hashlib
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

from littlestats.migrations import migrate


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id(nbytes: int = 9) -> str:
    """A URL-safe random identifier."""
    return secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
        )

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


#: Site roles, weakest first: a role can do everything the ones before it can.
ROLES = ("viewer", "admin", "owner")
#: Token scopes (docs/access.md); a token without a scope list has every one.
SCOPES = ("stats:read", "sites:write", "admin")


def role_rank(role: str | None) -> int:
    """0 for no role, then 1 (viewer), 2 (admin), 3 (owner)."""
    return ROLES.index(role) + 1 if role in ROLES else 0


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
class Member:
    """A user's role on a site."""

    site_id: str
    user_id: str
    email: str | None
    name: str
    role: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"userId": self.user_id, "email": self.email, "name": self.name, "role": self.role,
                "since": self.created_at}


@dataclass(frozen=True)
class Invitation:
    """A one-time link that makes whoever opens it a member (only its hash is stored)."""

    id: str
    site_id: str
    email: str
    role: str
    invited_by: str | None
    created_at: str
    expires_at: str
    used_at: str | None
    used_by: str | None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "siteId": self.site_id, "email": self.email, "role": self.role,
                "invitedBy": self.invited_by, "createdAt": self.created_at, "expiresAt": self.expires_at,
                "usedAt": self.used_at}

    def usable(self, now: datetime | None = None) -> bool:
        return self.used_at is None and datetime.fromisoformat(self.expires_at) > (now or datetime.now(UTC))


@dataclass(frozen=True)
class AuditEntry:
    """One administrative action: who did what, when, on which site (never visitor data)."""

    id: int
    at: str
    actor_id: str | None
    actor_email: str | None
    action: str
    site_id: str | None
    target: str | None
    details: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": {"id": self.actor_id, "email": self.actor_email},
                "action": self.action, "siteId": self.site_id, "target": self.target, "details": self.details}


@dataclass(frozen=True)
class User:
    id: str
    email: str | None
    name: str
    is_admin: bool
    created_at: str


@dataclass(frozen=True)
class Goal:
    id: str
    site_id: str
    kind: str  # "event" | "page"
    value: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "value": self.value, "createdAt": self.created_at}


@dataclass(frozen=True)
class Share:
    """A share link of one site (the slug itself is never stored, only its hash)."""

    id: str
    site_id: str
    slug_hint: str
    label: str
    password_hash: str | None = field(repr=False)
    embed_origins: tuple[str, ...]
    created_at: str
    created_by: str | None
    revoked_at: str | None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "siteId": self.site_id, "slugHint": self.slug_hint, "label": self.label,
                "hasPassword": self.password_hash is not None, "embedOrigins": list(self.embed_origins),
                "createdAt": self.created_at, "createdBy": self.created_by, "revokedAt": self.revoked_at,
                "revoked": self.revoked_at is not None}


def _share(row: sqlite3.Row) -> Share:
    return Share(row["id"], row["site_id"], row["slug_hint"], row["label"], row["password_hash"],
                 tuple(orjson.loads(row["embed_origins"] or "[]")), row["created_at"], row["created_by"],
                 row["revoked_at"])


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


class LastOwner(ValueError):
    """A change that would leave a site without an owner."""


class ControlPlane:
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
                    _now(),
                ),
            )
            if owner_id is not None:  # whoever creates a site is its first owner
                db.execute("INSERT INTO site_members (site_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)",
                           (site_id, owner_id, _now()))
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
            db.execute("INSERT OR IGNORE INTO deleted_sites (id, deleted_at) VALUES (?, ?)", (site_id, _now()))
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
            db.execute("INSERT OR IGNORE INTO deleted_sites (id, deleted_at) VALUES (?, ?)", (site_id, _now()))
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
        user = User(new_id(), email, name, is_admin, _now())
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
                (new_id(), user_id, name, hash_token(token), _now(),
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

    # members and invitations ------------------------------------------------------------------
    def role_of(self, user_id: str, site_id: str) -> str | None:
        """The user's role on the site (``None``: not a member)."""
        row = self._conn().execute(
            "SELECT role FROM site_members WHERE site_id = ? AND user_id = ?", (site_id, user_id)).fetchone()
        return row["role"] if row else None

    def list_members(self, site_id: str) -> list[Member]:
        rows = self._conn().execute(
            "SELECT m.site_id, m.user_id, u.email, u.name, m.role, m.created_at FROM site_members m"
            " JOIN users u ON u.id = m.user_id WHERE m.site_id = ? ORDER BY m.created_at, u.email",
            (site_id,)).fetchall()
        return [Member(r["site_id"], r["user_id"], r["email"], r["name"], r["role"], r["created_at"]) for r in rows]

    def set_member(self, site_id: str, user_id: str, role: str) -> None:
        """Add the user to the site with `role`, or change the role they have."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._tx() as db:
            db.execute("INSERT INTO site_members (site_id, user_id, role, created_at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (site_id, user_id) DO UPDATE SET role = excluded.role",
                       (site_id, user_id, role, _now()))

    def remove_member(self, site_id: str, user_id: str) -> bool:
        """Take the user's role on the site away; refused (``LastOwner``) for the last owner."""
        with self._tx() as db:
            self._keep_an_owner(db, site_id, user_id)
            return db.execute("DELETE FROM site_members WHERE site_id = ? AND user_id = ?",
                              (site_id, user_id)).rowcount > 0

    def change_role(self, site_id: str, user_id: str, role: str) -> bool:
        """Change a member's role (``False``: not a member); the last owner stays an owner."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._tx() as db:
            if role != "owner":
                self._keep_an_owner(db, site_id, user_id)
            return db.execute("UPDATE site_members SET role = ? WHERE site_id = ? AND user_id = ?",
                              (role, site_id, user_id)).rowcount > 0

    def transfer_ownership(self, site_id: str, from_user: str, to_user: str) -> None:
        """`to_user` (a member) becomes an owner and `from_user` an admin, in one transaction."""
        with self._tx() as db:
            if db.execute("UPDATE site_members SET role = 'owner' WHERE site_id = ? AND user_id = ?",
                          (site_id, to_user)).rowcount == 0:
                raise KeyError(to_user)
            db.execute("UPDATE site_members SET role = 'admin' WHERE site_id = ? AND user_id = ?",
                       (site_id, from_user))

    @staticmethod
    def _keep_an_owner(db: sqlite3.Connection, site_id: str, user_id: str) -> None:
        owners = [r[0] for r in db.execute(
            "SELECT user_id FROM site_members WHERE site_id = ? AND role = 'owner'", (site_id,)).fetchall()]
        if owners == [user_id]:
            raise LastOwner("a site needs an owner: make another member an owner first (or transfer "
                            "ownership), then try again")

    def create_invitation(self, site_id: str, email: str, role: str, invited_by: str | None,
                          lifetime_seconds: int) -> tuple[Invitation, str]:
        """A one-time invitation and its plain token (the only time it is shown)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        plain = "inv_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires = datetime.fromtimestamp(now.timestamp() + lifetime_seconds, UTC).isoformat(timespec="seconds")
        invitation_id = new_id()
        with self._tx() as db:
            db.execute("INSERT INTO invitations (id, token_hash, site_id, email, role, invited_by, created_at,"
                       " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (invitation_id, hash_token(plain), site_id, email, role, invited_by,
                        now.isoformat(timespec="seconds"), expires))
        found = self.get_invitation(invitation_id)
        assert found is not None
        return found, plain

    @staticmethod
    def _invitation(row: Any) -> Invitation:
        return Invitation(row["id"], row["site_id"], row["email"], row["role"], row["invited_by"],
                          row["created_at"], row["expires_at"], row["used_at"], row["used_by"])

    def get_invitation(self, invitation_id: str) -> Invitation | None:
        row = self._conn().execute("SELECT * FROM invitations WHERE id = ?", (invitation_id,)).fetchone()
        return self._invitation(row) if row else None

    def find_invitation(self, plain: str) -> Invitation | None:
        """The invitation of a link's token (used or expired ones too: check ``usable()``)."""
        row = self._conn().execute("SELECT * FROM invitations WHERE token_hash = ?", (hash_token(plain),)).fetchone()
        return self._invitation(row) if row else None

    def list_invitations(self, site_id: str) -> list[Invitation]:
        rows = self._conn().execute("SELECT * FROM invitations WHERE site_id = ? ORDER BY created_at, rowid",
                                    (site_id,)).fetchall()
        return [self._invitation(r) for r in rows]

    def delete_invitation(self, site_id: str, invitation_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM invitations WHERE site_id = ? AND id = ?",
                              (site_id, invitation_id)).rowcount > 0

    def accept_invitation(self, invitation_id: str, user_id: str) -> bool:
        """Use the invitation for `user_id` (once): they become a member with its role, or keep a
        stronger role they already have. ``False`` when it was used or expired meanwhile."""
        now = _now()
        with self._tx() as db:
            row = db.execute("SELECT * FROM invitations WHERE id = ?", (invitation_id,)).fetchone()
            if row is None or not self._invitation(row).usable():
                return False
            db.execute("UPDATE invitations SET used_at = ?, used_by = ? WHERE id = ?", (now, user_id, invitation_id))
            current = db.execute("SELECT role FROM site_members WHERE site_id = ? AND user_id = ?",
                                 (row["site_id"], user_id)).fetchone()
            if current is None:
                db.execute("INSERT INTO site_members (site_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
                           (row["site_id"], user_id, row["role"], now))
            elif role_rank(row["role"]) > role_rank(current["role"]):
                db.execute("UPDATE site_members SET role = ? WHERE site_id = ? AND user_id = ?",
                           (row["role"], row["site_id"], user_id))
        return True

    # audit log --------------------------------------------------------------------------------
    def add_audit(self, action: str, actor_id: str | None, actor_email: str | None, site_id: str | None,
                  target: str | None, details: dict[str, Any]) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO audit_log (at, actor_id, actor_email, action, site_id, target, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), actor_id, actor_email, action, site_id, target, orjson.dumps(details).decode()))
            return int(cursor.lastrowid or 0)

    def list_audit(self, site_id: str | None = None, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Newest first: the site's entries (every entry when ``site_id`` is ``None``)."""
        rows = self._conn().execute(
            "SELECT * FROM audit_log WHERE (? IS NULL OR site_id = ?) AND (? IS NULL OR id < ?)"
            " ORDER BY id DESC LIMIT ?", (site_id, site_id, before, before, limit)).fetchall()
        return [AuditEntry(r["id"], r["at"], r["actor_id"], r["actor_email"], r["action"], r["site_id"],
                           r["target"], orjson.loads(r["details"])) for r in rows]

    # goals ------------------------------------------------------------------------------------
    def list_goals(self, site_id: str) -> list[Goal]:
        rows = (
            self._conn()
            .execute("SELECT * FROM goals WHERE site_id = ? ORDER BY created_at, rowid", (site_id,))
            .fetchall()
        )
        return [Goal(r["id"], r["site_id"], r["kind"], r["value"], r["created_at"]) for r in rows]

    def get_goal(self, site_id: str, goal_id: str) -> Goal | None:
        row = (
            self._conn()
            .execute("SELECT * FROM goals WHERE site_id = ? AND id = ?", (site_id, goal_id))
            .fetchone()
        )
        return Goal(row["id"], row["site_id"], row["kind"], row["value"], row["created_at"]) if row else None

    def create_goal(self, site_id: str, kind: str, value: str) -> Goal:
        """A goal: a custom event name (``event``) or a page path (``page``). Idempotent."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO goals (id, site_id, kind, value, created_at) VALUES (?, ?, ?, ?, ?)",
                (new_id(), site_id, kind, value, _now()),
            )
            row = db.execute(
                "SELECT * FROM goals WHERE site_id = ? AND kind = ? AND value = ?", (site_id, kind, value)
            ).fetchone()
        return Goal(row["id"], row["site_id"], row["kind"], row["value"], row["created_at"])

    def delete_goal(self, site_id: str, goal_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM goals WHERE site_id = ? AND id = ?", (site_id, goal_id)).rowcount > 0

    # share links (docs/sharing.md) ----------------------------------------------------------------
    def create_share(self, site_id: str, *, label: str = "", password_hash: str | None = None,
                     embed_origins: tuple[str, ...] = (), created_by: str | None = None) -> tuple[Share, str]:
        """A new share link of `site_id` and its slug in plain text (the only time it is known)."""
        slug = secrets.token_urlsafe(18)  # 144 random bits; never a domain (no dot)
        share_id = new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO shares (id, site_id, slug_hash, slug_hint, label, password_hash, embed_origins,"
                " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (share_id, site_id, hash_token(slug), slug[:4], label, password_hash,
                 orjson.dumps(list(embed_origins)).decode(), _now(), created_by),
            )
        share = self.get_share(site_id, share_id)
        assert share is not None
        return share, slug

    def list_shares(self, site_id: str) -> list[Share]:
        """Every share link of the site, revoked ones too, oldest first."""
        rows = self._conn().execute(
            "SELECT * FROM shares WHERE site_id = ? ORDER BY created_at, rowid", (site_id,)).fetchall()
        return [_share(r) for r in rows]

    def get_share(self, site_id: str, share_id: str) -> Share | None:
        row = self._conn().execute(
            "SELECT * FROM shares WHERE site_id = ? AND id = ?", (site_id, share_id)).fetchone()
        return _share(row) if row else None

    def find_share(self, slug: str) -> Share | None:
        """The live (not revoked) share a plain-text slug names, if any."""
        row = self._conn().execute(
            "SELECT * FROM shares WHERE slug_hash = ? AND revoked_at IS NULL", (hash_token(slug),)).fetchone()
        return _share(row) if row else None

    def update_share(self, site_id: str, share_id: str, **changes: Any) -> Share | None:
        """Change a share's ``label``, ``password_hash`` or ``embed_origins``."""
        allowed = {"label", "password_hash", "embed_origins"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        if "embed_origins" in changes:
            changes["embed_origins"] = orjson.dumps(list(changes["embed_origins"])).decode()
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)  # names from `allowed`
            with self._tx() as db:
                db.execute(f"UPDATE shares SET {assignments} WHERE site_id = ? AND id = ?",  # noqa: S608
                           (*changes.values(), site_id, share_id))
        return self.get_share(site_id, share_id)

    def revoke_share(self, site_id: str, share_id: str) -> Share | None:
        """Revoke a share: its link and every session opened through it stop working at once."""
        with self._tx() as db:
            db.execute("UPDATE shares SET revoked_at = ? WHERE site_id = ? AND id = ? AND revoked_at IS NULL",
                       (_now(), site_id, share_id))
        return self.get_share(site_id, share_id)

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
