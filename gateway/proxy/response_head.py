"""A backend's response head, read once from its raw bytes: what the upstream side needs of it and the head
the client gets, with hop-by-hop headers (and the headers its `Connection` names) taken out.

The upstream parser (llhttp) frames and validates a response without a Python call per header; the raw head it
accepted is read here. llhttp is strict (CRLF line ends, no folded lines, no whitespace before the colon), so a
head it accepted splits exactly on CRLF and each line on its first colon. Backends repeat their heads (all but
`Date`, which changes once a second), so a head is read once and its reading kept in a small cache keyed by
its exact bytes: the reading is a function of those bytes alone, so no response can see another's data, and
a backend that never repeats a head only costs the reading it would cost anyway.
"""
from __future__ import annotations

from typing import Final

from gateway.common.memo import remember
from gateway.proxy.wire import CRLF, HOP_BY_HOP, PLAIN_CONNECTION_VALUES, connection_named_headers

CACHE_SIZE: Final = 256             # heads kept; the cache starts afresh when full
CACHE_HEAD_BYTES: Final = 4096      # longer heads are read every time (they are rare, and would crowd out the rest)


class ResponseHead:
    """One response head as read: its status, the headers the proxy acts on, and the start of the head the
    client gets (status line and end-to-end headers, byte for byte, before the proxy's own framing headers)."""
    __slots__ = ("status", "content_length", "chunked", "bad_coding", "upgrade", "prefix", "plain")

    def __init__(self, status: int, content_length: bytes | None, chunked: bool, bad_coding: bool,
                 upgrade: bytes | None, prefix: bytes) -> None:
        self.status = status
        self.content_length = content_length   # as sent (llhttp has checked it: digits, not repeated)
        self.chunked = chunked                 # Transfer-Encoding was sent
        self.bad_coding = bad_coding           # a transfer coding other than chunked: refused
        self.upgrade = upgrade                 # the Upgrade header's value
        self.prefix = prefix                   # b"HTTP/1.1 200 OK\r\n" + end-to-end header lines
        # The head for the common case, a final response with a body of known length to a keep-alive
        # HTTP/1.1 request that is not HEAD and gets no cookie, up to its last line: the exchange's `head_end`
        # (its X-Request-Id line and the empty line) closes it. None when this response cannot be that.
        self.plain: bytes | None = None
        if content_length is not None and status >= 200 and status not in (204, 304):
            self.plain = b"%sContent-Length: %s\r\n" % (prefix, content_length)


_cache: Final[dict[bytes, ResponseHead]] = {}


def read_head(raw: bytes) -> ResponseHead:
    """The reading of `raw`, a head llhttp accepted, from its status line to the empty line that ends it."""
    head = _cache.get(raw)
    return head if head is not None else remember(_cache, raw, _read(raw), CACHE_SIZE, CACHE_HEAD_BYTES)


def _read(raw: bytes) -> ResponseHead:
    lines = raw[:-4].split(CRLF)
    status_line = lines[0].split(b" ", 2)
    status = int(status_line[1])
    reason = status_line[2] if len(status_line) == 3 else b""
    kept: list[tuple[bytes, bytes]] = []        # (lower-case name, line) of end-to-end headers
    content_length: bytes | None = None
    chunked = bad_coding = False
    upgrade: bytes | None = None
    named: set[bytes] = set()
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            kept.append((lower, line))
            continue
        value = value.lstrip(b" \t")          # as llhttp reports it: leading whitespace off, trailing kept
        if lower == b"content-length":
            content_length = value
        elif lower == b"transfer-encoding":
            chunked = True
            if value.strip().lower() != b"chunked":
                bad_coding = True             # a coding we would have to undo
        elif lower == b"connection":
            if value.lower() not in PLAIN_CONNECTION_VALUES:
                named |= connection_named_headers(value) or set()
        elif lower == b"upgrade":
            upgrade = value
        # other hop-by-hop headers are dropped
    block = b"".join(line + CRLF for lower, line in kept if lower not in named)
    return ResponseHead(status, content_length, chunked, bad_coding, upgrade,
                        b"HTTP/1.1 %d %s\r\n%s" % (status, reason, block))
