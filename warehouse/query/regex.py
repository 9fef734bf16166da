"""Regular-expression filters: what a pattern may be, checked once when a query is parsed.

``matches`` / ``does_not_match`` filters run in DuckDB, whose ``regexp_matches`` uses RE2: matching
is linear in the text, so no pattern backtracks catastrophically. What can still hurt is a pattern
whose compiled program is huge (nested counted repetitions), so a pattern is at most
``MAX_REGEX_LENGTH`` characters and is compiled up front by the same engine the query will use
(an in-memory DuckDB probe): RE2's own limits (repetition counts above 1000, an oversized program)
and syntax errors (a missing ``)``, back-references, look-arounds, which RE2 does not have) become
a message naming the pattern, for a 400, before any warehouse work.

Semantics: a value matches when the pattern matches anywhere in it (``re.search``; anchor with
``^`` and ``$``), case-sensitively (``(?i)`` at the start makes it case-insensitive).
"""

from __future__ import annotations

import threading
from typing import Any

MAX_REGEX_LENGTH = 256

_probe_lock = threading.Lock()
_probe: Any = None  # an in-memory DuckDB connection, opened on first use (API workers rarely need it)


def _connection() -> Any:
    global _probe
    if _probe is None:
        import duckdb

        _probe = duckdb.connect(":memory:")
    return _probe


def check_regex(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable regular expression (``None`` when it is)."""
    if not pattern or len(pattern) > MAX_REGEX_LENGTH or "\x00" in pattern:
        return f"a regular expression is 1-{MAX_REGEX_LENGTH} characters, without NUL"
    import duckdb

    with _probe_lock:
        try:
            _connection().execute("SELECT regexp_matches('', $1)", [pattern]).fetchall()
        except duckdb.Error as exc:
            reason = str(exc).split("Error: ", 1)[-1].strip()
            return f"{pattern!r} is not a valid regular expression (RE2 syntax): {reason}"
    return None
