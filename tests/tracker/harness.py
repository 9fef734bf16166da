"""Browser-test plumbing: sites on another origin, Chromium contexts, and raw events to assert on.

The tracker runs in real headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real ``littlestats serve``. Test pages come from a small HTTP server on another loopback port, so
the tracker is cross-origin exactly as on a customer's site.
"""

from __future__ import annotations

import html
import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
from playwright.sync_api import Browser, BrowserContext, Page, Playwright

from tests.server import LiveServer, cli

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium tries to reach the internet and the closed
# network refuses it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]
# Ingest drops headless browsers as bots, so every context that should be counted says it is a
# normal browser (`HeadlessChrome` is what the default user agent would say).
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)

# Lets a test switch tabs for the page: headless Chromium keeps every tab visible, so the test
# overrides what the page sees and fires the same event a real tab switch fires.
VISIBILITY_SCRIPT = """
window.__setVisibility = (state) => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
  Object.defineProperty(document, 'hidden', {configurable: true, get: () => state === 'hidden'});
  document.dispatchEvent(new Event('visibilitychange'));
};
"""

# Counts what the tracker hands to the network, synchronously, from inside the page.
NETWORK_PROBE_SCRIPT = """
window.__sent = {beacon: 0, fetch: 0};
const realBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, body) => {
  if (String(url).includes('/api/v2/track/')) window.__sent.beacon++;
  return realBeacon(url, body);
};
const realFetch = window.fetch;
window.fetch = function (url, init) {
  if (String(url).includes('/api/v2/track/')) window.__sent.fetch++;
  return realFetch.apply(this, arguments);
};
"""


class PageServer:
    """A site of our own on 127.0.0.1: exact paths and prefix fallbacks (for an SPA)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.prefixes: dict[str, str] = {}
        pages, prefixes = self.pages, self.prefixes

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body = pages.get(path)
                if body is None:
                    for prefix, spa in sorted(prefixes.items(), key=lambda p: -len(p[0])):
                        if path.startswith(prefix):
                            body = spa
                            break
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def snippet(server: LiveServer, site: dict, **attrs: str | bool) -> str:
    """The tracker's script tag; ``flush_interval="200"`` becomes ``data-flush-interval="200"``."""
    attrs = {"allow_localhost": True, **attrs}
    parts = [f'src="{server.url}/tracker.js"', f'data-site-id="{site["domainKey"]}"']
    for name, value in attrs.items():
        if value is False:
            continue
        key = "data-" + name.replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value))}"')
    return f"<script {' '.join(parts)}></script>"


def page_html(title: str, body: str, head: str = "") -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"{head}</head><body>{body}</body></html>"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return dict(value)  # Parquet maps come back as lists of (key, value)
    return value


@dataclass
class RawEvents:
    """A site's raw events as Python dicts, in event-time order."""

    rows: list[dict[str, Any]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["type"] == kind]

    @property
    def pageviews(self) -> list[dict[str, Any]]:
        return self.of_type("pageview")

    def paths(self, kind: str = "pageview") -> list[str]:
        return [r["pathname"] for r in self.of_type(kind)]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["type"] == "event" and r["name"] == name]

    def visitor_keys(self) -> set[int]:
        return {r["visitor_key"] for r in self.rows}


