"""The condition grammar (gateway/routing/conditions.py): every predicate on real user agents, negations, precedence,
quoting, errors with their positions, the canonical form, and property tests on arbitrary and generated text."""
from __future__ import annotations

import re
from functools import lru_cache

import pytest
import ua_parser
from hypothesis import given, settings, strategies as st

from gateway.routing.conditions import (BROWSER, COOKIE, COUNTRY, DEVICE, EQUALS, EXISTS, HAS, HEADER, HOST, IN,
                                        MAX_DEPTH, METHOD, OS, PATH, PREFIX, MAX_REGEX_PROGRAM, QUERY, REGEX,
                                        USER_AGENT, And, Check, Condition, ConditionError, Const, Not, Or, canonical,
                                        compile_condition, parse, unparse)
from gateway.routing.request import RequestView

# Real user agents, as the browsers send them.
CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.0.0 Mobile Safari/537.36")
CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.0.0 Safari/537.36")
CHROME_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1")
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.4 Mobile/15E148 Safari/604.1")
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.4 Safari/605.1.15")
SAMSUNG_INTERNET = ("Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36")
EDGE_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51")
IE11 = "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko"
CURL = "curl/8.5.0"

GB_ADDRESS, IE_ADDRESS, US_ADDRESS, UNKNOWN_ADDRESS = "192.0.2.10", "198.51.100.7", "203.0.113.5", "10.1.2.3"


class StubLookups:
    """User agents through ua-parser itself; countries from a fixed table."""
    COUNTRIES = {GB_ADDRESS: "GB", IE_ADDRESS: "IE", US_ADDRESS: "US"}

    @staticmethod
    @lru_cache(maxsize=64)
    def ua_families(user_agent: str) -> tuple[str, str, str]:
        result = ua_parser.parse(user_agent)
        return tuple(part.family if part else "Other" for part in (result.user_agent, result.os, result.device))

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        return peer

    def country(self, address: str) -> str | None:
        return self.COUNTRIES.get(address)


LOOKUPS = StubLookups()


def request(user_agent: str | None = CHROME_WINDOWS, *, method: str = "GET", target: str = "/",
            host: str = "example.com", headers: tuple[tuple[str, str], ...] = (), cookie: str | None = None,
            peer: str = GB_ADDRESS) -> RequestView:
    raw = [(b"Host", host.encode())]
    if user_agent is not None:
        raw.append((b"User-Agent", user_agent.encode()))
    if cookie is not None:
        raw.append((b"Cookie", cookie.encode()))
    raw += [(name.encode(), value.encode()) for name, value in headers]
    return RequestView(method, target, raw, host, peer, LOOKUPS)


def matches(condition: str, req: RequestView) -> bool:
    return compile_condition(condition).matches(req)


# -- predicates -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition, agents", [
    ("browser = Chrome", {CHROME_ANDROID, CHROME_WINDOWS, CHROME_IPHONE}),
    ("browser = chrome", {CHROME_ANDROID, CHROME_WINDOWS, CHROME_IPHONE}),
    ('browser = "Chrome Mobile"', {CHROME_ANDROID, CHROME_IPHONE}),
    ("browser = Safari", {SAFARI_IPHONE, SAFARI_MAC}),
    ("browser = Mobile", {CHROME_ANDROID, CHROME_IPHONE, SAFARI_IPHONE}),
    ("browser = Firefox", {FIREFOX_WINDOWS, FIREFOX_LINUX}),
    ("browser = Edge", {EDGE_WINDOWS}),
    ('browser = "Samsung Internet"', {SAMSUNG_INTERNET}),
    ("browser = Chrom", set()),                                         # whole words only
    ("os = Android", {CHROME_ANDROID, SAMSUNG_INTERNET}),
    ("os = iOS", {CHROME_IPHONE, SAFARI_IPHONE}),
    ("os = windows", {CHROME_WINDOWS, FIREFOX_WINDOWS, EDGE_WINDOWS, IE11}),
    ("os = Mac", {SAFARI_MAC}),                                         # "Mac OS X"
    ("device = iPhone", {CHROME_IPHONE, SAFARI_IPHONE}),
    ("device = Samsung", {SAMSUNG_INTERNET}),
    # Vamp's browser names after user-agent are families: the raw agents of Samsung Internet and Edge say
    # "Chrome", and Chrome's says "Safari", yet they do not match.
    ("user-agent = Chrome", {CHROME_ANDROID, CHROME_WINDOWS, CHROME_IPHONE}),
    ("user-agent == safari", {SAFARI_IPHONE, SAFARI_MAC}),
    ("user.agent is Firefox", {FIREFOX_WINDOWS, FIREFOX_LINUX}),
    ("useragent has Edge", {EDGE_WINDOWS}),
    ("user-agent contains IE", {IE11}),
    # Any other value: the raw User-Agent contains it, case-insensitively.
    ("user-agent = curl", {CURL}),
    ("user-agent = CURL/8", {CURL}),
    ("user-agent has SamsungBrowser", {SAMSUNG_INTERNET}),
    ('user-agent contains "Android 13"', {SAMSUNG_INTERNET}),
    ("user-agent = Gecko/20100101", {FIREFOX_WINDOWS, FIREFOX_LINUX}),
    ("user-agent = Trident", {IE11}),
    (r"user-agent ~ /Chrome\/12\d\./", {CHROME_ANDROID, CHROME_WINDOWS, EDGE_WINDOWS}),  # raw, case-sensitive
    ("user-agent ~ /^curl/", {CURL}),
    ("browser ~ /^Chrome Mobile/", {CHROME_ANDROID, CHROME_IPHONE}),
])
def test_user_agent_predicates_match_exactly_the_expected_browsers(condition, agents):
    everyone = {CHROME_ANDROID, CHROME_WINDOWS, CHROME_IPHONE, FIREFOX_WINDOWS, FIREFOX_LINUX, SAFARI_IPHONE,
                SAFARI_MAC, SAMSUNG_INTERNET, EDGE_WINDOWS, IE11, CURL}
    compiled = compile_condition(condition)
    assert {agent for agent in everyone if compiled.matches(request(agent))} == agents
    assert {agent for agent in everyone if not compiled.matches(request(agent))} == everyone - agents


