"""A client's request head, read once from its raw bytes: what the proxy and routing need of it, what makes it
unacceptable, and the head a backend gets (all but the X-Forwarded-* lines, which depend on the connection).

The client parser (llhttp) frames and validates requests without a Python call per header; the raw head it
accepted is read here. llhttp is strict (CRLF line ends, no folded lines, no whitespace before a colon, one
request line of method, target and version), so a head it accepted splits exactly on CRLF, each header line on
its first colon. Clients repeat their heads (a keep-alive client polling, a fleet of one app), so a reading is
kept in a small cache keyed by the head's exact bytes: it is a function of those bytes alone, so no request can
see another's data, and a client sending a new head every time only costs the reading it would cost anyway.
"""
from __future__ import annotations

import re
from typing import Final

from gateway.common.memo import remember
from gateway.proxy.wire import CRLF, HOP_BY_HOP, MAX_HEAD_BYTES, connection_tokens, named_headers

CACHE_SIZE: Final = 512             # heads kept; the cache starts afresh when full
CACHE_HEAD_BYTES: Final = 4096      # longer heads are read every time

BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})     # a length is always sent for these

# Request headers the proxy looks at, by lower-case name; the rest of HOP_BY_HOP is dropped.
_HOST: Final = 0
_USER_AGENT: Final = 1
_CONTENT_LENGTH: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONNECTION: Final = 4
_UPGRADE: Final = 5
_FORWARDED_FOR: Final = 6
_FORWARDED_PROTO: Final = 7
_FORWARDED_HOST: Final = 8
_EXPECT: Final = 9
_HOP_BY_HOP: Final = 10
_REQUEST_ID: Final = 11
_REQUEST_HEADERS: Final = {
    **{name: _HOP_BY_HOP for name in HOP_BY_HOP},
    b"host": _HOST, b"user-agent": _USER_AGENT, b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING, b"connection": _CONNECTION, b"upgrade": _UPGRADE,
    b"x-forwarded-for": _FORWARDED_FOR, b"x-forwarded-proto": _FORWARDED_PROTO,
    b"x-forwarded-host": _FORWARDED_HOST, b"expect": _EXPECT, b"x-request-id": _REQUEST_ID,
}
# A client's X-Request-Id worth keeping (from a trusted proxy): 1-200 visible ASCII characters but `"` and `\`
# (so that it goes into a log line as it is).
_SANE_REQUEST_ID: Final = re.compile(rb'[\x21\x23-\x5b\x5d-\x7e]{1,200}')


class RequestHead:
    """One request head as read. When `error` is set (status, message), the request is answered with it and
    the connection closed; the other fields are then not to be used."""
    __slots__ = ("method", "url", "headers", "host", "host_missing", "user_agent", "forwarded_for",
                 "forwarded_proto", "forwarded_host", "content_length", "chunked", "upgrade", "expect_continue",
                 "http10", "keep_alive", "forward", "error", "size", "request_id_end", "request_id_lines",
                 "log_memo", "log_memos")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""                  # origin-form (an absolute-form target's authority became the Host)
        self.headers: list[tuple[bytes, bytes]] = []   # end-to-end headers as received, Host and User-Agent included
        self.host: bytes = b""          # the Host ("" for HTTP/1.0 without one)
        self.host_missing = False       # HTTP/1.0 without Host: the target's address is sent as Host
        self.user_agent = b""           # the User-Agent ("" when there is none: to conditions, the same)
        self.forwarded_for: bytes | None = None       # X-Forwarded-For values received, joined
        self.forwarded_proto: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.content_length = 0
        self.chunked = False            # the body is chunked (it is sent on chunked)
        self.upgrade: bytes | None = None               # the Upgrade header's value
        self.expect_continue = False
        self.http10 = False
        self.keep_alive = True          # the client wants the connection kept open (llhttp's rule, from the head)
        self.forward = b""              # the head for the backend up to the X-Forwarded-* lines (no X-Request-Id)
        self.error: tuple[int, str] | None = None
        self.size = 0                   # bytes of the head as received
        # The client's one X-Request-Id when it is sane, as the end of a head: b"X-Request-Id: ID\r\n\r\n"
        # (kept when the client is a trusted proxy); and its X-Request-Id lines as received (forwarded as they
        # are by a gateway with request ids off).
        self.request_id_end: bytes | None = None
        self.request_id_lines = b""
        # What an access log (gateway.runtime.access_log) last wrote of a request with this head, for it to use
        # again: heads are read once and kept (`read_request_head`), and a keep-alive client repeats its own.
        # Also the last one per target: a split, or a route's round-robin, sends the same head to several in turn.
        self.log_memo: object = None
        self.log_memos: dict[object, object] | None = None


_cache: Final[dict[bytes, RequestHead]] = {}


def read_request_head(raw: bytes) -> RequestHead:
    """The reading of `raw`, a request head llhttp accepted, from the request line to the empty line."""
    head = _cache.get(raw)
    return head if head is not None else remember(_cache, raw, _read(raw), CACHE_SIZE, CACHE_HEAD_BYTES)


