"""Sessionization (SPEC §5) as pure polars frame-to-frame functions.

A **visit** is a run of one visitor's events on one site, ordered by ``(ts, event_id)``, with no
gap over 30 minutes: an event more than 30 minutes after the previous event of the same
``(site_id, visitor_key)`` starts a new visit; exactly 30 minutes continues it. Events of every
type take part (heartbeats keep a visit open while the page is read), except that an engagement
report (``page_exit``, ``engagement``) never starts a visit: sent after a page stayed open for over
30 minutes, it still belongs to the visit of that page (as in Plausible, where engagement events
cannot create a session). Only a visitor's very first event can start a visit with one.

Per visit (see ``warehouse.tables.SESSIONS`` for the column docs):

* ``session_id`` — the ``event_id`` of the first event, so re-running gives the same ids;
* ``entry_page`` / ``exit_page`` — path of the first / last pageview (first / last event when the
  visit has no pageview);
* ``engagement_ms`` — the final page's reported engagement: the largest ``engagement_ms`` of
  ``page_exit`` / ``engagement`` events after the last pageview (0 when none). A report in the
  same millisecond as the last pageview is the previous page's: the tracker sends a page's exit
  just before the next page's view, often within one millisecond;
* ``duration_ms`` — from the first event to whichever ends later: the last activity event
  (``pageview``, ``event``, ``identify``) or the last pageview plus the final page's
  ``engagement_ms``. The engagement is the page's total visible time since its pageview, so a
  custom event on that page is not counted twice; heartbeats and exits do not stretch it by their
  own timestamps;
* ``is_bounce`` — exactly one pageview and no custom event. Engagement time does not matter;
* referrer, source, UTM, device, browser, OS, country, language, screen, region, city — of the first
  event;
* ``is_new`` — the visitor's first visit on the site: the first visit in the frame and the
  visitor not among ``returning`` (visitors with an earlier visit already loaded).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from warehouse.tables import ACQUISITION, CLIENT, GEO, SESSIONS

VISIT_GAP = timedelta(minutes=30)
ACTIVITY_TYPES = ("pageview", "event", "identify")
ENGAGEMENT_TYPES = ("page_exit", "engagement")
FIRST_EVENT_COLUMNS = ("hostname", *(c.name for c in ACQUISITION), *(c.name for c in CLIENT),
                       *(c.name for c in GEO))

#: Columns ``assign_sessions`` needs (the raw event columns minus custom properties).
REQUIRED = ("event_id", "site_id", "ts", "type", "visitor_key", "pathname", "engagement_ms",
            "user_id", *FIRST_EVENT_COLUMNS)


# Each visitor's events on one site, contiguous and in time order. The 64-bit visitor key leads:
# polars sorts on it first and rarely needs the string keys (2.5x faster than site first).
_ORDER = ["visitor_key", "site_id", "ts", "event_id"]
_KEYS = ("site_id", "visitor_key", "ts", "event_id", "type", "pathname", "engagement_ms", "user_id")


def _ordered_keys(events: pl.DataFrame) -> pl.DataFrame:
    """The columns visits depend on, sorted, with ``_row`` (input position), ``_start`` (first
    event of a visit) and ``_visit`` (visit ordinal). Only these few columns are sorted; the
    wide event rows are never reordered."""
    keys = events.select(_KEYS).with_row_index("_row").sort(_ORDER)
    same_visitor = (pl.col("site_id") == pl.col("site_id").shift(1)) & (
        pl.col("visitor_key") == pl.col("visitor_key").shift(1)
    )
    within_gap = (pl.col("ts") - pl.col("ts").shift(1)) <= VISIT_GAP
    # An engagement report never starts a visit: it belongs to the visit it reports on, however
    # long the page stayed open before it was sent.
    continues = same_visitor & (within_gap | pl.col("type").is_in(ENGAGEMENT_TYPES))
    keys = keys.with_columns((~continues.fill_null(False)).alias("_start"))
    keys = keys.with_columns(pl.col("_start").cum_sum().cast(pl.UInt32).alias("_visit"))
    first_ids = keys.filter(pl.col("_start"))["event_id"]
    return keys.with_columns(first_ids.gather(keys["_visit"] - 1).alias("session_id"))


def _ids_in_input_order(keys: pl.DataFrame) -> pl.Series:
    return keys.select("_row", "session_id").sort("_row")["session_id"]


def assign_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """The events (in their input order) with a ``session_id`` column.

    ``events`` must hold every event of each visitor in the time span that matters (the loader
    hands over an affected visitor's stored events around the new ones).
    """
    return events.with_columns(_ids_in_input_order(_ordered_keys(events)))


def summarize_sessions(
    events: pl.DataFrame, returning: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per visit of ``events`` (as ``assign_sessions`` returns them).

    ``returning`` has columns ``site_id``, ``visitor_key``: visitors known to have visited before
    the earliest event in ``events``. The result has exactly the columns of the ``sessions`` table.
    """
    return _summarize(events, _ordered_keys(events.drop("session_id", strict=False)), returning)


def sessionize(
    events: pl.DataFrame, returning: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events with ``session_id`` and the visits they form: ``(events, sessions)``."""
    keys = _ordered_keys(events)
    return events.with_columns(_ids_in_input_order(keys)), _summarize(events, keys, returning)


def _summarize(
    events: pl.DataFrame, keys: pl.DataFrame, returning: pl.DataFrame | None
) -> pl.DataFrame:
    # ``keys`` is sorted by visit, so every aggregate below is a plain first/last/sum/max over
    # contiguous groups (polars' sorted fast path); filters are applied to rows before grouping,
    # never inside an aggregation.
    k = keys.lazy().with_columns(pl.col("_visit").set_sorted())
    is_pv = pl.col("type") == "pageview"

    def per_visit(rows: pl.LazyFrame, *aggs: pl.Expr) -> pl.LazyFrame:
        return rows.group_by("_visit", maintain_order=True).agg(*aggs).with_columns(
            pl.col("_visit").set_sorted())

    totals = per_visit(
        k,
        pl.col("ts").first().alias("_first_ts"),
        pl.col("ts").last().alias("ended_at"),
        is_pv.sum().cast(pl.Int32).alias("pageviews"),
        (pl.col("type") == "event").sum().cast(pl.Int32).alias("custom_events"),
        pl.len().cast(pl.Int32).alias("events"),
        pl.col("pathname").first().alias("_first_path"),
        pl.col("pathname").last().alias("_last_path"),
    )
    pageviews = per_visit(
        k.filter(is_pv),
        pl.col("pathname").first().alias("_entry_pv"),
        pl.col("pathname").last().alias("_exit_pv"),
        pl.col("ts").last().alias("_last_pv_ts"),
    )
    activity = per_visit(k.filter(pl.col("type").is_in(ACTIVITY_TYPES)),
                         pl.col("ts").last().alias("_last_activity_ts"))
    users = per_visit(k.filter(pl.col("user_id").is_not_null()), pl.col("user_id").last())
    visits = (
        totals.join(pageviews, on="_visit", how="left")
        .join(activity, on="_visit", how="left")
        .join(users, on="_visit", how="left")
        .with_columns(
            pl.coalesce("_entry_pv", "_first_path").alias("entry_page"),
            pl.coalesce("_exit_pv", "_last_path").alias("exit_page"),
            pl.coalesce("_last_activity_ts", "_first_ts").alias("_last_activity"),
            pl.coalesce("_last_pv_ts", "_first_ts").alias("_last_pageview"),
        )
    )
    # the final page's engagement: reports after the visit's last pageview (one in the same
    # millisecond is the exit of the page before it); without a pageview, every report
    engagement = per_visit(
        k.filter(pl.col("type").is_in(ENGAGEMENT_TYPES))
        .join(visits.select("_visit", "_last_pageview", "_last_pv_ts"), on="_visit", how="inner")
        .filter((pl.col("ts") > pl.col("_last_pageview")) | pl.col("_last_pv_ts").is_null()),
        pl.col("engagement_ms").max().alias("_engagement"),
    )
    visits = visits.join(engagement, on="_visit", how="left").with_columns(
        pl.col("_engagement").fill_null(0).cast(pl.Int64).alias("engagement_ms"))

    starts = keys.filter(pl.col("_start"))
    first = pl.concat([
        starts.select("_visit", "session_id", "site_id", "visitor_key",
                      pl.col("ts").alias("started_at")),
        events.select(FIRST_EVENT_COLUMNS).gather(starts["_row"]),
    ], how="horizontal")
    sessions = first.join(visits.collect(), on="_visit", how="inner").sort("_visit")
    # the visitor's first visit in the frame (each visitor's visits on a site are contiguous and
    # in time order here)
    sessions = sessions.with_columns((~(
        (pl.col("site_id") == pl.col("site_id").shift(1))
        & (pl.col("visitor_key") == pl.col("visitor_key").shift(1))
    ).fill_null(False)).alias("_first_in_frame"))
    if returning is not None and returning.height:
        known = returning.select("site_id", "visitor_key").unique().with_columns(
            pl.lit(True).alias("_returning")
        )
        sessions = sessions.join(known, on=["site_id", "visitor_key"], how="left")
    else:
        sessions = sessions.with_columns(pl.lit(None, pl.Boolean).alias("_returning"))
    sessions = sessions.with_columns(
        pl.max_horizontal(
            (pl.col("_last_activity") - pl.col("started_at")).dt.total_milliseconds(),
            (pl.col("_last_pageview") - pl.col("started_at")).dt.total_milliseconds()
            + pl.col("engagement_ms"),
        ).alias("duration_ms"),
        ((pl.col("pageviews") == 1) & (pl.col("custom_events") == 0)).alias("is_bounce"),
        (pl.col("_first_in_frame") & pl.col("_returning").is_null()).alias("is_new"),
    )
    return sessions.select(SESSIONS.column_names)
