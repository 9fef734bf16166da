"""Enrichment steps: user agents, referrer sources, client IP, visitor keys."""

from __future__ import annotations

import ipaddress

import pytest

from ingest.geo import CountryLookup, client_ip
from ingest.identity import fallback_visitor_key, tracker_visitor_key
from ingest.referrer import DIRECT, classify_referrer
from ingest.useragent import classify
from tests.ingest.helpers import UA, UA_EXPECTED


@pytest.mark.parametrize(("ua", "browser", "os", "device"), UA_EXPECTED)
def test_user_agents_are_classified_by_the_maintained_parser(ua: str, browser: str, os: str, device: str) -> None:
    info = classify(UA[ua])
    assert (info.verdict, info.browser, info.os, info.device) == ("human", browser, os, device)


@pytest.mark.parametrize(("ua", "verdict"), [("googlebot", "bot"), ("headless", "headless")])
def test_crawlers_and_headless_browsers_are_recognised(ua: str, verdict: str) -> None:
    assert classify(UA[ua]).verdict == verdict


def test_empty_user_agent_is_a_bot() -> None:
    assert classify("").verdict == "bot"


@pytest.mark.parametrize(
    ("referrer", "utm", "source", "domain"),
    [
        ("https://www.google.co.uk/search?q=x", None, "Google", "google.co.uk"),
        ("https://www.bing.com/", None, "Bing", "bing.com"),
        ("https://t.co/abc", None, "Twitter", "t.co"),
        ("https://l.facebook.com/l.php", None, "Facebook", "l.facebook.com"),
        ("https://news.ycombinator.com/item?id=1", None, "Hacker News", "news.ycombinator.com"),
        ("https://blog.other.org/post", None, "blog.other.org", "blog.other.org"),
        ("https://www.example.com/pricing", None, DIRECT, None),  # own domain is not a source
        ("https://app.example.com/", None, DIRECT, None),  # nor its subdomains
        ("https://www.google.com/", "newsletter", "newsletter", "google.com"),  # utm_source wins
        ("", None, DIRECT, None),
        ("not a url", None, DIRECT, None),
    ],
)
def test_referrers_become_sources(referrer: str, utm: str | None, source: str, domain: str | None) -> None:
    referral = classify_referrer(referrer, "example.com", "example.com", utm)
    assert referral.source == source
    assert referral.domain == domain


def test_forwarded_for_is_trusted_only_from_configured_proxies() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip("203.0.113.9", "81.2.69.160", proxies) == "203.0.113.9"
    assert client_ip("10.0.0.2", "81.2.69.160", proxies) == "81.2.69.160"
    # A client cannot spoof its address by prepending hops: the right-most untrusted hop wins.
    assert client_ip("10.0.0.2", "1.1.1.1, 81.2.69.160, 10.0.0.7", proxies) == "81.2.69.160"
    assert client_ip("10.0.0.2", "garbage", proxies) == "10.0.0.2"


def test_bundled_database_knows_countries() -> None:
    lookup = CountryLookup()
    assert lookup.country("81.2.69.160") == "GB"
    assert lookup.country("8.8.8.8") == "US"
    assert lookup.country("127.0.0.1") is None
    assert lookup.country("not-an-ip") is None


def test_visitor_keys_are_64_bit_keyed_and_unlinkable() -> None:
    a = tracker_visitor_key(b"s" * 32, "visitor-1")
    assert a == tracker_visitor_key(b"s" * 32, "visitor-1")
    assert a != tracker_visitor_key(b"t" * 32, "visitor-1")  # another site: another key
    keys = {tracker_visitor_key(b"s" * 32, f"visitor-{i}") for i in range(1000)}
    assert len(keys) == 1000 and all(0 <= k < 2**64 for k in keys)
    assert max(keys) > 2**62  # the full 64 bits are used, not a 32-bit hash
    monday = fallback_visitor_key(b"salt-monday-0000", "site", "81.2.69.160", "UA")
    tuesday = fallback_visitor_key(b"salt-tuesday-000", "site", "81.2.69.160", "UA")
    assert monday != tuesday
