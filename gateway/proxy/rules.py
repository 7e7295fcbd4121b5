"""A route's path rewrites and header rules (docs/rewrites.md), compiled once per route table and applied to the
heads that go through the route: `RequestRules` to the request head its backend gets, `ResponseRules` to the
response head the client gets. The syntax (validated at load time) is `gateway.config.rewrites`.

A route without rules has None for either (`RouteState.request_rules`, `.response_rules`): the proxy tests that
once per head, and pays nothing else. With rules, the result for a head is a function of the head's exact bytes
and the route alone, so it is kept in a small cache of the rules object (as `request_head` and `response_head`
keep their readings): a keep-alive client repeating its head, or a backend repeating its own, costs one
dictionary lookup. No route's cache holds another route's heads.

Request heads, in this order:
1. `strip_prefix` takes a leading prefix off the path on a segment boundary (`/api/x` -> `/x`, `/api` -> `/`,
   `/apix` unchanged), then
2. `rewrite.path` replaces every match of its regex in the path (the target up to `?`, as sent: percent-encoded)
   with the replacement, whose `\\0` is the match and `\\1`..`\\9` its groups (a group that did not take part is
   empty); a path that does not match is unchanged. A result that does not begin with `/` gets one. The query
   string is kept as it came. The target `*` (OPTIONS) is never rewritten.
3. Header lines named in `remove` or `set` are dropped (names compared without regard to case), then one line per
   `set` and one per `add` are appended. The gateway's own X-Forwarded-* lines cannot be named (validation).

Response heads (the backend's, never the gateway's own answers; 1xx interim responses pass as they came): the
header rules as for requests, on the end-to-end header lines (the gateway's framing lines come after them).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import re2

from gateway.common.memo import remember
from gateway.config import model
from gateway.config.rewrites import parse_replacement
from gateway.proxy.response_head import ResponseHead
from gateway.proxy.wire import CRLF
from gateway.routing.conditions import compile_regex

CACHE_SIZE: Final = 256             # heads kept per route and direction; the cache starts afresh when full
CACHE_HEAD_BYTES: Final = 4096      # longer heads are rewritten every time

_UNANCHORED: Final = re2._Anchor.UNANCHORED
Match = Callable[[int, bytes, int, int], Sequence[tuple[int, int]]]


class HeaderEdit:
    """One direction's `set`/`add`/`remove`: which lines go, which are appended."""
    __slots__ = ("drop", "lines")

    def __init__(self, rules: model.HeaderRules) -> None:
        self.drop = frozenset(name.lower().encode("ascii") for name in
                              (*(name for name, _ in rules.set), *rules.remove))
        self.lines = b"".join(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("utf-8"))
                              for name, value in (*rules.set, *rules.add))

    def block(self, lines: list[bytes]) -> bytes:
        """Header `lines` (without their CRLF) edited, as a block of lines each ending with CRLF."""
        drop = self.drop
        if drop:
            lines = [line for line in lines if line.partition(b":")[0].lower() not in drop]
        return b"".join([line + CRLF for line in lines]) + self.lines


