"""API tokens: ``GET/POST /api/v2/tokens``, ``DELETE /api/v2/tokens/{token}``.

A token is ``{id, userId, name, createdAt}``; the plain token appears once, in the answer of the
POST that creates it (``token``), and is stored only as a hash. Everyone lists and revokes their
own tokens; admins every token. Someone else's token answers 404, exactly like a token that does
not exist, so ids of other owners' tokens cannot be probed.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from api.auth import Principal, authenticate
from api.sites import json_body
from littlestats.controlplane import Token
from littlestats.http import json_response

MAX_NAME = 200


def _visible(principal: Principal, token: Token | None) -> bool:
    return token is not None and (principal.is_admin or token.user_id == principal.user_id)


class TokensResource:
    """``GET /api/v2/tokens`` (the caller's tokens; an admin's: all) and ``POST`` (create one)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        owner = None if principal.is_admin else principal.user_id
        json_response(resp, {"tokens": [t.public() for t in self.services.control.list_tokens(owner)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        body = await json_body(req)
        unknown = sorted(set(body) - {"name"})
        if unknown:
            raise falcon.HTTPBadRequest(description=f"invalid parameter '{unknown[0]}': unknown field; known: name")
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME or "\x00" in name:
            raise falcon.HTTPBadRequest(
                description=f"invalid parameter 'name': expected a string of at most {MAX_NAME} characters")
        if principal.user is None:  # dev mode without a token: nobody to own it
            raise falcon.HTTPForbidden(description="send a token to create more (or use `littlestats token create`)")
        control = self.services.control
        plain = control.create_token(principal.user.id, name=name.strip())
        token = control.find_token(plain)
        assert token is not None
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
        json_response(resp, {"id": found.id, "revoked": True})
