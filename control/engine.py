"""Deployments: Vamp blueprints running on an orchestrator, and the gateways that reach them, kept in step.

A deployment is a blueprint that runs: each service of each cluster becomes an orchestrator service
(`deployment/cluster/breed`), each cluster port gets an internal gateway `deployment/cluster/port` on a
loopback port of its own, with one route per service (`deployment/cluster/service/port`) whose targets are
that service's ready instances, and each blueprint gateway becomes an external gateway `deployment/port`
routing to the cluster's internal gateway. Merging a blueprint into a running deployment adds its new
services at 0%; removing services or scaling down drains their instances through the gateway (the gateway's
own drain rules) before the orchestrator stops them.

Every change reaches the gateway through its `ConfigManager`'s atomic update path, as one whole configuration:
the generated gateways plus the gateways users made through the API. Route weights, conditions and sticky
modes of generated gateways belong to the deployment (the cluster's `gateways`), targets to the sync: the
sync never routes to an instance that is not ready, and a merge never takes a ready target away.

Each service of a deployment has a state: `deployed` once as many instances as its scale asks for run its
current spec, are ready and are targets of the internal gateways of their ports; `failed` while one of them
keeps failing (FAILED_AFTER crashes or failed health checks in a row, never ready in between), with the
reason; `deploying` otherwise, with what it waits for.

Every change the engine makes or sees is published to its `EventSink` with Vamp's tags (docs/events.md,
"Tags the platform uses"): deployments written and removed; services redeployed, scaled, removed, and
reaching `deployed` or `failed`; each instance state the orchestrator reports; gateways created, changed
(route weights included) and deleted, found by comparing each configuration applied with the one before
(`gateway_changes`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from typing import Any, Protocol

from control import dsl
from control.dsl.gateways import vamp_gateway, with_kept, without_kept
from control.dsl.model import Blueprint, Breed, Cluster, ClusterGateway, Deployment, GatewayRoute, Scale, Service
from control.events.log import EventLog
from control.events.model import EventSink
from control.orchestrator.base import HealthCheck as ProbeSpec
from control.orchestrator.base import (DeployableRefused, Instance, InstanceEvent, Orchestrator, ServiceEvent,
                                       ServiceSpec)
from control.store import ControlStore
import gateway as gw
from gateway import (FULL, ConfigError, PortConflict, from_dict, gateway_fields, gateway_from_dict, gateway_to_dict,
                     merge_snapshots, patched_gateway, read_gateway, resolve_weights, to_dict)
from gateway.common.errors import Conflict, Invalid, NotFound, RequestError
from gateway.common.units import format_percent

log = logging.getLogger("vamp.engine")

INTERNAL_PORTS = range(40000, 41000)      # loopback ports of internal gateways (`vamp run --internal-ports`)
DRAIN_POLL = 0.1                          # seconds between looks at whether a leaving instance has drained
FAILED_AFTER = 3                          # failures in a row of an instance that make its service `failed`
GONE = ("stopping", "stopped")            # instance states of instances on their way out


class GatewayController(Protocol):
    """What the engine drives: the gateway's `ConfigManager` (the gateway of this process), or, on etcd, a fleet
    source (`gateway.FleetGateways`: the whole set written to the store, served by every replica and external
    gateway on its prefix). Either takes one whole configuration at a time and serves it before it returns."""

    @property
    def effective(self) -> gw.Config:
        """What the gateway serves: the configuration with what drains."""
        ...

    async def replace(self, config: gw.Config) -> None: ...

    async def snapshot(self) -> dict[str, Any]: ...

    def document(self, name: str, snap: dict[str, Any]) -> dict[str, Any]: ...


def service_name(service: Service) -> str:
    return service.breed.name


def cluster_ports(cluster: Cluster) -> list[dsl.model.Port]:
    """The ports of a cluster: the union of its services' breed ports, by name, in order of appearance."""
    seen: dict[str, Any] = {}
    for service in cluster.services:
        for port in service.breed.ports:  # type: ignore[union-attr]
            seen.setdefault(port.name, port)
    return list(seen.values())


