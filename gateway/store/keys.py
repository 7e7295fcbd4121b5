"""How a fleet's gateways are laid out in etcd, and what the keys under a prefix make as a configuration.

    PREFIX/gateways/<name>   one gateway's fields as JSON, as the admin API shows them (`gateway_to_dict`);
                             names may contain '/' (PREFIX/gateways/sava/9050)
    PREFIX/geo               the geo settings as JSON ({"database": …, "trusted_proxies": […]}); absent: the
                             defaults

Other keys under PREFIX are not the gateways' (the platform may keep its own there) and are ignored.
`StoreState` is what the store holds under the prefix at one revision — the raw values and their mod revisions,
as read and then as the watch changes them — and `StoreState.config()` the configuration they make, validated
as the admin API validates a write: a value that does not validate refuses the whole state (`BadValue`, naming
the key), never part of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aetcd.utils import prefix_range_end

from gateway.config.load import ConfigError, assemble, from_dict, gateway_from_dict, gateway_to_dict
from gateway.config.model import Config, Gateway, GeoSettings

GATEWAYS = "gateways"
GEO = "geo"


class Layout:
    """The keys of one prefix (`StoreAddress.prefix`: "/vamp", or "" for the root)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.start = f"{prefix}/".encode()              # every key of the prefix: what is loaded and watched
        self.end: bytes = prefix_range_end(self.start)
        self.gateways_start = f"{prefix}/{GATEWAYS}/".encode()
        self.gateways_end: bytes = prefix_range_end(self.gateways_start)
        self.geo = f"{prefix}/{GEO}".encode()

    def gateway_key(self, name: str) -> bytes:
        return self.gateways_start + name.encode("utf-8")

    def gateway_name(self, key: bytes) -> str | None:
        """The gateway a key holds, None for a key that is not a gateway's."""
        if not key.startswith(self.gateways_start) or len(key) == len(self.gateways_start):
            return None
        try:
            return key[len(self.gateways_start):].decode("utf-8")
        except UnicodeDecodeError:
            return key[len(self.gateways_start):].decode("utf-8", "backslashreplace")

    def is_ours(self, key: bytes) -> bool:
        """Whether a key under the prefix is part of the gateways' configuration."""
        return key == self.geo or self.gateway_name(key) is not None


# -- values ----------------------------------------------------------------------------------------------
def encode_gateway(gateway: Gateway) -> bytes:
    return json.dumps(gateway_to_dict(gateway), separators=(",", ":")).encode("utf-8")


def decode_gateway(name: str, value: bytes) -> Gateway:
    """The gateway a value holds, validated; ConfigError."""
    return gateway_from_dict(name, _json(value, ("gateways", name)))


def encode_geo(geo: GeoSettings) -> bytes | None:
    """The geo key's value, None when the settings are the defaults (the key is then absent)."""
    if geo == GeoSettings():
        return None
    return json.dumps({"database": geo.database, "trusted_proxies": list(geo.trusted_proxies)},
                      separators=(",", ":")).encode("utf-8")


def decode_geo(value: bytes) -> GeoSettings:
    return from_dict({"geo": _json(value, ("geo",))}).geo


def _json(value: bytes, at: tuple[str, ...]) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:        # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"not a JSON document: {exc}", at) from None


def encode_config(layout: Layout, config: Config) -> dict[bytes, bytes]:
    """Every key of the gateways' configuration and its value (no geo key for the default settings)."""
    values = {layout.gateway_key(gateway.name): encode_gateway(gateway) for gateway in config.gateways}
    geo = encode_geo(config.geo)
    if geo is not None:
        values[layout.geo] = geo
    return values


# -- the state of a prefix ---------------------------------------------------------------------------------
class BadValue(Exception):
    """The keys under the prefix do not make a valid configuration: `key` is the one at fault."""

    def __init__(self, key: bytes, error: ConfigError) -> None:
        self.key = key.decode("utf-8", "backslashreplace")
        self.error = error
        super().__init__(f"{self.key}: {error}")


@dataclass(frozen=True)
class Entry:
    value: bytes
    mod_revision: int


class StoreState:
    """The gateways' keys under a prefix at `revision`, and what they make as a configuration."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.entries: dict[bytes, Entry] = {}
        self.revision = 0
        self._decoded: dict[bytes, tuple[int, Gateway]] = {}      # key -> (mod_revision, gateway): decoded once

    def load(self, entries: dict[bytes, Entry], revision: int) -> None:
        """Everything, as a range read at `revision` returned it."""
        self.entries = {key: entry for key, entry in entries.items() if self.layout.is_ours(key)}
        self.revision = revision

    def put(self, key: bytes, value: bytes, mod_revision: int) -> None:
        if self.layout.is_ours(key):
            self.entries[key] = Entry(value, mod_revision)
        self.revision = max(self.revision, mod_revision)

    def delete(self, key: bytes, mod_revision: int) -> None:
        self.entries.pop(key, None)
        self.revision = max(self.revision, mod_revision)

    def config(self) -> tuple[Config, dict[str, int]]:
        """The configuration the keys make, and the mod revision of each gateway's key; BadValue."""
        gateways: list[Gateway] = []
        revisions: dict[str, int] = {}
        geo = GeoSettings()
        for key in sorted(self.entries):
            entry = self.entries[key]
            if key == self.layout.geo:
                try:
                    geo = decode_geo(entry.value)
                except ConfigError as exc:
                    raise BadValue(key, exc) from exc
                continue
            name = self.layout.gateway_name(key)
            if name is None:
                continue
            gateways.append(self._gateway(key, name, entry))
            revisions[name] = entry.mod_revision
        try:
            config = assemble(tuple(gateways), geo)
        except ConfigError as exc:
            at = exc.location[1] if exc.location[:1] == ("gateways",) and len(exc.location) > 1 else None
            raise BadValue(self.layout.gateway_key(str(at)) if at is not None else self.layout.start, exc) from exc
        self._decoded = {key: found for key, found in self._decoded.items() if key in self.entries}
        return config, revisions

    def _gateway(self, key: bytes, name: str, entry: Entry) -> Gateway:
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == entry.mod_revision:
            return cached[1]
        try:
            gateway = decode_gateway(name, entry.value)
        except ConfigError as exc:
            raise BadValue(key, exc) from exc
        self._decoded[key] = (entry.mod_revision, gateway)
        return gateway
