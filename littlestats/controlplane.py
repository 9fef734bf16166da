"""Control-plane store: users, API tokens, sites, goals and daily salts.

A small SQLite database in WAL mode that every process (ingest workers, the warehouse process, the
CLI) opens on its own. It never lives in the DuckDB file the loader holds for writing (SPEC §6).
Tokens are stored as SHA-256 hashes only; the plain token is shown once, when created.
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


@dataclass(frozen=True)
class Site:
    id: str
    domain_key: str
    domain: str
    name: str
    owner_id: str | None
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
    """An API token's metadata (the token itself is never stored, only its hash)."""

    id: str
    user_id: str
    name: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "userId": self.user_id, "name": self.name, "createdAt": self.created_at}


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
        owner_id=row["owner_id"],
        timezone=row["timezone"],
        retention_days=row["retention_days"],
        settings=SiteSettings.from_json(row["settings"]),
        secret=bytes(row["secret"]),
        created_at=row["created_at"],
    )


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
                "INSERT INTO sites (id, domain_key, domain, name, owner_id, timezone,"
                " retention_days, settings, secret, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    site_id,
                    domain_key,
                    domain,
                    name or domain,
                    owner_id,
                    timezone,
                    retention_days,
                    (settings or SiteSettings()).to_json(),
                    secrets.token_bytes(32),
                    _now(),
                ),
            )
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

    def list_sites(self, owner_id: str | None = None) -> list[Site]:
        live = "id NOT IN (SELECT id FROM deleted_sites)"
        if owner_id is None:
            rows = self._conn().execute(f"SELECT * FROM sites WHERE {live} ORDER BY created_at, id").fetchall()  # noqa: S608
        else:
            rows = (
                self._conn()
                .execute(f"SELECT * FROM sites WHERE owner_id = ? AND {live} ORDER BY created_at, id",  # noqa: S608
                         (owner_id,))
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
            "SELECT id FROM users WHERE is_admin = 1 ORDER BY created_at, id LIMIT 1"
        ).fetchone()
        return self.get_user(row["id"]) if row else None

    def list_users(self) -> list[User]:
        rows = self._conn().execute("SELECT * FROM users ORDER BY created_at, id").fetchall()
        return [User(r["id"], r["email"], r["name"], bool(r["is_admin"]), r["created_at"]) for r in rows]

    def create_token(self, user_id: str, name: str = "") -> str:
        """Create an API token for `user_id` and return it in plain text (the only time it is)."""
        token = "ls_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (id, user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (new_id(), user_id, name, hash_token(token), _now()),
            )
        return token

    def _token(self, row: Any) -> Token:
        return Token(row["id"], row["user_id"], row["name"], row["created_at"])

    def list_tokens(self, user_id: str | None = None) -> list[Token]:
        """Every token (of ``user_id`` only, when given), oldest first."""
        sql = "SELECT id, user_id, name, created_at FROM tokens"
        args: tuple[str, ...] = ()
        if user_id is not None:
            sql, args = sql + " WHERE user_id = ?", (user_id,)
        return [self._token(r) for r in self._conn().execute(sql + " ORDER BY created_at, id", args).fetchall()]

    def get_token(self, token_id: str) -> Token | None:
        row = self._conn().execute(
            "SELECT id, user_id, name, created_at FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return self._token(row) if row else None

    def find_token(self, token: str) -> Token | None:
        """The metadata of a plain-text token, if it is valid."""
        row = self._conn().execute(
            "SELECT id, user_id, name, created_at FROM tokens WHERE token_hash = ?", (hash_token(token),)).fetchone()
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
            .execute("SELECT * FROM goals WHERE site_id = ? ORDER BY created_at, id", (site_id,))
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
            "SELECT * FROM shares WHERE site_id = ? ORDER BY created_at, id", (site_id,)).fetchall()
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
                " ORDER BY created_at, id", (domain,)).fetchall():
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
