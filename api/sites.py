"""Sites, goals and site health: ``/api/v2/sites…``, ``/api/v2/health/{site}``.

Shapes per SPEC §7: a site is ``Site.public()`` (``id``, ``domainKey``, ``domain``, ``name``,
``timezone``, ``retentionDays``, ``allowedHostnames``, ``respectDnt``, ``excludedPaths``,
``allowedQueryParams``, ``dropReferrerSpam``, ``dropDatacenterIps``, ``createdAt``), plus ``role``: the caller's role on it (docs/access.md).
Who may call what is ``api.routes.POLICY``'s business, checked before any of these run. Deleting a site removes its data everywhere: the site is
first marked deleted (every worker answers 404 for it from then on, and its events still in the
write-ahead log are dropped when sealed), then the warehouse process purges its raw files, facts
and pre-aggregates, then the control plane forgets it and its goals.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import falcon
import falcon.asgi

from api.auth import Principal, authenticate, authorize, role_on, visible_sites
from api.body import bad_param, check_fields, json_body
from api.stats import sql_rows, warehouse
from api.validation import validate_domain, validate_timezone
from ingest.beacon import CURRENCY
from littlestats import audit
from littlestats.controlplane import Site, SiteSettings
from littlestats.http import json_response
from warehouse.protocol import WarehouseError
from warehouse.query.model import PROP_KEY, goal_name
from warehouse.query.patterns import MAX_PATTERN_LENGTH, check_pattern

log = logging.getLogger(__name__)

MAX_LIST = 100
SITE_FIELDS = {"domain", "name", "timezone", "retentionDays", "allowedHostnames", "respectDnt",
               "excludedPaths", "excludedIps", "allowedQueryParams", "public", "revenue", "dropReferrerSpam",
               "dropDatacenterIps"}
MAX_QUERY_PARAM_LENGTH = 100
MAX_RATES = 200  # exchange rates per site
MAX_RATE = 1e9
MAX_GOALS = 100  # goals per site
MAX_GOAL_NAME = 200
MAX_GOAL_EVENT = 200  # the wire protocol's longest event name
MAX_GOAL_PROP_VALUE = 500  # the wire protocol's longest property value



def _string(body: dict[str, Any], name: str, max_len: int = 200) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\x00" in value:
        raise bad_param(name, f"expected a non-empty string of at most {max_len} characters")
    return value.strip()


def _string_list(body: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) > MAX_LIST
            or not all(isinstance(v, str) and 0 < len(v) <= 500 and "\x00" not in v for v in value)):
        raise bad_param(name, f"expected a list of at most {MAX_LIST} non-empty strings")
    return tuple(value)


def site_changes(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """Validated column changes from a POST/PATCH body (400 naming the first bad field)."""
    check_fields(body, sorted(SITE_FIELDS))
    out: dict[str, Any] = {}
    domain = _string(body, "domain", 253)
    if domain is None and creating:
        raise bad_param("domain", "required, e.g. example.com")
    if domain is not None:
        try:
            out["domain"] = validate_domain(domain)
        except ValueError as exc:
            raise bad_param("domain", str(exc)) from None
    name = _string(body, "name")
    if name is not None:
        out["name"] = name
    tz = _string(body, "timezone", 64)
    if tz is not None:
        try:
            out["timezone"] = validate_timezone(tz)
        except ValueError as exc:
            raise bad_param("timezone", str(exc)) from None
    if "retentionDays" in body:
        days = body["retentionDays"]
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36_500:
            raise bad_param("retentionDays", "expected an integer between 0 (keep forever) and 36500")
        out["retention_days"] = days
    settings: dict[str, Any] = {}
    for field_name, key in (("allowedHostnames", "allowed_hostnames"), ("excludedPaths", "excluded_paths"),
                            ("excludedIps", "excluded_ips")):
        values = _string_list(body, field_name)
        if values is not None:
            settings[key] = values
    params = _string_list(body, "allowedQueryParams")
    if params is not None:
        if not all(len(p) <= MAX_QUERY_PARAM_LENGTH and p.strip() == p and "*" not in p[:-1] for p in params):
            raise bad_param("allowedQueryParams", f"expected parameter names of at most {MAX_QUERY_PARAM_LENGTH}"
                       " characters without spaces, such as 'page' or 'ab_*' (a trailing * keeps every"
                       " parameter with that prefix)")
        settings["allowed_query_params"] = tuple(dict.fromkeys(params))
    if "allowedHostnames" in settings:
        try:
            settings["allowed_hostnames"] = tuple(validate_domain(h) for h in settings["allowed_hostnames"])
        except ValueError as exc:
            raise bad_param("allowedHostnames", str(exc)) from None
    if "respectDnt" in body:
        if not isinstance(body["respectDnt"], bool):
            raise bad_param("respectDnt", "expected true or false")
        settings["respect_dnt"] = body["respectDnt"]
    if "revenue" in body:
        settings.update(revenue_settings(body["revenue"]))
    for field_name, key in (("public", "public"),  # the read-only dashboard open to anyone at /share/{domain}
                            ("dropReferrerSpam", "drop_referrer_spam"),
                            ("dropDatacenterIps", "drop_datacenter_ips")):
        if field_name in body:
            if not isinstance(body[field_name], bool):
                raise bad_param(field_name, "expected true or false")
            settings[key] = body[field_name]
    if settings:
        out["_settings"] = settings
    return out


def revenue_settings(value: Any) -> dict[str, Any]:
    """``revenue``: ``{"currency": "EUR", "rates": {"USD": 0.92}}`` (one USD is 0.92 EUR), or null
    to turn revenue off. Rates are the owner's: nothing is fetched."""
    if value is None:
        return {"currency": None, "exchange_rates": ()}
    if not isinstance(value, dict) or set(value) - {"currency", "rates"}:
        raise bad_param("revenue", 'expected {"currency": "EUR", "rates": {"USD": 0.92, ...}} or null')
    currency = value.get("currency")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise bad_param("revenue.currency", "expected an ISO 4217 currency code of three upper-case letters, e.g. EUR")
    rates = value.get("rates", {})
    if not isinstance(rates, dict) or len(rates) > MAX_RATES:
        raise bad_param("revenue.rates", f"expected an object of at most {MAX_RATES} currency codes to rates")
    out = []
    for code, rate in rates.items():
        if not CURRENCY.fullmatch(code):
            raise bad_param("revenue.rates", f"{code[:10]!r} is not an ISO 4217 code of three upper-case letters")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE:
            raise bad_param("revenue.rates", f"the rate of {code} must be a number above 0 and at most {MAX_RATE:.0e}:"
                       f" the value of one {code} in {currency}")
        if code != currency:
            out.append((code, float(rate)))
    return {"currency": currency, "exchange_rates": tuple(sorted(out))}


