"""Identifiers: time-ordered event ids (UUIDv7) and random visit ids (UUIDv4), as strings.

Formatted straight from the CSPRNG's bytes: ``uuid.uuid4()`` builds a ``UUID`` object only to print
it. The random bytes are drawn 4 KiB at a time, as hex: one ``getrandom`` system call per id cost
about a third of the id. The pool belongs to one process: a forked child starts with an empty one,
so no two workers ever hand out the same bytes.
"""

from __future__ import annotations

import os

_POOL_BYTES = 4096
_pool = ""  # hex digits of CSPRNG bytes, each handed out once
_offset = 0


def _random_hex(digits: int) -> str:
    global _pool, _offset
    start = _offset
    if start + digits > len(_pool):
        _pool, start = os.urandom(_POOL_BYTES).hex(), 0
    _offset = start + digits
    return _pool[start : start + digits]


def _forget_pool() -> None:
    global _pool, _offset
    _pool, _offset = "", 0


os.register_at_fork(after_in_child=_forget_pool)

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 9562 variant 0b10xx


_last_ms, _last_prefix = -1, ""  # the timestamp part of the last UUIDv7: most ids share it


def uuid7(ms: int) -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, 74 random bits."""
    global _last_ms, _last_prefix
    if ms != _last_ms:
        t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        _last_ms, _last_prefix = ms, f"{t[:8]}-{t[8:]}-7"
    r = _random_hex(19)
    return f"{_last_prefix}{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


def uuid4() -> str:
    """A random UUID (RFC 9562 version 4): 122 random bits."""
    r = _random_hex(31)
    return f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{_VARIANT[r[15]]}{r[16:19]}-{r[19:31]}"
