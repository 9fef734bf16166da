"""Dashboard sessions, CSRF tokens and the login rate limit, all held in the control plane.

**Session cookie** ``ls_session``: ``<id>.<signature>``, where ``id`` is 32 random bytes and the
signature an HMAC of it with the server secret ``dashboard-session`` (so a forged cookie is refused
before any lookup). Only SHA-256 hashes of session ids are stored (table ``dashboard_sessions``), so
a copy of the database cannot be replayed as a login; deleting the row ends the session at once on
every worker (logout, password change). HTTP-only, ``SameSite=Lax``, ``Secure`` when the request
came over HTTPS. A session lasts ``LIFETIME`` from its last use (sliding): its expiry moves forward
at most once per ``REFRESH_EVERY``.

**CSRF token**: an HMAC of the session id, so it needs no storage and changes with the session. The
page gets it in its ``<meta name="littlestats">``; the API wants it in ``X-CSRF-Token`` on every
request but GET/HEAD/OPTIONS, and forms in a ``csrf`` field. The login form, before any session,
uses a double-submit token: a random ``ls_login`` cookie and a form field that is its HMAC.

**Login rate limit**: every password attempt is recorded, before the password is checked, for the
email and for the client address (both stored as HMACs, never in clear) in ``login_failures``, and
forgotten when the password was right; ``FAILURES_ALLOWED`` failures within ``FAILURE_WINDOW``
seconds for either refuse further attempts until the oldest of them ages out. Counting and
recording are one control-plane transaction, so the limit is exact across workers, restarts and
guesses sent at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.geo import client_ip
from littlestats.controlplane import ControlPlane, User

COOKIE = "ls_session"
LOGIN_COOKIE = "ls_login"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME = 14 * 24 * 3600
REFRESH_EVERY = 3600
LOGIN_COOKIE_LIFETIME = 24 * 3600
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 15 * 60
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    """A valid session: whose it is, its CSRF token, and whether its cookie should be re-sent."""

    id_hash: str
    user: User
    csrf: str
    cookie: str
    refreshed: bool


class SessionStore:
    """Sessions and login failures of one control plane. One per worker process; thread-safe."""

    def __init__(self, control: ControlPlane, *, clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.clock = clock
        self._key = control.server_secret("dashboard-session")
        # Its tables are part of the control-plane schema (littlestats.migrations, version 3).

    # signing ---------------------------------------------------------------------------------
    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    def _subject(self, kind: str, value: str) -> str:
        return f"{kind}:{self._mac('subject', value)}"

    # sessions --------------------------------------------------------------------------------
    def create(self, user: User) -> Session:
        """Start a session for `user`; its ``cookie`` is the value to set."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self.control._tx() as db:
            db.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO dashboard_sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (_hash(session_id), user.id, now, now + LIFETIME),
            )
        return Session(_hash(session_id), user, self._mac("csrf", session_id),
                       f"{session_id}.{self._mac('session', session_id)}", True)

    def read(self, cookie: str | None) -> Session | None:
        """The live session a cookie value names, or ``None`` (forged, ended or expired)."""
        if not cookie or len(cookie) > 200:
            return None
        session_id, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._mac("session", session_id).encode()):
            return None
        id_hash, now = _hash(session_id), self.clock()
        row = self.control._conn().execute(
            "SELECT user_id, expires_at FROM dashboard_sessions WHERE id_hash = ? AND expires_at > ?",
            (id_hash, now),
        ).fetchone()
        if row is None:
            return None
        user = self.control.get_user(row["user_id"])
        if user is None:
            return None
        refreshed = row["expires_at"] < now + LIFETIME - REFRESH_EVERY
        if refreshed:
            with self.control._tx() as db:
                db.execute("UPDATE dashboard_sessions SET expires_at = ? WHERE id_hash = ?",
                           (now + LIFETIME, id_hash))
        return Session(id_hash, user, self._mac("csrf", session_id), cookie, refreshed)

    def end(self, id_hash: str) -> None:
        with self.control._tx() as db:
            db.execute("DELETE FROM dashboard_sessions WHERE id_hash = ?", (id_hash,))

    def end_all(self, user_id: str, keep: str | None = None) -> int:
        """End every session of `user_id` (but `keep`, an id hash); how many were ended."""
        with self.control._tx() as db:
            return db.execute(
                "DELETE FROM dashboard_sessions WHERE user_id = ? AND id_hash IS NOT ?", (user_id, keep)
            ).rowcount

    # the login form's CSRF token (before there is a session) ---------------------------------
    def new_login_cookie(self) -> str:
        return secrets.token_urlsafe(24)

    def login_token(self, login_cookie: str) -> str:
        return self._mac("login", login_cookie)

    def login_token_valid(self, login_cookie: str | None, token: str | None) -> bool:
        if not login_cookie or not token or len(login_cookie) > 100:
            return False
        return hmac.compare_digest(token.encode(), self.login_token(login_cookie).encode())

    # login rate limit -----------------------------------------------------------------------
    def _subjects(self, email: str, address: str | None) -> list[str]:
        subjects = [self._subject("email", email.strip().lower())]
        if address:
            subjects.append(self._subject("ip", address))
        return subjects

    def start_attempt(self, email: str, address: str | None) -> tuple[int | None, list[int]]:
        """Count a password attempt *before* the password is checked, so that guesses sent at once
        to any worker are all counted: ``(seconds to wait, [])`` when the limit is reached, else
        ``(None, the attempt's rows)`` — hand those to ``attempt_succeeded`` if it was right."""
        now, wait = self.clock(), 0.0
        subjects = self._subjects(email, address)
        with self.control._tx() as db:  # BEGIN IMMEDIATE: one count-and-record at a time, everywhere
            db.execute("DELETE FROM login_failures WHERE at <= ?", (now - FAILURE_WINDOW,))
            for subject in subjects:
                rows = db.execute(
                    "SELECT at FROM login_failures WHERE subject = ? ORDER BY at DESC LIMIT ?",
                    (subject, FAILURES_ALLOWED),
                ).fetchall()
                if len(rows) >= FAILURES_ALLOWED:
                    wait = max(wait, rows[-1]["at"] + FAILURE_WINDOW - now)
            if wait > 0:
                return max(1, int(wait + 0.999)), []
            rows_ids = []
            for subject in subjects:
                cursor = db.execute("INSERT INTO login_failures (subject, at) VALUES (?, ?)", (subject, now))
                rows_ids.append(int(cursor.lastrowid or 0))
        return None, rows_ids

    def attempt_succeeded(self, email: str, rows: list[int]) -> None:
        """The password was right: forget this attempt and the email's earlier failures (not the
        address's: one account's success must not reset a guesser's count)."""
        with self.control._tx() as db:
            db.executemany("DELETE FROM login_failures WHERE rowid = ?", [(r,) for r in rows])
            db.execute("DELETE FROM login_failures WHERE subject = ?", (self._subjects(email, None)[0],))


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def store_for(services: Any) -> SessionStore:
    """The worker's session store (built once, kept in ``services.extras``)."""
    store = services.extras.get("dashboard_sessions")
    if store is None:
        store = services.extras["dashboard_sessions"] = SessionStore(services.control)
    return store


def session_of(req: Any, services: Any) -> Session | None:
    """The request's live session, from its ``ls_session`` cookie(s)."""
    values = req.get_cookie_values(COOKIE) or []
    store = store_for(services)
    for value in values[:3]:
        session = store.read(value)
        if session is not None:
            return session
    return None


def has_session_cookie(req: Any) -> bool:
    return bool(req.get_cookie_values(COOKIE))


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token).encode(), session.csrf.encode())


def is_https(req: Any, services: Any) -> bool:
    """Whether the browser's connection is HTTPS: directly, or per a trusted proxy's
    ``X-Forwarded-Proto``."""
    if req.scheme == "https":
        return True
    proto = req.get_header("X-Forwarded-Proto")
    if not proto or not req.remote_addr:
        return False
    try:
        peer = ipaddress.ip_address(req.remote_addr)
    except ValueError:
        return False
    if not any(peer in net for net in services.settings.trusted_networks()):
        return False
    return bool(proto.split(",")[0].strip().lower() == "https")


def client_address(req: Any, services: Any) -> str | None:
    """The client's address by the same trusted-proxy rule as ingest."""
    return client_ip(req.remote_addr, req.get_header("X-Forwarded-For"), services.settings.trusted_networks())