class SitesResource:
    """``GET /api/v2/sites`` (the caller's sites) and ``POST /api/v2/sites`` (create one)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        control = self.services.control
        listed = [(s, role_on(principal, s, control)) for s in visible_sites(principal, self.services)]
        json_response(resp, {"sites": [public_site(s, role) for s, role in listed if role is not None]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        principal = authenticate(req, self.services)
        if principal.sites is not None:
            raise falcon.HTTPForbidden(description="this token is limited to some sites and cannot create "
                                                   "new ones: use a token without a site list")
        changes = site_changes(await json_body(req), creating=True)
        settings = SiteSettings(**changes.pop("_settings", {}))
        site = self.services.control.create_site(
            changes["domain"],
            name=changes.get("name"),
            owner_id=principal.user_id,
            timezone=changes.get("timezone", "UTC"),
            retention_days=changes.get("retention_days", self.services.settings.default_retention_days),
            settings=settings,
        )
        audit.record(self.services.control, audit.SITE_CREATED, actor=principal, site_id=site.id,
                     details={"domain": site.domain})
        json_response(resp, public_site(site, "owner"), status=falcon.HTTP_201)


def public_site(site: Site, role: str | None) -> dict[str, Any]:
    """A site as the API shows it to a caller with `role` on it."""
    return {**site.public(), "role": role}


def _role(req: falcon.asgi.Request, principal: Principal, site: Site, services: Any) -> str | None:
    access = getattr(req.context, "access", None)
    return access[2] if access is not None else role_on(principal, site, services.control)


class SiteResource:
    """``GET/PATCH/DELETE /api/v2/sites/{site}`` (id or domain key)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        json_response(resp, public_site(found, _role(req, principal, found, self.services)))

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        changes = site_changes(await json_body(req), creating=False)
        settings = changes.pop("_settings", None)
        if settings:
            changes["settings"] = replace(found.settings, **settings)
        updated = self.services.control.update_site(found.id, **changes)
        assert updated is not None
        json_response(resp, public_site(updated, _role(req, principal, found, self.services)))

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        principal, found = authorize(req, self.services, site)
        control = self.services.control
        control.mark_site_deleted(found.id)  # from here on, no worker accepts its beacons
        try:
            purged = await purge(self.services, found)
        except BaseException:
            control.unmark_site_deleted(found.id)
            raise
        control.delete_site(found.id)
        audit.record(control, audit.SITE_DELETED, actor=principal, site_id=found.id,
                     details={"domain": found.domain})
        json_response(resp, {"id": found.id, "deleted": True, "dataPurged": purged})


