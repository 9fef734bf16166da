"""Dashboard login, sessions, CSRF, the login rate limit, the app shell and its assets, over real HTTP.

One real ``littlestats serve`` (two workers, authentication on) with users and passwords made by
the CLI. The server trusts 127.0.0.1 as a proxy, so each test speaks for its own client address
through ``X-Forwarded-For`` and the rate-limit tests do not lock the others out.
"""

from __future__ import annotations

import gzip
import html
import itertools
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from dashboard.security import CONTENT_SECURITY_POLICY
from tests.server import LiveServer, cli, running_server

pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parents[2] / "dashboard" / "static"
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
PASSWORD = "correct horse battery"
_addresses = itertools.count(1)


def set_password(data_dir: Path, email: str, password: str, command: str = "passwd") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "littlestats", "users", command, email, "--password-stdin", "--data-dir", str(data_dir)],
        input=password + "\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@dataclass
class Dash:
    server: LiveServer
    owner_site: dict
    other_site: dict

    @property
    def url(self) -> str:
        return self.server.url

    def browser(self) -> httpx.Client:
        """A client with its own cookie jar and its own client address (via the trusted proxy)."""
        address = f"198.51.100.{next(_addresses)}"
        return httpx.Client(base_url=self.url, timeout=30, headers={"X-Forwarded-For": address})

    def login(self, client: httpx.Client, email: str, password: str = PASSWORD,
              next_path: str | None = None) -> httpx.Response:
        form_page = client.get("/login" + (f"?next={quote(next_path, safe='')}" if next_path else ""))
        assert form_page.status_code == 200, form_page.text
        return client.post("/login", data={"email": email, "password": password, "csrf": csrf_field(form_page.text),
                                           "next": hidden(form_page.text, "next")})

    def log_in(self, client: httpx.Client, email: str) -> None:
        """Log `client` in as `email` (with the right password), or fail saying why not."""
        r = self.login(client, email)
        assert r.status_code == 303, (r.status_code, r.text[-600:])


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, page
    return html.unescape(match.group(1))


def altered(token: str) -> str:
    """`token` with its last character changed (to another one, always)."""
    return token[:-1] + ("B" if token.endswith("A") else "A")


def csrf_field(page: str) -> str:
    return hidden(page, "csrf")


def page_config(page: str) -> dict:
    match = re.search(r'<meta name="littlestats" content="([^"]*)">', page)
    assert match, page
    return json.loads(html.unescape(match.group(1)))


def assert_secure_headers(r: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers.get(name))


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    data_dir = tmp_path_factory.mktemp("dashboard-auth") / "data"
    data_dir.mkdir()
    env = {"LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32"}
    with running_server(data_dir, 2, env=env) as srv:
        sites = {}
        for email in ("owner@example.com", "other@example.com", "changer@example.com", "limited@example.com",
                      "burst@example.com"):
            set_password(data_dir, email, PASSWORD, command="add")
        for email, domain in (("owner@example.com", "owner.example"), ("other@example.com", "other.example")):
            token = cli(data_dir, "token", "create", "--user", email).strip()
            r = httpx.post(f"{srv.url}/api/v2/sites", json={"domain": domain},
                           headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            sites[email] = r.json()
        yield Dash(srv, sites["owner@example.com"], sites["other@example.com"])


def test_pages_redirect_to_login_without_a_session(dash: Dash) -> None:
    site = dash.owner_site["id"]
    with dash.browser() as c:
        for path in ("/", f"/sites/{site}?period=30d&filter=country%3D%3DDE", f"/sites/{site}/settings", "/settings"):
            r = c.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert c.head(path).headers["location"] == r.headers["location"]
            assert r.headers["location"] == "/login?next=" + quote(path, safe="")
            assert_secure_headers(r)


def test_login_sets_a_hardened_session_cookie_and_the_shell_carries_the_config(dash: Dash) -> None:
    site = dash.owner_site["id"]
    with dash.browser() as c:
        r = dash.login(c, "owner@example.com", next_path=f"/sites/{site}?period=7d")
        assert r.status_code == 303
        assert r.headers["location"] == f"/sites/{site}?period=7d"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("ls_session="))
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "max-age", "path"} <= attributes
        assert "samesite=lax" in cookie.lower() and "max-age=1209600" in cookie.lower()
        assert "secure" not in attributes  # plain HTTP here; see the HTTPS test

        shell = c.get(f"/sites/{site}?period=7d")
        assert shell.status_code == 200
        assert shell.headers["cache-control"] == "no-cache"
        assert shell.headers["content-type"].startswith("text/html")
        assert_secure_headers(shell)
        config = page_config(shell.text)
        assert config["dev"] is False
        assert config["user"]["email"] == "owner@example.com" and config["user"]["isAdmin"] is False
        assert len(config["csrf"]) >= 32
        assert '<meta name="littlestats" content="">' not in shell.text
        for path in ("/", "/settings", f"/sites/{dash.owner_site['domainKey']}/settings"):
            assert c.get(path).status_code == 200, path
        # Logged in, /login goes straight on.
        assert c.get("/login?next=/settings").headers["location"] == "/settings"


