"""Static files of the dashboard: the built assets (``/assets/{file}``) and the login page's CSS.

Each file is read once per worker and kept with its ETag and gzip form (the build's ``.gz`` beside
it when there is one, else compressed here once); a changed file (new mtime or size) is read again.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import falcon
import falcon.asgi

from dashboard.security import secure

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
COMPRESSIBLE = {".js", ".mjs", ".css", ".map", ".json", ".svg", ".txt"}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str
    stamp: tuple[int, int]


def _load(path: Path, stamp: tuple[int, int]) -> Asset:
    body = path.read_bytes()
    gzipped = None
    if path.suffix in COMPRESSIBLE:
        built = path.with_name(path.name + ".gz")
        gzipped = built.read_bytes() if built.is_file() else gzip.compress(body, 9, mtime=0)
        if len(gzipped) >= len(body):
            gzipped = None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, gzipped, etag, CONTENT_TYPES[path.suffix], stamp)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


class StaticFiles:
    """Serves the files of one directory (only plain names with a known type) with `cache_control`."""

    def __init__(self, directory: Path, cache_control: str) -> None:
        self.directory = directory
        self.cache_control = cache_control
        self._cache: dict[str, Asset] = {}

    def find(self, name: str) -> Asset | None:
        if not _NAME.fullmatch(name) or Path(name).suffix not in CONTENT_TYPES:
            return None
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(name)
        if cached is None or cached.stamp != stamp:
            if len(self._cache) > 1000:
                self._cache.clear()
            cached = self._cache[name] = _load(path, stamp)
        return cached

    def respond(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        secure(resp)
        asset = self.find(name)
        if asset is None:
            resp.status = falcon.HTTP_404
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = f"no dashboard asset named {name!r}\n"
            return
        resp.set_header("Cache-Control", self.cache_control)
        resp.set_header("ETag", asset.etag)
        resp.set_header("Vary", "Accept-Encoding")
        if _matches(req.get_header("If-None-Match"), asset.etag):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = asset.content_type
        if asset.gzipped is not None and "gzip" in (req.get_header("Accept-Encoding") or "").lower():
            resp.set_header("Content-Encoding", "gzip")
            resp.data = asset.gzipped
        else:
            resp.data = asset.body


class AssetResource:
    """``GET /assets/{file}``: the build's content-hashed files, cached for a year."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory, IMMUTABLE)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, file: str) -> None:
        self.files.respond(req, resp, file)

    on_head = on_get  # Falcon sends the headers without the body


class LoginStyleResource:
    """``GET /login.css``: the login page's few rules (not content-hashed, so revalidated)."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory, REVALIDATE)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self.files.respond(req, resp, "login.css")