class Engine:
    def __init__(self, store: ControlStore, orchestrator: Orchestrator, gateways: GatewayController, *,
                 events: EventSink | None = None, geo: gw.GeoSettings | None = None,
                 bind: str = "127.0.0.1", internal_ports: range = INTERNAL_PORTS) -> None:
        """`gateways` is the gateway's ConfigManager (or a fleet's source): the engine replaces its whole
        configuration and reads back what it serves (`effective`, `snapshot()`, `document()`). `events` receives
        every change (without one: an event log of its own over `store`). `internal_ports`: where the internal
        gateways of new cluster ports get their loopback ports (ports already given keep theirs)."""
        self.store = store
        self.events: EventSink = events if events is not None else EventLog(store)
        self.orchestrator = orchestrator
        self.gateway_controller = gateways
        self.geo = geo or gw.GeoSettings()
        self.bind = bind
        self.internal_ports = internal_ports
        self.lock = asyncio.Lock()
        self.running: dict[str, Deployment] = {}
        self.allocations: dict[str, int] = {}        # "deployment/cluster/port" -> internal gateway port
        self.leaving: dict[str, int | None] = {}     # instance id -> pid of its process draining before it stops
        self._watcher: asyncio.Task | None = None
        self._applied: dict[str, dict[str, Any]] | None = None   # gateway name -> settings last applied
        self._generated: dict[str, list[str]] = {}               # generated gateway -> its deployment's tags
        self._service_states: dict[str, str] = {}                # service id -> deploying | deployed | failed

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume what the store holds: every deployment's services and gateways."""
        items, _ = self.store.list("deployments")
        for body in items:
            deployment = dsl.read("deployment", body)
            self.running[deployment.name] = deployment  # type: ignore[assignment]
        self.allocations = self.store.get("allocations", "internal-ports") or {}
        events = self.orchestrator.subscribe()
        self._watcher = asyncio.get_running_loop().create_task(self._follow(events))
        async with self.lock:
            for name in sorted(self.running):
                await self._converge(self.running[name])
            await self._sync()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _follow(self, events: asyncio.Queue) -> None:
        """Instances come and go: bring the gateways in line, once per burst of events."""
        while True:
            burst = [await events.get()]
            while not events.empty():
                burst.append(events.get_nowait())
            for event in burst:
                if isinstance(event, ServiceEvent):
                    self._publish_service_event(event)
                    continue
                self._forget_drained(event.instance)
                self._publish_instance(event)
            async with self.lock:
                try:
                    await self._sync()
                except RequestError as exc:
                    log.error("gateway sync failed: %s", exc.message)
                except Exception:  # noqa: BLE001 - following instances must outlive one failed round
                    log.exception("gateway sync failed")

    # -- deployments -----------------------------------------------------------------------------------
    async def deploy(self, name: str, blueprint: Blueprint, *, validate_only: bool = False
                     ) -> tuple[dict[str, Any], bool]:
        """Create deployment `name` from `blueprint`, or merge `blueprint` into it."""
        _check_name(name)
        async with self.lock:
            current = self.running.get(name)
            merged = merge(current, blueprint, name)
            try:
                dsl.validate_complete(merged)
            except dsl.DslError as exc:
                raise Invalid(str(exc), exc.path if hasattr(exc, "path") else None) from exc
            previous, allocations = dict(self.running), dict(self.allocations)

            def restore() -> None:
                self.running, self.allocations = previous, allocations
            self.running[name] = merged
            try:
                self._allocate(merged)
                self._check_runnable(merged)
                self._check_gateways()
            except RequestError:
                restore()
                raise
            if validate_only:
                document = self._document(merged)
                restore()
                return document, current is None
            try:
                applied = await self._sync(announce=False)
            except RequestError:
                restore()
                await self._sync()
                raise
            self._persist(merged)
            await self._converge(merged)
            self._publish_deployed(current, merged, blueprint)
            self._announce(applied)                  # after the deployment's own event: what it made
            return self._document(merged), current is None

    async def undeploy(self, name: str, blueprint: Blueprint | None, *, validate_only: bool = False
                       ) -> dict[str, Any] | None:
        """Remove the services `blueprint` names from deployment `name` (None: all of them)."""
        async with self.lock:
            current = self.running.get(name)
            if current is None:
                raise NotFound(f"no deployment {name!r}")
            remaining, removed = remove_services(current, blueprint)
            if validate_only:
                return self._document(remaining) if remaining is not None else None
            if remaining is None:
                del self.running[name]
                self.store.delete("deployments", name)
            else:
                self.running[name] = remaining
                self._persist(remaining)
            applied = await self._sync(announce=False)   # removed routes drain in the gateway from now on
            self.events.publish([f"deployments:{name}", "archive:delete" if remaining is None else "archive:update"],
                                {"removed": [service_id.split("/", 1)[1] for service_id in removed]})
            for service_id in removed:
                await self.orchestrator.undeploy(service_id)   # each instance drains (before_stop), then stops
                self.events.publish([*_service_tags(service_id), "synchronization:undeployed"])
            self._announce(applied)
            return self._document(remaining) if remaining is not None else None

    def gateways_removed_with(self, name: str, blueprint: Blueprint | None) -> set[str]:
        """The gateways of deployment `name` that removing the services `blueprint` names (None: all of them)
        takes away: the internal gateways of the clusters it empties, and the external gateways routing to
        them (all of them with the whole deployment). Empty when there is no such deployment."""
        current = self.running.get(name)
        if current is None:
            return set()
        remaining, _ = remove_services(current, blueprint)
        return generated_gateway_names(current) - (generated_gateway_names(remaining) if remaining else set())

    def deployment(self, name: str) -> dict[str, Any] | None:
        deployment = self.running.get(name)
        return self._document(deployment) if deployment is not None else None

    def deployments(self) -> list[dict[str, Any]]:
        return [self._document(self.running[name]) for name in sorted(self.running)]

    def as_blueprint(self, name: str) -> dict[str, Any] | None:
        deployment = self.running.get(name)
        if deployment is None:
            return None
        blueprint = Blueprint(name=deployment.name, clusters=deployment.clusters, gateways=deployment.gateways,
                              dialects=deployment.dialects)
        return dsl.to_dict(blueprint)

    def scale(self, deployment: str, cluster: str, service: str) -> dict[str, Any]:
        return dsl.to_dict(self._find_service(deployment, cluster, service)[2].scale)

    async def set_scale(self, deployment: str, cluster: str, service: str, scale: Scale, *,
                        validate_only: bool = False) -> dict[str, Any]:
        async with self.lock:
            dep, clu, svc = self._find_service(deployment, cluster, service)
            if validate_only:
                return dsl.to_dict(scale)
            updated = _replace_service(dep, clu.name, dataclasses.replace(svc, scale=scale))
            self.running[deployment] = updated
            self._persist(updated)
            identity = service_id(deployment, clu.name, svc)
            await self.orchestrator.scale(identity, scale.instances)
            previous: Scale = svc.scale  # type: ignore[assignment]
            if (scale.instances, scale.cpu, scale.memory) != (previous.instances, previous.cpu, previous.memory):
                self.events.publish([*_service_tags(identity), "synchronization:scale"],
                                    {"instances": scale.instances, "previous": previous.instances})
            return dsl.to_dict(scale)

    def changing(self, deployment: str) -> str | None:
        """Why deployment `deployment` is not settled, or None when it is: settled means no change (deploy,
        scale, gateway write, sync) is being applied, every service is `deployed` and none of its instances is
        on its way out (draining or stopping). What measures a deployment to act on it (SLAs) waits for this."""
        dep = self.running.get(deployment)
        if dep is None:
            raise NotFound(f"no deployment {deployment!r}")
        if self.lock.locked():
            return "a change is being applied"
        for cluster in dep.clusters:
            for service in cluster.services:
                instances = self.orchestrator.instances(service_id(dep.name, cluster.name, service))
                leaving = next((i for i in instances if i.id in self.leaving or i.state in GONE), None)
                if leaving is not None:
                    return f"instance {leaving.id} is on its way out ({leaving.state})"
                state, reason = self._service_state(dep, cluster, service, instances)
                if state != "deployed":
                    return f"service {service_id(dep.name, cluster.name, service)} is {state}: {reason}"
        return None

    def _find_service(self, deployment: str, cluster: str, service: str) -> tuple[Deployment, Cluster, Service]:
        """The service, or a 404 naming the first part of deployment/cluster/service that does not exist."""
        dep = self.running.get(deployment)
        if dep is None:
            raise NotFound(f"no deployment {deployment!r}")
        clu = next((c for c in dep.clusters if c.name == cluster), None)
        if clu is None:
            raise NotFound(f"no cluster {cluster!r} in deployment {deployment!r}")
        svc = next((s for s in clu.services if service_name(s) == service), None)
        if svc is None:
            raise NotFound(f"no service {service!r} in cluster {cluster!r} of deployment {deployment!r}")
        return dep, clu, svc

    # -- gateways --------------------------------------------------------------------------------------
    def generated_gateways(self) -> list[gw.Gateway]:
        gateways: list[gw.Gateway] = []
        for dep in self.running.values():
            for cluster in dep.clusters:
                for port in cluster_ports(cluster):
                    gateways.append(self._internal_gateway(dep, cluster, port))
            for external in dep.gateways:
                gateways.append(self._external_gateway(dep, external))
        return gateways

    def _internal_gateway(self, dep: Deployment, cluster: Cluster, port: Any) -> gw.Gateway:
        spec = _cluster_gateway(cluster, port.name, len(cluster_ports(cluster)))
        settings = {route.path: route for route in spec.routes} if spec else {}
        routes = []
        for service in cluster.services:
            if port.name not in {p.name for p in service.breed.ports}:  # type: ignore[union-attr]
                continue
            targets = tuple(instance_target(instance, port.name)
                            for instance in self.orchestrator.instances(service_id(dep.name, cluster.name, service))
                            if instance.state == "ready" and instance.id not in self.leaving
                            and port.name in instance.ports)
            routes.append(_route(service_route_name(dep.name, cluster.name, service, port.name),
                                 settings.get(service_name(service)), targets))
        return gw.Gateway(name=cluster_gateway_name(dep.name, cluster.name, port.name),
                          port=self.allocations[f"{dep.name}/{cluster.name}/{port.name}"],
                          protocol=port.protocol, sticky=spec.sticky if spec else "none",
                          bind="127.0.0.1", routes=tuple(routes))

    def _external_gateway(self, dep: Deployment, external: Any) -> gw.Gateway:
        routes = []
        for route in external.routes:
            cluster, _, port = route.path.partition("/")
            internal = self.allocations.get(f"{dep.name}/{cluster}/{port}")
            targets = (gw.Target("127.0.0.1", internal),) if internal else ()
            routes.append(_route(f"{dep.name}/{route.path}", route, targets))
        return gw.Gateway(name=f"{dep.name}/{external.port}", port=external.port, protocol=external.protocol,
                          sticky=external.sticky, virtual_hosts=external.virtual_hosts, bind=self.bind,
                          routes=tuple(routes))

    def user_gateways(self) -> list[gw.Gateway]:
        items, _ = self.store.list("gateways")
        return [gateway_from_dict(body["name"], {k: v for k, v in without_kept(body)[0].items() if k != "name"})
                for body in items]

    def desired_config(self) -> gw.Config:
        return gw.Config(gateways=tuple(self.generated_gateways() + self.user_gateways()), geo=self.geo)

    def _check_gateways(self, extra: gw.Gateway | None = None) -> gw.Config:
        """Validate the whole gateway configuration (ports shared correctly, weights) before applying it."""
        config = self.desired_config()
        if extra is not None:
            config = gw.Config(gateways=tuple(g for g in config.gateways if g.name != extra.name) + (extra,),
                               geo=config.geo)
        try:
            return from_dict(to_dict(config))
        except ConfigError as exc:
            refusal = Conflict if isinstance(exc, PortConflict) else Invalid
            raise refusal(str(exc), exc.pointer(extra.name) if extra is not None else None) from exc

    async def _sync(self, *, announce: bool = True) -> gw.Config:
        """Apply the whole configuration; publish what changed (with `announce`; else the caller does it, with
        `_announce(config)`, once it has published its own event)."""
        config = self._check_gateways()
        await self.gateway_controller.replace(config)      # Conflict when a worker cannot apply it
        if announce:
            self._announce(config)
        return config

    def _announce(self, applied: gw.Config) -> None:
        self._publish_gateway_changes(applied)
        self._publish_service_states()

    # -- events ----------------------------------------------------------------------------------------------
    def _publish_deployed(self, current: Deployment | None, merged: Deployment, blueprint: Blueprint) -> None:
        """A deployment created or changed: `archive:create|update` with the services added and changed, and
        `synchronization:redeploy` for each changed one (its instances are replaced)."""
        before = {service_id(merged.name, cluster.name, service): service
                  for cluster in (current.clusters if current else ()) for service in cluster.services}
        added, updated = [], []
        for cluster in merged.clusters:
            for service in cluster.services:
                identity = service_id(merged.name, cluster.name, service)
                if identity not in before:
                    added.append(identity)
                elif before[identity] != service:
                    updated.append(identity)
        if current is not None and not added and not updated and dsl.to_dict(current) == dsl.to_dict(merged):
            return
        for identity in updated:
            self._service_states.pop(identity, None)
            self.events.publish([*_service_tags(identity), "synchronization:redeploy"])
        value: dict[str, Any] = {"blueprint": blueprint.name}
        value.update({key: [identity.split("/", 1)[1] for identity in ids]
                      for key, ids in (("added", added), ("updated", updated)) if ids})
        self.events.publish([f"deployments:{merged.name}", "archive:create" if current is None else "archive:update"],
                            value)

    def _publish_instance(self, event: InstanceEvent) -> None:
        instance = event.instance
        value: dict[str, Any] = {"state": instance.state, "previous": event.previous_state, "reason": event.reason}
        if event.exit_code is not None:
            value["exit_code"] = event.exit_code
        if instance.state == "ready":
            value["ports"] = dict(instance.ports)
        if instance.restarts:
            value["restarts"] = instance.restarts
        self.events.publish([f"instances:{instance.id}", *_service_tags(instance.service),
                             f"instance:{instance.state}"], value)

    def _publish_service_event(self, event: ServiceEvent) -> None:
        """`orchestrator:problem` when the orchestrator reports what keeps a service from running (an API that
        refuses it, pods that cannot be scheduled), `orchestrator:resolved` once that is over."""
        value: dict[str, Any] = {"reason": event.reason}
        if event.problem is not None:
            value["problem"] = event.problem
        self.events.publish([*_service_tags(event.service),
                             "orchestrator:problem" if event.problem is not None else "orchestrator:resolved"], value)

    def _publish_service_states(self) -> None:
        """`synchronization:deployed` (or `:failed`) for each service that has just become so."""
        states: dict[str, str] = {}
        for dep in self.running.values():
            for cluster in dep.clusters:
                for service in cluster.services:
                    identity = service_id(dep.name, cluster.name, service)
                    state, reason = self._service_state(dep, cluster, service, self.orchestrator.instances(identity))
                    states[identity] = state
                    if state == self._service_states.get(identity) or state == "deploying":
                        continue
                    scale: Scale = service.scale  # type: ignore[assignment]
                    value = {"instances": scale.instances} if state == "deployed" else {"reason": reason}
                    self.events.publish([*_service_tags(identity), f"synchronization:{state}"], value)
        self._service_states = states

    def _publish_gateway_changes(self, config: gw.Config) -> None:
        """`gateway:created|updated|deleted` for each gateway whose settings (not its targets: instance events
        tell those) differ from the configuration applied before; none for the first one (a resume)."""
        applied = {gateway.name: _settings(gateway) for gateway in config.gateways}
        users = {body["name"] for body in self.store.list("gateways")[0]}
        generated = {name: _generated_tags(name) for name in applied if name not in users}
        before, self._applied = self._applied, applied
        known, self._generated = self._generated, generated
        if before is None:
            return
        for name, change in gateway_changes(before, applied):
            tags = [f"gateways:{name}", f"gateway:{change}", *generated.get(name, known.get(name, ()))]
            if change == "created":
                value: Any = {"port": applied[name]["port"],
                              "routes": {route: body["weight"] for route, body in applied[name]["routes"].items()}}
            elif change == "updated":
                value = {"changed": merge_difference(before[name], applied[name]),
                         "previous": merge_difference(applied[name], before[name])}
                tags += [f"routes:{route}" for route in value["changed"].get("routes", {})]
            else:
                value = None
            self.events.publish(tags, value)

    async def gateway_snapshot(self) -> dict[str, Any]:
        """The gateway's counters now (requests, in flight, down), for the documents' status."""
        return await self.gateway_controller.snapshot()

    def gateways(self, snapshot: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [self._gateway_document(g, snapshot)
                for g in sorted(self.desired_config().gateways, key=lambda g: g.name)]

    def gateway(self, name: str, snapshot: dict[str, Any] | None = None) -> dict[str, Any] | None:
        found = next((g for g in self.desired_config().gateways if g.name == name), None)
        return self._gateway_document(found, snapshot) if found is not None else None

    def _gateway_document(self, gateway: gw.Gateway, snapshot: dict[str, Any] | None) -> dict[str, Any]:
        """The gateway as configured, with its targets' states as the gateway serves them; their counters
        are `snapshot`'s (gateway_snapshot()), all 0 without one."""
        try:
            status = self.gateway_controller.document(gateway.name, snapshot or merge_snapshots([]))["status"]
        except NotFound:
            status = {"state": "pending"}
        stored = self.store.get("gateways", gateway.name)
        kept = without_kept(stored)[1] if stored is not None else {}
        return {"name": gateway.name, **with_kept(gateway_to_dict(gateway), kept), "status": status,
                "generated": self.is_generated(gateway.name)}

    def is_generated(self, name: str) -> bool:
        return any(g.name == name for g in self.generated_gateways())

    # -- the gateway API's source (gateway.config.source) ---------------------------------------------
    async def list_gateways(self) -> list[dict[str, Any]]:
        return self.gateways(await self.gateway_snapshot())

    async def get_gateway(self, name: str) -> dict[str, Any]:
        return self._existing(name, await self.gateway_snapshot())

    async def create_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                             ) -> dict[str, Any]:
        if self.gateway(name) is not None:
            raise Conflict(f"gateway {name!r} exists (PUT /api/v1/gateways/{name} replaces it)", "/name")
        document, _ = await self.put_gateway(name, body, validate_only=validate_only)
        return document

    async def put_gateway(self, name: str, body: dict[str, Any], *, validate_only: bool = False
                          ) -> tuple[dict[str, Any], bool]:
        gateway, created = await self._put_gateway(name, body, validate_only)
        return self._gateway_document(gateway, await self.gateway_snapshot()), created

    async def patch_gateway(self, name: str, patch: dict[str, Any], *, validate_only: bool = False
                            ) -> dict[str, Any]:
        self._existing(name)
        current = next(g for g in self.desired_config().gateways if g.name == name)
        try:
            body = patched_gateway(current, patch)
        except ConfigError as exc:
            raise Invalid(str(exc), exc.pointer(name)) from exc
        gateway, _ = await self._put_gateway(name, body, validate_only)
        return self._gateway_document(gateway, await self.gateway_snapshot())

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> dict[str, Any]:
        """Remove a user's gateway: answer it as it was."""
        document = self._existing(name)
        async with self.lock:
            if self.is_generated(name):
                raise Conflict(f"gateway {name!r} belongs to a deployment: remove its services or the deployment "
                               "instead")
            if self.store.get("gateways", name) is None:
                raise NotFound(f"no gateway {name!r}")
            if not validate_only:
                self.store.delete("gateways", name)
                await self._sync()
        return document

    def _existing(self, name: str, snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
        document = self.gateway(name, snapshot)
        if document is None:
            raise NotFound(f"no gateway named {name!r}")
        return document

    async def _put_gateway(self, name: str, body: dict[str, Any], validate_only: bool
                           ) -> tuple[gw.Gateway, bool]:
        """Create or replace a user gateway; for a generated one, take its route weights, conditions and
        sticky mode (its targets and port stay the sync's)."""
        try:
            gateway_fields(name, body)
            body, kept = vamp_gateway(name, body, self._stored_condition)
        except ConfigError as exc:
            raise Invalid(str(exc), exc.pointer(name)) from exc
        async with self.lock:
            if self.is_generated(name):
                return await self._set_generated(name, body, validate_only), False
            try:
                gateway = read_gateway(name, body)
            except ConfigError as exc:
                raise Invalid(str(exc), exc.pointer(name)) from exc
            self._check_gateways(gateway)
            created = self.store.get("gateways", name) is None
            if not validate_only:
                self.store.put("gateways", name, with_kept({"name": name, **gateway_to_dict(gateway)}, kept))
                await self._sync()
            return gateway, created

    def _stored_condition(self, reference: dsl.model.Reference) -> dsl.model.Artifact | None:
        document = self.store.get("conditions", reference.name)
        return dsl.read("conditions", document) if document is not None else None

    async def _set_generated(self, name: str, body: dict[str, Any], validate_only: bool) -> gw.Gateway:
        parts = name.split("/")
        current = next(g for g in self.generated_gateways() if g.name == name)
        merged = {k: v for k, v in body.items() if k not in ("name", "status", "generated")}
        # the sync owns targets and the port: keep the current ones whatever the body says
        routes = merged.get("routes") or {}
        if not isinstance(routes, dict):
            raise Invalid("routes must be a mapping", "/routes")
        known = {route.name: route for route in current.routes}
        for route_name, route in routes.items():
            if route_name not in known:
                raise Invalid(f"gateway {name!r} has no route {route_name!r}: its routes come from "
                                           "the deployment's services", f"/routes/{route_name}")
            if isinstance(route, dict):
                route["targets"] = [t.address for t in known[route_name].targets]
        merged["port"] = f"{current.port}/{current.protocol}"
        merged["bind"] = current.bind
        try:
            gateway = gateway_from_dict(name, merged)
            _refuse_unkept(current, gateway, internal=len(parts) == 3)
        except ConfigError as exc:
            raise Invalid(str(exc), exc.pointer(name)) from exc
        if validate_only:
            return gateway
        if len(parts) == 3:                          # internal: deployment/cluster/port
            dep = self.running[parts[0]]
            updated = _set_cluster_gateway(dep, parts[1], parts[2], gateway)
        else:                                        # external: deployment/port
            dep = self.running[parts[0]]
            updated = _set_external_gateway(dep, gateway)
        previous = self.running[dep.name]
        self.running[dep.name] = updated
        try:
            await self._sync()
        except RequestError:
            self.running[dep.name] = previous
            raise
        self._persist(updated)
        return gateway

    # -- instances ------------------------------------------------------------------------------------------
    async def drain_instance(self, instance: Instance) -> None:
        """The orchestrator's before_stop hook: take the instance out of its gateways and wait until the
        gateway has drained it (requests in flight done, sticky clients gone or the drain deadline passed)."""
        self.leaving[instance.id] = instance.pid
        async with self.lock:
            await self._sync()
        addresses = {gw.Target(instance.host, port).address for port in instance.ports.values()}
        deadline = time.monotonic() + max((g.drain_timeout for g in self.gateway_controller.effective.gateways),
                                          default=300.0) + 5.0
        while time.monotonic() < deadline:
            served = {t.address for g in self.gateway_controller.effective.gateways
                      for r in g.routes for t in r.targets}
            if not addresses & served:
                return
            await asyncio.sleep(DRAIN_POLL)

    def _forget_drained(self, instance: Instance) -> None:
        """A drained instance is routed again once its process stopped or a new one runs under its id (a
        replacement); an older event about the process being drained changes nothing."""
        if instance.id not in self.leaving:
            return
        drained = self.leaving[instance.id]
        if (instance.state == "stopped" and instance.pid == drained) or \
                (instance.state == "starting" and instance.pid != drained):
            del self.leaving[instance.id]

    def _check_runnable(self, deployment: Deployment) -> None:
        """Invalid (400) when the orchestrator cannot run one of the deployment's services, naming the cluster,
        or the service's deployable when the orchestrator cannot run that kind of deployable at all."""
        for cluster in deployment.clusters:
            for index, service in enumerate(cluster.services):
                try:
                    self.orchestrator.check(self._spec(deployment, cluster, service))
                except DeployableRefused as exc:
                    raise Invalid(str(exc), f"clusters.{cluster.name}.services[{index}].breed.deployable") from exc
                except ValueError as exc:
                    raise Invalid(str(exc), f"clusters.{cluster.name}") from exc

    async def _converge(self, deployment: Deployment) -> None:
        for cluster in deployment.clusters:
            for service in cluster.services:
                await self.orchestrator.deploy(self._spec(deployment, cluster, service))

    def _spec(self, deployment: Deployment, cluster: Cluster, service: Service) -> ServiceSpec:
        breed: Breed = service.breed  # type: ignore[assignment]

        def direct(target: Cluster | None) -> tuple[str, Breed] | None:
            """(host, breed) of the cluster's first service where the orchestrator lets a dependency reach it
            directly, on its breed's port numbers; None: through the cluster's internal gateway."""
            if target is None or not target.services:
                return None
            first = target.services[0]
            host = self.orchestrator.service_host(service_id(deployment.name, target.name, first))
            return (host, first.breed) if host is not None else None  # type: ignore[return-value]

        def lookup(reference: Any) -> str:
            if isinstance(reference, dsl.HostReference):
                found = direct(dsl.referenced_cluster(deployment, service, reference.cluster))
                return found[0] if found is not None else "127.0.0.1"
            if isinstance(reference, dsl.TraitReference) and reference.group == "ports":
                target = dsl.referenced_cluster(deployment, service, reference.cluster)
                found = direct(target)
                if found is not None:
                    for declared in found[1].ports:
                        if declared.name == reference.name:
                            return str(declared.number)
                    raise Invalid(f"no port {reference.name!r} in cluster {target.name!r}")  # type: ignore[union-attr]
                name = target.name if target is not None else reference.cluster
                port = self.allocations.get(f"{deployment.name}/{name}/{reference.name}")
                if port is None:
                    raise Invalid(f"no port {reference.name!r} in cluster {name!r}")
                return str(port)
            if isinstance(reference, dsl.TraitReference):
                target = dsl.referenced_cluster(deployment, service, reference.cluster)
                for other in (target.services if target is not None else ()):
                    for var in dsl.effective_environment(target, other):  # type: ignore[arg-type]  # (it has services)
                        if var.name == reference.name and not isinstance(var.value, dsl.model.Placeholder):
                            return dsl.render(var.value, lookup)
                    for constant in other.breed.constants:  # type: ignore[union-attr]
                        if constant.name == reference.name:
                            return constant.value
                raise Invalid(f"nothing named {reference.text!r}")
            for var in variables:
                if var.name == reference.name and not isinstance(var.value, dsl.model.Placeholder):
                    return dsl.render(var.value, lookup)
            for constant in breed.constants:
                if constant.name == reference.name:
                    return constant.value
            raise Invalid(f"nothing named {reference.text!r}")

        variables = dsl.effective_environment(cluster, service)
        environment = {(var.alias or var.name): dsl.render(var.value, lookup) for var in variables
                       if not isinstance(var.value, dsl.model.Placeholder)}
        checks = dsl.effective_health_checks(cluster, service)
        probe = ProbeSpec(**dataclasses.asdict(checks[0])) if checks else None
        scale: Scale = service.scale  # type: ignore[assignment]
        deployable = breed.deployable
        arguments = {argument.name: argument.value for argument in (*breed.arguments, *service.arguments)}
        return ServiceSpec(id=service_id(deployment.name, cluster.name, service),
                           command=deployable.argv() if deployable.type != "docker" else (),
                           image=deployable.definition if deployable.type == "docker" else None,
                           ports={p.name: p.protocol for p in breed.ports},
                           port_numbers={p.name: p.number for p in breed.ports}, environment=environment,
                           arguments=arguments, instances=scale.instances, cpu=scale.cpu, memory=scale.memory,
                           health_check=probe, workdir=None)

    # -- bookkeeping --------------------------------------------------------------------------------------
    def _allocate(self, deployment: Deployment) -> None:
        taken = set(self.allocations.values())
        for cluster in deployment.clusters:
            for port in cluster_ports(cluster):
                key = f"{deployment.name}/{cluster.name}/{port.name}"
                if key in self.allocations:
                    continue
                for candidate in self.internal_ports:
                    if candidate not in taken and _port_free(candidate):
                        self.allocations[key] = candidate
                        taken.add(candidate)
                        break
                else:
                    raise Conflict(f"no free port left for internal gateway {key} in "
                                   f"{self.internal_ports.start}-{self.internal_ports.stop - 1} "
                                   "(vamp run --internal-ports)")

    def _persist(self, deployment: Deployment) -> None:
        with self.store.transaction():
            self.store.put("deployments", deployment.name, dsl.to_dict(deployment))
            self.store.put("allocations", "internal-ports", self.allocations)

    def _service_state(self, deployment: Deployment, cluster: Cluster, service: Service,
                       instances: list[Instance]) -> tuple[str, str | None]:
        """(deploying | deployed | failed, why it is not deployed): see the module docstring."""
        staying = [i for i in instances if i.state not in GONE and i.id not in self.leaving]
        problem = self.orchestrator.problem(service_id(deployment.name, cluster.name, service))
        if problem is not None:
            return "failed", problem
        failing = [i for i in staying if i.failures >= FAILED_AFTER and not i.outdated]
        if failing:
            worst = max(failing, key=lambda i: i.failures)
            return "failed", f"instance {worst.id}: {worst.failure} ({worst.failures} times in a row)"
        wanted = service.scale.instances  # type: ignore[union-attr]
        ready = [i for i in staying if i.state == "ready" and not i.outdated]
        if len(ready) < wanted:
            replaced = sum(i.outdated for i in staying)
            troubled = max((i for i in staying if i.failures and not i.outdated), key=lambda i: i.failures,
                           default=None)
            return "deploying", f"{len(ready)} of {wanted} instances ready" + (
                f", {replaced} being replaced by the new version" if replaced else "") + (
                f"; instance {troubled.id}: {troubled.failure}" if troubled else "")
        if len(staying) > wanted:
            return "deploying", f"{len(staying) - wanted} instances more than {wanted} still to stop"
        effective = self.gateway_controller.effective
        for port in service.breed.ports:  # type: ignore[union-attr]
            name = f"{deployment.name}/{cluster.name}/{port.name}"
            route_name = f"{deployment.name}/{cluster.name}/{service_name(service)}/{port.name}"
            gateway = effective.gateway(name)
            route = next((r for r in gateway.routes if r.name == route_name), None) if gateway else None
            served = {t.address for t in route.targets if not t.drain} if route and not route.drain else set()
            unrouted = [i for i in ready if gw.Target(i.host, i.ports.get(port.name, 0)).address not in served]
            if unrouted:
                return "deploying", f"instance {unrouted[0].id} is ready, not yet a target of gateway {name}"
        return "deployed", None

    def _shown_state(self, instance: Instance) -> str:
        """The orchestrator's state of an instance, but `draining` while it is taken out of its gateways before
        it stops."""
        if instance.id in self.leaving and instance.state not in GONE:
            return "draining"
        return instance.state

    def _document(self, deployment: Deployment) -> dict[str, Any]:
        document = dsl.to_dict(deployment)
        document["kind"] = "deployments"
        for cluster in deployment.clusters:
            body = document["clusters"][cluster.name]
            for index, service in enumerate(cluster.services):
                instances = self.orchestrator.instances(service_id(deployment.name, cluster.name, service))
                body["services"][index]["instances"] = [
                    {"name": i.id, "host": i.host, "ports": dict(i.ports), "state": self._shown_state(i),
                     "restarts": i.restarts} for i in instances]
                state, reason = self._service_state(deployment, cluster, service, instances)
                body["services"][index].update(state=state, reason=reason)
            body["gateway_ports"] = {port.name: self.allocations.get(f"{deployment.name}/{cluster.name}/{port.name}")
                                     for port in cluster_ports(cluster)}
        return document


def service_id(deployment: str, cluster: str, service: Service) -> str:
    return f"{deployment}/{cluster}/{service_name(service)}"


def cluster_gateway_name(deployment: str, cluster: str, port: str) -> str:
    """The internal gateway of a cluster's port."""
    return f"{deployment}/{cluster}/{port}"


def generated_gateway_names(deployment: Deployment) -> set[str]:
    """The names of the gateways a deployment makes: one internal gateway per cluster port, and its external
    gateways (`deployment/port`)."""
    internal = {cluster_gateway_name(deployment.name, cluster.name, port.name)
                for cluster in deployment.clusters for port in cluster_ports(cluster)}
    return internal | {f"{deployment.name}/{gateway.port}" for gateway in deployment.gateways}


def service_route_name(deployment: str, cluster: str, service: Service, port: str) -> str:
    """The route of a service in the internal gateway of its cluster's port."""
    return f"{deployment}/{cluster}/{service_name(service)}/{port}"


def instance_target(instance: Instance, port: str) -> gw.Target:
    """What an instance is in its service's route on port `port` (the instance has that port)."""
    return gw.Target(instance.host, instance.ports[port])


def _service_tags(identity: str) -> list[str]:
    """`deployments:D`, `clusters:C`, `services:S` of a service id "D/C/S"."""
    parts = identity.split("/", 2)
    if len(parts) != 3:
        return [f"services:{identity}"]
    deployment, cluster, service = parts
    return [f"deployments:{deployment}", f"clusters:{cluster}", f"services:{service}"]


def _generated_tags(gateway: str) -> list[str]:
    """`deployments:D` of a gateway a deployment generated (D/PORT), and `clusters:C` of an internal one (D/C/PORT)."""
    parts = gateway.split("/")
    return [f"deployments:{parts[0]}"] + ([f"clusters:{parts[1]}"] if len(parts) == 3 else [])


def _settings(gateway: gw.Gateway) -> dict[str, Any]:
    """What a gateway event compares: the gateway's fields with every route's resolved weight, without targets."""
    settings = gateway_to_dict(gateway)
    settings["routes"] = {route.name: {**{k: v for k, v in settings["routes"][route.name].items() if k != "targets"},
                                       "weight": format_percent(route.weight)}
                          for route in gateway.routes}
    return settings


def gateway_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, created | updated | deleted) for each gateway whose settings differ, by name."""
    changes = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            changes.append((name, "created"))
        elif name not in after:
            changes.append((name, "deleted"))
        elif before[name] != after[name]:
            changes.append((name, "updated"))
    return changes


def merge_difference(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7396) that turns `old` into `new`: what changed, None for what went."""
    patch: dict[str, Any] = {}
    for key in [*old, *(key for key in new if key not in old)]:
        if key not in new:
            patch[key] = None
        elif key not in old:
            patch[key] = new[key]
        elif old[key] != new[key]:
            both = isinstance(old[key], dict) and isinstance(new[key], dict)
            patch[key] = merge_difference(old[key], new[key]) if both else new[key]
    return patch


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c in "/[]" for c in name):
        raise Invalid(f"a deployment name has no whitespace, '/', '[' or ']': {name!r}", "name")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _route(name: str, setting: GatewayRoute | None, targets: tuple[gw.Target, ...]) -> gw.Route:
    """A generated route as the deployment sets it. A route without a weight shares what the others leave:
    the gateway configuration's own rule resolves that when the whole configuration is validated."""
    condition = setting.condition.condition if setting and setting.condition else None  # type: ignore[union-attr]
    strength = setting.condition_strength if setting and setting.condition_strength is not None else FULL
    weight = setting.weight if setting else None
    return gw.Route(name=name, weight=weight or 0, weight_given=weight is not None, targets=targets,
                    condition=condition, condition_strength=strength if condition else FULL)


