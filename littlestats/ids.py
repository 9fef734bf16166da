"""Identifiers, token hashes and timestamps of the control plane's records."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime


def now_iso() -> str:
    """Now, UTC, to the second (the control plane's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id(nbytes: int = 9) -> str:
    """A URL-safe random identifier."""
    return secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def hash_token(token: str) -> str:
    """SHA-256 (hex) of a bearer secret: tokens, invitation links and share slugs are kept only so."""
    return hashlib.sha256(token.encode()).hexdigest()
