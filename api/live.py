"""``LiveBuffer``: the recent past of every site, in memory, with current stats kept incrementally.

Every worker holds one buffer, fed (through a ``LiveFeed`` source, see ``api.live_feed``) with
every accepted event of every worker, in acceptance order. It keeps:

* the events of the last 30 minutes (``EVENTS_MS``: what the top lists, the feed's resumption and
  the 5-minute active count need), capped at ``max_events_per_site`` per site and ``max_events``
  in all — when a cap is hit the oldest events go first and the stats say ``"complete": false``;
* per-visitor visit state for 90 minutes (``VISITORS_MS``: the current UTC hour plus the 30-minute
  gap that decides whether a visit is new; SPEC §5 — a visit ends after a 30-minute gap, a bounce
  is a visit with exactly one pageview and no custom event, the warehouse's ``is_bounce``), capped
  at ``max_visitors`` in all (least recently seen evicted first, from the largest site);
* hourly counters (views, custom events, visits, visitors, bounces) for this and the last hour.

Memory: about 0.55 KB per buffered event and 0.6 KB per tracked visitor (measured with
tracemalloc on CPython 3.11), so the default caps (100,000 events, 100,000 visitors) bound a
worker's buffer to roughly 115 MB at worst. Traffic under ~50 events/s (and 100,000 visitors in
90 minutes) never reaches them; above that the top lists cover less than 30 minutes (hourly
counters stay exact while the visitors fit) and the stats say so.
* sliding 5- and 30-minute windows and hourly / per-second counters, updated on every event, so
  ``stats()`` costs O(top-list size), never a scan of the buffer.

Windows slide by arrival time; an event counts in a window only if its event time (``ts``, which
may be a buffered client time) falls inside it when it arrives. Hourly figures are by event time.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from sys import intern
from typing import Any

import msgspec
import orjson

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
# SPEC §5: a visit is a run of one visitor's events with no gap over 30 minutes. The same value as
# ``warehouse.sessionize.VISIT_GAP`` (a test holds them equal); not imported from there, because
# that would load polars into every ingest worker.
VISIT_GAP_MS = 30 * MINUTE_MS
ACTIVE_MS = 5 * MINUTE_MS  # "active visitors"
RECENT_MS = 30 * MINUTE_MS  # top pages / sources / countries "right now"
EVENTS_MS = RECENT_MS  # events are kept as long as the longest window needs them
VISITORS_MS = HOUR_MS + VISIT_GAP_MS  # this hour, plus the gap that decides whether a visit is new
RETAIN_MS = VISITORS_MS  # how far back a restarting worker reloads from Parquet

DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_EVENTS_PER_SITE = 80_000
DEFAULT_MAX_VISITORS = 100_000
BATCH = 1000  # events counted in at a time; the caps are held after each batch
TOP = 10
DIRECT = "Direct / None"

Cursor = tuple[int, str, int]  # (received_at ms, WAL segment id, record index): one total order
NO_CURSOR: Cursor = (0, "", 0)


def cursor_text(key: Cursor) -> str:
    return f"{key[0]}.{key[1]}.{key[2]}"


def parse_cursor(text: str | None) -> Cursor | None:
    """The cursor of an SSE ``Last-Event-ID``; ``None`` when it is not one of ours."""
    if not text:
        return None
    received, _, rest = text.strip().partition(".")
    segment, _, index = rest.rpartition(".")
    try:
        return (int(received), segment, int(index))
    except ValueError:
        return None


_ISO_SECONDS: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """``2026-11-25T12:43:46.511Z``; the second's text is cached (this runs for every event)."""
    second, millis = divmod(ms, 1000)
    text = _ISO_SECONDS.get(second)
    if text is None:
        if len(_ISO_SECONDS) > 4096:
            _ISO_SECONDS.clear()
        text = _ISO_SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z"


