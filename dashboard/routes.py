"""The dashboard's routes: login and logout, the app shell for every page, and the static files.

Pages need a dashboard session (``dashboard.sessions``) unless the server runs with ``--dev``;
without one they redirect (303) to ``/login?next=<the page>``. ``/sites/{site}…`` also checks, as the
API does, that the user is a member of the site, and answers the same 404 page for a site that is
not theirs as for one that does not exist; ``/sites/{site}/settings`` needs the admin role (a
viewer gets a 403 page). ``/invite/{token}`` is an invitation's one-time link (docs/access.md):
a form to set a password (someone new) or a button to join (someone logged in), CSRF-protected
like the login form. The shell (``static/index.html``, the app's build output)
gets the page's configuration in ``<meta name="littlestats" content="…">``: the CSRF token, the
user and whether the server runs in dev mode (JSON, HTML-escaped; no inline script, so the strict
Content-Security-Policy holds).
"""

from __future__ import annotations

import asyncio
import html
import logging
import string
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import falcon
import falcon.asgi
import orjson

from api import members
from api.auth import Principal, site_for
from api.me import public_user
from dashboard import passwords, sessions
from dashboard.assets import AssetResource, LoginStyleResource
from dashboard.security import secure
from littlestats.http import read_body

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
PLACEHOLDER = '<meta name="littlestats" content="">'
MAX_FORM_BYTES = 16 * 1024
DEV_CSRF = "dev"  # dev mode checks no CSRF token; the page still gets one to send

#: (path template, what it shows): every page that serves the app shell.
PAGES = [
    ("/", "your sites"),
    ("/sites/{site}", "a site's dashboard"),
    ("/sites/{site}/settings", "a site's settings"),
    ("/settings", "your API tokens and password"),
]


class _Page:
    """A server-rendered page: its own ``<main>`` (``templates/<name>``) inside the frame every
    such page shares (``templates/page.html``: head, stylesheets, body)."""

    frame = string.Template((TEMPLATES / "page.html").read_text())

    def __init__(self, name: str, title: str) -> None:
        self.main = string.Template((TEMPLATES / name).read_text())
        self.title = title

    def substitute(self, *, stylesheets: str, **values: str) -> str:
        return self.frame.substitute(title=self.title, stylesheets=stylesheets,
                                     main=self.main.substitute(**values))


def _stylesheets() -> str:
    """The app's built CSS (when there is a build) and the login page's own rules."""
    links = []
    try:
        css = orjson.loads((STATIC / "manifest.json").read_bytes()).get("css")
    except (OSError, orjson.JSONDecodeError):
        css = None
    if isinstance(css, str) and css:
        links.append(f'<link rel="stylesheet" href="/assets/{html.escape(css)}">')
    links.append('<link rel="stylesheet" href="/login.css">')
    return "\n".join(links)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this site, never another origin or the login itself."""
    if (not value or not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 2000
            or any(c < " " or c == "\x7f" for c in value) or value.split("?")[0] in ("/login", "/logout")):
        return "/"
    return quote(value, safe=string.punctuation)  # a Location header is ASCII


def _minutes(seconds: int) -> str:
    minutes = (seconds + 59) // 60
    return "a minute" if minutes == 1 else f"{minutes} minutes"


def _redirect(resp: falcon.asgi.Response, location: str) -> None:
    secure(resp)
    resp.status = falcon.HTTP_303
    resp.location = location
    resp.set_header("Cache-Control", "no-store")


def _html(resp: falcon.asgi.Response, text: str, status: str = falcon.HTTP_200) -> None:
    secure(resp)
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.set_header("Cache-Control", "no-store")
    resp.text = text


async def _form(req: falcon.asgi.Request) -> dict[str, str]:
    """The first value of every field of a URL-encoded form (what a plain ``<form>`` posts)."""
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise falcon.HTTPUnsupportedMediaType(
            description="send the form as application/x-www-form-urlencoded")
    raw = await read_body(req, MAX_FORM_BYTES)
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise falcon.HTTPBadRequest(description="the form is not valid UTF-8 URL-encoded text") from None
    return {k: v[0] for k, v in fields.items()}


class Pages:
    """What every page resource shares: the services, the session store and the templates."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.dev: bool = services.settings.dev
        self.store = sessions.store_for(services)
        self.login = _Page("login.html", "Log in")
        self.logout = _Page("logout.html", "Log out")
        self.not_found_page = _Page("not_found.html", "Not found")
        self.invite = _Page("invite.html", "Invitation")
        self._shell: tuple[int, str] | None = None

    def set_session_cookie(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, value: str) -> None:
        resp.set_cookie(sessions.COOKIE, value, max_age=sessions.LIFETIME, path="/",
                        secure=sessions.is_https(req, self.services), http_only=True, same_site="Lax")

    def clear_session_cookie(self, resp: falcon.asgi.Response) -> None:
        resp.unset_cookie(sessions.COOKIE, same_site="Lax", path="/")

    def not_found(self, resp: falcon.asgi.Response, message: str) -> None:
        _html(resp, self.not_found_page.substitute(stylesheets=_stylesheets(), message=html.escape(message)),
              falcon.HTTP_404)

    def notice(self, resp: falcon.asgi.Response, title: str, message: str, status: str) -> None:
        page = _Page("notice.html", title)
        _html(resp, page.substitute(stylesheets=_stylesheets(), heading=html.escape(title),
                                    message=html.escape(message)), status)

    def shell(self) -> str | None:
        """The app shell, re-read when the build replaces it."""
        path = STATIC / "index.html"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        if self._shell is None or self._shell[0] != stamp:
            text = path.read_text()
            if PLACEHOLDER not in text:
                log.warning("%s has no %s; the page gets no configuration", path, PLACEHOLDER)
            self._shell = (stamp, text)
        return self._shell[1]


