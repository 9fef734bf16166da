"""What every raw-event source shares: the context it reads in, and the one way a foreign row
becomes one of our raw events (``docs/schema.md``), through the same URL, UTM and referrer rules
as live ingest (``ingest.pipeline``, ``ingest.referrer``).

A source module (``interop.sources.*``) reads its file and yields ``ImportedEvent`` values through
``build_event``; the framework (``interop.imports``) numbers them, drops what must not be counted
and writes raw Parquet. A source reports a malformed row with ``ctx.error(line, column, message)``:
the import stops with a message naming the file, the line (row) and the column.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ingest.identity import fallback_visitor_key, tracker_visitor_key
from ingest.pipeline import clean_referrer, keep_query_params, split_url, utm_tags
from ingest.referrer import DIRECT, classify_referrer
from littlestats.controlplane import Site

ImportedEvent = dict[str, Any]


class ImportFormatError(ValueError):
    """A row the source cannot read; the message names the file, line and column."""

    def __init__(self, file_name: str, line: int | str | None, column: str | None, message: str) -> None:
        # a CSV's line number, or for a database the table row ("events row id 12")
        where = file_name + (f", line {line}" if isinstance(line, int) else f", {line}" if line else "")
        where += f", column {column}" if column else ""
        super().__init__(f"{where}: {message}")
        self.file_name, self.line, self.column = file_name, line, column


@dataclass
class SourceContext:
    """What a source needs while it reads: the site, the import, the skip counters."""

    site: Site
    import_id: str
    file_name: str
    options: dict[str, Any] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    #: how much of the file has been read, 0..1 (progress)
    fraction: float = 0.0
    _salts: dict[date, bytes] = field(default_factory=dict)
    _keys: dict[str, int] = field(default_factory=dict)

    def error(self, line: int | str | None, column: str | None, message: str) -> ImportFormatError:
        return ImportFormatError(self.file_name, line, column, message)

    def skip(self, reason: str) -> None:
        """Count a row that is deliberately not imported (a bot, a duplicate, ...)."""
        self.skipped[reason] += 1

    def key_from_id(self, source: str, foreign_id: str) -> int:
        """Visitor key from the old tool's own visitor (or session) id: keyed with the site's
        secret, like the tracker's ``visitorId`` (the same id always gives the same key)."""
        key = self._keys.get(foreign_id)
        if key is None:
            if len(self._keys) > 100_000:  # a visitor's rows are mostly close together
                self._keys.clear()
            key = self._keys[foreign_id] = tracker_visitor_key(self.site.secret, f"{source}:{foreign_id}")
        return key

    def key_from_ip(self, ts: datetime, ip: str, user_agent: str) -> int:
        """Visitor key from a raw IP and user agent, by the live rule (site + IP + UA hashed with a
        salt of the UTC day). The live salts of past days are gone, so each day of an import gets
        a salt derived from the site's secret, the import and the day: stable when a crashed
        import resumes, unlinkable across days. The IP itself is never stored."""
        day = ts.astimezone(UTC).date()
        salt = self._salts.get(day)
        if salt is None:
            salt = self._salts[day] = hashlib.blake2b(
                f"import-salt\0{self.import_id}\0{day.isoformat()}".encode(),
                key=self.site.secret[:64], digest_size=16).digest()
        return fallback_visitor_key(salt, self.site.id, ip, user_agent)