class LiveEvent(msgspec.Struct, gc=False):
    """One buffered event: only what the live feed and the stats need (no IP, no raw referrer).

    Decoded straight from the WAL record (``decode_event``): the decoder builds these fields and
    skips the record's others, so nothing else of the record becomes a Python object. The fields
    after ``os`` are the buffer's own (the record's columns, ``ingest.schema``, never use those
    names). Not tracked by the garbage collector: it refers to no container that could refer
    back to it."""

    site_id: str
    ts: int
    received_at: int
    visitor: int = msgspec.field(name="visitor_key")
    type: str = "pageview"
    name: str | None = None
    page: str = msgspec.field(default="/", name="pathname")
    hostname: str | None = None
    source: str = DIRECT  # the record's; once buffered, the *visit's* (its first event's)
    country: str | None = None
    device: str = ""
    browser: str = ""
    os: str = ""
    key: Cursor = NO_CURSOR
    alive: bool = True
    serialised: bytes | None = None

    def public(self) -> dict[str, Any]:
        """What subscribers see. Never the visitor key or anything derived from the IP but country."""
        return {
            "type": self.type,
            "name": self.name,
            "page": self.page,
            "hostname": self.hostname,
            "source": self.source,
            "country": self.country,
            "device": self.device,
            "browser": self.browser,
            "os": self.os,
            "ts": self.ts,
            "time": iso_ms(self.ts),
        }

    def message(self) -> bytes:
        """The ``event`` message as JSON, serialised once and shared by every subscriber."""
        if self.serialised is None:
            self.serialised = orjson.dumps(
                {"type": "event", "id": cursor_text(self.key), "event": self.public()}
            )
        return self.serialised

    def sse(self) -> bytes:
        """The ``event`` message as an SSE frame, with its cursor as the frame's ``id``."""
        return b"id: %s\nevent: event\ndata: %s\n\n" % (cursor_text(self.key).encode(), self.message())


decode_event = msgspec.json.Decoder(LiveEvent).decode  # a WAL record's payload -> LiveEvent


def live_event(record: dict[str, Any]) -> LiveEvent:
    """A ``LiveEvent`` from a record already decoded (a raw Parquet row, a test's dict)."""
    return msgspec.convert(record, LiveEvent)


# The buffer's per-visitor and per-hour state: msgspec structs, built in C and not tracked by the
# garbage collector (none of them can be part of a reference cycle).
class Visit(msgspec.Struct, gc=False):
    start: int
    last: int
    source: str
    pageviews: int = 0
    customs: int = 0


class VisitorState(msgspec.Struct, gc=False):
    last_seen: int
    visits: list[Visit]
    hour: int  # the latest UTC hour it was counted in
    prev_hour: int = -1  # the one before (-1: none)


class HourTotals(msgspec.Struct, gc=False):
    views: int = 0
    customs: int = 0
    visitors: int = 0
    visits: int = 0
    bounces: int = 0


class _Distinct:
    """Distinct visitors per dimension value inside a sliding window: per value, each visitor's
    latest event in the window (its cursor, the very object the event holds). An event leaving
    the window (they leave in the order they came) removes its visitor from the value only if it
    was that visitor's latest with it: one dictionary store per event coming in, no count."""

    __slots__ = ("by_value",)

    def __init__(self) -> None:
        self.by_value: dict[str, dict[int, Cursor]] = {}

    def add(self, value: str, visitor: int, key: Cursor) -> None:
        seen = self.by_value.get(value)
        if seen is None:
            self.by_value[value] = {visitor: key}
        else:
            seen[visitor] = key

    def remove(self, value: str, visitor: int, key: Cursor) -> None:
        seen = self.by_value[value]
        if seen.get(visitor) is key:
            del seen[visitor]
            if not seen:
                del self.by_value[value]

    def visitors(self, value: str) -> int:
        return len(self.by_value.get(value, ()))

    def counts(self) -> dict[str, int]:
        return {value: len(seen) for value, seen in self.by_value.items()}


_ts, _visitor, _key, _second = attrgetter("ts"), attrgetter("visitor"), attrgetter("key"), itemgetter(1)


def _top(counts: dict[str, int], n: int = TOP) -> list[tuple[str, int]]:
    return heapq.nlargest(n, counts.items(), key=lambda kv: (kv[1], kv[0]))