class ShellResource:
    """``GET /``, ``/sites/{site}``, ``/sites/{site}/settings``, ``/settings``: the app shell."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str | None = None) -> None:
        pages = self.pages
        if pages.dev:
            principal, session = Principal(user=None, dev=True), None
        else:
            session = sessions.session_of(req, pages.services)
            if session is None:
                target = req.path + (f"?{req.query_string}" if req.query_string else "")
                _redirect(resp, "/login?next=" + quote(target, safe=""))
                return
            principal = Principal(user=session.user, session=session.id_hash)
        if site is not None:
            settings_page = (req.uri_template or "").endswith("/settings")
            try:
                site_for(principal, site, pages.services, role="admin" if settings_page else "viewer")
            except falcon.HTTPNotFound:
                pages.not_found(resp, f"There is no site {site!r} that you can see.")
                return
            except falcon.HTTPForbidden:
                pages.notice(resp, "Not allowed", "You can read this site's statistics, but its settings are "
                                                  "for its admins and owners.", falcon.HTTP_403)
                return
        shell = pages.shell()
        if shell is None:
            _html(resp, "<!doctype html><title>LittleStats</title><p>The dashboard is not built: run "
                        "scripts/build-dashboard.</p>", falcon.HTTP_503)
            return
        config = {"csrf": session.csrf if session else DEV_CSRF,
                  "user": public_user(principal.user), "dev": principal.dev}
        meta = f'<meta name="littlestats" content="{html.escape(orjson.dumps(config).decode())}">'
        if session is not None and session.refreshed:
            pages.set_session_cookie(req, resp, session.cookie)  # the sliding expiry, in the browser too
        _html(resp, shell.replace(PLACEHOLDER, meta, 1))
        resp.set_header("Cache-Control", "no-cache")

    on_head = on_get  # Falcon sends the headers without the body


class LoginResource:
    """``GET /login`` (the form) and ``POST /login`` (email, password, csrf, next)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def render(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, *, next_path: str,
               email: str = "", message: str = "", status: str = falcon.HTTP_200) -> None:
        pages = self.pages
        values = [v for v in req.get_cookie_values(sessions.LOGIN_COOKIE) or [] if 0 < len(v) <= 100]
        login_cookie = values[0] if values else pages.store.new_login_cookie()
        resp.set_cookie(sessions.LOGIN_COOKIE, login_cookie, max_age=sessions.LOGIN_COOKIE_LIFETIME,
                        path="/login", secure=sessions.is_https(req, pages.services), http_only=True,
                        same_site="Lax")
        _html(resp, pages.login.substitute(
            stylesheets=_stylesheets(),
            message=f'<p class="error" role="alert">{html.escape(message)}</p>' if message else "",
            csrf=html.escape(pages.store.login_token(login_cookie)),
            next=html.escape(next_path),
            email=html.escape(email),
            email_focus="" if email else "autofocus",
            password_focus="autofocus" if email else "",
        ), status)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        next_path = safe_next(req.get_param("next"))
        if self.pages.dev or sessions.session_of(req, self.pages.services) is not None:
            _redirect(resp, next_path)
            return
        self.render(req, resp, next_path=next_path)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        pages = self.pages
        form = await _form(req)
        next_path = safe_next(form.get("next"))
        if pages.dev:
            _redirect(resp, next_path)
            return
        email = form.get("email", "").strip()[:320]
        password = form.get("password", "")
        login_cookies = req.get_cookie_values(sessions.LOGIN_COOKIE) or []
        login_cookie = login_cookies[0] if login_cookies else None
        if not pages.store.login_token_valid(login_cookie, form.get("csrf")):
            self.render(req, resp, next_path=next_path, email=email, status=falcon.HTTP_403,
                        message="This form had expired or did not come from this page (is the "
                                "browser blocking cookies?). Please log in again.")
            return
        if not email or not password:
            self.render(req, resp, next_path=next_path, email=email, status=falcon.HTTP_400,
                        message="Enter your email and your password.")
            return
        address = sessions.client_address(req, pages.services)
        wait, attempt = pages.store.start_attempt(email, address)
        if wait is not None:
            resp.set_header("Retry-After", str(wait))
            self.render(req, resp, next_path=next_path, email=email, status=falcon.HTTP_429,
                        message=f"Too many failed logins. Try again in {_minutes(wait)}.")
            return
        control = pages.services.control
        user = control.find_user_by_email(email)
        stored = control.password_hash(user.id) if user is not None else None
        async with passwords.CHECKS:
            right = await asyncio.to_thread(passwords.verify_password, stored, password)
        if user is None or not right:
            self.render(req, resp, next_path=next_path, email=email, status=falcon.HTTP_401,
                        message="Wrong email or password.")
            return
        pages.store.attempt_succeeded(email, attempt)
        if stored is not None and passwords.needs_rehash(stored):
            control.set_password_hash(user.id, await asyncio.to_thread(passwords.hash_password, password))
        session = pages.store.create(user)
        pages.set_session_cookie(req, resp, session.cookie)
        resp.unset_cookie(sessions.LOGIN_COOKIE, same_site="Lax", path="/login")
        _redirect(resp, next_path)


