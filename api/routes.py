"""Every query-API route, in one table (the OpenAPI document and the auth tests read it too)."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from api import docs, export, me, sites, sql, stats, tokens

SESSION = stats.SESSION_METRICS

#: Named breakdowns: path segment → (dimension, response key, row field, default metrics).
BREAKDOWNS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "referrers": ("referrer_domain", "referrers", "referrer", SESSION),
    "sources": ("source", "sources", "source", SESSION),
    "pages": ("page", "pages", "page", ("visitors", "views")),
    "entry-pages": ("entry_page", "entryPages", "page", SESSION),
    "exit-pages": ("exit_page", "exitPages", "page", SESSION),
    "countries": ("country", "countries", "country", SESSION),
    "devices": ("device", "devices", "device", SESSION),
    "browsers": ("browser", "browsers", "browser", SESSION),
    "os": ("os", "os", "os", SESSION),
    "languages": ("language", "languages", "language", SESSION),
    "screens": ("screen", "screens", "screen", SESSION),
}

#: (method, path template) of every authenticated route under /api/v2 this module adds.
ROUTES: list[tuple[str, str]] = [
    ("GET", "/api/v2/sites"),
    ("POST", "/api/v2/sites"),
    ("GET", "/api/v2/sites/{site}"),
    ("PATCH", "/api/v2/sites/{site}"),
    ("DELETE", "/api/v2/sites/{site}"),
    ("GET", "/api/v2/health/{site}"),
    ("POST", "/api/v2/sites/{site}/query"),
    ("GET", "/api/v2/sites/{site}/stats"),
    ("GET", "/api/v2/sites/{site}/timeseries"),
    *(("GET", f"/api/v2/sites/{{site}}/{name}") for name in BREAKDOWNS),
    ("GET", "/api/v2/sites/{site}/utm"),
    ("GET", "/api/v2/sites/{site}/events"),
    ("GET", "/api/v2/sites/{site}/events/properties"),
    ("GET", "/api/v2/sites/{site}/goals"),
    ("POST", "/api/v2/sites/{site}/goals"),
    ("DELETE", "/api/v2/sites/{site}/goals/{goal}"),
    ("GET", "/api/v2/sites/{site}/conversions"),
    ("GET", "/api/v2/tokens"),
    ("POST", "/api/v2/tokens"),
    ("DELETE", "/api/v2/tokens/{token}"),
    ("GET", "/api/v2/me"),
    ("POST", "/api/v2/me/password"),
    ("GET", "/api/v2/sites/{site}/export/raw"),
    ("POST", "/api/v2/sql"),
]


def add_routes(app: falcon.asgi.App, services: Any) -> None:
    """Register the query API on a worker's Falcon app."""
    app.add_route("/api/v2/sites", sites.SitesResource(services))
    app.add_route("/api/v2/sites/{site}", sites.SiteResource(services))
    app.add_route("/api/v2/health/{site}", sites.HealthResource(services))
    app.add_route("/api/v2/sites/{site}/goals", sites.GoalsResource(services))
    app.add_route("/api/v2/sites/{site}/goals/{goal}", sites.GoalResource(services))
    app.add_route("/api/v2/sites/{site}/query", stats.QueryResource(services))
    app.add_route("/api/v2/sites/{site}/stats", stats.StatsResource(services))
    app.add_route("/api/v2/sites/{site}/timeseries", stats.TimeseriesResource(services))
    for name, (dimension, key, field, metrics) in BREAKDOWNS.items():
        app.add_route(f"/api/v2/sites/{{site}}/{name}",
                      stats.BreakdownResource(services, dimension, key, field, metrics))
    app.add_route("/api/v2/sites/{site}/utm", stats.UtmResource(services, None, "utm", "value", SESSION))
    app.add_route("/api/v2/sites/{site}/events", stats.EventsResource(services))
    app.add_route("/api/v2/sites/{site}/events/properties", stats.EventPropertiesResource(services))
    app.add_route("/api/v2/sites/{site}/conversions", stats.ConversionsResource(services))
    app.add_route("/api/v2/tokens", tokens.TokensResource(services))
    app.add_route("/api/v2/tokens/{token}", tokens.TokenResource(services))
    app.add_route("/api/v2/me", me.MeResource(services))
    app.add_route("/api/v2/me/password", me.PasswordResource(services))
    app.add_route("/api/v2/openapi.json", docs.OpenAPIResource())
    app.add_route("/api/v2/docs", docs.DocsPage())
    app.add_route("/api/v2/sites/{site}/export/raw", export.RawExportResource(services))
    app.add_route("/api/v2/sql", sql.SqlResource(services))
    app.add_middleware(export.CsvAnswers())  # CSV answers of the stats endpoints
