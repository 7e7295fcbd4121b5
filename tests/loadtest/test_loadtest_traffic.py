"""`vamp loadtest` traffic: identities dealt out by the mixes, the request bytes they send, the cookie jar,
user-agent mix files and the built-in mixes, and addresses per country from the gateway's geo data."""
from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

import iptocc
import pytest

from loadtest.countries import addresses_for, parse_country_mix
from loadtest.mixes import BUILTIN_MIXES, load_mix, ua_label
from loadtest.plan import Plan, PlanError
from loadtest.traffic import MAX_PERIOD, Traffic, WeightedCycle, integer_weights, store_set_cookie

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:136.0) Gecko/20100101 Firefox/136.0"
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/18.3 Safari/605.1.15")


def make_plan(**fields) -> Plan:
    return Plan(url="http://127.0.0.1:9050/a?b=1", host="127.0.0.1", port=9050, target="/a?b=1",
                host_header="127.0.0.1:9050", **fields)


def head_lines(request: bytes) -> list[str]:
    head, separator, _ = request.partition(b"\r\n\r\n")
    assert separator, request
    return head.decode().split("\r\n")


def header_values(request: bytes, name: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in head_lines(request)[1:] if line.split(":")[0].lower() == name.lower()]


# -- identities: the mixes dealt out by smooth weighted round-robin ---------------------------------------

def test_a_two_country_mix_holds_its_share_within_one_in_every_window():
    traffic = Traffic(make_plan(forwarded_for="countries:GB=20,US=80"))
    countries = [identity.country for identity in traffic.identities(0, 200)]
    for size in range(1, 60):
        for start in range(100):
            assert abs(countries[start:start + size].count("GB") - size * 0.2) < 1, (start, size)
    assert traffic.cycle == 5


def test_a_user_agent_mix_is_exact_over_its_period_and_within_two_in_any_window(tmp_path):
    mix = tmp_path / "agents.txt"
    mix.write_text(f"50 {FIREFOX}\n30% {SAFARI}\n20 curl/8.5.0\n")
    traffic = Traffic(make_plan(mix=str(mix)))
    agents = [identity.user_agent for identity in traffic.identities(0, 100)]
    assert traffic.cycle == 10
    for start in range(0, 100, 10):
        period = agents[start:start + 10]
        assert (period.count(FIREFOX), period.count(SAFARI), period.count("curl/8.5.0")) == (5, 3, 2)
    for size in range(1, 40):
        for start in range(60):
            assert abs(agents[start:start + size].count(SAFARI) - size * 0.3) < 2


def test_every_country_gets_the_whole_user_agent_mix(tmp_path):
    mix = tmp_path / "agents.txt"
    mix.write_text(f"3 {FIREFOX}\n1 {SAFARI}\n")
    traffic = Traffic(make_plan(mix=str(mix), forwarded_for="countries:GB=1,US=1"))
    assert traffic.cycle == 8
    pairs = Counter((identity.country, identity.user_agent) for identity in traffic.identities(0, 8))
    assert pairs == {("GB", FIREFOX): 3, ("GB", SAFARI): 1, ("US", FIREFOX): 3, ("US", SAFARI): 1}


def test_identities_are_the_same_whichever_process_asks_for_which_slice():
    plan = make_plan(mix="browsers", forwarded_for="countries:DE=1,JP=2,US=4", clients=300)
    whole = Traffic(plan).identities(0, 300)
    slices = Traffic(plan).identities(200, 100) + Traffic(plan).identities(0, 200)
    assert slices[100:] + slices[:100] == whole
    assert [identity.index for identity in whole] == list(range(300))


def test_identities_of_a_country_take_distinct_addresses_of_that_country():
    traffic = Traffic(make_plan(forwarded_for="countries:GB=20,US=80", clients=100))
    british = [identity for identity in traffic.identities(0, 100) if identity.country == "GB"]
    assert len(british) == 20
    assert len({identity.forwarded_for for identity in british}) == 20
    assert all(iptocc.country_code(identity.forwarded_for) == "GB" for identity in british)


