"""Time spans: the parts of the time line a load or a rebuild touches, as scan predicates.

A load's windows are mostly one stretch of recent time, plus a few old visits far from it (an
engagement report for a visit begun days ago, late events). One ``lo``..``hi`` bound around all of
them makes every scan of the fact tables read everything in between; several spans, OR-ed in the
``WHERE`` clause, let DuckDB's row-group min/max skip the gaps (it prunes each range of an ``OR``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

#: At most this many spans: past it the closest neighbours are merged (a longer scan, a shorter
#: predicate).
MAX_SPANS = 16


@dataclass(frozen=True)
class Spans:
    """Disjoint half-open UTC spans ``[lo, hi)``, in time order (at least one)."""

    parts: tuple[tuple[datetime, datetime], ...]

    @classmethod
    def of(cls, lo: datetime, hi: datetime) -> Spans:
        """One span ``[lo, hi)``."""
        return cls(((lo, hi),))

    @classmethod
    def covering(cls, intervals: Iterable[tuple[datetime, datetime]], limit: int = MAX_SPANS) -> Spans:
        """The fewest spans covering ``intervals`` (half-open), at most ``limit``: overlapping or
        touching intervals merge, then the smallest gaps close until ``limit`` are left."""
        merged: list[list[datetime]] = []
        for lo, hi in sorted(intervals):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        if not merged:
            raise ValueError("no intervals to cover")
        if len(merged) > limit:
            # keep the limit - 1 widest gaps; every other gap closes
            gaps = sorted(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1])
            keep = set(gaps[len(merged) - limit:])
            out = [merged[0]]
            for i in range(1, len(merged)):
                if i - 1 in keep:
                    out.append(merged[i])
                else:
                    out[-1] = [out[-1][0], merged[i][1]]
            merged = out
        return cls(tuple((lo, hi) for lo, hi in merged))

    @property
    def lo(self) -> datetime:
        return self.parts[0][0]

    @property
    def hi(self) -> datetime:
        return self.parts[-1][1]

    def widened(self, widen: Callable[[datetime, datetime], tuple[datetime, datetime]]) -> Spans:
        """Each span mapped by ``widen`` (to whole hours, to whole local days), merged again."""
        return Spans.covering((widen(lo, hi) for lo, hi in self.parts), limit=len(self.parts))

    def to_hours(self) -> Spans:
        """Each span widened to whole UTC hours."""
        def whole_hours(lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
            start = lo.replace(minute=0, second=0, microsecond=0)
            end = hi.replace(minute=0, second=0, microsecond=0)
            return start, end if end == hi else end + timedelta(hours=1)
        return self.widened(whole_hours)

    def where(self, column: str, params: dict[str, object], name: str = "span") -> str:
        """SQL true for ``column`` in any span; its bounds are added to ``params`` as
        ``$<name><i>_lo`` / ``$<name><i>_hi`` (``column`` is the caller's identifier)."""
        terms = []
        for i, (lo, hi) in enumerate(self.parts):
            params[f"{name}{i}_lo"], params[f"{name}{i}_hi"] = lo, hi
            terms.append(f"({column} >= ${name}{i}_lo AND {column} < ${name}{i}_hi)")
        return "(" + " OR ".join(terms) + ")"
