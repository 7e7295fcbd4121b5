"""The syntax of a route's path rewrites and header rules (docs/rewrites.md): what is valid, shared by the
validation (`gateway.config.load`, which reports a fault with its field) and the proxy, which compiles the rules
(`gateway.proxy.rules`).

- A path (`strip_prefix`, the literal text of a replacement) is made of RFC 3986 path characters: letters,
  digits, `- . _ ~ ! $ & ' ( ) * + , ; = : @ /` and `%` followed by two hex digits. No `?` (the query string is
  kept as it came) and no `#`.
- A replacement is that text with `\\0` (the whole match) and `\\1` to `\\9` (the regex's groups); it begins with
  `/` or with a group.
- A header name is an RFC 9110 token; a value is text without control characters (a tab inside is allowed),
  neither beginning nor ending with whitespace, sent as UTF-8.
- No rule may name the headers that frame a message or describe its connection (`Connection`,
  `Transfer-Encoding`, `Content-Length`, `Upgrade`, `Keep-Alive`, `TE`, `Trailer`, `Proxy-*`): the gateway writes
  those itself. Request rules may not name the headers the gateway adds or acts on either (`X-Forwarded-For`,
  `X-Forwarded-Proto`, `X-Forwarded-Host`, `Expect`), and may only `set` the `Host` (to a valid host[:port]).

Faults are `RuleError`s: a message and, where it helps, the 0-based position in the text at fault; `str()` is
`"<message> at position <n>"` then, as for conditions.
"""
from __future__ import annotations

import re
import string
from typing import Final

_PATH_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%")
_HEX: Final = frozenset(string.hexdigits)
_DIGITS: Final = frozenset("0123456789")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_VALUE: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_BAD_VALUE_CHARACTER: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

FRAMING_HEADERS: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
                                    "te", "trailer", "trailers"})
GATEWAY_REQUEST_HEADERS: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "expect"})
OPERATIONS: Final = ("set", "add", "remove")


class RuleError(ValueError):
    """A rewrite or header rule that is not valid; `position` is the 0-based offset of the fault, if any."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} at position {position}")
        self.message = message
        self.position = position


def check_path_text(text: str, what: str) -> None:
    """`text` is made of path characters (see the module docstring), each `%` starting a percent-encoding."""
    for position in range(len(text)):
        _check_path_character(text, position, what)


def _check_path_character(text: str, position: int, what: str) -> None:
    character = text[position]
    if character not in _PATH_CHARACTERS:
        shown = repr(character) if character.isprintable() else f"U+{ord(character):04X}"
        hint = " (the query string is kept as it came)" if character == "?" else ""
        raise RuleError(f"{what} may hold only path characters, not {shown}{hint}", position)
    encoded = text[position + 1:position + 3]
    if character == "%" and (len(encoded) < 2 or not set(encoded) <= _HEX):
        raise RuleError(f"{what}: '%' must start a percent-encoding like %2F", position)


def check_strip_prefix(text: str) -> None:
    if not text.startswith("/") or text == "/":
        raise RuleError("expected a path prefix like /api: it begins with '/' and is more than '/'", 0)
    if text.endswith("/"):
        raise RuleError("a prefix ends at a segment boundary: write it without the trailing '/'", len(text) - 1)
    check_path_text(text, "a prefix")


def parse_replacement(text: str, groups: int) -> tuple[bytes | int, ...]:
    """A replacement as pieces: literal bytes, and group numbers (0 the whole match), for a regex with `groups`
    groups."""
    pieces: list[bytes | int] = []
    literal = ""
    position = 0
    while position < len(text):
        character = text[position]
        if character != "\\":
            _check_path_character(text, position, "a replacement")
            literal += character
            position += 1
            continue
        following = text[position + 1:position + 2]
        if following in _DIGITS:
            number = int(following)
            if number > groups:
                have = "no group" if groups == 0 else f"{groups} group{'s' if groups > 1 else ''}"
                raise RuleError(f"\\{number} names group {number}, but the regex has {have}", position)
            if literal:
                pieces.append(literal.encode("ascii"))
                literal = ""
            pieces.append(number)
        else:
            raise RuleError("a backslash starts \\0 (the match) or \\1 to \\9 (a group); a path has no backslash",
                            position)
        position += 2
    if literal:
        pieces.append(literal.encode("ascii"))
    if not pieces or (not text.startswith("/") and not isinstance(pieces[0], int)):
        raise RuleError("a replacement begins with '/' or with a group like \\1", 0)
    return tuple(pieces)


def check_header_name(name: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise RuleError(f"{name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")


def header_refused(name: str, side: str, operation: str) -> str | None:
    """Why a rule of `side` ("request" or "response") may not `operation` the header `name`; None if it may."""
    lower = name.lower()
    if lower in FRAMING_HEADERS or lower.startswith("proxy-"):
        return "it frames the message or belongs to one connection (the gateway writes those itself)"
    if side == "request" and lower in GATEWAY_REQUEST_HEADERS:
        return "the gateway adds or acts on it itself (docs/gateway-config.md, Trusted proxies)"
    if side == "request" and lower == "host" and operation != "set":
        return "a request has exactly one Host: it may be set, not added or removed"
    return None


def check_header_value(value: str, name: str) -> None:
    bad = _BAD_VALUE_CHARACTER.search(value)
    if bad:
        raise RuleError(f"a header value cannot hold the control character U+{ord(bad.group()):04X}", bad.start())
    if value != value.strip(" \t"):
        raise RuleError("a header value cannot begin or end with whitespace",
                        0 if value[:1] in (" ", "\t") else len(value) - 1)
    if name.lower() == "host" and not _HOST_VALUE.fullmatch(value):
        raise RuleError(f"expected a host[:port] for Host, like 'api.internal' or '10.0.0.7:8080', got {value!r}")