def test_a_literal_forwarded_for_address_is_on_every_request():
    traffic = Traffic(make_plan(forwarded_for="81.2.69.160"))
    assert {(i.forwarded_for, i.country) for i in traffic.identities(0, 10)} == {("81.2.69.160", "GB")}
    assert header_values(traffic.render(traffic.identities(3, 1)[0]), "X-Forwarded-For") == ["81.2.69.160"]


def test_the_user_agent_label_comes_from_ua_parser():
    traffic = Traffic(make_plan(mix="mobile"))
    labels = {identity.ua_label for identity in traffic.identities(0, 100)}
    assert {"Chrome Mobile / Android", "Mobile Safari / iOS", "Samsung Internet / Android"} <= labels
    assert Traffic(make_plan()).identities(0, 1)[0].ua_label is None


def test_integer_weights_keep_the_exact_ratio_and_round_only_what_cannot_fit():
    assert integer_weights([12.5, 87.5]) == [1, 7]
    assert integer_weights([20.0, 50.0, 30.0]) == [2, 5, 3]
    rounded = integer_weights([1.0, 1.0, 1.0] + [0.0001] * 3)
    assert sum(rounded) == MAX_PERIOD
    assert rounded[:3] == [3333, 3333, 3333] and sum(rounded[3:]) == 1


def test_a_weighted_cycle_counts_the_rank_of_each_value():
    cycle = WeightedCycle([("a", 1.0), ("b", 3.0)])
    ranks = {"a": 0, "b": 0}
    for position in range(40):
        value, rank = cycle.at(position)
        assert rank == ranks[value]
        ranks[value] += 1
    assert ranks == {"a": 10, "b": 30}


# -- request bytes -------------------------------------------------------------------------------------------

def test_a_plain_get_is_the_request_line_and_host_only():
    traffic = Traffic(make_plan())
    assert traffic.render(traffic.identities(0, 1)[0]) == b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:9050\r\n\r\n"


def test_user_in_header_and_cookie_values_expands_to_the_identity_number_and_other_braces_stay():
    traffic = Traffic(make_plan(headers=(("X-User", "u-{user}-{x}{"),), cookies=(("session", "s{user}"),),
                                clients=10))
    identity = traffic.identities(7, 1)[0]
    assert identity.headers == (("X-User", "u-7-{x}{"),)
    request = traffic.render(identity)
    assert header_values(request, "X-User") == ["u-7-{x}{"]
    assert header_values(request, "Cookie") == ["session=s7"]


def test_a_header_given_with_dash_h_replaces_the_default_of_that_name():
    traffic = Traffic(make_plan(mix="browsers", headers=(("user-agent", "mine/1.0"), ("Host", "shop.example"))))
    request = traffic.render(traffic.identities(0, 1)[0])
    assert header_values(request, "User-Agent") == ["mine/1.0"]
    assert header_values(request, "Host") == ["shop.example"]


def test_a_body_is_sent_with_its_content_length():
    traffic = Traffic(make_plan(method="POST", body=b'{"a": 1}', headers=(("Content-Type", "application/json"),)))
    request = traffic.render(traffic.identities(0, 1)[0])
    assert header_values(request, "Content-Length") == ["8"]
    assert request.endswith(b'\r\n\r\n{"a": 1}')


def test_content_length_is_zero_for_an_empty_post_and_absent_for_a_get():
    post = Traffic(make_plan(method="POST"))
    assert header_values(post.render(post.identities(0, 1)[0]), "Content-Length") == ["0"]
    get = Traffic(make_plan())
    assert header_values(get.render(get.identities(0, 1)[0]), "Content-Length") == []


