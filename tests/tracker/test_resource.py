"""GET /tracker.js: the built file, long-cached, revalidated by a strong ETag, open to any origin."""

from __future__ import annotations

import gzip

import httpx
import pytest

from tests.server import LiveServer
from tracker.resource import BUILT_TRACKER

pytestmark = pytest.mark.slow


def test_tracker_js_is_served_with_cache_headers_and_etag(stats_server: LiveServer) -> None:
    built = BUILT_TRACKER.read_bytes()
    url = stats_server.url + "/tracker.js"
    r = httpx.get(url, headers={"Accept-Encoding": "identity", "Origin": "https://customer.example"})
    assert r.status_code == 200
    assert r.content == built
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["access-control-allow-origin"] == "*"
    assert "max-age=86400" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    again = httpx.get(url, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag

    changed = httpx.get(url, headers={"If-None-Match": '"something-else"', "Accept-Encoding": "identity"})
    assert changed.status_code == 200


def test_tracker_js_gzip_head_and_versioned_url(stats_server: LiveServer) -> None:
    built = BUILT_TRACKER.read_bytes()
    url = stats_server.url + "/tracker.js"
    raw = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    # httpx decodes; check the coding and the bytes on the wire.
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == built
    assert int(raw.headers["content-length"]) == len(gzip.compress(built, 9, mtime=0))
    assert raw.headers["vary"] == "Accept-Encoding"
    gz_etag = raw.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": gz_etag}).status_code == 304

    head = httpx.head(url, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(built)

    version = gz_etag.strip('"').removesuffix("-gz")
    pinned = httpx.get(url, params={"v": version})
    assert "immutable" in pinned.headers["cache-control"]
    assert "max-age=31536000" in pinned.headers["cache-control"]
