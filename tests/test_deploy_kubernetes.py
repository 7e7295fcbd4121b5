"""The manifests in deploy/kubernetes/ install what docs/kubernetes.md says: every document is valid against the
Kubernetes schemas, strictly (no unknown field); the control plane's Role grants exactly what the Kubernetes driver
needs, and nothing but the Namespace is cluster-scoped; every container of Vamp's image runs a real `vamp` command
line, parsed by the `vamp` parser itself (a renamed option fails here); every Service reaches the pods it is meant
for, on ports they declare; kustomization.yaml lists every file."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from control.cli import build_parser
from gateway import StoreAddress, parse_admin_address
from gateway.cli import store_address

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
NAMESPACE = "vamp"

# The newest Kubernetes release whose schemas kubernetes-validate ships (pyproject.toml pins a version that has
# them); the manifests use only stable APIs (v1, apps/v1, rbac/v1, policy/v1), valid on older clusters too.
KUBERNETES_VERSION = "1.37"

# What the Kubernetes driver does with each right it has, in its namespace (docs/kubernetes.md, "RBAC"). The Role
# must grant exactly this: one verb more is a right nobody uses, one fewer a driver that fails with 403.
DRIVER_NEEDS: dict[tuple[str, str], tuple[set[str], str]] = {
    ("apps", "deployments"): ({"get", "list", "watch", "create", "update", "patch", "delete"},
                              "one Deployment per Vamp service: created, changed to a new spec, watched, adopted "
                              "after a restart, deleted on undeploy"),
    ("apps", "deployments/scale"): ({"get", "update", "patch"},
                                    "replicas are lowered through the scale subresource once the chosen pods drained"),
    ("", "services"): ({"get", "list", "watch", "create", "update", "patch", "delete"},
                       "one Service per Vamp service: its EndpointSlices, and where a dependency reaches it"),
    ("discovery.k8s.io", "endpointslices"): ({"get", "list", "watch"},
                                             "the instances: ready endpoints are routed, terminating ones drained"),
    ("", "pods"): ({"get", "list", "watch", "patch", "delete"},
                   "pod problems (CrashLoopBackOff, ImagePullBackOff, unschedulable), the pod-deletion-cost "
                   "annotation on the pods a scale-down takes away, and deleting a drained pod the ReplicaSet kept"),
    ("", "events"): ({"get", "list", "watch"},
                     "why a pod cannot run; the driver writes none (create and patch are optional, left out)"),
}

# The kinds the manifests may use: all namespaced. A ClusterRole, a ClusterRoleBinding or anything else
# cluster-wide would give Vamp more than its namespace.
NAMESPACED_KINDS = {"ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap", "Service", "Deployment",
                    "StatefulSet", "PodDisruptionBudget"}
WORKLOADS = {"Deployment", "StatefulSet"}

# What the downward API and Secrets would give a container, for the command lines' $(VAR) references.
FIELD_VALUES = {"status.podIP": "10.244.0.17"}

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


# -- reading the manifests -------------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path != KUSTOMIZATION)


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of every manifest, empty ones left out."""
    return [(path.name, document) for path in manifest_files()
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


DOCUMENTS = load_documents()


def describe(document: dict[str, Any]) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [document for _, document in DOCUMENTS if document["kind"] in kinds]


def named(kind: str, name: str) -> dict[str, Any]:
    (document,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return document


def containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every pod template."""
    return [(workload, container) for workload in of_kind(*WORKLOADS)
            for container in workload["spec"]["template"]["spec"]["containers"]]


def vamp_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w, c in containers() if c["image"].split(":")[0] == "vamp"]


def container_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return f"{describe(item[0])}/{item[1]['name']}"


# -- schemas ------------------------------------------------------------------------------------------------
def test_the_manifests_exist():
    assert DOCUMENTS, f"no manifests in {MANIFESTS}"
    assert {"Namespace", "Role", "Deployment", "StatefulSet", "Service", "Secret", "ConfigMap"} <= {
        document["kind"] for _, document in DOCUMENTS}


@pytest.mark.parametrize("file, document", DOCUMENTS, ids=[f"{f}:{describe(d)}" for f, d in DOCUMENTS])
def test_every_document_is_valid_against_the_kubernetes_schemas(file, document):
    problem = None
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        problem = f"{error.message} at {'.'.join(map(str, error.path))}"
    assert problem is None, f"{file}: {describe(document)}: {problem}"


# -- what Vamp may do in the cluster --------------------------------------------------------------------------
def test_the_role_grants_exactly_what_the_kubernetes_driver_needs():
    (role,) = of_kind("Role")
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"more than groups, resources and verbs: {rule}"
        granted |= {(group, resource, verb) for group in rule["apiGroups"] for resource in rule["resources"]
                    for verb in rule["verbs"]}
    needed = {(group, resource, verb) for (group, resource), (verbs, _) in DRIVER_NEEDS.items() for verb in verbs}
    assert granted - needed == set(), "rights the driver does not use"
    assert needed - granted == set(), "rights the driver needs and lacks"


def test_the_role_is_bound_to_the_control_plane_s_service_account_only():
    (role,) = of_kind("Role")
    (binding,) = of_kind("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vamp", "namespace": NAMESPACE}]
    named("ServiceAccount", "vamp")
    by_account = {describe(w): w["spec"]["template"]["spec"].get("serviceAccountName") for w in of_kind(*WORKLOADS)}
    assert by_account == {"Deployment/vamp-control-plane": "vamp", "Deployment/vamp-gateway": None,
                          "StatefulSet/etcd": None}
    for workload in of_kind(*WORKLOADS):     # the others get no API credentials at all
        if workload["metadata"]["name"] != "vamp-control-plane":
            assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, describe(workload)


def test_nothing_is_cluster_scoped_but_the_namespace():
    (namespace,) = of_kind("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    for file, document in DOCUMENTS:
        if document["kind"] != "Namespace":
            assert document["kind"] in NAMESPACED_KINDS, f"{file}: {describe(document)} may be cluster-scoped"
            assert document["metadata"].get("namespace") == NAMESPACE, f"{file}: {describe(document)}"


def test_no_manifest_looks_like_an_object_the_driver_manages():
    """The driver adopts what carries its labels after a restart, and deletes what it no longer wants: the
    platform's own objects must never look like a Vamp service's."""
    for file, document in DOCUMENTS:
        templates = [document["spec"]["template"]] if document["kind"] in WORKLOADS else []
        for metadata in (document["metadata"], *(t["metadata"] for t in templates)):
            labels = metadata.get("labels", {})
            assert labels.get("app.kubernetes.io/managed-by") != "vamp", f"{file}: {describe(document)}"
            assert not [key for key in labels if key.startswith("vamp.io/")], f"{file}: {describe(document)}"


# -- the command lines ---------------------------------------------------------------------------------------
def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables as Kubernetes sets them: values, ConfigMap keys (which must exist), and what
    the downward API gives (FIELD_VALUES)."""
    values = {}
    for variable in container.get("env", []):
        source = variable.get("valueFrom")
        if source is None:
            values[variable["name"]] = variable["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = named("ConfigMap", ref["name"])["data"]
            assert ref["key"] in data, f"ConfigMap {ref['name']} has no key {ref['key']!r}"
            values[variable["name"]] = data[ref["key"]]
        elif "fieldRef" in source:
            values[variable["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        else:
            pytest.fail(f"variable {variable['name']}: a source this test does not know: {source}")
    return values


def command_line(container: dict[str, Any]) -> list[str]:
    """command + args with $(VAR) expanded as the kubelet does ($$ is a literal $); a reference to a variable
    the container does not have would reach vamp as text, so it fails here."""
    values = environment(container)

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        assert match.group(1) in values, f"$({match.group(1)}) names no variable of the container"
        return values[match.group(1)]

    return [_REFERENCE.sub(expand, word) for word in [*container.get("command", []), *container.get("args", [])]]


def token_file_is_the_mounted_secret(container: dict[str, Any], pod: dict[str, Any], path: str) -> None:
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"--token-file {path} is on no mounted volume"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]]
    secret = named("Secret", volume["secret"]["secretName"])
    assert path.rsplit("/", 1)[1] in {**secret.get("data", {}), **secret.get("stringData", {})}


def container_port(container: dict[str, Any], number: int) -> dict[str, Any]:
    (port,) = [p for p in container["ports"] if p["containerPort"] == number]
    return port


@pytest.mark.parametrize("workload, container", vamp_containers(), ids=list(map(container_id, vamp_containers())))
def test_every_vamp_container_runs_a_real_vamp_command_line(workload, container, capsys):
    pod = workload["spec"]["template"]["spec"]
    argv = command_line(container)
    assert argv[0] == "vamp", "Vamp's image runs `vamp`"
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"not a vamp command line: {' '.join(argv)}: {capsys.readouterr().err.strip()}")

    assert args.token is None, "the token is read from the mounted Secret, never given on the command line"
    token_file_is_the_mounted_secret(container, pod, args.token_file)
    if args.command == "run":
        assert workload["spec"]["replicas"] > 1
        assert args.api_url == f"http://{FIELD_VALUES['status.podIP']}:8080", "replicas reach each other by pod IP"
        StoreAddress.parse(args.store)
        host, port = parse_admin_address(args.api)
        assert host == "0.0.0.0" and container_port(container, port)["name"] == "api"
        assert args.orchestrator == "kubernetes"
    else:
        assert args.command == "gateway"
        assert store_address(args) is not None, "a gateway of the fleet follows the store"
        assert args.bind == "0.0.0.0" and args.config is None
        host, port = parse_admin_address(args.admin)
        assert host == "0.0.0.0" and container_port(container, port)["name"] == "admin"
        assert args.grace < workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_the_control_plane_and_the_gateways_share_one_store():
    stores = [word.partition("=")[2] for _, container in vamp_containers() for word in command_line(container)
              if word.startswith(("--store=", "--config-store="))]
    assert len(stores) == len(vamp_containers())
    assert set(stores) == {named("ConfigMap", "vamp-config")["data"]["store"]}


@pytest.mark.parametrize("workload, container", vamp_containers(), ids=list(map(container_id, vamp_containers())))
def test_vamp_s_image_is_used_as_loaded_into_the_cluster(workload, container):
    """`vamp:latest` is built and loaded into kind or k3s, in no registry: a :latest image Kubernetes would pull."""
    assert container["image"] == "vamp:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"


# -- Services, selectors and ports ----------------------------------------------------------------------------
def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def served_by(selector: dict[str, str]) -> list[dict[str, Any]]:
    return [w for w in of_kind(*WORKLOADS) if selector.items() <= pod_labels(w).items()]


def declared_ports(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [port for container in workload["spec"]["template"]["spec"]["containers"] for port in container["ports"]]


@pytest.mark.parametrize("service", of_kind("Service"), ids=describe)
def test_every_service_selects_the_pods_of_one_workload_on_ports_they_declare(service):
    (workload,) = served_by(service["spec"]["selector"])
    names = {port["name"] for port in declared_ports(workload)}
    numbers = {port["containerPort"] for port in declared_ports(workload)}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in (names if isinstance(target, str) else numbers), \
            f"{describe(service)}: targetPort {target!r} is no port of {describe(workload)}"


@pytest.mark.parametrize("workload", of_kind(*WORKLOADS), ids=describe)
def test_every_workload_selects_its_own_pods_and_probes_declared_ports(workload):
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels(workload).items()
    for container in workload["spec"]["template"]["spec"]["containers"]:
        names = {port["name"] for port in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                handler = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                assert handler["port"] in names, f"{describe(workload)}: {probe} on an undeclared port"


def test_the_etcd_statefulset_has_its_headless_service():
    (etcd,) = of_kind("StatefulSet")
    service = named("Service", etcd["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert served_by(service["spec"]["selector"]) == [etcd]


def test_the_disruption_budget_covers_the_gateways():
    (budget,) = of_kind("PodDisruptionBudget")
    assert served_by(budget["spec"]["selector"]["matchLabels"]) == [named("Deployment", "vamp-gateway")]


def test_the_gateways_service_is_a_load_balancer_on_the_gateways_traffic_ports():
    service = named("Service", "vamp-gateway")
    assert service["spec"]["type"] == "LoadBalancer"
    (gateway,) = [c for w, c in vamp_containers() if w["metadata"]["name"] == "vamp-gateway"]
    traffic = {port["name"] for port in gateway["ports"] if port["name"] != "admin"}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == traffic, "the admin API is not public"


# -- kustomize ---------------------------------------------------------------------------------------------
def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