def test_one_cookie_header_holds_the_identity_cookies_then_the_jar_and_the_jar_wins():
    traffic = Traffic(make_plan(cookies=(("a", "1"), ("b", "2"))))
    request = traffic.render(traffic.identities(0, 1)[0], {"b": "jar", "vamp_0f1e2d3c": "9a8b7c6d"})
    assert header_values(request, "Cookie") == ["a=1; b=jar; vamp_0f1e2d3c=9a8b7c6d"]


def test_the_default_headers_come_in_order_before_the_dash_h_headers():
    traffic = Traffic(make_plan(mix="mobile", forwarded_for="81.2.69.160", headers=(("X-A", "1"),)))
    lines = head_lines(traffic.render(traffic.identities(0, 1)[0]))
    assert [line.split(":")[0] for line in lines[1:]] == ["Host", "User-Agent", "X-Forwarded-For", "X-A"]


# -- profiles: what the expected split is computed over --------------------------------------------------------

def test_profiles_group_equal_identities_and_their_shares_add_up_to_one():
    profiles = Traffic(make_plan(forwarded_for="countries:GB=20,US=80", clients=500)).profiles()
    by_country: dict[str, float] = {}
    for identity, share in profiles:
        by_country[identity.country] = by_country.get(identity.country, 0.0) + share
    assert by_country == pytest.approx({"GB": 0.2, "US": 0.8})
    assert Traffic(make_plan(clients=500)).profiles() == [(Traffic(make_plan()).identities(0, 1)[0], 1.0)]


def test_anonymous_profiles_are_one_cycle_of_variants():
    traffic = Traffic(make_plan(mix="browsers"))
    shares: dict[str, float] = {}
    for identity, share in traffic.profiles():
        shares[identity.ua_label] = shares.get(identity.ua_label, 0.0) + share
    assert shares["Chrome / Windows"] == pytest.approx(0.48)
    assert sum(shares.values()) == pytest.approx(1.0)


# -- the cookie jar --------------------------------------------------------------------------------------------

def test_set_cookie_stores_and_reports_a_change_only_when_the_value_changes():
    jar: dict[str, str] = {}
    assert store_set_cookie(jar, b"vamp_1a2b3c4d=0a1b2c3d; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax")
    assert jar == {"vamp_1a2b3c4d": "0a1b2c3d"}
    assert not store_set_cookie(jar, b"vamp_1a2b3c4d=0a1b2c3d; Path=/; Max-Age=1800")
    assert store_set_cookie(jar, b"vamp_1a2b3c4d=ffffffff")
    assert jar == {"vamp_1a2b3c4d": "ffffffff"}