@pytest.mark.parametrize("negated", [
    "user-agent != curl", "user-agent not curl", "user-agent ! curl", "user-agent misses curl",
    "not user-agent = curl", "!(user-agent = curl)",
])
def test_negated_user_agent_forms_are_the_opposite(negated):
    assert not matches(negated, request(CURL))
    assert matches(negated, request(FIREFOX_LINUX))


def test_browser_negation_and_missing_user_agent():
    assert matches("browser != Chrome", request(SAMSUNG_INTERNET))
    assert not matches("browser != Chrome", request(CHROME_ANDROID))
    assert not matches("user-agent = Mozilla", request(None))
    assert matches("user-agent != Mozilla", request(None))
    assert not matches("browser = Chrome", request(None))


@pytest.mark.parametrize("condition, expected", [
    ("host = example.com", True),
    ("host = EXAMPLE.com", True),
    ("host == shop.example.com", False),
    ("host is example.com", True),
    ("host != other.org", True),
    ("host != example.com", False),
    ("host has example", True),
    ("host contains EXAMPLE", True),
    ("host misses example", False),
    ("host ~ /^ex.*com$/", True),
    ("host !~ /^ex/", False),
])
def test_host(condition, expected):
    assert matches(condition, request(host="example.com")) is expected


COOKIES = "session=abc123; theme=dark; empty="


@pytest.mark.parametrize("condition, expected", [
    ("has cookie session", True),
    ("contains cookie theme", True),
    ("has cookie empty", True),
    ("has cookie Session", False),                 # cookie names are case-sensitive
    ("misses cookie session", False),
    ("misses cookie absent", True),
    ("cookie theme = dark", True),
    ("cookie theme is dark", True),
    ("cookie theme = Dark", False),                # values are case-sensitive
    ("cookie theme = dar", False),                 # `=` is exact
    ("cookie theme != dark", False),
    ("cookie session has 123", True),
    ("cookie session contains abc", True),
    ("cookie session has ABC", False),
    ("cookie session misses 123", False),
    ("cookie session misses 999", True),
    ("cookie absent has x", False),                # absent never matches a positive test ...
    ("cookie absent misses x", True),              # ... and always matches its negation
    ("cookie absent = ''", False),
    ("cookie empty = ''", True),
    ("cookie session ~ /^abc\\d+$/", True),
    ("cookie session !~ /^abc/", False),
    ("cookie absent ~ /.*/", False),
])
def test_cookies(condition, expected):
    assert matches(condition, request(cookie=COOKIES)) is expected


HEADERS = (("X-Canary", "yes"), ("Accept", "text/html, application/json"))


@pytest.mark.parametrize("condition, expected", [
    ("has header X-Canary", True),
    ("has header x-canary", True),                 # header names are case-insensitive
    ("contains header ACCEPT", True),
    ("misses header X-Canary", False),
    ("misses header X-Other", True),
    ("header X-CANARY = yes", True),
    ("header x-canary = YES", False),              # values are case-sensitive
    ("header x-canary != no", True),
    ("header accept has application/json", True),
    ("header accept contains xml", False),
    ("header accept misses xml", True),
    ("header x-other has yes", False),
    ("header x-other misses yes", True),
    ("header accept ~ /json$/", True),
    ("header x-canary !~ /^y/", False),
])
def test_headers(condition, expected):
    assert matches(condition, request(headers=HEADERS)) is expected


@pytest.mark.parametrize("condition, peer, expected", [
    ("country = GB", GB_ADDRESS, True),
    ("country = gb", GB_ADDRESS, True),
    ("country is GB", IE_ADDRESS, False),
    ("country != GB", GB_ADDRESS, False),
    ("country != GB", US_ADDRESS, True),
    ("country in (GB, IE)", IE_ADDRESS, True),
    ("country in (gb,ie)", GB_ADDRESS, True),
    ("country in (GB, IE)", US_ADDRESS, False),
    ("country not in (GB, IE)", US_ADDRESS, True),
    ("country not in (GB, IE)", GB_ADDRESS, False),
    ("country ~ /^(GB|IE)$/", IE_ADDRESS, True),
    # An unknown country never matches `=` or `in`; the negations, being negations, do match.
    ("country = GB", UNKNOWN_ADDRESS, False),
    ("country in (GB, IE, US)", UNKNOWN_ADDRESS, False),
    ("country ~ /./", UNKNOWN_ADDRESS, False),
    ("country != GB", UNKNOWN_ADDRESS, True),
    ("country not in (GB)", UNKNOWN_ADDRESS, True),
])
def test_country(condition, peer, expected):
    assert matches(condition, request(peer=peer)) is expected