def test_the_page_config_survives_any_user_name(dash: Dash) -> None:
    name = """Ada "<script>alert(1)</script>" & 'Bob' ></meta>"""
    out = subprocess.run(
        [sys.executable, "-m", "littlestats", "users", "add", "quotes@example.com", "--name", name,
         "--password-stdin", "--data-dir", str(dash.server.data_dir)],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with dash.browser() as c:
        dash.log_in(c, "quotes@example.com")
        shell = c.get("/").text
    assert page_config(shell)["user"]["name"] == name
    assert "<script>alert(1)" not in shell and "</meta>" not in shell


def test_session_over_https_behind_the_trusted_proxy_gets_a_secure_cookie(dash: Dash) -> None:
    def secure_cookie(r: httpx.Response, name: str) -> str:
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(name + "="))
        assert "secure" in {a.strip().lower() for a in cookie.split(";")[1:]}, cookie
        return cookie.split(";")[0]

    with dash.browser() as c:
        c.headers["X-Forwarded-Proto"] = "https"
        form_page = c.get("/login")
        login_cookie = secure_cookie(form_page, "ls_login")  # httpx keeps Secure cookies off plain HTTP
        r = c.post("/login", headers={"Cookie": login_cookie},
                   data={"email": "owner@example.com", "password": PASSWORD, "csrf": csrf_field(form_page.text)})
        assert r.status_code == 303
        secure_cookie(r, "ls_session")


def test_wrong_password_and_unknown_email_are_refused_alike(dash: Dash) -> None:
    with dash.browser() as c:
        wrong = dash.login(c, "owner@example.com", password="not the password")
        unknown = dash.login(c, "nobody@example.com")
        for r in (wrong, unknown):
            assert r.status_code == 401
            assert "Wrong email or password." in r.text
            assert not any(h.startswith("ls_session=") for h in r.headers.get_list("set-cookie"))
            assert_secure_headers(r)
        assert c.get("/").status_code == 303


def test_login_form_without_its_csrf_token_is_refused(dash: Dash) -> None:
    with dash.browser() as c:
        form_page = c.get("/login")
        no_token = c.post("/login", data={"email": "owner@example.com", "password": PASSWORD})
        forged = c.post("/login", data={"email": "owner@example.com", "password": PASSWORD,
                                        "csrf": altered(csrf_field(form_page.text))})
    with dash.browser() as fresh:  # a token from someone else's form, without its cookie
        other_browser = fresh.post("/login", data={"email": "owner@example.com", "password": PASSWORD,
                                                   "csrf": csrf_field(form_page.text)})
    for r in (no_token, forged, other_browser):
        assert r.status_code == 403
        assert "expired or did not come from this page" in r.text
        assert not any(h.startswith("ls_session=") for h in r.headers.get_list("set-cookie"))


def test_login_only_redirects_within_the_site(dash: Dash) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/logout", "/a\r\nSet-Cookie: x=1"):
        with dash.browser() as c:
            r = dash.login(c, "owner@example.com", next_path=target)
            assert r.status_code == 303
            assert r.headers["location"] == "/", target
    with dash.browser() as c:
        r = dash.login(c, "owner@example.com", next_path="/sites/café?q=a b")
        assert r.status_code == 303 and r.headers["location"] == "/sites/caf%C3%A9?q=a%20b"


