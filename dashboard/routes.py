"""Serves the dashboard's built app: the shell for every page and the hashed assets.

A minimal implementation of the serving contract (docs/dashboard.md): ``/assets/{file}`` cached
for a year, the shell with ``no-cache`` and the page's settings in its ``littlestats`` meta tag,
security headers on both. It checks no session: pages are only useful with ``--dev`` here, where
the API needs no login either.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import orjson

STATIC = Path(__file__).with_name("static")
PLACEHOLDER = '<meta name="littlestats" content="">'
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
YEAR = 365 * 86_400


class AssetResource:
    def __init__(self, root: Path) -> None:
        self.files: dict[str, tuple[bytes, bytes | None, str]] = {}
        for path in root.glob("*"):
            if path.suffix == ".gz" or not path.is_file():
                continue
            gz = path.with_name(path.name + ".gz")
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            self.files[path.name] = (path.read_bytes(), gz.read_bytes() if gz.exists() else None, ctype)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        found = self.files.get(name)
        if found is None:
            raise falcon.HTTPNotFound(description=f"no asset {name!r}")
        body, gz, ctype = found
        resp.set_headers(SECURITY_HEADERS)
        resp.cache_control = ["public", f"max-age={YEAR}", "immutable"]
        resp.content_type = ctype
        resp.vary = ["Accept-Encoding"]
        if gz is not None and "gzip" in (req.get_header("Accept-Encoding") or ""):
            resp.set_header("Content-Encoding", "gzip")
            resp.data = gz
        else:
            resp.data = body


class ShellResource:
    def __init__(self, services: Any) -> None:
        self.dev = bool(services.settings.dev)
        shell = (STATIC / "index.html").read_text()
        meta = orjson.dumps({"csrf": "", "user": None, "dev": self.dev}).decode()
        self.body = shell.replace(PLACEHOLDER, f"<meta name=\"littlestats\" content='{html.escape(meta)}'>")

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: str) -> None:
        if not self.dev:
            raise falcon.HTTPNotFound(description="the dashboard needs --dev in this build")
        resp.set_headers(SECURITY_HEADERS)
        resp.cache_control = ["no-cache"]
        resp.content_type = "text/html; charset=utf-8"
        resp.text = self.body


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    if not (STATIC / "index.html").exists():
        return
    app.add_route("/assets/{name}", AssetResource(STATIC / "assets"))
    shell = ShellResource(services)
    for path in ("/", "/settings", "/sites/{site}", "/sites/{site}/settings"):
        app.add_route(path, shell)