class LogoutResource:
    """``GET /logout`` (a button to confirm) and ``POST /logout`` (csrf): ends the session."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        pages = self.pages
        session = None if pages.dev else sessions.session_of(req, pages.services)
        if session is None:
            _redirect(resp, "/" if pages.dev else "/login")
            return
        _html(resp, pages.logout.substitute(stylesheets=_stylesheets(), csrf=html.escape(session.csrf),
                                            email=html.escape(session.user.email or session.user.name)))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        pages = self.pages
        form = await _form(req)
        session = None if pages.dev else sessions.session_of(req, pages.services)
        if session is not None:
            if not sessions.csrf_ok(session, form.get("csrf")):
                _html(resp, pages.logout.substitute(
                    stylesheets=_stylesheets(), csrf=html.escape(session.csrf),
                    email=html.escape(session.user.email or session.user.name),
                ).replace("<h1>Log out</h1>", '<h1>Log out</h1>\n<p class="error" role="alert">That '
                          "logout did not come from this site's page; press the button to log out.</p>"),
                      falcon.HTTP_403)
                return
            pages.store.end(session.id_hash)
        pages.clear_session_cookie(resp)
        _redirect(resp, "/" if pages.dev else "/login")


INVITE_COOKIE = "ls_invite"


class InviteResource:
    """``GET /invite/{token}`` (the form) and ``POST /invite/{token}`` (csrf, and for someone new:
    name, password, password2): accept an invitation, then go to the site's dashboard."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def _invitation(self, resp: falcon.asgi.Response, token: str) -> members.Invitation | None:
        try:
            return members.usable_invitation(self.pages.services.control, token)
        except members.InvitationError as exc:
            self.pages.notice(resp, "Invitation not valid", str(exc), exc.status)
            return None

    def render(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str,
               invitation: members.Invitation, session: sessions.Session | None, message: str = "",
               status: str = falcon.HTTP_200) -> None:
        pages = self.pages
        site = pages.services.control.get_site(invitation.site_id)
        action = html.escape(f"/invite/{token}")
        if session is not None:
            what = f"you are logged in as {session.user.email or session.user.name}"
            form = (f'<form method="post" action="{action}"><input type="hidden" name="csrf" '
                    f'value="{html.escape(session.csrf)}"><button type="submit">Join</button></form>')
        else:
            what = f"for {invitation.email}"
            cookies = [v for v in req.get_cookie_values(INVITE_COOKIE) or [] if 0 < len(v) <= 100]
            cookie = cookies[0] if cookies else pages.store.new_login_cookie()
            resp.set_cookie(INVITE_COOKIE, cookie, max_age=sessions.LOGIN_COOKIE_LIFETIME, path="/invite",
                            secure=sessions.is_https(req, pages.services), http_only=True, same_site="Lax")
            form = (f'<form method="post" action="{action}">'
                    f'<input type="hidden" name="csrf" value="{html.escape(pages.store.login_token(cookie))}">'
                    f'<label for="email">Email</label><input id="email" type="email" value="{html.escape(invitation.email)}" '
                    'readonly autocomplete="username">'
                    '<label for="name">Your name (optional)</label><input id="name" name="name" autocomplete="name">'
                    '<label for="password">Choose a password (at least 8 characters)</label>'
                    '<input id="password" name="password" type="password" autocomplete="new-password" required autofocus>'
                    '<label for="password2">The password again</label>'
                    '<input id="password2" name="password2" type="password" autocomplete="new-password" required>'
                    '<button type="submit">Set password and join</button></form>'
                    f'<p class="hint">Already have an account? <a href="/login?next={quote(f"/invite/{token}", safe="")}">'
                    'Log in</a> first, then open this link again.</p>')
        _html(resp, pages.invite.substitute(
            stylesheets=_stylesheets(),
            site=html.escape(site.name if site else "a site"), role=html.escape(invitation.role),
            what=html.escape(what), form=form,
            message=f'<p class="error" role="alert">{html.escape(message)}</p>' if message else "",
        ), status)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str) -> None:
        if self.pages.dev:
            self.pages.notice(resp, "Dev mode", "The server runs with --dev: there are no logins, so "
                                                "there is nothing to join.", falcon.HTTP_404)
            return
        invitation = self._invitation(resp, token)
        if invitation is not None:
            self.render(req, resp, token, invitation, sessions.session_of(req, self.pages.services))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token: str) -> None:
        pages = self.pages
        form = await _form(req)
        if pages.dev:
            _redirect(resp, "/")
            return
        invitation = self._invitation(resp, token)
        if invitation is None:
            return
        control = pages.services.control
        session = sessions.session_of(req, pages.services)
        try:
            if session is not None:
                if not sessions.csrf_ok(session, form.get("csrf")):
                    self.render(req, resp, token, invitation, session, status=falcon.HTTP_403,
                                message="That form did not come from this page; press Join again.")
                    return
                members.join(control, invitation, session.user)
            else:
                cookies = req.get_cookie_values(INVITE_COOKIE) or []
                if not pages.store.login_token_valid(cookies[0] if cookies else None, form.get("csrf")):
                    self.render(req, resp, token, invitation, None, status=falcon.HTTP_403,
                                message="This form had expired or did not come from this page (is the browser "
                                        "blocking cookies?). Please try again.")
                    return
                if form.get("password", "") != form.get("password2", ""):
                    self.render(req, resp, token, invitation, None, status=falcon.HTTP_400,
                                message="The two passwords differ: type the same one twice.")
                    return
                user = await members.new_invited_user(control, invitation, form.get("password", ""),
                                                      form.get("name", "").strip()[:200])
                members.join(control, invitation, user)
                session = pages.store.create(user)
                pages.set_session_cookie(req, resp, session.cookie)
                resp.unset_cookie(INVITE_COOKIE, same_site="Lax", path="/invite")
        except members.InvitationError as exc:
            if exc.status == falcon.HTTP_400:  # the password rule: ask again
                self.render(req, resp, token, invitation, None, status=exc.status,
                            message=str(exc).replace("invalid parameter 'password': ", "The password: "))
                return
            pages.notice(resp, "Invitation not valid", str(exc), exc.status)
            return
        _redirect(resp, f"/sites/{quote(invitation.site_id, safe='')}")


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    """Register the dashboard's pages and files on a worker's Falcon app."""
    pages = Pages(services)
    shell = ShellResource(pages)
    for path, _what in PAGES:
        app.add_route(path, shell)
    app.add_route("/login", LoginResource(pages))
    app.add_route("/logout", LogoutResource(pages))
    app.add_route("/invite/{token}", InviteResource(pages))
    app.add_route("/login.css", LoginStyleResource(STATIC))
    app.add_route("/assets/{file}", AssetResource(STATIC / "assets"))
    from dashboard import share  # share links' pages (/share/{slug}); it builds on this module

    share.add_routes(app, services, pages)
