"""Mailed reports end to end: generated traffic loaded by the real loader, the report composed by
the query engine and mailed through a real SMTP server (aiosmtpd on loopback); every number in
the mail is checked against a brute-force count over the generated events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from littlestats.config import Settings
from littlestats.controlplane import ControlPlane, Site
from notify.periods import Period, due_periods, last_complete
from notify.render import number
from notify.schedule import run_once
from tests.generator import Traffic, TrafficSpec, generate
from tests.notify.conftest import Inbox
from warehouse.service import Warehouse

ZONE = "Europe/Berlin"
# Monday 7 December 2026, 03:00 in Berlin: the week of 30 November has ended two hours ago.
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
WEEK = Period(date(2026, 11, 30), date(2026, 12, 7), "weekly")
BEFORE = Period(date(2026, 11, 23), date(2026, 11, 30), "weekly")


@dataclass
class World:
    settings: Settings
    store: ControlPlane
    site: Site
    warehouse: Warehouse
    traffic: Traffic
    inbox: Inbox


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Inbox, int]) -> Iterator[World]:
    inbox, port = smtp
    data_dir: Path = tmp_path_factory.mktemp("reports") / "data"
    settings = Settings(data_dir=data_dir, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none",
                        smtp_from="LittleStats <reports@stats.example>")
    settings.ensure_dirs()
    store = ControlPlane(settings.control_db)
    site = store.create_site("shop.example", timezone=ZONE)
    store.create_goal(site.id, "event", "Signup")
    store.create_goal(site.id, "page", "/pricing")
    traffic = generate(TrafficSpec(visitors=300, days=16, start=datetime(2026, 11, 22, tzinfo=UTC), sites=(site.id,),
                                   timezones={site.id: ZONE}, seed=23, loads=2))
    traffic.write_raw(settings.raw_dir)
    wh = Warehouse(settings)
    wh.load(seal=False)
    yield World(settings, store, site, wh, traffic, inbox)
    wh.close()
    store.close()


def _local(col: str) -> pl.Expr:
    return pl.col(col).dt.convert_time_zone(ZONE).dt.date()


def truth(traffic: Traffic, period: Period) -> dict[str, object]:
    """The report's numbers counted by hand from the generated events and visits."""
    e = traffic.events.filter(_local("ts").is_between(period.start, period.last_day))
    v = traffic.visits.filter(_local("started_at").is_between(period.start, period.last_day))
    pv = e.filter(pl.col("type") == "pageview")
    pages = pv.group_by("pathname").agg(pl.col("visitor_key").n_unique().alias("visitors"), pl.len().alias("views"))
    sources = v.group_by("source").agg(pl.col("visitor_key").n_unique().alias("visitors"))
    signups = e.filter((pl.col("type") == "event") & (pl.col("name") == "Signup"))
    return {
        "visitors": e["visitor_key"].n_unique(), "visits": v.height, "views": pv.height,
        "pages": sorted(pages.iter_rows(), key=lambda r: (-r[1], r[0]))[:5],
        "sources": sorted(sources.iter_rows(), key=lambda r: (-r[1], r[0]))[:5],
        "signups": (signups.height, signups["visitor_key"].n_unique()),
    }


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_weekly_report_mail_says_what_brute_force_counts(world: World) -> None:
    world.inbox.take()
    sub = world.store.create_report(world.site.id, "ana@shop.example", "weekly", BEFORE.start.isoformat())
    assert sub is not None
    try:
        outcome = run_once(world.store, world.settings, world.warehouse, NOW)
        assert outcome.errors == []
        assert outcome.reports_sent == [(sub.id, WEEK.start.isoformat())]
        [(sender, recipients, msg)] = world.inbox.take()
    finally:
        world.store.delete_report(world.site.id, sub.id)
    now, before = truth(world.traffic, WEEK), truth(world.traffic, BEFORE)
    assert now["visitors"] and before["visitors"]  # both weeks have traffic
    change = round(100 * (now["visitors"] - before["visitors"]) / before["visitors"])  # type: ignore[operator]
    assert sender == "reports@stats.example" and recipients == ["ana@shop.example"]
    assert msg["To"] == "ana@shop.example"
    assert msg["Subject"] == (f"Weekly report for shop.example, week of 30 Nov 2026: {now['visitors']:,} visitors"
                              f" ({change:+d}%)")
    text = text_of(msg)
    lines = text.splitlines()
    assert lines[0] == f"{world.site.name}: 2026-11-30 to 2026-12-06 ({ZONE})"
    for label, key in (("Visitors:", "visitors"), ("Visits:", "visits"), ("Pageviews:", "views")):
        line = next(x for x in lines if x.strip().startswith(label))
        assert line.split()[1] == f"{now[key]:,}", line
        assert line.endswith(f"(before: {before[key]:,})"), line
    top_pages = lines[lines.index("Top pages (visitors, pageviews):") + 1:][:5]
    assert [ln.split() for ln in top_pages] == [[f"{v:,}", f"{n:,}", page] for page, v, n in now["pages"]]  # type: ignore[attr-defined]
    top_sources = lines[lines.index("Top sources (visitors):") + 1:][:5]
    assert [ln.strip().split(maxsplit=1) for ln in top_sources] == [[f"{v:,}", s] for s, v in now["sources"]]  # type: ignore[attr-defined]
    signup = next(x for x in lines[lines.index("Goals (conversions, visitors):"):] if x.endswith(" Signup"))
    assert signup.split()[:2] == [f"{now['signups'][0]:,}", f"{now['signups'][1]:,}"]  # type: ignore[index]
    html = msg.get_body(("html",))
    assert html is not None
    body = str(html.get_content())
    assert f"<td style=\"padding:4px 12px 4px 0;text-align:left\">{now['visitors']:,}</td>" in body
    assert "<img" not in body and "http" not in body.replace("<!doctype html>", "")  # nothing that tracks
    assert msg["Auto-Submitted"] == "auto-generated"


