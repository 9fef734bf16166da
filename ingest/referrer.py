"""Referrer → traffic source (SPEC §5).

``utm_source`` wins; a referrer on the site's own domain (or the page's host) is no source; known
search engines and social networks are grouped under one name whatever their country domain
(``www.google.co.uk`` → Google) using the Public Suffix List; any other referrer is its host without
``www.``; no referrer is ``Direct / None``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

DIRECT = "Direct / None"

# Registrable-domain label → source name (matches every public suffix: google.de, google.co.jp).
GROUPED_LABELS = {
    "google": "Google", "bing": "Bing", "yahoo": "Yahoo!", "duckduckgo": "DuckDuckGo",
    "yandex": "Yandex", "baidu": "Baidu", "ecosia": "Ecosia", "qwant": "Qwant",
    "startpage": "Startpage", "naver": "Naver", "seznam": "Seznam", "kagi": "Kagi",
    "facebook": "Facebook", "instagram": "Instagram", "linkedin": "LinkedIn", "reddit": "Reddit",
    "pinterest": "Pinterest", "tiktok": "TikTok", "youtube": "YouTube", "vk": "VKontakte",
    "threads": "Threads", "quora": "Quora", "github": "GitHub", "medium": "Medium",
    "producthunt": "Product Hunt", "chatgpt": "ChatGPT", "perplexity": "Perplexity",
}
# Exact hosts (after www. is dropped) whose registrable domain is too generic to group by label.
GROUPED_HOSTS = {
    "t.co": "Twitter", "twitter.com": "Twitter", "x.com": "Twitter", "fb.me": "Facebook",
    "lnkd.in": "LinkedIn", "youtu.be": "YouTube", "news.ycombinator.com": "Hacker News",
    "brave.search.com": "Brave Search", "search.brave.com": "Brave Search",
    "out.reddit.com": "Reddit", "old.reddit.com": "Reddit", "bsky.app": "Bluesky",
    "mastodon.social": "Mastodon", "chat.openai.com": "ChatGPT", "duck.com": "DuckDuckGo",
}

_psl = PublicSuffixList()


@dataclass(frozen=True, slots=True)
class Referral:
    referrer: str | None  # the referrer URL, None when it is no source
    domain: str | None
    source: str


def strip_www(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


@functools.lru_cache(maxsize=16384)
def group_for_host(host: str) -> str:
    """The source name of a referrer host: a grouped name or the host without ``www.``."""
    host = strip_www(host)
    if host in GROUPED_HOSTS:
        return GROUPED_HOSTS[host]
    registrable = _psl.privatesuffix(host)
    if registrable:
        label = registrable.split(".", 1)[0]
        if label in GROUPED_LABELS:
            return GROUPED_LABELS[label]
    return host


def is_own_host(host: str, page_host: str | None, site_domain: str) -> bool:
    host = strip_www(host)
    for own in (strip_www(page_host or ""), strip_www(site_domain.lower())):
        if own and (host == own or host.endswith("." + own)):
            return True
    return False


@functools.lru_cache(maxsize=16384)
def classify_referrer(
    referrer: str | None, page_host: str | None, site_domain: str, utm_source: str | None
) -> Referral:
    host = None
    if referrer:
        try:
            parts = urlsplit(referrer.strip())
            host = (parts.hostname or "").rstrip(".").lower() or None
            if parts.scheme not in ("http", "https", "android-app"):
                host = None
        except ValueError:
            host = None
    if host and is_own_host(host, page_host, site_domain):
        host = None
    if utm_source:
        return Referral(referrer if host else None, strip_www(host) if host else None, utm_source)
    if not host:
        return Referral(None, None, DIRECT)
    return Referral(referrer, strip_www(host), group_for_host(host))