@pytest.mark.parametrize("condition, expected", [
    ("path = /api/v1/users", True),
    ("path = /api/v1/users/", False),
    ("path = /api", False),
    ("path prefix /api", True),
    ("path prefix /api/v1/", True),
    ("path prefix /apx", False),
    ("path not prefix /api", False),
    ("path not prefix /static", True),
    ("path != /api/v1/users", False),
    (r"path ~ /^\/api\/v\d+\//", True),
    ("path ~ /users$/", True),
    ("path !~ /admin/", True),
    ("method = GET", True),
    ("method = get", True),
    ("method != POST", True),
    ("method ~ /^(GET|HEAD)$/", True),
    ("query id = 7", True),
    ("query id = 8", False),
    ("query id != 8", True),
    ("query tag has beta", True),
    ("has query id", True),
    ("misses query page", True),
    ("query page = 1", False),
    ("query id ~ /^\\d+$/", True),
])
def test_request_line(condition, expected):
    assert matches(condition, request(target="/api/v1/users?id=7&tag=beta-2")) is expected


def test_path_is_percent_decoded():
    assert matches('path = "/a b"', request(target="/a%20b"))


@pytest.mark.parametrize("condition, expected", [
    ("true", True), ("TRUE", True), ("false", False), ("not true", False), ("!false", True),
])
def test_constants(condition, expected):
    assert matches(condition, request()) is expected


# -- combining ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition, expected", [
    ("true or false and false", True),             # and binds tighter than or
    ("(true or false) and false", False),
    ("false and false or true", True),
    ("false and (false or true)", False),
    ("not false and false", False),                # not binds tighter than and
    ("not (false and false)", True),
    ("not not true", True),
    ("! ! true", True),
    ("true && false || true", True),
    ("true & false | true", True),
    ("TRUE AnD NOT FALSE", True),
    ("false or false or false or true", True),
    ("true and true and true and false", False),
])
def test_precedence_and_spellings_of_logic(condition, expected):
    assert matches(condition, request()) is expected


def test_a_realistic_canary_condition():
    condition = compile_condition("browser = Chrome and os = Android and country = GB")
    assert condition.matches(request(CHROME_ANDROID, peer=GB_ADDRESS))
    assert not condition.matches(request(CHROME_ANDROID, peer=IE_ADDRESS))
    assert not condition.matches(request(SAMSUNG_INTERNET, peer=GB_ADDRESS))
    assert not condition.matches(request(CHROME_WINDOWS, peer=GB_ADDRESS))


def test_tokens_need_no_spaces_around_symbols():
    condition = "browser=Chrome&&os=Android||(has cookie canary)&!country=IE"
    assert matches(condition, request(CHROME_ANDROID))
    assert matches(condition, request(FIREFOX_LINUX, cookie="canary=1", peer=GB_ADDRESS))
    assert not matches(condition, request(FIREFOX_LINUX, cookie="canary=1", peer=IE_ADDRESS))


def test_and_or_trees_keep_the_grouping_written():
    a, b, c = (Check(HOST, EQUALS, name) for name in "abc")
    assert parse("host = a and host = b and host = c") == And((a, b, c))
    assert parse("host = a and (host = b and host = c)") == And((a, And((b, c))))
    assert parse("host = a or host = b and host = c") == Or((a, And((b, c))))
    assert parse("((host = a))") == a
    assert parse("not host = a or host = b") == Or((Not(a), b))


def test_a_long_flat_chain_compiles_and_matches():
    condition = compile_condition(" and ".join(["true"] * 3000) + " and host = example.com")
    assert condition.matches(request(host="example.com"))
    assert not condition.matches(request(host="other.org"))
    assert matches(" or ".join(["false"] * 3000 + ["true"]), request())


# -- values and quoting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition, value", [
    ('header x = "Chrome Mobile"', "Chrome Mobile"),
    ("header x = 'Chrome Mobile'", "Chrome Mobile"),
    (r'header x = "say \"hi\""', 'say "hi"'),
    (r"header x = 'it\'s'", "it's"),
    ("header x = 'say \"hi\"'", 'say "hi"'),
    (r'header x = "C:\\dir"', "C:\\dir"),
    (r'header x = "a\d"', "a\\d"),                 # a backslash before anything else is literal
    ('header x = ""', ""),
    ('header x = "and"', "and"),
    ('header x = "a) or (b"', "a) or (b"),
    ("header x = Mozilla/5.0", "Mozilla/5.0"),
    ("header x = a=b!c~d", "a=b!c~d"),
    ("header x = ünïcödé", "ünïcödé"),
])
def test_values(condition, value):
    assert parse(condition) == Check(HEADER, EQUALS, value, name="x")