def test_max_age_zero_or_a_past_expiry_deletes_the_cookie():
    jar = {"a": "1", "b": "2", "c": "3"}
    assert store_set_cookie(jar, b"a=; Max-Age=0")
    assert store_set_cookie(jar, b"b=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    assert not store_set_cookie(jar, b"gone=; Max-Age=-1")
    assert jar == {"c": "3"}


def test_max_age_wins_over_expires_and_a_future_expiry_keeps_the_cookie():
    jar: dict[str, str] = {}
    assert store_set_cookie(jar, b"a=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60")
    assert store_set_cookie(jar, b"b=2; Expires=Fri, 31 Dec 9999 23:59:59 GMT")
    assert jar == {"a": "1", "b": "2"}


def test_a_set_cookie_without_a_name_is_ignored():
    jar: dict[str, str] = {}
    assert not store_set_cookie(jar, b"novalue; Path=/")
    assert not store_set_cookie(jar, b"=x")
    assert jar == {}


# -- user-agent mixes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILTIN_MIXES))
def test_every_built_in_user_agent_is_what_its_label_says(name):
    for entry in BUILTIN_MIXES[name]:
        assert ua_label(entry.user_agent) == entry.label
    assert sum(entry.weight for entry in BUILTIN_MIXES[name]) == 100


def test_the_built_in_mixes_cover_the_main_browsers():
    desktop = {entry.label for entry in BUILTIN_MIXES["browsers"]}
    assert {"Chrome / Windows", "Chrome / Mac OS X", "Edge / Windows", "Firefox / Windows", "Firefox / Linux",
            "Safari / Mac OS X"} <= desktop
    mobile = {entry.label for entry in BUILTIN_MIXES["mobile"]}
    assert {"Chrome Mobile / Android", "Mobile Safari / iOS", "Samsung Internet / Android",
            "Firefox Mobile / Android"} <= mobile


def test_a_mix_file_takes_weights_percentages_comments_and_blank_lines(tmp_path):
    mix = tmp_path / "agents.txt"
    mix.write_bytes(b"\xef\xbb\xbf# desktop\n\n30 " + FIREFOX.encode() + b"\r\n12.5% " + SAFARI.encode()
                    + b"\ncurl/8.5.0\n   \n")
    assert load_mix(str(mix)) == [(FIREFOX, 30.0), (SAFARI, 12.5), ("curl/8.5.0", 1.0)]


@pytest.mark.parametrize("content, line, message", [
    (b"curl/8\n\n0 curl/7\n", 3, "above zero"),
    (b"# a\n30\n", 2, "without a user agent"),
    (b"ok/1\nbad \xff\n", 2, "UTF-8"),
    (b"bad\x01agent\n", 1, "control characters"),
])
def test_a_bad_mix_file_line_is_reported_with_file_and_line(tmp_path, content, line, message):
    mix = tmp_path / "agents.txt"
    mix.write_bytes(content)
    with pytest.raises(PlanError, match=f"^--mix: {mix}:{line}: .*{message}"):
        Traffic(make_plan(mix=str(mix)))


def test_an_empty_mix_file_or_an_unknown_mix_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(PlanError, match="^--mix: .*no user agents"):
        load_mix(str(empty))
    with pytest.raises(PlanError, match="^--mix: no built-in mix or file named 'tablets'.*browsers, mobile"):
        load_mix("tablets")


# -- countries -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("country", ["GB", "US", "DE", "JP"])
def test_addresses_for_a_country_are_distinct_public_spread_and_in_that_country(country):
    addresses = addresses_for(country, 50)
    assert len(set(addresses)) == 50
    assert iptocc.country_code(addresses) == [country] * 50
    assert all(IPv4Address(address).is_global for address in addresses)
    assert len({address.split(".")[0] for address in addresses}) > 3
    assert addresses_for(country.lower(), 50) == addresses


def test_addresses_for_a_country_without_addresses_is_a_plan_error():
    with pytest.raises(PlanError, match="^--forwarded-for: .*'XX'"):
        addresses_for("XX", 1)
    with pytest.raises(PlanError, match="^--forwarded-for: .*'XX'"):
        Traffic(make_plan(forwarded_for="countries:GB=50,XX=50"))


def test_a_country_mix_takes_codes_in_any_case_and_weights_with_or_without_percent():
    assert parse_country_mix("countries:gb=20%, US = 50 ,De=30") == [("GB", 20.0), ("US", 50.0), ("DE", 30.0)]


@pytest.mark.parametrize("spec, message", [
    ("GB=20,US=80", "expected an IP address or countries:"),
    ("countries:", "expected an IP address or countries:"),
    ("countries:GBR=20", "expected a country code and weight"),
    ("countries:GB=", "weight of GB must be a number above zero"),
    ("countries:GB=0,US=1", "weight of GB must be a number above zero"),
    ("countries:GB=x", "weight of GB must be a number above zero"),
    ("countries:GB=1,gb=2", "GB is given twice"),
])
def test_a_bad_country_mix_is_a_plan_error_naming_the_option(spec, message):
    with pytest.raises(PlanError, match=f"^--forwarded-for: .*{message}"):
        parse_country_mix(spec)
