"""Kubernetes names and labels of Vamp services: what a service id becomes in the API, and back.

A Vamp service "deployment/cluster/service" (e.g. "sava/sava/sava:1.0.0") becomes one Deployment and one Service,
both named `object_name(id)`: "<deployment>-<cluster>-<service>" as a DNS label ("sava-sava-sava-1-0-0"), cut and
ended with a hash of the id when longer than 63 characters. Both carry `labels(id)` (the selector of the pods too)
and, in annotations, the exact names (`id_annotations(id)`), from which `service_id_of` reads the id back when a
restarted platform adopts what it finds.
"""
from __future__ import annotations

import hashlib
import re

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "vamp"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
DEPLOYMENT_KEY = "vamp.io/deployment"
CLUSTER_KEY = "vamp.io/cluster"
SERVICE_KEY = "vamp.io/service"
SPEC_HASH_KEY = "vamp.io/spec-hash"          # a pod template's annotation: which spec its pods run
SERVICE_NAME_LABEL = "kubernetes.io/service-name"   # what the EndpointSlice controller labels slices with
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

MAX_NAME = 63                 # a DNS label, a label value
MAX_PORT_NAME = 15            # IANA_SVC_NAME
HASH_LENGTH = 8

_NOT_NAME = re.compile(r"[^a-z0-9]+")
_NOT_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")
_HAS_LETTER = re.compile(r"[a-z]")


def short_hash(text: str, length: int = HASH_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(text: str, whole: str | None = None) -> str:
    """`text` as a DNS-1123 label: lower case, each run of other characters than [a-z0-9] as "-", no "-" at
    either end; cut and ended with a hash of `whole` (default `text`) when longer than 63 characters."""
    label = _NOT_NAME.sub("-", text.lower()).strip("-")
    if len(label) > MAX_NAME:
        label = label[:MAX_NAME - HASH_LENGTH - 1].rstrip("-") + "-" + short_hash(text if whole is None else whole)
    return label or "vamp-" + short_hash(text)


def split_id(service_id: str) -> tuple[str, str, str]:
    """("deployment", "cluster", "service") of a service id; ValueError for an id without three parts."""
    parts = service_id.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"a service id is deployment/cluster/service, got {service_id!r}")
    return parts[0], parts[1], parts[2]


def object_name(service_id: str) -> str:
    """The name of the service's Deployment and Service: "sava/sava/sava:1.0.0" -> "sava-sava-sava-1-0-0".
    A name starting with a digit starts with "vamp-" (a Service name must start with a letter)."""
    name = dns_label("-".join(split_id(service_id)), service_id)
    return name if name[0].isalpha() else dns_label("vamp-" + name, service_id)


def container_name(service_id: str) -> str:
    """The container of the service's pods: its service part as a DNS label ("sava:1.0.0" -> "sava-1-0-0")."""
    return dns_label(split_id(service_id)[2])


def label_value(text: str) -> str:
    """`text` as a label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends (a hash when cut)."""
    value = _NOT_LABEL_VALUE.sub("-", text)
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    if len(value) > MAX_NAME:
        value = re.sub(r"[^A-Za-z0-9]+$", "", value[:MAX_NAME - HASH_LENGTH - 1]) + "-" + short_hash(text)
    return value or short_hash(text)


def labels(service_id: str) -> dict[str, str]:
    """The labels of the service's Deployment, Service and pods; they select its pods."""
    deployment, cluster, service = split_id(service_id)
    return {MANAGED_BY: MANAGER, DEPLOYMENT_KEY: label_value(deployment), CLUSTER_KEY: label_value(cluster),
            SERVICE_KEY: label_value(service)}


def id_annotations(service_id: str) -> dict[str, str]:
    """The exact names, which labels may not hold."""
    deployment, cluster, service = split_id(service_id)
    return {DEPLOYMENT_KEY: deployment, CLUSTER_KEY: cluster, SERVICE_KEY: service}


def service_id_of(metadata: dict) -> str | None:
    """The service id an object's annotations name (None: not an object of a Vamp service)."""
    notes = metadata.get("annotations") or {}
    parts = [notes.get(DEPLOYMENT_KEY), notes.get(CLUSTER_KEY), notes.get(SERVICE_KEY)]
    if not all(isinstance(part, str) and part for part in parts):
        return None
    return "/".join(parts)  # type: ignore[arg-type]


def selector(labels: dict[str, str]) -> str:
    """A label selector matching all of `labels`."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def port_name(name: str) -> str:
    """A breed port's name as a container port name (IANA_SVC_NAME: at most 15 of [a-z0-9-], a letter among
    them, no "--", "-" at neither end): "webport" -> "webport", "Web_Port" -> "web-port", "8080" -> "p-8080";
    a longer one is cut and ended with a hash. ValueError for a name with nothing to keep."""
    label = _NOT_NAME.sub("-", name.lower()).strip("-")
    if not label:
        raise ValueError(f"port {name!r} has no letter or digit to name a Kubernetes port after")
    if not _HAS_LETTER.search(label):
        label = "p-" + label
    if len(label) > MAX_PORT_NAME:
        label = label[:MAX_PORT_NAME - 5].rstrip("-") + "-" + short_hash(name, 4)
        if not _HAS_LETTER.search(label):
            label = "p" + label[1:]
    return label
