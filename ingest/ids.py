"""Identifiers: time-ordered event ids (UUIDv7) and random visit ids (UUIDv4), as strings.

Formatted straight from the CSPRNG's bytes: ``uuid.uuid4()`` builds a ``UUID`` object only to print
it, which costs more than the randomness on the request path.
"""

from __future__ import annotations

import os

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 9562 variant 0b10xx


def uuid7(ms: int) -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, 74 random bits."""
    t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    r = os.urandom(10).hex()
    return f"{t[:8]}-{t[8:]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


def uuid4() -> str:
    """A random UUID (RFC 9562 version 4): 122 random bits."""
    r = os.urandom(16).hex()
    return f"{r[:8]}-{r[8:12]}-4{r[13:16]}-{_VARIANT[r[16]]}{r[17:20]}-{r[20:]}"
