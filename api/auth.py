"""Bearer-token authentication, and the one place that decides who may call which route.

Public names (stable; the real-time endpoints use them too):

``AccessPolicy``
    the Falcon middleware (added by ``api.routes``) that applies ``api.routes.POLICY`` to every
    request under ``/api/``, HTTP and WebSocket alike: it authenticates the caller, resolves the
    path's ``{site}``, and answers 404 to a non-member (as for a site that does not exist), 403 to
    a member below the route's role or a token without its scope. A route missing from the table
    is refused (403). What it established is kept on the request for ``authorize``.

``Principal``
    who is asking: ``user`` (a control-plane ``User``, or ``None`` in dev mode), ``dev``
    (``True`` when the server runs with ``--dev``: authentication is off, loopback only, SPEC §11)
    and ``token`` (the API token used, with its scopes, sites and expiry; ``None`` for a dashboard
    session, which has every scope). ``principal.is_admin`` — server admins (and dev mode) have
    the owner role on every site.

``role_on(principal, site, control) -> str | None``
    the principal's role on a site, read at every request (so a token loses what its user loses).

``authenticate(req, services, *, allow_query_token=False) -> Principal``
    reads ``Authorization: Bearer <token>``, else the dashboard's session cookie; raises 401
    ``{"error": ...}`` when neither is there or valid. With ``allow_query_token=True`` an
    ``access_token`` query parameter is accepted as well, for clients that cannot set headers
    (``EventSource``, browser WebSockets). A request authenticated by the session cookie must, unless
    it is GET/HEAD/OPTIONS, carry the session's CSRF token in ``X-CSRF-Token`` (else 403).

``site_for(principal, site_ref, services, role="viewer") -> Site``
    the site by internal id or public domain key; 404 when it does not exist *or* the principal is
    not a member, so a token never learns whether another owner's site exists; 403 below ``role``.

``authorize(req, services, site_ref, *, allow_query_token=False) -> tuple[Principal, Site]``
    the principal and site ``AccessPolicy`` established for this request (or both of the above).

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

from api import stream_token
from littlestats.controlplane import SCOPES, ControlPlane, Site, Token, User, role_rank

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
    #: The API token the request came with (``None``: a dashboard session, or dev mode).
    token: Token | None = None

    @property
    def is_admin(self) -> bool:
        return self.dev or (self.user is not None and self.user.is_admin)

    @property
    def user_id(self) -> str | None:
        return self.user.id if self.user is not None else None

    @property
    def scopes(self) -> tuple[str, ...]:
        """What the credential may be used for (a session and dev mode: everything)."""
        return SCOPES if self.dev or self.token is None else self.token.scopes

    @property
    def sites(self) -> tuple[str, ...] | None:
        """The site ids the credential is limited to (``None``: every site its user may see)."""
        return None if self.dev or self.token is None else self.token.sites


def role_on(principal: Principal, site: Site, control: ControlPlane) -> str | None:
    """The principal's role on `site` now: ``owner`` for server admins and dev mode, the member
    role otherwise, ``None`` when not a member or the token is limited to other sites."""
    if principal.dev:
        return "owner"
    if principal.user is None or (principal.sites is not None and site.id not in principal.sites):
        return None
    if principal.user.is_admin:
        return "owner"
    return control.role_of(principal.user.id, site.id)


def visible_sites(principal: Principal, services: Any) -> list[Site]:
    """The sites the principal has a role on and its token may reach, oldest first (one query)."""
    control = services.control
    sites = control.list_sites() if principal.is_admin else (
        control.list_sites(member_id=principal.user_id) if principal.user_id else [])
    return [s for s in sites if principal.sites is None or s.id in principal.sites]


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
    cached = getattr(req.context, "principal", None)
    if isinstance(cached, Principal):
        return cached
    if token is None:
        principal = _session_principal(req, services)
        if principal is not None:
            return principal
        raise falcon.HTTPUnauthorized(
            description="missing API token: send 'Authorization: Bearer <token>'",
            challenges=["Bearer"],
        )
    found = services.control.find_token(token)
    user = services.control.get_user(found.user_id) if found is not None else None
    if found is None or user is None:
        raise falcon.HTTPUnauthorized(description="invalid API token", challenges=["Bearer"])
    if found.expired():
        raise falcon.HTTPUnauthorized(
            description=f"this API token expired at {found.expires_at}: create a new one "
                        "(POST /api/v2/tokens or `littlestats token create`)", challenges=["Bearer"])
    return Principal(user=user, dev=False, token=found)


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


def site_for(principal: Principal, site_ref: str, services: Any, role: str = "viewer") -> Site:
    """The site `site_ref` (id or domain key) if `principal` has at least `role` on it: 404 when
    it is not a member (or there is no such site), 403 when its role is weaker."""
    site, have = _membership(principal, site_ref, services.control)
    _need_role(have, role, "this")
    return site


def _membership(principal: Principal, site_ref: str, control: ControlPlane) -> tuple[Site, str]:
    """The site and the principal's role on it; 404 alike for no such site and no role."""
    site = control.get_site(site_ref) if site_ref else None
    have = role_on(principal, site, control) if site is not None else None
    if site is None or have is None:
        raise falcon.HTTPNotFound(description=f"site {site_ref!r} not found")
    return site, have


