"""User-agent families, client address behind trusted proxies, and country lookups (gateway.routing.useragent,
gateway.routing.geo, gateway.routing.lookups)."""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from gateway.config.model import GeoSettings
from gateway.routing.geo import (MAX_FORWARDED_ENTRIES, GeoDatabaseError, IptoccResolver, MaxMindResolver,
                                 TrustedProxies, open_resolver, parse_forwarded_address)
from gateway.routing.lookups import ClientLookups, shared_resolver
from gateway.routing.request import RequestView
from gateway.routing.useragent import MAX_USER_AGENT_LENGTH, UserAgentParser

DATA = Path(__file__).parents[1] / "data"
GEOLITE2_COUNTRY_TEST = DATA / "GeoLite2-Country-Test.mmdb"

CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/116.0.0.0 Mobile Safari/537.36")
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.1 Safari/605.1.15")
SAMSUNG_INTERNET = ("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36")
EDGE_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0")
CHROME_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1")
IE11 = "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko"


@pytest.fixture(scope="module")
def parser() -> UserAgentParser:
    return UserAgentParser()


# -- user agents -------------------------------------------------------------------------------------

@pytest.mark.parametrize("user_agent, expected", [
    (CHROME_ANDROID, ("Chrome Mobile", "Android", "Pixel 7")),
    (FIREFOX_WINDOWS, ("Firefox", "Windows", "Other")),
    (FIREFOX_LINUX, ("Firefox", "Linux", "Other")),
    (SAFARI_IPHONE, ("Mobile Safari", "iOS", "iPhone")),
    (SAFARI_MAC, ("Safari", "Mac OS X", "Mac")),
    (SAMSUNG_INTERNET, ("Samsung Internet", "Android", "Samsung SM-S911B")),
    (EDGE_WINDOWS, ("Edge", "Windows", "Other")),
    (CHROME_IOS, ("Chrome Mobile iOS", "iOS", "iPhone")),
    (IE11, ("IE", "Windows", "Other")),
    ("curl/8.4.0", ("curl", "Other", "Other")),
    ("xyzzy", ("Other", "Other", "Other")),
    ("", ("Other", "Other", "Other")),
])
def test_families_of_real_user_agents(parser: UserAgentParser, user_agent: str,
                                      expected: tuple[str, str, str]) -> None:
    assert parser.families(user_agent) == expected


def test_parser_is_built_on_first_use_only() -> None:
    parser = UserAgentParser()
    assert not parser.loaded
    assert parser.families("") == ("Other", "Other", "Other")     # needs no parsing
    assert not parser.loaded
    assert parser.families(FIREFOX_LINUX)[0] == "Firefox"
    assert parser.loaded


def test_warm_builds_the_parser_eagerly() -> None:
    parser = UserAgentParser()
    parser.warm()
    assert parser.loaded
    assert parser.cache_info().currsize == 0


def test_repeated_user_agents_are_answered_from_the_cache(parser: UserAgentParser) -> None:
    first = parser.families(SAFARI_IPHONE)
    before = parser.cache_info()
    assert parser.families(SAFARI_IPHONE) is first
    after = parser.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_cache_is_bounded() -> None:
    parser = UserAgentParser(cache_size=8)
    for version in range(20):
        parser.families(f"curl/{version}.0")
    assert parser.cache_info().currsize == 8


def test_hostile_long_user_agent_is_cut_before_parsing_and_caching() -> None:
    parser = UserAgentParser()
    firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0 "
    hostile = firefox + "A" * 65536
    assert parser.families(hostile) == ("Firefox", "Windows", "Other")
    # cached under its first MAX_USER_AGENT_LENGTH characters: any UA with that prefix is a hit, and the
    # cache never holds 64 KiB keys
    assert parser.families(hostile[:MAX_USER_AGENT_LENGTH]) == ("Firefox", "Windows", "Other")
    assert parser.families(hostile[:MAX_USER_AGENT_LENGTH] + "B" * 65536) == ("Firefox", "Windows", "Other")
    info = parser.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_user_agent_length_cap_is_configurable() -> None:
    parser = UserAgentParser(max_length=10)
    assert parser.families(FIREFOX_WINDOWS) == ("Other", "Other", "Other")   # "Mozilla/5." says nothing


