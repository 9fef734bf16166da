"""Site members, invitations and ownership (docs/access.md).

``GET /api/v2/sites/{site}/members``
    ``{"members": [{userId, email, name, role, since}], "role": <the caller's>}``.
``PATCH /api/v2/sites/{site}/members/{user}`` with ``{"role"}``, ``DELETE …/members/{user}``
    change a member's role, remove a member. A site always keeps an owner: taking the role of its
    last owner answers 409.
``POST /api/v2/sites/{site}/leave``
    the caller stops being a member (409 for the last owner: transfer ownership first).
``POST /api/v2/sites/{site}/transfer`` with ``{"userId"}`` or ``{"email"}``
    that member becomes an owner and the caller an admin.
``GET/POST /api/v2/sites/{site}/invitations``, ``DELETE …/invitations/{invitation}``
    ``POST {"email", "role"}`` creates a one-time link valid for ``INVITATION_DAYS`` days; the
    answer holds it (``url``, ``path``, ``token``) — the only time it is shown, since only a
    hash is stored. No mail is sent: pass the link on yourself.
``POST /api/v2/invitations/accept`` with ``{"token"}``
    the signed-in caller (token or dashboard session) joins with the invitation's role; without
    a credential, ``{"token", "password", "name"?}`` creates the invited user (when no user has
    that email yet) with that dashboard password. The dashboard's ``/invite/{token}`` page does
    the same with a form.

Who may call which is ``api.routes.POLICY``'s (owners manage members and invitations; admins
may read them). Every change is in the audit log (``littlestats.audit``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import falcon
import falcon.asgi

from api.auth import Principal, authenticate, authorize
from api.body import bad_param, check_fields, json_body
from littlestats import audit
from littlestats.controlplane import ROLES, Invitation, LastOwner, Site, User
from littlestats.http import json_response

INVITATION_DAYS = 7
MAX_EMAIL = 320



def _role(body: dict[str, Any]) -> str:
    role = body.get("role")
    if role not in ROLES:
        raise bad_param("role", f"expected one of: {', '.join(ROLES)}")
    return str(role)


def valid_email(value: Any) -> str:
    """A plausible email address, trimmed (400 naming ``email`` otherwise)."""
    if (not isinstance(value, str) or not 3 <= len(value.strip()) <= MAX_EMAIL or "@" not in value
            or any(c.isspace() or c < " " for c in value.strip()) or value.strip().startswith("@")
            or value.strip().endswith("@")):
        raise bad_param("email", "expected an email address such as ana@example.com")
    return value.strip()


def _last_owner(exc: LastOwner) -> falcon.HTTPConflict:
    return falcon.HTTPConflict(description=str(exc))


def invitation_path(plain: str) -> str:
    return f"/invite/{plain}"


class MembersResource:
    """``GET /api/v2/sites/{site}/members``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _principal, found = authorize(req, self.services, site)
        access = getattr(req.context, "access", None)
        members = self.services.control.list_members(found.id)
        json_response(resp, {"members": [m.public() for m in members],
                             "role": access[2] if access else None})


class MemberResource:
    """``PATCH/DELETE /api/v2/sites/{site}/members/{user}``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _member(self, found: Site, user: str) -> str:
        control = self.services.control
        role = control.role_of(user, found.id) if len(user) <= 100 else None
        if role is None:
            raise falcon.HTTPNotFound(description=f"user {user!r} is not a member of this site")
        return role

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, user: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("role",))
        role = _role(body)
        before = self._member(found, user)
        try:
            self.services.control.change_role(found.id, user, role)
        except LastOwner as exc:
            raise _last_owner(exc) from None
        if role != before:
            audit.record(self.services.control, audit.MEMBER_ROLE_CHANGED, actor=principal, site_id=found.id,
                         target=user, details={"from": before, "to": role})
        json_response(resp, {"userId": user, "role": role})

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, user: str) -> None:
        principal, found = authorize(req, self.services, site)
        before = self._member(found, user)
        try:
            self.services.control.remove_member(found.id, user)
        except LastOwner as exc:
            raise _last_owner(exc) from None
        audit.record(self.services.control, audit.MEMBER_REMOVED, actor=principal, site_id=found.id,
                     target=user, details={"role": before})
        json_response(resp, {"userId": user, "removed": True})


class LeaveResource:
    """``POST /api/v2/sites/{site}/leave``: the caller stops being a member."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        control = self.services.control
        role = control.role_of(principal.user_id, found.id) if principal.user_id else None
        if role is None:
            raise falcon.HTTPConflict(description="you are not a member of this site (server admins see "
                                                  "every site without being members)")
        try:
            control.remove_member(found.id, principal.user_id)
        except LastOwner as exc:
            raise _last_owner(exc) from None
        audit.record(control, audit.MEMBER_LEFT, actor=principal, site_id=found.id, target=principal.user_id,
                     details={"role": role})
        json_response(resp, {"siteId": found.id, "left": True})


