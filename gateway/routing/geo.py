"""Where a client is: its real address behind trusted proxies, and the country of an address.

Owns the country resolvers — `IptoccResolver` (the shipped default, RIR data embedded in iptocc) and
`MaxMindResolver` (a user-supplied GeoIP2/GeoLite2 .mmdb) — each behind an LRU cache keyed by the address
string, and `TrustedProxies`: the client's address from X-Forwarded-For (docs/gateway-config.md, "Trusted proxies").
"""
from __future__ import annotations

import functools
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, Protocol
from collections.abc import Callable, Iterable

import maxminddb

DEFAULT_CACHE_SIZE = 4096       # distinct addresses remembered per resolver
MAX_FORWARDED_ENTRIES = 64      # rightmost X-Forwarded-For entries considered; the rest is ignored


class GeoResolver(Protocol):
    def country(self, address: str) -> str | None:
        """ISO 3166-1 alpha-2 code of an IP address, or None when unknown, private or not an address."""
        ...


class GeoDatabaseError(Exception):
    """A configured geo database cannot be opened or is not a MaxMind DB."""


def _unmap_ipv4(address: str) -> str:
    """'::ffff:1.2.3.4' (how a dual-stack socket reports an IPv4 peer) as '1.2.3.4'; others unchanged."""
    if address[:7].lower() == "::ffff:" and "." in address:
        return address[7:]
    return address


class IptoccResolver:
    """Countries from iptocc, the data shipped with the package (no database file to manage)."""

    country: Callable[[str], str | None]     # GeoResolver.country: the cached `_lookup`

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.country = functools.lru_cache(maxsize=cache_size)(self._lookup)

    @staticmethod
    def _lookup(address: str) -> str | None:
        import iptocc    # imported on first lookup: loading its tables takes a few milliseconds
        return iptocc.country_code(_unmap_ipv4(address))


class MaxMindResolver:
    """Countries from a MaxMind DB (GeoIP2/GeoLite2 Country or City): the `country` of the record,
    else its `registered_country`."""

    country: Callable[[str], str | None]     # GeoResolver.country: the cached `_lookup`

    def __init__(self, path: str, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.path = path
        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoDatabaseError(f"cannot open geo database {path!r}: {exc}") from exc
        self.country = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def _lookup(self, address: str) -> str | None:
        try:
            record = self._reader.get(_unmap_ipv4(address))
        except ValueError:          # not an IP address
            return None
        if not isinstance(record, dict):
            return None
        return _iso_code(record.get("country")) or _iso_code(record.get("registered_country"))


def _iso_code(place: Any) -> str | None:
    if isinstance(place, dict):
        code = place.get("iso_code")
        if isinstance(code, str) and code:
            return code
    return None


def open_resolver(database: str | None) -> GeoResolver:
    """The resolver for a `geo.database` setting: None is the shipped default (iptocc), else a .mmdb path.

    Raises GeoDatabaseError when the file cannot be read or is not a MaxMind DB.
    """
    return IptoccResolver() if database is None else MaxMindResolver(database)


Address = IPv4Address | IPv6Address


def parse_forwarded_address(entry: str) -> Address | None:
    """An address from one X-Forwarded-For entry or a peer address, or None for junk.

    Accepts "1.2.3.4", "1.2.3.4:5678", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:443", optionally
    quoted; an IPv4-mapped IPv6 address ("::ffff:10.0.0.1") is returned as its IPv4 address.
    """
    text = entry.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not _is_port_suffix(text[end + 1:]):
            return None
        text = text[1:end]
    elif text.count(":") == 1:                  # IPv4 with a port (an IPv6 address has two colons or more)
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port_suffix(text: str) -> bool:
    return text == "" or (text[0] == ":" and text[1:].isdigit())


class TrustedProxies:
    """Finds the client's address: the peer, unless the peer is a trusted proxy — then the rightmost
    X-Forwarded-For entry that is not itself a trusted proxy (entries further left can be forged by the
    client), or the leftmost entry when all of them are trusted. Junk entries are skipped."""

    def __init__(self, cidrs: Iterable[str], cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        networks = []
        for cidr in cidrs:
            try:
                networks.append(ip_network(cidr, strict=False))
            except ValueError as exc:
                raise ValueError(f"trusted proxy {cidr!r} is not an IP address or CIDR") from exc
        self.networks = tuple(networks)
        self._classify = functools.lru_cache(maxsize=cache_size)(self._classify_entry)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        if not self.networks:
            return peer
        peer_entry = self._classify(peer)
        if peer_entry is None or not peer_entry[1] or not forwarded_for:
            return peer
        entries = forwarded_for.rsplit(",", MAX_FORWARDED_ENTRIES)
        if len(entries) > MAX_FORWARDED_ENTRIES:
            del entries[0]                      # the unsplit remainder: too far left to be believed
        leftmost_trusted = peer
        for entry in reversed(entries):
            classified = self._classify(entry)
            if classified is None:
                continue
            address, trusted = classified
            if not trusted:
                return address
            leftmost_trusted = address
        return leftmost_trusted

    def _classify_entry(self, entry: str) -> tuple[str, bool] | None:
        """(normalised address, whether it is a trusted proxy), or None for junk."""
        address = parse_forwarded_address(entry)
        if address is None:
            return None
        return str(address), any(address in network for network in self.networks)
