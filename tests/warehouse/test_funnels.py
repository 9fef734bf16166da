"""Funnels on generated traffic loaded by the real loader, against the brute-force count of
``tests.funnel_truth`` (which shares nothing with ``warehouse.query.funnels``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from tests.funnel_truth import brute_force
from tests.generator import Traffic, TrafficSpec, generate
from tests.loaded import load_traffic
from warehouse.database import connect
from warehouse.query.funnels import Funnel, FunnelAnswer, MissingGoal, parse_funnel, run_funnel_sync
from warehouse.query.model import GoalSpec, QueryError, parse_query
from warehouse.query.runner import OnConnection

SITE = "site-b"
SPEC = TrafficSpec(visitors=700, days=5, seed=23, loads=1, pageviews_per_visit=4.0, custom_event_rate=0.5,
                   visits_per_visitor=3.0)
RANGE = ("2026-03-01", "2026-03-04")
STEPS: list[dict[str, Any]] = [{"page": "/page/**"}, {"page": "/page/1*"}, {"event": "Signup"}, {"page": "/*"}]


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(SPEC)


@pytest.fixture(scope="module")
def warehouse(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnConnection]:
    con = connect(load_traffic(traffic, SPEC, tmp_path_factory.mktemp("funnels")), read_only=True)
    yield OnConnection(con)
    con.close()


def ask(warehouse: OnConnection, steps: list[dict[str, Any]], per: str = "visit", days: int | None = None,
        filters: list[Any] | None = None, dimension: str | None = None,
        goals: dict[str, GoalSpec] | None = None, answer_goals: dict[str, GoalSpec] | None = None) -> FunnelAnswer:
    """The answer for ``steps``; ``goals`` are the site's when the funnel is saved, ``answer_goals``
    (default: the same) when it is answered."""
    funnel: Funnel = parse_funnel({"steps": steps, "per": per, **({"days": days} if days else {})}, goals)
    body: dict[str, Any] = {"date_range": list(RANGE), "filters": filters or [], "limit": 1000,
                            "dimensions": [dimension] if dimension else []}
    q = parse_query(SITE, SPEC.timezones[SITE], body)
    return run_funnel_sync(q, funnel, warehouse, goals if answer_goals is None else answer_goals)


# --- the tests -------------------------------------------------------------------------------


def test_per_visit_funnel_equals_the_brute_force(warehouse: OnConnection, traffic: Traffic) -> None:
    answer = ask(warehouse, STEPS)
    truth = brute_force(traffic, SITE, RANGE, STEPS)[None]
    assert answer.totals == truth
    assert truth[3] > 0, "the generated traffic should go through every step"
    steps = answer.steps(answer.totals)
    assert [s["dropOff"] for s in steps] == [0, *(a - b for a, b in zip(truth, truth[1:], strict=False))]
    assert steps[2]["conversionFromFirst"] == round(100 * truth[2] / truth[0], 2)


def test_per_visitor_window_equals_the_brute_force(warehouse: OnConnection, traffic: Traffic) -> None:
    for days in (1, 3):
        answer = ask(warehouse, STEPS, per="visitor", days=days)
        assert answer.totals == brute_force(traffic, SITE, RANGE, STEPS, per="visitor", days=days)[None], days
    # across visits, more visitors get through than within one visit
    assert ask(warehouse, STEPS, per="visitor", days=3).totals[3] > ask(warehouse, STEPS).totals[3]


def test_filters_choose_the_visits(warehouse: OnConnection, traffic: Traffic) -> None:
    by_country = ask(warehouse, STEPS, filters=[["is", "country", ["DE", "FR"]]])
    assert by_country.totals == brute_force(traffic, SITE, RANGE, STEPS, keep_visit=lambda v, _: v["country"] in ("DE", "FR"))[None]
    by_page = ask(warehouse, STEPS, per="visitor", days=2, filters=[["is", "page", ["/pricing"]]])
    # a page filter is about events on the page, of any type (as in every query)
    truth = brute_force(traffic, SITE, RANGE, STEPS, per="visitor", days=2,
                        keep_visit=lambda _, evs: any(e["pathname"] == "/pricing" for e in evs))
    assert by_page.totals == truth[None]


def test_breakdowns_by_visit_attribute_and_by_first_step_event(warehouse: OnConnection, traffic: Traffic) -> None:
    steps = [{"event": "Signup"}, {"page": "/page/*"}, {"event": "Download"}]
    for per, days, dim, field in (("visit", None, "country", "country"), ("visitor", 2, "source", "source"),
                                  ("visit", None, "props:plan", "_prop_plan")):
        answer = ask(warehouse, steps, per=per, days=days, dimension=dim)
        truth = brute_force(traffic, SITE, RANGE, steps, per=per, days=days or 7, by=field)
        assert answer.groups is not None
        assert dict(answer.groups) == truth, (per, dim)
        assert len(truth) > 1


def test_same_millisecond_steps_follow_event_order(tmp_path: Any) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE events (site_id VARCHAR, session_id VARCHAR, visitor_key UBIGINT, ts TIMESTAMPTZ,"
                " event_id VARCHAR, type VARCHAR, name VARCHAR, pathname VARCHAR)")
    t = "2026-03-02 10:00:00+00"
    con.executemany("INSERT INTO events VALUES ('s', ?, ?, ?, ?, 'pageview', NULL, ?)", [
        ("v1", 1, t, "b", "/a"), ("v1", 1, t, "a", "/b"),
        ("v2", 2, t, "a", "/a"), ("v2", 2, t, "b", "/b"),
        ("v3", 3, t, "a", "/a"),
    ])
    funnel = parse_funnel({"steps": [{"page": "/a"}, {"page": "/b"}]})
    q = parse_query("s", "UTC", {"date_range": ["2026-03-02", "2026-03-02"]})
    answer = run_funnel_sync(q, funnel, OnConnection(con))
    # v2: /a (id a) then /b (id b) in the same ms; v1's /b has the smaller id, so comes first
    assert answer.totals == [3, 1]


@pytest.mark.parametrize(("definition", "field"), [
    ({"steps": [{"page": "/"}]}, "steps"),
    ({"steps": [{"page": "/"}] * 9}, "steps"),
    ({"steps": [{"page": "/a/***"}, {"page": "/"}]}, "steps[0]"),
    ({"steps": [{"page": "no-slash"}, {"page": "/"}]}, "steps[0]"),
    ({"steps": [{"page": "/", "event": "x"}, {"page": "/"}]}, "steps[0]"),
    ({"steps": [{"page": "/"}, {"goal": "nogoal"}]}, "steps[1]"),
    ({"steps": [{"page": "/"}, {"event": ""}]}, "steps[1]"),
    ({"steps": [{"page": "/"}, {"page": "/x"}], "per": "day"}, "per"),
    ({"steps": [{"page": "/"}, {"page": "/x"}], "per": "visitor", "days": 91}, "days"),
    ({"steps": [{"page": "/"}, {"page": "/x"}], "days": 3}, "days"),
])
def test_bad_definitions_name_the_field(definition: dict[str, Any], field: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_funnel(definition, goals={})
    assert info.value.param == field


SIGNUP_PRO = GoalSpec("Signup (plan = pro)", "event", "Signup", "plan", "pro")
PAGES_1X = GoalSpec("Visit /page/1*", "page", "/page/1*")


def test_a_goal_step_keeps_the_goal_by_id() -> None:
    funnel = parse_funnel({"steps": [{"page": "/"}, {"goal": "g1", "label": "Signed up"}]}, goals={"g1": SIGNUP_PRO})
    assert funnel.steps[1].public() == {"goal": "g1", "label": "Signed up"}
    # Naming the goal's event too is allowed when it agrees with the goal.
    assert parse_funnel({"steps": [{"page": "/"}, {"goal": "g1", "event": "Signup"}]},
                        goals={"g1": SIGNUP_PRO}).steps[1].public() == {"goal": "g1"}
    with pytest.raises(QueryError) as info:
        parse_funnel({"steps": [{"page": "/"}, {"goal": "g1", "event": "Play"}]}, goals={"g1": SIGNUP_PRO})
    assert info.value.param == "steps[1]"


def test_goal_steps_match_the_goals_whole_definition(warehouse: OnConnection, traffic: Traffic) -> None:
    """A goal with a property condition is matched with it (``sql.goal_match``), per visit and per
    visitor, against the brute force told the same condition."""
    goals = {"g-pro": SIGNUP_PRO, "g-1x": PAGES_1X}
    steps = [{"page": "/page/**"}, {"goal": "g-1x"}, {"goal": "g-pro", "label": "Pro signup"}]
    truth_steps = [{"page": "/page/**"}, {"page": "/page/1*"}, {"event": "Signup", "props": {"plan": "pro"}}]
    for per, days in (("visit", None), ("visitor", 3)):
        answer = ask(warehouse, steps, per=per, days=days, goals=goals)
        truth = brute_force(traffic, SITE, RANGE, truth_steps, per=per, days=days or 7)[None]
        assert answer.totals == truth and truth[2] > 0, per
        # the property condition counts: any Signup reaches the last step more often
        any_signup = brute_force(traffic, SITE, RANGE, [*truth_steps[:2], {"event": "Signup"}], per=per, days=days or 7)
        assert any_signup[None][2] > truth[2]
    described = answer.steps(answer.totals)
    assert described[2]["goal"] == "g-pro" and described[2]["goalName"] == "Signup (plan = pro)"
    assert described[2]["label"] == "Pro signup"
    # A goal changed after the funnel was saved is answered with its new definition.
    changed = ask(warehouse, steps, goals=goals,
                  answer_goals={**goals, "g-pro": GoalSpec("Signup", "event", "Signup")})
    assert changed.totals[2] == brute_force(traffic, SITE, RANGE, [*truth_steps[:2], {"event": "Signup"}])[None][2]


def test_a_deleted_goal_names_its_step(warehouse: OnConnection) -> None:
    with pytest.raises(MissingGoal) as info:
        ask(warehouse, [{"page": "/"}, {"goal": "g-pro"}], goals={"g-pro": SIGNUP_PRO}, answer_goals={})
    assert info.value.index == 1 and "steps[1]" in str(info.value) and "g-pro" in str(info.value)
