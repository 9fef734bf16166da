"""Every query-API route, in one table (the OpenAPI document and the auth tests read it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon.asgi

from api import (
    audit,
    auth,
    docs,
    erase,
    export,
    export_plausible,
    funnels,
    imports,
    me,
    members,
    notify,
    segments,
    shares,
    sites,
    sql,
    stats,
    tokens,
)

SESSION = stats.SESSION_METRICS

#: Named breakdowns: path segment → (dimension, response key, row field, default metrics).
BREAKDOWNS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "referrers": ("referrer_domain", "referrers", "referrer", SESSION),
    "sources": ("source", "sources", "source", SESSION),
    "pages": ("page", "pages", "page", ("visitors", "views")),
    "entry-pages": ("entry_page", "entryPages", "page", SESSION),
    "exit-pages": ("exit_page", "exitPages", "page", SESSION),
    "countries": ("country", "countries", "country", SESSION),
    "regions": ("region", "regions", "region", SESSION),
    "cities": ("city", "cities", "city", SESSION),
    "devices": ("device", "devices", "device", SESSION),
    "browsers": ("browser", "browsers", "browser", SESSION),
    "os": ("os", "os", "os", SESSION),
    "languages": ("language", "languages", "language", SESSION),
    "screens": ("screen", "screens", "screen", SESSION),
}

@dataclass(frozen=True)
class Rule:
    """Who may call one route: ``role`` and the token ``scope`` it needs (docs/access.md).

    ``role``: ``public`` (anyone, no token needed), ``user`` (any signed-in user or valid token;
    no site in the path), ``viewer`` / ``admin`` / ``owner`` (at least that role on the path's
    ``{site}``; server admins have every role on every site), ``server-admin`` (``users.is_admin``).
    ``scope``: what a token must carry (``None``: any token). A non-member gets 404 for a site
    route, exactly as for a site that does not exist; a member without the role, or a token
    without the scope, gets 403. ``api.auth.AccessPolicy`` enforces this table for every request
    under ``/api/``; a route under ``/api/`` missing from it is refused with 403.
    """

    method: str
    path: str
    role: str
    scope: str | None
    summary: str = ""


ROLE_NAMES = ("public", "user", "viewer", "admin", "owner", "server-admin")
READ, WRITE, ADMIN = "stats:read", "sites:write", "admin"

#: Every route under /api/, with its rule. Add a route here when you add it to an app.
POLICY: list[Rule] = [
    Rule("POST", "/api/v2/track/{site}", "public", None, "beacons from the tracker"),
    Rule("GET", "/api/v2/openapi.json", "public", None, "the OpenAPI document"),
    Rule("GET", "/api/v2/docs", "public", None, "the API's HTML reference"),
    Rule("GET", "/api/v2/health/{site}", "public", None, "service health (the site's only for its members)"),
    Rule("GET", "/api/v2/sites", "user", READ, "list the sites you are a member of"),
    Rule("POST", "/api/v2/sites", "user", WRITE, "create a site (you become its owner)"),
    Rule("GET", "/api/v2/sites/{site}", "viewer", READ),
    Rule("PATCH", "/api/v2/sites/{site}", "admin", WRITE, "change a site's settings"),
    Rule("DELETE", "/api/v2/sites/{site}", "owner", WRITE, "delete a site and its data"),
    Rule("POST", "/api/v2/sites/{site}/query", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/stats", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/timeseries", "viewer", READ),
    *(Rule("GET", f"/api/v2/sites/{{site}}/{name}", "viewer", READ) for name in BREAKDOWNS),
    Rule("GET", "/api/v2/sites/{site}/utm", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/events", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/events/properties", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/goals", "viewer", READ),
    Rule("POST", "/api/v2/sites/{site}/goals", "admin", WRITE),
    Rule("DELETE", "/api/v2/sites/{site}/goals/{goal}", "admin", WRITE),
    Rule("GET", "/api/v2/sites/{site}/conversions", "viewer", READ),
    Rule("GET", "/api/v2/sites/{site}/segments", "viewer", READ, "the site's saved segments (filter sets)"),
    Rule("POST", "/api/v2/sites/{site}/segments", "admin", WRITE, "save a segment"),
    Rule("GET", "/api/v2/sites/{site}/segments/{segment}", "viewer", READ, "one segment, by id or name"),
    Rule("PATCH", "/api/v2/sites/{site}/segments/{segment}", "admin", WRITE, "rename a segment or change its filters"),
    Rule("DELETE", "/api/v2/sites/{site}/segments/{segment}", "admin", WRITE, "delete a segment"),
    Rule("GET", "/api/v2/sites/{site}/funnels", "viewer", READ, "the site's funnels"),
    Rule("POST", "/api/v2/sites/{site}/funnels", "admin", WRITE, "create a funnel"),
    Rule("GET", "/api/v2/sites/{site}/funnels/{funnel}", "viewer", READ, "one funnel's definition"),
    Rule("PUT", "/api/v2/sites/{site}/funnels/{funnel}", "admin", WRITE, "replace a funnel's name and steps"),
    Rule("DELETE", "/api/v2/sites/{site}/funnels/{funnel}", "admin", WRITE, "delete a funnel"),
    Rule("GET", "/api/v2/sites/{site}/funnels/{funnel}/answer", "viewer", READ,
         "visitors through each step: conversion and drop-off, optionally by a dimension"),
    Rule("GET", "/api/v2/sites/{site}/members", "admin", READ, "the site's members and their roles"),
    Rule("PATCH", "/api/v2/sites/{site}/members/{user}", "owner", WRITE, "change a member's role"),
    Rule("DELETE", "/api/v2/sites/{site}/members/{user}", "owner", WRITE, "remove a member"),
    Rule("POST", "/api/v2/sites/{site}/leave", "viewer", WRITE, "leave the site (not its last owner)"),
    Rule("POST", "/api/v2/sites/{site}/transfer", "owner", WRITE, "make another member the owner"),
    Rule("GET", "/api/v2/sites/{site}/invitations", "admin", READ, "open and used invitations"),
    Rule("POST", "/api/v2/sites/{site}/invitations", "owner", WRITE, "invite someone by email"),
    Rule("DELETE", "/api/v2/sites/{site}/invitations/{invitation}", "owner", WRITE, "withdraw an invitation"),
    Rule("POST", "/api/v2/invitations/accept", "public", None,
         "accept an invitation: its token, and a password for a new user (or a signed-in user joins)"),
    Rule("GET", "/api/v2/sites/{site}/audit", "owner", ADMIN, "the site's audit log"),
    Rule("GET", "/api/v2/audit", "server-admin", ADMIN, "the whole server's audit log"),
    Rule("GET", "/api/v2/tokens", "user", ADMIN, "your API tokens (a server admin's: all)"),
    Rule("POST", "/api/v2/tokens", "user", ADMIN, "create a token (never more than the caller's)"),
    Rule("DELETE", "/api/v2/tokens/{token}", "user", ADMIN, "revoke a token"),
    Rule("GET", "/api/v2/me", "user", None, "who you are"),
    Rule("POST", "/api/v2/me/password", "user", ADMIN, "change your dashboard password"),
    Rule("GET", "/api/v2/stats/{site}", "viewer", READ, "live stats (a stream token works too)"),
    Rule("GET", "/api/v2/realtime/{site}", "viewer", READ, "live events, SSE or WebSocket (a stream token works too)"),
    Rule("POST", "/api/v2/realtime/{site}/token", "viewer", READ, "a short-lived stream token"),
    Rule("DELETE", "/api/v2/sites/{site}/visitors/{visitor}", "owner", WRITE,
         "erase a visitor's events everywhere (docs/erasure.md)"),
    Rule("DELETE", "/api/v2/sites/{site}/users/{user}", "owner", WRITE,
         "erase an identified user's events everywhere (docs/erasure.md)"),
    Rule("GET", "/api/v2/sites/{site}/export", "viewer", READ, "daily aggregates as a Plausible CE export zip"),
    Rule("GET", "/api/v2/sites/{site}/shares", "admin", READ, "the site's share links (never the links themselves)"),
    Rule("POST", "/api/v2/sites/{site}/shares", "admin", WRITE, "create a share link (shown once)"),
    Rule("PATCH", "/api/v2/sites/{site}/shares/{share}", "admin", WRITE, "change a share link's label, password or origins"),
    Rule("DELETE", "/api/v2/sites/{site}/shares/{share}", "admin", WRITE, "revoke a share link"),
    Rule("GET", "/api/v2/sites/{site}/imports", "admin", READ, "the site's imports and their progress"),
    Rule("POST", "/api/v2/sites/{site}/imports", "admin", WRITE, "import another tool's export (docs/import.md)"),
    Rule("GET", "/api/v2/sites/{site}/imports/{import_id}", "admin", READ, "one import's progress and counts"),
    Rule("DELETE", "/api/v2/sites/{site}/imports/{import_id}", "admin", WRITE, "delete an import's data"),
    Rule("GET", "/api/v2/sites/{site}/export/raw", "viewer", READ, "the site's raw events as one Parquet file"),
    Rule("POST", "/api/v2/sql", "user", READ, "read-only SQL over the warehouse tables (your sites only; docs/export.md)"),
    Rule("GET", "/api/v2/sites/{site}/reports", "admin", READ, "the site's mailed report subscriptions (docs/reports.md)"),
    Rule("POST", "/api/v2/sites/{site}/reports", "admin", WRITE, "subscribe a recipient to weekly or monthly reports"),
    Rule("DELETE", "/api/v2/sites/{site}/reports/{report}", "admin", WRITE, "unsubscribe a recipient"),
    Rule("POST", "/api/v2/sites/{site}/reports/{report}/test", "admin", WRITE, "mail the last complete period now"),
    Rule("GET", "/api/v2/sites/{site}/alerts", "admin", READ, "the site's traffic alert rules"),
    Rule("POST", "/api/v2/sites/{site}/alerts", "admin", WRITE, "create a spike or drop alert rule"),
    Rule("DELETE", "/api/v2/sites/{site}/alerts/{alert}", "admin", WRITE, "delete an alert rule"),
    Rule("POST", "/api/v2/sites/{site}/alerts/{alert}/test", "admin", WRITE, "send an alert rule's message as a test"),
    Rule("GET", "/api/v2/sites/{site}/webhooks", "admin", READ, "the site's webhooks (never their secrets)"),
    Rule("POST", "/api/v2/sites/{site}/webhooks", "admin", WRITE, "register an HTTPS webhook (its secret is shown once)"),
    Rule("DELETE", "/api/v2/sites/{site}/webhooks/{webhook}", "admin", WRITE, "delete a webhook and its pending deliveries"),
    Rule("GET", "/api/v2/sites/{site}/webhooks/{webhook}/deliveries", "admin", READ, "a webhook's delivery log"),
    Rule("POST", "/api/v2/sites/{site}/webhooks/{webhook}/test", "admin", WRITE, "send a test event to a webhook now"),
]

#: What a share link reads (api/shares.py), under /share/{slug}/api/v2/sites/{site}/: the dashboard's
#: aggregate views and the general query, never settings, goals' definitions or the raw event list.
SHARE_READS = ("stats", "timeseries", *BREAKDOWNS, "utm", "events/properties", "conversions", "query")

#: (method, path template) of every route a share link's credentials are accepted by.
SHARE_ROUTES: list[tuple[str, str]] = [
    *(("POST" if name == "query" else "GET", f"{shares.SHARE_PREFIX}/sites/{{site}}/{name}") for name in SHARE_READS),
    ("GET", f"{shares.SHARE_PREFIX}/live"),
]

#: The rule of each (method, path template).
RULES: dict[tuple[str, str], Rule] = {(r.method, r.path): r for r in POLICY}
assert len(RULES) == len(POLICY), "a route is listed twice in POLICY"
assert all(r.role in ROLE_NAMES for r in POLICY)

#: (method, path template) of every authenticated route under /api/v2 this module adds.
ROUTES: list[tuple[str, str]] = [(r.method, r.path) for r in POLICY
                                 if r.role != "public" and not r.path.startswith(("/api/v2/stats/", "/api/v2/realtime/"))
                                 ] + [("GET", "/api/v2/health/{site}")]


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    """Register the query API on a worker's Falcon app, and the policy that guards every route."""
    app.add_middleware(auth.AccessPolicy(services, RULES))
    app.add_route("/api/v2/sites", sites.SitesResource(services))
    app.add_route("/api/v2/sites/{site}", sites.SiteResource(services))
    app.add_route("/api/v2/health/{site}", sites.HealthResource(services))
    app.add_route("/api/v2/sites/{site}/goals", sites.GoalsResource(services))
    app.add_route("/api/v2/sites/{site}/goals/{goal}", sites.GoalResource(services))
    app.add_route("/api/v2/sites/{site}/segments", segments.SegmentsResource(services))
    app.add_route("/api/v2/sites/{site}/segments/{segment}", segments.SegmentResource(services))
    app.add_route("/api/v2/sites/{site}/funnels", funnels.FunnelsResource(services))
    app.add_route("/api/v2/sites/{site}/funnels/{funnel}", funnels.FunnelResource(services))
    app.add_route("/api/v2/sites/{site}/funnels/{funnel}/answer", funnels.FunnelAnswerResource(services))
    # The stats endpoints, once: under /api/v2 and (the aggregate ones) under a share's routes, each
    # answering CSV on request.
    answers: dict[str, Any] = {"query": stats.QueryResource(services), "stats": stats.StatsResource(services),
                               "timeseries": stats.TimeseriesResource(services)}
    for name, (dimension, key, field, metrics) in BREAKDOWNS.items():
        answers[name] = stats.BreakdownResource(services, dimension, key, field, metrics)
    answers.update({"utm": stats.UtmResource(services, None, "utm", "value", SESSION),
                    "events": stats.EventsResource(services),
                    "events/properties": stats.EventPropertiesResource(services),
                    "conversions": stats.ConversionsResource(services)})
    answers = {name: export.csv_answers(resource, name) for name, resource in answers.items()}
    for name, resource in answers.items():
        app.add_route(f"/api/v2/sites/{{site}}/{name}", resource)
    app.add_route("/api/v2/tokens", tokens.TokensResource(services))
    app.add_route("/api/v2/tokens/{token}", tokens.TokenResource(services))
    app.add_route("/api/v2/sites/{site}/members", members.MembersResource(services))
    app.add_route("/api/v2/sites/{site}/members/{user}", members.MemberResource(services))
    app.add_route("/api/v2/sites/{site}/leave", members.LeaveResource(services))
    app.add_route("/api/v2/sites/{site}/transfer", members.TransferResource(services))
    app.add_route("/api/v2/sites/{site}/invitations", members.InvitationsResource(services))
    app.add_route("/api/v2/sites/{site}/invitations/{invitation}", members.InvitationResource(services))
    app.add_route("/api/v2/invitations/accept", members.AcceptResource(services))
    app.add_route("/api/v2/sites/{site}/audit", audit.SiteAuditResource(services))
    app.add_route("/api/v2/audit", audit.ServerAuditResource(services))
    app.add_route("/api/v2/me", me.MeResource(services))
    app.add_route("/api/v2/me/password", me.PasswordResource(services))
    app.add_route("/api/v2/sites/{site}/visitors/{visitor}", erase.VisitorErasureResource(services))
    app.add_route("/api/v2/sites/{site}/users/{user}", erase.UserErasureResource(services))
    app.add_route("/api/v2/sites/{site}/export", export_plausible.PlausibleExportResource(services))
    shares.add_share_routes(app, services, {name: answers[name] for name in SHARE_READS})
    app.add_route("/api/v2/sites/{site}/imports", imports.ImportsResource(services))
    app.add_route("/api/v2/sites/{site}/imports/{import_id}", imports.ImportResource(services))
    app.add_route("/api/v2/openapi.json", docs.OpenAPIResource())
    app.add_route("/api/v2/docs", docs.DocsPage())
    app.add_route("/api/v2/sites/{site}/export/raw", export.RawExportResource(services))
    app.add_route("/api/v2/sql", sql.SqlResource(services))
    app.add_route("/api/v2/sites/{site}/reports", notify.ReportsResource(services))
    app.add_route("/api/v2/sites/{site}/reports/{report}", notify.ReportResource(services))
    app.add_route("/api/v2/sites/{site}/reports/{report}/test", notify.ReportTestResource(services))
    app.add_route("/api/v2/sites/{site}/alerts", notify.AlertsResource(services))
    app.add_route("/api/v2/sites/{site}/alerts/{alert}", notify.AlertResource(services))
    app.add_route("/api/v2/sites/{site}/alerts/{alert}/test", notify.AlertTestResource(services))
    app.add_route("/api/v2/sites/{site}/webhooks", notify.WebhooksResource(services))
    app.add_route("/api/v2/sites/{site}/webhooks/{webhook}", notify.WebhookResource(services))
    app.add_route("/api/v2/sites/{site}/webhooks/{webhook}/deliveries", notify.WebhookDeliveriesResource(services))
    app.add_route("/api/v2/sites/{site}/webhooks/{webhook}/test", notify.WebhookTestResource(services))
