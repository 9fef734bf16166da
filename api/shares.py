"""Share links: a site's read-only dashboard for people without an account (docs/sharing.md).

**Managing links** — ``GET/POST /api/v2/sites/{site}/shares``, ``PATCH/DELETE
/api/v2/sites/{site}/shares/{share}`` — is for the site's admins and owners (``api.routes.POLICY``),
and each creation and revocation goes to the audit log. A link is
``/share/{slug}``: the slug is 144 random bits, shown once when the link is made and stored only as
a hash (like an API token). A link may have a password (argon2id, ``dashboard.passwords``) and
a list of origins that may frame it (``embedOrigins``). Revoking a link ends it at once, with every
session opened through it. A site whose setting ``public`` is true is also open at
``/share/{domain}``, without a password.

**Reading through a link** — the share's own routes under ``/share/{slug}/api/v2/`` (``SHARE_ROUTES``)
are the only ones that accept it: the read endpoints the dashboard needs, for that one site. They
are the same resources as under ``/api/v2`` (one query path), reached through ``ShareRoute``, which
admits the request (the slug names a live share; its password session when it has a password) and
hands the resources a ``ShareGrant`` in ``req.context.share`` that ``api.auth.authorize`` honours for
the share's site only. No other route looks at a share, so a slug or a share cookie is worth
nothing anywhere else. The password session is a cookie ``ls_share`` with path ``/share/{slug}``
(so the browser sends it to that share only), signed with a server secret over the share's id, its
expiry and its password hash (a new password ends the old sessions).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi
import orjson

from api.auth import Principal, authorize
from api.body import bad_param, check_fields, json_body
from littlestats import audit
from littlestats.controlplane import Share, Site
from littlestats.http import json_response

SHARE_COOKIE = "ls_share"
SESSION_LIFETIME = 7 * 24 * 3600
MAX_SHARES_PER_SITE = 100
MAX_EMBED_ORIGINS = 20
SHARE_FIELDS = {"label", "password", "embedOrigins"}
#: An origin that may frame a share: scheme, host (``*.`` allowed first), optional port; nothing
#: else, so that it can go into a Content-Security-Policy as it is.
ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$")
SLUG = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _manager(req: Any, services: Any, site_ref: str) -> tuple[Principal, Site]:
    """The caller and the site; ``api.auth.AccessPolicy`` has checked the role the route needs."""
    return authorize(req, services, site_ref)



def share_changes(body: dict[str, Any]) -> dict[str, Any]:
    """Validated changes from a POST/PATCH body: ``label``, ``password`` (plain; ``None`` removes
    it) and ``embed_origins`` (400 naming the first bad field)."""
    from dashboard.passwords import PasswordRuleError, check_rule

    check_fields(body, sorted(SHARE_FIELDS))
    out: dict[str, Any] = {}
    if "label" in body:
        label = body["label"]
        if not isinstance(label, str) or len(label) > 200 or "\x00" in label:
            raise bad_param("label", "expected a string of at most 200 characters")
        out["label"] = label.strip()
    if "password" in body:
        password = body["password"]
        if password is not None:
            if not isinstance(password, str):
                raise bad_param("password", "expected a string, or null for no password")
            try:
                check_rule(password)
            except PasswordRuleError as exc:
                raise bad_param("password", str(exc)) from None
        out["password"] = password
    if "embedOrigins" in body:
        origins = body["embedOrigins"]
        if not isinstance(origins, list) or len(origins) > MAX_EMBED_ORIGINS:
            raise bad_param("embedOrigins", f"expected a list of at most {MAX_EMBED_ORIGINS} origins")
        clean = []
        for origin in origins:
            value = origin.strip().lower().rstrip("/") if isinstance(origin, str) else ""
            if len(value) > 300 or not ORIGIN.match(value):
                raise bad_param("embedOrigins", f"{origin!r} is not an origin: write scheme and host, such as "
                                           "'https://blog.example.com' (a port may follow; no path)")
            clean.append(value)
        out["embed_origins"] = tuple(dict.fromkeys(clean))
    return out


async def _hash(password: str) -> str:
    from dashboard.passwords import CHECKS, hash_password

    async with CHECKS:
        return await asyncio.to_thread(hash_password, password)


class SharesResource:
    """``GET /api/v2/sites/{site}/shares`` (every link, revoked ones too) and ``POST`` (a new one)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = _manager(req, self.services, site)
        json_response(resp, {"shares": [s.public() for s in self.services.control.list_shares(found.id)],
                             "public": found.settings.public})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = _manager(req, self.services, site)
        changes = share_changes(await json_body(req))
        control = self.services.control
        if sum(s.revoked_at is None for s in control.list_shares(found.id)) >= MAX_SHARES_PER_SITE:
            raise bad_param("site", f"a site has at most {MAX_SHARES_PER_SITE} live share links: revoke one first")
        password = changes.get("password")
        share, slug = control.create_share(
            found.id, label=changes.get("label", ""),
            password_hash=await _hash(password) if password else None,
            embed_origins=changes.get("embed_origins", ()), created_by=principal.user_id)
        audit.record(control, audit.SHARE_CREATED, actor=principal, site_id=found.id, target=share.id,
                     details={"label": share.label, "password": password is not None,
                              "embedOrigins": len(share.embed_origins)})
        path = f"/share/{slug}"
        json_response(resp, {**share.public(), "slug": slug, "path": path, "url": req.prefix + path},
                      status=falcon.HTTP_201)


