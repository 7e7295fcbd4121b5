"""The drain bookkeeping on its own (gateway/runtime/drain.py), with a fake clock: removing and marking `drain: true`
share one ending — idle (nothing in flight, sticky clients away for `sticky_ttl`) or the deadline — after
which a ghost is gone and a marked route or target is served `drained`."""
from __future__ import annotations

import pytest

from gateway.config.model import Config, Gateway, Route, Target
from gateway.runtime.drain import Drainer

T0 = 1_000_000.0
BUSY = (1, 0.0)                          # usage: one request in flight, just picked
IDLE = (0, float("inf"))                 # usage: nothing in flight, never picked


def gateway_config(route_drain: bool = False, target_drain: bool = False, with_canary: bool = True,
                   sticky: str = "route") -> Config:
    targets = (Target("127.0.0.1", 8081), Target("127.0.0.1", 8082, drain=target_drain))
    routes = [Route("stable", 5000, targets)]
    if with_canary:
        routes.append(Route("canary", 5000, (Target("127.0.0.1", 8083),), drain=route_drain))
    return Config(gateways=(Gateway("g", 9050, sticky=sticky, sticky_ttl=60.0, drain_timeout=10.0,
                                    routes=tuple(routes)),))


def change(drainer: Drainer, effective: Config, desired: Config, now: float) -> Config:
    drainer.plan(effective, desired, now)
    return drainer.effective(desired)


def canary(config: Config) -> Route | None:
    return next((r for r in config.gateways[0].routes if r.name == "canary"), None)


@pytest.mark.parametrize("how", ["removed", "marked"])
def test_a_drain_ends_at_its_deadline_however_it_started(how):
    drainer = Drainer()
    before = gateway_config()
    desired = gateway_config(with_canary=False) if how == "removed" else gateway_config(route_drain=True)
    effective = change(drainer, before, desired, T0)
    assert canary(effective).drain and not canary(effective).drained
    assert drainer.next_deadline() == T0 + 10.0

    assert not drainer.expire(effective, lambda key: BUSY, T0 + 9.9)
    assert drainer.expire(effective, lambda key: BUSY, T0 + 10.0)
    effective = drainer.effective(desired)
    assert drainer.next_deadline() is None
    if how == "removed":
        assert canary(effective) is None
        assert drainer.containing(("g", "canary")) == []
    else:
        assert canary(effective).drained and canary(effective).targets[0].drained
        [drain] = drainer.containing(("g", "canary", "127.0.0.1:8083"))
        assert drain.over and drain.ended == T0 + 10.0


@pytest.mark.parametrize("how", ["removed", "marked"])
def test_a_drain_ends_early_once_idle_and_its_sticky_clients_stayed_away_for_the_ttl(how):
    drainer = Drainer()
    desired = gateway_config(with_canary=False) if how == "removed" else gateway_config(route_drain=True)
    effective = change(drainer, gateway_config(), desired, T0)
    assert not drainer.expire(effective, lambda key: (0, 59.0), T0 + 1)
    assert drainer.expire(effective, lambda key: (0, 60.0), T0 + 1)


def test_a_drained_target_is_served_drained_and_undraining_gives_it_traffic_again():
    drainer = Drainer()
    marked = gateway_config(target_drain=True)
    effective = change(drainer, gateway_config(), marked, T0)
    assert drainer.expire(effective, lambda key: IDLE, T0 + 1)
    effective = drainer.effective(marked)
    stable = effective.gateways[0].routes[0]
    assert [t.drained for t in stable.targets] == [False, True]
    assert drainer.expire(effective, lambda key: IDLE, T0 + 2) is False      # over once, not again

    effective = change(drainer, effective, marked, T0 + 3)                    # an unrelated change
    assert [t.drained for t in effective.gateways[0].routes[0].targets] == [False, True]

    effective = change(drainer, effective, gateway_config(), T0 + 4)          # drain: false
    assert drainer.drains == {} and effective == gateway_config()


def test_removing_a_drained_route_ends_at_once():
    drainer = Drainer()
    marked = gateway_config(route_drain=True)
    effective = change(drainer, gateway_config(), marked, T0)
    drainer.expire(effective, lambda key: IDLE, T0 + 1)
    effective = drainer.effective(marked)
    effective = change(drainer, effective, gateway_config(with_canary=False), T0 + 2)
    assert canary(effective) is None and drainer.drains == {}


def test_the_effective_configuration_is_the_desired_one_when_nothing_drains():
    drainer = Drainer()
    desired = gateway_config()
    assert change(drainer, Config(), desired, T0) is desired
