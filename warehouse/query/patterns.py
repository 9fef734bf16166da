"""Page patterns: the one definition of what ``/blog/*`` and ``/docs/**`` match.

Page goals, funnel steps and wildcard filters all name pages the same way:

* ``*`` matches within one path segment (``/blog/*`` matches ``/blog/hello`` but neither
  ``/blog/2024/hello`` nor ``/blog``);
* ``**`` matches across segments, including none (``/docs/**`` matches ``/docs/``, ``/docs/a`` and
  ``/docs/a/b/c``; ``/docs/**/setup`` matches ``/docs/setup`` too);
* every other character matches itself, case-sensitively, and the whole path must match.

A pattern becomes an anchored regular expression (``pattern_regex``) for DuckDB's
``regexp_full_match`` and Python's ``re.fullmatch``, so SQL and brute-force counts in tests agree
by construction. A pattern without ``*`` is an exact path (``is_pattern`` is false), which callers
compare with ``=`` to keep index and dictionary lookups.
"""

from __future__ import annotations

import re

MAX_PATTERN_LENGTH = 2000
MAX_WILDCARDS = 16


def is_pattern(text: str) -> bool:
    """True when ``text`` holds a wildcard (``*``), i.e. is not an exact path."""
    return "*" in text


def check_pattern(text: str) -> str | None:
    """Why ``text`` is not a usable page pattern (``None`` when it is)."""
    if not text or len(text) > MAX_PATTERN_LENGTH or "\x00" in text:
        return f"a page pattern is 1-{MAX_PATTERN_LENGTH} characters, without NUL"
    if text.count("*") > 2 * MAX_WILDCARDS or len(re.findall(r"\*+", text)) > MAX_WILDCARDS:
        return f"a page pattern has at most {MAX_WILDCARDS} wildcards"
    if "***" in text:
        return "use * for one path segment or ** for any depth, not ***"
    return None


def pattern_regex(pattern: str) -> str:
    """The anchored regular expression (RE2 and Python ``re`` compatible) matching ``pattern``."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**/", i):
            out.append("/(?:.*/)?")  # zero or more whole segments between two slashes
            i += 4
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    out.append("$")
    return "".join(out)


def matches(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` (exact unless it holds a wildcard)."""
    if not is_pattern(pattern):
        return path == pattern
    return re.fullmatch(pattern_regex(pattern), path) is not None
