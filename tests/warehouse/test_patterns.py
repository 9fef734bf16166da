"""Page patterns match the same paths in DuckDB (RE2) as in Python, and the documented ones."""

from __future__ import annotations

import duckdb
import pytest

from warehouse.query.patterns import check_pattern, is_pattern, matches, pattern_regex

PATHS = ["/", "/blog", "/blog/", "/blog/hello", "/blog/2024/hello", "/docs", "/docs/", "/docs/a",
         "/docs/a/b/c", "/docs/setup", "/docs/x/setup", "/docs/x/y/setup", "/a b/c-d", "/a.b/(c)",
         "/price/$10+tax", "/ünï/cödé", "/BLOG/hello"]
CASES = {
    "/blog/*": {"/blog/", "/blog/hello"},
    "/docs/**": {"/docs/", "/docs/a", "/docs/a/b/c", "/docs/setup", "/docs/x/setup", "/docs/x/y/setup"},
    "/docs/**/setup": {"/docs/setup", "/docs/x/setup", "/docs/x/y/setup"},
    "/blog": {"/blog"},
    "/a b/*": {"/a b/c-d"},
    "/a.b/(c)": {"/a.b/(c)"},
    "/price/$10+tax": {"/price/$10+tax"},
    "/ünï/*": {"/ünï/cödé"},
    "**": set(PATHS),
    "/*": {"/", "/blog", "/docs"},
}


@pytest.mark.parametrize("pattern", sorted(CASES))
def test_a_pattern_matches_exactly_its_documented_paths_in_python_and_duckdb(pattern: str) -> None:
    assert {p for p in PATHS if matches(pattern, p)} == CASES[pattern]
    con = duckdb.connect()
    got = {r[0] for r in con.execute("SELECT p FROM unnest(?) t(p) WHERE regexp_full_match(p, ?)",
                                     [PATHS, pattern_regex(pattern)]).fetchall()}
    assert got == CASES[pattern]


def test_bad_patterns_are_named() -> None:
    assert check_pattern("/blog/*") is None and is_pattern("/blog/*") and not is_pattern("/blog")
    assert check_pattern("") and check_pattern("/a/***") and check_pattern("/*" * 40)