def test_bare_values_end_at_a_closing_parenthesis_or_a_connective():
    assert parse("(path = /x)") == Check(PATH, EQUALS, "/x")
    assert parse("path = /x&&true") == And((Check(PATH, EQUALS, "/x"), Const(True)))
    assert parse("path prefix /api/v1|false") == Or((Check(PATH, PREFIX, "/api/v1"), Const(False)))


def test_names_may_be_quoted_and_header_names_are_normalised():
    assert parse("has cookie 'my cookie'") == Check(COOKIE, EXISTS, None, name="my cookie")
    assert parse('header "X-Canary" = yes') == Check(HEADER, EQUALS, "yes", name="x-canary")
    assert parse("cookie Session = x") == Check(COOKIE, EQUALS, "x", name="Session")


def test_words_after_not_are_operators_only_where_the_subject_has_them():
    assert parse("path not prefix /a") == Check(PATH, PREFIX, "/a", negated=True)
    assert parse('path not "prefix"') == Check(PATH, EQUALS, "prefix", negated=True)
    assert parse("path != prefix") == Check(PATH, EQUALS, "prefix", negated=True)
    assert parse("host not prefix") == Check(HOST, EQUALS, "prefix", negated=True)
    assert parse("country not in (IN)") == Check(COUNTRY, IN, ("IN",), negated=True)
    assert parse("country != in") == Check(COUNTRY, EQUALS, "IN", negated=True)   # India


# -- canonical text ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical_text", [
    ("BROWSER == chrome && OS is Android", 'browser = "chrome" and os = "Android"'),
    ("User.Agent has Firefox", 'user-agent = "Firefox"'),
    ("useragent misses curl", 'user-agent != "curl"'),
    ("has Cookie session", 'has cookie "session"'),
    ("contains header X-Canary", 'has header "x-canary"'),
    ("Header X-Canary misses 'a'", 'header "x-canary" misses "a"'),
    ("country in (gb, ie)", 'country in ("GB", "IE")'),
    ("country ! in (gb)", 'country not in ("GB")'),
    ("host is EXAMPLE.com", 'host = "example.com"'),
    ("method = get", 'method = "GET"'),
    (r"path ~ /a\/b/", r"path ~ /a\/b/"),
    ("path !~ /x/", "path !~ /x/"),
    (r"""header x = 'say "hi" \\'""", r'header "x" = "say \"hi\" \\"'),
    ("true || false && !true", "true or false and not true"),
    ("(true or false) and false", "(true or false) and false"),
    ("true and (false and true)", "true and (false and true)"),
    ("true or (false or true)", "true or (false or true)"),
    ("(true and false) or true", "true and false or true"),
    ("not (true or false)", "not (true or false)"),
    ("! (true)", "not true"),
    ("((((true))))", "true"),
])
def test_canonical(text, canonical_text):
    assert canonical(text) == canonical_text
    assert canonical(canonical_text) == canonical_text


def test_compile_condition_accepts_text_or_tree_and_exposes_what_it_needs():
    from_text = compile_condition("browser = Chrome and country = GB")
    from_tree = compile_condition(parse("browser = Chrome and country = GB"))
    assert isinstance(from_text, Condition)
    assert from_text == from_tree
    assert from_text.text == 'browser = "Chrome" and country = "GB"'
    assert (from_text.needs_user_agent, from_text.needs_country) == (True, True)
    assert compile_condition("user-agent = Chrome").needs_user_agent        # a browser family
    assert not compile_condition("user-agent = curl").needs_user_agent      # the raw string is enough
    assert not compile_condition("path prefix /api or has cookie x").needs_user_agent
    assert not compile_condition("path prefix /api or has cookie x").needs_country
    assert compile_condition("not (true or os ~ /x/)").needs_user_agent


