"""Synthetic traffic with known ground truth, for warehouse and query API tests and benchmarks.

The generator builds *visits* first and then their events, so the truth (which events form which
visit, how many visitors, bounces, durations, sources, ...) is known by construction rather than
computed by the code under test. Everything is vectorized (numpy + polars): 10 M events take
seconds.

    traffic = generate(TrafficSpec(visitors=200, days=3, seed=1))
    traffic.write_raw(raw_dir)                 # all at once, or
    for k in range(traffic.spec.loads):        # in arrival order, one load's files at a time
        traffic.write_raw(raw_dir, load=k)
    traffic.visits                              # truth: one row per visit (``sessions`` columns)
    traffic.events                              # every event (raw schema + ``visit_id``, ``load``)

How visits are laid out (SPEC §5):

* each visitor has 1+ visits; consecutive visits of a visitor are separated by more than 30
  minutes after the previous visit's last event; events inside a visit are at most 30 minutes
  apart (some exactly 30:00, the boundary that still continues a visit);
* a visit is 1+ pageviews with custom events in between, optionally ended by a ``page_exit``
  carrying the final page's engagement time (``engagement_ms``) — sometimes over 30 minutes after
  the previous event (a page left open in a background tab), still part of the visit;
* only the first event of a visit carries the referrer, source and UTM tags (later pageviews have an
  own-domain referrer, hence ``Direct / None``), so "of the first event" is tested;
* a share of visits is started shortly before a site-local midnight, so they cross it;
* arrival: the time range is cut into ``loads`` consecutive slices; an event arrives with the slice
  its ``ts`` falls in, except ``late_fraction`` of events that arrive 1–3 slices later (late and
  out of order, often in an older hour partition); ``duplicate_fraction`` of events are written a
  second time in another file of a later slice (a re-delivered event the loader must drop).

Event ids are strings that sort like UUIDv7 ids (time first, then a sequence number).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ingest.schema import RAW_EVENT_SCHEMA
from ingest.seal import write_parquet_atomic

MINUTE_MS = 60_000
GAP_MS = 30 * MINUTE_MS

PAGES = [f"/page/{i}" for i in range(40)] + ["/", "/pricing", "/blog", "/docs", "/signup"]
# (source, referrer, referrer_domain, utm_source, utm_medium, utm_campaign)
SOURCES = [
    ("Direct / None", None, None, None, None, None),
    ("Google", "https://www.google.com/", "google.com", None, None, None),
    ("Twitter", "https://t.co/abc", "t.co", None, None, None),
    ("news.example.org", "https://news.example.org/item", "news.example.org", None, None, None),
    ("newsletter", None, None, "newsletter", "email", "spring"),
    ("Facebook", "https://facebook.com/", "facebook.com", "Facebook", "social", "launch"),
]
SOURCE_WEIGHTS = [0.4, 0.25, 0.1, 0.1, 0.1, 0.05]
COUNTRIES = ["DE", "US", "FR", "GB", None]
# Each country's place (region, GeoNames id, city name), as a city database would give it; France's
# visitors have a country only, as with a country database.
PLACES = [("DE-BE", "2950159", "Berlin"), ("US-CA", "5368361", "Los Angeles"), (None, None, None),
          ("GB-ENG", "2643743", "London"), (None, None, None)]
DEVICES = [("desktop", "Firefox", "Linux"), ("desktop", "Chrome", "Windows"),
           ("mobile", "Mobile Safari", "iOS"), ("mobile", "Chrome Mobile", "Android"),
           ("tablet", "Samsung Internet", "Android")]
SCREENS = ["1920x1080", "390x844", "1280x800", None]
LANGUAGES = ["en-US", "de-DE", "fr-FR", None]
EVENT_NAMES = ["Signup", "Download", "Outbound Link: Click", "Play"]
PLANS = ["free", "pro", "team"]
#: Revenue: every ``Signup`` with a paid plan carries an amount in one of these currencies.
REVENUE_EVENT = "Signup"
CURRENCIES = ["EUR", "USD", "GBP", "JPY"]


@dataclass(frozen=True)
class TrafficSpec:
    """What to generate. Sizes are approximate except ``visitors``."""

    visitors: int = 100
    days: float = 2.0
    start: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    sites: tuple[str, ...] = ("site-a", "site-b")
    #: mean visits per visitor (geometric) and mean pageviews per visit (geometric)
    visits_per_visitor: float = 2.0
    pageviews_per_visit: float = 2.5
    custom_event_rate: float = 0.3
    page_exit_rate: float = 0.7
    #: share of page_exits sent over 30 minutes after the previous event (a page left open in a
    #: background tab): they still belong to their visit
    long_exit_rate: float = 0.05
    midnight_rate: float = 0.05
    #: site time zones: a visit "crosses midnight" in this zone
    timezones: dict[str, str] = field(default_factory=lambda: {"site-a": "UTC", "site-b": "Europe/Berlin"})
    loads: int = 4
    late_fraction: float = 0.05
    duplicate_fraction: float = 0.01
    seed: int = 0


@dataclass
class Traffic:
    """Generated events and the truth about them."""

    spec: TrafficSpec
    #: every event: the raw schema columns + ``visit_id`` (truth) + ``load`` (arrival slice)
    events: pl.DataFrame
    #: duplicates to re-deliver: ``event_id`` and the ``load`` they arrive with again
    duplicates: pl.DataFrame
    #: truth: one row per visit with the ``sessions`` columns
    visits: pl.DataFrame

    @property
    def event_count(self) -> int:
        return self.events.height

    def write_raw(self, raw_dir: Path, load: int | None = None, label: str = "all") -> list[Path]:
        """Write the events arriving with ``load`` (all when ``None``) as raw hourly Parquet files.

        Files follow the ingest layout and are written with ``ingest.seal.write_parquet_atomic``;
        their names carry the seed and the load (or ``label`` when ``load`` is ``None``), so
        different writes into one partition never replace each other's files.
        """
        events = self.events if load is None else self.events.filter(pl.col("load") == load)
        dups = self.duplicates if load is None else self.duplicates.filter(pl.col("load") == load)
        when = label if load is None else f"{load:03d}"
        paths = _write(events, raw_dir, f"gen{self.spec.seed}-{when}")
        if dups.height:
            again = self.events.join(dups.select("event_id"), on="event_id", how="semi")
            paths += _write(again, raw_dir, f"dup{self.spec.seed}-{when}")
        return paths


def _write(events: pl.DataFrame, raw_dir: Path, tag: str) -> list[Path]:
    paths: list[Path] = []
    if events.height == 0:
        return paths
    keyed = events.with_columns(pl.col("ts").dt.truncate("1h").alias("_hour"))
    for (site_id, hour), part in keyed.partition_by(["site_id", "_hour"], as_dict=True).items():
        assert isinstance(hour, datetime)
        path = (raw_dir / f"site_id={site_id}" / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
                / f"part-{tag}.parquet")
        write_parquet_atomic(to_raw_table(part.sort("ts", "event_id")), path)
        paths.append(path)
    return paths


def to_raw_table(events: pl.DataFrame) -> pa.Table:
    """Generated events as an Arrow table of exactly ``ingest.schema.RAW_EVENT_SCHEMA``."""
    arrays = []
    for f in RAW_EVENT_SCHEMA:
        if f.name == "props_str":
            arrays.append(_map(events, "plan", pa.string()))
        elif f.name == "props_num":
            arrays.append(_map(events, "amount", pa.float64()))
        elif f.name == "props_bool":
            arrays.append(_map(events, "trial", pa.bool_()))
        else:
            arrays.append(events[f.name].to_arrow().cast(f.type))
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def _map(events: pl.DataFrame, key: str, type_: pa.DataType) -> pa.Array:
    values = events[f"_prop_{key}"]
    present = values.is_not_null().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(present)]).astype(np.int32)
    keys = pa.array([key] * int(present.sum()), pa.string())
    items = values.filter(values.is_not_null()).to_arrow().cast(type_)
    mask = pa.array(~present)
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items, mask=mask)


def generate(spec: TrafficSpec) -> Traffic:
    """Generate traffic for ``spec`` (deterministic for a given seed)."""
    rng = np.random.default_rng(spec.seed)
    start_ms = int(spec.start.timestamp() * 1000)
    span_ms = int(spec.days * 86_400_000)

    # Visitors -----------------------------------------------------------------------------
    n_visitors = spec.visitors
    visitor_keys = np.unique(rng.integers(1, 2**63, size=n_visitors * 2, dtype=np.int64).astype(np.uint64))
    visitor_keys = rng.permutation(visitor_keys)[:n_visitors]
    visitor_site = rng.integers(0, len(spec.sites), size=n_visitors)
    visits_per = rng.geometric(1 / spec.visits_per_visitor, size=n_visitors)

    # Visits -------------------------------------------------------------------------------
    n_visits = int(visits_per.sum())
    v_visitor = np.repeat(np.arange(n_visitors), visits_per)
    v_index = np.arange(n_visits) - np.repeat(np.cumsum(visits_per) - visits_per, visits_per)
    n_pv = rng.geometric(1 / spec.pageviews_per_visit, size=n_visits)
    n_ce = rng.binomial(n_pv, spec.custom_event_rate)
    has_exit = rng.random(n_visits) < spec.page_exit_rate
    n_ev = n_pv + n_ce + has_exit

    # Events of each visit, in order: pageviews and custom events interleaved, then page_exit.
    n_events = int(n_ev.sum())
    e_visit = np.repeat(np.arange(n_visits), n_ev)
    e_pos = np.arange(n_events) - np.repeat(np.cumsum(n_ev) - n_ev, n_ev)
    e_is_exit = has_exit[e_visit] & (e_pos == n_ev[e_visit] - 1)
    # position 0 is always a pageview; custom events take random later positions
    ce_prob = np.where(n_pv + n_ce > 1, n_ce / np.maximum(n_pv + n_ce - 1, 1), 0)[e_visit]
    e_is_ce = (~e_is_exit) & (e_pos > 0) & (rng.random(n_events) < ce_prob)

    # Gaps inside a visit: 0..30 min, a few exactly 30:00 (still the same visit).
    gaps = rng.exponential(2 * MINUTE_MS, size=n_events).astype(np.int64).clip(0, GAP_MS)
    gaps[rng.random(n_events) < 0.02] = GAP_MS
    gaps[e_pos == 0] = 0
    engagement = np.where(e_is_exit, rng.integers(1000, 20 * MINUTE_MS, size=n_events), 0)
    gaps = np.where(e_is_exit, engagement, gaps)
    # pages left open in a background tab: the exit comes long after, with the visible time only
    long_exit = e_is_exit & (rng.random(n_events) < spec.long_exit_rate)
    gaps = np.where(long_exit, GAP_MS + 1 + rng.exponential(GAP_MS, size=n_events).astype(np.int64), gaps)
    offset_in_visit = _cumsum_by_group(gaps, e_pos == 0)
    visit_len = offset_in_visit[np.cumsum(n_ev) - 1]

    # Visit start times: each visitor's visits follow each other with gaps > 30 min.
    between = (GAP_MS + 1 + rng.exponential(span_ms / (2 * spec.visits_per_visitor), size=n_visits)).astype(np.int64)
    between[v_index == 0] = 0
    prev_len = np.concatenate([[0], visit_len[:-1]])
    prev_len[v_index == 0] = 0
    rel_start = _cumsum_by_group(prev_len + between, v_index == 0)
    first_start = start_ms + rng.integers(0, span_ms, size=n_visitors)
    # some visitors start their first visit shortly before a local midnight
    midnight = rng.random(n_visitors) < spec.midnight_rate
    first_start = np.where(midnight, _before_midnight(
        first_start, [spec.timezones.get(s, "UTC") for s in spec.sites], visitor_site, rng
    ), first_start)
    v_start = first_start[v_visitor] + rel_start
    e_ts = v_start[e_visit] + offset_in_visit

    # Visit attributes --------------------------------------------------------------------
    src = rng.choice(len(SOURCES), size=n_visits, p=SOURCE_WEIGHTS)
    dev = rng.integers(0, len(DEVICES), size=n_visitors)[v_visitor]
    country = rng.integers(0, len(COUNTRIES), size=n_visitors)[v_visitor]
    screen = rng.integers(0, len(SCREENS), size=n_visits)
    lang = rng.integers(0, len(LANGUAGES), size=n_visits)
    page = rng.integers(0, len(PAGES), size=n_events)
    # page_exit reports the page it leaves: the previous event's page
    page = np.where(e_is_exit, np.concatenate([[0], page[:-1]]), page)
    first = e_pos == 0

    first_s = pl.Series(first)

    def col(values: list, idx: np.ndarray, only_first: bool = False, default: str | None = None) -> pl.Series:
        picked = pl.Series(values, dtype=pl.String).gather(idx)
        if only_first:
            picked = pl.select(pl.when(first_s).then(picked).otherwise(pl.lit(default, pl.String))).to_series()
        return picked

    def const(value: str | None) -> pl.Series:
        return pl.repeat(value, n_events, dtype=pl.String, eager=True)

    def only(mask: np.ndarray, values: pl.Series) -> pl.Series:
        return pl.select(pl.when(pl.Series(mask)).then(values).otherwise(None)).to_series()

    seq = np.arange(n_events)
    ts_ms = pl.Series(e_ts)
    event_id = pl.concat_str([
        pl.lit("0"), ts_ms.cast(pl.String).str.zfill(13), pl.lit("-"),
        pl.Series(seq).cast(pl.String).str.zfill(10), pl.lit(f"-{spec.seed:04d}")
    ])
    src_e = src[e_visit]
    events = pl.DataFrame({
        "event_id": pl.select(event_id).to_series(),
        "site_id": col(list(spec.sites), visitor_site[v_visitor[e_visit]]),
        "ts": ts_ms.cast(pl.Datetime("ms", "UTC")),
        "type": col(["pageview", "event", "page_exit"], np.where(e_is_exit, 2, np.where(e_is_ce, 1, 0))),
        "name": only(e_is_ce, col(EVENT_NAMES, rng.integers(0, len(EVENT_NAMES), size=n_events))),
        "visitor_key": pl.Series(visitor_keys[v_visitor[e_visit]], dtype=pl.UInt64),
        "visitor_key_source": const("tracker"),
        "hostname": const("example.com"),
        "pathname": col(PAGES, page),
        "query": const(None),
        "title": const(None),
        "referrer": col([s[1] for s in SOURCES], src_e, True),
        "referrer_domain": col([s[2] for s in SOURCES], src_e, True),
        "source": col([s[0] for s in SOURCES], src_e, True, "Direct / None"),
        "utm_source": col([s[3] for s in SOURCES], src_e, True),
        "utm_medium": col([s[4] for s in SOURCES], src_e, True),
        "utm_campaign": col([s[5] for s in SOURCES], src_e, True),
        "utm_term": const(None),
        "utm_content": const(None),
        "country": col(COUNTRIES, country[e_visit]),
        "device": col([d[0] for d in DEVICES], dev[e_visit]),
        "browser": col([d[1] for d in DEVICES], dev[e_visit]),
        "browser_version": const("120.0"),
        "os": col([d[2] for d in DEVICES], dev[e_visit]),
        "os_version": const(None),
        "screen": col(SCREENS, screen[e_visit]),
        "language": col(LANGUAGES, lang[e_visit]),
        "timezone": const(None),
        "engagement_ms": only(e_is_exit, pl.Series(engagement, dtype=pl.Int64)),
        "user_id": const(None),
        "region": col([p[0] for p in PLACES], country[e_visit]),
        "city": col([p[1] for p in PLACES], country[e_visit]),
        "city_name": col([p[2] for p in PLACES], country[e_visit]),
        # derived from the engagement, so the generator's random sequence is unchanged
        "scroll_depth": only(e_is_exit, pl.Series(engagement // 1000 % 101, dtype=pl.Int16)),
        "_prop_plan": only(e_is_ce, col(PLANS, rng.integers(0, len(PLANS), size=n_events))),
        "_prop_amount": only(e_is_ce, pl.Series(rng.integers(1, 100, size=n_events).astype(float))),
        "_prop_trial": only(e_is_ce, pl.Series(rng.random(n_events) < 0.5)),
        "visit_id": pl.Series(e_visit, dtype=pl.Int64),
    })
    events = events.with_columns(pl.col("ts").alias("received_at"))
    # Revenue from a generator of its own, so the draws above stay what they were.
    money = np.random.default_rng(spec.seed + 1_000_003)
    paid = ((events["name"] == REVENUE_EVENT) & events["_prop_plan"].is_in(["pro", "team"])).fill_null(False)
    events = events.with_columns(
        only(paid.to_numpy(), pl.Series(np.round(money.uniform(1, 500, size=n_events), 2))).alias("revenue_amount"),
        only(paid.to_numpy(), col(CURRENCIES, money.integers(0, len(CURRENCIES), size=n_events))).alias("revenue_currency"),
    )

    # Arrival ------------------------------------------------------------------------------
    slice_ms = span_ms / spec.loads + 1
    natural = np.clip(((e_ts - start_ms) // slice_ms).astype(np.int64), 0, spec.loads - 1)
    late = rng.random(n_events) < spec.late_fraction
    load = np.minimum(natural + np.where(late, rng.integers(1, 4, size=n_events), 0), spec.loads - 1)
    events = events.with_columns(pl.Series("load", load))
    dup_mask = rng.random(n_events) < spec.duplicate_fraction
    dup_load = np.minimum(load + rng.integers(0, 2, size=n_events), spec.loads - 1)
    duplicates = pl.DataFrame({"event_id": events["event_id"].filter(pl.Series(dup_mask)),
                               "load": pl.Series(dup_load[dup_mask])})
    return Traffic(spec, events, duplicates, truth_visits(events))


def truth_visits(events: pl.DataFrame) -> pl.DataFrame:
    """The visits, from the generator's own ``visit_id`` (never from the code under test)."""
    ev = events.sort("visit_id", "ts", "event_id")
    is_pv = pl.col("type") == "pageview"
    is_exit = pl.col("type") == "page_exit"
    visits = ev.group_by("visit_id", maintain_order=True).agg(
        pl.col("site_id").first(),
        pl.col("event_id").first().alias("session_id"),
        pl.col("visitor_key").first(),
        pl.col("ts").first().alias("started_at"),
        pl.col("ts").last().alias("ended_at"),
        pl.col("pathname").filter(is_pv).first().alias("entry_page"),
        pl.col("pathname").filter(is_pv).last().alias("exit_page"),
        is_pv.sum().cast(pl.Int32).alias("pageviews"),
        (pl.col("type") == "event").sum().cast(pl.Int32).alias("custom_events"),
        pl.len().cast(pl.Int32).alias("events"),
        pl.col("engagement_ms").filter(is_exit).sum().cast(pl.Int64).alias("engagement_ms"),
        pl.col("ts").filter(~is_exit).last().alias("_last"),
        pl.col("ts").filter(is_pv).last().alias("_last_pv"),
        *(pl.col(c).first() for c in ("referrer", "referrer_domain", "source", "utm_source",
                                       "utm_medium", "utm_campaign", "utm_term", "utm_content",
                                       "country", "device", "browser", "browser_version", "os",
                                       "os_version", "screen", "language")),
    )
    return visits.with_columns(
        pl.max_horizontal(
            (pl.col("_last") - pl.col("started_at")).dt.total_milliseconds(),
            (pl.col("_last_pv") - pl.col("started_at")).dt.total_milliseconds() + pl.col("engagement_ms"),
        ).alias("duration_ms"),
        ((pl.col("pageviews") == 1) & (pl.col("custom_events") == 0)).alias("is_bounce"),
        (pl.col("started_at") == pl.col("started_at").min().over("site_id", "visitor_key")).alias("is_new"),
    ).drop("_last", "_last_pv")


