"""Validation of site fields, shared by the CLI and the sites API."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*(:\d{1,5})?$")


def validate_domain(domain: str) -> str:
    """A site domain: a host name like ``example.com`` (scheme and path are stripped)."""
    text = domain.strip().lower()
    text = re.sub(r"^[a-z]+://", "", text).split("/", 1)[0]
    if not _DOMAIN.match(text):
        raise ValueError(f"{domain!r} is not a domain name like example.com")
    return text


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone like Europe/Berlin") from None
    return name
