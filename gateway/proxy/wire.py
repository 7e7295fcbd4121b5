"""HTTP/1.1 vocabulary shared by both sides of the proxy: hop-by-hop headers, the answers the gateway gives
itself, and the small byte-level helpers for re-framing bodies. Everything here is computed at import time.
"""
from __future__ import annotations

from typing import Final

from http import HTTPStatus

# Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1). Headers named in
# a `Connection` value are stripped too (computed per message). Content-Length is handled by re-framing.
HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"content-length",
})

# Methods whose requests may be replayed on another connection when nothing of the response has arrived.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

MAX_HEAD_BYTES: Final = 64 * 1024         # request line + headers; past that: 414 or 431

# Why a client connection stopped reading, as bits (reading resumes when none is left); the upstream side
# sets PAUSE_UPSTREAM when its write buffer is full and clears it when it drains.
PAUSE_PIPELINE: Final = 1      # enough requests queued behind the one in flight (or bad input behind them)
PAUSE_UPSTREAM: Final = 2      # the upstream's write buffer is full (request body flow control)
PAUSE_BUFFER: Final = 4        # request body piling up before the upstream connection is ready, or a queued one's
PAUSE_TUNNEL: Final = 8        # upgrade requested; what follows is held until the backend has answered

CONNECTION_KEYWORDS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
PLAIN_CONNECTION_VALUES: Final = frozenset({b"close", b"keep-alive"})   # the common values: nothing else to do
CHUNK_END: Final = b"0\r\n\r\n"
CRLF: Final = b"\r\n"


def connection_tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def connection_named_headers(value: bytes) -> set[bytes] | None:
    """The header names a `Connection` value lists (hop-by-hop for this message), beyond its keywords."""
    return named_headers(connection_tokens(value))


def named_headers(tokens: list[bytes]) -> set[bytes] | None:
    """`connection_named_headers` of a value already split into `connection_tokens`."""
    named = {token for token in tokens if token and token not in CONNECTION_KEYWORDS}
    return named or None


def chunk_prefix(size: int) -> bytes:
    return b"%x\r\n" % size


def status_line(status: int, reason: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def error_response(status: int, message: str, *, close: bool, extra: bytes = b"") -> bytes:
    """A complete short text/plain response the gateway answers itself."""
    body = f"{status} {reason_phrase(status).decode()}: {message}\n".encode("utf-8", "replace")
    return b"".join((
        status_line(status, reason_phrase(status)),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n" if close else b"",
        extra,
        CRLF,
        body,
    ))


CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
