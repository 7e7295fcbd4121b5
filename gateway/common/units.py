"""The small value syntaxes of the gateway configuration: percentages, durations, ports and addresses.

Each `parse_*` accepts what a person writes in YAML (or a script sends as JSON) and returns a plain value, or
raises `ValueError` whose message is one line saying what was expected and what was given;
`gateway.config.load` adds the field at fault. Each `format_*` writes a value back so that parsing it again gives
exactly the same value.

- Percentages are returned as integer basis points (10000 = 100%): "97.5%", "97.5", 97.5 and 100 are all
  percentages (a bare number is a percentage, never a fraction); at most two decimals.
- Durations are returned as float seconds: a bare number is seconds; units are `ms|msec|millisecond(s)`,
  `s|sec|second(s)`, `m|min|minute(s)`, `h|hr|hrs|hour(s)` and `d|day(s)`, case-insensitive, e.g. "30m",
  "1.5s", "500ms". At most 365 days.
- Ports are "9050", 9050, "9050/http" or "9050/tcp" (protocol defaults to http); a gateway's port may also be
  "443/https" (GATEWAY_PROTOCOLS).
- Addresses are "host:port": an IPv4 literal, an IPv6 literal in brackets ("[::1]:8081") or a DNS host name
  (letters, digits, '-' and '_', dot-separated labels; returned lower case).

Also the wording shared by every reader of such documents: `shown` quotes a value, `unknown_field` names a
field that does not belong (with a did-you-mean hint).
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from decimal import Decimal

PROTOCOLS = ("http", "tcp")
GATEWAY_PROTOCOLS = ("http", "https", "tcp")   # a gateway terminates TLS; a breed's port is http or tcp
MAX_DURATION = 365 * 86400.0

_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PERCENT = re.compile(rf"({_NUMBER.pattern})\s*%?")
_DURATION = re.compile(rf"({_NUMBER.pattern})\s*([a-z]*)")
_PORT = re.compile(r"([0-9]{1,5})(?:/([a-z]+))?")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

_UNIT_SECONDS = {
    **dict.fromkeys(("ms", "msec", "millisecond", "milliseconds"), Decimal("0.001")),
    **dict.fromkeys(("", "s", "sec", "secs", "second", "seconds"), Decimal(1)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), Decimal(60)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), Decimal(3600)),
    **dict.fromkeys(("d", "day", "days"), Decimal(86400)),
}
_FORMAT_UNITS = (("d", Decimal(86400)), ("h", Decimal(3600)), ("m", Decimal(60)), ("s", Decimal(1)))


def shown(value: object) -> str:
    """A value as a short, single-line quotation for error messages: '97.555%', '99999', null, a list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"'{value}'" if isinstance(value, float) or abs(value) < 10**18 else "a very large number"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def unknown_field(body: Iterable[str], allowed: tuple[str, ...], what: str) -> tuple[str, str] | None:
    """(key, message) for the first key of `body` that is not in `allowed`, with a did-you-mean hint; None
    when every key is known. Config and DSL readers raise it with their own error type and location."""
    for key in body:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return key, f"unknown field{hint}; {what} has: {', '.join(allowed)}"
    return None