# -- errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, position, message", [
    ("", 0, "empty condition"),
    ("   ", 0, "empty condition"),
    ("browser", 7, "expected an operator for browser"),
    ("browser =", 9, "expected a value after '='"),
    ("browser ==   ", 13, "expected a value after '=='"),
    ("browser = and os = x", 10, "expected a value after '=', found 'and' (quote it"),
    ("colour = red", 0, "unknown predicate 'colour'"),
    ("browser = Chrome and colour = red", 21, "unknown predicate 'colour'"),
    ("(browser = Chrome", 0, "unclosed '('"),
    ("((browser = Chrome)", 0, "unclosed '('"),
    ("browser = Chrome)", 16, "unexpected ')'"),
    ('browser = "Chrome', 10, "unterminated string"),
    ("browser = 'Chrome\\'", 10, "unterminated string"),
    ("browser = Chrome Mobile", 17, "found 'Mobile' (quote values that contain spaces)"),
    ("(browser = Chrome Mobile)", 18, "expected 'and', 'or' or ')', found 'Mobile'"),
    ("browser = Chrome and", 20, "expected a condition"),
    ("browser = Chrome or )", 20, "expected a condition, found ')'"),
    ("not", 3, "expected a condition"),
    ("()", 1, "expected a condition, found ')'"),
    ("true false", 5, "expected 'and', 'or' or the end of the condition, found 'false'"),
    ("path ~ abc", 7, "expected a /regular expression/ after '~'"),
    ("path ~ /abc", 7, "unterminated regular expression"),
    ("path ~ /a(/", 9, "invalid regular expression: missing )"),
    ("header x ~ /[z-a]/", 13, "invalid regular expression: invalid character class range 'z-a'"),
    ("path ~ /a)/", 9, "invalid regular expression: unexpected )"),
    ("path ~ /a\\/", 7, "unterminated regular expression"),
    ("path ~ /a++/", 9, "invalid regular expression: bad repetition operator '++'"),
    ("path ~ /\\Z/", 8, "invalid regular expression: invalid escape sequence '\\Z'"),
    ("path ~ /((a{100}){100}){100}/", 17, "invalid regular expression: invalid repetition size '{100}'"),
    ("path ~ /x/i", 10, "found 'i'"),
    ("host prefix x", 5, "'prefix' does not apply to host"),
    ("browser has Chrome", 8, "'has' does not apply to browser"),
    ("path in (GB)", 5, "'in' does not apply to path"),
    ("country = UK1", 10, "a country is a two-letter ISO 3166 code, not 'UK1'"),
    ("country in GB", 11, "expected '(' after 'in'"),
    ("country in (GB IE)", 15, "expected ',' or ')' in the country list, found 'IE'"),
    ("country in (GB,)", 15, "expected a country after ','"),
    ("country in (GB", 14, "expected ',' or ')' in the country list, found the end"),
    ("method = 'GE T'", 9, "'GE T' is not an HTTP method"),
    ("browser = ''", 10, "expected a browser family name"),
    ("has cookie", 10, "expected a cookie name after 'cookie'"),
    ("has browser x", 4, "expected 'cookie', 'header' or 'query' after 'has'"),
    ("cookie", 6, "expected a cookie name"),
    ("cookie session abc", 15, "expected an operator for cookie"),
    ("!= x", 1, "expected a condition, found '='"),
])
def test_errors_name_the_fault_and_its_position(text, position, message):
    with pytest.raises(ConditionError) as caught:
        parse(text)
    error = caught.value
    assert error.position == position
    assert message in error.message
    assert str(error) == f"{error.message} at position {position}"
    assert isinstance(error, ValueError)


# -- regular expressions are RE2's: linear time, no backtracking features ---------------------------------

@pytest.mark.parametrize("text, position, construct", [
    (r"user-agent ~ /(a)\1/", 17, "backreference '\\1'"),
    (r"header x-id ~ /^(\w+)-\1$/", 22, "backreference '\\1'"),
    (r"path ~ /(?P<n>a)(?P=n)/", 16, "backreference '(?P='"),
    (r"user-agent ~ /(?=a)/", 14, "lookaround '(?='"),
    (r"user-agent ~ /Chrome(?!.*Edg)/", 20, "lookaround '(?!'"),
    (r"path ~ /(?<=\/api)\/v1/", 8, "lookaround '(?<='"),
    (r"cookie s ~ /x(?<!y)/", 13, "lookaround '(?<!'"),
    (r"path ~ /[(?=]x(?=y)/", 14, "lookaround '(?='"),         # the first one is a character class
    (r"path ~ /\(?=a(?=b)/", 13, "lookaround '(?='"),          # the first one is '(' made optional
    (r"browser = Chrome and os ~ /(?=Android)/", 27, "lookaround '(?='"),
])
def test_what_re2_cannot_express_is_refused_with_its_position(text, position, construct):
    with pytest.raises(ConditionError) as caught:
        parse(text)
    assert caught.value.position == position
    assert f"{construct} is not supported (conditions use RE2, which runs in linear time)" in caught.value.message


def test_a_regex_program_larger_than_the_limit_is_refused_at_the_regex():
    accepted = "a" * (MAX_REGEX_PROGRAM - 10)
    assert matches(f"path ~ /{accepted}/", request(target="/" + accepted))
    with pytest.raises(ConditionError, match=r"regular expression too complex: its RE2 program has \d+ "
                                             rf"instructions, at most {MAX_REGEX_PROGRAM} are allowed") as caught:
        parse("browser = Chrome or path ~ /" + "a" * (MAX_REGEX_PROGRAM + 10) + "/")
    assert caught.value.position == len("browser = Chrome or path ~ /")
    with pytest.raises(ConditionError, match="too complex"):
        parse("path ~ /(a{1,100}b){2}/")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("user_agent", ["a" * 27 + "!", "a" * 65_536 + "!"])
def test_a_catastrophic_backtracking_pattern_is_answered_at_once(user_agent):
    """`(a+)+$` takes seconds with a backtracking engine on 27 a's and a '!' (and forever on 64 KiB)."""
    assert matches("user-agent ~ /(a+)+$/", request(user_agent)) is False
    assert matches("user-agent ~ /(a+)+$/", request(user_agent[:-1])) is True
    assert matches("user-agent !~ /^(a|aa)+$/", request(user_agent)) is True


