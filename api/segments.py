"""Saved segments: named filter sets per site (``/api/v2/sites/{site}/segments``).

A segment is a list of filters exactly as ``POST /query`` takes them (``[op, dimension,
[values]]``), validated by the same parser when it is saved and again when it is used. Every
query — the general query's ``"segment"`` field and every named endpoint's ``segment=`` — takes a
segment's name or id and adds its filters to the request's own (``api.params.segment_lookup``). Viewers list
and use a site's segments; admins create, change and delete them (docs/access.md).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.body import bad_param, check_fields, json_body
from littlestats.controlplane import Site
from littlestats.http import json_response
from warehouse.query.model import QueryError, parse_query

MAX_SEGMENTS = 100
MAX_NAME = 100


def _name(body: dict[str, Any]) -> str | None:
    value = body.get("name")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME or "\x00" in value:
        raise bad_param("name", f"expected a non-empty name of at most {MAX_NAME} characters")
    return value.strip()


def _filters(services: Any, site: Site, body: dict[str, Any]) -> list[Any] | None:
    """The body's ``filters``, validated as a query's (goals must be the site's), normalised."""
    raw = body.get("filters")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise bad_param("filters", "expected a non-empty list of [operator, dimension, [values]]")
    goals = services.control.goal_specs(site.id)
    try:
        q = parse_query(site.id, site.timezone, {"filters": raw}, goals=goals)
    except QueryError as exc:
        raise bad_param("filters", exc.message) from None
    return [[f.op, f.dimension, list(f.values)] for f in q.filters]


class SegmentsResource:
    """``GET/POST /api/v2/sites/{site}/segments``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"segments": [s.public() for s in self.services.control.list_segments(found.id)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        body = await json_body(req)
        check_fields(body, ("name", "filters"))
        name = _name(body)
        if name is None:
            raise bad_param("name", "required: the segment's name")
        filters = _filters(self.services, found, body)
        if filters is None:
            raise bad_param("filters", "required: a list of [operator, dimension, [values]]")
        control = self.services.control
        if len(control.list_segments(found.id)) >= MAX_SEGMENTS:
            raise bad_param("name", f"a site has at most {MAX_SEGMENTS} segments")
        segment = control.create_segment(found.id, name, filters, principal.user_id)
        if segment is None:
            raise falcon.HTTPConflict(description=f"invalid parameter 'name': the site already has a segment {name!r}")
        json_response(resp, segment.public(), status=falcon.HTTP_201)


class SegmentResource:
    """``GET/PATCH/DELETE /api/v2/sites/{site}/segments/{segment}`` (by id or name)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _find(self, site: Site, ref: str) -> Any:
        segment = self.services.control.find_segment(site.id, ref)
        if segment is None:
            raise falcon.HTTPNotFound(description=f"segment {ref!r} not found")
        return segment

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, segment: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, self._find(found, segment).public())

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, segment: str) -> None:
        _, found = authorize(req, self.services, site)
        current = self._find(found, segment)
        body = await json_body(req)
        check_fields(body, ("name", "filters"))
        name, filters = _name(body), _filters(self.services, found, body)
        try:
            updated = self.services.control.update_segment(found.id, current.id, name, filters)
        except sqlite3.IntegrityError:
            raise falcon.HTTPConflict(
                description=f"invalid parameter 'name': the site already has a segment {name!r}") from None
        json_response(resp, self._find(found, current.id).public() if updated is None else updated.public())

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, segment: str) -> None:
        _, found = authorize(req, self.services, site)
        current = self._find(found, segment)
        self.services.control.delete_segment(found.id, current.id)
        json_response(resp, {"id": current.id, "deleted": True})