def _cumsum_by_group(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarting at every ``starts`` position (first must be True)."""
    total = np.cumsum(values)
    start_of = np.maximum.accumulate(np.where(starts, np.arange(len(values)), 0))
    return total - (total - values)[start_of]


def _before_midnight(ts_ms: np.ndarray, zones: list[str], site_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each time moved to 1–20 minutes before the next local midnight of its site's zone."""
    from zoneinfo import ZoneInfo

    out = ts_ms.copy()
    for i, zone in enumerate(zones):
        mask = site_idx == i
        if not mask.any():
            continue
        local = pl.Series(ts_ms[mask]).cast(pl.Datetime("ms", "UTC")).dt.convert_time_zone(zone)
        next_midnight = local.dt.truncate("1d").dt.offset_by("1d").dt.convert_time_zone("UTC")
        moved = next_midnight.cast(pl.Int64).to_numpy() - rng.integers(MINUTE_MS, 20 * MINUTE_MS, size=int(mask.sum()))
        out[mask] = moved
        assert ZoneInfo(zone)
    return out


def visits_per_day_truth(traffic: Traffic, tz: dict[str, str]) -> pl.DataFrame:
    """Truth: distinct visitors per (site, site-local date) with any event that day."""
    frames = []
    for site, part in traffic.events.partition_by("site_id", as_dict=True).items():
        zone = tz.get(str(site[0]), "UTC")
        frames.append(part.select(
            "site_id", "visitor_key",
            pl.col("ts").dt.convert_time_zone(zone).dt.date().alias("local_date"),
        ))
    return pl.concat(frames).group_by("site_id", "local_date").agg(
        pl.col("visitor_key").n_unique().alias("visitors")
    ).sort("site_id", "local_date")