def _refused(head: RequestHead, status: int, message: str) -> RequestHead:
    head.error = (status, message)
    return head


def _read(raw: bytes) -> RequestHead:
    head = RequestHead()
    head.size = len(raw)
    lines = raw[:-4].split(CRLF)
    method, _, rest = lines[0].partition(b" ")
    url, _, protocol = rest.lstrip(b" ").partition(b" ")
    protocol = protocol.lstrip(b" ")
    if len(url) > MAX_HEAD_BYTES:
        return _refused(head, 414, "request target too long")
    if len(raw) > MAX_HEAD_BYTES:
        return _refused(head, 431, "request head too large")
    headers = head.headers
    host: bytes | None = None
    transfer_encoding: bytes | None = None
    content_length: bytes | None = None
    named: set[bytes] | None = None
    close = keep_alive = False          # the Connection header's close and keep-alive tokens
    request_ids: list[bytes] = []       # the client's X-Request-Id values
    get_kind = _REQUEST_HEADERS.get
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        value = value.lstrip(b" \t")      # as llhttp reports it: leading whitespace off, trailing kept
        kind = get_kind(name.lower())
        if kind is None:
            headers.append((name, value))
        elif kind == _USER_AGENT:
            head.user_agent = value
            headers.append((name, value))
        elif kind == _HOST:
            if host is not None:
                return _refused(head, 400, "more than one Host header")
            host = value
            headers.append((name, value))
        elif kind == _CONTENT_LENGTH:
            content_length = value        # llhttp has checked it: digits, not repeated, not with chunked
        elif kind == _TRANSFER_ENCODING:
            if transfer_encoding is not None:
                return _refused(head, 400, "repeated Transfer-Encoding")
            transfer_encoding = value
        elif kind == _CONNECTION:
            lowered = value.lower()
            if lowered == b"close":
                close = True
            elif lowered == b"keep-alive":
                keep_alive = True
            else:
                tokens = connection_tokens(value)
                close = close or b"close" in tokens
                keep_alive = keep_alive or b"keep-alive" in tokens
                more = named_headers(tokens)
                if more:
                    named = more if named is None else named | more
        elif kind == _UPGRADE:
            head.upgrade = value
        elif kind == _FORWARDED_FOR:
            xff = head.forwarded_for
            head.forwarded_for = value if xff is None else xff + b", " + value
        elif kind == _FORWARDED_PROTO:
            head.forwarded_proto = value
        elif kind == _FORWARDED_HOST:
            head.forwarded_host = value
        elif kind == _REQUEST_ID:
            headers.append((name, value))
            head.request_id_lines += b"%s: %s\r\n" % (name, value)
            request_ids.append(value.rstrip(b" \t"))
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                return _refused(head, 417, "unsupported Expect")
            head.expect_continue = True
        # other hop-by-hop headers are dropped

    if protocol not in (b"HTTP/1.1", b"HTTP/1.0"):
        return _refused(head, 505, "only HTTP/1.0 and HTTP/1.1 are served")
    http10 = head.http10 = protocol == b"HTTP/1.0"
    head.keep_alive = keep_alive if http10 else not close
    if transfer_encoding is not None:
        if transfer_encoding.strip().lower() != b"chunked":
            return _refused(head, 400, "Transfer-Encoding other than chunked")
        if http10:
            return _refused(head, 400, "Transfer-Encoding in an HTTP/1.0 request")
        head.chunked = True
    if content_length is not None:
        head.content_length = int(content_length)
    if host is None and not http10:
        return _refused(head, 400, "missing Host header")
    if method == b"CONNECT":
        return _refused(head, 405, "CONNECT is not served")
    if url[:1] != b"/" and url != b"*":
        # absolute-form (RFC 9112 §3.2.2): its authority is the Host, routed by and sent on; the origin-form is
        # forwarded
        scheme, sep, after = url.partition(b"://")
        authority, slash, path = after.partition(b"/")
        if not sep or scheme.lower() not in (b"http", b"https") or not authority:
            return _refused(head, 400, "malformed request target")
        host = authority
        headers[:] = [(b"Host", authority)] + [h for h in headers if h[0].lower() != b"host"]
        url = b"/" + path if slash else b"/"
    head.method = method
    head.url = url
    head.host_missing = host is None
    head.host = host or b""
    if request_ids:                     # the gateway sends its own (or, with request ids off, these as received)
        named = (named or set()) | {b"x-request-id"}
        if len(request_ids) == 1 and _SANE_REQUEST_ID.fullmatch(request_ids[0]):
            head.request_id_end = b"X-Request-Id: %s\r\n\r\n" % request_ids[0]
    kept = headers if not named else [(n, v) for n, v in headers if n.lower() not in named]
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    for name, value in kept:
        parts += (name, b": ", value, CRLF)
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length or method in BODY_METHODS:
        parts.append(b"Content-Length: %d\r\n" % head.content_length)
    head.forward = b"".join(parts)
    return head
