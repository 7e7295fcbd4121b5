"""What one `vamp loadtest` run is asked to do: the validated `Plan`, built from the command line.

Everything a user can get wrong is checked here, before a connection is opened, and reported as a
`PlanError` with one line naming the option at fault (the command exits 2). The rest of the load tester
reads a `Plan` and never re-validates.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from urllib.parse import urlsplit

from gateway.common.units import parse_duration, shown

DEFAULT_DURATION = 10.0         # seconds, when neither --duration nor --requests is given
MAX_CONCURRENCY = 10_000
MAX_CLIENTS = 1_000_000
MAX_GROUPS = 64                 # distinct group labels kept; further ones are counted under OTHER_GROUP

NO_LABEL = "(none)"             # a response without the grouping header / body match
NO_RESPONSE = "(no response)"   # a request that got no response at all (connect, reset, timeout, protocol)
OTHER_GROUP = "(other)"         # labels beyond MAX_GROUPS
UNLABELLED = (NO_LABEL, NO_RESPONSE, OTHER_GROUP)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")     # RFC 9110 token: header and cookie names


class PlanError(ValueError):
    """An option is invalid: the message names it and says what was expected."""


@dataclass(frozen=True)
class Grouping:
    """How responses are told apart: `header:NAME`, `body:/REGEX/` or `status`."""
    kind: str                           # "header" | "body" | "status"
    text: str                           # as the user wrote it, for reports
    header: bytes = b""                 # lower-case header name (kind "header")
    pattern: re.Pattern[bytes] | None = None   # kind "body": group = first capture group, else whole match

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class Plan:
    # where
    url: str
    host: str                           # address to connect to (IPv6 without brackets)
    port: int
    target: str                         # request target: path and query, e.g. "/a?b=1"
    host_header: str                    # the Host header sent, e.g. "127.0.0.1:9050"
    # what
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()   # -H; values may hold {user} (the virtual user's number)
    cookies: tuple[tuple[str, str], ...] = ()   # --cookie; values may hold {user}
    # how much
    duration: float | None = DEFAULT_DURATION   # seconds; None when bounded by --requests only
    requests: int | None = None
    concurrency: int = 64               # connections (closed model: requests in flight)
    rate: float | None = None           # requests/s for the open model; None: closed model
    processes: int = 1
    timeout: float = 10.0               # seconds a request may take before it counts as a timeout
    # grouping and verdict
    by: Grouping = field(default_factory=lambda: Grouping("status", "status"))
    expect: dict[str, float] | None = None      # group label -> expected share (fractions adding up to 1)
    from_gateway: str | None = None     # gateway name whose routes give the expected split
    admin: str | None = None            # admin API base URL for --from-gateway
    admin_token: str | None = None
    max_errors: float = 0.001           # fraction of requests allowed to fail
    alpha: float = 0.001                # significance level of the chi-square test
    # who
    clients: int | None = None          # virtual users; None: anonymous requests
    sticky: bool = False                # virtual users keep cookies; report users who saw several groups
    mix: str | None = None              # user-agent mix: "browsers", "mobile" or a file
    forwarded_for: str | None = None    # "countries:GB=20,US=80" or a literal address
    # output
    json_path: str | None = None
    plot_path: str | None = None
    progress: bool = True               # live progress line on stderr (when it is a terminal)

    @property
    def open_model(self) -> bool:
        return self.rate is not None


# -- parsing helpers (each raises PlanError naming its option) -------------------------------------------

def parse_url(url: str) -> tuple[str, int, str, str]:
    """'http://host:port/path?q' -> (connect host, port, target, Host header)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise PlanError(f"URL: expected http://HOST[:PORT]/PATH, got {shown(url)}"
                        + (" (https is not supported: test the gateway's plain HTTP listener)"
                           if parts.scheme == "https" else ""))
    try:
        host, port = parts.hostname, parts.port or 80
    except ValueError as exc:
        raise PlanError(f"URL: {exc} in {shown(url)}") from None
    if not host:
        raise PlanError(f"URL: no host in {shown(url)}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rpartition("@")[2]
    return host, port, target, netloc


def parse_grouping(text: str) -> Grouping:
    """`header:X-Version`, `body:/version (\\S+)/` (or `body:REGEX`), `status`."""
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "status" and not sep:
        return Grouping("status", "status")
    if kind == "header" and rest.strip():
        name = rest.strip()
        if not _TOKEN.fullmatch(name):
            raise PlanError(f"--by: {shown(name)} is not a header name")
        return Grouping("header", f"header:{name}", header=name.lower().encode("ascii"))
    if kind == "body" and rest:
        source = rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] == "/" else rest
        try:
            pattern = re.compile(source.encode("utf-8"))
        except re.error as exc:
            raise PlanError(f"--by: invalid regular expression {shown(source)}: {exc}") from None
        if pattern.groups > 1:
            raise PlanError("--by: the body regex may have at most one capture group (its text names the group)")
        return Grouping("body", f"body:/{source}/", pattern=pattern)
    raise PlanError(f"--by: expected header:NAME, body:/REGEX/ or status, got {shown(text)}")


