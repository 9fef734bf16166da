"""Regions and cities from a configured city `.mmdb`, end to end: a small city database written here
(mmdb-writer, GeoIP2 City layout) → beacons → raw columns → events and visits → the /regions and
/cities breakdowns and /query, checked against counts made here from what was sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from ingest.geo import CountryLookup, place_from_record
from tests.ingest.helpers import UA, raw_rows, wait_for_rows
from tests.server import LiveServer, add_site, cli, running_server

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


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mmdb: Path) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("geo-city") / "data"
    data_dir.mkdir()
    site = add_site(data_dir, "example.com")
    with running_server(
        data_dir, 1, "--dev",
        env={"LITTLESTATS_SEGMENT_SECONDS": "0.5", "LITTLESTATS_TRUSTED_PROXIES": "127.0.0.1/32",
             "LITTLESTATS_GEOIP_MMDB": str(mmdb)},
    ) as server:
        yield server, site


# (visitor, IP of each of its events in order): a visit's region and city are its first event's.
VISITS = [
    ("a", ["81.2.69.160"]), ("b", ["81.2.69.10", "89.160.20.115"]), ("c", ["89.160.20.112"]),
    ("d", ["175.16.199.1"]), ("e", ["67.43.156.7"]), ("f", ["81.2.69.99", "81.2.69.99"]),
]


@pytest.mark.slow
def test_regions_and_cities_end_to_end(env: tuple[LiveServer, dict[str, Any]], mmdb: Path) -> None:
    server, site = env
    for visitor, ips in VISITS:
        for i, ip in enumerate(ips):
            r = httpx.post(f"{server.url}/api/v2/track/{site['id']}", timeout=10,
                           json={"url": f"https://example.com/geo-{i}", "visitorId": visitor},
                           headers={"User-Agent": UA["chrome"], "X-Forwarded-For": ip})
            assert r.status_code == 200, r.text
    total = sum(len(ips) for _, ips in VISITS)
    rows = wait_for_rows(server.data_dir, lambda rs: len(rs) >= total)
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
    assert raw_rows(server.data_dir)  # the raw files stay readable with the new columns