@pytest.mark.parametrize("condition, agent, expected", [
    (r"user-agent ~ /Chrome\/\d+/", CHROME_WINDOWS, True),
    ("user-agent ~ /(?i)headlesschrome/", "Mozilla/5.0 (X11) HeadlessChrome/124.0.0.0 Safari/537.36", True),
    ("user-agent ~ /(?i)headlesschrome/", CHROME_WINDOWS, False),
    ("user-agent ~ /^curl\\/8\\.[0-9]+\\.[0-9]+$/", CURL, True),
    ("user-agent ~ /\\Q(KHTML, like Gecko)\\E/", CHROME_WINDOWS, True),     # \Q...\E: literal text
    ("user-agent ~ /\\Q(KHTML, like Gecko)\\E/", CURL, False),
])
def test_re2_search_finds_a_match_anywhere(condition, agent, expected):
    assert matches(condition, request(agent)) is expected


def test_compile_and_canonical_raise_condition_errors_too():
    with pytest.raises(ConditionError):
        compile_condition("browser =")
    with pytest.raises(ConditionError):
        canonical("path ~ /(/")


@pytest.mark.parametrize("text", [
    "(" * 10_000 + "true" + ")" * 10_000,
    "(" * 10_000,
    "not " * 10_000 + "true",
    "!" * 10_000 + "true",
    "path ~ /" + "(" * 5_000 + "/",
    "path ~ /a{1001}/",
    "path ~ /(?:(?:a{1000}){1000}){1000}/",
])
def test_pathological_input_is_a_condition_error(text):
    with pytest.raises(ConditionError):
        parse(text)


def test_nesting_up_to_the_limit_is_accepted():
    depth = MAX_DEPTH // 2
    nested = "not (" * depth + "true" + ")" * depth
    assert matches(nested, request()) is True
    with pytest.raises(ConditionError, match="nested too deeply"):
        parse("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("value", [None, True, 42, ["browser = Chrome"]])
def test_non_text_is_a_condition_error(value):
    with pytest.raises(ConditionError, match="must be text"):
        parse(value)


# -- properties ----------------------------------------------------------------------------------------

TOKENS = ["(", ")", "and", "or", "not", "!", "&&", "||", "&", "|", "=", "==", "!=", "~", "!~", "is", "has",
          "contains", "misses", "prefix", "in", "true", "false", "user-agent", "host", "cookie", "header",
          "query", "browser", "os", "device", "country", "path", "method", "Chrome", "GB", "/api", "'", '"',
          "/", "\\", ",", "x", "/a(/", "'a b'", '"q\\"', " ", "\t"]


def check_parses_or_raises_condition_error(text: str) -> None:
    try:
        node = parse(text)
    except ConditionError as error:
        assert 0 <= error.position <= len(text)
        return
    assert parse(unparse(node)) == node
    assert canonical(unparse(node)) == unparse(node)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_condition_error(text):
    check_parses_or_raises_condition_error(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from([" ", ""]))
def test_token_soup_parses_or_raises_condition_error(tokens, separator):
    check_parses_or_raises_condition_error(separator.join(tokens))


@pytest.mark.filterwarnings("error")
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="()[]{}*+?|\\^$.ab-,:=!<>P&~", max_size=30))
def test_any_regular_expression_compiles_or_raises_condition_error(source):
    check_parses_or_raises_condition_error("path ~ /" + source.replace("/", "") + "/")


# Trees that parse can produce, with values from pools that the sample requests below hit and miss.
FAMILY_WORDS = ["Chrome", "chrome mobile", "Safari", "Mobile", "Firefox", "Edge", "IE", "Android", "iOS",
                "Windows", "Mac OS X", "iPhone", "Samsung", "Other"]
AGENT_WORDS = ["Chrome", "firefox", "SAFARI", "Edge", "ie", "curl", "Android", "Mobile", "Gecko",
               "samsungbrowser", "iPhone OS"]
REGEXES = [r"^\/api", r"Chrome\/\d+", "^$", "a|b", "(?i)safari", r"\/v1", "^(GB|IE)$", "abc", r"\d"]
free_text = st.text(max_size=6)


def values(pool: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(pool), free_text)


def named(subject: str, names: list[str], pool: list[str]) -> st.SearchStrategy[Check]:
    name = st.sampled_from(names) | free_text
    if subject == HEADER:
        name = name.map(str.lower).filter(lambda n: n == n.lower())
    return st.one_of(
        st.builds(Check, st.just(subject), st.just(EXISTS), st.none(), name, st.booleans()),
        st.builds(Check, st.just(subject), st.sampled_from([EQUALS, HAS]), values(pool), name, st.booleans()),
        st.builds(Check, st.just(subject), st.just(REGEX), st.sampled_from(REGEXES), name, st.booleans()),
    )


def simple(subject: str, ops: list[str], value: st.SearchStrategy) -> st.SearchStrategy[Check]:
    return st.builds(Check, st.just(subject), st.sampled_from(ops), value, st.none(), st.booleans())