def split_props(props: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """Typed property maps (string, number, boolean) as the raw schema keeps them."""
    if not props:
        return None, None, None
    strings, numbers, bools = [], [], []
    for key, value in props.items():
        if isinstance(value, bool):
            bools.append((str(key), value))
        elif isinstance(value, (int, float)):
            numbers.append((str(key), float(value)))
        elif value is not None:
            strings.append((str(key), str(value)))
    return strings or None, numbers or None, bools or None


def build_event(
    ctx: SourceContext,
    *,
    row: int,
    ts: datetime,
    type: str,
    visitor_key: int,
    visitor_key_source: str,
    url: str | None = None,
    pathname: str | None = None,
    query: str | None = None,
    hostname: str | None = None,
    title: str | None = None,
    referrer: str | None = None,
    source: str | None = None,
    name: str | None = None,
    country: str | None = None,
    device: str | None = None,
    browser: str | None = None,
    browser_version: str | None = None,
    os: str | None = None,
    os_version: str | None = None,
    screen: str | None = None,
    language: str | None = None,
    timezone: str | None = None,
    engagement_ms: int | None = None,
    user_id: str | None = None,
    props: dict[str, Any] | None = None,
    dedup_key: Any = None,
    region: str | None = None,
    city: str | None = None,
    city_name: str | None = None,
    scroll_depth: int | None = None,
) -> ImportedEvent:
    """One raw event. ``url`` (a full URL or a path with its query) or ``pathname``/``query``;
    ``referrer`` a URL (classified as live ingest does) or, with ``source``, a source name the old
    tool already grouped (GoatCounter's generated referrers)."""
    if url is not None:
        host, path, q = split_url(url)
        hostname, pathname, query = hostname or host, path, q
    if not pathname:
        pathname = "/"
    elif not pathname.startswith("/"):
        pathname = "/" + pathname
    if query is not None:
        query = keep_query_params(query.lstrip("?"), ctx.site.settings.allowed_query_params)
    utm = utm_tags(query)
    if source:
        referral_ref, referral_domain, src = None, None, source
        if utm["utm_source"]:
            src = utm["utm_source"]
    else:
        cleaned = clean_referrer(referrer) if referrer else None
        referral = classify_referrer(cleaned, hostname, ctx.site.domain, utm["utm_source"])
        referral_ref, referral_domain, src = referral.referrer, referral.domain, referral.source
    strings, numbers, bools = split_props(props)
    return {
        "_row": row,
        "_dedup": dedup_key,
        "ts": ts.astimezone(UTC),
        "type": type,
        "name": name if type == "event" else None,
        "visitor_key": visitor_key,
        "visitor_key_source": visitor_key_source,
        "hostname": hostname.lower() if hostname else None,
        "pathname": pathname,
        "query": query,
        "title": title or None,
        "referrer": referral_ref,
        "referrer_domain": referral_domain,
        "source": src or DIRECT,
        **utm,
        "country": country.upper()[:2] if country and len(country) >= 2 else None,
        "device": device if device in ("desktop", "mobile", "tablet") else "desktop",
        "browser": browser or "Unknown",
        "browser_version": browser_version or None,
        "os": os or "Unknown",
        "os_version": os_version or None,
        "screen": screen or None,
        "language": language or None,
        "timezone": timezone or None,
        "engagement_ms": engagement_ms,
        "user_id": user_id or None,
        "props_str": strings,
        "props_num": numbers,
        "props_bool": bools,
        "revenue_amount": None,  # the old tools' exports carry no revenue
        "revenue_currency": None,
        "region": region or None,
        "city": city or None,
        "city_name": city_name or None,
        "scroll_depth": scroll_depth,
    }


def parse_time(text: str) -> datetime:
    """A timestamp as the old tools write them: ISO 8601 / RFC 3339 with ``T`` or a space, with
    or without fractions, with ``Z``, ``+00``, ``+02:00`` or no offset (then UTC); or epoch
    seconds / milliseconds."""
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    if value[-1:] in "Zz" and len(value) in (20, 24):  # the common RFC 3339 form, fast
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).astimezone(UTC)
    if value.lstrip("-").replace(".", "", 1).isdigit():
        number = float(value)
        if abs(number) > 1e11:  # milliseconds
            number /= 1000
        return datetime.fromtimestamp(number, UTC)
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # PostgreSQL writes offsets as +00 or +0530: Python wants +00:00
    sign = max(value.rfind("+"), value.rfind("-"))
    if sign > 10:
        offset = value[sign + 1:]
        if offset.isdigit() and len(offset) in (2, 4):
            value = value[:sign + 1] + offset[:2] + ":" + (offset[2:] or "00")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
