"""What routing sees of one request: a lazy, read-only view over the parsed head.

The proxy builds one `RequestView` per request from what httptools already gave it (method, URL, header
list, peer address). Everything a condition might ask for — a header by name, a cookie, the query string,
the user-agent families, the client's country — is computed on first use and cached on the view, so a
route table without conditions never pays for it.
"""
from __future__ import annotations

from typing import Literal, Protocol
from collections.abc import Callable
from urllib.parse import parse_qs, unquote


class Lookups(Protocol):
    """The expensive lookups, shared by all requests (they carry their own caches)."""

    def ua_families(self, user_agent: str) -> tuple[str, str, str]:
        """(browser family, OS family, device family) of a User-Agent string."""
        ...

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy."""
        ...

    def country(self, address: str) -> str | None:
        """ISO 3166-1 alpha-2 code of an address, or None when unknown."""
        ...


class RequestView:
    __slots__ = ("_method", "_target", "headers", "host", "peer", "forwarded_for", "raw_user_agent", "_lookups",
                 "_path", "_query", "_header_map", "_cookies", "_ua", "_user_agent", "_client", "_country")

    def __init__(self, method: str | bytes, target: str | bytes, headers: list[tuple[bytes, bytes]], host: str,
                 peer: str, lookups: Lookups, forwarded_for: bytes | None = None,
                 user_agent: bytes | None = None) -> None:
        self._method = method         # e.g. "GET" (bytes from the proxy, decoded on first use)
        self._target = target         # the request target as sent, e.g. "/a/b?x=1"
        self.headers = headers        # [(name, value)] as received (names in their original case)
        self.host = host              # Host header, lower case, without port ("" when absent)
        self.peer = peer              # the TCP peer's address
        self.forwarded_for = forwarded_for  # the X-Forwarded-For value(s), when the proxy keeps them apart
        # the User-Agent value, when the proxy picked it out already (decoded on first use)
        self._user_agent: bytes | str | None = user_agent
        # ... and as sent: what a verdict on the user agent alone can be remembered by (None: not picked out)
        self.raw_user_agent = user_agent
        self._lookups = lookups
        self._path: str | None = None
        self._query: dict[str, list[str]] | None = None
        self._header_map: dict[str, str] | None = None
        self._cookies: dict[str, str] | None = None
        self._ua: tuple[str, str, str] | None = None
        self._client: str | None = None
        self._country: str | None | Literal[False] = False     # False: not looked up yet

    @property
    def method(self) -> str:
        """Upper case, e.g. "GET"."""
        if isinstance(self._method, bytes):
            self._method = self._method.decode("latin-1")
        return self._method

    @property
    def target(self) -> str:
        if isinstance(self._target, bytes):
            self._target = self._target.decode("latin-1")
        return self._target

    # -- request line -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The percent-decoded path, without the query string."""
        if self._path is None:
            raw = self.target.split("?", 1)[0]
            if raw.startswith(("http://", "https://")):           # absolute-form: keep the path part
                slash = raw.find("/", raw.find("//") + 2)
                raw = raw[slash:] if slash >= 0 else "/"
            self._path = unquote(raw)
        return self._path

    def query(self, name: str) -> str | None:
        """First value of a query parameter, or None."""
        if self._query is None:
            _, _, qs = self.target.partition("?")
            self._query = parse_qs(qs, keep_blank_values=True)
        values = self._query.get(name)
        return values[0] if values else None

    # -- headers -----------------------------------------------------------------------------------
    def header(self, name: str) -> str | None:
        """A header by case-insensitive name; repeated headers are joined with ", "; None when absent."""
        if self._header_map is None:
            m: dict[str, str] = {}
            for raw_name, raw_value in self.headers:
                key = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                m[key] = f"{m[key]}, {value}" if key in m else value
            if self.forwarded_for is not None:
                m["x-forwarded-for"] = self.forwarded_for.decode("latin-1")
            self._header_map = m
        return self._header_map.get(name.lower())

    def cookie(self, name: str) -> str | None:
        if self._cookies is None:
            jar: dict[str, str] = {}
            for raw_name, raw_value in self.headers:
                if raw_name.lower() == b"cookie":
                    for part in raw_value.decode("latin-1").split(";"):
                        key, sep, value = part.strip().partition("=")
                        if sep and key and key not in jar:
                            jar[key] = value.strip().strip('"')
            self._cookies = jar
        return self._cookies.get(name)

    @property
    def user_agent(self) -> str:
        if self._user_agent is not None:
            if isinstance(self._user_agent, bytes):
                self._user_agent = self._user_agent.decode("latin-1")
            return self._user_agent
        return self.header("user-agent") or ""

    # -- derived lookups ---------------------------------------------------------------------------
    def ua_families(self) -> tuple[str, str, str]:
        if self._ua is None:
            self._ua = self._lookups.ua_families(self.user_agent)
        return self._ua

    @property
    def browser(self) -> str:
        return self.ua_families()[0]

    @property
    def os(self) -> str:
        return self.ua_families()[1]

    @property
    def device(self) -> str:
        return self.ua_families()[2]

    @property
    def client_address(self) -> str:
        if self._client is None:
            self._client = self._lookups.client_address(self.peer, self.header("x-forwarded-for"))
        return self._client

    def country(self) -> str | None:
        if self._country is False:
            self._country = self._lookups.country(self.client_address)
        return self._country


Predicate = Callable[[RequestView], bool]
