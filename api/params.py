"""Query-string parameters shared by every stats endpoint, turned into one ``Query``.

Every stats endpoint takes the same parameters (docs/api.md):

* ``period`` — ``today``, ``yesterday``, ``24h``, ``7d``, ``28d``, ``30d`` (default), ``90d``,
  ``month``, ``last_month``, ``6mo``, ``12mo``, ``year``; or ``start`` + ``end`` (ISO dates, whole
  site-local days, ``end`` inclusive; or ISO datetimes, ``end`` exclusive); ``date`` moves "today";
* ``filter`` (repeatable, all must hold): ``dim==a|b`` is, ``dim!=a`` is not, ``dim~a`` contains,
  ``dim!~a`` does not contain, ``dim~=regex`` matches, ``dim!~=regex`` does not match,
  ``dim*=/blog/*`` matches the wildcard pattern, ``dim!*=pattern`` does not; ``dim`` is any
  dimension, ``props:<name>`` or ``goal``;
* ``segment`` — a saved segment's name or id: its filters are added to the ``filter`` ones;
* ``compare`` — ``previous_period``, ``year_over_year`` or ``<start>,<end>``: every number also for
  that range, with the change (``warehouse.query.compare``);
* ``limit`` (1–10000), ``offset``, ``q`` (search in the breakdown's values), ``metrics``
  (comma-separated, where an endpoint lets you choose);
* ``imported`` — ``true`` adds imported daily aggregates (``warehouse.query.imported``), ``false``
  (the default) leaves them out; either way the answer then says whether the site has any.

Every invalid value is a 400 whose message names the parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import falcon

from littlestats.controlplane import Site
from warehouse.query.model import (
    METRICS,
    Currency,
    GoalSpec,
    Query,
    QueryError,
    parse_filter_param,
    parse_query,
)

#: API (camelCase) names of metrics in the named endpoints' answers.
CAMEL = {
    "visitors": "visitors",
    "visits": "visits",
    "views": "views",
    "events": "events",
    "bounce_rate": "bounceRate",
    "visit_duration": "avgDuration",
    "views_per_visit": "viewsPerVisit",
    "conversion_rate": "conversionRate",
    "time_on_page": "timeOnPage",
    "total_revenue": "totalRevenue",
    "average_revenue": "averageRevenue",
    "revenue_unconverted": "revenueUnconverted",
    "scroll_depth": "scrollDepth",
}
_BY_CAMEL = {v: k for k, v in CAMEL.items()}


def bad_request(exc: QueryError) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(description=f"invalid parameter '{exc.param}': {exc.message}")


def _one(req: Any, name: str) -> str | None:
    value = req.params.get(name)
    if isinstance(value, list):
        raise falcon.HTTPBadRequest(description=f"invalid parameter '{name}': given more than once")
    return value


def _many(req: Any, name: str) -> list[str]:
    value = req.params.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_metrics(req: Any, default: tuple[str, ...]) -> list[str]:
    raw = _one(req, "metrics")
    if raw is None:
        return list(default)
    out = []
    for name in (m.strip() for m in raw.split(",")):
        metric = _BY_CAMEL.get(name, name)
        if metric not in METRICS:
            raise falcon.HTTPBadRequest(
                description=f"invalid parameter 'metrics': unknown metric {name!r}; use some of {', '.join(METRICS)}"
            )
        if metric not in out:
            out.append(metric)
    if not out:
        raise falcon.HTTPBadRequest(description="invalid parameter 'metrics': empty")
    return out


def body_from_params(
    req: Any, metrics: list[str], dimensions: list[str], *, paged: bool = True, extra_filters: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The ``POST /query`` body equivalent of a named endpoint's query string."""
    body: dict[str, Any] = {"metrics": metrics, "dimensions": dimensions}
    start, end, period = _one(req, "start"), _one(req, "end"), _one(req, "period")
    if start is not None or end is not None:
        if period not in (None, "", "custom"):
            raise falcon.HTTPBadRequest(description="invalid parameter 'period': use either period or start/end")
        if start is None or end is None:
            missing = "start" if start is None else "end"
            raise falcon.HTTPBadRequest(description=f"invalid parameter '{missing}': a custom range needs start and end")
        body["date_range"] = [start, end]
    elif period:
        body["date_range"] = period
    date = _one(req, "date")
    if date is not None:
        body["date"] = date
    try:
        body["filters"] = [parse_filter_param(text) for text in [*_many(req, "filter"), *extra_filters]]
    except QueryError as exc:
        raise bad_request(exc) from None
    for name in ("segment", "compare"):
        value = _one(req, name)
        if value:
            body[name] = value
    imported = _one(req, "imported")
    if imported is not None:
        if imported not in ("true", "false"):
            raise falcon.HTTPBadRequest(description="invalid parameter 'imported': use true or false")
        body["imported"] = imported == "true"
    for name in ("limit", "offset"):  # validated everywhere; they page only breakdowns
        value = _one(req, name)
        if value is not None:
            body[name] = value
    if paged:
        q = _one(req, "q")
        if q:
            body["q"] = q
    return body


def currency_of(site: Site) -> Currency | None:
    """The site's revenue currency and exchange rates, for the revenue metrics (None: not set)."""
    settings = site.settings
    return None if settings.currency is None else Currency(settings.currency, settings.exchange_rates)


def query_from_params(
    req: Any, site: Site, goals: Sequence[GoalSpec], metrics: list[str], dimensions: list[str],
    *, paged: bool = True, extra_filters: tuple[str, ...] = (), segments: Callable[[str], Any] | None = None,
) -> Query:
    """Parse and validate a named endpoint's query string into a ``Query`` (400 naming the param);
    ``segments`` resolves ``segment=`` (``segment_lookup``)."""
    body = body_from_params(req, metrics, dimensions, paged=paged, extra_filters=extra_filters)
    try:
        return parse_query(site.id, site.timezone, body, goals=goals, currency=currency_of(site), segments=segments)
    except QueryError as exc:
        raise bad_request(exc) from None


def segment_lookup(services: Any, site: Site) -> Callable[[str], Any]:
    """What ``parse_query`` calls to turn a saved segment's name or id into its filters
    (``None``: the site has no such segment)."""

    def lookup(name_or_id: str) -> Any:
        found = services.control.find_segment(site.id, name_or_id)
        return found.filters if found is not None else None

    return lookup
