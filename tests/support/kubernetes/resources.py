"""The resources the fake serves and what the API server does to each object on its way into storage: the
resource table (group, version, kind, which fields a field selector may use), the defaults a real server fills
in (apps/v1 and core/v1 SetDefaults_*, plus the pod admission plugins' service account and tolerations), the
validation that real clients trip over (names, labels, a Deployment's selector against its template, container
names and images, ports, immutable fields), each failure a 422 Invalid with the field and the real wording."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, invalid
from .selectors import label_key_problem, label_value_problem, selector_from_object

METADATA_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    name: str                   # the plural in paths: "deployments"
    kind: str
    group: str                  # "" for the core group
    version: str
    short_names: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = METADATA_FIELDS
    has_status: bool = False    # status is a subresource: writes to the main resource keep the stored status
    tracks_generation: bool = False
    returns_deleted_object: bool = False
    name_rule: str = "subdomain"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.name}.{self.group}" if self.group else self.name

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES: dict[str, Resource] = {resource.name: resource for resource in (
    Resource("deployments", "Deployment", "apps", "v1", ("deploy",), has_status=True, tracks_generation=True),
    Resource("services", "Service", "", "v1", ("svc",), METADATA_FIELDS + ("spec.clusterIP", "spec.type"),
             has_status=True, returns_deleted_object=True, name_rule="label1035"),
    Resource("pods", "Pod", "", "v1", ("po",), METADATA_FIELDS + (
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
        "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"),
        has_status=True, returns_deleted_object=True),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1"),
    Resource("events", "Event", "", "v1", ("ev",), METADATA_FIELDS + (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
        "reportingComponent", "source", "type"), name_rule="any"),
)}

SUBRESOURCES = {"deployments": ("scale", "status"), "pods": ("status",), "services": ("status",)}


def resource_at(group: str, version: str, name: str) -> Resource | None:
    resource = RESOURCES.get(name)
    if resource is None or resource.group != group or resource.version != version:
        return None
    return resource


def field_value(obj: dict[str, Any], field: str) -> str:
    """The value a field selector compares, as the API server's field set renders it."""
    if field == "source":
        return str((obj.get("source") or {}).get("component", ""))
    if field == "status.podIPs":
        return ",".join(entry.get("ip", "") for entry in (obj.get("status") or {}).get("podIPs") or [])
    node: Any = obj
    for part in field.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


# Defaults


def image_tag(image: str) -> str:
    """The tag of an image reference ("latest" without one); a digest reference has none."""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _default_probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "Always" if image_tag(container.get("image", "")) == "latest"
                         else "IfNotPresent")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(name))
    for variable in container.get("env") or []:
        field_ref = (variable.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for containers in ("initContainers", "containers"):
        for container in spec.get(containers) or []:
            if isinstance(container, dict):
                _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def _default_pod(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if "tolerations" not in spec:       # the DefaultTolerationSeconds admission plugin
        spec["tolerations"] = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300} for taint in ("not-ready", "unreachable")]


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _default_endpoint_slice(obj: dict[str, Any]) -> None:
    for port in obj.get("ports") or []:
        port.setdefault("protocol", "TCP")


DEFAULTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "deployments": _default_deployment, "pods": _default_pod, "services": _default_service,
    "endpointslices": _default_endpoint_slice, "events": lambda obj: None,
}


def qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [container.get("resources") or {} for container in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all((r.get("limits") or {}).get(name) and
                     (r.get("requests") or {}).get(name, (r.get("limits") or {}).get(name)) == r["limits"][name]
                     for r in resources for name in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def initial_status(resource: Resource, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The status a freshly created object has: what a client sent is dropped (it is a subresource)."""
    if resource.name == "deployments":
        return {}
    if resource.name == "pods":
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
    if resource.name == "services":
        return {"loadBalancer": {}}
    return None


# Validation

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                     "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_1123_MESSAGE = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                      "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                      "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
LABEL_1035_MESSAGE = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                      "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                      "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def go_value(value: Any) -> str:
    """A value as Go's %#v shows it in a validation message, near enough."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


class Problems:
    """Validation causes gathered for one object."""

    def __init__(self) -> None:
        self.causes: list[tuple[str, str, str]] = []

    def required(self, field: str, detail: str = "") -> None:
        self.causes.append((field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")))

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self.causes.append((field, "FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}"))

    def unsupported(self, field: str, value: Any, supported: list[str]) -> None:
        self.causes.append((field, "FieldValueNotSupported", f"Unsupported value: {go_value(value)}: supported "
                            f"values: {', '.join(json.dumps(s) for s in supported)}"))

    def duplicate(self, field: str, value: Any) -> None:
        self.causes.append((field, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}"))

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append((field, "FieldValueForbidden", f"Forbidden: {detail}"))

    def raise_if_any(self, resource: Resource, name: str) -> None:
        if self.causes:
            raise invalid(resource.kind, resource.group, name, self.causes)


def _check_name(problems: Problems, rule: str, field: str, name: str) -> None:
    if rule == "any":
        if "/" in name or name in (".", ".."):
            problems.invalid(field, name, "may not contain '/'")
    elif rule == "label1035":
        if len(name) > 63 or not _LABEL_1035.match(name):
            problems.invalid(field, name, LABEL_1035_MESSAGE)
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.invalid(field, name, SUBDOMAIN_MESSAGE)


def _check_labels(problems: Problems, field: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        problems.invalid(field, labels, "must be a map of strings")
        return
    for key, value in labels.items():
        key_problem = label_key_problem(key)
        if key_problem is not None:
            problems.invalid(field, key, key_problem)
        if not isinstance(value, str):
            problems.invalid(f"{field}", value, "must be a string")
        else:
            value_problem = label_value_problem(value)
            if value_problem is not None:
                problems.invalid(field, value, value_problem)


def _check_metadata(problems: Problems, resource: Resource, metadata: dict[str, Any], field: str = "metadata",
                    with_name: bool = True) -> None:
    if with_name:
        name = metadata.get("name")
        if not name:
            problems.required(f"{field}.name", "name or generateName is required")
        else:
            _check_name(problems, resource.name_rule, f"{field}.name", name)
    _check_labels(problems, f"{field}.labels", metadata.get("labels"))
    annotations = metadata.get("annotations")
    if annotations is not None:
        for key, value in annotations.items():
            problem = label_key_problem(key)
            if problem is not None:
                problems.invalid(f"{field}.annotations", key, problem)
            if not isinstance(value, str):
                problems.invalid(f"{field}.annotations", value, "must be a string")


def _check_port(problems: Problems, field: str, number: Any) -> None:
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
        problems.invalid(field, number, "must be between 1 and 65535, inclusive")


def _check_port_name(problems: Problems, field: str, name: Any) -> None:
    if not isinstance(name, str) or len(name) > 15 or not _PORT_NAME.match(name) or "--" in name \
            or not re.search("[a-z]", name):
        problems.invalid(field, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); "
                         "must contain at least one letter (a-z); must be no more than 15 characters")


def _check_pod_spec(problems: Problems, spec: Any, field: str) -> None:
    if not isinstance(spec, dict):
        problems.required(field)
        return
    containers = spec.get("containers")
    if not containers:
        problems.required(f"{field}.containers")
        return
    names: set[str] = set()
    for index, container in enumerate(containers):
        where = f"{field}.containers[{index}]"
        name = container.get("name")
        if not name:
            problems.required(f"{where}.name")
        elif len(name) > 63 or not _LABEL_1123.match(name):
            problems.invalid(f"{where}.name", name, LABEL_1123_MESSAGE)
        elif name in names:
            problems.duplicate(f"{where}.name", name)
        else:
            names.add(name)
        if not container.get("image"):
            problems.required(f"{where}.image")
        port_names: set[str] = set()
        for port_index, port in enumerate(container.get("ports") or []):
            _check_port(problems, f"{where}.ports[{port_index}].containerPort", port.get("containerPort"))
            if "name" in port:
                _check_port_name(problems, f"{where}.ports[{port_index}].name", port["name"])
                if port["name"] in port_names:
                    problems.duplicate(f"{where}.ports[{port_index}].name", port["name"])
                port_names.add(port["name"])
            if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
                problems.unsupported(f"{where}.ports[{port_index}].protocol", port.get("protocol"),
                                     ["SCTP", "TCP", "UDP"])
        for variable_index, variable in enumerate(container.get("env") or []):
            if not variable.get("name"):
                problems.required(f"{where}.env[{variable_index}].name")
            elif "value" in variable and not isinstance(variable["value"], str):
                problems.invalid(f"{where}.env[{variable_index}].value", variable["value"], "must be a string")


def _validate_deployment(problems: Problems, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        problems.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
    selector = spec.get("selector")
    template = spec.get("template") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        problems.required("spec.selector")
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        problems.invalid("spec.selector", selector, "empty selector is invalid for deployment")
    if selector and not selector_from_object(selector).matches(template_labels):
        problems.invalid("spec.template.metadata.labels", template_labels,
                         "`selector` does not match template `labels`")
    _check_metadata(problems, RESOURCES["pods"], template.get("metadata") or {}, "spec.template.metadata",
                    with_name=False)
    _check_pod_spec(problems, template.get("spec"), "spec.template.spec")
    restart = (template.get("spec") or {}).get("restartPolicy")
    if restart != "Always":
        problems.unsupported("spec.template.spec.restartPolicy", restart, ["Always"])
    strategy = spec.get("strategy") or {}
    if strategy.get("type") not in ("RollingUpdate", "Recreate"):
        problems.unsupported("spec.strategy.type", strategy.get("type"), ["Recreate", "RollingUpdate"])
    if strategy.get("type") == "Recreate" and strategy.get("rollingUpdate"):
        problems.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    rolling = strategy.get("rollingUpdate") or {}
    if strategy.get("type") == "RollingUpdate" and _zero(rolling.get("maxSurge")) \
            and _zero(rolling.get("maxUnavailable")):
        problems.invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"),
                         "may not be 0 when `maxSurge` is 0")
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        problems.invalid("spec.selector", selector, "field is immutable")


def _zero(value: Any) -> bool:
    return value in (0, "0", "0%")


def _validate_service(problems: Problems, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec") or {}
    kind = spec.get("type")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        problems.unsupported("spec.type", kind, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"])
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and kind != "ExternalName":
        problems.required("spec.ports")
    names: set[str] = set()
    for index, port in enumerate(ports):
        name = port.get("name")
        if len(ports) > 1 and not name:
            problems.required(f"spec.ports[{index}].name")
        elif name:
            if name in names:
                problems.duplicate(f"spec.ports[{index}].name", name)
            names.add(name)
        _check_port(problems, f"spec.ports[{index}].port", port.get("port"))
        target = port.get("targetPort")
        if isinstance(target, str):
            _check_port_name(problems, f"spec.ports[{index}].targetPort", target)
        else:
            _check_port(problems, f"spec.ports[{index}].targetPort", target)
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            problems.unsupported(f"spec.ports[{index}].protocol", port.get("protocol"), ["SCTP", "TCP", "UDP"])
    if spec.get("selector") is not None:
        _check_labels(problems, "spec.selector", spec["selector"])
    if old is not None and (old.get("spec") or {}).get("clusterIP") not in (None, spec.get("clusterIP")):
        problems.invalid("spec.clusterIPs[0]", spec.get("clusterIPs"), "may not change once set")


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod_spec_without_mutable(spec: dict[str, Any]) -> dict[str, Any]:
    stripped = {key: value for key, value in spec.items() if key not in _POD_MUTABLE}
    for containers in ("containers", "initContainers"):
        if containers in stripped:
            stripped[containers] = [{k: v for k, v in container.items() if k != "image"}
                                    for container in stripped[containers]]
    return stripped


def _validate_pod(problems: Problems, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    _check_pod_spec(problems, obj.get("spec"), "spec")
    if old is not None and _pod_spec_without_mutable(obj.get("spec") or {}) != _pod_spec_without_mutable(
            old.get("spec") or {}):
        problems.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                           "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                           "set to 1 if it was previously negative)")


def _validate_endpoint_slice(problems: Problems, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        problems.unsupported("addressType", obj.get("addressType"), ["FQDN", "IPv4", "IPv6"])
    for index, endpoint in enumerate(obj.get("endpoints") or []):
        if not endpoint.get("addresses"):
            problems.required(f"endpoints[{index}].addresses", "must contain at least 1 address")


def _validate_event(problems: Problems, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    involved = obj.get("involvedObject") or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    if involved.get("namespace") and involved["namespace"] != namespace:
        problems.invalid("involvedObject.namespace", involved["namespace"],
                         "does not match event.namespace")


VALIDATORS: dict[str, Callable[[Problems, dict[str, Any], dict[str, Any] | None], None]] = {
    "deployments": _validate_deployment, "services": _validate_service, "pods": _validate_pod,
    "endpointslices": _validate_endpoint_slice, "events": _validate_event,
}


def validate(resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise 422 Invalid naming every problem of `obj` (`old`: the stored object, on an update)."""
    problems = Problems()
    metadata = obj.get("metadata") or {}
    _check_metadata(problems, resource, metadata)
    VALIDATORS[resource.name](problems, obj, old)
    problems.raise_if_any(resource, metadata.get("name") or "")


__all__ = ["ApiError", "RESOURCES", "Resource", "validate"]