class ShareResource:
    """``PATCH /api/v2/sites/{site}/shares/{share}`` (label, password, embed origins) and ``DELETE``
    (revoke)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _share(self, req: Any, site: str, share: str) -> tuple[Principal, Site, Share]:
        principal, found = _manager(req, self.services, site)
        existing = self.services.control.get_share(found.id, share)
        if existing is None:
            raise falcon.HTTPNotFound(description=f"share {share!r} not found")
        return principal, found, existing

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, share: str) -> None:
        _, found, existing = self._share(req, site, share)
        changes = share_changes(await json_body(req))
        if existing.revoked_at is not None:
            raise falcon.HTTPConflict(description="this share link is revoked; create a new one")
        if "password" in changes:
            password = changes.pop("password")
            changes["password_hash"] = await _hash(password) if password else None
        updated = self.services.control.update_share(found.id, existing.id, **changes)
        assert updated is not None
        json_response(resp, updated.public())

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, share: str) -> None:
        principal, found, existing = self._share(req, site, share)
        revoked = self.services.control.revoke_share(found.id, existing.id)
        assert revoked is not None
        audit.record(self.services.control, audit.SHARE_REVOKED, actor=principal, site_id=found.id,
                     target=existing.id, details={"label": existing.label})
        json_response(resp, revoked.public())


# --- reading through a share -------------------------------------------------------------------


@dataclass(frozen=True)
class ShareGrant:
    """What a request admitted through a share may read: one site's stats, nothing else."""

    site: Site
    share: Share | None  # None: the site's public dashboard (/share/{domain})
    principal: Principal = Principal(user=None)

    @property
    def embed_origins(self) -> tuple[str, ...]:
        return self.share.embed_origins if self.share is not None else ()

    def site_for(self, site_ref: str) -> Site:
        """The share's site when `site_ref` names it (id or domain key); 404 for any other."""
        if site_ref not in (self.site.id, self.site.domain_key):
            raise falcon.HTTPNotFound(description=f"site {site_ref!r} not found")
        return self.site


def resolve(services: Any, slug: str) -> ShareGrant | None:
    """The share `slug` names (a live link's slug, or the domain of a public site); ``None`` when
    it names nothing — unknown, revoked, or a site that is not public."""
    control = services.control
    if "." in slug:
        if len(slug) > 253:
            return None
        site = control.public_site(slug.lower())
        return ShareGrant(site, None) if site is not None else None
    if not SLUG.match(slug):
        return None
    share = control.find_share(slug)
    if share is None:
        return None
    site = control.get_site(share.site_id)
    return ShareGrant(site, share) if site is not None else None


