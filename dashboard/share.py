"""The pages of a share link: ``/share/{slug}`` (and ``/share/{domain}`` for a public site).

``GET`` serves the dashboard's app shell in *shared* mode (its ``<meta name="littlestats">`` holds
``share``: the share's API base, the site's name, domain and time zone, and whether ``?embed=true``
asked for the compact frame), or the password form when the link has a password and the browser
no session of it, or a 404 page for a link that does not exist or was revoked. ``POST`` checks the
password (rate limited per link and per client address as dashboard logins are: the same
``login_failures`` table) and sets the share's session cookie (``api.shares``).

Every answer carries the Content-Security-Policy with ``frame-ancestors`` set to the origins saved
on the link (``'none'`` when there are none), so only those sites may embed it.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any
from urllib.parse import quote

import falcon
import falcon.asgi
import orjson

from api import shares
from dashboard import passwords, sessions
from dashboard.routes import PLACEHOLDER, Pages, _form, _minutes, _Page, _stylesheets
from dashboard.security import secure


def _html(resp: falcon.asgi.Response, text: str, origins: tuple[str, ...] = (),
          status: str = falcon.HTTP_200) -> None:
    secure(resp, origins)
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.set_header("Cache-Control", "no-store")
    resp.text = text


def _embed(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class SharePage:
    """``GET /share/{slug}`` (the shared dashboard or its password form) and ``POST`` (the password)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.services = pages.services
        self.form = _Page("share_password.html", "Password")
        self.gone = _Page("share_not_found.html", "Not found")

    def not_found(self, resp: falcon.asgi.Response) -> None:
        _html(resp, self.gone.substitute(stylesheets=_stylesheets()), status=falcon.HTTP_404)

    def password_form(self, resp: falcon.asgi.Response, slug: str, grant: shares.ShareGrant, *, embed: bool,
                      message: str = "", status: str = falcon.HTTP_200) -> None:
        _html(resp, self.form.substitute(
            stylesheets=_stylesheets(),
            site=html.escape(grant.site.name or grant.site.domain),
            action=html.escape(f"/share/{quote(slug, safe='')}"),
            embed="true" if embed else "",
            message=f'<p class="error" role="alert">{html.escape(message)}</p>' if message else "",
        ), grant.embed_origins, status)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        grant = shares.resolve(self.services, slug)
        if grant is None:
            self.not_found(resp)
            return
        embed = _embed(req.get_param("embed"))
        share = grant.share
        if share is not None and share.password_hash is not None and not shares.has_session(req, self.services, share):
            self.password_form(resp, slug, grant, embed=embed)
            return
        shell = self.pages.shell()
        if shell is None:
            _html(resp, "<!doctype html><title>LittleStats</title><p>The dashboard is not built: run "
                        "scripts/build-dashboard.</p>", status=falcon.HTTP_503)
            return
        site = grant.site
        config = {"csrf": "", "user": None, "dev": False, "share": {
            "base": f"/share/{quote(slug, safe='')}", "embed": embed,
            "site": {"id": site.id, "name": site.name, "domain": site.domain, "timezone": site.timezone}}}
        meta = f'<meta name="littlestats" content="{html.escape(orjson.dumps(config).decode())}">'
        _html(resp, shell.replace(PLACEHOLDER, meta, 1), grant.embed_origins)

    on_head = on_get

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, slug: str) -> None:
        grant = shares.resolve(self.services, slug)
        if grant is None:
            self.not_found(resp)
            return
        form = await _form(req)
        embed = _embed(form.get("embed"))
        target = f"/share/{quote(slug, safe='')}" + ("?embed=true" if embed else "")
        share = grant.share
        if share is None or share.password_hash is None:
            self._redirect(resp, target, grant)
            return
        password = form.get("password", "")
        if not password:
            self.password_form(resp, slug, grant, embed=embed, status=falcon.HTTP_400,
                               message="Enter the password.")
            return
        store = self.pages.store
        subject = f"share:{share.id}"
        wait, attempt = store.start_attempt(subject, sessions.client_address(req, self.services))
        if wait is not None:
            resp.set_header("Retry-After", str(wait))
            self.password_form(resp, slug, grant, embed=embed, status=falcon.HTTP_429,
                               message=f"Too many wrong passwords. Try again in {_minutes(wait)}.")
            return
        async with passwords.CHECKS:
            right = await asyncio.to_thread(passwords.verify_password, share.password_hash, password)
        if not right:
            self.password_form(resp, slug, grant, embed=embed, status=falcon.HTTP_401,
                               message="Wrong password.")
            return
        store.attempt_succeeded(subject, attempt)
        https = sessions.is_https(req, self.services)
        # In a frame on another site the browser sends the cookie only if it is SameSite=None,
        # which it accepts only over HTTPS.
        resp.set_cookie(shares.SHARE_COOKIE, shares.session_cookie(self.services, share),
                        max_age=shares.SESSION_LIFETIME, path=f"/share/{quote(slug, safe='')}",
                        secure=https, http_only=True, same_site="None" if https else "Lax")
        self._redirect(resp, target, grant)

    def _redirect(self, resp: falcon.asgi.Response, location: str, grant: shares.ShareGrant) -> None:
        secure(resp, grant.embed_origins)
        resp.status = falcon.HTTP_303
        resp.location = location
        resp.set_header("Cache-Control", "no-store")


def add_routes(app: falcon.asgi.App, services: Any, pages: Pages) -> None:
    """Register the share pages (the dashboard's routes call this with their ``Pages``)."""
    app.add_route("/share/{slug}", SharePage(pages))