def _cluster_gateway(cluster: Cluster, port: str, port_count: int) -> ClusterGateway | None:
    for spec in cluster.gateways:
        if spec.port == port or (spec.port is None and port_count == 1):
            return spec
    return None


def merge(current: Deployment | None, blueprint: Blueprint, name: str) -> Deployment:
    """Merge a blueprint into a deployment (or make a new one): new services join their cluster at 0%,
    existing services are updated in place, existing weights stay."""
    if current is None:
        return Deployment(name=name, clusters=blueprint.clusters, gateways=blueprint.gateways,
                          dialects=blueprint.dialects)
    clusters = {cluster.name: cluster for cluster in current.clusters}
    order = [cluster.name for cluster in current.clusters]
    for incoming in blueprint.clusters:
        existing = clusters.get(incoming.name)
        if existing is None:
            clusters[incoming.name] = incoming
            order.append(incoming.name)
            continue
        services = list(existing.services)
        index = {service_name(s): i for i, s in enumerate(services)}
        added = []
        for service in incoming.services:
            if service_name(service) in index:
                services[index[service_name(service)]] = service
            else:
                services.append(service)
                added.append(service_name(service))
        merged = dataclasses.replace(existing, services=tuple(services), sla=incoming.sla or existing.sla)
        clusters[incoming.name] = _join_at_zero(merged, existing, added, incoming.gateways)
    gateways = {g.port: g for g in current.gateways}
    for gateway in blueprint.gateways:
        gateways[gateway.port] = gateway
    return Deployment(name=name, clusters=tuple(clusters[n] for n in order), gateways=tuple(gateways.values()),
                      dialects={**current.dialects, **blueprint.dialects})