def _secret(services: Any) -> bytes:
    secret = services.extras.get("share_secret")
    if secret is None:
        secret = services.extras["share_secret"] = services.control.server_secret("share-session")
    return secret  # type: ignore[no-any-return]


def _mac(services: Any, share: Share, expires: int) -> str:
    message = f"{share.id}:{expires}:{share.password_hash or ''}".encode()
    return hmac.new(_secret(services), message, hashlib.sha256).hexdigest()


def session_cookie(services: Any, share: Share, now: float | None = None) -> str:
    """A password session of `share`: ``<expiry>.<signature>``."""
    expires = int(now if now is not None else time.time()) + SESSION_LIFETIME
    return f"{expires}.{_mac(services, share, expires)}"


def has_session(req: Any, services: Any, share: Share) -> bool:
    """Whether the request carries a live password session of this share."""
    for value in (req.get_cookie_values(SHARE_COOKIE) or [])[:3]:
        expires, _, signature = value.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            continue
        if hmac.compare_digest(signature.encode(), _mac(services, share, int(expires)).encode()):
            return True
    return False


def admit(req: Any, services: Any, slug: str) -> ShareGrant:
    """The grant of a request to a share's API: 404 for an unknown or revoked share, 401 when the
    share has a password and the request no session of it."""
    grant = resolve(services, slug)
    if grant is None:
        raise falcon.HTTPNotFound(description="no such share link (it may have been revoked)")
    if grant.share is not None and grant.share.password_hash is not None and not has_session(req, services, grant.share):
        raise falcon.HTTPUnauthorized(
            description=f"this share link has a password: enter it at /share/{slug}", challenges=["Share"])
    return grant


class ShareRoute:
    """A read endpoint of ``/api/v2`` reached through a share: admits the request, then lets the
    same resource answer it for the share's site."""

    def __init__(self, services: Any, inner: Any) -> None:
        self.services = services
        self.inner = inner

    async def _pass(self, req: Any, resp: Any, responder: str, slug: str, **params: Any) -> None:
        req.context.share = admit(req, self.services, slug)
        resp.set_header("Cache-Control", "no-store")
        await getattr(self.inner, responder)(req, resp, **params)


class ShareRead(ShareRoute):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str, site: str) -> None:
        await self._pass(req, resp, "on_get", slug, site=site)


class ShareQuery(ShareRoute):
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str, site: str) -> None:
        await self._pass(req, resp, "on_post", slug, site=site)


class ShareLiveResource:
    """``GET /share/{slug}/api/v2/live``: how many visitors are on the site now — the one number
    of the live view a share shows (never the events themselves)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        from api.realtime import live_hub

        grant = admit(req, self.services, slug)
        hub = await live_hub(self.services, req.scope)
        try:
            stats = orjson.loads(await hub.stats_json(grant.site.id))
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise falcon.HTTPServiceUnavailable(description=f"the live service is not available ({exc}); "
                                                            "retry in a few seconds", retry_after=2) from None
        resp.set_header("Cache-Control", "no-store")
        json_response(resp, {"siteId": grant.site.id, "time": stats.get("time"),
                             "activeVisitors": stats.get("activeVisitors", 0)})


SHARE_PREFIX = "/share/{slug}/api/v2"


def add_share_routes(app: falcon.asgi.App, services: Any, reads: dict[str, Any]) -> None:
    """Register the management API and a share's routes. `reads`: path under
    ``/api/v2/sites/{site}/`` → the resource that answers it there (``api.routes.SHARE_READS``)."""
    app.add_route("/api/v2/sites/{site}/shares", SharesResource(services))
    app.add_route("/api/v2/sites/{site}/shares/{share}", ShareResource(services))
    for name, resource in reads.items():
        wrapper = ShareQuery if name == "query" else ShareRead
        app.add_route(f"{SHARE_PREFIX}/sites/{{site}}/{name}", wrapper(services, resource))
    app.add_route(f"{SHARE_PREFIX}/live", ShareLiveResource(services))