async def purge(services: Any, site: Site) -> bool:
    """Ask the warehouse process to remove the site's raw files, facts and pre-aggregates.

    503 when it cannot: the site is then kept, so that the delete can be retried and no data is
    left behind unowned.
    """
    try:
        await asyncio.to_thread(warehouse(services).call, {"op": "purge_site", "site_id": site.id}, 300)
    except (OSError, ConnectionError, TimeoutError, WarehouseError) as exc:
        raise falcon.HTTPServiceUnavailable(
            description=f"the warehouse is not available to purge the site's data ({exc}); retry the delete"
        ) from None
    return True


class GoalsResource:
    """``GET/POST /api/v2/sites/{site}/goals``: a page goal is a path or pattern (``/blog/*`` one
    segment, ``/docs/**`` any depth); an event goal a custom event name, optionally narrowed by a
    property (``{"key": "plan", "value": "pro"}``) and marked as carrying ``revenue``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        json_response(resp, {"goals": [g.public() for g in self.services.control.list_goals(found.id)]})

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        _, found = authorize(req, self.services, site)
        spec = goal_definition(await json_body(req))
        control = self.services.control
        existing = control.list_goals(found.id)
        name = spec["name"] or goal_name(spec["kind"], spec["value"], spec["prop_key"], spec["prop_value"])
        same = next((g for g in existing if g.name == name), None)
        if same is not None:
            if (same.kind, same.value, same.prop_key, same.prop_value, same.revenue) != (
                    spec["kind"], spec["value"], spec["prop_key"], spec["prop_value"], spec["revenue"]):
                raise falcon.HTTPConflict(description=f"invalid parameter 'name': the site has another goal called"
                                                      f" {name!r}; choose another name")
            json_response(resp, same.public(), status=falcon.HTTP_201)  # the same goal again: idempotent
            return
        if len(existing) >= MAX_GOALS:
            raise bad_param("value", f"a site has at most {MAX_GOALS} goals; delete one first")
        goal = control.create_goal(found.id, spec["kind"], spec["value"], name, spec["prop_key"], spec["prop_value"],
                                   spec["revenue"])
        json_response(resp, goal.public(), status=falcon.HTTP_201)


def goal_definition(body: dict[str, Any]) -> dict[str, Any]:
    """A validated goal definition from a POST body (400 naming the first bad field)."""
    check_fields(body, ("kind", "value", "name", "property", "revenue"))
    kind = body.get("kind", "event")
    if kind not in ("event", "page"):
        raise bad_param("kind", "expected 'event' (a custom event name) or 'page' (a path or pattern)")
    value = _string(body, "value", MAX_PATTERN_LENGTH if kind == "page" else MAX_GOAL_EVENT)
    if value is None:
        raise bad_param("value", "required: the event name, or the page path or pattern (/blog/*, /docs/**)")
    out: dict[str, Any] = {"kind": kind, "value": value, "name": _string(body, "name", MAX_GOAL_NAME),
                           "prop_key": None, "prop_value": None, "revenue": False}
    if kind == "page":
        if not value.startswith("/"):
            raise bad_param("value", "a page goal is a path or pattern starting with /")
        problem = check_pattern(value)
        if problem:
            raise bad_param("value", problem)
        for field_name in ("property", "revenue"):
            if body.get(field_name) not in (None, False):
                raise bad_param(field_name, "only event goals have a property condition or revenue")
        return out
    prop = body.get("property")
    if prop is not None:
        if (not isinstance(prop, dict) or set(prop) != {"key", "value"}
                or not isinstance(prop["key"], str) or not PROP_KEY.match(prop["key"])
                or not isinstance(prop["value"], str) or not 0 < len(prop["value"]) <= MAX_GOAL_PROP_VALUE
                or "\x00" in prop["value"]):
            raise bad_param("property", 'expected {"key": "plan", "value": "pro"}: a property name of 1-64 letters,'
                       f" digits or _.:-$ and a value of 1-{MAX_GOAL_PROP_VALUE} characters")
        out["prop_key"], out["prop_value"] = prop["key"], prop["value"]
    revenue = body.get("revenue", False)
    if not isinstance(revenue, bool):
        raise bad_param("revenue", "expected true (the goal's events carry revenue) or false")
    out["revenue"] = revenue
    return out


class GoalResource:
    """``DELETE /api/v2/sites/{site}/goals/{goal}``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str, goal: str) -> None:
        _, found = authorize(req, self.services, site)
        if not self.services.control.delete_goal(found.id, goal):
            raise falcon.HTTPNotFound(description=f"goal {goal!r} not found")
        json_response(resp, {"id": goal, "deleted": True})