class TargetRewrite:
    """`strip_prefix` then `rewrite.path`, on a request target."""
    __slots__ = ("prefix", "prefix_slash", "match", "pieces")

    def __init__(self, route: model.Route) -> None:
        self.prefix = route.strip_prefix.encode("ascii") if route.strip_prefix is not None else None
        self.prefix_slash = self.prefix + b"/" if self.prefix is not None else b""
        self.match: Match | None = None
        self.pieces: tuple[bytes | int, ...] = ()
        if route.rewrite is not None:
            regex = compile_regex(route.rewrite.regex, captures=True)
            self.match = regex._regexp.Match
            self.pieces = parse_replacement(route.rewrite.replace, regex.groups)

    def target(self, url: bytes) -> bytes:
        if url[:1] != b"/":
            return url                              # "*"
        path, mark, query = url.partition(b"?")
        prefix = self.prefix
        if prefix is not None:
            if path == prefix:
                path = b"/"
            elif path.startswith(self.prefix_slash):
                path = path[len(prefix):]
        if self.match is not None:
            path = self.substituted(path)
            if path[:1] != b"/":
                path = b"/" + path
        return path + mark + query

    def substituted(self, path: bytes) -> bytes:
        """Every non-overlapping match replaced, left to right; an empty match is not taken twice at one place
        (Python's `re.sub` rule)."""
        match = self.match
        assert match is not None
        out: list[bytes] = []
        size = len(path)
        done = pos = 0                  # path[:done] is in `out`; the next search starts at `pos`
        after_empty = False
        while pos <= size:
            spans = match(_UNANCHORED, path, pos, size)
            start, end = spans[0]
            if start < 0:
                break
            if start == end == pos and after_empty:
                pos += 1                # the same empty match again: move on one byte
                after_empty = False
                continue
            out.append(path[done:start])
            for piece in self.pieces:
                if isinstance(piece, int):
                    first, last = spans[piece]
                    if first >= 0:
                        out.append(path[first:last])
                else:
                    out.append(piece)
            done = pos = end
            after_empty = start == end
        if not out:
            return path
        out.append(path[done:])
        return b"".join(out)


class RequestRules:
    """What a route does to the request heads it forwards."""
    __slots__ = ("path", "headers", "_heads")

    def __init__(self, route: model.Route) -> None:
        self.path = TargetRewrite(route) if route.strip_prefix is not None or route.rewrite is not None else None
        self.headers = HeaderEdit(route.request_headers) if route.request_headers is not None else None
        self._heads: dict[bytes, bytes] = {}

    def head(self, head: bytes) -> bytes:
        """`head` (request line and header lines as the backend would get them, without the empty line that ends
        the head: the gateway's X-Request-Id line and that empty line follow, gateway.proxy.client) with the rules
        applied."""
        done = self._heads.get(head)
        return done if done is not None else remember(self._heads, head, self._applied(head), CACHE_SIZE,
                                                      CACHE_HEAD_BYTES)

    def _applied(self, head: bytes) -> bytes:
        line_end = head.index(CRLF)
        request_line = head[:line_end]
        if self.path is not None:
            # the forwarded request line is "<method> <target> HTTP/1.1" (gateway.proxy.request_head)
            method, _, rest = request_line.partition(b" ")
            url, _, version = rest.rpartition(b" ")
            request_line = b"%s %s %s" % (method, self.path.target(url), version)
        if self.headers is None:
            return request_line + head[line_end:]
        return b"%s\r\n%s" % (request_line, self.headers.block(head[line_end + 2:-2].split(CRLF)
                                                                if len(head) > line_end + 2 else []))


class ResponseRules:
    """What a route does to the response heads of its backends."""
    __slots__ = ("headers", "_heads")

    def __init__(self, rules: model.HeaderRules) -> None:
        self.headers = HeaderEdit(rules)
        self._heads: dict[bytes, ResponseHead] = {}

    def head(self, raw: bytes, head: ResponseHead) -> ResponseHead:
        """The reading `head` of the raw response head `raw`, with the rules applied to its header lines (and
        its `plain` head made anew, so the common response stays one cached write)."""
        done = self._heads.get(raw)
        return done if done is not None else remember(self._heads, raw, self._applied(head), CACHE_SIZE,
                                                      CACHE_HEAD_BYTES)

    def _applied(self, head: ResponseHead) -> ResponseHead:
        lines = head.prefix.split(CRLF)             # status line, header lines, "" (each line ended with CRLF)
        prefix = b"%s\r\n%s" % (lines[0], self.headers.block(lines[1:-1]))
        return ResponseHead(head.status, head.content_length, head.chunked, head.bad_coding, head.upgrade, prefix)


def compile_rules(route: model.Route) -> tuple[RequestRules | None, ResponseRules | None]:
    """A route's rules for each direction, None for a direction without any."""
    request = None
    if route.strip_prefix is not None or route.rewrite is not None or route.request_headers is not None:
        request = RequestRules(route)
    response = ResponseRules(route.response_headers) if route.response_headers is not None else None
    return request, response