# -- countries: iptocc -------------------------------------------------------------------------------

@pytest.mark.parametrize("address, country", [
    ("81.2.69.160", "GB"),
    ("8.8.8.8", "US"),
    ("1.1.1.1", "AU"),
    ("2001:4860:4860::8888", "US"),
    ("2a00:1450:4009::1", "IE"),
    ("::ffff:8.8.8.8", "US"),           # an IPv4 client seen through a dual-stack socket
    ("127.0.0.1", None),
    ("10.1.2.3", None),
    ("192.168.0.1", None),
    ("::1", None),
    ("garbage", None),
    ("", None),
])
def test_iptocc_countries(address: str, country: str | None) -> None:
    assert IptoccResolver().country(address) == country


def test_open_resolver_without_database_is_iptocc() -> None:
    assert isinstance(open_resolver(None), IptoccResolver)


# -- countries: MaxMind ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def maxmind() -> MaxMindResolver:
    return MaxMindResolver(str(GEOLITE2_COUNTRY_TEST))


@pytest.mark.parametrize("address, country", [
    ("81.2.69.160", "GB"),              # country GB, registered_country US: the country wins
    ("89.160.20.128", "SE"),
    ("216.160.83.56", "US"),
    ("2001:218::1", "JP"),
    ("2a02:d3c0::1", "GB"),
    ("::ffff:81.2.69.160", "GB"),
    ("2a02:d500::1", None),             # a record with a continent and no country
    ("8.8.8.8", None),                  # not in the test database
    ("127.0.0.1", None),
    ("garbage", None),
    ("[::1]", None),
    ("", None),
])
def test_maxmind_countries(maxmind: MaxMindResolver, address: str, country: str | None) -> None:
    assert maxmind.country(address) == country


def test_maxmind_falls_back_to_registered_country(tmp_path: Path) -> None:
    database = tmp_path / "registered.mmdb"
    database.write_bytes(_two_record_ipv4_mmdb(
        {"registered_country": {"iso_code": "DE"}},                                   # 0.0.0.0/1
        {"country": {"iso_code": "FR"}, "registered_country": {"iso_code": "DE"}},   # 128.0.0.0/1
    ))
    resolver = MaxMindResolver(str(database))
    assert resolver.country("1.2.3.4") == "DE"
    assert resolver.country("200.1.1.1") == "FR"
    assert resolver.country("2001:db8::1") is None       # IPv6 in an IPv4-only database


@pytest.mark.parametrize("content", [None, b"", b"not a maxmind database\n" * 100])
def test_unreadable_or_invalid_database_is_a_clear_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "GeoIP2-Country.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GeoDatabaseError, match="GeoIP2-Country.mmdb"):
        open_resolver(str(path))


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError):
        MaxMindResolver(str(tmp_path))


# -- client address behind trusted proxies ------------------------------------------------------------

