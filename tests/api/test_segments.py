"""Saved segments, regex/wildcard filters in the query string and comparisons, over HTTP against a
real server with generated traffic: a segment used by name answers exactly what its filters inline
answer on every kind of endpoint; ``compare=`` values equal separate requests for the comparison
range, with the change computed here; bad patterns and unknown segments are 400s naming them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import wait_for_warehouse
from tests.generator import TrafficSpec, generate
from tests.server import cli, running_server

TZ = "Europe/Berlin"
RANGE = {"start": "2026-03-03", "end": "2026-03-04"}
BEFORE = {"start": "2026-03-01", "end": "2026-03-02"}  # the previous period of RANGE


@dataclass
class Env:
    client: httpx.Client
    site: str

    def get(self, endpoint: str, **params: Any) -> Any:
        r = self.client.get(f"/api/v2/sites/{self.site}/{endpoint}", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def query(self, body: dict[str, Any]) -> Any:
        r = self.client.post(f"/api/v2/sites/{self.site}/query", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def error(self, method: str, path: str, status: int = 400, **kw: Any) -> str:
        r = self.client.request(method, f"/api/v2/sites/{self.site}/{path}", **kw)
        assert r.status_code == status, r.text
        return str(r.json()["error"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("segments") / "data"
    data_dir.mkdir()
    with running_server(data_dir, 1) as srv:
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            site = c.post("/api/v2/sites", json={"domain": "segments.example", "timezone": TZ}).json()["id"]
            assert c.post(f"/api/v2/sites/{site}/goals", json={"kind": "event", "value": "Signup"}).status_code == 201
            wait_for_warehouse(c, site)
            generate(TrafficSpec(visitors=250, days=4, start=datetime(2026, 3, 1, tzinfo=UTC), sites=(site,),
                                 timezones={site: TZ}, loads=1, late_fraction=0, duplicate_fraction=0,
                                 seed=51)).write_raw(data_dir / "raw")
            cli(data_dir, "load")
            yield Env(c, site)


BLOG_DE = [["matches", "page", ["^/page/[12]"]], ["is", "country", ["DE", "FR"]]]
BLOG_DE_URL = ["page~=^/page/[12]", "country==DE|FR"]


def test_a_segment_is_saved_listed_changed_and_deleted(env: Env) -> None:
    r = env.client.post(f"/api/v2/sites/{env.site}/segments", json={"name": "Temp", "filters": [["is", "device", ["mobile"]]]})
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["filters"] == [["is", "device", ["mobile"]]] and seg["name"] == "Temp" and seg["createdBy"]
    assert seg["id"] in {s["id"] for s in env.get("segments")["segments"]}
    assert env.get("segments/Temp")["id"] == seg["id"]
    r = env.client.patch(f"/api/v2/sites/{env.site}/segments/{seg['id']}",
                         json={"name": "Mobile", "filters": [["matches_wildcard", "device", ["mob*"]]]})
    assert r.status_code == 200 and r.json()["name"] == "Mobile", r.text
    assert r.json()["filters"] == [["matches_wildcard", "device", ["mob*"]]]
    assert env.client.delete(f"/api/v2/sites/{env.site}/segments/Mobile").status_code == 200
    assert "not found" in env.error("GET", f"segments/{seg['id']}", 404)


def test_bad_segments_are_refused_naming_the_problem(env: Env) -> None:
    post = f"/api/v2/sites/{env.site}/segments"
    assert env.client.post(post, json={"name": "Dup", "filters": [["is", "country", ["DE"]]]}).status_code == 201
    assert "already has a segment 'Dup'" in env.error("POST", "segments", 409,
                                                       json={"name": "Dup", "filters": [["is", "country", ["FR"]]]})
    msg = env.error("POST", "segments", json={"name": "Bad", "filters": [["matches", "page", ["(unclosed"]]]})
    assert msg.startswith("invalid parameter 'filters'") and "missing )" in msg
    msg = env.error("POST", "segments", json={"name": "Goal", "filters": [["is", "goal", ["Nope"]]]})
    assert "'Nope' is not a goal of this site" in msg
    assert env.error("POST", "segments", json={"filters": [["is", "country", ["DE"]]]}).startswith(
        "invalid parameter 'name'")
    assert env.error("POST", "segments", json={"name": "x", "filters": []}).startswith("invalid parameter 'filters'")
    assert env.error("POST", "segments", json={"name": "x", "filters": [["is", "country", ["DE"]]], "owner": 1}) \
        .startswith("invalid parameter 'owner'")


def test_a_segment_by_name_answers_what_its_filters_inline_answer(env: Env) -> None:
    r = env.client.post(f"/api/v2/sites/{env.site}/segments", json={"name": "Blog DE", "filters": BLOG_DE})
    assert r.status_code == 201, r.text
    seg_id = r.json()["id"]
    for endpoint, extra in [("stats", {}), ("pages", {}), ("countries", {}), ("timeseries", {}),
                            ("events/properties", {"property": "plan"}), ("conversions", {})]:
        inline = env.get(endpoint, **RANGE, **extra, filter=BLOG_DE_URL)
        for ref in ("Blog DE", seg_id):
            assert env.get(endpoint, **RANGE, **extra, segment=ref) == inline, (endpoint, ref)
    stats = env.get("stats", **RANGE, segment="Blog DE")
    assert 0 < stats["visitors"] < env.get("stats", **RANGE)["visitors"]
    # combined with the request's own filters: all must hold
    both = env.get("pages", **RANGE, segment="Blog DE", filter="device!=desktop")
    assert both == env.get("pages", **RANGE, filter=[*BLOG_DE_URL, "device!=desktop"])
    body = {"metrics": ["visitors", "views"], "dimensions": ["page"], "date_range": [RANGE["start"], RANGE["end"]]}
    via_query = env.query({**body, "segment": "Blog DE"})
    assert via_query["results"] == env.query({**body, "filters": BLOG_DE})["results"]
    assert via_query["query"]["segment"] == "Blog DE"
    assert env.error("GET", "stats", params={**RANGE, "segment": "Nope"}) \
        .startswith("invalid parameter 'segment': unknown segment 'Nope'")
    assert "unknown segment 'Nope'" in env.error("POST", "query", json={**body, "segment": "Nope"})


def test_regex_and_wildcard_filters_in_the_query_string(env: Env) -> None:
    rows = env.get("pages", **RANGE, filter="page~=^/page/(1|2)\\d$", limit=100)["pages"]
    assert rows and all(r["page"][len("/page/"):][0] in "12" and len(r["page"]) == len("/page/10") for r in rows)
    body = {"metrics": ["visitors", "views"], "dimensions": ["page"], "date_range": [RANGE["start"], RANGE["end"]],
            "filters": [["matches", "page", ["^/page/(1|2)\\d$"]]]}
    assert [(r["page"], r["visitors"], r["views"]) for r in rows] == [
        (r["dimensions"][0], *r["metrics"]) for r in env.query(body)["results"]]
    star = env.get("pages", **RANGE, filter="page*=/page/1*", limit=100)["pages"]
    assert {r["page"] for r in star} == {r["page"] for r in env.get("pages", **RANGE, limit=100)["pages"]
                                         if r["page"].startswith("/page/1")}
    msg = env.error("GET", "pages", params={**RANGE, "filter": "page~=(?<=x)a"})
    assert msg.startswith("invalid parameter 'filter'") and "not a valid regular expression" in msg
    msg = env.error("GET", "pages", params={**RANGE, "filter": "page~=" + "a" * 300})
    assert "1-256 characters" in msg
    msg = env.error("POST", "query", json={**body, "filters": [["matches", "browser", ["a{5000}"]]]})
    assert msg.startswith("invalid parameter 'filters'") and "browser" in msg


def change(now: float, then: float, digits: int = 0) -> dict[str, Any]:
    absolute = round(now - then, digits) if digits else now - then
    return {"absolute": absolute, "percent": round(100 * (now - then) / then, 1) if then else None}


def test_stats_compare_with_a_custom_range_equals_two_requests(env: Env) -> None:
    now = env.get("stats", **RANGE)
    then = env.get("stats", start="2026-03-02", end="2026-03-02")
    compared = env.get("stats", **RANGE, compare="2026-03-02,2026-03-02")
    assert compared["comparisonPeriod"]["mode"] == "custom"
    assert compared["comparisonPeriod"]["start"].startswith("2026-03-02T00:00:00+01:00")
    for key in ("visitors", "visits", "views", "events", "bounceRate"):
        assert compared[key] == now[key]
        assert compared["comparison"][key] == compared["previous"][key] == then[key]
    assert compared["comparison"]["change"]["visitors"] == change(now["visitors"], then["visitors"])
    assert compared["comparison"]["change"]["bounceRate"] == change(now["bounceRate"], then["bounceRate"], 1)
    default = env.get("stats", **RANGE)  # without compare=: the previous period, as before
    assert default["previous"] == {k: v for k, v in env.get("stats", **BEFORE).items() if k in default["previous"]}


def test_breakdowns_and_series_compare_by_value_and_by_position(env: Env) -> None:
    pages = env.get("pages", **RANGE, compare="previous_period", limit=5)
    before = {r["page"]: r for r in env.get("pages", **BEFORE, limit=1000)["pages"]}
    assert pages["comparisonPeriod"]["mode"] == "previous_period" and len(pages["pages"]) == 5
    for r in pages["pages"]:
        other = before.get(r["page"], {"visitors": 0, "views": 0})
        assert (r["comparison"]["visitors"], r["comparison"]["views"]) == (other["visitors"], other["views"])
        assert r["comparison"]["change"]["views"] == change(r["views"], other["views"])
    series = env.get("timeseries", **RANGE, compare="previous_period", metrics="visitors,views")
    days = env.get("timeseries", **BEFORE, metrics="visitors,views")["data"]
    assert [p["comparison"]["timestamp"] for p in series["data"]] == [d["timestamp"] for d in days]
    assert [(p["comparison"]["visitors"], p["comparison"]["views"]) for p in series["data"]] == [
        (d["visitors"], d["views"]) for d in days]
    answer = env.query({"metrics": ["visitors"], "dimensions": ["time:day"],
                        "date_range": [RANGE["start"], RANGE["end"]], "compare": "previous_period"})
    assert answer["meta"]["comparisonPeriod"]["mode"] == "previous_period"
    assert [r["comparison"]["dimensions"] for r in answer["results"]] == [[d["timestamp"]] for d in days]
    assert [r["comparison"]["metrics"] for r in answer["results"]] == [[d["visitors"]] for d in days]
    assert [r["comparison"]["change"][0] for r in answer["results"]] == [
        change(r["metrics"][0], d["visitors"]) for r, d in zip(answer["results"], days, strict=True)]
    goals = env.get("conversions", **RANGE, compare="previous_period")["goals"]
    assert goals[0]["comparison"]["conversions"] == env.get("conversions", **BEFORE)["goals"][0]["conversions"]
    names = env.get("events", **RANGE, compare="previous_period")["names"]
    names_before = {n["name"]: n["events"] for n in env.get("events", **BEFORE)["names"]}
    assert names and all(n["comparison"]["events"] == names_before.get(n["name"], 0) for n in names)
    values = env.get("events/properties", **RANGE, property="plan", compare="previous_period")["values"]
    values_before = {v["value"]: v["events"] for v in env.get("events/properties", **BEFORE, property="plan")["values"]}
    assert values and all(v["comparison"]["events"] == values_before.get(v["value"], 0) for v in values)
    assert env.error("GET", "events/properties", params={**RANGE, "compare": "previous_period"}).startswith(
        "invalid parameter 'compare'")
    assert env.error("GET", "pages", params={**RANGE, "compare": "last_week"}).startswith(
        "invalid parameter 'compare'")


def test_a_segment_names_a_goal_as_queries_do_by_its_display_name(env: Env) -> None:
    sites = f"/api/v2/sites/{env.site}"
    goal = env.client.post(f"{sites}/goals", json={"kind": "event", "value": "Signup",
                                                    "property": {"key": "plan", "value": "pro"}})
    assert goal.status_code == 201 and goal.json()["name"] == "Signup (plan = pro)"
    try:
        saved = env.client.post(f"{sites}/segments", json={"name": "Pro signups",
                                                           "filters": [["is", "goal", ["Signup (plan = pro)"]]]})
        assert saved.status_code == 201, saved.text
        inline = env.get("stats", **RANGE, filter="goal==Signup (plan = pro)")
        compared = env.get("stats", **RANGE, segment="Pro signups")
        assert (compared["visitors"], compared["views"]) == (inline["visitors"], inline["views"])
        assert 0 < inline["visitors"] < env.get("stats", **RANGE)["visitors"]
        env.client.delete(f"{sites}/segments/{saved.json()['id']}")
    finally:
        env.client.delete(f"{sites}/goals/{goal.json()['id']}")