class TransferResource:
    """``POST /api/v2/sites/{site}/transfer``: another member becomes the owner."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("userId", "email"))
        control = self.services.control
        if isinstance(body.get("userId"), str) and len(body["userId"]) <= 100:
            target = control.get_user(body["userId"])
        elif "email" in body:
            target = control.find_user_by_email(valid_email(body["email"]))
        else:
            raise bad_param("userId", "required: the member (user id, or 'email') to make the owner")
        if target is None or control.role_of(target.id, found.id) is None:
            raise bad_param("userId", "not a member of this site: invite them first")
        if target.id == principal.user_id:
            raise bad_param("userId", "that is you")
        control.transfer_ownership(found.id, principal.user_id or "", target.id)
        audit.record(control, audit.OWNERSHIP_TRANSFERRED, actor=principal, site_id=found.id, target=target.id,
                     details={"to": target.email or target.name})
        json_response(resp, {"siteId": found.id, "owner": target.id, "yourRole": control.role_of(
            principal.user_id or "", found.id)})


def _public_invitation(invitation: Invitation) -> dict[str, Any]:
    return {**invitation.public(), "usable": invitation.usable()}


class InvitationsResource:
    """``GET/POST /api/v2/sites/{site}/invitations``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _principal, found = authorize(req, self.services, site)
        json_response(resp, {"invitations": [_public_invitation(i)
                                             for i in self.services.control.list_invitations(found.id)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("email", "role"))
        email = valid_email(body.get("email"))
        role = _role(body) if "role" in body else "viewer"
        invitation, plain = create_invitation(self.services.control, found, email, role, principal)
        path = invitation_path(plain)
        json_response(resp, {**_public_invitation(invitation), "token": plain, "path": path,
                             "url": req.prefix + path}, status=falcon.HTTP_201)


def create_invitation(control: Any, site: Site, email: str, role: str, actor: Any) -> tuple[Invitation, str]:
    """Create an invitation (and record it); the API and the command line share this."""
    user = actor if isinstance(actor, User) else getattr(actor, "user", None)
    invitation, plain = control.create_invitation(site.id, email, role, user.id if user else None,
                                                  INVITATION_DAYS * 86400)
    audit.record(control, audit.INVITATION_CREATED, actor=actor, site_id=site.id, target=invitation.id,
                 details={"email": email, "role": role})
    return invitation, plain


class InvitationResource:
    """``DELETE /api/v2/sites/{site}/invitations/{invitation}``: withdraw an invitation."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str,
                        invitation: str) -> None:
        principal, found = authorize(req, self.services, site)
        if len(invitation) > 100 or not self.services.control.delete_invitation(found.id, invitation):
            raise falcon.HTTPNotFound(description=f"invitation {invitation!r} not found")
        audit.record(self.services.control, audit.INVITATION_WITHDRAWN, actor=principal, site_id=found.id,
                     target=invitation)
        json_response(resp, {"id": invitation, "deleted": True})


class InvitationError(Exception):
    """Why an invitation cannot be used (``status``: the HTTP status to answer)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def usable_invitation(control: Any, plain: Any) -> Invitation:
    """The invitation of a link's token, if it can still be used."""
    invitation = control.find_invitation(plain) if isinstance(plain, str) and 0 < len(plain) <= 200 else None
    if invitation is None:
        raise InvitationError(falcon.HTTP_404, "no such invitation: check that the whole link was copied")
    if not invitation.usable():
        raise InvitationError(falcon.HTTP_410, "this invitation was already used or has expired: ask the "
                                               "site's owner for a new one")
    return invitation


def join(control: Any, invitation: Invitation, user: User) -> None:
    """Make `user` a member with the invitation's role (once; recorded in the audit log)."""
    before = control.role_of(user.id, invitation.site_id)
    if not control.accept_invitation(invitation.id, user.id):
        raise InvitationError(falcon.HTTP_410, "this invitation was already used or has expired: ask the "
                                               "site's owner for a new one")
    audit.record(control, audit.INVITATION_ACCEPTED, actor=user, site_id=invitation.site_id,
                 target=invitation.id, details={"role": invitation.role})
    if before is None:
        audit.record(control, audit.MEMBER_ADDED, actor=user, site_id=invitation.site_id, target=user.id,
                     details={"role": invitation.role, "via": "invitation"})


async def new_invited_user(control: Any, invitation: Invitation, password: str, name: str) -> User:
    """Create the invited person's user with a dashboard password (``InvitationError`` when a
    user with that email exists: they sign in and open the link again)."""
    from dashboard import passwords  # argon2 is loaded only where passwords are

    if control.find_user_by_email(invitation.email) is not None:
        raise InvitationError(falcon.HTTP_409, f"there already is a user {invitation.email}: log in first, "
                                               "then open the invitation link again to join")
    try:
        passwords.check_rule(password)
    except passwords.PasswordRuleError as exc:
        raise InvitationError(falcon.HTTP_400, f"invalid parameter 'password': {exc}") from None
    async with passwords.CHECKS:
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
    try:
        user = control.create_user(email=invitation.email, name=name or invitation.email)
    except sqlite3.IntegrityError:  # the same form sent twice at once: the other one made the user
        raise InvitationError(falcon.HTTP_409, f"there already is a user {invitation.email}: log in, then "
                                               "open the invitation link again to join") from None
    control.set_password_hash(user.id, password_hash)
    return user


class AcceptResource:
    """``POST /api/v2/invitations/accept``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        from dashboard import sessions

        body = await json_body(req)
        check_fields(body, ("token", "password", "name"))
        control = self.services.control
        signed_in = req.get_header("Authorization") is not None or sessions.has_session_cookie(req)
        try:
            invitation = usable_invitation(control, body.get("token"))
            if signed_in:
                principal: Principal = authenticate(req, self.services)
                if principal.user is None:
                    raise bad_param("token", "dev mode without a login has no user to join")
                user = principal.user
            else:
                password, name = body.get("password"), body.get("name", "")
                if not isinstance(password, str):
                    raise bad_param("password", "required for a new user (or send your token to join as yourself)")
                if not isinstance(name, str) or len(name) > 200:
                    raise bad_param("name", "expected a string of at most 200 characters")
                user = await new_invited_user(control, invitation, password, name.strip())
            join(control, invitation, user)
        except InvitationError as exc:
            raise falcon.HTTPError(exc.status, description=str(exc)) from None
        json_response(resp, {"siteId": invitation.site_id, "role": control.role_of(user.id, invitation.site_id),
                             "userId": user.id, "email": user.email})
