"""Property-based fuzzing of the beacon endpoint: whatever a client sends, the answer is 2xx or 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.helpers import UA
from tests.server import LiveServer, add_site, running_server

pytestmark = pytest.mark.slow

FIELDS = ["type", "website", "url", "referrer", "title", "screen", "language", "timezone", "userAgent",
          "visitorId", "cache", "name", "data", "id", "engagementTime", "ts", "siteId", "events"]

json_leaf = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=60)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
event = st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=8) | st.fixed_dictionaries(
    {"type": st.sampled_from(["pageview", "event", "identify", "page_exit", "engagement", "x"]),
     "url": st.text(max_size=80), "name": st.text(max_size=20),
     "data": st.dictionaries(st.text(max_size=70), json_leaf, max_size=35),
     "engagementTime": json_leaf, "ts": json_leaf, "cache": json_value}
)


HOSTILE = [
    b'{"url": "/", "ts": 123456789012345678901234567890}',
    b'{"url": "/", "ts": -1e308}',
    b'{"url": "/", "engagementTime": 1e400}',
    b'{"url": "\\ud800"}',
    b'{"url": "/", "data": {"\\u0000": 1}}',
    b"[" * 100_00 + b"]" * 100_00,
    b'{"events": [' + b",".join([b'{"url": "/"}'] * 101) + b"]}",
    b'{"url": "/' + b"%" * 3000 + b'"}',
    b'{"url": "http://[::1"}',
    b'{"referrer": "http://[bad", "url": "/"}',
    b"\xff\xfe\x00",
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "batch", "json", "bytes", "hostile"]))
    if kind == "hostile":
        return draw(st.sampled_from(HOSTILE))
    if kind == "event":
        return orjson.dumps(draw(event))
    if kind == "batch":
        return orjson.dumps({"siteId": draw(st.text(max_size=12)), "events": draw(st.lists(event, max_size=6))})
    if kind == "json":
        return orjson.dumps(draw(json_value))
    return draw(st.binary(max_size=300))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    data_dir.mkdir()
    site = add_site(data_dir)["id"]
    with running_server(data_dir, 2, "--dev") as server:
        yield server, site


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    body=bodies(),
    content_type=st.sampled_from([None, "text/plain", "application/json", "application/x-www-form-urlencoded"]),
    site_kind=st.sampled_from(["real", "random"]),
    random_site=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=20),
    user_agent=st.sampled_from([UA["chrome"], UA["googlebot"], "", "\u00e9\u00e8 weird/1.0"]).map(
        lambda ua: ua.encode("latin-1")
    ),
)
def test_every_answer_is_2xx_or_4xx(
    fuzz_server: tuple[LiveServer, str], body: bytes, content_type: str | None, site_kind: str,
    random_site: str, user_agent: bytes,
) -> None:
    server, site = fuzz_server
    target = site if site_kind == "real" else quote(random_site, safe="")
    headers: dict[str, Any] = {"User-Agent": user_agent}
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx.post(f"{server.url}/api/v2/track/{target}", content=body, headers=headers, timeout=10)
    assert 200 <= r.status_code < 500, (r.status_code, r.text, body[:200])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str) and r.json()["error"]