def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    proxies = TrustedProxies(())
    assert proxies.client_address("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert proxies.client_address("not even an address", None) == "not even an address"


@pytest.fixture
def proxies() -> TrustedProxies:
    return TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.7"])


@pytest.mark.parametrize("peer, forwarded_for, client", [
    # an untrusted peer: its X-Forwarded-For is ignored
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
    # a trusted peer without X-Forwarded-For
    ("10.0.0.1", None, "10.0.0.1"),
    ("10.0.0.1", "", "10.0.0.1"),
    # chains of 1..3 entries
    ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("10.0.0.1", "198.51.100.1, 10.0.0.2", "198.51.100.1"),
    ("10.0.0.1", "198.51.100.1, 10.0.0.3,10.0.0.2", "198.51.100.1"),
    # entries left of the first untrusted one are forged by the client and ignored
    ("10.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),
    ("10.0.0.1", "10.9.9.9, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
    # every entry trusted: the leftmost
    ("10.0.0.1", "10.0.0.5, 10.0.0.4, 192.0.2.7", "10.0.0.5"),
    # junk entries are skipped
    ("10.0.0.1", "198.51.100.1, unknown", "198.51.100.1"),
    ("10.0.0.1", "198.51.100.1,, _hidden, 999.1.1.1, 1.2.3.4:port, [::1", "198.51.100.1"),
    ("10.0.0.1", "garbage", "10.0.0.1"),
    ("10.0.0.1", "10.0.0.3, junk", "10.0.0.3"),
    # ports, brackets and quotes
    ("10.0.0.1", "198.51.100.1:5678", "198.51.100.1"),
    ("10.0.0.1", "[2001:db8::1]:443, 10.0.0.2:80", "2001:db8::1"),
    ("10.0.0.1", '"[2001:db8::1]"', "2001:db8::1"),
    # IPv6 proxies and clients
    ("2001:db8:ffff::1", "2001:db8::1", "2001:db8::1"),
    ("2001:db8:ffff::1", "2001:db8::1, 2001:db8:ffff::2", "2001:db8::1"),
    ("2001:db8:fffe::1", "2001:db8::1", "2001:db8:fffe::1"),
    # IPv4-mapped IPv6 peers and entries count as their IPv4 address
    ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("::ffff:203.0.113.9", "198.51.100.1", "::ffff:203.0.113.9"),
    ("10.0.0.1", "::ffff:198.51.100.1, ::ffff:10.0.0.2", "198.51.100.1"),
    # a single trusted host (/32)
    ("192.0.2.7", "198.51.100.1", "198.51.100.1"),
    ("192.0.2.8", "198.51.100.1", "192.0.2.8"),
])
def test_client_address(proxies: TrustedProxies, peer: str, forwarded_for: str | None, client: str) -> None:
    assert proxies.client_address(peer, forwarded_for) == client


def test_very_long_forwarded_for_is_bounded(proxies: TrustedProxies) -> None:
    chain = ", ".join(["10.0.0.9"] * 10_000 + ["198.51.100.1"] + ["10.0.0.2"] * 3)
    assert proxies.client_address("10.0.0.1", chain) == "198.51.100.1"
    all_trusted = ", ".join(["198.51.100.77"] + [f"10.0.{n // 256}.{n % 256}" for n in range(10_000)])
    # the leftmost entry is too far away to be believed: the leftmost of those considered instead
    leftmost_considered = 10_000 - MAX_FORWARDED_ENTRIES
    assert proxies.client_address("10.0.0.1", all_trusted) == (
        f"10.0.{leftmost_considered // 256}.{leftmost_considered % 256}")


def test_invalid_trusted_proxy_is_rejected() -> None:
    with pytest.raises(ValueError, match="not-a-cidr"):
        TrustedProxies(["10.0.0.0/8", "not-a-cidr"])


@given(st.text(max_size=200))
def test_client_address_never_raises(forwarded_for: str) -> None:
    proxies = TrustedProxies(["0.0.0.0/0", "::/0"])
    client = proxies.client_address("10.0.0.1", forwarded_for)
    assert client == "10.0.0.1" or parse_forwarded_address(client) is not None


# -- ClientLookups -----------------------------------------------------------------------------------

def _view(lookups: ClientLookups, peer: str, headers: list[tuple[bytes, bytes]]) -> RequestView:
    return RequestView("GET", "/", headers, "example.com", peer, lookups)


def test_lookups_answer_request_views() -> None:
    lookups = ClientLookups.from_settings(GeoSettings(trusted_proxies=("10.0.0.0/8",)))
    view = _view(lookups, "10.0.0.1", [(b"User-Agent", CHROME_ANDROID.encode()),
                                       (b"X-Forwarded-For", b"6.6.6.6, 81.2.69.160")])
    assert (view.browser, view.os, view.device) == ("Chrome Mobile", "Android", "Pixel 7")
    assert view.client_address == "81.2.69.160"
    assert view.country() == "GB"


def test_lookups_with_a_maxmind_database() -> None:
    lookups = ClientLookups.from_settings(GeoSettings(database=str(GEOLITE2_COUNTRY_TEST)))
    assert lookups.country("89.160.20.128") == "SE"
    assert lookups.country("8.8.8.8") is None           # iptocc would say US: the database decides


def test_lookups_are_lazy_and_share_their_resolvers(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mmdb"
    lookups = ClientLookups.from_settings(GeoSettings(database=str(missing)))   # nothing opened yet
    with pytest.raises(GeoDatabaseError):
        lookups.warm(geo=True)
    database = tmp_path / "country.mmdb"
    shutil.copyfile(GEOLITE2_COUNTRY_TEST, database)
    first = ClientLookups.from_settings(GeoSettings(database=str(database)))
    second = ClientLookups.from_settings(GeoSettings(database=str(database), trusted_proxies=("10.0.0.0/8",)))
    assert first.country("2001:218::1") == second.country("2001:218::1") == "JP"
    assert shared_resolver(str(database)) is shared_resolver(str(database))


def test_a_changed_database_file_is_reopened(tmp_path: Path) -> None:
    database = tmp_path / "country.mmdb"
    shutil.copyfile(GEOLITE2_COUNTRY_TEST, database)
    before = shared_resolver(str(database))
    assert before.country("81.2.69.160") == "GB"
    update = tmp_path / "country.mmdb.new"
    update.write_bytes(_two_record_ipv4_mmdb({"country": {"iso_code": "NL"}}, {"country": {"iso_code": "NL"}}))
    os.replace(update, database)                         # how geoipupdate replaces a database
    after = shared_resolver(str(database))
    assert after is not before
    assert after.country("81.2.69.160") == "NL"


def test_warm_loads_the_user_agent_parser() -> None:
    parser = UserAgentParser()
    lookups = ClientLookups(user_agents=parser)
    assert not parser.loaded
    lookups.warm(user_agents=True)
    assert parser.loaded


# -- a minimal MaxMind DB writer (spec: https://maxmind.github.io/MaxMind-DB/) -------------------------

def _two_record_ipv4_mmdb(low_half: dict, high_half: dict) -> bytes:
    """An IPv4 MaxMind DB with one search-tree node: 0.0.0.0/1 → low_half, 128.0.0.0/1 → high_half."""
    node_count = 1
    low, high = _mmdb_encode(low_half), _mmdb_encode(high_half)
    data_pointer = node_count + 16                           # record value of data-section offset 0
    tree = (data_pointer).to_bytes(3, "big") + (data_pointer + len(low)).to_bytes(3, "big")
    metadata = {
        "node_count": ("uint32", node_count), "record_size": ("uint16", 24), "ip_version": ("uint16", 4),
        "database_type": "Vamp-Test-Country", "languages": ["en"], "description": {"en": "test"},
        "binary_format_major_version": ("uint16", 2), "binary_format_minor_version": ("uint16", 0),
        "build_epoch": ("uint64", 1_700_000_000),
    }
    return tree + bytes(16) + low + high + b"\xab\xcd\xefMaxMind.com" + _mmdb_encode(metadata)


def _mmdb_encode(value: object) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _mmdb_control(2, len(raw)) + raw
    if isinstance(value, dict):
        items = b"".join(_mmdb_encode(key) + _mmdb_encode(item) for key, item in value.items())
        return _mmdb_control(7, len(value)) + items
    if isinstance(value, list):
        return _mmdb_control(11, len(value)) + b"".join(_mmdb_encode(v) for v in value)
    kind, number = value                                    # type: ignore[misc]
    type_number = {"uint16": 5, "uint32": 6, "uint64": 9}[kind]
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return _mmdb_control(type_number, len(raw)) + raw


def _mmdb_control(type_number: int, size: int) -> bytes:
    assert size < 29
    if type_number <= 7:
        return struct.pack("B", type_number << 5 | size)
    return struct.pack("BB", size, type_number - 7)              # extended type
