"""Control-plane schema versions and the migrations between them.

The SQLite file carries its schema version in ``PRAGMA user_version``. ``MIGRATIONS[n - 1]`` turns
version ``n - 1`` into version ``n``; ``migrate`` applies the missing ones in order, each in the
transaction the caller holds (``ControlPlane`` opens one with ``BEGIN IMMEDIATE``, so two processes
starting together migrate once), and logs each. A file written by a newer LittleStats (its version
above ``LATEST``) is refused: this code would not know what its tables mean.

A change to the control-plane schema is a new entry at the end of ``MIGRATIONS``; an entry is never
edited once released, since data directories in the field have already run it.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from littlestats.config import ConfigError

log = logging.getLogger("littlestats.migrations")


@dataclass(frozen=True)
class Migration:
    """One step: the SQL that turns the previous version into this one."""

    version: int
    description: str
    sql: str


MIGRATIONS = (
    Migration(1, "users, tokens, sites, goals, daily salts", """
    CREATE TABLE users (
        id          TEXT PRIMARY KEY,
        email       TEXT UNIQUE,
        name        TEXT NOT NULL DEFAULT '',
        is_admin    INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name        TEXT NOT NULL DEFAULT '',
        token_hash  TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        last_used_at TEXT
    );
    CREATE TABLE sites (
        id             TEXT PRIMARY KEY,
        domain_key     TEXT NOT NULL UNIQUE,
        domain         TEXT NOT NULL,
        name           TEXT NOT NULL,
        owner_id       TEXT REFERENCES users(id) ON DELETE SET NULL,
        timezone       TEXT NOT NULL DEFAULT 'UTC',
        retention_days INTEGER NOT NULL DEFAULT 0,
        settings       TEXT NOT NULL DEFAULT '{}',
        secret         BLOB NOT NULL,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX sites_owner ON sites(owner_id);
    CREATE TABLE goals (
        id         TEXT PRIMARY KEY,
        site_id    TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ('event', 'page')),
        value      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (site_id, kind, value)
    );
    CREATE TABLE salts (
        day  TEXT PRIMARY KEY,
        salt BLOB NOT NULL
    );
    """),
    # The dashboard's login: a password hash per user (null: the user signs in with tokens only).
    Migration(2, "users.password_hash for dashboard sign-in", """
    ALTER TABLE users ADD COLUMN password_hash TEXT;
    """),
    # Dashboard sign-in sessions (only a hash of each session id is stored) and failed sign-ins
    # (an HMAC of the email or client address), for the rate limit every worker shares.
    Migration(3, "dashboard sessions and failed sign-ins", """
    CREATE TABLE IF NOT EXISTS dashboard_sessions (
        id_hash    TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dashboard_sessions_user ON dashboard_sessions(user_id);
    CREATE TABLE IF NOT EXISTS login_failures (subject TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS login_failures_subject ON login_failures(subject, at);
    """),
    # Deleted sites: kept after the site's row is gone, so that its events still in a write-ahead
    # log or a sealed file are never loaded again (site ids are random and never reused).
    Migration(4, "deleted sites", """
    CREATE TABLE IF NOT EXISTS deleted_sites (id TEXT PRIMARY KEY, deleted_at TEXT NOT NULL);
    """),
    # Teams and roles (docs/access.md): a site's members with their role (every site's former
    # owner becomes its first owner member), one-time invitations (only a hash of each link's
    # token is stored), token scopes, site lists and expiry (NULL: as before, every right of the
    # token's user), and the audit log of administrative actions (no visitor data).
    Migration(5, "site members, invitations, token scopes, audit log", """
    CREATE TABLE IF NOT EXISTS site_members (
        site_id    TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
        created_at TEXT NOT NULL,
        PRIMARY KEY (site_id, user_id)
    );
    CREATE INDEX IF NOT EXISTS site_members_user ON site_members(user_id);
    INSERT OR IGNORE INTO site_members (site_id, user_id, role, created_at)
        SELECT id, owner_id, 'owner', created_at FROM sites WHERE owner_id IS NOT NULL;
    CREATE TABLE IF NOT EXISTS invitations (
        id          TEXT PRIMARY KEY,
        token_hash  TEXT NOT NULL UNIQUE,
        site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        email       TEXT NOT NULL,
        role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
        invited_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
        created_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        used_at     TEXT,
        used_by     TEXT REFERENCES users(id) ON DELETE SET NULL
    );
    CREATE INDEX IF NOT EXISTS invitations_site ON invitations(site_id);
    ALTER TABLE tokens ADD COLUMN scopes TEXT;
    ALTER TABLE tokens ADD COLUMN sites TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at TEXT;
    CREATE TABLE IF NOT EXISTS audit_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          TEXT NOT NULL,
        actor_id    TEXT,
        actor_email TEXT,
        action      TEXT NOT NULL,
        site_id     TEXT,
        target      TEXT,
        details     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX IF NOT EXISTS audit_log_site ON audit_log(site_id, id);
    """),
    # Share links: a read-only dashboard of one site at /share/{slug}. The slug is a bearer secret,
    # so only its SHA-256 is stored (like API tokens); `slug_hint` is its first characters, to tell
    # links apart. `embed_origins` is a JSON list of the origins that may frame the share.
    Migration(6, "share links", """
    CREATE TABLE IF NOT EXISTS shares (
        id            TEXT PRIMARY KEY,
        site_id       TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        slug_hash     TEXT NOT NULL UNIQUE,
        slug_hint     TEXT NOT NULL,
        label         TEXT NOT NULL DEFAULT '',
        password_hash TEXT,
        embed_origins TEXT NOT NULL DEFAULT '[]',
        created_at    TEXT NOT NULL,
        created_by    TEXT REFERENCES users(id) ON DELETE SET NULL,
        revoked_at    TEXT
    );
    CREATE INDEX IF NOT EXISTS shares_site ON shares(site_id);
    """),
    # Imports of other tools' data (interop.imports): one row per (site, source, file content),
    # with its progress, so that re-importing a file is a no-op and a crashed import resumes.
    Migration(7, "imports", """
    CREATE TABLE IF NOT EXISTS imports (
        id               TEXT PRIMARY KEY,
        site_id          TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        source           TEXT NOT NULL,
        file_name        TEXT NOT NULL,
        file_sha256      TEXT NOT NULL,
        file_size        INTEGER NOT NULL,
        status           TEXT NOT NULL,
        cutoff           TEXT,
        batch_events     INTEGER,
        batches_done     INTEGER NOT NULL DEFAULT 0,
        bytes_read       INTEGER NOT NULL DEFAULT 0,
        rows_read        INTEGER NOT NULL DEFAULT 0,
        events_written   INTEGER NOT NULL DEFAULT 0,
        skipped          TEXT NOT NULL DEFAULT '{}',
        first_ts         TEXT,
        last_ts          TEXT,
        message          TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        finished_at      TEXT
    );
    CREATE INDEX IF NOT EXISTS imports_site ON imports(site_id);
    """),
    # Reports that arrive (notify/, docs/reports.md): mailed reports, traffic alerts, webhooks and
    # their delivery log. ``last_period`` / ``last_hour`` / ``goals_checked_until`` are the
    # watermarks that make a restart neither repeat nor skip a period or an hour.
    Migration(8, "report subscriptions, alert rules, webhooks and their deliveries", """
    CREATE TABLE IF NOT EXISTS report_subscriptions (
        id           TEXT PRIMARY KEY,
        site_id      TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        email        TEXT NOT NULL,
        frequency    TEXT NOT NULL CHECK (frequency IN ('weekly', 'monthly')),
        last_period  TEXT,
        created_at   TEXT NOT NULL,
        created_by   TEXT,
        UNIQUE (site_id, email, frequency)
    );
    CREATE TABLE IF NOT EXISTS alert_rules (
        id                 TEXT PRIMARY KEY,
        site_id            TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        direction          TEXT NOT NULL CHECK (direction IN ('spike', 'drop')),
        threshold_percent  INTEGER NOT NULL,
        min_visitors       INTEGER NOT NULL,
        recipients         TEXT NOT NULL DEFAULT '[]',
        webhooks           INTEGER NOT NULL DEFAULT 0,
        firing             INTEGER NOT NULL DEFAULT 0,
        last_hour          TEXT,
        last_fired_at      TEXT,
        created_at         TEXT NOT NULL,
        created_by         TEXT
    );
    CREATE INDEX IF NOT EXISTS alert_rules_site ON alert_rules(site_id);
    CREATE TABLE IF NOT EXISTS webhooks (
        id                   TEXT PRIMARY KEY,
        site_id              TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        url                  TEXT NOT NULL,
        secret               TEXT NOT NULL,
        events               TEXT NOT NULL,
        goals_checked_until  TEXT,
        created_at           TEXT NOT NULL,
        created_by           TEXT
    );
    CREATE INDEX IF NOT EXISTS webhooks_site ON webhooks(site_id);
    CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id        TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        site_id           TEXT NOT NULL,
        event             TEXT NOT NULL,
        payload           TEXT NOT NULL,
        status            TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts          TEXT NOT NULL DEFAULT '[]',
        next_attempt_at   TEXT,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
    CREATE INDEX IF NOT EXISTS webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);
    """),
    # Goals get a display name (unique per site: filters and the goal dimension use it), an
    # optional property condition for event goals and a revenue flag. SQLite cannot change a
    # UNIQUE constraint in place, so the table is rebuilt; existing goals keep their ids and get
    # the names their definitions imply ('Visit /path' for a page goal, the event name otherwise).
    Migration(9, "goal names, property conditions and revenue goals", """
    CREATE TABLE goals_next (
        id         TEXT PRIMARY KEY,
        site_id    TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL CHECK (kind IN ('event', 'page')),
        value      TEXT NOT NULL,
        prop_key   TEXT,
        prop_value TEXT,
        revenue    INTEGER NOT NULL DEFAULT 0,
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (site_id, name)
    );
    INSERT OR IGNORE INTO goals_next (id, site_id, kind, value, name, created_at)
        SELECT id, site_id, kind, value, CASE kind WHEN 'page' THEN 'Visit ' || value ELSE value END, created_at
        FROM goals ORDER BY created_at, rowid;
    DROP TABLE goals;
    ALTER TABLE goals_next RENAME TO goals;
    CREATE INDEX IF NOT EXISTS goals_site ON goals(site_id)
    """),
    # Saved segments (api/segments.py): a named filter set per site, usable by name in every query.
    Migration(10, "segments", """
    CREATE TABLE IF NOT EXISTS segments (
        id          TEXT PRIMARY KEY,
        site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        filters     TEXT NOT NULL,
        created_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        UNIQUE (site_id, name)
    );
    """),
    # Funnels (warehouse.query.funnels): a site's named, ordered steps and window, as JSON.
    Migration(11, "funnels", """
    CREATE TABLE IF NOT EXISTS funnels (
        id          TEXT PRIMARY KEY,
        site_id     TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        steps       TEXT NOT NULL,
        per         TEXT NOT NULL DEFAULT 'visit',
        window_days INTEGER,
        created_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        UNIQUE (site_id, name)
    );
    CREATE INDEX IF NOT EXISTS funnels_site ON funnels(site_id);
    """),
)

LATEST = MIGRATIONS[-1].version


class SchemaTooNew(ConfigError):
    """A data directory written by a newer LittleStats than this one."""


def schema_version(db: sqlite3.Connection) -> int:
    """The control-plane schema version of an open database (0: empty)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_supported(version: int, path: object) -> None:
    """Refuse a schema version this code does not know, saying what to do."""
    if version > LATEST:
        raise SchemaTooNew(
            f"{path} has control-plane schema version {version}, but this LittleStats knows only up"
            f" to version {LATEST}: it was written by a newer release. Upgrade LittleStats (pip"
            " install -U littlestats), or restore a backup made by this version."
        )


def migrate(db: sqlite3.Connection, path: object = "control.sqlite3") -> list[Migration]:
    """Apply every migration the database lacks, in order, inside the caller's transaction.

    Returns the migrations applied (none when the database is up to date). Re-running is a no-op.
    """
    version = schema_version(db)
    check_supported(version, path)
    applied = []
    for step in MIGRATIONS[version:]:
        for statement in step.sql.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {step.version:d}")
        applied.append(step)
        if version:  # a new database is simply created; an existing one is being upgraded
            log.warning("control plane %s: migrated to schema version %d (%s)", path, step.version,
                        step.description)
    return applied