def _join_at_zero(cluster: Cluster, before: Cluster, added: list[str],
                  incoming: tuple[ClusterGateway, ...]) -> Cluster:
    """Make every port's weights explicit, the services that existed keeping their share and the added
    ones at 0% — unless the incoming blueprint sets weights itself."""
    if not added or incoming:
        return dataclasses.replace(cluster, gateways=incoming or cluster.gateways)
    specs = []
    ports = cluster_ports(cluster)
    for port in ports:
        spec = _cluster_gateway(before, port.name, len(cluster_ports(before))) or ClusterGateway(port=port.name)
        old_services = [service_name(s) for s in before.services
                        if port.name in {p.name for p in s.breed.ports}]  # type: ignore[union-attr]
        given = {route.path: route for route in spec.routes}
        shares = resolve_weights([given[s].weight if s in given else None for s in old_services])
        routes = [dataclasses.replace(given[s], weight=w) if s in given else GatewayRoute(path=s, weight=w)
                  for s, w in zip(old_services, shares)]
        routes += [GatewayRoute(path=s, weight=0) for s in added]
        specs.append(dataclasses.replace(spec, port=port.name, routes=tuple(routes)))
    return dataclasses.replace(cluster, gateways=tuple(specs))


def remove_services(deployment: Deployment, blueprint: Blueprint | None
                    ) -> tuple[Deployment | None, list[str]]:
    """The deployment without the services the blueprint names (None: without any), and their ids.
    The weight of a removed route goes to the remaining ones in proportion (all of it to one left alone)."""
    if blueprint is None:
        removed = [service_id(deployment.name, c.name, s) for c in deployment.clusters for s in c.services]
        return None, removed
    names = {c.name: {service_name(s) for s in c.services} for c in blueprint.clusters}
    clusters = []
    removed = []
    for cluster in deployment.clusters:
        drop = names.get(cluster.name, set())
        keep = tuple(s for s in cluster.services if service_name(s) not in drop)
        removed += [service_id(deployment.name, cluster.name, s) for s in cluster.services
                    if service_name(s) in drop]
        if not keep:
            continue
        specs = []
        for spec in cluster.gateways:
            routes = [r for r in spec.routes if r.path not in drop]
            total = sum(r.weight or 0 for r in routes)
            if routes and total and total != FULL and all(r.weight is not None for r in routes):
                scaled = [r.weight * FULL // total for r in routes]  # type: ignore[operator]
                scaled[0] += FULL - sum(scaled)
                routes = [dataclasses.replace(r, weight=w) for r, w in zip(routes, scaled)]
            elif routes and not total and all(r.weight is not None for r in routes):
                routes = [dataclasses.replace(r, weight=None) for r in routes]
            specs.append(dataclasses.replace(spec, routes=tuple(routes)))
        clusters.append(dataclasses.replace(cluster, services=keep, gateways=tuple(specs)))
    if not clusters:
        return None, removed
    kept = {c.name for c in clusters}
    gateways = tuple(g for g in deployment.gateways
                     if all(route.path.partition("/")[0] in kept for route in g.routes))
    return dataclasses.replace(deployment, clusters=tuple(clusters), gateways=gateways), removed


def _replace_service(deployment: Deployment, cluster: str, service: Service) -> Deployment:
    clusters = []
    for c in deployment.clusters:
        if c.name == cluster:
            c = dataclasses.replace(c, services=tuple(service if service_name(s) == service_name(service) else s
                                                      for s in c.services))
        clusters.append(c)
    return dataclasses.replace(deployment, clusters=tuple(clusters))


# What a deployment keeps of a write to one of its gateways is what Vamp's DSL can say of a gateway: route
# weights, conditions and strengths, `sticky`, and an external gateway's virtual hosts. Anything else set
# differently would be validated, answered and then lost: it is refused instead.
_UNKEPT_GATEWAY_FIELDS = ("sticky_ttl", "sticky_cookie", "drain_timeout", "timeouts", "health_check")


def _refuse_unkept(current: gw.Gateway, gateway: gw.Gateway, *, internal: bool) -> None:
    """Raise a ConfigError naming the first setting of `gateway` that its deployment cannot keep."""
    fields = _UNKEPT_GATEWAY_FIELDS + (("virtual_hosts",) if internal else ())
    location = ("gateways", gateway.name)
    for field in fields:
        if getattr(gateway, field) != getattr(current, field):
            raise ConfigError(f"a gateway of a deployment keeps only its routes' weights, conditions and "
                              f"strengths, sticky{'' if internal else ' and virtual_hosts'}: {field} cannot "
                              "be set here", location + (field,))
    for route in gateway.routes:
        if route.drain:
            raise ConfigError("a route of a deployment's gateway cannot be drained here: set its weight to 0% "
                              "to stop new requests, or remove its service from the deployment (it drains)",
                              location + ("routes", route.name, "drain"))
        if route.health_check is not None:
            raise ConfigError("a gateway of a deployment keeps only its routes' weights, conditions and strengths: "
                              "health_check cannot be set here", location + ("routes", route.name, "health_check"))


def _route_setting(route: gw.Route, path: str) -> GatewayRoute:
    condition = dsl.model.Condition(route.condition) if route.condition else None
    return GatewayRoute(path=path, weight=route.weight if route.weight_given else None, condition=condition,
                        condition_strength=route.condition_strength if route.condition else None)


def _set_cluster_gateway(deployment: Deployment, cluster: str, port: str, gateway: gw.Gateway) -> Deployment:
    prefix = f"{deployment.name}/{cluster}/"
    routes = tuple(_route_setting(r, r.name[len(prefix):].rsplit("/", 1)[0]) for r in gateway.routes)
    spec = ClusterGateway(port=port, sticky=gateway.sticky, routes=routes)
    clusters = []
    for c in deployment.clusters:
        if c.name == cluster:
            others = tuple(g for g in c.gateways if g.port not in (port, None))
            c = dataclasses.replace(c, gateways=others + (spec,))
        clusters.append(c)
    return dataclasses.replace(deployment, clusters=tuple(clusters))


def _set_external_gateway(deployment: Deployment, gateway: gw.Gateway) -> Deployment:
    prefix = f"{deployment.name}/"
    gateways = []
    for g in deployment.gateways:
        if g.port == gateway.port:
            g = dataclasses.replace(g, sticky=gateway.sticky, virtual_hosts=gateway.virtual_hosts,
                                    routes=tuple(_route_setting(r, r.name[len(prefix):]) for r in gateway.routes))
        gateways.append(g)
    return dataclasses.replace(deployment, gateways=tuple(gateways))