class SiteLive:
    """The live state of one site."""

    def __init__(self, site_id: str, max_events: int) -> None:
        self.site_id = site_id
        self.max_events = max_events
        self.events: deque[LiveEvent] = deque()
        self.active: deque[LiveEvent] = deque()
        self.recent: deque[LiveEvent] = deque()
        self.active_visitors: dict[int, Cursor] = {}  # visitor -> its latest event's cursor
        self.page_views: dict[str, int] = {}
        self.pages = _Distinct()
        self.sources = _Distinct()
        self.countries = _Distinct()
        self.visitors: OrderedDict[int, VisitorState] = OrderedDict()
        self.hours: dict[int, HourTotals] = {}
        self.seconds: dict[int, list[int]] = {}  # second -> [pageviews, custom events]
        self.capped_at = 0  # arrival time of the newest event evicted by a cap, not by age
        self.version = 0  # bumped on every change; the stats publisher compares it

    # feeding -------------------------------------------------------------------------------
    def add_batch(self, batch: list[LiveEvent], now: int) -> None:
        """Count a beat's events of this site in (in feed order, their keys set). This runs for
        every event of the machine: per event, only what depends on it (the interned strings, the
        visit, the top lists, the counters); the deques and the active visitors are extended once
        per beat (see docs/realtime.md, "Cost")."""
        site_id, active_from, recent_from = self.site_id, now - ACTIVE_MS, now - RECENT_MS
        sessionize, seconds = self._sessionize, self.seconds
        views, pages, sources, countries = self.page_views, self.pages.add, self.sources.add, self.countries.add
        totals, totals_hour = HourTotals(), -1
        for event in batch:
            event.site_id = site_id
            ts, visitor, key = event.ts, event.visitor, event.key
            hour = ts // HOUR_MS
            if hour != totals_hour:
                totals, totals_hour = self._hour(ts), hour
            # Interned: every decoded record brings its own copies of the same few strings.
            event.type = etype = intern(event.type)
            event.source = source = sessionize(visitor, ts, hour, etype, intern(event.source), now, totals)
            event.page = page = intern(event.page)
            name, hostname, country = event.name, event.hostname, event.country
            event.name = intern(name) if name else None
            event.hostname = intern(hostname) if hostname else None
            event.country = country = intern(country) if country else None
            event.device = intern(event.device)
            event.browser = intern(event.browser)
            event.os = intern(event.os)
            if ts >= recent_from:
                if etype == "pageview":
                    views[page] = views.get(page, 0) + 1
                    pages(page, visitor, key)
                sources(source, visitor, key)
                countries(country or "", visitor, key)
            if etype == "pageview" or etype == "event":
                sec = seconds.get(ts // 1000)
                if sec is None:
                    sec = seconds[ts // 1000] = [0, 0]
                if etype == "pageview":
                    sec[0] += 1
                    totals.views += 1
                else:
                    sec[1] += 1
                    totals.customs += 1
        self.events.extend(batch)
        if min(map(_ts, batch)) >= active_from:  # all of them in both windows: the usual case
            self.recent.extend(batch)
            self.active.extend(batch)
            self.active_visitors.update(zip(map(_visitor, batch), map(_key, batch), strict=True))
        else:
            for event in batch:
                if event.ts >= recent_from:
                    self.recent.append(event)
                if event.ts >= active_from:
                    self.active.append(event)
                    self.active_visitors[event.visitor] = event.key  # its latest event in the window
        self.version += 1

    def _hour(self, ts: int) -> HourTotals:
        hour = ts // HOUR_MS
        totals = self.hours.get(hour)
        if totals is None:
            totals = self.hours[hour] = HourTotals()
        return totals

    def _sessionize(self, visitor: int, ts: int, hour: int, etype: str, source: str, now: int,
                    totals: HourTotals) -> str:
        """Count `ts` in its visit and hour (`totals`: the hour of `ts`); the visit's source."""
        pageview, custom = etype == "pageview", etype == "event"
        visitors = self.visitors
        state = visitors.get(visitor)
        if state is None:  # a new visitor: a new visit (the common case of a busy site)
            visitors[visitor] = VisitorState(now, [Visit(ts, ts, source, int(pageview), int(custom))], hour)
            totals.visitors += 1
            totals.visits += 1
            if pageview:  # one pageview and no custom event: a bounce so far
                totals.bounces += 1
            return source
        state.last_seen = now
        visitors.move_to_end(visitor)
        if hour != state.hour and hour != state.prev_hour:
            totals.visitors += 1
            if hour > state.hour:  # keep the two latest
                state.prev_hour, state.hour = state.hour, hour
            elif hour > state.prev_hour:
                state.prev_hour = hour
        visit = None
        for candidate in reversed(state.visits):
            if candidate.start - VISIT_GAP_MS <= ts <= candidate.last + VISIT_GAP_MS:
                visit = candidate
                break
        start_totals = totals
        if visit is None:
            visit = Visit(ts, ts, source)
            visits = state.visits
            visits.append(visit)
            if len(visits) > 1 and visits[-2].start > ts:
                visits.sort(key=lambda v: v.start)
            if len(visits) > 4:
                del visits[0]
            totals.visits += 1
            was_bounce = False
        else:
            was_bounce = visit.pageviews == 1 and visit.customs == 0
            if ts < visit.start:  # a late event moves the visit's start (and maybe its hour)
                old = self._hour(visit.start)
                if old is not totals:
                    old.visits -= 1
                    old.bounces -= was_bounce
                    totals.visits += 1
                    totals.bounces += was_bounce
                visit.start, visit.source = ts, source
            elif ts > visit.last:
                visit.last = ts
            if visit.start // HOUR_MS != hour:
                start_totals = self._hour(visit.start)
        if pageview:
            visit.pageviews += 1
        elif custom:
            visit.customs += 1
        is_bounce = visit.pageviews == 1 and visit.customs == 0
        if is_bounce != was_bounce:
            start_totals.bounces += is_bounce - was_bounce
        return visit.source

    def _leave_recent(self, e: LiveEvent) -> None:
        """`e` leaves the 30-minute window (events leave in the order they came)."""
        visitor, key = e.visitor, e.key
        if e.type == "pageview":
            page = e.page
            n = self.page_views[page] - 1
            if n > 0:
                self.page_views[page] = n
            else:
                del self.page_views[page]
            self.pages.remove(page, visitor, key)
        self.sources.remove(e.source, visitor, key)
        self.countries.remove(e.country or "", visitor, key)

    # expiry --------------------------------------------------------------------------------
    def expire(self, now: int) -> int:
        """Slide the windows and drop what is older than the retention; return events dropped."""
        changed = False
        while self.active and self.active[0].key[0] < now - ACTIVE_MS:
            e = self.active.popleft()
            self._leave_active(e)
            changed = True
        while self.recent and self.recent[0].key[0] < now - RECENT_MS:
            self._leave_recent(self.recent.popleft())
            changed = True
        dropped = 0
        while self.events and self.events[0].key[0] < now - EVENTS_MS:
            self.events.popleft().alive = False
            dropped += 1
        while self.visitors:
            visitor, state = next(iter(self.visitors.items()))
            if state.last_seen >= now - VISITORS_MS:
                break
            del self.visitors[visitor]
        current = now // HOUR_MS
        for hour in [h for h in self.hours if h < current - 1]:
            del self.hours[hour]
        second = now // 1000
        for s in [s for s in self.seconds if s < second - 120]:
            del self.seconds[s]
        if changed or dropped:
            self.version += 1
        return dropped

    def _leave_active(self, e: LiveEvent) -> None:
        if self.active_visitors.get(e.visitor) is e.key:  # its latest event in the window
            del self.active_visitors[e.visitor]

    def evict_oldest(self, n: int, now: int) -> int:
        """Drop the `n` oldest events because a memory cap was hit (the windows keep consistent
        counts); return how many were dropped."""
        events, active, recent = self.events, self.active, self.recent
        n = min(n, len(events))
        for _ in range(n):
            e = events.popleft()
            e.alive = False
            if active and active[0] is e:
                self._leave_active(active.popleft())
            if recent and recent[0] is e:
                self._leave_recent(recent.popleft())
            if e.key[0] > self.capped_at:
                self.capped_at = e.key[0]
        if n:
            self.version += 1
        return n

    # reading -------------------------------------------------------------------------------
    def stats(self, now: int) -> dict[str, Any]:
        """Current stats (SPEC §7 ``/stats/:siteId``, extended)."""
        hour = now // HOUR_MS
        totals = self.hours.get(hour, HourTotals())
        second = now // 1000
        views_min = customs_min = 0
        for s in range(second - 59, second + 1):
            counts = self.seconds.get(s)
            if counts:
                views_min += counts[0]
                customs_min += counts[1]
        oldest = self.events[0].key[0] if self.events else now
        return {
            "siteId": self.site_id,
            "time": iso_ms(now),
            "activeVisitors": len(self.active_visitors),
            "hour": {
                "start": iso_ms(hour * HOUR_MS),
                "views": totals.views,
                "visits": totals.visits,
                "visitors": totals.visitors,
                "bounceRate": round(100.0 * totals.bounces / totals.visits, 1) if totals.visits else 0.0,
                "events": totals.customs,
            },
            "lastMinute": {"views": views_min, "events": customs_min},
            "topPages": [
                {"page": page, "visitors": self.pages.visitors(page), "views": views}
                for page, views in _top(self.page_views)
            ],
            "topSources": [{"source": s, "visitors": n} for s, n in _top(self.sources.counts())],
            "topCountries": [
                {"country": c or None, "visitors": n} for c, n in _top(self.countries.counts())
            ],
            "buffer": {
                "events": len(self.events),
                "since": iso_ms(oldest),
                # False when a memory cap dropped events this stats period still needs.
                "complete": self.capped_at < min(hour * HOUR_MS, now - RECENT_MS) - VISIT_GAP_MS,
            },
        }

    def since(self, cursor: Cursor) -> Iterator[LiveEvent]:
        """Buffered events after `cursor`, in the order they were fed (for SSE resumption)."""
        # Arrival order equals cursor order except for a few late records; look a little further
        # back than the cursor so none of those is missed.
        horizon = cursor[0] - 5_000
        found: list[LiveEvent] = []
        for e in reversed(self.events):
            if e.key[0] < horizon:
                break
            if e.key > cursor:
                found.append(e)
        found.sort(key=lambda e: e.key)
        return iter(found)


class LiveBuffer:
    """Every site's ``SiteLive``, with the global memory cap."""

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_events_per_site: int = DEFAULT_MAX_EVENTS_PER_SITE,
        max_visitors: int = DEFAULT_MAX_VISITORS,
    ) -> None:
        self.max_events = max_events
        self.max_events_per_site = max_events_per_site
        self.max_visitors = max_visitors
        self.sites: dict[str, SiteLive] = {}
        self.order: deque[LiveEvent] = deque()  # every site's events in feed order (lazy deletes)
        self.size = 0
        self.visitor_count = 0
        self.evicted = 0

    def site(self, site_id: str) -> SiteLive:
        live = self.sites.get(site_id)
        if live is None:
            live = self.sites[site_id] = SiteLive(site_id, self.max_events_per_site)
        return live

    def extend(self, items: Sequence[tuple[Cursor, LiveEvent]], now: int) -> dict[str, list[LiveEvent]]:
        """Count a beat's events in, in feed order, then hold the caps; return them by site.
        More than ``BATCH`` events (a backlog: the recent past at start, a catch-up) go in
        ``BATCH`` at a time, so the caps are never exceeded by more."""
        if len(items) > BATCH:
            out: dict[str, list[LiveEvent]] = {}
            for start in range(0, len(items), BATCH):
                for site_id, events in self.extend(items[start:start + BATCH], now).items():
                    out.setdefault(site_id, []).extend(events)
            return out
        by_site: dict[str, list[LiveEvent]] = {}
        for key, event in items:
            event.key = key
            batch = by_site.get(event.site_id)
            if batch is None:
                by_site[event.site_id] = [event]
            else:
                batch.append(event)
        sites = self.sites
        for site_id, batch in by_site.items():
            live = sites.get(site_id) or self.site(site_id)
            known = len(live.visitors)
            live.add_batch(batch, now)
            self.visitor_count += len(live.visitors) - known
            if len(live.events) > self.max_events_per_site:
                self._evicted(live.evict_oldest(len(live.events) - self.max_events_per_site, now))
        self.order.extend(map(_second, items))
        self.size += len(items)
        if self.size > self.max_events:
            self._evict_events(now)
        if len(self.order) > 2 * max(self.size, BATCH):
            # Events a site evicted (its own cap) or expired stay here until they reach the front;
            # behind a quieter site's older event they would pile up without bound.
            self.order = deque(e for e in self.order if e.alive)
        if self.visitor_count > self.max_visitors:
            self._evict_visitors(now)
        return by_site

    def add(self, event: LiveEvent, key: Cursor, now: int) -> LiveEvent:
        self.extend([(key, event)], now)
        return event

    def _evict_events(self, now: int) -> None:
        """Drop the oldest events of the machine down to the cap (oldest first, whatever the site)."""
        excess, order = self.size - self.max_events, self.order
        of_site: dict[str, int] = {}
        while excess > 0 and order:
            oldest = order.popleft()
            if oldest.alive:  # then it is the oldest of its site too
                of_site[oldest.site_id] = of_site.get(oldest.site_id, 0) + 1
                excess -= 1
        for site_id, n in of_site.items():
            self._evicted(self.sites[site_id].evict_oldest(n, now))

    def _evict_visitors(self, now: int) -> None:
        """Forget the least recently seen visitors of the site that tracks the most visitors,
        down to 1 % under the cap: the largest site is looked for once per batch, not once per
        event while the cap holds."""
        target = self.max_visitors - self.max_visitors // 100
        while self.visitor_count > target:
            largest = max(self.sites.values(), key=lambda live: len(live.visitors))
            n = min(self.visitor_count - target, max(1, len(largest.visitors) // 10))
            for _ in range(n):
                largest.visitors.popitem(last=False)
            largest.capped_at = now
            self.visitor_count -= n

    def _evicted(self, n: int) -> None:
        self.size -= n
        self.evicted += n

    def expire(self, now: int) -> None:
        for site_id, live in list(self.sites.items()):
            known = len(live.visitors)
            self.size -= live.expire(now)
            self.visitor_count -= known - len(live.visitors)
            if not live.events and not live.visitors:
                del self.sites[site_id]
        while self.order and not self.order[0].alive:
            self.order.popleft()

    def stats(self, site_id: str, now: int) -> dict[str, Any]:
        live = self.sites.get(site_id)
        if live is None:
            return SiteLive(site_id, 0).stats(now)
        return live.stats(now)
