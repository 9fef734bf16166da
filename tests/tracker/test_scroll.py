"""Scroll depth in real Chromium: the deepest point reached goes with the page's exit, and the pages
breakdown averages each visit's deepest scroll per page (tracker → ingest → load → /query)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.tracker.harness import Harness, dwell

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = '<div style="height: 4000px">long</div>'  # 5 viewports of 800 px


def visit(h: Harness, url: str, scroll_to: int | None) -> None:
    """One visitor (its own browser context) opens ``url``, scrolls its window's top to ``scroll_to``, back
    up to the top, and leaves."""
    page = h.new_page()
    page.goto(url)
    dwell(page, 200)
    if scroll_to is not None:
        page.evaluate(f"window.scrollTo(0, {scroll_to})")
        dwell(page, 200)
        page.evaluate("window.scrollTo(0, 0)")  # the deepest point is kept, not the last
        dwell(page, 200)
    page.close(run_before_unload=True)


def test_scroll_depth_is_sent_on_exit_and_averaged_per_page(harness: Harness) -> None:
    h = harness
    # Each context keeps its own id: three visitors, three visits (without ids, the same IP and
    # browser would make them one visitor and one visit).
    long_url = h.add_page("/long.html", "Long", LONG, flush_interval="200", persistent_id=True)
    short_url = h.add_page("/short.html", "Short", "<p>short</p>", flush_interval="200", persistent_id=True)
    visit(h, long_url, 1200)  # window bottom at 2000 of 4000 px: 50 %
    visit(h, long_url, 2200)  # 3000 of 4000: 75 %
    visit(h, short_url, None)  # all of it in the window: 100 %
    h.wait_for(lambda e: len(e.of_type("page_exit")) == 3)
    events = h.settle()

    depths = sorted((e["pathname"], e["scroll_depth"]) for e in events.of_type("page_exit"))
    (long_a, da), (long_b, db), (short, dc) = depths
    assert (long_a, long_b, short) == ("/long.html", "/long.html", "/short.html")
    assert 48 <= da <= 52 and 73 <= db <= 77 and dc == 100
    assert all(e["scroll_depth"] is None for e in events.pageviews)

    # Through the warehouse: the pages breakdown equals the average of each visit's deepest
    # scroll per page, computed here from the loaded events.
    h.warehouse.load()
    deepest: dict[tuple[str, str], int] = defaultdict(int)
    for e in h.warehouse.events():
        if e["type"] in ("page_exit", "engagement") and e["scroll_depth"] is not None:
            key = (e["session_id"], e["pathname"])
            deepest[key] = max(deepest[key], e["scroll_depth"])
    by_page: dict[str, list[int]] = defaultdict(list)
    for (_, path), depth in deepest.items():
        by_page[path].append(depth)
    expected = {path: round(sum(v) / len(v), 1) for path, v in by_page.items()}
    assert expected["/long.html"] == round((da + db) / 2, 1)

    answer = httpx.post(
        f"{h.server.url}/api/v2/sites/{h.site['id']}/query", timeout=60,
        json={"metrics": ["views", "time_on_page", "scroll_depth"], "dimensions": ["page"], "date_range": "7d"},
    )
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["results"]
    got = {r["dimensions"][0]: r["metrics"][2] for r in rows}
    assert got == expected

    bad = httpx.post(f"{h.server.url}/api/v2/sites/{h.site['id']}/query", timeout=60,
                     json={"metrics": ["scroll_depth"], "dimensions": ["country"]})
    assert bad.status_code == 400 and "scroll_depth" in bad.text
