"""A replica's own gateway: the gateways of the store's prefix (gateway.FleetGateways follows it), served where
this replica listens.

The leader writes one configuration for every replica and every external gateway on the prefix: the
deployments' internal gateways on loopback (127.0.0.1, where the external gateways' routes reach them) and the
external gateways and the users' on 0.0.0.0. Each replica serves the loopback ones on loopback and every other
one on its own `--bind`; its listeners share their ports (SO_REUSEPORT), so the replicas of one host all serve
the same internal gateways. The stored configuration thus never depends on which replica leads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gateway as gw
from gateway import ConfigError, ConfigManager, Worker, from_dict, to_dict

LOOPBACK = "127.0.0.1"          # the internal gateways' address: the same on every replica
EVERYWHERE = "0.0.0.0"          # what the leader writes for the other gateways: each replica's --bind decides


class ReplicaGateways(ConfigManager):
    """The gateway's ConfigManager, serving what it is given with every gateway but loopback ones on `bind`."""

    def __init__(self, workers: Sequence[Worker], bind: str) -> None:
        super().__init__(workers, None)
        self.bind = bind

    async def start(self, config: gw.Config) -> None:
        await super().start(self.rebound(config))

    async def replace(self, config: gw.Config) -> None:
        served = self.rebound(config)
        if served != self.desired:
            await super().replace(served)

    def rebound(self, config: gw.Config) -> gw.Config:
        """`config` as this replica serves it, checked again as a whole (two gateways on one port with
        different binds may clash once bound alike); ConfigError."""
        gateways = tuple(gateway if gateway.bind == LOOPBACK else dataclasses.replace(gateway, bind=self.bind)
                         for gateway in config.gateways)
        if all(new is old for new, old in zip(gateways, config.gateways)):
            return config
        try:
            return from_dict(to_dict(gw.Config(gateways=gateways, geo=config.geo)))
        except ConfigError as exc:
            raise ConfigError(f"with --bind {self.bind}: {exc.message}", exc.location) from exc
