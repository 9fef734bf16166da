"""``GET /tracker.js``: the built tracker (``tracker/tracker.js``), cached hard by browsers and CDNs.

The script is read once per worker. Its ETag is a hash of its bytes, so every release that changes
the tracker changes the ETag; browsers revalidate after a day (``max-age``) and get a 304 while it
is unchanged. A URL carrying the current version (``/tracker.js?v=<version>``, the ETag's value)
never changes content, so it is cached for a year as immutable.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi

BUILT_TRACKER = Path(__file__).with_name("tracker.js")
DAY = 86_400
YEAR = 365 * DAY


@dataclass(frozen=True)
class TrackerScript:
    """The served bytes, their gzip form and their validators."""

    body: bytes
    gzipped: bytes
    version: str

    @classmethod
    def load(cls, path: Path = BUILT_TRACKER) -> TrackerScript:
        body = path.read_bytes()
        return cls(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            version=hashlib.sha256(body).hexdigest()[:16],
        )

    def etag(self, gzipped: bool) -> str:
        # Strong validators differ per content coding (RFC 9110 §8.8.3).
        return f'"{self.version}-gz"' if gzipped else f'"{self.version}"'


def _etag_matches(header: str | None, etags: tuple[str, ...]) -> bool:
    """If-None-Match uses the weak comparison: ``W/`` prefixes are ignored."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return any(tag in candidates for tag in etags)


class TrackerResource:
    def __init__(self, script: TrackerScript) -> None:
        self.script = script

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._respond(req, resp, with_body=True)

    async def on_head(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._respond(req, resp, with_body=False)

    def _respond(self, req: Any, resp: falcon.asgi.Response, with_body: bool) -> None:
        script = self.script
        use_gzip = "gzip" in (req.get_header("Accept-Encoding") or "").lower()
        etag = script.etag(use_gzip)
        versioned = req.get_param("v") == script.version
        resp.set_header(
            "Cache-Control",
            f"public, max-age={YEAR}, immutable"
            if versioned
            else f"public, max-age={DAY}, stale-while-revalidate={7 * DAY}",
        )
        resp.set_header("ETag", etag)
        resp.set_header("Vary", "Accept-Encoding")
        resp.set_header("X-Content-Type-Options", "nosniff")
        # The ETag of either coding validates: the bytes behind both are the same script.
        if _etag_matches(req.get_header("If-None-Match"), (script.etag(False), script.etag(True))):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = "text/javascript; charset=utf-8"
        data = script.gzipped if use_gzip else script.body
        if use_gzip:
            resp.set_header("Content-Encoding", "gzip")
        if with_body:
            resp.data = data
        else:
            resp.set_header("Content-Length", str(len(data)))


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    """Called by ``littlestats.app`` for every worker."""
    app.add_route("/tracker.js", TrackerResource(TrackerScript.load()))
