"""Client IP and country.

The client IP is the socket peer, or — only when that peer is a configured trusted proxy — the
right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy. The IP is used in
memory only (country lookup, fallback visitor hash) and never stored.

Country comes from a trusted proxy's country header when configured, else from a configured
``.mmdb`` (MaxMind or DB-IP, country or city edition), else from the database bundled with
``iptocc``. Region (ISO 3166-2) and city (GeoNames id and English name) come only from a configured
city edition, and only when its country agrees with the one chosen: no bundled database that
ships with a package is both maintained and fine-grained enough (docs/ingest.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import iptocc

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's IP address per the trusted-proxy rule above."""
    if not peer:
        return None
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _valid_ip(hop) else peer
    return hops[0] if hops and _valid_ip(hops[0]) else peer


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(ip: str, trusted: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


Place = tuple[str | None, str | None, str | None]  # (region, city GeoNames id, city name)
NO_PLACE: Place = (None, None, None)


class CountryLookup:
    """IP → ISO 3166-1 alpha-2 country code, or ``None`` when unknown; with a city ``.mmdb``,
    also the region and city (``locate``)."""

    def __init__(self, mmdb_path: str = "") -> None:
        self.reader: Any = None
        if mmdb_path:
            import maxminddb

            self.reader = maxminddb.open_database(mmdb_path)

    def country(self, ip: str | None) -> str | None:
        return self.locate(ip)[0]

    def locate(self, ip: str | None) -> tuple[str | None, Place]:
        """(country, (region, city, city name)) of ``ip``; the place is known only from a city
        database."""
        if not ip:
            return None, NO_PLACE
        record: Any = None
        try:
            if self.reader is not None:
                record = self.reader.get(ip)
                code = _country_from_record(record)
            else:
                code = iptocc.country_code(ip)
        except (ValueError, TypeError):
            return None, NO_PLACE
        if not code or len(code) != 2 or code in ("ZZ", "XX"):
            return None, NO_PLACE
        code = code.upper()
        return code, (place_from_record(record, code) if isinstance(record, dict) else NO_PLACE)


def place_from_record(record: dict[str, Any], country: str) -> Place:
    """Region, city id and city name of a MaxMind/DB-IP city record (GeoIP2 layout): the region is
    the first (largest) subdivision as ``<country>-<code>``; each part is null when absent."""
    region = city = name = None
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
        sub = subdivisions[0].get("iso_code")
        if isinstance(sub, str) and 0 < len(sub) <= 3 and sub.isalnum():
            region = f"{country}-{sub.upper()}"
    info = record.get("city")
    if isinstance(info, dict):
        geoname = info.get("geoname_id")
        if isinstance(geoname, int) and geoname > 0:
            city = str(geoname)
        names = info.get("names")
        if isinstance(names, dict) and isinstance(names.get("en"), str):
            name = names["en"][:200] or None
    return region, city, name


def _country_from_record(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        value = record.get(key)
        if isinstance(value, dict) and value.get("iso_code"):
            return str(value["iso_code"])
    code = record.get("country_code")  # DB-IP lite and similar flat layouts
    return str(code) if code else None