def parse_expectations(items: list[str]) -> dict[str, float]:
    """`--expect 1.0.0=90% --expect 1.1.0=10%` -> {"1.0.0": 0.9, "1.1.0": 0.1}.

    Percentages must add up to 100%; plain numbers are relative weights (`v1=9 v2=1`). Not both."""
    shares: dict[str, float] = {}
    percent_given = plain_given = False
    for item in items:
        label, sep, value = item.rpartition("=")
        value = value.strip()
        if not sep or not label:
            raise PlanError(f"--expect: expected GROUP=SHARE like 1.0.0=90%, got {shown(item)}")
        percent = value.endswith("%")
        number = _number(value[:-1] if percent else value, "--expect", item)
        if number < 0:
            raise PlanError(f"--expect: a share cannot be negative, got {shown(item)}")
        percent_given |= percent
        plain_given |= not percent
        if label in shares:
            raise PlanError(f"--expect: group {label!r} is given twice")
        shares[label] = number
    if percent_given and plain_given:
        raise PlanError("--expect: give every share as a percentage, or every one as a plain weight")
    total = sum(shares.values())
    if percent_given and abs(total - 100.0) > 0.01:
        raise PlanError(f"--expect: the percentages add up to {total:g}%, not 100%")
    if total <= 0:
        raise PlanError("--expect: at least one share must be above zero")
    return {label: value / total for label, value in shares.items()}


def parse_header(text: str, option: str = "-H") -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise PlanError(f"{option}: expected 'Name: value', got {shown(text)}")
    value = value.strip()
    if any(ch in value for ch in "\r\n\0"):
        raise PlanError(f"{option}: a header value cannot hold CR, LF or NUL")
    return name, value


def parse_cookie(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not _TOKEN.fullmatch(name) or any(c in value for c in ";,\r\n\0 "):
        raise PlanError(f"--cookie: expected NAME=VALUE (no spaces, ';' or ','), got {shown(text)}")
    return name, value


def parse_body(text: str | None) -> bytes:
    """`--body TEXT` or `--body @FILE`."""
    if text is None:
        return b""
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise PlanError(f"--body: cannot read {text[1:]!r}: {exc.strerror}") from None
    return text.encode("utf-8")


def parse_rate(text: str | None) -> float | None:
    if text is None:
        return None
    rate = _number(text.removesuffix("/s"), "--rate", text)
    if not 0 < rate <= 10_000_000:
        raise PlanError(f"--rate: expected requests per second above 0, got {shown(text)}")
    return rate


def parse_fraction(text: str, option: str) -> float:
    """'0.1%' -> 0.001; '0.05' -> 0.05 (a bare number is a fraction)."""
    percent = text.strip().endswith("%")
    number = _number(text.strip().removesuffix("%"), option, text)
    value = number / 100 if percent else number
    if not 0 <= value <= 1:
        raise PlanError(f"{option}: expected a share from 0 to 1 (or 0% to 100%), got {shown(text)}")
    return value


def parse_seconds(text: str, option: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise PlanError(f"{option}: {exc}") from None
    if seconds <= 0:
        raise PlanError(f"{option}: expected a duration above zero, got {shown(text)}")
    return seconds


def positive_int(text: str | int, option: str, maximum: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise PlanError(f"{option}: expected a whole number, got {shown(text)}") from None
    if not 1 <= value <= maximum:
        raise PlanError(f"{option}: expected a number from 1 to {maximum}, got {value}")
    return value


def _number(text: str, option: str, whole: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise PlanError(f"{option}: expected a number, got {shown(whole)}") from None
    if not math.isfinite(number):
        raise PlanError(f"{option}: expected a finite number, got {shown(whole)}")
    return number


def is_ip_literal(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
