"""Bearer-token authentication and site authorisation for every API resource.

Public names (stable; the real-time endpoints use them too):

``Principal``
    who is asking: ``user`` (a control-plane ``User``, or ``None`` in dev mode) and ``dev``
    (``True`` when the server runs with ``--dev``: authentication is off, loopback only, SPEC §11).
    ``principal.is_admin`` — admins (and dev mode) see every site.

``authenticate(req, services, *, allow_query_token=False) -> Principal``
    reads ``Authorization: Bearer <token>``, else the dashboard's session cookie; raises 401
    ``{"error": ...}`` when neither is there or valid. With ``allow_query_token=True`` an
    ``access_token`` query parameter is accepted as well, for clients that cannot set headers
    (``EventSource``, browser WebSockets). A request authenticated by the session cookie must, unless
    it is GET/HEAD/OPTIONS, carry the session's CSRF token in ``X-CSRF-Token`` (else 403).

``site_for(principal, site_ref, services) -> Site``
    the site by internal id or public domain key; 404 when it does not exist *or* the principal may
    not see it, so a token never learns whether another owner's site exists.

``authorize(req, services, site_ref, *, allow_query_token=False) -> tuple[Principal, Site]``
    both of the above in one call, what most resources need.

``ensure_admin_token(settings) -> Path``
    called once by ``littlestats serve`` before workers start: on the first start it creates an
    admin user and token and writes the token to ``<data-dir>/admin-token`` (mode 600).

Tokens are stored only as SHA-256 hashes (``littlestats.controlplane``); the plain token is shown
once, when it is created.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon

from littlestats.controlplane import ControlPlane, Site, User

if TYPE_CHECKING:
    from littlestats.config import Settings

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True)
class Principal:
    """The caller of an API request."""

    user: User | None
    dev: bool = False
    #: The id hash of the dashboard session the request came with (``None``: a token, or dev mode).
    session: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.dev or (self.user is not None and self.user.is_admin)

    @property
    def user_id(self) -> str | None:
        return self.user.id if self.user is not None else None

    def can_see(self, site: Site) -> bool:
        """Admins and dev mode see every site; everyone else only the sites they own."""
        if self.is_admin:
            return True
        return self.user is not None and site.owner_id == self.user.id


def _bearer(req: Any) -> str | None:
    header = req.get_header("Authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise falcon.HTTPUnauthorized(
            description="Authorization header must be 'Bearer <token>'",
            challenges=["Bearer"],
        )
    return token.strip()


def authenticate(req: Any, services: Any, *, allow_query_token: bool = False) -> Principal:
    """The principal of `req`, or a 401 when there is no valid token (dev mode: always allowed)."""
    settings = services.settings
    token = _bearer(req)
    if token is None and allow_query_token:
        token = req.get_param("access_token") or None
    if settings.dev:
        # Auth is off in dev mode, but a valid token still identifies its user (owner of new sites).
        user = services.control.user_for_token(token) if token else None
        return Principal(user=user, dev=True)
    if token is None:
        principal = _session_principal(req, services)
        if principal is not None:
            return principal
        raise falcon.HTTPUnauthorized(
            description="missing API token: send 'Authorization: Bearer <token>'",
            challenges=["Bearer"],
        )
    user = services.control.user_for_token(token)
    if user is None:
        raise falcon.HTTPUnauthorized(description="invalid API token", challenges=["Bearer"])
    return Principal(user=user, dev=False)


def _session_principal(req: Any, services: Any) -> Principal | None:
    """The principal of a dashboard session cookie (``None`` when the request has none)."""
    from dashboard import sessions  # the dashboard owns its cookie; imported on first use

    if not sessions.has_session_cookie(req):
        return None
    session = sessions.session_of(req, services)
    if session is None:
        raise falcon.HTTPUnauthorized(
            description="your dashboard session has ended: log in again at /login", challenges=["Bearer"])
    if req.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
            session, req.get_header(sessions.CSRF_HEADER)):
        raise falcon.HTTPForbidden(
            description=f"missing or wrong {sessions.CSRF_HEADER} header: send the 'csrf' value the "
                        "dashboard page was given (its <meta name=\"littlestats\">)")
    return Principal(user=session.user, dev=False, session=session.id_hash)


def site_for(principal: Principal, site_ref: str, services: Any) -> Site:
    """The site `site_ref` (id or domain key) if `principal` may see it, else 404."""
    site = services.control.get_site(site_ref) if site_ref else None
    if site is None or not principal.can_see(site):
        raise falcon.HTTPNotFound(description=f"site {site_ref!r} not found")
    return site


def authorize(
    req: Any, services: Any, site_ref: str, *, allow_query_token: bool = False
) -> tuple[Principal, Site]:
    """Authenticate `req` and resolve `site_ref` for it (401 / 404 as above)."""
    grant = getattr(req.context, "share", None)
    if grant is not None:  # admitted by a share link's own route (api.shares): its one site only
        return grant.principal, grant.site_for(site_ref)
    principal = authenticate(req, services, allow_query_token=allow_query_token)
    return principal, site_for(principal, site_ref, services)


def ensure_admin_token(settings: Settings) -> Path:
    """Create the first admin user and token on first start; return the token file's path.

    The token is written to ``<data-dir>/admin-token`` with mode 600 and the log says where it is.
    Later starts leave existing users alone and only repeat where the file is (if it still exists).
    """
    path = settings.data_dir / ADMIN_TOKEN_FILE
    control = ControlPlane(settings.control_db)
    try:
        if control.find_admin() is None:
            user = control.create_user(email="admin@localhost", name="admin", is_admin=True)
            token = control.create_token(user.id, name="admin (first start)")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            os.chmod(path, 0o600)
            log.warning("created the admin API token; it is in %s (readable only by you)", path)
        elif path.exists():
            log.info("admin API token: %s", path)
    finally:
        control.close()
    return path
