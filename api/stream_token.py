"""Short-lived signed stream tokens for ``?token=`` (browsers' ``EventSource`` cannot send headers).

A token names one site, the user it was minted for, the API token it was minted with and an
expiry, signed with HMAC-SHA256 under a server secret kept in the control plane (so every worker
verifies what any worker minted). It only opens the real-time stream and current stats of that
site; it is checked when a stream starts, so an open stream outlives its expiry, and a reconnect
needs a fresh one. Revoking the API token it was minted with refuses it from then on and ends the
streams it opened (``api.realtime.RevocationWatch``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

SECRET_NAME = "stream-token"
DEFAULT_TTL = 600
MIN_TTL = 10
MAX_TTL = 3600


class StreamTokenError(ValueError):
    """Why a stream token was refused (the message is safe to show)."""


@dataclass(frozen=True)
class StreamGrant:
    site_id: str
    user_id: str | None
    expires: int  # epoch seconds
    token_id: str | None = None  # the API token it was minted with (none in dev mode without one)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: bytes, site_id: str, user_id: str | None, ttl: int = DEFAULT_TTL,
         now: float | None = None, token_id: str | None = None) -> tuple[str, int]:
    """A token for `site_id`, and its expiry in epoch seconds."""
    expires = int(now if now is not None else time.time()) + ttl
    claims: dict[str, object] = {"s": site_id, "u": user_id, "e": expires}
    if token_id is not None:
        claims["t"] = token_id
    body = _b64(orjson.dumps(claims))
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}", expires


def verify(secret: bytes, token: str, now: float | None = None) -> StreamGrant:
    """The grant a token carries; ``StreamTokenError`` when it is malformed, forged or expired."""
    body, _, mac = token.partition(".")
    if not body or not mac:
        raise StreamTokenError("malformed stream token")
    expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(mac)
        claims = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        raise StreamTokenError("malformed stream token") from None
    if not hmac.compare_digest(expected, given):
        raise StreamTokenError("invalid stream token")
    if not isinstance(claims, dict) or not isinstance(claims.get("s"), str) or not isinstance(claims.get("e"), int):
        raise StreamTokenError("malformed stream token")
    if claims["e"] <= (now if now is not None else time.time()):
        raise StreamTokenError("stream token expired; mint a new one")
    user, token_id = claims.get("u"), claims.get("t")
    return StreamGrant(claims["s"], user if isinstance(user, str) else None, claims["e"],
                       token_id if isinstance(token_id, str) else None)
