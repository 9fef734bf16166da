"""User-agent classification with maintained parsers: browser, OS, device class, bot verdict.

Browser and OS come from ``ua-parser`` (uap-core rules, Rust accelerated when available); crawlers
from the ``crawler-user-agents`` list plus uap-core's ``Spider`` device class; headless and automated
browsers from their own markers. Results are cached per user-agent string: real traffic repeats a
few thousand strings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import crawleruseragents
from ua_parser import parse

Verdict = Literal["human", "bot", "headless"]

HEADLESS_MARKERS = ("HeadlessChrome", "PhantomJS", "Headless", "Electron/", "SlimerJS", "Nightmare")
TABLET_DEVICE_HINTS = ("iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10", "SM-T", "SM-X", "Tab")
# Short names for families that uap-core spells long; everything else is kept as uap-core names it.
BROWSER_NAMES = {"Chrome Mobile": "Chrome", "Chrome Mobile iOS": "Chrome", "Firefox Mobile": "Firefox",
                 "Firefox iOS": "Firefox", "Edge Mobile": "Edge", "Opera Mobile": "Opera",
                 "Chrome Mobile WebView": "Android WebView", "Samsung Internet": "Samsung Internet"}


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    verdict: Verdict
    browser: str
    browser_version: str | None
    os: str
    os_version: str | None
    device: str  # desktop | mobile | tablet


def _version(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return ".".join(kept) if kept else None


def _device_class(ua: str, os_family: str, device_family: str, brand: str | None) -> str:
    if device_family == "iPad" or any(h in device_family for h in TABLET_DEVICE_HINTS):
        return "tablet"
    if os_family == "Android":
        # Android phones say "Mobile"; Android tablets do not.
        return "mobile" if "Mobile" in ua else "tablet"
    if os_family == "iOS" or device_family in ("iPhone", "iPod") or "Mobi" in ua:
        return "mobile"
    if brand and os_family not in ("Windows", "Mac OS X", "Linux", "Chrome OS", "Ubuntu", "Fedora"):
        return "mobile"
    return "desktop"


@functools.lru_cache(maxsize=8192)
def classify(user_agent: str) -> UserAgentInfo:
    """Classify a user-agent string. Empty strings are bots: every real browser sends one."""
    ua = user_agent.strip()
    if not ua:
        return UserAgentInfo("bot", "Unknown", None, "Unknown", None, "desktop")
    result = parse(ua)
    agent, os_, device = result.user_agent, result.os, result.device
    browser = agent.family if agent else "Other"
    browser = BROWSER_NAMES.get(browser, browser)
    os_family = os_.family if os_ else "Other"
    device_family = device.family if device else "Other"
    if any(marker in ua for marker in HEADLESS_MARKERS) or browser == "HeadlessChrome":
        verdict: Verdict = "headless"
    elif device_family == "Spider" or crawleruseragents.is_crawler(ua):
        verdict = "bot"
    else:
        verdict = "human"
    return UserAgentInfo(
        verdict=verdict,
        browser=browser,
        browser_version=_version(agent.major, agent.minor) if agent else None,
        os=os_family,
        os_version=_version(os_.major, os_.minor) if os_ else None,
        device=_device_class(ua, os_family, device_family, device.brand if device else None),
    )
