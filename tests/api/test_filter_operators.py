"""Regular-expression and wildcard filters on generated traffic: every number equals Python's ``re``
(or a hand-written wildcard match) over the generator's own events and visits, on visit attributes,
event attributes and custom properties, on every path the planner can take; bad patterns are a
``QueryError`` naming the filter, and patterns that backtrack catastrophically elsewhere are fast."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl
import pytest

from tests.generator import Traffic, TrafficSpec, generate
from tests.loaded import load_traffic
from warehouse.database import connect
from warehouse.query.model import QueryError, parse_filter_param, parse_query
from warehouse.query.regex import MAX_REGEX_LENGTH, check_regex
from warehouse.query.runner import Answer, OnConnection, run_with

SPEC = TrafficSpec(visitors=300, days=3, seed=31, loads=1)
NOW = datetime(2026, 3, 6, 12, tzinfo=UTC)
RANGE = ["2026-03-01", "2026-03-03"]
SITE = "site-b"  # Europe/Berlin


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


@pytest.fixture(scope="module")
def warehouse(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(load_traffic(traffic, SPEC, tmp_path_factory.mktemp("operators")), read_only=True)
    yield con
    con.close()


def ask(con: duckdb.DuckDBPyConnection, body: dict[str, Any], force: str | None = None) -> Answer:
    q = parse_query(SITE, SPEC.timezones[SITE], {"date_range": RANGE, **body}, now=NOW)

    return run_with(q, OnConnection(con), force)


def _local(col: str) -> pl.Expr:
    return pl.col(col).dt.convert_time_zone(SPEC.timezones[SITE]).dt.replace_time_zone(None)


def _in_range(frame: pl.DataFrame, col: str) -> pl.DataFrame:
    lo, hi = datetime(2026, 3, 1), datetime(2026, 3, 4)
    return frame.filter((pl.col("site_id") == SITE) & (_local(col) >= lo) & (_local(col) < hi))


def _keep(values: pl.Series, test: Callable[[str], bool], negate: bool) -> pl.Series:
    """Which values pass: ``test`` on known values; a negative filter also keeps unknown ones."""
    return pl.Series([(v is None) if negate and v is None else (v is not None and test(v) != negate)
                      for v in values.to_list()], dtype=pl.Boolean)


def _wildcard(pattern: str) -> Callable[[str], bool]:
    """``/page/1*``-style patterns by hand (independent of ``warehouse.query.patterns``): a prefix,
    then one ``*`` that matches within a path segment."""
    prefix, star, suffix = pattern.partition("*")
    assert star and "*" not in suffix

    def test(value: str) -> bool:
        if not (value.startswith(prefix) and value.endswith(suffix) and len(value) >= len(prefix) + len(suffix)):
            return False
        return "/" not in value[len(prefix):len(value) - len(suffix)]

    return test


VISIT_CASES = [
    ("matches", "country", "^(DE|FR)$"),
    ("does_not_match", "country", "^D"),
    ("matches", "browser", "(?i)chrome"),
    ("does_not_match", "source", r"\.(org|com)$|^Direct"),
    ("matches_wildcard", "browser", "Chrome*"),
    ("does_not_match_wildcard", "language", "*-DE"),
]


@pytest.mark.parametrize(("op", "dim", "value"), VISIT_CASES, ids=[f"{o}-{d}" for o, d, _ in VISIT_CASES])
def test_visit_attribute_filters_equal_python(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic,
                                              op: str, dim: str, value: str) -> None:
    negate = op.startswith("does_not")
    test = _wildcard(value) if op.endswith("wildcard") else (lambda v: re.search(value, v) is not None)
    visits = traffic.visits.filter(pl.col("site_id") == SITE)
    matching = visits.filter(_keep(visits[dim], test, negate))
    events = _in_range(traffic.events, "ts").join(matching.select("visit_id"), on="visit_id", how="semi")
    started = _in_range(matching, "started_at")
    assert 0 < started.height < _in_range(visits, "started_at").height  # the filter keeps some, not all
    for force in (None, "facts"):
        row = ask(warehouse, {"metrics": ["visitors", "visits", "views"], "filters": [[op, dim, [value]]]},
                  force).rows[0]
        assert row["visits"] == started.height, force
        assert row["views"] == events.filter(pl.col("type") == "pageview").height, force
        assert row["visitors"] == events["visitor_key"].n_unique(), force
    # by the filtered attribute itself (a dashboard panel filtered by its own rows): pre-aggregates
    by_dim = ask(warehouse, {"metrics": ["visits"], "dimensions": [dim], "filters": [[op, dim, [value]]]})
    by_dim_facts = ask(warehouse, {"metrics": ["visits"], "dimensions": [dim], "filters": [[op, dim, [value]]]},
                       "facts")
    assert by_dim.path == "preaggregate"
    truth = dict(started.group_by(dim).len().iter_rows())
    assert {r[dim]: r["visits"] for r in by_dim.rows} == truth
    assert by_dim.rows == by_dim_facts.rows


PAGE_CASES = [
    ("matches", r"^/page/1\d$"),
    ("does_not_match", "^/page/"),
    ("matches_wildcard", "/page/1*"),
    ("does_not_match_wildcard", "/page/*"),
]


@pytest.mark.parametrize(("op", "value"), PAGE_CASES, ids=[o for o, _ in PAGE_CASES])
def test_page_filters_equal_python(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, op: str, value: str) -> None:
    """An event-attribute filter keeps the matching events (views, visitors) and the visits that
    had one (visits), as ``is`` does."""
    negate = op.startswith("does_not")
    test = _wildcard(value) if op.endswith("wildcard") else (lambda v: re.search(value, v) is not None)
    events = _in_range(traffic.events, "ts")
    hits = events.filter(_keep(events["pathname"], test, negate))
    every = traffic.events.filter(pl.col("site_id") == SITE)
    visits = _in_range(traffic.visits, "started_at").join(
        every.filter(_keep(every["pathname"], test, negate)).select("visit_id").unique(), on="visit_id", how="semi")
    assert 0 < hits.height < events.height
    row = ask(warehouse, {"metrics": ["visitors", "visits", "views"], "filters": [[op, "page", [value]]]}).rows[0]
    assert row["views"] == hits.filter(pl.col("type") == "pageview").height
    assert row["visitors"] == hits["visitor_key"].n_unique()
    assert row["visits"] == visits.height
    pages = ask(warehouse, {"metrics": ["views"], "dimensions": ["page"], "filters": [[op, "page", [value]]],
                            "limit": 1000}).rows
    truth = dict(hits.filter(pl.col("type") == "pageview").group_by("pathname").len().iter_rows())
    assert {r["page"]: r["views"] for r in pages} == truth


@pytest.mark.parametrize(("op", "value"), [("matches", "^(pro|team)$"), ("does_not_match", "^pro"),
                                           ("matches_wildcard", "t*"), ("does_not_match_wildcard", "*e")])
def test_property_filters_equal_python(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic, op: str, value: str) -> None:
    negate = op.startswith("does_not")
    test = _wildcard(value) if op.endswith("wildcard") else (lambda v: re.search(value, v) is not None)
    custom = _in_range(traffic.events, "ts").filter(pl.col("type") == "event")
    hits = custom.filter(_keep(custom["_prop_plan"], test, negate))
    assert 0 < hits.height < custom.height
    answer = ask(warehouse, {"metrics": ["events", "visitors"], "filters": [[op, "props:plan", [value]]]})
    assert answer.rows[0]["events"] == hits.height
    by_name = ask(warehouse, {"metrics": ["events"], "dimensions": ["event"],
                              "filters": [[op, "props:plan", [value]]]}).rows
    assert {r["event"]: r["events"] for r in by_name} == dict(hits.group_by("name").len().iter_rows())


def test_several_patterns_are_alternatives_and_combine_with_other_filters(
    warehouse: duckdb.DuckDBPyConnection, traffic: Traffic
) -> None:
    events = _in_range(traffic.events, "ts").filter(pl.col("type") == "pageview")
    visits = traffic.visits.filter((pl.col("site_id") == SITE) & (pl.col("device") != "mobile"))
    hits = events.filter(pl.col("pathname").map_elements(
        lambda v: bool(re.search("^/page/3", v) or re.search("^/pricing$", v)), return_dtype=pl.Boolean)
    ).join(visits.select("visit_id"), on="visit_id", how="semi")
    row = ask(warehouse, {"metrics": ["views"], "filters": [["matches", "page", ["^/page/3", "^/pricing$"]],
                                                            ["does_not_match_wildcard", "device", ["mob*"]]]}).rows[0]
    assert row["views"] == hits.height > 0


@pytest.mark.parametrize(("pattern", "problem"), [
    ("(unclosed", "missing )"),
    ("a(?=b)", "invalid perl operator"),  # look-ahead: not RE2
    (r"(a)\1", "invalid escape"),  # back-reference: not RE2
    ("a{1001}", "invalid repetition size"),
    ("((a{100}){100}){100}", "invalid repetition size"),
    ("a" * (MAX_REGEX_LENGTH + 1), f"1-{MAX_REGEX_LENGTH} characters"),
    ("", "characters"),
])
def test_a_bad_regex_is_a_query_error_naming_the_filter_and_the_problem(pattern: str, problem: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(SITE, "UTC", {"filters": [["matches", "page", [pattern]]]}, now=NOW)
    assert info.value.param == "filters"
    assert "'matches', 'page'" in info.value.message and problem in info.value.message


@pytest.mark.parametrize("pattern", ["", "/a/***", "/" + "*/" * 17])
def test_a_bad_wildcard_pattern_is_a_query_error(pattern: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(SITE, "UTC", {"filters": [["matches_wildcard", "page", [pattern]]]}, now=NOW)
    assert info.value.param == "filters" and "matches_wildcard" in info.value.message


NASTY = ["(a+)+$", "(a|a)*b", "(x+x+)+y", "((a*)*)*c", "(.*a){12}", "^(([a-z])+.)+[A-Z]([a-z])+$"]


@pytest.mark.parametrize("pattern", NASTY)
def test_patterns_that_backtrack_elsewhere_are_linear_here(pattern: str) -> None:
    """RE2 (DuckDB) has no backtracking: a pattern exponential for Python's ``re`` on this text
    answers at once on text 100 000 characters long."""
    assert check_regex(pattern) is None
    con = duckdb.connect()
    started = time.process_time()
    con.execute("SELECT regexp_matches(repeat('a', 100000) || '!', $1)", [pattern]).fetchall()
    assert time.process_time() - started < 1.0


def test_nasty_patterns_filter_the_warehouse_like_python(warehouse: duckdb.DuckDBPyConnection, traffic: Traffic) -> None:
    events = _in_range(traffic.events, "ts").filter(pl.col("type") == "pageview")
    for pattern in ["(/|a+)+1$", "^(/[a-z]+)+(/\\d)*$"]:
        truth = sum(re.search(pattern, v) is not None for v in events["pathname"].to_list())
        assert ask(warehouse, {"metrics": ["views"], "filters": [["matches", "page", [pattern]]]}).rows[0]["views"] == truth


def test_the_url_syntax_has_an_operator_for_each() -> None:
    assert parse_filter_param("page~=^/(blog|docs)/").values == ("^/(blog|docs)/",)  # one regex, | inside
    assert parse_filter_param("page~=^/(blog|docs)/").op == "matches"
    assert parse_filter_param("props:plan!~=^pro").op == "does_not_match"
    f = parse_filter_param("page*=/blog/*|/docs/**")
    assert (f.op, f.values) == ("matches_wildcard", ("/blog/*", "/docs/**"))
    assert parse_filter_param("page!*=/admin/**").op == "does_not_match_wildcard"
    assert parse_filter_param("page~blog").op == "contains"  # the older operators are unchanged
    assert parse_filter_param("page!~blog").op == "not_contains"
    with pytest.raises(QueryError) as info:
        parse_filter_param("page~=(")
    assert info.value.param == "filter" and "missing )" in info.value.message
