"""Report periods and alert hours: which are complete, in a site's time zone.

A weekly report covers a site-local ISO week (Monday 00:00 to the next Monday 00:00), a monthly one
a calendar month. A period is *due* once it has ended and ``REPORT_DELAY`` has passed (so the last
minutes' events are loaded). An alert judges a closed UTC hour once ``HOUR_DELAY`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

#: A period is reported this long after it ends (the scheduled load runs every minute).
REPORT_DELAY = timedelta(hours=1)
#: An hour is judged (alerts, goal conversions) this long after it ends.
HOUR_DELAY = timedelta(minutes=5)
#: At most this many missed periods are caught up at once (e.g. after SMTP was off for months).
MAX_CATCH_UP = 4


@dataclass(frozen=True, order=True)
class Period:
    """A report period: ``start`` and ``end`` are site-local dates, ``end`` exclusive."""

    start: date
    end: date
    frequency: str

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    def label(self) -> str:
        """How a mail names it: ``week of 30 Nov 2026`` or ``November 2026``."""
        if self.frequency == "monthly":
            return self.start.strftime("%B %Y")
        return f"week of {self.start.day} {self.start.strftime('%b %Y')}"

    def previous(self) -> Period:
        """The period right before (the one a report compares with)."""
        return period_containing(self.start - timedelta(days=1), self.frequency)

    def following(self) -> Period:
        return period_containing(self.end, self.frequency)


def period_containing(day: date, frequency: str) -> Period:
    """The week (Monday first) or month that ``day`` falls in."""
    if frequency == "weekly":
        start = day - timedelta(days=day.weekday())
        return Period(start, start + timedelta(days=7), frequency)
    if frequency == "monthly":
        start = day.replace(day=1)
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        return Period(start, end, frequency)
    raise ValueError(f"unknown frequency {frequency!r}")


def last_complete(frequency: str, timezone: str, now: datetime, delay: timedelta = REPORT_DELAY) -> Period:
    """The latest period that ended at least ``delay`` before ``now``, in the site's zone."""
    local = (now.astimezone(UTC) - delay).astimezone(ZoneInfo(timezone))
    return period_containing(local.date(), frequency).previous()


def due_periods(frequency: str, timezone: str, last_sent: str | None, now: datetime) -> list[Period]:
    """The complete periods after the one starting ``last_sent`` (an ISO date), oldest first, at
    most ``MAX_CATCH_UP``; only the latest when nothing was ever sent."""
    latest = last_complete(frequency, timezone, now)
    if last_sent is None:
        return [latest]
    after = period_containing(date.fromisoformat(last_sent), frequency).following()
    out: list[Period] = []
    while after <= latest:
        out.append(after)
        after = after.following()
    return out[-MAX_CATCH_UP:]


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def last_closed_hour(now: datetime, delay: timedelta = HOUR_DELAY) -> datetime:
    """The start of the latest UTC hour that ended at least ``delay`` before ``now``."""
    return floor_hour(now - delay) - timedelta(hours=1)


def hour_key(hour: datetime) -> str:
    """The ISO form an hour is stored in (sorts in time order)."""
    return hour.astimezone(UTC).isoformat(timespec="seconds")