class HealthResource:
    """``GET /api/v2/health/{site}``: the service's health, with the site's when the caller may see it.

    Monitors set up against the original system call this with any key, often a placeholder, and
    expect the service's health. So a key that names no site — or a site the caller may not see —
    is answered ``200`` with the service's health and ``site: null``: the same answer either way,
    so it reveals nothing about which sites exist. A call without a token is such a caller (it sees
    no site); a token that is sent must be valid (401 otherwise).
    """

    def __init__(self, services: Any) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, site: str) -> None:
        found = self._visible_site(req, site)
        body: dict[str, Any] = {"status": "healthy", "warehouse": "ok", "site": None, "siteId": None,
                                "domainKey": None, "lastEventAt": None, "events": None}
        try:
            if found is None:
                await sql_rows(self.services, "SELECT 1", {})
            else:
                body.update(site={"id": found.id, "domainKey": found.domain_key}, siteId=found.id,
                            domainKey=found.domain_key, events=0)
                rows = await sql_rows(self.services,
                                      "SELECT max(ts), count(*) FROM events WHERE site_id = $site",
                                      {"site": found.id})
                if rows and rows[0][0] is not None:
                    body["lastEventAt"] = rows[0][0].isoformat()
                    body["events"] = int(rows[0][1])
        except (falcon.HTTPServiceUnavailable, WarehouseError):
            body["status"], body["warehouse"] = "degraded", "unavailable"
        json_response(resp, body)

    def _visible_site(self, req: falcon.asgi.Request, site_ref: str) -> Site | None:
        if not self.services.settings.dev and req.get_header("Authorization") is None:
            return None  # an anonymous monitor: the service's health only
        principal = authenticate(req, self.services)
        found = self.services.control.get_site(site_ref) if site_ref else None
        return found if found is not None and role_on(principal, found, self.services.control) else None