def _scalar_text(value: object) -> str | None:
    """The text of a number or string, None for anything else (booleans included: YAML's `yes` is not 1)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else None
    if isinstance(value, float):
        return repr(value)      # shortest text that reads back as the same float; 'nan'/'inf' fail later
    if isinstance(value, str):
        return value.strip().lower()
    return None


# -- percentages -------------------------------------------------------------------------------------
def parse_percent(value: object) -> int:
    """'97.5%', '97.5', 97.5, 100, '0%' -> basis points (9750, 9750, 9750, 10000, 0)."""
    text = _scalar_text(value)
    match = _PERCENT.fullmatch(text) if text is not None else None
    if match is None:
        if text is not None and text.startswith("-"):
            raise ValueError(f"expected a percentage from 0% to 100%, got {shown(value)}")
        raise ValueError(f"expected a percentage like '97.5%', got {shown(value)}")
    basis_points = Decimal(match.group(1)) * 100
    if basis_points != basis_points.to_integral_value():
        raise ValueError(f"expected a percentage with at most two decimals, got {shown(value)}")
    if basis_points > 10_000:
        raise ValueError(f"expected a percentage from 0% to 100%, got {shown(value)}")
    return int(basis_points)


def format_percent(basis_points: int) -> str:
    """9750 -> '97.5%', 10000 -> '100%', 1 -> '0.01%'."""
    whole, hundredths = divmod(basis_points, 100)
    if hundredths == 0:
        return f"{whole}%"
    return f"{whole}.{hundredths:02d}".rstrip("0") + "%"


# -- durations ---------------------------------------------------------------------------------------
def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """'30m', '2s', '1h', '500ms', '1.5s', 30 (seconds) -> float seconds; greater than zero unless allowed."""
    text = _scalar_text(value)
    match = _DURATION.fullmatch(text) if text is not None else None
    if match is None:
        raise ValueError(f"expected a duration like '2s', '500ms', '30m' or '1h', got {shown(value)}")
    number, unit = match.groups()
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"unknown unit '{unit}' in {shown(value)}; use ms, s, m, h or d")
    seconds = float(Decimal(number) * _UNIT_SECONDS[unit])
    if seconds == 0 and not allow_zero:
        raise ValueError(f"expected a duration greater than zero, got {shown(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 365d, got {shown(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """1800 -> '30m', 2 -> '2s', 3600 -> '1h', 0.5 -> '500ms', 1.5 -> '1.5s' (reads back exactly)."""
    exact = Decimal(repr(float(seconds)))
    for unit, unit_seconds in _FORMAT_UNITS:
        count = exact / unit_seconds
        if count >= 1 and count == count.to_integral_value():
            return f"{int(count)}{unit}"
    millis = exact * 1000
    if exact < 1 and millis == millis.to_integral_value():
        return f"{int(millis)}ms"
    return f"{exact:f}s"


# -- ports and addresses -----------------------------------------------------------------------------
def parse_port(value: object, protocols: tuple[str, ...] = PROTOCOLS) -> tuple[int, str]:
    """'9050', 9050, '9050/http', '9050/tcp' -> (9050, 'http' | 'tcp'); other `protocols` (GATEWAY_PROTOCOLS:
    '443/https') when allowed."""
    text = _scalar_text(value)
    match = _PORT.fullmatch(text) if text is not None and not isinstance(value, float) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535 or (match.group(2) or "http") not in protocols:
        allowed = ", ".join("/" + protocol for protocol in protocols[:-1]) + " or /" + protocols[-1]
        raise ValueError(f"expected a port 1-65535 with optional {allowed}, got {shown(value)}")
    return int(match.group(1)), match.group(2) or "http"


def is_host_name(name: str) -> bool:
    """A DNS-style host name (lower case): dot-separated labels of letters, digits, '-' and '_', not
    starting or ending with '-'; the last label not all digits (so '256.1.1.1' is no host name)."""
    labels = name.split(".")
    return (len(name) <= 253
            and all(_HOST_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def parse_address(value: object) -> tuple[str, int]:
    """'127.0.0.1:8081', '[::1]:8081', 'localhost:8081' -> (host, port); IPv6 compressed, names lower case."""
    expected = f"expected host:port (IPv6 in brackets, like '[::1]:8081'), got {shown(value)}"
    if not isinstance(value, str):
        raise ValueError(expected)
    host, colon, port_text = value.strip().rpartition(":")
    if not colon or not host:
        raise ValueError(expected)
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
            and 1 <= int(port_text) <= 65535):
        raise ValueError(f"expected a port 1-65535 after the ':' in {shown(value)}")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port_text)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {shown(value)}") from None
    if ":" in host:
        raise ValueError(f"an IPv6 address needs brackets, like '[::1]:8081', got {shown(value)}")
    host = host.lower()
    try:
        return str(ipaddress.IPv4Address(host)), int(port_text)
    except ValueError:
        if not is_host_name(host):
            raise ValueError(f"invalid host name in {shown(value)}") from None
    return host, int(port_text)
