"""The one query model: metrics × dimensions × filters × date range, parsed and validated once.

Every API endpoint (the general ``POST /sites/:id/query`` and every named view) builds a ``Query``
with ``parse_query`` and hands it to the planner; nothing downstream re-validates, and nothing a
client sends reaches SQL except as a bound parameter. Invalid input raises ``QueryError`` naming the
offending parameter (the API turns it into a 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from warehouse.query.patterns import check_pattern
from warehouse.query.regex import check_regex

# --- vocabulary ------------------------------------------------------------------------------

METRICS: dict[str, str] = {
    "visitors": "Distinct visitors (exact) with a pageview or custom event in the range.",
    "visits": "Visits (sessions) that started in the range.",
    "views": "Pageview events in the range.",
    "events": "Custom events in the range.",
    "bounce_rate": "Percentage of visits with one pageview, no custom event and under 10 s of engagement.",
    "visit_duration": "Average visit duration in seconds (last event − first event + final page engagement).",
    "views_per_visit": "Average number of pageviews per visit.",
    "conversion_rate": "Percentage of visitors who completed the goal: needs a goal filter or the `goal` dimension.",
    "time_on_page": "Average seconds spent on the page per pageview (engagement time reported by the tracker).",
    "total_revenue": "Sum of the revenue the counted custom events carry, in the site's currency (converted with "
                     "the site's exchange rates; needs the site's revenue currency).",
    "average_revenue": "Average revenue per counted custom event that carries revenue, in the site's currency.",
    "revenue_unconverted": "Counted custom events carrying revenue in a currency the site has no exchange rate "
                           "for: left out of total_revenue and average_revenue.",
    "scroll_depth": "Average of each visit's deepest scroll on the page, in percent of its height (reported on page exit).",
}
REVENUE_METRICS = ("total_revenue", "average_revenue", "revenue_unconverted")
#: Metrics of a page: only by page (and time).
PAGE_METRICS = ("time_on_page", "scroll_depth")

#: Dimensions a query can group or filter by: API name → level.
#: ``event`` dimensions are attributes of single events (a visit can have many values);
#: ``session`` dimensions are attributes of the visit (taken from its first event).
DIMENSIONS: dict[str, str] = {
    "page": "event",
    "hostname": "event",
    "event": "event",
    "entry_page": "session",
    "exit_page": "session",
    "referrer": "session",
    "referrer_domain": "session",
    "source": "session",
    "utm_source": "session",
    "utm_medium": "session",
    "utm_campaign": "session",
    "utm_term": "session",
    "utm_content": "session",
    "country": "session",
    "device": "session",
    "browser": "session",
    "browser_version": "session",
    "os": "session",
    "os_version": "session",
    "language": "session",
    "screen": "session",
    "region": "session",
    "city": "session",
    "city_name": "session",
}
PROP_PREFIX = "props:"
#: The dimension whose values are the site's goals (by display name); also a filter.
GOAL = "goal"
TIME_DIMENSIONS = ("time:hour", "time:day", "time:week", "time:month")
GRANULARITIES = ("hour", "day", "week", "month")
OPERATORS = ("is", "is_not", "contains", "not_contains", "matches", "does_not_match",
             "matches_wildcard", "does_not_match_wildcard")
#: The negative operators keep unknown (null) values; each is the negation of its positive one.
NEGATED = {"is_not": "is", "not_contains": "contains", "does_not_match": "matches",
           "does_not_match_wildcard": "matches_wildcard"}
COMPARISONS = ("previous_period", "year_over_year")
PERIODS = ("today", "yesterday", "24h", "7d", "28d", "30d", "90d", "month", "last_month", "6mo", "12mo", "year", "custom")
MAX_LIMIT = 10_000
MAX_BUCKETS = 10_000
MAX_RANGE_DAYS = 3_660
PROP_KEY = re.compile(r"^[A-Za-z0-9_.:\-$ ]{1,64}$")
MAX_FILTERS = 20


class QueryError(ValueError):
    """An invalid query; ``param`` names what was wrong (an API 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """``dimension <op> values``: ``is`` / ``is_not`` match any of ``values`` exactly;
    ``contains`` / ``not_contains`` match a case-insensitive substring of any of them;
    ``matches`` / ``does_not_match`` match a regular expression (RE2, anywhere in the value,
    ``warehouse.query.regex``); ``matches_wildcard`` / ``does_not_match_wildcard`` match a
    wildcard pattern (``*`` within a path segment, ``**`` across, the whole value;
    ``warehouse.query.patterns``). The negative operators keep values that are unknown (null)."""

    op: str
    dimension: str
    values: tuple[str, ...]

    @property
    def level(self) -> str:
        return dimension_level(self.dimension)


@dataclass(frozen=True)
class DateRange:
    """A half-open UTC interval ``[start, end)`` plus how it was asked for, in the site's zone."""

    start: datetime
    end: datetime
    timezone: str
    period: str = "custom"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def previous(self) -> DateRange:
        """The period of equal length right before this one (for ``change``)."""
        zone = self.zone
        lo, hi = self.start.astimezone(zone), self.end.astimezone(zone)
        if lo.time() == time(0) and hi.time() == time(0):
            # Whole local days: the same number of local days before (DST-proof).
            days = (hi.date() - lo.date()).days
            first = lo.date() - timedelta(days=days)
            return DateRange(_local_midnight(first, zone), self.start, self.timezone, "previous")
        length = self.end - self.start
        return DateRange(self.start - length, self.start, self.timezone, "previous")

    def year_before(self) -> DateRange:
        """The same stretch of the site's calendar one year earlier (for ``year_over_year``).

        Whole local days map to the same dates a year before (29 February to 28 February), so
        the comparison covers whole local days too, whatever DST did in between; otherwise each
        end's local wall-clock time moves back a year (an instant skipped by DST resolves the
        way ``zoneinfo`` resolves it, ``fold=0``)."""
        zone = self.zone
        lo, hi = self.start.astimezone(zone), self.end.astimezone(zone)
        if lo.time() == time(0) and hi.time() == time(0):
            first, last = _year_before(lo.date()), _year_before(hi.date())
            if last <= first:  # 29 Feb → 28 Feb alone: the range still has one day
                last = first + timedelta(days=1)
            return DateRange(_local_midnight(first, zone), _local_midnight(last, zone), self.timezone,
                             "year_over_year")
        start = datetime.combine(_year_before(lo.date()), lo.time().replace(tzinfo=None), tzinfo=zone)
        end = datetime.combine(_year_before(hi.date()), hi.time().replace(tzinfo=None), tzinfo=zone)
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            end = start + (self.end - self.start)
        return DateRange(start, end, self.timezone, "year_over_year")

    def local_start(self) -> datetime:
        return self.start.astimezone(self.zone)

    def local_end(self) -> datetime:
        return self.end.astimezone(self.zone)


@dataclass(frozen=True)
class GoalSpec:
    """A goal as queries see it: completed by a pageview whose path matches ``value`` (``page``: an
    exact path or a pattern of ``warehouse.query.patterns``) or by a custom event named ``value``
    (``event``), optionally only when its property ``prop_key`` has the text ``prop_value``.
    ``name`` is what filters and the ``goal`` dimension call it (``goal_name``)."""

    name: str
    kind: str
    value: str
    prop_key: str | None = None
    prop_value: str | None = None
    revenue: bool = False  # a revenue goal: its events carry revenue (the dashboard shows it)

    def aliases(self) -> tuple[str, ...]:
        """What a goal filter may name it by: its name; a goal without a property condition also
        by its value and ``kind:value`` (the forms before goals had names)."""
        if self.prop_key is not None:
            return (self.name,)
        return (self.name, self.value, f"{self.kind}:{self.value}")


def goal_name(kind: str, value: str, prop_key: str | None = None, prop_value: str | None = None) -> str:
    """The display name of a goal, Plausible's way: ``Visit /blog/*``, ``Signup``,
    ``Signup (plan = pro)``."""
    base = f"Visit {value}" if kind == "page" else value
    return base if prop_key is None else f"{base} ({prop_key} = {prop_value})"


def as_goal(goal: GoalSpec | tuple[str, str]) -> GoalSpec:
    """A ``GoalSpec``; a ``(kind, value)`` pair is a goal without property condition."""
    if isinstance(goal, GoalSpec):
        return goal
    kind, value = goal
    return GoalSpec(goal_name(kind, value), kind, value)


@dataclass(frozen=True)
class Currency:
    """The site's revenue currency and the owner's exchange rates into it: ``rates`` maps a
    currency code to the value of one unit of it in ``code`` (``{"USD": 0.92}`` for EUR)."""

    code: str
    rates: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Query:
    """A validated question about one site. Build it with ``parse_query``."""

    site_id: str
    date_range: DateRange
    metrics: tuple[str, ...] = ("visitors",)
    dimensions: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    order_by: tuple[tuple[str, str], ...] = ()
    limit: int = 100
    offset: int = 0
    search: str | None = None  # substring search on the first non-time dimension (``q``)
    goals: tuple[GoalSpec, ...] = ()  # the site's goals, for goal filters and the goal dimension
    imported: bool | None = None  # add imported aggregates (warehouse.query.imported); None: not asked
    currency: Currency | None = None  # the site's revenue currency, for the revenue metrics
    #: The range to compare with (``warehouse.query.compare``); its ``period`` says how it was asked
    #: for: ``previous_period``, ``year_over_year`` or ``custom``. None: no comparison.
    compare: DateRange | None = None
    segment: str | None = None  # the saved segment whose filters were added (its name, for the answer)

    @property
    def time_dimension(self) -> str | None:
        return next((d for d in self.dimensions if d.startswith("time:")), None)

    @property
    def granularity(self) -> str | None:
        t = self.time_dimension
        return t.split(":", 1)[1] if t else None

    @property
    def plain_dimensions(self) -> tuple[str, ...]:
        return tuple(d for d in self.dimensions if not d.startswith("time:"))

    def with_range(self, date_range: DateRange) -> Query:
        return replace(self, date_range=date_range)

    def without_goal_filters(self) -> Query:
        return replace(self, filters=tuple(f for f in self.filters if f.dimension != "goal"))

    def goal_filter(self) -> Filter | None:
        return next((f for f in self.filters if f.dimension == "goal"), None)

    def selected_goals(self) -> tuple[GoalSpec, ...]:
        """The goals a goal filter names (every goal of the site without one)."""
        f = self.goal_filter()
        if f is None:
            return self.goals
        return tuple(g for g in self.goals if set(g.aliases()) & set(f.values))


def dimension_level(name: str) -> str:
    if name.startswith(PROP_PREFIX):
        return "event"
    if name == "goal":
        return "goal"
    if name.startswith("time:"):
        return "time"
    return DIMENSIONS[name]


# --- parsing ---------------------------------------------------------------------------------


def _check_dimension(name: Any, param: str, allow_time: bool = True) -> str:
    if not isinstance(name, str):
        raise QueryError(param, "a dimension must be a string")
    if name in DIMENSIONS:
        return name
    if name.startswith(PROP_PREFIX):
        key = name[len(PROP_PREFIX) :]
        if not PROP_KEY.match(key):
            raise QueryError(param, f"{name!r}: property names are 1-64 letters, digits or _.:-$ ")
        return name
    if allow_time and name in TIME_DIMENSIONS:
        return name
    if allow_time and name == GOAL:
        return name
    known = ", ".join([*DIMENSIONS, "props:<name>", *((GOAL, *TIME_DIMENSIONS) if allow_time else ())])
    raise QueryError(param, f"unknown dimension {name!r}; use one of {known}")


def _check_filter(raw: Any, param: str) -> Filter:
    if isinstance(raw, Filter):
        return raw
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise QueryError(param, "each filter is [operator, dimension, [values...]]")
    op, dim, values = raw
    if op not in OPERATORS:
        raise QueryError(param, f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if dim == "goal":
        if op not in ("is",):
            raise QueryError(param, "goal filters support only 'is'")
    else:
        dim = _check_dimension(dim, param, allow_time=False)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values or len(values) > 100:
        raise QueryError(param, "filter values must be a non-empty list of at most 100 strings")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise QueryError(param, "filter values must be strings")
        text = str(v)
        if len(text) > 2000 or "\x00" in text:
            raise QueryError(param, "filter values must be at most 2000 characters, without NUL")
        problem = None
        if op in ("matches", "does_not_match"):
            problem = check_regex(text)
        elif op in ("matches_wildcard", "does_not_match_wildcard"):
            problem = check_pattern(text)
        if problem:
            raise QueryError(param, f"filter [{op!r}, {dim!r}]: {problem}")
        out.append(text)
    return Filter(op, dim, tuple(out))


def parse_filters(raw: Any, param: str = "filters") -> tuple[Filter, ...]:
    """A list of ``[op, dimension, [values]]`` filters, validated (what ``parse_query`` and saved
    segments accept)."""
    filters = tuple(_check_filter(f, param) for f in _as_list(raw, param))
    if len(filters) > MAX_FILTERS:
        raise QueryError(param, f"at most {MAX_FILTERS} filters")
    return filters


def _parse_day(text: str, param: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QueryError(param, f"{text!r} is not a date like 2024-05-01") from None


def _parse_moment(text: str, zone: ZoneInfo, param: str, is_end: bool) -> datetime:
    try:
        return _parse_moment_unchecked(text, zone, param, is_end)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, QueryError):
            raise
        raise QueryError(param, f"{text!r} is out of range") from None


def _parse_moment_unchecked(text: str, zone: ZoneInfo, param: str, is_end: bool) -> datetime:
    """A site-local date (whole day; an end date is inclusive) or an ISO datetime (UTC if it has
    an offset, else site-local; an end datetime is exclusive)."""
    if not isinstance(text, str) or not text or len(text) > 40:
        raise QueryError(param, "expected an ISO date or datetime")
    if len(text) == 10:
        day = _parse_day(text, param)
        if not 1970 <= day.year <= 2998:
            raise QueryError(param, "year must be between 1970 and 2998")
        if is_end:
            day += timedelta(days=1)
        return _local_midnight(day, zone)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(param, f"{text!r} is not an ISO date or datetime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if not 1970 <= moment.year <= 2999:
        raise QueryError(param, "year must be between 1970 and 2999")
    return moment.astimezone(UTC)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    if not 1970 <= day.year <= 2999:
        raise QueryError("date", "year must be between 1970 and 2999")
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _year_before(day: date) -> date:
    if day.month == 2 and day.day == 29:
        return date(day.year - 1, 2, 28)
    return day.replace(year=day.year - 1)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(day: date, months: int) -> date:
    m = day.month - 1 + months
    return date(day.year + m // 12, m % 12 + 1, 1)


def parse_date_range(
    timezone: str,
    period: str | None = None,
    start: str | None = None,
    end: str | None = None,
    date: str | None = None,
    now: datetime | None = None,
) -> DateRange:
    """The UTC interval a request asks for, computed in the site's time zone.

    ``start``/``end`` (custom range) win over ``period``. Periods: ``today``, ``yesterday``,
    ``24h`` (the last 24 hours), ``7d``/``28d``/``30d``/``90d`` (that many days ending with today),
    ``month`` (this calendar month so far), ``last_month``, ``6mo``/``12mo`` (calendar months ending
    with this one), ``year`` (this calendar year). ``date`` moves "today" to another day.
    Default: ``30d``.
    """
    zone = ZoneInfo(timezone)
    now = (now or datetime.now(UTC)).astimezone(zone)
    today = _parse_day(date, "date") if date else now.date()
    if not 1971 <= today.year <= 2998:
        raise QueryError("date", "year must be between 1971 and 2998")
    if start is not None or end is not None:
        if period not in (None, "", "custom"):
            raise QueryError("period", "use either period or start/end, not both")
        if start is None or end is None:
            raise QueryError("start" if start is None else "end", "a custom range needs both start and end")
        lo = _parse_moment(start, zone, "start", is_end=False)
        hi = _parse_moment(end, zone, "end", is_end=True)
        if hi <= lo:
            raise QueryError("end", "end must be after start")
        if hi - lo > timedelta(days=MAX_RANGE_DAYS):
            raise QueryError("end", f"a range may span at most {MAX_RANGE_DAYS} days")
        return DateRange(lo, hi, timezone, "custom")
    period = period or "30d"
    day_counts = {"7d": 7, "28d": 28, "30d": 30, "90d": 90}
    if period == "today":
        first, last = today, today
    elif period == "yesterday":
        first = last = today - timedelta(days=1)
    elif period == "24h":
        hi = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return DateRange(hi - timedelta(hours=24), hi, timezone, period)
    elif period in day_counts:
        first, last = today - timedelta(days=day_counts[period] - 1), today
    elif period == "month":
        first, last = _month_start(today), today
    elif period == "last_month":
        first = _add_months(_month_start(today), -1)
        last = _month_start(today) - timedelta(days=1)
    elif period in ("6mo", "12mo"):
        first, last = _add_months(_month_start(today), -(int(period[:-2]) - 1)), today
    elif period == "year":
        first, last = today.replace(month=1, day=1), today
    else:
        raise QueryError("period", f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    return DateRange(
        _local_midnight(first, zone), _local_midnight(last + timedelta(days=1), zone), timezone, period
    )


def _as_list(value: Any, param: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise QueryError(param, "expected a list")


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise QueryError(param, "expected an integer")
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: infinity
        raise QueryError(param, f"expected an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise QueryError(param, f"must be between {lo} and {hi}")
    return n


def parse_query(
    site_id: str,
    timezone: str,
    body: Mapping[str, Any],
    goals: Sequence[GoalSpec | tuple[str, str]] = (),
    now: datetime | None = None,
    currency: Currency | None = None,
    segments: Callable[[str], Any] | None = None,
) -> Query:
    """Validate a query given as JSON (the ``POST /query`` body) into a ``Query``.

    Body fields: ``metrics`` (list), ``dimensions`` (list, at most one time dimension and three
    others), ``filters`` (list of ``[op, dimension, [values]]``), ``date_range`` (a period name or
    ``[start, end]``), ``date``, ``order_by`` (list of ``[metric_or_dimension, "asc"|"desc"]``),
    ``limit``, ``offset``, ``q``, ``imported`` (add imported daily aggregates: true / false),
    ``segment`` (a saved segment's name or id: its filters are added to ``filters``; ``segments``
    looks it up and returns its filters, or ``None`` when the site has no such segment),
    ``compare`` (``previous_period``, ``year_over_year`` or ``[start, end]``: answer for that range
    too, ``warehouse.query.compare``).
    ``goals`` are the site's goals (a ``(kind, value)`` pair is a goal without property condition);
    ``currency`` its revenue currency, without which revenue metrics are refused.
    """
    if not isinstance(body, Mapping):
        raise QueryError("body", "expected a JSON object")
    known = {"metrics", "dimensions", "filters", "date_range", "date", "order_by", "limit", "offset", "q",
             "imported", "segment", "compare"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise QueryError(unknown[0], f"unknown field; known fields: {', '.join(sorted(known))}")

    metrics = _as_list(body.get("metrics", ["visitors"]), "metrics")
    if not metrics:
        raise QueryError("metrics", "ask for at least one metric")
    for m in metrics:
        if not isinstance(m, str) or m not in METRICS:
            raise QueryError("metrics", f"unknown metric {m!r}; use some of {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise QueryError("metrics", "a metric is listed twice")

    dims = [_check_dimension(d, "dimensions") for d in _as_list(body.get("dimensions"), "dimensions")]
    if len(set(dims)) != len(dims):
        raise QueryError("dimensions", "a dimension is listed twice")
    if sum(d.startswith("time:") for d in dims) > 1:
        raise QueryError("dimensions", "at most one time dimension")
    if len([d for d in dims if not d.startswith("time:")]) > 3:
        raise QueryError("dimensions", "at most three non-time dimensions")

    filters = parse_filters(body.get("filters"))
    segment = body.get("segment")
    if segment is not None:
        if not isinstance(segment, str) or not segment or len(segment) > 100:
            raise QueryError("segment", "expected a segment's name or id")
        saved = segments(segment) if segments is not None else None
        if saved is None:
            raise QueryError("segment", f"unknown segment {segment!r}; list them with GET /api/v2/sites/{{id}}/segments")
        filters = (*parse_filters(saved, "segment"), *filters)
    goal_filters = [f for f in filters if f.dimension == "goal"]
    if len(goal_filters) > 1:
        raise QueryError("filters", "at most one goal filter")
    goal_specs = tuple(as_goal(g) for g in goals)
    goal_set = {alias for g in goal_specs for alias in g.aliases()}
    for f in goal_filters:
        for v in f.values:
            if v not in goal_set:
                raise QueryError("filters", f"{v!r} is not a goal of this site")
    if "conversion_rate" in metrics and not goal_filters and "goal" not in dims:
        raise QueryError("metrics", "conversion_rate needs a goal filter, e.g. ['is', 'goal', ['Signup']], or the"
                                    " dimension 'goal'")
    if set(metrics) & set(REVENUE_METRICS) and currency is None:
        raise QueryError("metrics", "revenue metrics need the site's revenue currency: set it with PATCH"
                                    " /api/v2/sites/{site} {\"revenue\": {\"currency\": \"EUR\"}}")
    for m in PAGE_METRICS:
        if m in metrics and any(d not in ("page",) and not d.startswith("time:") for d in dims):
            raise QueryError("metrics", f"{m} can only be broken down by page")

    raw_range = body.get("date_range", "30d")
    date_arg = body.get("date")
    if date_arg is not None and not isinstance(date_arg, str):
        raise QueryError("date", "expected a date like 2024-05-01")
    if isinstance(raw_range, str):
        date_range = parse_date_range(timezone, period=raw_range, date=date_arg, now=now)
    elif isinstance(raw_range, (list, tuple)) and len(raw_range) == 2 and all(isinstance(x, str) for x in raw_range):
        date_range = parse_date_range(timezone, start=raw_range[0], end=raw_range[1], now=now)
    else:
        raise QueryError("date_range", "a period name like '7d' or [start, end]")
    if dims and (g := next((d for d in dims if d.startswith("time:")), None)):
        check_buckets(date_range, g.split(":", 1)[1], "dimensions")
    compare = parse_compare(body.get("compare"), date_range, now)
    if compare is not None and (g := next((d for d in dims if d.startswith("time:")), None)):
        check_buckets(compare, g.split(":", 1)[1], "compare")

    order_by = []
    for item in _as_list(body.get("order_by"), "order_by"):
        if not isinstance(item, (list, tuple)) or len(item) != 2 or item[1] not in ("asc", "desc"):
            raise QueryError("order_by", "each entry is [metric_or_dimension, 'asc'|'desc']")
        if item[0] not in metrics and item[0] not in dims:
            raise QueryError("order_by", f"{item[0]!r} is neither a requested metric nor dimension")
        order_by.append((str(item[0]), str(item[1])))

    limit = _int(body.get("limit", 100), "limit", 1, MAX_LIMIT)
    offset = _int(body.get("offset", 0), "offset", 0, 1_000_000)
    search = body.get("q")
    if search is not None:
        if not isinstance(search, str) or len(search) > 200:
            raise QueryError("q", "expected a search string of at most 200 characters")
        if not [d for d in dims if not d.startswith("time:")]:
            raise QueryError("q", "search needs a dimension to search in")
        search = search or None

    imported = body.get("imported")
    if imported is not None and not isinstance(imported, bool):
        raise QueryError("imported", "expected true or false")

    return Query(
        site_id=site_id,
        date_range=date_range,
        metrics=tuple(metrics),
        dimensions=tuple(dims),
        filters=filters,
        order_by=tuple(order_by),
        limit=limit,
        offset=offset,
        search=search,
        goals=goal_specs,
        imported=imported,
        currency=currency,
        compare=compare,
        segment=segment,
    )


def parse_compare(raw: Any, date_range: DateRange, now: datetime | None = None) -> DateRange | None:
    """The comparison range: ``previous_period`` (the same length right before), ``year_over_year``
    (``DateRange.year_before``) or a custom ``[start, end]`` (dates or datetimes, as ``date_range``)."""
    if raw is None:
        return None
    if raw == "previous_period":
        return replace(date_range.previous(), period="previous_period")
    if raw == "year_over_year":
        return date_range.year_before()
    if isinstance(raw, str) and "," in raw:
        raw = raw.split(",", 1)
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
        try:
            custom = parse_date_range(date_range.timezone, start=raw[0], end=raw[1], now=now)
        except QueryError as exc:
            raise QueryError("compare", exc.message) from None
        return replace(custom, period="custom")
    raise QueryError("compare", f"use one of {', '.join(COMPARISONS)} or a range [start, end]")


def check_buckets(date_range: DateRange, granularity: str, param: str) -> None:
    hours = (date_range.end - date_range.start).total_seconds() / 3600
    per = {"hour": 1, "day": 24, "week": 24 * 7, "month": 24 * 28}[granularity]
    if hours / per > MAX_BUCKETS:
        raise QueryError(param, f"too many {granularity} buckets for this range; use a coarser granularity")


# --- the query-string filter form ------------------------------------------------------------

_FILTER = re.compile(
    r"^(?P<dim>[A-Za-z_][A-Za-z0-9_]*(?::[^=!~*]{1,64})?)(?P<op>==|!=|!~=|!\*=|~=|\*=|!~|~)(?P<value>.*)$", re.S
)
#: The query-string operators (``docs/api.md``) and the query model's names for them.
URL_OPERATORS = {"==": "is", "!=": "is_not", "~": "contains", "!~": "not_contains", "~=": "matches",
                 "!~=": "does_not_match", "*=": "matches_wildcard", "!*=": "does_not_match_wildcard"}


def parse_filter_param(text: str, param: str = "filter") -> Filter:
    """``dim==a|b`` (is), ``dim!=a`` (is not), ``dim~a`` (contains), ``dim!~a`` (does not contain),
    ``dim~=regex`` (matches), ``dim!~=regex`` (does not match), ``dim*=/blog/*`` (matches the
    wildcard pattern), ``dim!*=/blog/*`` (does not match it).

    ``|`` separates alternatives (``country==DE|FR``); ``\\|`` is a literal bar. A regular
    expression is one value, its ``|`` an alternation (``page~=^/(blog|docs)/``). Property filters
    use ``props:<name>``; goals ``goal==Signup``.
    """
    m = _FILTER.match(text)
    if not m:
        raise QueryError(param, f"{text!r} is not a filter like country==DE, page!=/x, page~blog, page~=^/blog/")
    op = URL_OPERATORS[m.group("op")]
    if op in ("matches", "does_not_match"):
        values = [m.group("value")]
    else:
        values = [v.replace("\\|", "|") for v in re.split(r"(?<!\\)\|", m.group("value"))]
    if any(v == "" for v in values):
        raise QueryError(param, f"{text!r}: empty filter value")
    return _check_filter([op, m.group("dim"), values], param)


@dataclass
class QueryResult:
    """Rows of a query: ``columns`` names, ``rows`` tuples (what the runner returns)."""

    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]
