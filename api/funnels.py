"""Funnels: ``/api/v2/sites/{site}/funnels`` (definitions) and ``…/funnels/{funnel}/answer``.

Definitions are validated by ``warehouse.query.funnels.parse_funnel`` and kept in the control plane
(``littlestats.funnel_store``); an answer parses the usual stats parameters (``api.params``) into
one ``Query`` plus ``dimension``, and runs it through ``warehouse.query.funnels``. Who may call
what is ``api.routes.POLICY``'s business: viewers list, read and answer; admins and owners manage.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from api.auth import authorize
from api.body import bad_param, check_fields, json_body
from api.params import _one, bad_request, body_from_params, segment_lookup
from api.stats import goals_of, period_of, warehouse, warehouse_unavailable
from littlestats.controlplane import Site
from littlestats.funnel_store import MAX_FUNNELS_PER_SITE, DuplicateFunnelName, SavedFunnel
from littlestats.http import json_response
from warehouse.query.funnels import (
    MAX_NAME,
    Funnel,
    FunnelAnswer,
    MissingGoal,
    check_breakdown,
    parse_funnel,
    run_funnel,
)
from warehouse.query.model import Query, QueryError, parse_query

FIELDS = ("name", "steps", "per", "days")


def _definition(services: Any, site: Site, body: dict[str, Any]) -> tuple[str, Funnel]:
    """A funnel's name and validated definition from a request body (400 naming the field)."""
    check_fields(body, FIELDS)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\x00" in name:
        raise bad_param("name", f"required: a name of 1-{MAX_NAME} characters")
    try:
        return name.strip(), parse_funnel(body, services.control.goal_specs_by_id(site.id))
    except QueryError as exc:
        raise bad_request(exc) from None


def _found(services: Any, site: Site, funnel_id: str) -> SavedFunnel:
    saved = services.control.get_funnel(site.id, funnel_id)
    if saved is None:
        raise falcon.HTTPNotFound(description=f"funnel {funnel_id!r} not found")
    return saved  # type: ignore[no-any-return]


def _conflict(name: str) -> falcon.HTTPConflict:
    return falcon.HTTPConflict(description=f"invalid parameter 'name': the site already has a funnel named {name!r}")


class FunnelsResource:
    """``GET/POST /api/v2/sites/{site}/funnels``: the site's funnels; create one."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"funnels": [f.public() for f in self.services.control.list_funnels(found.id)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        name, funnel = _definition(self.services, found, await json_body(req))
        if self.services.control.count_funnels(found.id) >= MAX_FUNNELS_PER_SITE:
            raise bad_param("name", f"a site has at most {MAX_FUNNELS_PER_SITE} funnels")
        try:
            saved = self.services.control.create_funnel(found.id, name, funnel, principal.user_id)
        except DuplicateFunnelName:
            raise _conflict(name) from None
        json_response(resp, saved.public(), status=falcon.HTTP_201)


class FunnelResource:
    """``GET/PUT/DELETE /api/v2/sites/{site}/funnels/{funnel}``: one funnel; replace; delete."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, funnel: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, _found(self.services, found, funnel).public())

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, funnel: str) -> None:
        _, found = authorize(req, self.services, site)
        _found(self.services, found, funnel)
        name, definition = _definition(self.services, found, await json_body(req))
        try:
            saved = self.services.control.update_funnel(found.id, funnel, name, definition)
        except DuplicateFunnelName:
            raise _conflict(name) from None
        if saved is None:
            raise falcon.HTTPNotFound(description=f"funnel {funnel!r} not found")
        json_response(resp, saved.public())

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, funnel: str) -> None:
        _, found = authorize(req, self.services, site)
        if not self.services.control.delete_funnel(found.id, funnel):
            raise falcon.HTTPNotFound(description=f"funnel {funnel!r} not found")
        json_response(resp, {"id": funnel, "deleted": True})


def answer_query(req: Any, services: Any, site: Site) -> Query:
    """The range, filters and breakdown of an answer request, as one ``Query`` (400 naming the param)."""
    dimension = _one(req, "dimension")
    body = body_from_params(req, ["visitors"], [dimension] if dimension else [], paged=False)
    if body.pop("imported", False):
        raise falcon.HTTPBadRequest(description="invalid parameter 'imported': funnels are counted from events;"
                                                " imported aggregates have no visits to follow")
    try:
        q = parse_query(site.id, site.timezone, body, goals=goals_of(services, site),
                        segments=segment_lookup(services, site))
        check_breakdown(q)
    except QueryError as exc:
        if exc.param == "dimensions":
            exc = QueryError("dimension", exc.message)
        raise bad_request(exc) from None
    return q


def render(saved: SavedFunnel, answer: FunnelAnswer) -> dict[str, Any]:
    """The answer's JSON: every step's visitors, conversions and drop-off; per value if broken down."""
    q = answer.query
    out: dict[str, Any] = {
        "siteId": q.site_id, "funnel": saved.public(), "period": period_of(q),
        "filters": [[f.op, f.dimension, list(f.values)] for f in q.filters],
        "steps": answer.steps(answer.totals),
    }
    if answer.dimension is not None:
        out["breakdown"] = {"dimension": answer.dimension, "results": [
            {"value": value, "steps": answer.steps(counts)} for value, counts in answer.groups or []]}
    return out


class FunnelAnswerResource:
    """``GET /api/v2/sites/{site}/funnels/{funnel}/answer``: visitors through each step."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, funnel: str) -> None:
        _, found = authorize(req, self.services, site)
        saved = _found(self.services, found, funnel)
        q = answer_query(req, self.services, found)
        try:
            answer = await run_funnel(q, saved.funnel, warehouse(self.services),
                                      self.services.control.goal_specs_by_id(found.id))
        except MissingGoal as exc:
            raise falcon.HTTPConflict(description=str(exc)) from None
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise warehouse_unavailable(exc) from None
        json_response(resp, render(saved, answer))
