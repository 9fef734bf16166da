"""The OpenAPI 3.1 document (``GET /api/v2/openapi.json``) and a readable page (``GET /api/v2/docs``).

Built from the same tables the routes are (``api.routes``) and the same vocabulary the query model
validates against (``warehouse.query.model``), so it cannot drift from what the server accepts.
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any

import falcon
import falcon.asgi
import orjson

from littlestats import __version__
from warehouse.query.model import (
    COMPARISONS,
    DIMENSIONS,
    GRANULARITIES,
    METRICS,
    OPERATORS,
    PERIODS,
)
from warehouse.query.regex import MAX_REGEX_LENGTH

ERROR = {"$ref": "#/components/schemas/Error"}
_STR_OR_NULL = {"type": ["string", "null"]}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query",
           required: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description, **extra}


SITE_PARAM = _param("site", {"type": "string"}, "Site id or public domain key.", "path")
SEGMENT_PARAM = _param("segment", {"type": "string"}, "Segment id or name.", "path")
FUNNEL_PARAM = _param("funnel", {"type": "string"}, "Funnel id.", "path")
SHARE_PARAM = _param("share", {"type": "string"}, "Share link id (from GET /api/v2/sites/{site}/shares).", "path")
COMMON_PARAMS = [
    _param("period", {"type": "string", "enum": [p for p in PERIODS if p != "custom"]},
           "Date range shortcut in the site's time zone (default 30d). Not with start/end."),
    _param("start", {"type": "string"}, "Start: ISO date (site-local day) or datetime. Needs end."),
    _param("end", {"type": "string"}, "End: ISO date (inclusive) or datetime (exclusive). Needs start."),
    _param("date", {"type": "string", "format": "date"}, "Move 'today' to this date for period shortcuts."),
    _param("filter", {"type": "array", "items": {"type": "string"}},
           "Filters, all must hold: dim==a|b (is), dim!=a (is not), dim~a (contains), dim!~a (does not "
           "contain), dim~=regex (matches a regular expression, RE2 syntax, anywhere in the value; at most "
           f"{MAX_REGEX_LENGTH} characters), dim!~=regex (does not match), dim*=/blog/*|/docs/** (matches a "
           "wildcard pattern: * within a path segment, ** across; the whole value), dim!*=pattern (does not "
           "match); dim is a dimension, props:<name> or goal.", style="form", explode=True),
    _param("segment", {"type": "string"}, "A saved segment's name or id (GET /api/v2/sites/{site}/segments): "
           "its filters are added to `filter`'s. An unknown segment is a 400."),
    _param("compare", {"type": "string"}, "previous_period, year_over_year or <start>,<end> (dates or "
           "datetimes, as start/end): every row also carries `comparison` — the metrics over that range and "
           "`change` per metric as {absolute, percent} (percent null when the comparison is 0); breakdown "
           "rows match by value, time-series buckets by position; the answer's `comparisonPeriod` names the "
           "range (docs/api.md)."),
    _param("metrics", {"type": "string"}, f"Comma-separated metrics: {', '.join(METRICS)}."),
    _param("imported", {"type": "string", "enum": ["true", "false"]},
           "true: add imported daily aggregates (a Plausible CE import) for the days before native "
           "data; false (default): leave them out. Either way the answer then has an `imported` "
           "object (docs/plausible.md)."),
]
IMPORTED = {"type": "object", "description": "Present when `imported` was sent: whether imported data "
            "were added, which metrics are approximate, or why they were left out.",
            "properties": {"requested": {"type": "boolean"}, "included": {"type": "boolean"},
                           "available": {"type": "boolean"}, "from": _STR_OR_NULL, "to": _STR_OR_NULL,
                           "approximate": {"type": "array", "items": {"type": "string"}},
                           "skipReason": {"type": "string"}}}
PAGING_PARAMS = [
    _param("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "Rows to return (default 100)."),
    _param("offset", {"type": "integer", "minimum": 0, "maximum": 1000000}, "Rows to skip."),
    _param("q", {"type": "string"}, "Only rows whose value contains this text (case-insensitive)."),
]
METRIC_PROPS = {
    "visitors": {"type": "integer"}, "visits": {"type": "integer"}, "views": {"type": "integer"},
    "events": {"type": "integer"}, "bounceRate": {"type": "number"}, "avgDuration": {"type": "number"},
    "viewsPerVisit": {"type": "number"}, "conversionRate": {"type": "number"}, "timeOnPage": {"type": "number"},
    "totalRevenue": {"type": "number"}, "averageRevenue": {"type": "number"}, "revenueUnconverted": {"type": "integer"},
    "scrollDepth": {"type": ["number", "null"], "description": "Average of the visits' deepest scroll on the page, percent."},
}
_COUNT = {"type": "integer", "minimum": 0}
ERASURE: dict[str, Any] = {"type": "object", "description": "What the erasure did; no personal data.", "required": [
    "id", "siteId", "startedAt", "visitorKeys", "rawRowsRemoved", "rowsRemoved", "summary"], "properties": {
    "id": {"type": "string"}, "siteId": {"type": "string"},
    "startedAt": {"type": "string", "description": "Events accepted before this time are erased."},
    "visitorKeys": {**_COUNT, "description": "Visitor keys erased (a user id may stand for several)."},
    "walSegmentsSealed": _COUNT, "rawFilesRewritten": _COUNT, "rawFilesRemoved": _COUNT, "rawRowsRemoved": _COUNT,
    "rowsRemoved": {"type": "object", "additionalProperties": _COUNT,
                    "description": "Rows removed per warehouse table."},
    "hoursRebuilt": _COUNT, "visitorDaysRebuilt": _COUNT, "resumed": {"type": "boolean"},
    "seconds": {"type": "number"}, "summary": {"type": "string"}}}
SCOPE_ENUM = {"type": "string", "enum": ["stats:read", "sites:write", "admin"]}
TOKEN: dict[str, Any] = {"type": "object", "required": ["id", "userId", "name", "createdAt", "scopes", "sites",
                                                        "expiresAt"], "properties": {
    "id": {"type": "string"}, "userId": {"type": "string"}, "name": {"type": "string"},
    "createdAt": {"type": "string"}, "scopes": {"type": "array", "items": SCOPE_ENUM},
    "sites": {"type": ["array", "null"], "items": {"type": "string"},
              "description": "Site ids the token is limited to; null: every site of its user."},
    "expiresAt": {**_STR_OR_NULL, "description": "When the token stops working; null: never."}}}
ROLE_ENUM = {"type": "string", "enum": ["viewer", "admin", "owner"]}
MEMBER: dict[str, Any] = {"type": "object", "required": ["userId", "email", "name", "role", "since"], "properties": {
    "userId": {"type": "string"}, "email": _STR_OR_NULL, "name": {"type": "string"}, "role": ROLE_ENUM,
    "since": {"type": "string"}}}
INVITATION: dict[str, Any] = {"type": "object", "required": ["id", "siteId", "email", "role", "expiresAt", "usable"],
                              "properties": {
    "id": {"type": "string"}, "siteId": {"type": "string"}, "email": {"type": "string"}, "role": ROLE_ENUM,
    "invitedBy": _STR_OR_NULL, "createdAt": {"type": "string"}, "expiresAt": {"type": "string"},
    "usedAt": _STR_OR_NULL, "usable": {"type": "boolean"}}}
AUDIT: dict[str, Any] = {"type": "object", "required": ["entries", "next"], "properties": {
    "entries": {"type": "array", "items": {"type": "object", "required": ["id", "at", "actor", "action"], "properties": {
        "id": {"type": "integer"}, "at": {"type": "string"},
        "actor": {"type": "object", "properties": {"id": _STR_OR_NULL, "email": _STR_OR_NULL}},
        "action": {"type": "string"}, "siteId": _STR_OR_NULL, "target": _STR_OR_NULL,
        "details": {"type": "object"}}}},
    "next": {"type": ["integer", "null"], "description": "Pass as `before` for the next page."}}}
USER: dict[str, Any] = {"type": "object", "required": ["id", "email", "name", "isAdmin"], "properties": {
    "id": {"type": "string"}, "email": _STR_OR_NULL, "name": {"type": "string"}, "isAdmin": {"type": "boolean"}}}
PERIOD = {"type": "object", "required": ["start", "end", "timezone"],
          "properties": {"start": {"type": "string"}, "end": {"type": "string"}, "timezone": {"type": "string"}}}
ALLOWED_QUERY_PARAMS = ("Query-string parameters kept besides utm_*, ref, source and via (a trailing * is a"
                        " prefix); every other one is dropped from page and referrer URLs before an event is"
                        " written.")
PUBLIC = "The site's read-only dashboard is open to anyone at /share/{domain} (docs/sharing.md)."
REVENUE_TEXT = ("The currency revenue is reported in (ISO 4217) and the owner's exchange rates into it: rates maps"
                " a currency to the value of one unit of it in `currency` ({\"USD\": 0.92} for EUR). Applied at"
                " query time; revenue in a currency without a rate is left out and counted as revenue_unconverted."
                " null: no revenue metrics.")
_CODE = {"type": "string", "pattern": "^[A-Z]{3}$", "example": "EUR"}
REVENUE_SETTING = {"type": ["object", "null"], "description": REVENUE_TEXT, "additionalProperties": False,
                   "required": ["currency"], "properties": {
                       "currency": _CODE,
                       "rates": {"type": "object", "maxProperties": 200, "example": {"USD": 0.92},
                                 "additionalProperties": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e9}}}}
DROP_SPAM = ("Drop events whose referrer (or a parent domain of it) is on the bundled referrer-spam list"
             " (default true; docs/ingest.md).")
DROP_DATACENTER = ("Drop events from IPs in cloud providers' published networks (AWS, Azure, Google,"
                   " DigitalOcean, Oracle, JD Cloud; default true). Turn off when visitors come through"
                   " a corporate proxy hosted in a cloud.")
SITE = {
    "type": "object",
    "required": ["id", "domainKey", "domain", "name", "timezone", "retentionDays", "allowedHostnames", "createdAt"],
    "properties": {
        "id": {"type": "string"}, "domainKey": {"type": "string", "description": "The id the tracker uses."},
        "domain": {"type": "string"}, "name": {"type": "string"}, "timezone": {"type": "string"},
        "retentionDays": {"type": "integer", "description": "Days of raw data kept; 0 = forever."},
        "allowedHostnames": {"type": "array", "items": {"type": "string"}},
        "respectDnt": {"type": "boolean"}, "excludedPaths": {"type": "array", "items": {"type": "string"}},
        "allowedQueryParams": {"type": "array", "items": {"type": "string"}, "description": ALLOWED_QUERY_PARAMS},
        "public": {"type": "boolean", "description": PUBLIC},
        "revenue": REVENUE_SETTING,
        "dropReferrerSpam": {"type": "boolean", "description": DROP_SPAM},
        "dropDatacenterIps": {"type": "boolean", "description": DROP_DATACENTER},
        "createdAt": {"type": "string"},
        "role": {**ROLE_ENUM, "type": ["string", "null"], "description": "Your role on the site."},
    },
}
SITE_INPUT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "domain": {"type": "string", "example": "example.com"}, "name": {"type": "string"},
        "timezone": {"type": "string", "example": "Europe/Berlin"},
        "retentionDays": {"type": "integer", "minimum": 0, "maximum": 36500},
        "allowedHostnames": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "respectDnt": {"type": "boolean"},
        "excludedPaths": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "excludedIps": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "allowedQueryParams": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 100,
                               "example": ["page", "ab_*"], "description": ALLOWED_QUERY_PARAMS},
        "public": {"type": "boolean", "description": PUBLIC},
        "revenue": REVENUE_SETTING,
        "dropReferrerSpam": {"type": "boolean", "description": DROP_SPAM},
        "dropDatacenterIps": {"type": "boolean", "description": DROP_DATACENTER},
    },
}
SHARE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "siteId", "slugHint", "label", "hasPassword", "embedOrigins", "createdAt", "revoked"],
    "properties": {
        "id": {"type": "string"}, "siteId": {"type": "string"},
        "slugHint": {"type": "string", "description": "The first characters of the link's slug (the slug "
                                                      "itself is shown once, when the link is made)."},
        "label": {"type": "string"}, "hasPassword": {"type": "boolean"},
        "embedOrigins": {"type": "array", "items": {"type": "string"},
                         "description": "Origins that may show the link in a frame (CSP frame-ancestors)."},
        "createdAt": {"type": "string"}, "createdBy": _STR_OR_NULL, "revokedAt": _STR_OR_NULL,
        "revoked": {"type": "boolean"},
    },
}
SHARE_INPUT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "label": {"type": "string", "maxLength": 200},
        "password": {"type": ["string", "null"], "minLength": 8, "maxLength": 1024,
                     "description": "Ask viewers for this password (null: none)."},
        "embedOrigins": {"type": "array", "maxItems": 20, "example": ["https://blog.example.com"],
                         "items": {"type": "string", "pattern": "^https?://[^/]+$"}},
    },
}
GOAL_PROPERTY = {"type": ["object", "null"], "additionalProperties": False, "required": ["key", "value"],
                 "description": "Event goals only: completed only when the event has this property value.",
                 "properties": {"key": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-$ ]{1,64}$", "example": "plan"},
                                "value": {"type": "string", "minLength": 1, "maxLength": 500, "example": "pro"}}}
GOAL_VALUE = ("A page goal: a path or pattern starting with / (`*` one path segment, `**` any depth: /blog/*,"
              " /docs/**); an event goal: the custom event name.")
GOAL: dict[str, Any] = {"type": "object", "required": ["id", "name", "kind", "value"],
        "properties": {"id": {"type": "string"},
                       "name": {"type": "string", "description": "What goal filters and the goal dimension call it:"
                                " `Visit /blog/*`, `Signup`, `Signup (plan = pro)` unless named otherwise."},
                       "kind": {"type": "string", "enum": ["event", "page"]},
                       "value": {"type": "string", "description": GOAL_VALUE}, "property": GOAL_PROPERTY,
                       "revenue": {"type": "boolean", "description": "A revenue goal: its events carry revenue."},
                       "createdAt": {"type": "string"}}}
GOAL_INPUT = {"type": "object", "additionalProperties": False, "required": ["value"], "properties": {
    "kind": {"type": "string", "enum": ["event", "page"], "default": "event"},
    "value": {"type": "string", "minLength": 1, "maxLength": 2000, "description": GOAL_VALUE, "example": "/blog/*"},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "property": GOAL_PROPERTY, "revenue": {"type": "boolean", "default": False}}}
SEGMENT: dict[str, Any] = {"type": "object", "required": ["id", "name", "filters"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string", "maxLength": 100},
    "filters": {"type": "array", "items": {"type": "array", "minItems": 3, "maxItems": 3},
                "description": "[operator, dimension, [values]], as the general query takes them"},
    "createdBy": _STR_OR_NULL, "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}}}
SEGMENT_INPUT: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "filters": {"type": "array", "minItems": 1, "maxItems": 20,
                "items": {"type": "array", "minItems": 3, "maxItems": 3}}}}
COMPARISON = {"type": "object", "description": "Present with `compare`: the metrics over the comparison range "
              "(a series' `timestamp` is the comparison's bucket) and `change` per metric as {absolute, "
              "percent}; null values where there is no counterpart.",
              "properties": {"timestamp": _STR_OR_NULL, **METRIC_PROPS, "change": {
                  "type": "object", "additionalProperties": {"type": "object", "properties": {
                      "absolute": {"type": ["number", "null"]}, "percent": {"type": ["number", "null"]}}}}}}
COMPARISON_PERIOD = {"type": "object", "description": "Present with `compare`: the comparison range.",
                     "properties": {"start": {"type": "string"}, "end": {"type": "string"},
                                    "timezone": {"type": "string"},
                                    "mode": {"type": "string", "enum": [*COMPARISONS, "custom"]}}}
QUERY_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metrics": {"type": "array", "items": {"type": "string", "enum": list(METRICS)}},
        "dimensions": {"type": "array", "items": {"type": "string"},
                       "description": f"Up to one of time:{'|'.join(GRANULARITIES)} and up to three of "
                                      f"{', '.join(DIMENSIONS)}, props:<name>, goal (the site's goals by name)."},
        "filters": {"type": "array", "items": {"type": "array", "minItems": 3, "maxItems": 3},
                    "description": f"[operator, dimension, [values]]; operators {', '.join(OPERATORS)} "
                                   "(matches: a regular expression, RE2 syntax, anywhere in the value; "
                                   "matches_wildcard: * within a path segment, ** across, the whole value); "
                                   "dimension 'goal' (operator 'is') filters on goals by name."},
        "segment": {"type": "string", "description": "A saved segment's name or id: its filters are added."},
        "compare": {"oneOf": [{"type": "string", "enum": list(COMPARISONS)},
                              {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}],
                    "description": "Answer for this range too: each result gains `comparison` with the "
                                   "comparison range's `dimensions` (time bucket) and `metrics`, and "
                                   "`change` per metric as {absolute, percent}; meta.comparisonPeriod."},
        "date_range": {"oneOf": [{"type": "string", "enum": [p for p in PERIODS if p != "custom"]},
                                 {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}]},
        "date": {"type": "string", "format": "date"},
        "order_by": {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2}},
        "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
        "offset": {"type": "integer", "minimum": 0},
        "q": {"type": "string"},
        "imported": {"type": "boolean", "description": "Add imported daily aggregates (see the "
                                                       "`imported` query parameter); meta.imported says how."},
    },
}


def _breakdown_schema(key: str, field: str) -> dict[str, Any]:
    # Cities: the GeoNames id, and the city's name for display (api.stats.LABELS).
    label = {"cityName": _STR_OR_NULL} if key == "cities" else {}
    row = {"type": "object", "required": [field], "properties": {field: _STR_OR_NULL, **label, **METRIC_PROPS,
                                                                 "comparison": COMPARISON}}
    return {"type": "object", "required": ["siteId", "period", key],
            "properties": {"siteId": {"type": "string"}, "period": PERIOD, key: {"type": "array", "items": row},
                           "comparisonPeriod": COMPARISON_PERIOD, "imported": IMPORTED}}


def _op(summary: str, responses: dict[str, Any], params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, tag: str = "stats", security: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": params or [],
                          "responses": {**responses, "400": _err("An invalid parameter (named in the message)."),
                                        "default": _err("Error")}}
    if security:
        op["responses"]["401"] = _err("Missing or invalid token.")
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


FUNNEL_STEP: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "Exactly one of `page` (a path or pattern: `*` one segment, `**` any depth) or `event` (a custom"
                   " event name) or `goal` (a goal id: the step is matched by that goal's current definition, property"
                   " condition included). `label`: optional.",
    "properties": {"page": {"type": "string", "pattern": "^/"}, "event": {"type": "string", "maxLength": 500},
                   "goal": {"type": "string"}, "label": {"type": "string", "maxLength": 100}}}
FUNNEL_INPUT: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["name", "steps"],
                                "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 100, "description": "Unique within the site."},
    "steps": {"type": "array", "minItems": 2, "maxItems": 8, "items": FUNNEL_STEP},
    "per": {"type": "string", "enum": ["visit", "visitor"],
            "description": "visit (default): the steps in one visit; visitor: across the visitor's visits, within"
                           " `days` of the first step."},
    "days": {"type": "integer", "minimum": 1, "maximum": 90, "description": "Only with per=visitor (default 7)."}}}
FUNNEL: dict[str, Any] = {"type": "object", "required": ["id", "name", "steps", "per", "createdAt", "updatedAt"],
                          "properties": {
    **FUNNEL_INPUT["properties"], "id": {"type": "string"}, "createdBy": _STR_OR_NULL,
    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}}}
FUNNEL_STEP_ANSWER: dict[str, Any] = {"type": "object", "required": [
    "step", "visitors", "conversionFromPrevious", "conversionFromFirst", "dropOff", "dropOffRate"], "properties": {
    **FUNNEL_STEP["properties"], "step": {"type": "integer", "minimum": 1},
    "goalName": {"type": "string", "description": "A goal step's goal, by its current name."},
    "visitors": {"type": "integer", "description": "Visitors who reached this step (and every one before it)."},
    "conversionFromPrevious": {"type": "number", "description": "% of the previous step's visitors (100 for step 1)."},
    "conversionFromFirst": {"type": "number", "description": "% of the first step's visitors."},
    "dropOff": {"type": "integer", "description": "Visitors of the previous step who did not reach this one."},
    "dropOffRate": {"type": "number", "description": "dropOff as % of the previous step's visitors."}}}
FUNNEL_STEPS = {"type": "array", "items": FUNNEL_STEP_ANSWER}


IMPORT = {"type": "object", "required": ["id", "siteId", "source", "status", "progress"], "properties": {
    "id": {"type": "string", "description": "Derived from the site, the source and the file's SHA-256."},
    "siteId": {"type": "string"},
    "source": {"type": "string", "enum": ["littlestats-v2", "littlestats-v1", "goatcounter", "umami", "plausible"]},
    "fileName": {"type": "string"}, "fileSha256": {"type": "string"}, "fileSize": {"type": "integer"},
    "status": {"type": "string", "enum": ["running", "done", "failed", "deleting"]},
    "progress": {"type": "number", "description": "Share of the file read, 0..1."},
    "rowsRead": {"type": "integer"}, "eventsWritten": {"type": "integer"},
    "skipped": {"type": "object", "additionalProperties": {"type": "integer"},
                "description": "Rows not imported, by reason: bots, duplicates, overlap_with_live,"
                               " older_than_retention, other_websites."},
    "firstEvent": _STR_OR_NULL, "lastEvent": _STR_OR_NULL,
    "cutoff": {"type": ["string", "null"], "description": "Events at or after this time were skipped: the"
                                                          " site has live traffic from then."},
    "message": {"type": ["string", "null"], "description": "Why a failed import failed (file, line, column)."},
    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}, "finishedAt": _STR_OR_NULL}}


def _import_paths(not_found: dict[str, Any], unavailable: dict[str, Any]) -> dict[str, Any]:
    """``/api/v2/sites/{site}/imports…`` (docs/import.md)."""
    import_param = _param("import_id", {"type": "string"}, "Import id.", "path")
    upload = _op("Upload an export file to import (raw body with ?source=, or multipart/form-data with"
                 " fields `source` and `file`)", {
        "200": _ok({"type": "object", "properties": {"import": IMPORT, "alreadyImported": {"type": "boolean"},
                                                     "message": {"type": "string"}}},
                   "This file was already imported into the site: nothing was done."),
        "202": _ok({"type": "object", "properties": {"import": IMPORT}},
                   "The import runs in the background; GET the imports to follow it."),
        "413": _err("The file is larger than the upload limit."), **not_found},
        [SITE_PARAM,
         _param("source", {"type": "string", "enum": ["littlestats-v2", "littlestats-v1", "goatcounter",
                                                      "umami", "plausible"]},
                "The format of the file (a form field instead, in a multipart upload)."),
         _param("filename", {"type": "string"}, "Name to record for a raw-body upload.")],
        tag="imports")
    upload["requestBody"] = {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "source": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}}
    return {
        "/api/v2/sites/{site}/imports": {
            "get": _op("The site's imports with their progress", {"200": _ok({
                "type": "object", "required": ["siteId", "imports"], "properties": {
                    "siteId": {"type": "string"}, "imports": {"type": "array", "items": IMPORT}}}),
                **not_found}, [SITE_PARAM], tag="imports"),
            "post": upload,
        },
        "/api/v2/sites/{site}/imports/{import_id}": {
            "get": _op("One import", {"200": _ok(IMPORT), **not_found}, [SITE_PARAM, import_param],
                       tag="imports"),
            "delete": _op("Delete an import: its events, and the visits and pre-aggregates they were part of"
                          " are recomputed", {
                "200": _ok({"type": "object", "properties": {"id": {"type": "string"},
                                                             "deleted": {"type": "boolean"},
                                                             "removed": {"type": "object"}}}),
                "409": _err("The import is running; wait for it to finish."), **not_found, **unavailable},
                [SITE_PARAM, import_param], tag="imports"),
        },
    }


REPORT: dict[str, Any] = {"type": "object", "required": ["id", "siteId", "email", "frequency"], "properties": {
    "id": {"type": "string"}, "siteId": {"type": "string"}, "email": {"type": "string"},
    "frequency": {"type": "string", "enum": ["weekly", "monthly"]},
    "lastPeriod": {"type": ["string", "null"], "description": "First day of the last period mailed (or, before the"
                                                              " first mail, of the period that ended before subscribing)."},
    "createdAt": {"type": "string"}}}
SMTP_STATE = {"type": "object", "properties": {"configured": {"type": "boolean"}, "message": _STR_OR_NULL},
              "description": "Whether the server can mail at all (docs/reports.md); without SMTP nothing is sent."}
ALERT = {"type": "object", "required": ["id", "direction", "thresholdPercent", "minVisitors"], "properties": {
    "id": {"type": "string"}, "siteId": {"type": "string"}, "direction": {"type": "string", "enum": ["spike", "drop"]},
    "thresholdPercent": {"type": "integer"}, "minVisitors": {"type": "integer"},
    "recipients": {"type": "array", "items": {"type": "string"}}, "webhooks": {"type": "boolean"},
    "firing": {"type": "boolean", "description": "The last hour judged was beyond the threshold."},
    "lastHour": _STR_OR_NULL, "lastFiredAt": _STR_OR_NULL, "createdAt": {"type": "string"}}}
WEBHOOK: dict[str, Any] = {"type": "object", "required": ["id", "url", "events"], "properties": {
    "id": {"type": "string"}, "siteId": {"type": "string"}, "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string", "enum": ["goal.conversions", "alert"]}},
    "secretHint": {"type": "string", "description": "The secret's first characters, to tell webhooks apart."},
    "createdAt": {"type": "string"}}}
DELIVERY = {"type": "object", "required": ["id", "event", "status", "attempts"], "properties": {
    "id": {"type": "integer"}, "webhookId": {"type": "string"},
    "event": {"type": "string", "enum": ["goal.conversions", "alert", "test"]},
    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
    "attempts": {"type": "array", "items": {"type": "object", "properties": {
        "at": {"type": "string"}, "statusCode": {"type": ["integer", "null"]}, "error": _STR_OR_NULL,
        "ms": {"type": "integer"}}}},
    "nextAttemptAt": _STR_OR_NULL, "createdAt": {"type": "string"}, "payload": {"type": "object"}}}


def _notify_paths(not_found: dict[str, Any], unavailable: dict[str, Any]) -> dict[str, Any]:
    """Mailed reports, alert rules and webhooks (api.notify, docs/reports.md)."""
    def ident(name: str, what: str) -> dict[str, Any]:
        return _param(name, {"type": "string"}, f"The {what}'s id.", "path")

    limit = {"409": _err("Already subscribed, or the site has as many as allowed.")}
    no_smtp = {"409": _err("No SMTP server is configured: nothing can be mailed."),
               "502": _err("The SMTP server refused the mail or could not be reached.")}
    gone = {"204": {"description": "Deleted."}, **not_found}
    report_in = {"type": "object", "required": ["email", "frequency"], "additionalProperties": False,
                 "properties": {"email": {"type": "string"}, "frequency": {"type": "string",
                                                                          "enum": ["weekly", "monthly"]}}}
    alert_in = {"type": "object", "required": ["direction", "thresholdPercent"], "additionalProperties": False,
                "properties": {"direction": {"type": "string", "enum": ["spike", "drop"]},
                               "thresholdPercent": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                    "description": "At most 100 for a drop."},
                               "minVisitors": {"type": "integer", "minimum": 1, "default": 10},
                               "recipients": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
                               "webhooks": {"type": "boolean", "default": False}}}
    hook_in = {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
        "url": {"type": "string", "description": "https:// (http:// only to loopback, with"
                                                 " webhook_allow_http_loopback)."},
        "events": {"type": "array", "items": {"type": "string", "enum": ["goal.conversions", "alert"]}}}}
    tag = "reports"
    return {
        "/api/v2/sites/{site}/reports": {
            "get": _op("The site's report subscriptions", {"200": _ok({"type": "object", "properties": {
                "reports": {"type": "array", "items": REPORT}, "smtp": SMTP_STATE}}), **not_found},
                [SITE_PARAM], tag=tag),
            "post": _op("Subscribe a recipient to the weekly or monthly report",
                        {"201": _ok({**REPORT, "properties": {**REPORT["properties"], "smtp": SMTP_STATE}}),
                         **limit, **not_found}, [SITE_PARAM], report_in, tag=tag)},
        "/api/v2/sites/{site}/reports/{report}": {
            "delete": _op("Unsubscribe", gone, [SITE_PARAM, ident("report", "subscription")], tag=tag)},
        "/api/v2/sites/{site}/reports/{report}/test": {
            "post": _op("Mail the last complete period's report now", {"200": _ok({"type": "object", "properties": {
                "sent": {"type": "boolean"}, "to": {"type": "string"}, "subject": {"type": "string"},
                "report": {"type": "object"}}}), **no_smtp, **not_found, **unavailable},
                [SITE_PARAM, ident("report", "subscription")], tag=tag)},
        "/api/v2/sites/{site}/alerts": {
            "get": _op("The site's alert rules", {"200": _ok({"type": "object", "properties": {
                "alerts": {"type": "array", "items": ALERT}, "smtp": SMTP_STATE}}), **not_found},
                [SITE_PARAM], tag=tag),
            "post": _op("Create an alert rule: this hour's visitors against the same hour a week before",
                        {"201": _ok(ALERT), **limit, **not_found}, [SITE_PARAM], alert_in, tag=tag)},
        "/api/v2/sites/{site}/alerts/{alert}": {
            "delete": _op("Delete an alert rule", gone, [SITE_PARAM, ident("alert", "rule")], tag=tag)},
        "/api/v2/sites/{site}/alerts/{alert}/test": {
            "post": _op("Send the rule's message for the last closed hour, marked as a test", {"200": _ok({
                "type": "object", "properties": {"alert": {"type": "object"}, "recipients": {"type": "array"},
                                                 "problems": {"type": "array", "items": {"type": "string"}}}}),
                **not_found, **unavailable}, [SITE_PARAM, ident("alert", "rule")], tag=tag)},
        "/api/v2/sites/{site}/webhooks": {
            "get": _op("The site's webhooks (never their secrets)", {"200": _ok({"type": "object", "properties": {
                "webhooks": {"type": "array", "items": WEBHOOK}}}), **not_found}, [SITE_PARAM], tag=tag),
            "post": _op("Register a webhook; the answer holds its signing secret, the only time it is shown",
                        {"201": _ok({**WEBHOOK, "properties": {**WEBHOOK["properties"], "secret": {"type": "string"}}}),
                         **limit, **not_found}, [SITE_PARAM], hook_in, tag=tag)},
        "/api/v2/sites/{site}/webhooks/{webhook}": {
            "delete": _op("Delete a webhook and its deliveries", gone, [SITE_PARAM, ident("webhook", "webhook")],
                          tag=tag)},
        "/api/v2/sites/{site}/webhooks/{webhook}/deliveries": {
            "get": _op("The webhook's delivery log, newest first, with every attempt", {"200": _ok({
                "type": "object", "properties": {"webhookId": {"type": "string"},
                                                 "deliveries": {"type": "array", "items": DELIVERY}}}), **not_found},
                [SITE_PARAM, ident("webhook", "webhook"),
                 _param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "At most this many.")], tag=tag)},
        "/api/v2/sites/{site}/webhooks/{webhook}/test": {
            "post": _op("Send a test event now (retried later like any delivery when it fails)",
                        {"200": _ok(DELIVERY), **not_found}, [SITE_PARAM, ident("webhook", "webhook")], tag=tag)},
    }


CSV_NOTE = ("With `?format=csv` or `Accept: text/csv`: the same rows and columns as CSV (RFC 4180; nested "
            "fields flattened as `outer.inner`, lists as JSON text; see docs/export.md).")
FORMAT_PARAM = _param("format", {"type": "string", "enum": ["json", "csv"]},
                      "Answer format (default json, or text/csv when the Accept header prefers it).")
SQL_ANSWER = {"type": "object", "required": ["columns", "rows", "rowCount", "truncated"], "properties": {
    "columns": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string", "description": "DuckDB type of the column (VARCHAR, BIGINT, ...)."}}}},
    "rows": {"type": "array", "items": {"type": "array"}},
    "rowCount": {"type": "integer"},
    "truncated": {"type": "boolean", "description": "More rows matched than maxRows; only the first came."}}}


def _add_exports(paths: dict[str, Any], not_found: dict[str, Any], unavailable: dict[str, Any]) -> None:
    """CSV answers of every stats endpoint, the raw Parquet export and analysts' SQL (docs/export.md)."""
    from api.export import stats_endpoint

    binary = {"type": "string", "format": "binary"}
    for path, ops in paths.items():
        if stats_endpoint(path) is None:
            continue
        for op in ops.values():
            op["parameters"] = [*op["parameters"], FORMAT_PARAM]
            op["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
            op["description"] = f"{op['description']}\n\n{CSV_NOTE}" if op.get("description") else CSV_NOTE
    paths["/api/v2/sites/{site}/export/raw"] = {"get": _op(
        "The site's raw events as one Parquet file (the raw schema of docs/schema.md), streamed",
        {"200": {"description": "A Parquet file ordered by time, in row groups of about 128 Ki rows; a valid empty file when "
                                "no event is in the range.",
                 "content": {"application/vnd.apache.parquet": {"schema": binary}}}, **not_found},
        [SITE_PARAM,
         _param("start", {"type": "string"}, "Start: ISO date (site-local day) or datetime. Needs end; "
                                             "without both, every event."),
         _param("end", {"type": "string"}, "End: ISO date (inclusive) or datetime (exclusive). Needs start."),
         _param("format", {"type": "string", "enum": ["parquet"]}, "Only parquet.")], tag="export")}
    paths["/api/v2/sql"] = {"post": _op(
        "Read-only SQL over the warehouse tables of docs/schema.md (one SELECT; your sites only "
        "unless you are an admin; time and row limits)",
        {"200": {"description": "The rows (JSON), or CSV / Parquet with ?format= or Accept. The "
                                "X-Truncated header says whether rows were cut at maxRows.",
                 "content": {"application/json": {"schema": SQL_ANSWER}, "text/csv": {"schema": {"type": "string"}},
                             "application/vnd.apache.parquet": {"schema": binary}}},
         "400": _err("Not one read query over the documented tables, an error in it, or it ran over "
                     "the time limit (the message says which)."), **unavailable},
        [_param("format", {"type": "string", "enum": ["json", "csv", "parquet"]}, "Answer format (default json).")],
        body={"type": "object", "required": ["sql"], "properties": {
            "sql": {"type": "string", "description": "One SELECT / WITH / FROM statement."},
            "maxRows": {"type": "integer", "minimum": 1, "description": "At most this many rows (and at most "
                                                                        "the server's sql_max_rows)."},
            "timeLimit": {"type": "number", "exclusiveMinimum": 0, "description": "Stop after this many seconds "
                          "(at most the server's sql_time_limit_seconds)."}}}, tag="export")}


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every endpoint."""
    from api.routes import BREAKDOWNS

    not_found = {"404": _err("No such site, or not yours.")}
    # The service's health for any key and any caller (a token is optional); the site's too when
    # the caller may see it. An unknown key and another owner's site get the same answer.
    health = _op(
        "Service and site health: any key answers with the service's health and `site: null` unless"
        " the caller may see that site",
        {"200": _ok({"type": "object",
                     "required": ["status", "warehouse", "site", "siteId", "domainKey", "lastEventAt", "events"],
                     "properties": {
                         "status": {"type": "string", "enum": ["healthy", "degraded"]},
                         "warehouse": {"type": "string", "enum": ["ok", "unavailable"]},
                         "site": {"type": ["object", "null"], "required": ["id", "domainKey"],
                                  "properties": {"id": {"type": "string"}, "domainKey": {"type": "string"}}},
                         "siteId": _STR_OR_NULL, "domainKey": _STR_OR_NULL, "lastEventAt": _STR_OR_NULL,
                         "events": {"type": ["integer", "null"]}}})},
        [SITE_PARAM], tag="sites")
    health["security"] = [{}, {"bearer": []}]
    health["responses"]["401"] = _err("A token was sent but is not valid.")
    unavailable = {"503": _err("The warehouse process is not available (it is restarted "
                               "automatically); retry after the Retry-After header's seconds.")}
    live_unavailable = {"503": _err("The live service is not available (it is restarted "
                                    "automatically); retry after the Retry-After header's seconds.")}
    erase_unavailable = {"503": _err("The erasure could not run now (an ingest worker did not hand over its"
                                     " write-ahead log, or the warehouse process is not available); nothing"
                                     " was erased, or a started erasure completes at the warehouse's restart."
                                     " Retry after the Retry-After header's seconds.")}
    stats_params = [SITE_PARAM, *COMMON_PARAMS]
    paths: dict[str, Any] = {
        "/api/v2/sites": {
            "get": _op("Your sites", {"200": _ok({"type": "object", "required": ["sites"],
                                                   "properties": {"sites": {"type": "array", "items": SITE}}})},
                       tag="sites"),
            "post": _op("Create a site", {"201": _ok(SITE, "Created")}, body=SITE_INPUT, tag="sites"),
        },
        "/api/v2/sites/{site}": {
            "get": _op("A site", {"200": _ok(SITE), **not_found}, [SITE_PARAM], tag="sites"),
            "patch": _op("Change a site", {"200": _ok(SITE), **not_found}, [SITE_PARAM], body=SITE_INPUT, tag="sites"),
            "delete": _op("Delete a site and all its data (beacons for it are refused with 404 from the moment"
                          " the delete starts)", {
                "200": _ok({"type": "object", "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean"},
                                                             "dataPurged": {"type": "boolean"}}}),
                **not_found, **unavailable}, [SITE_PARAM], tag="sites"),
        },
        "/api/v2/health/{site}": {"get": health},
        "/api/v2/sites/{site}/visitors/{visitor}": {
            "delete": _op("Erase a visitor (right to be forgotten): every event accepted before the request, from"
                          " raw files, facts and pre-aggregates (docs/erasure.md). Same rights as deleting the site",
                          {"200": _ok(ERASURE), "400": _err("The visitor id is empty or too long."),
                           **not_found, **erase_unavailable},
                          [SITE_PARAM, _param("visitor", {"type": "string", "minLength": 1, "maxLength": 128},
                                              "The tracker's visitor id (`ls_vid` in the visitor's browser storage).",
                                              "path")], tag="erasure"),
        },
        "/api/v2/sites/{site}/users/{user}": {
            "delete": _op("Erase a user (right to be forgotten): every visitor ever identified as this user id,"
                          " with all their events accepted before the request (docs/erasure.md). Same rights as"
                          " deleting the site",
                          {"200": _ok(ERASURE), "400": _err("The user id is empty or too long."),
                           **not_found, **erase_unavailable},
                          [SITE_PARAM, _param("user", {"type": "string", "minLength": 1, "maxLength": 256},
                                              "A user id the site sent with `identify()`.", "path")], tag="erasure"),
        },
        "/api/v2/sites/{site}/goals": {
            "get": _op("Goals", {"200": _ok({"type": "object", "properties": {"goals": {"type": "array", "items": GOAL}}}),
                                 **not_found}, [SITE_PARAM], tag="goals"),
            "post": _op("Create a goal (page path or pattern; custom event, optionally with a property value and"
                        " revenue); at most 100 per site",
                        {"201": _ok(GOAL, "Created (or the same goal existed)"), **not_found,
                         "409": _err("Another goal has this name.")},
                        [SITE_PARAM], body=GOAL_INPUT, tag="goals"),
        },
        "/api/v2/sites/{site}/segments": {
            "get": _op("Saved segments: named filter sets, usable by name in every query", {"200": _ok({
                "type": "object", "required": ["segments"], "properties": {
                    "segments": {"type": "array", "items": SEGMENT}}}), **not_found}, [SITE_PARAM], tag="segments"),
            "post": _op("Save a segment (filters validated as the query's)", {
                "201": _ok(SEGMENT, "Created"), **not_found,
                "409": _err("The site already has a segment of this name.")},
                [SITE_PARAM], body={**SEGMENT_INPUT, "required": ["name", "filters"]}, tag="segments"),
        },
        "/api/v2/sites/{site}/segments/{segment}": {
            "get": _op("One segment", {"200": _ok(SEGMENT), **not_found}, [SITE_PARAM, SEGMENT_PARAM], tag="segments"),
            "patch": _op("Rename a segment or replace its filters", {
                "200": _ok(SEGMENT), **not_found, "409": _err("The site already has a segment of this name.")},
                [SITE_PARAM, SEGMENT_PARAM], body=SEGMENT_INPUT, tag="segments"),
            "delete": _op("Delete a segment", {"200": _ok({"type": "object"}), **not_found},
                          [SITE_PARAM, SEGMENT_PARAM], tag="segments"),
        },
        "/api/v2/sites/{site}/goals/{goal}": {
            "delete": _op("Delete a goal", {"200": _ok({"type": "object"}), **not_found},
                          [SITE_PARAM, _param("goal", {"type": "string"}, "Goal id.", "path")], tag="goals"),
        },
        "/api/v2/sites/{site}/funnels": {
            "get": _op("The site's funnels", {"200": _ok({"type": "object", "required": ["funnels"], "properties": {
                "funnels": {"type": "array", "items": FUNNEL}}}), **not_found}, [SITE_PARAM], tag="funnels"),
            "post": _op("Create a funnel (2-8 ordered steps; at most 50 per site)", {
                "201": _ok(FUNNEL, "Created"), **not_found, "409": _err("The site has a funnel of that name.")},
                [SITE_PARAM], body=FUNNEL_INPUT, tag="funnels"),
        },
        "/api/v2/sites/{site}/funnels/{funnel}": {
            "get": _op("A funnel", {"200": _ok(FUNNEL), "404": _err("No such site or funnel, or not yours.")},
                       [SITE_PARAM, FUNNEL_PARAM], tag="funnels"),
            "put": _op("Replace a funnel's name, steps and window", {
                "200": _ok(FUNNEL), "404": _err("No such site or funnel, or not yours."),
                "409": _err("The site has another funnel of that name.")},
                [SITE_PARAM, FUNNEL_PARAM], body=FUNNEL_INPUT, tag="funnels"),
            "delete": _op("Delete a funnel", {"200": _ok({"type": "object"}),
                                              "404": _err("No such site or funnel, or not yours.")},
                          [SITE_PARAM, FUNNEL_PARAM], tag="funnels"),
        },
        "/api/v2/sites/{site}/funnels/{funnel}/answer": {
            "get": _op("Visitors through each step of a funnel in the range: conversion from the previous and the"
                       " first step, drop-off; filtered like every query (filters choose the visits followed);"
                       " optionally broken down by one dimension (docs/api.md, Funnels)", {
                "200": _ok({"type": "object", "required": ["siteId", "funnel", "period", "filters", "steps"],
                            "properties": {
                    "siteId": {"type": "string"}, "funnel": FUNNEL, "period": PERIOD,
                    "filters": {"type": "array", "items": {"type": "array"}}, "steps": FUNNEL_STEPS,
                    "breakdown": {"type": "object", "required": ["dimension", "results"], "properties": {
                        "dimension": {"type": "string"},
                        "results": {"type": "array", "items": {"type": "object", "required": ["value", "steps"],
                                                               "properties": {"value": _STR_OR_NULL,
                                                                              "steps": FUNNEL_STEPS}}}}}}}),
                "404": _err("No such site or funnel, or not yours."),
                "409": _err("A goal step's goal was deleted (the message names the step)."), **unavailable},
                [SITE_PARAM, FUNNEL_PARAM, *[p for p in COMMON_PARAMS if p["name"] not in ("metrics", "imported")],
                 _param("dimension", {"type": "string"},
                        "Break down by one dimension: a visit attribute (of the visit the attempt started in) or"
                        " page, hostname, event, props:<name> (of the event that matched step 1)."),
                 *[p for p in PAGING_PARAMS if p["name"] != "q"]], tag="funnels"),
        },
        "/api/v2/sites/{site}/shares": {
            "get": _op("The site's share links (revoked ones too; never the links themselves)", {"200": _ok({
                "type": "object", "required": ["shares", "public"], "properties": {
                    "shares": {"type": "array", "items": SHARE}, "public": {"type": "boolean"}}}), **not_found},
                [SITE_PARAM], tag="shares"),
            "post": _op("Make a share link: a read-only dashboard of the site at `path` (/share/{slug}); "
                        "the answer's `slug` is the only time it is shown", {
                "201": _ok({**SHARE, "required": [*SHARE["required"], "slug", "path", "url"], "properties": {
                    **SHARE["properties"], "slug": {"type": "string"}, "path": {"type": "string"},
                    "url": {"type": "string"}}}, "Created"), **not_found},
                [SITE_PARAM], body=SHARE_INPUT, tag="shares"),
        },
        "/api/v2/sites/{site}/shares/{share}": {
            "patch": _op("Change a share link's label, password or embed origins (a new password ends the "
                         "sessions opened with the old one)", {
                "200": _ok(SHARE), "404": _err("No such site or share link, or not yours."),
                "409": _err("The link is revoked.")},
                [SITE_PARAM, SHARE_PARAM], body=SHARE_INPUT, tag="shares"),
            "delete": _op("Revoke a share link: it and every session opened through it stop working at once", {
                "200": _ok(SHARE), "404": _err("No such site or share link, or not yours.")},
                [SITE_PARAM, SHARE_PARAM], tag="shares"),
        },
        "/api/v2/sites/{site}/conversions": {
            "get": _op("Conversions and conversion rate of every goal", {"200": _ok({"type": "object", "properties": {
                "goals": {"type": "array", "items": {"type": "object", "properties": {
                    **GOAL["properties"], "visitors": {"type": "integer"}, "conversions": {"type": "integer"},
                    "conversionRate": {"type": "number"},
                    "currency": {**_CODE, "description": "With the site's revenue currency set: it, and the"
                                                         " goal's revenue metrics."},
                    "totalRevenue": {"type": "number"}, "averageRevenue": {"type": "number"},
                    "revenueUnconverted": {"type": "integer"}, "comparison": COMPARISON}}},
                "comparisonPeriod": COMPARISON_PERIOD}}), **not_found, **unavailable}, stats_params, tag="goals"),
        },
        "/api/v2/tokens": {
            "get": _op("Your API tokens (an admin's: every token); never the tokens themselves", {"200": _ok({
                "type": "object", "required": ["tokens"], "properties": {"tokens": {"type": "array", "items": TOKEN}}})},
                tag="tokens"),
            "post": _op("Create an API token for yourself; the answer's `token` is the only time it is shown",
                        {"201": _ok({**TOKEN, "required": [*TOKEN["required"], "token"],
                                     "properties": {**TOKEN["properties"], "token": {"type": "string"}}}, "Created"),
                         "403": _err("Dev mode without a token: nobody to own it.")},
                        body={"type": "object", "additionalProperties": False, "properties": {
                            "name": {"type": "string", "maxLength": 200},
                            "scopes": {"type": "array", "items": SCOPE_ENUM, "minItems": 1,
                                       "description": "Default: every scope of the credential you send."},
                            "sites": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                      "description": "Limit the token to these sites (ids or domain keys)."},
                            "expiresAt": {"type": "string", "format": "date-time",
                                          "description": "When it stops working (default: never)."}}},
                        tag="tokens"),
        },
        "/api/v2/tokens/{token}": {
            "delete": _op("Revoke a token (it stops working at once; stream tokens minted with it are refused "
                          "and the live streams it opened end within seconds)", {
                "200": _ok({"type": "object", "properties": {"id": {"type": "string"}, "revoked": {"type": "boolean"}}}),
                "404": _err("No such token, or not yours.")},
                [_param("token", {"type": "string"}, "Token id (from GET /api/v2/tokens).", "path")], tag="tokens"),
        },
        "/api/v2/me": {
            "get": _op("Who you are: the user of the token or dashboard session", {"200": _ok({
                "type": "object", "required": ["user", "dev"], "properties": {
                    "user": {"oneOf": [USER, {"type": "null"}],
                             "description": "null only in --dev mode without a token"},
                    "dev": {"type": "boolean", "description": "The server runs with --dev (no login)."}}})},
                tag="users"),
        },
        "/api/v2/me/password": {
            "post": _op("Change your dashboard password; ends your other dashboard sessions", {
                "200": _ok({"type": "object", "required": ["changed", "sessionsEnded"], "properties": {
                    "changed": {"type": "boolean"}, "sessionsEnded": {"type": "integer"}}}),
                "403": _err("The current password is wrong, or dev mode without a user."),
                "429": _err("Too many wrong passwords; see Retry-After.")},
                body={"type": "object", "additionalProperties": False, "required": ["current", "new"],
                      "properties": {"current": {"type": "string", "description": "\"\" when you have none yet"},
                                     "new": {"type": "string", "minLength": 8, "maxLength": 1024}}},
                tag="users"),
        },
        "/api/v2/sites/{site}/query": {
            "post": _op("General query: metrics × dimensions × filters × date range", {"200": _ok({
                "type": "object", "required": ["results", "meta"], "properties": {
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "dimensions": {"type": "array"}, "metrics": {"type": "array"},
                        "comparison": {"type": "object", "description": "Present with `compare`.", "properties": {
                            "dimensions": {"type": "array"}, "metrics": {"type": "array"},
                            "change": {"type": "array", "items": {"type": "object"}}}}}}},
                    "meta": {"type": "object"}, "query": {"type": "object"}}}), **not_found, **unavailable},
                [SITE_PARAM], body=QUERY_BODY),
        },
        "/api/v2/sites/{site}/stats": {
            "get": _op("Aggregate stats with change vs the previous period (or the `compare` range)", {"200": _ok({
                "type": "object", "required": ["siteId", "period", "change"], "properties": {
                    "siteId": {"type": "string"}, "period": PERIOD, **METRIC_PROPS,
                    "change": {"type": "object", "additionalProperties": {"type": ["number", "null"]},
                               "description": "% change for counts and durations, percentage points for rates"},
                    "previous": {"type": "object"}, "comparison": COMPARISON,
                    "comparisonPeriod": COMPARISON_PERIOD, "imported": IMPORTED}}), **not_found, **unavailable},
                stats_params),
        },
        "/api/v2/sites/{site}/timeseries": {
            "get": _op("Time series, gaps filled with zeros, in the site's time zone", {"200": _ok({
                "type": "object", "required": ["data"], "properties": {
                    "siteId": {"type": "string"}, "granularity": {"type": "string"}, "period": PERIOD,
                    "data": {"type": "array", "items": {"type": "object", "required": ["timestamp"], "properties": {
                        "timestamp": {"type": "string"}, **METRIC_PROPS, "comparison": COMPARISON}}},
                    "comparisonPeriod": COMPARISON_PERIOD, "imported": IMPORTED}}), **not_found, **unavailable},
                [*stats_params, _param("granularity", {"type": "string", "enum": list(GRANULARITIES)},
                                       "Bucket size (default hour for today/yesterday/24h, else day).")]),
        },
        "/api/v2/sites/{site}/utm": {
            "get": _op("Breakdown by a UTM parameter", {"200": _ok(_breakdown_schema("utm", "value")), **not_found,
                                                        **unavailable},
                       [*stats_params, *PAGING_PARAMS, _param("type", {"type": "string", "enum": [
                           "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"]},
                           "Which UTM parameter (default utm_source).")]),
        },
        "/api/v2/sites/{site}/events": {
            "get": _op("Custom events: names with counts, and the raw list (newest first) with a cursor", {"200": _ok({
                "type": "object", "required": ["events", "total", "nextCursor"], "properties": {
                    "names": {"type": "array", "items": {"type": "object", "properties": {
                        "name": _STR_OR_NULL, "events": {"type": "integer"}, "visitors": {"type": "integer"},
                        "comparison": COMPARISON}}}, "comparisonPeriod": COMPARISON_PERIOD,
                    "events": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"},
                    "nextCursor": _STR_OR_NULL}}), **not_found, **unavailable},
                [*stats_params, *PAGING_PARAMS, _param("cursor", {"type": "string"}, "nextCursor of the previous page.")]),
        },
        "/api/v2/sites/{site}/events/properties": {
            "get": _op("Custom event properties: names, or one property's values", {"200": _ok({"type": "object"}),
                                                                                    **not_found, **unavailable},
                       [*stats_params, *PAGING_PARAMS,
                        _param("property", {"type": "string"}, "Break down this property's values."),
                        _param("event", {"type": "string"}, "Only events of this name.")]),
        },
        "/api/v2/track/{site}": {
            "post": _op("Track one event or a batch (tracker → ingest; CORS open)", {
                "200": _ok({"type": "object"}), "202": _ok({"type": "object"}), "404": _err("Unknown site."),
                "413": _err("Body too large."),
                "503": _err("The events could not be stored (the server's disk is full); nothing of "
                            "them was kept: send them again after the Retry-After header's seconds.")},
                [SITE_PARAM], body={"type": "object"}, tag="ingest", security=False),
        },
        "/api/v2/stats/{site}": {
            "get": _op("Current stats from the live buffer (last 5 minutes, this hour)", {
                "200": _ok({"type": "object"}), **not_found, **live_unavailable}, [SITE_PARAM],
                tag="realtime"),
        },
        "/api/v2/realtime/{site}": {
            "get": _op("Live events: WebSocket, or SSE with Accept: text/event-stream", {
                "200": {"description": "text/event-stream of `stats_update`, `event`, `skipped` (how many "
                               "events a busy flush left out: at most 20 `event` messages go per flush) and "
                               "`ping` messages; the same messages over a WebSocket (see docs/realtime.md). A "
                               "refused WebSocket upgrade gets the same status and error body as over HTTP."},
                **not_found, **live_unavailable},
                [SITE_PARAM, _param("token", {"type": "string"}, "A stream token (instead of the header).")],
                tag="realtime"),
        },
        "/api/v2/realtime/{site}/token": {
            "post": _op("A short-lived stream token for EventSource/WebSocket clients", {
                "200": _ok({"type": "object"}), **not_found}, [SITE_PARAM], tag="realtime"),
        },
    }
    paths["/api/v2/sites/{site}/export"] = {"get": _op(
        "The site's daily aggregates as a zip in Plausible CE's CSV export layout (docs/plausible.md)", {
            "200": {"description": "A zip of imported_*_YYYYMMDD_YYYYMMDD.csv files (Content-Disposition "
                                   "names it)", "content": {"application/zip": {"schema": {
                                       "type": "string", "format": "binary"}}}},
            "404": _err("No such site, or not yours; or no data and no start/end."), **unavailable},
        [SITE_PARAM, _param("start", {"type": "string", "format": "date"},
                            "First site-local day (default: the first day with data)."),
         _param("end", {"type": "string", "format": "date"},
                "Last site-local day, inclusive (default: the last day with data).")], tag="export")}
    paths.update(_access_paths(not_found))
    for name, (_dim, key, field, _metrics) in BREAKDOWNS.items():
        paths[f"/api/v2/sites/{{site}}/{name}"] = {"get": _op(
            f"Breakdown: {name}", {"200": _ok(_breakdown_schema(key, field)), **not_found, **unavailable},
            [*stats_params, *PAGING_PARAMS])}
    paths.update(_import_paths(not_found, unavailable))
    paths.update(_notify_paths(not_found, unavailable))
    _add_exports(paths, not_found, unavailable)
    _add_access_rules(paths)  # last: every operation above gets its role and scope
    return {
        "openapi": "3.1.0",
        "info": {"title": "LittleStats API", "version": __version__,
                 "description": "Privacy-friendly web analytics. Every endpoint except tracking needs "
                                "`Authorization: Bearer <token>` (except in --dev mode), or the "
                                "dashboard's session cookie plus an `X-CSRF-Token` header on every "
                                "request but GET/HEAD/OPTIONS (see docs/dashboard-auth.md). Errors are "
                                '`{"error": "..."}`. See docs/api.md. A share link /share/{slug} reads the '
                                "stats, timeseries, breakdown, utm, events/properties, conversions and query "
                                "endpoints of its one site under /share/{slug}/api/v2/sites/{site}/…, and the "
                                "live visitor count at /share/{slug}/api/v2/live (docs/sharing.md)."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
    }


def _access_paths(not_found: dict[str, Any]) -> dict[str, Any]:
    """Members, invitations and the audit log (api.members, api.audit)."""
    user_param = _param("user", {"type": "string"}, "The member's user id.", "path")
    conflict = {"409": _err("The site would be left without an owner: transfer ownership first.")}
    ok = _ok({"type": "object"})
    audit_params = [_param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Entries (default 100)."),
                    _param("before", {"type": "integer", "minimum": 1}, "Entries older than this id.")]
    return {
        "/api/v2/sites/{site}/members": {
            "get": _op("The site's members and their roles", {"200": _ok({
                "type": "object", "required": ["members"], "properties": {
                    "members": {"type": "array", "items": MEMBER}, "role": ROLE_ENUM}}), **not_found},
                [SITE_PARAM], tag="members"),
        },
        "/api/v2/sites/{site}/members/{user}": {
            "patch": _op("Change a member's role", {"200": ok, **not_found, **conflict}, [SITE_PARAM, user_param],
                         body={"type": "object", "additionalProperties": False, "required": ["role"],
                               "properties": {"role": ROLE_ENUM}}, tag="members"),
            "delete": _op("Remove a member", {"200": ok, **not_found, **conflict}, [SITE_PARAM, user_param],
                          tag="members"),
        },
        "/api/v2/sites/{site}/leave": {
            "post": _op("Leave the site", {"200": ok, **not_found, **conflict}, [SITE_PARAM], tag="members"),
        },
        "/api/v2/sites/{site}/transfer": {
            "post": _op("Make another member an owner (you become an admin)", {"200": ok, **not_found},
                        [SITE_PARAM], body={"type": "object", "additionalProperties": False, "properties": {
                            "userId": {"type": "string"}, "email": {"type": "string"}}}, tag="members"),
        },
        "/api/v2/sites/{site}/invitations": {
            "get": _op("Invitations of the site (never their links)", {"200": _ok({
                "type": "object", "properties": {"invitations": {"type": "array", "items": INVITATION}}}),
                **not_found}, [SITE_PARAM], tag="members"),
            "post": _op("Invite someone: the answer's `url` is the one-time link (shown only here; no mail is sent)",
                        {"201": _ok({**INVITATION, "properties": {
                            **INVITATION["properties"], "token": {"type": "string"}, "path": {"type": "string"},
                            "url": {"type": "string"}}}, "Created"), **not_found}, [SITE_PARAM],
                        body={"type": "object", "additionalProperties": False, "required": ["email"],
                              "properties": {"email": {"type": "string"}, "role": ROLE_ENUM}}, tag="members"),
        },
        "/api/v2/sites/{site}/invitations/{invitation}": {
            "delete": _op("Withdraw an invitation", {"200": ok, **not_found},
                          [SITE_PARAM, _param("invitation", {"type": "string"}, "Invitation id.", "path")],
                          tag="members"),
        },
        "/api/v2/invitations/accept": {
            "post": _op("Accept an invitation: send your token or session to join as yourself, or a password "
                        "to become a new user with the invited email", {
                "200": _ok({"type": "object", "properties": {"siteId": {"type": "string"}, "role": ROLE_ENUM,
                                                             "userId": {"type": "string"}}}),
                "404": _err("No such invitation."), "409": _err("A user with that email exists: log in first."),
                "410": _err("The invitation was used or has expired.")},
                body={"type": "object", "additionalProperties": False, "required": ["token"], "properties": {
                    "token": {"type": "string"}, "password": {"type": "string"}, "name": {"type": "string"}}},
                tag="members", security=False),
        },
        "/api/v2/sites/{site}/audit": {
            "get": _op("The site's audit log, newest first", {"200": _ok(AUDIT), **not_found},
                       [SITE_PARAM, *audit_params], tag="audit"),
        },
        "/api/v2/audit": {
            "get": _op("The server's whole audit log, newest first", {"200": _ok(AUDIT)}, audit_params, tag="audit"),
        },
    }


ROLE_TEXT = {"public": "anyone", "user": "any signed-in user", "viewer": "viewer, admin or owner of the site",
             "admin": "admin or owner of the site", "owner": "owner of the site", "server-admin": "server admins"}


def _add_access_rules(paths: dict[str, Any]) -> None:
    """Each operation's required role and token scope, from ``api.routes.POLICY`` (docs/access.md)."""
    from api.routes import POLICY

    for rule in POLICY:
        op = paths.get(rule.path, {}).get(rule.method.lower())
        if op is None:
            continue
        op["x-required-role"] = rule.role
        op["x-required-scope"] = rule.scope
        scope = f"token scope `{rule.scope}`" if rule.scope else "any token scope"
        access = f"Access: {ROLE_TEXT[rule.role]}" + ("" if rule.role == "public" else f"; {scope}") + "."
        op["description"] = (op.get("description", "") + "\n\n" + access).strip()
        if rule.role not in ("public", "user", "server-admin"):
            op["responses"].setdefault("403", _err("Your role on the site or your token's scope is not enough."))


class OpenAPIResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps(openapi())


class DocsPage:
    """A plain HTML page listing every endpoint and its parameters (no JavaScript, no CDN)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = render_docs()


@lru_cache(maxsize=1)
def render_docs() -> str:
    doc = openapi()
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(doc['info']['title'])}</title>",
             "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "code{background:#f3f3f3;padding:0 .2em}h3{margin-bottom:.2em}table{border-collapse:collapse}"
             "td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}</style>",
             f"</head><body><h1>{e(doc['info']['title'])} {e(doc['info']['version'])}</h1>",
             f"<p>{e(doc['info']['description'])}</p><p>Machine-readable: <a href='/api/v2/openapi.json'>"
             "/api/v2/openapi.json</a>.</p>",
             f"<h2>Metrics</h2><table>{''.join(f'<tr><td><code>{e(k)}</code></td><td>{e(v)}</td></tr>' for k, v in METRICS.items())}</table>",
             f"<h2>Dimensions</h2><p>{', '.join(f'<code>{e(d)}</code>' for d in DIMENSIONS)}, "
             "<code>props:&lt;name&gt;</code>, <code>goal</code>, and <code>time:hour|day|week|month</code> in queries.</p>",
             "<h2>Endpoints</h2>"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h3><code>{e(method.upper())} {e(path)}</code></h3><p>{e(op['summary'])}</p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            if op["parameters"]:
                rows = "".join(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                               f"<td>{e(p.get('description', ''))}</td></tr>" for p in op["parameters"])
                parts.append(f"<table>{rows}</table>")
    parts.append("</body></html>")
    return "".join(parts)
