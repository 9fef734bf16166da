"""Umami's ``website_event`` rows as CSV (e.g. ``\\copy website_event TO 'events.csv' CSV HEADER``
in psql, or a MySQL/ClickHouse export with a header row).

Columns by name (Umami v2's schema): ``created_at``, ``session_id``, ``url_path`` and
``event_type`` (1 pageview, 2 custom event) are required; ``event_id``, ``website_id``,
``visit_id``, ``url_query``, ``page_title``, ``hostname``, ``referrer_path``, ``referrer_query``,
``referrer_domain``, ``event_name`` and ``utm_*`` are used when present; others are ignored.
Times with an offset (``+00``) are converted to UTC, times without one are taken as UTC. The
visitor is Umami's ``session_id`` (Umami derives it from the visitor's IP and user agent with a
monthly salt), keyed with the site's secret. Browser, OS, device, country, language and screen
live in Umami's ``session`` table, not in ``website_event``: they are imported as unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from interop.events import ImportedEvent, SourceContext, build_event, parse_time
from interop.sources.csv_file import rows

NAME = "umami"
DEDUPLICATE = False
REQUIRED = ("created_at", "session_id", "url_path", "event_type")
TYPES = {"1": "pageview", "2": "event"}


def read(path: Path, ctx: SourceContext) -> Iterator[ImportedEvent]:
    """Every pageview and custom event of the file (of the website named by ``--source-site``
    when the file holds several websites)."""
    index: dict[str, int] = {}
    wanted = ctx.options.get("source_site")
    for line, fields in rows(path, ctx):
        if not index:
            index = {name.strip().lower(): i for i, name in enumerate(fields)}
            missing = [c for c in REQUIRED if c not in index]
            if missing:
                raise ctx.error(line, missing[0], "missing from the header: not Umami's website_event"
                                f" rows (need {', '.join(REQUIRED)})")
            continue
        if len(fields) != len(index):
            raise ctx.error(line, None, f"{len(fields)} fields; the header has {len(index)}")

        def get(name: str, fields: list[str] = fields, index: dict[str, int] = index) -> str | None:
            i = index.get(name)
            value = fields[i] if i is not None else None
            return value if value not in ("", None, "\\N") else None

        if wanted and get("website_id") not in (None, wanted):
            ctx.skip("other_websites")
            continue
        kind = TYPES.get((get("event_type") or "").strip())
        if kind is None:
            raise ctx.error(line, "event_type", f"{get('event_type')!r} is not 1 (pageview) or 2 (event)")
        try:
            ts = parse_time(get("created_at") or "")
        except ValueError:
            raise ctx.error(line, "created_at", f"{get('created_at')!r} is not a time") from None
        session = get("session_id")
        if not session:
            raise ctx.error(line, "session_id", "empty: the visitor cannot be told apart")
        referrer = None
        if get("referrer_domain"):
            referrer = f"https://{get('referrer_domain')}{get('referrer_path') or ''}"
            if get("referrer_query"):
                referrer += "?" + (get("referrer_query") or "")
        query = get("url_query")
        utm = {k: get(k) for k in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")}
        if not query and any(utm.values()):  # newer Umami keeps UTM tags in columns of their own
            query = urlencode({k: v for k, v in utm.items() if v})
        yield build_event(
            ctx, row=line, ts=ts, type=kind,
            visitor_key=ctx.key_from_id(NAME, session), visitor_key_source="tracker",
            pathname=get("url_path") or "/", query=query, hostname=get("hostname"),
            title=get("page_title"), referrer=referrer,
            name=(get("event_name") or "(unnamed)") if kind == "event" else None,
        )
    if not index:
        raise ctx.error(1, None, "empty file: expected a header row of website_event columns")