def test_monthly_report_compares_with_the_month_before(world: World) -> None:
    world.inbox.take()
    sub = world.store.create_report(world.site.id, "bo@shop.example", "monthly", "2026-10-01")
    assert sub is not None
    try:
        outcome = run_once(world.store, world.settings, world.warehouse, NOW)
        assert outcome.reports_sent == [(sub.id, "2026-11-01")]
        [(_, _, msg)] = world.inbox.take()
    finally:
        world.store.delete_report(world.site.id, sub.id)
    november = truth(world.traffic, Period(date(2026, 11, 1), date(2026, 12, 1), "monthly"))
    assert msg["Subject"] == f"Monthly report for shop.example, November 2026: {november['visitors']:,} visitors (new)"
    assert "Visitors:" in text_of(msg) and "(before: 0)" in text_of(msg)  # no traffic in October


def test_schedule_mails_each_period_once_across_restarts_and_catches_up(world: World) -> None:
    """The first mail goes out an hour after the site-local week ends, exactly once, even when the
    job runs again or from a new process; periods missed while stopped are sent in order."""
    world.inbox.take()
    zone = ZoneInfo(ZONE)
    sub = world.store.create_report(world.site.id, "cy@shop.example", "weekly", BEFORE.start.isoformat())
    assert sub is not None
    try:
        local = lambda *a: datetime(*a, tzinfo=zone)  # noqa: E731
        for moment in (local(2026, 12, 6, 23, 30), local(2026, 12, 7, 0, 30)):  # the week is not over an hour
            assert run_once(world.store, world.settings, world.warehouse, moment).reports_sent == []
        assert [p for _, p in run_once(world.store, world.settings, world.warehouse,
                                       local(2026, 12, 7, 1, 5)).reports_sent] == ["2026-11-30"]
        assert run_once(world.store, world.settings, world.warehouse, local(2026, 12, 7, 1, 6)).reports_sent == []
        restarted = ControlPlane(world.settings.control_db)  # another process, the same records
        try:
            assert run_once(restarted, world.settings, world.warehouse, local(2026, 12, 9, 12)).reports_sent == []
            # stopped for three weeks: the three weeks missed go out, oldest first
            later = run_once(restarted, world.settings, world.warehouse, local(2026, 12, 28, 9))
            assert [p for _, p in later.reports_sent] == ["2026-12-07", "2026-12-14", "2026-12-21"]
        finally:
            restarted.close()
        subjects = [m["Subject"] for _, _, m in world.inbox.take()]
        assert [s.split(", ")[1].split(":")[0] for s in subjects] == [
            "week of 30 Nov 2026", "week of 7 Dec 2026", "week of 14 Dec 2026", "week of 21 Dec 2026"]
        assert world.store.get_report(world.site.id, sub.id).last_period == "2026-12-21"  # type: ignore[union-attr]
    finally:
        world.store.delete_report(world.site.id, sub.id)


def test_without_smtp_nothing_is_sent_and_the_period_waits(world: World) -> None:
    world.inbox.take()
    quiet = Settings(data_dir=world.settings.data_dir)
    sub = world.store.create_report(world.site.id, "di@shop.example", "weekly", BEFORE.start.isoformat())
    assert sub is not None
    try:
        assert run_once(world.store, quiet, world.warehouse, NOW).reports_sent == []
        assert world.inbox.take() == []
        assert world.store.get_report(world.site.id, sub.id).last_period == BEFORE.start.isoformat()  # type: ignore[union-attr]
    finally:
        world.store.delete_report(world.site.id, sub.id)


def test_periods_follow_the_site_local_calendar() -> None:
    # 23:30 UTC on Sunday is already Monday 00:30 in Berlin, but not yet an hour after the week
    assert last_complete("weekly", ZONE, datetime(2026, 12, 6, 23, 30, tzinfo=UTC)) == BEFORE
    assert last_complete("weekly", ZONE, datetime(2026, 12, 7, 0, 1, tzinfo=UTC)) == WEEK
    assert last_complete("weekly", "America/New_York", datetime(2026, 12, 7, 4, tzinfo=UTC)) == BEFORE
    assert last_complete("monthly", ZONE, datetime(2026, 12, 1, 0, 1, tzinfo=UTC)).start == date(2026, 11, 1)
    assert last_complete("monthly", ZONE, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)).start == date(2025, 12, 1)
    assert due_periods("weekly", ZONE, None, NOW) == [WEEK]
    assert len(due_periods("weekly", ZONE, "2025-01-06", NOW)) == 4  # a long stop sends the latest few
    assert number("visit_duration", 125.4) == "2m 05s" and number("bounce_rate", 41.25) == "41.2%"
    assert (WEEK.end - WEEK.start) == timedelta(days=7)
