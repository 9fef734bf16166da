"""Funnels through the API of a real server: definitions (CRUD, validation, access) and answers
equal to the brute-force count of ``tests.funnel_truth`` over the generated traffic it loaded."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from tests.api.conftest import AuthServer
from tests.funnel_truth import brute_force
from tests.generator import Traffic, TrafficSpec, generate
from tests.server import cli
from tests.tracker.harness import Warehouse

TIMEZONE = "America/New_York"
STEPS: list[dict[str, Any]] = [{"page": "/page/**"}, {"page": "/page/1*"}, {"event": "Signup"}, {"page": "/*"}]


@dataclass
class World:
    server: AuthServer
    admin: httpx.Client
    viewer: httpx.Client  # a viewer of `site`, nothing of `other`
    site: dict[str, Any]
    other: dict[str, Any]
    traffic: Traffic
    days: tuple[str, str]

    def funnels(self, site: dict[str, Any] | None = None) -> str:
        return f"/api/v2/sites/{(site or self.site)['id']}/funnels"


@pytest.fixture(scope="module")
def world(auth_server: AuthServer) -> Iterator[World]:
    admin = auth_server.client(auth_server.admin_token)
    site = admin.post("/api/v2/sites", json={"domain": "funnels.example", "timezone": TIMEZONE}).json()
    other = admin.post("/api/v2/sites", json={"domain": "funnels-other.example"}).json()
    invited = admin.post(f"/api/v2/sites/{site['id']}/invitations",
                         json={"email": "funnel-viewer@example.com", "role": "viewer"})
    assert invited.status_code == 201, invited.text
    data_dir = auth_server.server.data_dir
    viewer = auth_server.client(cli(data_dir, "token", "create", "--user", "funnel-viewer@example.com").strip())
    assert viewer.post("/api/v2/invitations/accept", json={"token": invited.json()["token"]}).status_code == 200
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    spec = TrafficSpec(visitors=300, days=4, start=end - timedelta(days=4), sites=(site["id"],),
                       timezones={site["id"]: TIMEZONE}, loads=1, seed=31, pageviews_per_visit=4.0,
                       custom_event_rate=0.5, visits_per_visitor=3.0)
    traffic = generate(spec)
    traffic.write_raw(data_dir / "raw", label="funnels")
    Warehouse(auth_server.server, site["id"]).load()
    local_end = end.astimezone(ZoneInfo(TIMEZONE)).date()
    days = ((local_end - timedelta(days=3)).isoformat(), (local_end - timedelta(days=1)).isoformat())
    yield World(auth_server, admin, viewer, site, other, traffic, days)
    admin.close()
    viewer.close()


def _create(w: World, **body: Any) -> dict[str, Any]:
    r = w.admin.post(w.funnels(), json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _answer(w: World, funnel: dict[str, Any], client: httpx.Client | None = None, **params: Any) -> httpx.Response:
    return (client or w.admin).get(f"{w.funnels()}/{funnel['id']}/answer",
                                   params={"start": w.days[0], "end": w.days[1], **params})


def test_answers_equal_the_brute_force(world: World) -> None:
    w = world
    per_visit = _create(w, name="Blog to signup", steps=STEPS)
    body = _answer(w, per_visit).json()
    truth = brute_force(w.traffic, w.site["id"], w.days, STEPS)[None]
    assert [s["visitors"] for s in body["steps"]] == truth and truth[-1] > 0
    assert [s["dropOff"] for s in body["steps"]] == [0, *(a - b for a, b in zip(truth, truth[1:], strict=False))]
    assert body["steps"][1]["conversionFromPrevious"] == round(100 * truth[1] / truth[0], 2)
    assert body["steps"][0]["page"] == "/page/**" and body["steps"][2]["event"] == "Signup"

    per_visitor = _create(w, name="Across visits", steps=STEPS, per="visitor", days=2)
    filtered = _answer(w, per_visitor, filter="country==DE|US", dimension="source").json()
    keep = lambda visit, _events: visit["country"] in ("DE", "US")  # noqa: E731
    truth_total = brute_force(w.traffic, w.site["id"], w.days, STEPS, per="visitor", days=2, keep_visit=keep)
    truth_by = brute_force(w.traffic, w.site["id"], w.days, STEPS, per="visitor", days=2, keep_visit=keep, by="source")
    assert [s["visitors"] for s in filtered["steps"]] == truth_total[None]
    assert {r["value"]: [s["visitors"] for s in r["steps"]] for r in filtered["breakdown"]["results"]} == truth_by
    assert filtered["breakdown"]["dimension"] == "source" and filtered["filters"] == [["is", "country", ["DE", "US"]]]


def test_definitions_can_be_listed_read_replaced_and_deleted(world: World) -> None:
    w = world
    made = _create(w, name="Pricing", steps=[{"page": "/"}, {"page": "/pricing", "label": "Pricing page"}])
    assert made["per"] == "visit" and made["createdBy"] and made["steps"][1] == {"page": "/pricing", "label": "Pricing page"}
    assert made["id"] in [f["id"] for f in w.viewer.get(w.funnels()).json()["funnels"]]
    assert w.viewer.get(f"{w.funnels()}/{made['id']}").json() == made
    goal = w.admin.post(f"/api/v2/sites/{w.site['id']}/goals", json={"kind": "event", "value": "Signup"}).json()
    r = w.admin.put(f"{w.funnels()}/{made['id']}", json={
        "name": "Pricing to signup", "steps": [{"page": "/pricing"}, {"goal": goal["id"]}], "per": "visitor", "days": 30})
    assert r.status_code == 200, r.text
    assert r.json()["steps"][1] == {"goal": goal["id"]} and r.json()["days"] == 30
    assert w.admin.post(w.funnels(), json={"name": "Pricing to signup", "steps": STEPS}).status_code == 409
    assert w.admin.delete(f"{w.funnels()}/{made['id']}").status_code == 200
    assert w.admin.get(f"{w.funnels()}/{made['id']}").status_code == 404
    assert w.admin.get(f"{w.funnels()}/{made['id']}/answer").status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "One", "steps": [{"page": "/"}]}, "'steps': a funnel has 2-8 steps, not 1"),
    ({"name": "Nine", "steps": [{"page": "/"}] * 9}, "'steps': a funnel has 2-8 steps, not 9"),
    ({"name": "Bad", "steps": [{"page": "/a/***"}, {"page": "/"}]}, "'steps[0]'"),
    ({"name": "Bad", "steps": [{"page": "/"}, {"goal": "nogoal"}]}, "'steps[1]': 'nogoal' is not a goal"),
    ({"name": "Bad", "steps": [{"page": "/"}, {"pages": "/"}]}, "'steps[1]': unknown step field 'pages'"),
    ({"name": "", "steps": STEPS}, "'name'"),
    ({"name": "Bad", "steps": STEPS, "per": "visitor", "days": 0}, "'days'"),
    ({"name": "Bad", "steps": STEPS, "color": "red"}, "'color': unknown field"),
])
def test_bad_definitions_are_refused_naming_the_field(world: World, body: dict[str, Any], message: str) -> None:
    r = world.admin.post(world.funnels(), json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_a_goal_step_is_the_live_goal_with_its_property_condition(world: World) -> None:
    """A goal step keeps the goal's id and is answered with the goal's whole definition (its
    property condition too, against the brute force); once the goal is deleted the answer is a 409
    naming the step, and the definition cannot be saved with it."""
    w = world
    made = w.admin.post(f"/api/v2/sites/{w.site['id']}/goals",
                        json={"kind": "event", "value": "Signup", "property": {"key": "plan", "value": "pro"}})
    assert made.status_code == 201, made.text
    goal = made.json()
    steps = [{"page": "/page/**"}, {"goal": goal["id"], "label": "Pro"}, {"page": "/*"}]
    funnel = _create(w, name="Pro signups", steps=steps, per="visitor", days=2)
    assert funnel["steps"][1] == {"goal": goal["id"], "label": "Pro"}
    body = _answer(w, funnel).json()
    truth_steps = [{"page": "/page/**"}, {"event": "Signup", "props": {"plan": "pro"}}, {"page": "/*"}]
    truth = brute_force(w.traffic, w.site["id"], w.days, truth_steps, per="visitor", days=2)[None]
    assert [s["visitors"] for s in body["steps"]] == truth and truth[2] > 0
    assert body["steps"][1]["goalName"] == goal["name"] == "Signup (plan = pro)"
    any_plan = brute_force(w.traffic, w.site["id"], w.days, [truth_steps[0], {"event": "Signup"}, truth_steps[2]],
                           per="visitor", days=2)[None]
    assert any_plan[1] > truth[1]

    assert w.admin.delete(f"/api/v2/sites/{w.site['id']}/goals/{goal['id']}").status_code == 200
    gone = _answer(w, funnel)
    assert gone.status_code == 409 and "steps[1]" in gone.json()["error"] and goal["id"] in gone.json()["error"]
    assert w.viewer.get(f"{w.funnels()}/{funnel['id']}").json()["steps"][1] == {"goal": goal["id"], "label": "Pro"}
    put = w.admin.put(f"{w.funnels()}/{funnel['id']}", json={"name": "Pro signups", "steps": steps})
    assert put.status_code == 400 and "'steps[1]'" in put.json()["error"], put.text


def test_a_goal_step_saved_as_a_copy_reads_as_the_goal(world: World) -> None:
    """Funnels saved when a goal step copied the goal's kind and value (its id alongside) refer to
    the goal itself now."""
    w = world
    goal = w.admin.post(f"/api/v2/sites/{w.site['id']}/goals", json={"kind": "event", "value": "Download"}).json()
    funnel = _create(w, name="Stored as a copy", steps=[{"page": "/"}, {"goal": goal["id"]}])
    old = orjson.dumps([{"kind": "page", "value": "/", "label": None},
                        {"kind": "event", "value": "Download", "label": None, "goal": goal["id"]}]).decode()
    with sqlite3.connect(w.server.server.data_dir / "control.sqlite3") as db:
        db.execute("UPDATE funnels SET steps = ? WHERE id = ?", (old, funnel["id"]))
    assert w.admin.get(f"{w.funnels()}/{funnel['id']}").json()["steps"] == [{"page": "/"}, {"goal": goal["id"]}]
    assert _answer(w, funnel).json()["steps"][1]["goalName"] == "Download"


def test_a_segment_narrows_the_answer_as_its_filters_do(world: World) -> None:
    w = world
    funnel = _create(w, name="Segmented", steps=STEPS)
    saved = w.admin.post(f"/api/v2/sites/{w.site['id']}/segments",
                         json={"name": "DE or US", "filters": [["is", "country", ["DE", "US"]]]})
    assert saved.status_code == 201, saved.text
    keep = lambda visit, _events: visit["country"] in ("DE", "US")  # noqa: E731
    truth = brute_force(w.traffic, w.site["id"], w.days, STEPS, keep_visit=keep)[None]
    by_segment = _answer(w, funnel, segment="DE or US").json()
    assert [s["visitors"] for s in by_segment["steps"]] == truth and truth[0] > 0
    assert truth != brute_force(w.traffic, w.site["id"], w.days, STEPS)[None]
    r = _answer(w, funnel, segment="No such")
    assert r.status_code == 400 and "'segment'" in r.json()["error"], r.text


def test_bad_answer_parameters_are_refused(world: World) -> None:
    funnel = _create(world, name="For bad parameters", steps=STEPS)
    for params, message in (({"dimension": "colour"}, "'dimension': unknown dimension 'colour'"),
                            ({"dimension": "time:day"}, "'dimension'"),
                            ({"filter": "country=DE"}, "'filter'"),
                            ({"imported": "true"}, "'imported'")):
        r = _answer(world, funnel, **params)
        assert r.status_code == 400 and message in r.json()["error"], (params, r.text)


def test_viewers_read_and_answer_but_do_not_manage(world: World) -> None:
    w = world
    funnel = _create(w, name="Viewer reads", steps=STEPS)
    assert _answer(w, funnel, client=w.viewer).status_code == 200
    assert w.viewer.post(w.funnels(), json={"name": "Mine", "steps": STEPS}).status_code == 403
    assert w.viewer.delete(f"{w.funnels()}/{funnel['id']}").status_code == 403
    # another site: as if it did not exist, and its funnels are not reachable through this one
    theirs = w.admin.post(w.funnels(w.other), json={"name": "Other", "steps": STEPS}).json()
    assert w.viewer.get(w.funnels(w.other)).status_code == 404
    assert w.viewer.get(f"{w.funnels(w.other)}/{theirs['id']}/answer").status_code == 404
    assert w.admin.get(f"{w.funnels()}/{theirs['id']}").status_code == 404