def _need_role(have: str, role: str, what: str) -> None:
    if role_rank(have) < role_rank(role):
        article = "an" if have[0] in "aeiou" else "a"
        raise falcon.HTTPForbidden(description=f"{what} needs the {role} role on the site; you are {article} "
                                               f"{have}: ask one of its owners")


def authorize(
    req: Any, services: Any, site_ref: str, *, allow_query_token: bool = False
) -> tuple[Principal, Site]:
    """The caller and the site of `req` as ``AccessPolicy`` checked them (401 / 403 / 404 as
    above when it did not run, e.g. for a request made outside the policy's routes)."""
    grant = getattr(req.context, "share", None)
    if grant is not None:  # admitted by a share link's own route (api.shares): its one site only
        return grant.principal, grant.site_for(site_ref)
    access = getattr(req.context, "access", None)
    if access is not None and site_ref in (access[1].id, access[1].domain_key):
        return access[0], access[1]
    principal = authenticate(req, services, allow_query_token=allow_query_token)
    return principal, site_for(principal, site_ref, services)


#: Routes that accept ``?access_token=`` and stream tokens (``EventSource`` cannot set headers).
QUERY_TOKEN_PREFIXES = ("/api/v2/realtime/", "/api/v2/stats/")


class AccessPolicy:
    """Falcon middleware enforcing ``api.routes.POLICY`` for every route under ``/api/``."""

    def __init__(self, services: Any, rules: dict[tuple[str, str], Any]) -> None:
        self.services = services
        self.rules = rules

    async def process_resource(self, req: Any, resp: Any, resource: Any, params: dict[str, Any]) -> None:
        if resource is not None:
            self.check(req, resource, params, req.method)

    async def process_resource_ws(self, req: Any, ws: Any, resource: Any, params: dict[str, Any]) -> None:
        if resource is None:
            return
        try:
            self.check(req, resource, params, "GET")
        except falcon.HTTPError as exc:
            from api.realtime import REFUSAL_KEY  # the refused upgrade's answer names the reason

            req.scope[REFUSAL_KEY] = exc.description or exc.title
            raise

    def check(self, req: Any, resource: Any, params: dict[str, Any], method: str) -> None:
        template = req.uri_template or ""
        if not template.startswith("/api/"):
            return  # pages, static files, metrics: not API routes
        rule = self.rules.get((method, template))
        if rule is None:
            responder = "on_websocket" if method == "GET" and req.scope.get("type") == "websocket" \
                else f"on_{method.lower()}"
            if method in ("OPTIONS", "HEAD") or not hasattr(resource, responder):
                return  # Falcon answers 405 (or the CORS preflight): nothing is run
            log.error("no access policy for %s %s: add it to api.routes.POLICY", method, template)
            raise falcon.HTTPForbidden(description=f"{method} {template} has no access policy; it stays "
                                                   "closed until one is added to api.routes.POLICY")
        if rule.role == "public":
            return
        query_token = template.startswith(QUERY_TOKEN_PREFIXES)
        principal = self._principal(req, query_token)
        req.context.principal = principal
        if rule.role == "user":
            self._need_scope(principal, rule.scope)
            return
        if rule.role == "server-admin":
            self._need_scope(principal, rule.scope)
            if not principal.is_admin:
                raise falcon.HTTPForbidden(description="only server admins may do this")
            return
        site, have = _membership(principal, params.get("site", ""), self.services.control)
        self._need_scope(principal, rule.scope)  # after the 404: a token never learns of others' sites
        _need_role(have, rule.role, f"{method} {template}")
        req.context.access = (principal, site, have)

    def _principal(self, req: Any, query_token: bool) -> Principal:
        """The caller; on the real-time routes also the user behind a stream token (``?token=``),
        held to the same rule as if the API token it was minted with were sent."""
        plain = req.get_param("token") if query_token else None
        has_credential = req.get_header("Authorization") or req.get_param("access_token")
        if not plain or has_credential or self.services.settings.dev:
            return authenticate(req, self.services, allow_query_token=query_token)
        control = self.services.control
        try:
            grant = stream_token.verify(control.server_secret(stream_token.SECRET_NAME), plain)
        except stream_token.StreamTokenError as exc:
            raise falcon.HTTPUnauthorized(description=str(exc), challenges=["Bearer"]) from None
        user = control.get_user(grant.user_id) if grant.user_id is not None else None
        token = control.get_token(grant.token_id) if grant.token_id is not None else None
        if user is None or (grant.token_id is not None and (token is None or token.expired())):
            raise falcon.HTTPUnauthorized(
                description="stream token no longer valid (its API token was revoked or expired); "
                            "mint a new one with a valid API token", challenges=["Bearer"])
        return Principal(user=user, token=token)

    @staticmethod
    def _need_scope(principal: Principal, scope: str | None) -> None:
        if scope is not None and scope not in principal.scopes:
            raise falcon.HTTPForbidden(
                description=f"this token lacks the '{scope}' scope (it has: {', '.join(principal.scopes)}); "
                            "create a token with it")


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
