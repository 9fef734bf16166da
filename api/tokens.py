"""API tokens: ``GET/POST /api/v2/tokens``, ``DELETE /api/v2/tokens/{token}``.

A token is ``{id, userId, name, createdAt, scopes, sites, expiresAt}``; the plain token appears
once, in the answer of the POST that creates it (``token``), and is stored only as a hash.

``POST`` takes ``name``, ``scopes`` (a list of ``stats:read``, ``sites:write``, ``admin``; default:
every scope the caller has), ``sites`` (site ids or domain keys the token is limited to; default:
none, i.e. every site of its user) and ``expiresAt`` (an ISO 8601 time in the future; default:
never). A token never gets more than the credential creating it: its scopes are a subset of the
caller's, its sites a subset of the caller's list (when the caller is limited), its expiry no
later than the caller's. Whatever a token carries, its user's role on a site is checked at every
request (docs/access.md), so a token loses what its user loses.

Everyone lists and revokes their own tokens; server admins every token. Someone else's token
answers 404, exactly like a token that does not exist, so ids of other users' tokens cannot be
probed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import falcon
import falcon.asgi

from api.auth import Principal, authenticate, role_on
from api.body import bad_param, check_fields, json_body
from littlestats import audit
from littlestats.controlplane import SCOPES, Token
from littlestats.http import json_response

MAX_NAME = 200
MAX_SITES = 100
FIELDS = ("name", "scopes", "sites", "expiresAt")


def _visible(principal: Principal, token: Token | None) -> bool:
    return token is not None and (principal.is_admin or token.user_id == principal.user_id)



def _scopes(body: dict[str, Any], principal: Principal) -> tuple[str, ...]:
    value = body.get("scopes")
    if value is None:
        return principal.scopes
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise bad_param("scopes", f"expected a non-empty list of: {', '.join(SCOPES)}")
    unknown = [v for v in value if v not in SCOPES]
    if unknown:
        raise bad_param("scopes", f"unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}")
    beyond = [v for v in value if v not in principal.scopes]
    if beyond:
        raise falcon.HTTPForbidden(description=f"invalid parameter 'scopes': the token you create with "
                                               f"cannot have {beyond[0]!r}, which yours lacks")
    return tuple(s for s in SCOPES if s in value)


def _sites(body: dict[str, Any], principal: Principal, services: Any) -> tuple[str, ...] | None:
    value = body.get("sites")
    if value is None:
        return principal.sites
    if (not isinstance(value, list) or not value or len(value) > MAX_SITES
            or not all(isinstance(v, str) and 0 < len(v) <= 100 for v in value)):
        raise bad_param("sites", f"expected a non-empty list of at most {MAX_SITES} site ids or domain keys")
    ids = []
    for ref in value:
        site = services.control.get_site(ref)
        if site is None or role_on(principal, site, services.control) is None:
            raise bad_param("sites", f"no site {ref!r} that you are a member of")
        ids.append(site.id)
    return tuple(dict.fromkeys(ids))


def _expiry(body: dict[str, Any], principal: Principal) -> str | None:
    value = body.get("expiresAt")
    limit = principal.token.expires_at if principal.token is not None else None
    if value is None:
        return limit
    if not isinstance(value, str) or len(value) > 40:
        raise bad_param("expiresAt", "expected an ISO 8601 time such as 2030-01-31T00:00:00Z")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        when = when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad_param("expiresAt", "expected an ISO 8601 time such as 2030-01-31T00:00:00Z") from None
    if when <= datetime.now(UTC):
        raise bad_param("expiresAt", "must be in the future")
    if limit is not None and when > datetime.fromisoformat(limit):
        raise bad_param("expiresAt", f"cannot outlive the token you create it with (it expires at {limit})")
    return when.isoformat(timespec="seconds")


class TokensResource:
    """``GET /api/v2/tokens`` (the caller's tokens; a server admin's: all) and ``POST`` (create one)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        owner = None if principal.is_admin else principal.user_id
        json_response(resp, {"tokens": [t.public() for t in self.services.control.list_tokens(owner)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        body = await json_body(req)
        check_fields(body, FIELDS)
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME or "\x00" in name:
            raise bad_param("name", f"expected a string of at most {MAX_NAME} characters")
        if principal.user is None:  # dev mode without a token: nobody to own it
            raise falcon.HTTPForbidden(description="send a token to create more (or use `littlestats token create`)")
        scopes, sites, expires = _scopes(body, principal), _sites(body, principal, self.services), \
            _expiry(body, principal)
        control = self.services.control
        plain = control.create_token(principal.user.id, name=name.strip(), scopes=scopes, sites=sites,
                                     expires_at=expires)
        token = control.find_token(plain)
        assert token is not None
        audit.record(control, audit.TOKEN_CREATED, actor=principal, target=token.id,
                     details={"name": token.name, "scopes": " ".join(token.scopes),
                              "sites": None if sites is None else " ".join(sites)})
        json_response(resp, {**token.public(), "token": plain}, status=falcon.HTTP_201)


class TokenResource:
    """``DELETE /api/v2/tokens/{token}``: revoke a token (it stops working at once; the stream
    tokens minted with it are refused, and the live streams it opened end within two seconds:
    ``api.realtime.RevocationWatch``)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str) -> None:
        principal = authenticate(req, self.services)
        control = self.services.control
        found = control.get_token(token) if len(token) <= 100 else None
        if found is None or not _visible(principal, found):
            raise falcon.HTTPNotFound(description=f"token {token!r} not found")
        control.delete_token(found.id)
        audit.record(control, audit.TOKEN_REVOKED, actor=principal, target=found.id,
                     details={"name": found.name, "owner": found.user_id})
        json_response(resp, {"id": found.id, "revoked": True})
