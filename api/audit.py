"""The audit log over HTTP: ``GET /api/v2/sites/{site}/audit`` (the site's owners) and
``GET /api/v2/audit`` (server admins: every entry, tokens' too).

Answers ``{"entries": [{id, at, actor: {id, email}, action, siteId, target, details}], "next"}``,
newest first; ``limit`` (1–500, default 100) and ``before`` (an entry id: the page after ``next``)
page through it. The entries and what they never hold are in ``littlestats.audit``.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from littlestats.http import json_response

MAX_LIMIT = 500
MAX_ID = 2**63 - 1  # SQLite's largest integer: an entry id is never above it


def _page(req: falcon.asgi.Request, services: Any, site_id: str | None) -> dict[str, Any]:
    limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT) or 100
    before = req.get_param_as_int("before", min_value=1, max_value=MAX_ID)
    entries = services.control.list_audit(site_id, limit=limit, before=before)
    return {"entries": [e.public() for e in entries],
            "next": entries[-1].id if len(entries) == limit else None}


class SiteAuditResource:
    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _principal, found = authorize(req, self.services, site)
        json_response(resp, _page(req, self.services, found.id))


class ServerAuditResource:
    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        json_response(resp, _page(req, self.services, None))
