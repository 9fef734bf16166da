"""Erasing one person (the right to be forgotten): ``DELETE /api/v2/sites/{site}/visitors/{visitor}``
and ``DELETE /api/v2/sites/{site}/users/{user}``.

``visitor`` is the tracker's visitor id (``ls_vid`` in the visitor's browser); the stored key is
the site's keyed hash of it, as ingest derives it. ``user`` is a user id the site sent with
``identify()``: every visitor key ever linked to it is erased. The work runs in the warehouse
process (``warehouse.erase``); the answer is its summary, which holds no personal data, and the
audit log records it in counts. Owners only (``api.routes.POLICY``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.stats import warehouse
from ingest.beacon import MAX_USER_ID_LENGTH
from ingest.identity import tracker_visitor_key
from littlestats import audit
from littlestats.controlplane import Site
from littlestats.http import json_response
from warehouse.protocol import WarehouseError

#: The tracker's visitor ids are at most this long (``ingest.beacon``): longer ones never had data.
MAX_VISITOR_ID_LENGTH = 128
#: An erasure rewrites files and re-aggregates: allow it time.
ERASE_TIMEOUT = 3600.0
RETRY_AFTER = 30


def _checked(name: str, value: str, max_len: int) -> str:
    if not value or len(value) > max_len:
        raise falcon.HTTPBadRequest(description=f"{name}: expected 1 to {max_len} characters, as the tracker sends it")
    return value


async def erase(services: Any, principal: Any, site: Site, visitor_keys: list[int],
                user_id: str | None) -> dict[str, Any]:
    """Ask the warehouse process to erase; its summary. 503 when it cannot (nothing was erased, or
    it completes the erasure itself at its next start)."""
    request = {"op": "erase", "site_id": site.id, "visitor_keys": visitor_keys, "user_id": user_id}
    try:
        answer = await asyncio.to_thread(warehouse(services).call, request, ERASE_TIMEOUT)
    except WarehouseError as exc:
        if exc.kind == "ErasureError":
            raise falcon.HTTPServiceUnavailable(description=str(exc), retry_after=RETRY_AFTER) from None
        raise falcon.HTTPServiceUnavailable(
            description=f"the erasure failed in the warehouse process ({exc}); an erasure that had started"
                        " is completed when the warehouse process restarts: retry the request to be sure",
            retry_after=RETRY_AFTER) from None
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise falcon.HTTPServiceUnavailable(
            description=f"the warehouse is not available to erase ({exc}); an erasure that had started is"
                        " completed when it restarts: retry the request to be sure",
            retry_after=RETRY_AFTER) from None
    summary = dict(answer)
    audit.record_erasure(services.control, summary, actor=principal, site_id=site.id,
                         by="user" if user_id is not None else "visitor")
    return summary


class VisitorErasureResource:
    """``DELETE /api/v2/sites/{site}/visitors/{visitor}``: erase a visitor by the tracker's id."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str,
                        visitor: str) -> None:
        principal, found = authorize(req, self.services, site)
        visitor = _checked("visitor id", visitor, MAX_VISITOR_ID_LENGTH)
        keys = [tracker_visitor_key(found.secret, visitor)]
        json_response(resp, await erase(self.services, principal, found, keys, None))


class UserErasureResource:
    """``DELETE /api/v2/sites/{site}/users/{user}``: erase every visitor linked to a user id."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str,
                        user: str) -> None:
        principal, found = authorize(req, self.services, site)
        user = _checked("user id", user, MAX_USER_ID_LENGTH)
        json_response(resp, await erase(self.services, principal, found, [], user))