@dataclass
class Harness:
    """One test's site, its browser contexts, and its view of the raw Parquet."""

    server: LiveServer
    pages: PageServer
    browser: Browser
    site: dict[str, Any]
    contexts: list[BrowserContext] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @property
    def raw_dir(self) -> Path:
        return self.server.data_dir / "raw" / f"site_id={self.site['id']}"

    def snippet(self, **attrs: str | bool) -> str:
        return snippet(self.server, self.site, **attrs)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.server, self.site["id"])

    def add_page(self, path: str, title: str, body: str = "", **attrs: str | bool) -> str:
        """Serves a page carrying the tracker at ``path``; returns its URL."""
        self.pages.pages[path] = page_html(title, body, self.snippet(**attrs))
        return self.pages.url + path

    def context(
        self,
        user_agent: str | None = DESKTOP_UA,
        init_scripts: tuple[str, ...] = (VISIBILITY_SCRIPT, NETWORK_PROBE_SCRIPT),
        browser: Browser | None = None,
    ) -> BrowserContext:
        kwargs: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
        if user_agent is not None:
            kwargs["user_agent"] = user_agent
        ctx = (browser or self.browser).new_context(**kwargs)
        for script in init_scripts:
            ctx.add_init_script(script)
        ctx.on("page", lambda p: p.on("pageerror", lambda e: self.page_errors.append(str(e))))
        self.contexts.append(ctx)
        return ctx

    def new_page(self, **kwargs: Any) -> Page:
        ctx = self.context(**kwargs)
        return ctx.new_page()

    def close_contexts(self) -> None:
        for ctx in self.contexts:
            try:
                ctx.close()
            except Exception:  # already closed by the test
                pass
        self.contexts.clear()

    # --- raw events ------------------------------------------------------------------------

    def read(self) -> RawEvents:
        if not self.raw_dir.is_dir():
            return RawEvents([])
        table = ds.dataset(self.raw_dir, format="parquet", partitioning="hive").to_table()
        rows = [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]
        rows.sort(key=lambda r: (r["ts"], r["event_id"]))
        return RawEvents(rows)

    def wait_for(self, predicate: Callable[[RawEvents], bool], timeout: float = 30.0) -> RawEvents:
        """Polls the raw Parquet until ``predicate`` holds (segments are sealed every second)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.read()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                summary = [(r["type"], r["name"], r["pathname"]) for r in events.rows]
                raise AssertionError(f"raw events never matched; last seen: {summary}")
            time.sleep(0.2)

    def settle(self, quiet: float = 0.6, timeout: float = 30.0) -> RawEvents:
        """Closes the browser, waits until the server has sealed everything it acknowledged, and
        returns the final raw events: the moment to assert that something happened *exactly*
        once, or not at all.

        The write-ahead log is empty once every acknowledged event is in Parquet; it must stay
        empty for ``quiet`` seconds, so a late duplicate cannot slip in after the check.
        """
        self.close_contexts()
        wal = self.server.data_dir / "wal"
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            busy = any(p.suffix in (".seg", ".closed") for p in wal.iterdir())
            now = time.monotonic()
            if busy:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= quiet:
                return self.read()
            time.sleep(0.1)
        raise AssertionError("the write-ahead log never drained")


class Warehouse:
    """The running server's DuckDB warehouse: loaded with `littlestats load`, queried through the
    warehouse process (which holds the file while the server runs)."""

    def __init__(self, server: LiveServer, site_id: str) -> None:
        from littlestats.config import load_settings
        from warehouse.client import WarehouseClient

        self.server = server
        self.site_id = site_id
        self.client = WarehouseClient(load_settings({"data_dir": server.data_dir}), timeout=120)

    def load(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.available():  # it starts a few seconds after HTTP
            if time.monotonic() > deadline:
                raise AssertionError("the server's warehouse process never answered")
            time.sleep(0.2)
        cli(self.server.data_dir, "load")

    def rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        assert table.isidentifier() and order_by.replace(",", "").replace(" ", "").isidentifier()
        sql = f"SELECT * FROM {table} WHERE site_id = ? ORDER BY {order_by}"  # noqa: S608 - fixed names
        return self.client.query_sync(sql, [self.site_id]).dicts()

    def sessions(self) -> list[dict[str, Any]]:
        return self.rows("sessions", "started_at")

    def events(self) -> list[dict[str, Any]]:
        return self.rows("events", "ts, event_id")

    def props(self) -> list[dict[str, Any]]:
        return self.rows("event_props", "ts, key")


def launch(playwright: Playwright, user_agent: str | None = DESKTOP_UA, **options: Any) -> Browser:
    """Headless Chromium that says it is a normal desktop browser (``user_agent=None``: that it
    is headless). The flag, not only a context option, because a beacon sent while a page unloads
    leaves with the browser-wide user agent, not the page's override."""
    args = CHROMIUM_ARGS + ([f"--user-agent={user_agent}"] if user_agent else [])
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, **options)


def sent(page: Page) -> dict[str, int]:
    """How many beacons and fetches the tracker has handed to the network so far."""
    return dict(page.evaluate("window.__sent"))


def dwell(page: Page, ms: int = 200) -> None:
    """Stays on the current URL long enough for its view to be taken: the tracker takes an SPA
    view once the URL has held for 100 ms, so redirect chains count once."""
    page.wait_for_timeout(ms)


def set_visibility(page: Page, state: str) -> None:
    page.evaluate("s => window.__setVisibility(s)", state)


# A small single-page app: links are routed with history.pushState, back/forward re-render, and
# each route sets its title after the URL changes (as React/Vue routers do).
SPA_BODY = """
<nav>
  <a data-link id="home" href="/app/">Home</a>
  <a data-link id="pricing" href="/app/pricing">Pricing</a>
  <a data-link id="docs" href="/app/docs">Docs</a>
  <a id="anchor" href="#section">Section</a>
</nav>
<main id="view"></main>
<h2 id="section">Section</h2>
<script>
  function render() {
    document.getElementById('view').textContent = location.pathname;
    setTimeout(() => { document.title = 'App ' + location.pathname; }, 10);
  }
  document.addEventListener('click', (e) => {
    const a = e.target.closest('a[data-link]');
    if (!a) return;
    e.preventDefault();
    history.pushState({}, '', a.href);
    render();
  });
  window.addEventListener('popstate', render);
  window.go = (path) => { history.pushState({}, '', path); render(); };
  render();
</script>
"""
