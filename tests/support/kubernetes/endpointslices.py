"""The EndpointSlice controller, as the simulated cluster plays it: for every Service with a selector, one
slice (`<service>-<5 random>`, labelled `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
endpointslice-controller.k8s.io` plus the Service's own labels, owned by the Service) listing every pod that
matches the selector and has an IP: its address, conditions {ready, serving, terminating} as the real
controller derives them (ready: Ready and not terminating; serving: Ready; terminating: being deleted),
targetRef and nodeName. Ports come from the Service's, each targetPort resolved by name through the pods'
containerPorts or taken as a number. The slice is updated in place as pods change; it goes with its Service.
An empty slice has `endpoints: null`, as a real one read back from etcd does."""
from __future__ import annotations

from typing import Any

from .deployments import is_ready
from .kubelet import NODE
from .selectors import LabelSelector, Requirement

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100


def _resolve_ports(service: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]] | None:
    ports = []
    for port in service["spec"].get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str):
            number = next((entry["containerPort"] for container in pod["spec"].get("containers") or []
                           for entry in container.get("ports") or [] if entry.get("name") == target), None)
            if number is None:
                return None
        else:
            number = target
        ports.append({"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")})
    return ports


def desired_slice(service: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """What the slice of `service` holds (its metadata.name and resourceVersion are the caller's)."""
    selector = LabelSelector(tuple(Requirement(key, "=", (value,))
                                   for key, value in (service["spec"].get("selector") or {}).items()))
    endpoints: list[dict[str, Any]] = []
    ports: list[dict[str, Any]] | None = None
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        if not selector.matches(pod["metadata"].get("labels")) or not status.get("podIP") \
                or status.get("phase") in ("Succeeded", "Failed"):
            continue
        resolved = _resolve_ports(service, pod)
        if resolved is None or (ports is not None and resolved != ports):
            continue
        ports = resolved
        terminating = "deletionTimestamp" in pod["metadata"]
        ready = is_ready(pod)
        endpoints.append({"addresses": [status["podIP"]],
                          "conditions": {"ready": ready and not terminating, "serving": ready,
                                         "terminating": terminating},
                          "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                                        "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
                          "nodeName": NODE})
        if len(endpoints) == MAX_ENDPOINTS:
            break
    metadata = service["metadata"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
        "generateName": f"{metadata['name']}-", "namespace": metadata["namespace"],
        "labels": {**(metadata.get("labels") or {}), SERVICE_NAME: metadata["name"], MANAGED_BY: CONTROLLER},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": metadata["name"], "uid": metadata["uid"],
                             "controller": True, "blockOwnerDeletion": True}]},
        "addressType": "IPv4", "endpoints": endpoints or None, "ports": ports}


def same_content(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return (current.get("endpoints"), current.get("ports"), current["metadata"].get("labels"),
            current["metadata"].get("ownerReferences")) == (desired.get("endpoints"), desired.get("ports"),
                                                            desired["metadata"]["labels"],
                                                            desired["metadata"]["ownerReferences"])