countries = st.sampled_from(["GB", "IE", "US", "FR"])
checks = st.one_of(
    simple(USER_AGENT, [EQUALS], values(AGENT_WORDS)),
    simple(HOST, [EQUALS, HAS], values(["example.com", "shop.example.com", "example"]).filter(
        lambda v: v == v.lower())),
    simple(BROWSER, [EQUALS], st.sampled_from(FAMILY_WORDS)),
    simple(OS, [EQUALS], st.sampled_from(FAMILY_WORDS)),
    simple(DEVICE, [EQUALS], st.sampled_from(FAMILY_WORDS)),
    simple(COUNTRY, [EQUALS], countries),
    simple(COUNTRY, [IN], st.lists(countries, min_size=1, max_size=3).map(tuple)),
    simple(PATH, [EQUALS, PREFIX], values(["/", "/api", "/api/v1/users", "/a b", "/api/"])),
    simple(METHOD, [EQUALS], st.sampled_from(["GET", "POST", "HEAD"])),
    st.builds(Check, st.sampled_from([USER_AGENT, HOST, BROWSER, OS, DEVICE, COUNTRY, PATH, METHOD]), st.just(REGEX),
              st.sampled_from(REGEXES), st.none(), st.booleans()),
    named(COOKIE, ["session", "theme", "Session"], ["abc", "dark", "123", ""]),
    named(HEADER, ["x-canary", "accept"], ["yes", "json", "text/html"]),
    named(QUERY, ["id", "tag"], ["7", "beta", "beta-2"]),
)
trees = st.recursive(
    checks | st.builds(Const, st.booleans()),
    lambda children: st.one_of(
        st.builds(Not, children),
        st.builds(And, st.lists(children, min_size=2, max_size=4).map(tuple)),
        st.builds(Or, st.lists(children, min_size=2, max_size=4).map(tuple)),
    ),
    max_leaves=10,
)

SAMPLE_REQUESTS = [
    request(CHROME_ANDROID, target="/api/v1/users?id=7&tag=beta-2", cookie="session=abc123; theme=dark",
            headers=(("X-Canary", "yes"),), peer=GB_ADDRESS),
    request(SAMSUNG_INTERNET, target="/a%20b", host="shop.example.com", peer=IE_ADDRESS),
    request(SAFARI_IPHONE, method="POST", target="/api/", cookie="Session=1", peer=US_ADDRESS,
            headers=(("Accept", "text/html, application/json"),)),
    request(FIREFOX_LINUX, method="HEAD", target="/?id=8", peer=UNKNOWN_ADDRESS),
    request(EDGE_WINDOWS, target="/v1/x?tag=beta", headers=(("x-canary", "no"),)),
    request(CURL, target="/api", host="example.com", peer=GB_ADDRESS),
    request(None, target="/", host="", peer=UNKNOWN_ADDRESS),
]


def words_contain(family: str, value: str) -> bool:
    """Reference for 'the family contains value as whole words', by comparing word lists."""
    family_words, value_words = family.lower().split(), value.lower().split()
    return any(family_words[i:i + len(value_words)] == value_words for i in range(len(family_words)))


