"""GoatCounter's CSV export (format version 2: the header starts with ``2,Path``).

Columns, in order (GoatCounter's export documentation): Path, Title, Event, User-Agent, Browser,
System, Session, Bot, Referrer, Referrer scheme, Screen size, Location, FirstVisit, Date. One row
per pageview or event; an event's Path is its name. Rows GoatCounter marked as bots (Bot ≠ 0) are
skipped. The visitor is GoatCounter's Session id, keyed with the site's secret. GoatCounter keeps
no device class: it is derived from the system (iOS, Android → mobile; iPadOS → tablet), or from
the User-Agent when older exports carry one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from ingest.useragent import classify
from interop.events import ImportedEvent, SourceContext, build_event, parse_time
from interop.sources.csv_file import rows

NAME = "goatcounter"
DEDUPLICATE = False
COLUMNS = ("Path", "Title", "Event", "User-Agent", "Browser", "System", "Session", "Bot",
           "Referrer", "Referrer scheme", "Screen size", "Location", "FirstVisit", "Date")
OS_NAMES = {"macOS": "Mac OS X", "OS X": "Mac OS X", "iPadOS": "iOS"}


@functools.lru_cache(maxsize=4096)
def _split_version(text: str) -> tuple[str | None, str | None]:
    """``"Firefox 120"`` → ("Firefox", "120"); a name without a version stays whole."""
    text = text.strip()
    if not text:
        return None, None
    name, _, version = text.rpartition(" ")
    if name and version[:1].isdigit():
        return name, version
    return text, None


def _device(system: str | None) -> str:
    if system in ("iOS", "Android"):
        return "mobile"
    if system == "iPadOS":
        return "tablet"
    return "desktop"


def read(path: Path, ctx: SourceContext) -> Iterator[ImportedEvent]:
    """Every human pageview and event of the export."""
    header_seen = False
    for line, fields in rows(path, ctx):
        if not header_seen:
            header_seen = True
            # the version is the header's first field: `2,Path,Title,...`
            if fields[0].strip() == "1":
                raise ctx.error(line, "Path", "this is a version 1 GoatCounter export; export again"
                                " from a current GoatCounter (version 2 format)")
            if fields[0].strip() != "2" or fields[1:2] != ["Path"]:
                raise ctx.error(line, None, "not a GoatCounter CSV export: its header must start"
                                " with `2,Path`")
            if len(fields) != len(COLUMNS) + 1:
                raise ctx.error(line, None, f"the header has {len(fields) - 1} columns; a version 2"
                                f" export has {len(COLUMNS)} ({', '.join(COLUMNS)})")
            continue
        if len(fields) != len(COLUMNS):
            raise ctx.error(line, None, f"{len(fields)} fields; expected {len(COLUMNS)}")
        (path_, title, is_event, user_agent, browser, system, session, bot, referrer, scheme,
         screen, location, _first_visit, when) = fields
        if bot.strip() not in ("", "0"):
            ctx.skip("bots")
            continue
        try:
            ts = parse_time(when)
        except ValueError:
            raise ctx.error(line, "Date", f"{when!r} is not an RFC 3339 time") from None
        if is_event not in ("true", "false", ""):
            raise ctx.error(line, "Event", f"{is_event!r} is not true or false")
        if not session.strip():
            raise ctx.error(line, "Session", "empty: the visitor cannot be told apart")
        if scheme not in ("h", "g", "c", "o", ""):
            raise ctx.error(line, "Referrer scheme", f"{scheme!r} is not h, g, c or o")
        browser_name, browser_version = _split_version(browser)
        os_name, os_version = _split_version(system)
        device = _device(os_name)
        if user_agent.strip():
            agent = classify(user_agent)
            if agent.verdict != "human":
                ctx.skip("bots")
                continue
            browser_name, browser_version = agent.browser, agent.browser_version
            os_name, os_version, device = agent.os, agent.os_version, agent.device
        dims = screen.split(",")
        screen_text = f"{dims[0]}x{dims[1]}" if len(dims) >= 2 and dims[0] and dims[1] else None
        event = is_event == "true"
        yield build_event(
            ctx, row=line, ts=ts, type="event" if event else "pageview",
            visitor_key=ctx.key_from_id(NAME, session.strip()), visitor_key_source="tracker",
            url=None if event else path_, pathname="/" if event else None,
            title=title, name=path_.lstrip("/") or path_ if event else None,
            referrer=referrer if scheme == "h" and referrer else None,
            source=referrer if scheme in ("g", "c", "o") and referrer else None,
            country=location[:2] if location else None, device=device,
            browser=browser_name, browser_version=browser_version,
            os=OS_NAMES.get(os_name or "", os_name), os_version=os_version, screen=screen_text,
        )
    if not header_seen:
        raise ctx.error(1, None, "empty file: a GoatCounter export starts with a `2,Path,...` header")