def test_the_api_accepts_the_session_and_wants_the_csrf_header_for_changes(dash: Dash) -> None:
    with dash.browser() as c:
        dash.log_in(c, "owner@example.com")
        csrf = page_config(c.get("/").text)["csrf"]
        me = c.get("/api/v2/me")
        assert me.status_code == 200
        assert me.json() == {"user": {"id": me.json()["user"]["id"], "email": "owner@example.com",
                                      "name": "owner@example.com", "isAdmin": False}, "dev": False}
        assert [s["id"] for s in c.get("/api/v2/sites").json()["sites"]] == [dash.owner_site["id"]]

        missing = c.post("/api/v2/tokens", json={"name": "from the page"})
        wrong = c.post("/api/v2/tokens", json={"name": "from the page"}, headers={"X-CSRF-Token": altered(csrf)})
        for r in (missing, wrong):
            assert r.status_code == 403
            assert "X-CSRF-Token" in r.json()["error"]
        assert c.get("/api/v2/tokens").json()["tokens"][-1]["name"] != "from the page"
        made = c.post("/api/v2/tokens", json={"name": "from the page"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201 and made.json()["name"] == "from the page"
        assert c.patch(f"/api/v2/sites/{dash.owner_site['id']}", json={"name": "Renamed"},
                       headers={"X-CSRF-Token": csrf}).json()["name"] == "Renamed"
    with dash.browser() as stranger:
        assert stranger.get("/api/v2/me").status_code == 401
        stranger.cookies.set("ls_session", "forged.value")
        r = stranger.get("/api/v2/me")
        assert r.status_code == 401 and "log in again" in r.json()["error"]


def test_the_live_endpoints_accept_the_session_too(dash: Dash) -> None:
    site = dash.owner_site["id"]
    with dash.browser() as c:
        dash.log_in(c, "owner@example.com")
        csrf = page_config(c.get("/").text)["csrf"]
        assert c.get(f"/api/v2/stats/{site}").status_code == 200
        assert c.post(f"/api/v2/realtime/{site}/token").status_code == 403
        minted = c.post(f"/api/v2/realtime/{site}/token", headers={"X-CSRF-Token": csrf})
        assert minted.status_code == 200 and minted.json()["token"]
        assert c.post(f"/api/v2/realtime/{dash.other_site['id']}/token", headers={"X-CSRF-Token": csrf}).status_code == 404


def test_a_second_user_cannot_open_the_first_users_site(dash: Dash) -> None:
    with dash.browser() as c:
        assert dash.login(c, "other@example.com").status_code == 303
        foreign = [c.get(f"/sites/{dash.owner_site[ref]}{tail}")
                   for ref in ("id", "domainKey") for tail in ("", "/settings")]
        unknown = c.get("/sites/doesnotexist")
        for r in (*foreign, unknown):
            assert r.status_code == 404
            assert r.headers["content-type"].startswith("text/html")
            assert "<h1>Not found</h1>" in r.text
            assert_secure_headers(r)
        assert dash.owner_site["domain"] not in "".join(r.text for r in foreign)
        assert c.get(f"/api/v2/sites/{dash.owner_site['id']}/stats").status_code == 404
        assert c.get(f"/sites/{dash.other_site['id']}").status_code == 200


def test_logout_needs_the_csrf_token_and_ends_the_session_on_the_server(dash: Dash) -> None:
    with dash.browser() as c:
        dash.log_in(c, "owner@example.com")
        stolen = c.cookies.get("ls_session")
        confirm = c.get("/logout")
        assert confirm.status_code == 200 and 'action="/logout"' in confirm.text
        refused = c.post("/logout", data={"csrf": "not-the-token"})
        assert refused.status_code == 403
        assert c.get("/").status_code == 200  # still logged in
        done = c.post("/logout", data={"csrf": csrf_field(confirm.text)})
        assert done.status_code == 303 and done.headers["location"] == "/login"
        assert any(h.startswith("ls_session=") and "expires=" in h.lower() for h in done.headers.get_list("set-cookie"))
        assert c.get("/").status_code == 303
    with dash.browser() as replay:  # the old cookie, sent again, opens nothing
        replay.cookies.set("ls_session", stolen)
        assert replay.get("/").status_code == 303
        assert replay.get("/api/v2/me").status_code == 401


def test_changing_the_password_ends_the_other_sessions(dash: Dash) -> None:
    email = "changer@example.com"
    with dash.browser() as a, dash.browser() as b:
        dash.log_in(a, email)
        dash.log_in(b, email)
        csrf = page_config(a.get("/").text)["csrf"]
        wrong = a.post("/api/v2/me/password", json={"current": "not it at all", "new": "a new passphrase"},
                       headers={"X-CSRF-Token": csrf})
        assert wrong.status_code == 403 and "current" in wrong.json()["error"]
        short = a.post("/api/v2/me/password", json={"current": PASSWORD, "new": "short"},
                       headers={"X-CSRF-Token": csrf})
        assert short.status_code == 400 and "at least 8" in short.json()["error"]
        r = a.post("/api/v2/me/password", json={"current": PASSWORD, "new": "a new passphrase"},
                   headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json() == {"changed": True, "sessionsEnded": 1}
        assert a.get("/api/v2/me").status_code == 200
        assert b.get("/api/v2/me").status_code == 401
    with dash.browser() as c:
        assert dash.login(c, email).status_code == 401
        assert dash.login(c, email, password="a new passphrase").status_code == 303
        set_password(dash.server.data_dir, email, PASSWORD)  # the CLI ends sessions too
        assert c.get("/").status_code == 303


def test_failed_logins_are_limited_per_email_and_per_address(dash: Dash) -> None:
    email = "limited@example.com"
    for _ in range(5):  # five failures, each from another address, each on a new connection
        with dash.browser() as c:
            assert dash.login(c, email, password="guess").status_code == 401
    with dash.browser() as c:
        limited = dash.login(c, email)  # even the right password now waits
    assert limited.status_code == 429
    assert 800 <= int(limited.headers["retry-after"]) <= 900
    assert "Too many failed logins" in limited.text
    assert not any(h.startswith("ls_session=") for h in limited.headers.get_list("set-cookie"))

    with dash.browser() as guesser:  # one address trying many emails
        for i in range(5):
            assert dash.login(guesser, f"guess{i}@example.com", password="guess").status_code == 401
        assert dash.login(guesser, "owner@example.com").status_code == 429
    with dash.browser() as c:  # others are not affected
        assert dash.login(c, "owner@example.com").status_code == 303

    db = sqlite3.connect(dash.server.data_dir / "control.sqlite3")
    subjects = [row[0] for row in db.execute("SELECT subject FROM login_failures")]
    db.close()
    assert len(subjects) >= 20  # 10 failures, each for an email and an address
    assert not any(email in s or "198.51.100." in s for s in subjects)  # stored as HMACs only


def test_guesses_sent_all_at_once_to_both_workers_are_all_counted(dash: Dash) -> None:
    browsers = [dash.browser() for _ in range(12)]
    forms = [(c, csrf_field(c.get("/login").text)) for c in browsers]

    def guess(form: tuple[httpx.Client, str]) -> int:
        client, csrf = form
        return client.post("/login", data={"email": "burst@example.com", "password": "guess", "csrf": csrf}).status_code

    with ThreadPoolExecutor(len(forms)) as pool:
        statuses = sorted(pool.map(guess, forms))
    for c in browsers:
        c.close()
    assert statuses == [401] * 5 + [429] * 7


def test_passwords_and_session_ids_are_not_stored_in_clear(dash: Dash) -> None:
    with dash.browser() as c:
        dash.log_in(c, "owner@example.com")
        session_id = c.cookies["ls_session"].split(".")[0]
    db = dash.server.data_dir / "control.sqlite3"
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b"")
    assert PASSWORD.encode() not in raw
    assert session_id.encode() not in raw
    conn = sqlite3.connect(db)
    hashes = [row[0] for row in conn.execute("SELECT password_hash FROM users WHERE email LIKE '%@example.com'")]
    conn.close()
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)


def test_assets_are_served_immutable_with_etag_and_gzip(dash: Dash) -> None:
    manifest = json.loads((STATIC / "manifest.json").read_text())
    for name, content_type in ((manifest["js"], "text/javascript"), (manifest["css"], "text/css")):
        body = (STATIC / "assets" / name).read_bytes()
        r = httpx.get(f"{dash.url}/assets/{name}", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200 and r.content == body
        assert r.headers["content-type"].startswith(content_type)
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert_secure_headers(r)
        etag = r.headers["etag"]
        head = httpx.head(f"{dash.url}/assets/{name}", headers={"Accept-Encoding": "identity"})
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
        assert httpx.get(f"{dash.url}/assets/{name}", headers={"If-None-Match": etag}).status_code == 304
        with httpx.stream("GET", f"{dash.url}/assets/{name}", headers={"Accept-Encoding": "gzip"}) as z:
            raw = z.read() if z.headers.get("content-encoding") != "gzip" else b"".join(z.iter_raw())
            if z.headers.get("content-encoding") == "gzip":
                assert gzip.decompress(raw) == body and len(raw) < len(body)
            else:
                assert len(gzip.compress(body)) >= len(body)  # only when gzip would not help
    for bad in ("nothere.js", "app.py", ".hidden.js", "index.html"):
        r = httpx.get(f"{dash.url}/assets/{bad}")
        assert r.status_code == 404, bad
        assert_secure_headers(r)
    escape = httpx.get(f"{dash.url}/assets/..%2Fmanifest.json")
    assert escape.status_code == 404 and b"app." not in escape.content


def test_login_page_has_no_inline_script_or_style(dash: Dash) -> None:
    with dash.browser() as c:
        page = c.get("/login")
    assert_secure_headers(page)
    assert "<script" not in page.text and "<style" not in page.text and " style=" not in page.text
    css = httpx.get(f"{dash.url}/login.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.content == (STATIC / "login.css").read_bytes()
    assert_secure_headers(css)


def test_users_add_asks_for_a_password_or_refuses_without_a_terminal(dash: Dash) -> None:
    data_dir = dash.server.data_dir
    no_tty = subprocess.run([sys.executable, "-m", "littlestats", "users", "add", "new@example.com",
                             "--data-dir", str(data_dir)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert no_tty.returncode != 0 and "--password-stdin" in no_tty.stderr
    short = subprocess.run([sys.executable, "-m", "littlestats", "users", "add", "new@example.com",
                            "--password-stdin", "--data-dir", str(data_dir)], input="short\n",
                           capture_output=True, text=True)
    assert short.returncode != 0 and "at least 8" in short.stderr
    tokens_only = json.loads(cli(data_dir, "users", "add", "api-only@example.com", "--no-password"))
    assert tokens_only["hasPassword"] is False
    with dash.browser() as c:
        assert dash.login(c, "api-only@example.com", password="").status_code == 400
        assert dash.login(c, "api-only@example.com", password="anything at all").status_code == 401


def test_dev_mode_pages_need_no_login(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1, "--dev") as srv:
        site = httpx.post(f"{srv.url}/api/v2/sites", json={"domain": "dev.example"}).json()
        with httpx.Client(base_url=srv.url) as c:
            shell = c.get(f"/sites/{site['id']}")
            assert shell.status_code == 200
            assert page_config(shell.text) == {"csrf": "dev", "user": None, "dev": True}
            assert_secure_headers(shell)
            assert c.get("/").status_code == 200
            assert c.get("/login").headers["location"] == "/"
            assert c.get("/sites/doesnotexist").status_code == 404
            assert c.get("/api/v2/me").json() == {"user": None, "dev": True}


@pytest.mark.browser
def test_a_browser_logs_in_calls_the_api_with_the_csrf_token_and_logs_out(dash: Dash) -> None:
    from playwright.sync_api import sync_playwright

    from tests.tracker.harness import launch

    site, url = dash.owner_site["id"], dash.url
    with sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context(extra_http_headers={"X-Forwarded-For": f"198.51.100.{next(_addresses)}"})
            page = context.new_page()
            page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                                 " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI))")
            page.goto(f"{url}/sites/{site}?period=7d")
            assert page.url == f"{url}/login?next=" + quote(f"/sites/{site}?period=7d", safe="")
            page.fill("#email", "owner@example.com")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/sites/{site}?period=7d")
            page.wait_for_selector("#app > *")
            assert "ls_session" not in page.evaluate("document.cookie")  # HTTP-only
            statuses = page.evaluate("""async () => {
                const csrf = JSON.parse(document.querySelector('meta[name=littlestats]').content).csrf;
                const post = (headers) => fetch('/api/v2/tokens', {method: 'POST', credentials: 'same-origin',
                    headers: {'Content-Type': 'application/json', ...headers}, body: '{"name": "browser"}'});
                return [(await post({})).status, (await post({'X-CSRF-Token': csrf})).status,
                        (await fetch('/api/v2/me')).status];
            }""")
            assert statuses == [403, 201, 200]
            assert page.evaluate("window.__csp") == []
            page.goto(f"{url}/logout")
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/login")
            page.goto(f"{url}/")
            assert page.url == f"{url}/login?next=%2F"
            assert page.evaluate("window.__csp") == []
        finally:
            browser.close()
