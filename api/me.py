"""The caller: ``GET /api/v2/me`` and ``POST /api/v2/me/password``.

``GET`` answers ``{"user": {id, email, name, isAdmin} | null, "dev": bool}`` (``user`` is ``null``
only in dev mode without a token). ``POST /api/v2/me/password`` with ``{"current", "new"}`` changes
the caller's dashboard password: ``current`` must be the present one (``""`` for a user who has
none yet), ``new`` must follow the length rule (``dashboard.passwords``). Wrong guesses count
towards the same rate limit as failed logins. Changing the password ends every other dashboard
session of the user (the one making the change stays logged in).
"""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi

from api.auth import authenticate
from api.body import check_fields, json_body
from littlestats.controlplane import User
from littlestats.http import json_response


def public_user(user: User | None) -> dict[str, Any] | None:
    """A user as the API and the dashboard show it."""
    if user is None:
        return None
    return {"id": user.id, "email": user.email, "name": user.name, "isAdmin": user.is_admin}


class MeResource:
    """``GET /api/v2/me``: who the token or session belongs to."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        json_response(resp, {"user": public_user(principal.user), "dev": principal.dev})


class PasswordResource:
    """``POST /api/v2/me/password``: change the caller's dashboard password."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        from dashboard import passwords, sessions  # argon2 is loaded only where passwords are

        principal = authenticate(req, self.services)
        body = await json_body(req)
        check_fields(body, ("current", "new"))
        for name in ("current", "new"):
            if not isinstance(body.get(name), str):
                raise falcon.HTTPBadRequest(description=f"invalid parameter '{name}': expected a string")
        user = principal.user
        if user is None:
            raise falcon.HTTPForbidden(
                description="dev mode without a login has no user: set passwords with "
                            "`littlestats users passwd EMAIL`")
        try:
            passwords.check_rule(body["new"])
        except passwords.PasswordRuleError as exc:
            raise falcon.HTTPBadRequest(description=f"invalid parameter 'new': {exc}") from None
        store = sessions.store_for(self.services)
        email = user.email or user.id
        address = sessions.client_address(req, self.services)
        wait, attempt = store.start_attempt(email, address)
        if wait is not None:
            raise falcon.HTTPTooManyRequests(
                description=f"too many wrong passwords; try again in {wait} seconds", retry_after=wait)
        control = self.services.control
        stored = control.password_hash(user.id)
        if stored is None:
            correct = body["current"] == ""
        else:
            async with passwords.CHECKS:
                correct = await asyncio.to_thread(passwords.verify_password, stored, body["current"])
        if not correct:
            raise falcon.HTTPForbidden(description="invalid parameter 'current': not your current password")
        store.attempt_succeeded(email, attempt)
        async with passwords.CHECKS:
            new_hash = await asyncio.to_thread(passwords.hash_password, body["new"])
        control.set_password_hash(user.id, new_hash)
        ended = store.end_all(user.id, keep=principal.session)
        json_response(resp, {"changed": True, "sessionsEnded": ended})
