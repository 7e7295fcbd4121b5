"""`ClientLookups`, the gateway's `Lookups` (see gateway.routing.request): user-agent families, client address
and country.

Built from the configuration's `geo` settings on every configuration change, so construction is cheap:
nothing is loaded until a request (or `warm`) needs it. The user-agent parser is shared by every
`ClientLookups` of the process, and a geo resolver is reused while its database file is unchanged, so their
caches survive configuration changes.
"""
from __future__ import annotations

import os

from gateway.config.model import GeoSettings
from gateway.routing.geo import GeoResolver, TrustedProxies, open_resolver
from gateway.routing.useragent import UserAgentParser

_user_agents = UserAgentParser()
_resolvers: dict[str | None, tuple[tuple[int, int] | None, GeoResolver]] = {}


def shared_resolver(database: str | None) -> GeoResolver:
    """The resolver for a `geo.database` setting, opened once per process and reopened when the file
    changes (size or modification time). Replace a database atomically (write a new file, then rename it
    over the old one, as geoipupdate does): the open reader maps the old file into memory.
    Raises GeoDatabaseError for an unreadable or invalid file."""
    key = None if database is None else os.path.realpath(database)
    version = None
    if key is not None:
        try:
            stat = os.stat(key)
            version = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            pass                    # open_resolver reports the problem
    cached = _resolvers.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    resolver = open_resolver(database)
    _resolvers[key] = (version, resolver)
    return resolver


class ClientLookups:
    """Implements gateway.routing.request.Lookups for one configuration's geo settings."""

    def __init__(self, database: str | None = None, trusted_proxies: TrustedProxies | None = None,
                 user_agents: UserAgentParser | None = None) -> None:
        self.database = database
        self.trusted_proxies = trusted_proxies or TrustedProxies(())
        self.user_agents = user_agents or _user_agents
        self._resolver: GeoResolver | None = None
        # Bound straight to the cached callables: one call frame less per lookup on the hot path.
        self.ua_families = self.user_agents.families
        self.client_address = self.trusted_proxies.client_address

    @classmethod
    def from_settings(cls, geo: GeoSettings) -> ClientLookups:
        return cls(geo.database, TrustedProxies(geo.trusted_proxies))

    def country(self, address: str) -> str | None:
        """ISO 3166-1 alpha-2 code of an address, or None when unknown."""
        if self._resolver is None:
            self._resolver = shared_resolver(self.database)
        return self._resolver.country(address)

    def warm(self, user_agents: bool = False, geo: bool = False) -> None:
        """Load now, at configuration time, what the configuration's conditions will need, so the first
        request does not pay for it. `geo=True` raises GeoDatabaseError for a bad database file."""
        if user_agents:
            self.user_agents.warm()
        if geo and self._resolver is None:
            self._resolver = shared_resolver(self.database)
