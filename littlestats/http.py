"""HTTP plumbing shared by every resource: the error shape, CORS for beacons, body limits."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import falcon
import falcon.asgi
import orjson

log = logging.getLogger(__name__)

JSON = falcon.MEDIA_JSON

# The largest body an API resource reads (beacons have their own setting, ``max_body_bytes``): the
# worker refuses a longer ``Content-Length`` before reading it (``littlestats.worker``).
API_BODY_LIMIT = 64 * 1024


def error_serializer(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every error body is ``{"error": "..."}`` naming the problem (SPEC §3)."""
    message = exc.description or exc.title or "error"
    resp.content_type = JSON
    resp.data = orjson.dumps({"error": message})


async def unexpected_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: Exception, params: dict[str, Any]
) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(description="internal error; see the server log")


class PublicCORS:
    """Beacons and the tracker script may come from any origin; nothing else is open."""

    PUBLIC_PREFIXES = ("/api/v2/track/", "/tracker.js")

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        if not req.path.startswith(self.PUBLIC_PREFIXES):
            return
        resp.set_header("Access-Control-Allow-Origin", "*")
        if req.method == "OPTIONS":
            resp.set_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
            resp.set_header(
                "Access-Control-Allow-Headers",
                req.get_header("Access-Control-Request-Headers") or "Content-Type",
            )
            resp.set_header("Access-Control-Max-Age", "86400")
            resp.status = falcon.HTTP_204


async def read_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The raw request body, whatever its content type (``sendBeacon`` sends text/plain)."""
    length = req.content_length
    if length is not None and length > limit:
        raise falcon.HTTPContentTooLarge(
            description=f"request body is {length} bytes; the limit is {limit}"
        )
    body = await req.stream.read(limit + 1)
    if len(body) > limit:
        raise falcon.HTTPContentTooLarge(description=f"request body exceeds the limit of {limit} bytes")
    return body


def json_response(resp: falcon.asgi.Response, data: Any, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = orjson.dumps(data)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