def reference(node, req: RequestView) -> bool:
    """A slow, direct reading of the documented semantics, to check the compiled closures against."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return not reference(node.operand, req)
    if isinstance(node, And):
        return all(reference(operand, req) for operand in node.operands)
    if isinstance(node, Or):
        return any(reference(operand, req) for operand in node.operands)
    return reference_check(node, req) != node.negated


def reference_check(check: Check, req: RequestView) -> bool:
    actual = {
        USER_AGENT: lambda: req.user_agent, HOST: lambda: req.host, BROWSER: lambda: req.browser,
        OS: lambda: req.os, DEVICE: lambda: req.device, COUNTRY: req.country, PATH: lambda: req.path,
        METHOD: lambda: req.method, COOKIE: lambda: req.cookie(check.name),
        HEADER: lambda: req.header(check.name), QUERY: lambda: req.query(check.name),
    }[check.subject]()
    if check.op == EXISTS:
        return actual is not None
    if actual is None:
        return False
    if check.op == REGEX:
        return re.search(check.value, actual) is not None
    if check.op == IN:
        return actual in check.value
    if check.op == PREFIX:
        return actual.startswith(check.value)
    if check.subject == USER_AGENT:
        if check.value.lower() in {"chrome", "firefox", "safari", "edge", "ie"}:
            return words_contain(req.browser, check.value)
        return check.value.lower() in actual.lower()
    if check.subject in (BROWSER, OS, DEVICE):
        return words_contain(actual, check.value)
    if check.op == HAS:
        return check.value in actual
    return actual == check.value


@settings(max_examples=250, deadline=None)
@given(trees)
def test_printed_trees_parse_back_and_compile_to_the_documented_semantics(tree):
    text = unparse(tree)
    assert parse(text) == tree
    compiled = compile_condition(tree)
    assert compiled.text == text
    for req in SAMPLE_REQUESTS:
        assert compiled.matches(req) == reference(tree, req), (text, req.user_agent, req.target)


# Other spellings of the same tree: synonyms, case, quoting styles, spacing, redundant parentheses.
BARE_SAFE = re.compile(r"[^\s()'\"&|]+")
OPERATOR_SPELLINGS = {
    (EQUALS, False): ["=", "==", "is", "IS"], (EQUALS, True): ["!=", "not", "!", "NOT"],
    (HAS, False): ["has", "contains", "Contains"], (HAS, True): ["misses", "MISSES"],
    (REGEX, False): ["~"], (REGEX, True): ["!~"], (PREFIX, False): ["prefix", "PREFIX"],
    (PREFIX, True): ["not prefix", "! prefix"], (IN, False): ["in", "IN"], (IN, True): ["not in", "! in"],
}
SUBJECT_SPELLINGS = {USER_AGENT: ["user-agent", "User-Agent", "user.agent", "useragent"]}


def random_case(draw, word: str) -> str:
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


def spelled_value(draw, value: str) -> str:
    if (BARE_SAFE.fullmatch(value) and value.lower() not in ("and", "or", "in", "prefix")
            and draw(st.booleans())):
        return value
    quote = draw(st.sampled_from(["'", '"']))
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def spelled_check(draw, check: Check) -> str:
    subject = draw(st.sampled_from(SUBJECT_SPELLINGS.get(check.subject, [check.subject])))
    subject = random_case(draw, subject) if check.subject != USER_AGENT else subject
    name = ""
    if check.name is not None:
        written_name = check.name
        if check.subject == HEADER and check.name.isascii():
            written_name = random_case(draw, check.name)
        name = " " + spelled_value(draw, written_name)
    if check.op == EXISTS:
        keyword = draw(st.sampled_from(["misses"] if check.negated else ["has", "contains", "HAS"]))
        return f"{keyword} {subject}{name}"
    spellings = list(OPERATOR_SPELLINGS[check.op, check.negated])
    if check.subject == USER_AGENT and check.op == EQUALS:
        spellings += ["misses"] if check.negated else ["has", "contains"]
    operator = draw(st.sampled_from(spellings))
    if check.op == REGEX:
        value = f"/{check.value}/"
    elif check.op == IN:
        value = "(" + draw(st.sampled_from([",", ", ", " , "])).join(
            spelled_value(draw, draw(st.sampled_from([code, code.lower()]))) for code in check.value) + ")"
    elif check.subject in (COUNTRY, METHOD, HOST):
        value = spelled_value(draw, random_case(draw, check.value) if check.value.isascii() else check.value)
    else:
        value = spelled_value(draw, check.value)
    return f"{subject}{name} {operator} {value}"


@st.composite
def spelled(draw, node) -> str:
    if isinstance(node, Const):
        text = random_case(draw, "true" if node.value else "false")
    elif isinstance(node, Not):
        operand = draw(spelled(node.operand))
        if isinstance(node.operand, (And, Or)):
            operand = f"({operand})"
        text = draw(st.sampled_from(["not ", "NOT ", "!", "! "])) + operand
    elif isinstance(node, (And, Or)):
        connectives = ([" and ", " AND ", " && ", "&&", " & "] if isinstance(node, And)
                       else [" or ", " Or ", " || ", "||", " | "])
        needs_parentheses = (And, Or) if isinstance(node, And) else (Or,)
        parts = []
        for operand in node.operands:
            part = draw(spelled(operand))
            parts.append(f"({part})" if isinstance(operand, needs_parentheses) else part)
        text = parts[0]
        for part in parts[1:]:
            text += draw(st.sampled_from(connectives)) + part
    else:
        text = spelled_check(draw, node)
    if draw(st.integers(0, 5)) == 0:
        text = f"( {text} )"
    return text


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_every_spelling_of_a_tree_parses_to_that_tree(data):
    tree = data.draw(trees)
    text = data.draw(spelled(tree))
    assert parse(text) == tree, text


# -- verdicts remembered per user agent --------------------------------------------------------------------------

AGENTS = [CHROME_ANDROID, CHROME_WINDOWS, CHROME_IPHONE, FIREFOX_WINDOWS, FIREFOX_LINUX, SAFARI_IPHONE, SAFARI_MAC,
          SAMSUNG_INTERNET, EDGE_WINDOWS, IE11, CURL, "", "Firefox", "x" * 600 + " Firefox/125.0"]


def as_the_proxy_sends_it(user_agent: str) -> RequestView:
    """A view as the proxy builds it: the User-Agent picked out of the head, as sent."""
    raw = [(b"Host", b"example.com"), (b"User-Agent", user_agent.encode())]
    return RequestView(b"GET", b"/", raw, "example.com", GB_ADDRESS, LOOKUPS, None, user_agent.encode())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["browser = Firefox", "browser = Chrome and os = Android", "user-agent = Firefox",
                        "user-agent = curl", "device = iPhone or browser = Safari", "not browser = Edge"]),
       st.lists(st.sampled_from(AGENTS), min_size=1, max_size=40))
def test_a_verdict_remembered_per_user_agent_is_the_verdict_judged_afresh(condition, agents):
    remembering = compile_condition(condition).matches          # one compiled condition, as a route holds it
    for agent in agents:
        assert remembering(as_the_proxy_sends_it(agent)) == matches(condition, request(agent)), agent


def test_a_client_sending_a_new_user_agent_every_time_is_judged_right_every_time():
    firefox = compile_condition("browser = Firefox").matches
    for i in range(10_000):                                      # more than one condition remembers
        agent = f"Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0" if i % 2 else f"probe/{i}"
        assert firefox(as_the_proxy_sends_it(agent)) == (i % 2 == 1), agent
