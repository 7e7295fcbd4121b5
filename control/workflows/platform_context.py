"""`WorkflowContext` (control/workflows/context.py) as the platform gives it to a built-in: weights through the
gateway API's merge-patch path and instance counts through the scale path (instances that go are drained first)
of the engine, the platform's metrics and events, the runner's clock, and a state the runner keeps in the store.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from control import dsl
from control.dsl.model import Scale
from control.events.model import Event, EventSink
from control.metrics.model import MetricsReader
from control.workflows.clock import Clock
from gateway.common.errors import Invalid, NotFound
from gateway.common.units import shown


class WorkflowEngine(Protocol):
    """What a built-in may change through the engine (control.engine.Engine has it)."""

    async def get_gateway(self, name: str) -> dict[str, Any]: ...

    async def patch_gateway(self, name: str, patch: dict[str, Any], *, validate_only: bool = False
                            ) -> dict[str, Any]: ...

    def scale(self, deployment: str, cluster: str, service: str) -> dict[str, Any]: ...

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale, *,
                        validate_only: bool = False) -> dict[str, Any]: ...


class PlatformContext:
    """One workflow's context; `save_state` is how the runner keeps the state (a JSON-like copy)."""

    def __init__(self, name: str, *, engine: WorkflowEngine, metrics: MetricsReader, events: EventSink,
                 clock: Clock, save_state: Callable[[dict[str, Any]], None]) -> None:
        self.name = name
        self.metrics = metrics
        self.engine = engine
        self.events = events
        self.clock = clock
        self.save_state = save_state

    def now(self) -> float:
        return self.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    def publish(self, tags: Iterable[str], value: Any = None) -> Event:
        return self.events.publish([*tags, f"workflows:{self.name}"], value)

    def set_state(self, state: Mapping[str, Any]) -> None:
        try:
            copy = json.loads(json.dumps(dict(state), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise Invalid(f"workflow {self.name}: a state must be JSON-like data: {exc}", "/state") from None
        self.save_state(copy)

    async def gateway(self, name: str) -> dict[str, Any]:
        return await self.engine.get_gateway(name)

    async def set_weights(self, gateway: str, weights: Mapping[str, int],
                          condition_strengths: Mapping[str, int] | None = None) -> None:
        if not weights:
            raise Invalid("name the routes whose weights to set", "/weights")
        for route, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise Invalid(f"expected a weight in whole per cents from 0 to 100, got {shown(weight)}",
                              f"/weights/{route}")
        if sum(weights.values()) != 100:
            raise Invalid(f"the weights set add up to {sum(weights.values())}%, not 100%", "/weights")
        strengths = dict(condition_strengths or {})
        for route, strength in strengths.items():
            if isinstance(strength, bool) or not isinstance(strength, int) or not 0 <= strength <= 100:
                raise Invalid(f"expected a condition strength in whole per cents from 0 to 100, got "
                              f"{shown(strength)}", f"/condition_strengths/{route}")
        document = await self.engine.get_gateway(gateway)
        routes = document.get("routes") or {}
        missing = next((route for route in [*weights, *strengths] if route not in routes), None)
        if missing is not None:
            raise NotFound(f"gateway {gateway!r} has no route {missing!r}")
        unconditional = next((route for route in strengths if not (routes[route] or {}).get("condition")), None)
        if unconditional is not None:
            raise Invalid(f"route {unconditional!r} has no condition to set the strength of",
                          f"/condition_strengths/{unconditional}")
        patch: dict[str, dict[str, str]] = {route: {"weight": f"{weight}%"} for route, weight in weights.items()}
        for route, strength in strengths.items():
            patch.setdefault(route, {})["condition_strength"] = f"{strength}%"
        await self.engine.patch_gateway(gateway, {"routes": patch})

    def instances(self, deployment: str, cluster: str, service: str) -> int:
        return int(self.engine.scale(deployment, cluster, service)["instances"])

    async def set_instances(self, deployment: str, cluster: str, service: str, instances: int) -> None:
        current = {key: value for key, value in self.engine.scale(deployment, cluster, service).items()
                   if key not in ("kind", "name")}
        try:
            scale = dsl.read("scale", {**current, "name": "scale", "instances": instances})
        except dsl.DslError as exc:
            raise Invalid(f"workflow {self.name}: {exc.expected}", "/instances") from None
        assert isinstance(scale, Scale)
        await self.engine.set_scale(deployment, cluster, service, dataclasses.replace(scale, name=None))
