"""Visitor keys (SPEC §4): 64-bit keyed hashes, never a raw IP or a reversible id.

* Without a ``visitorId`` (the tracker's default: it stores nothing on the device): BLAKE2b of
  site + IP + user agent keyed with the day's random salt (Plausible's method). Salts are deleted
  after a day, so the key cannot be recomputed or linked across days: a visitor returning on
  another day is a new visitor.
* With the tracker's random ``visitorId`` (only when the site opts in with ``data-persistent-id``
  or the visitor consents): BLAKE2b keyed with the site's secret. Stable for as long as the
  browser keeps its localStorage, and unlinkable across sites.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any


def _hash64(data: bytes, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, key=key[:64], digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=1024)
def _keyed_by_site(site_secret: bytes) -> Any:
    # Keying BLAKE2b costs a compression of its own; a site's keyed state is copied instead.
    # Only site secrets are kept here, never a daily salt (those must be gone after a day).
    return hashlib.blake2b(key=site_secret[:64], digest_size=8)


def tracker_visitor_key(site_secret: bytes, visitor_id: str) -> int:
    h = _keyed_by_site(site_secret).copy()
    h.update(visitor_id.encode())
    return int.from_bytes(h.digest(), "big")


def fallback_visitor_key(daily_salt: bytes, site_id: str, ip: str, user_agent: str) -> int:
    return _hash64(b"\x00".join((site_id.encode(), ip.encode(), user_agent.encode())), daily_salt)
