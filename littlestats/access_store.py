"""Who may see a site besides its data: members and their roles, invitations, the audit log and
share links — the control-plane records of docs/access.md and docs/sharing.md.

``AccessStore`` holds their queries; ``littlestats.controlplane.ControlPlane`` (which owns the
SQLite connection, ``_conn`` and ``_tx``) inherits them, so callers use one store.
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from littlestats.ids import hash_token, new_id, now_iso

#: Site roles, weakest first: a role can do everything the ones before it can.
ROLES = ("viewer", "admin", "owner")
#: Token scopes (docs/access.md); a token without a scope list has every one.
SCOPES = ("stats:read", "sites:write", "admin")


def role_rank(role: str | None) -> int:
    """0 for no role, then 1 (viewer), 2 (admin), 3 (owner)."""
    return ROLES.index(role) + 1 if role in ROLES else 0


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


class LastOwner(ValueError):
    """A change that would leave a site without an owner."""


class AccessStore:
    """Members, invitations, the audit log and share links (mixed into ``ControlPlane``)."""

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

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
                       (site_id, user_id, role, now_iso()))

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
        now = now_iso()
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
                (now_iso(), actor_id, actor_email, action, site_id, target, orjson.dumps(details).decode()))
            return int(cursor.lastrowid or 0)

    def list_audit(self, site_id: str | None = None, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Newest first: the site's entries (every entry when ``site_id`` is ``None``)."""
        rows = self._conn().execute(
            "SELECT * FROM audit_log WHERE (? IS NULL OR site_id = ?) AND (? IS NULL OR id < ?)"
            " ORDER BY id DESC LIMIT ?", (site_id, site_id, before, before, limit)).fetchall()
        return [AuditEntry(r["id"], r["at"], r["actor_id"], r["actor_email"], r["action"], r["site_id"],
                           r["target"], orjson.loads(r["details"])) for r in rows]

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
                 orjson.dumps(list(embed_origins)).decode(), now_iso(), created_by),
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
                       (now_iso(), site_id, share_id))
        return self.get_share(site_id, share_id)
