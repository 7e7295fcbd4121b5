"""The Kubernetes driver's names and objects: what a Vamp service becomes in the API (valid against the API's
schema), the specs it refuses, and how an object read back is compared with the wanted one."""
from __future__ import annotations

import copy
import re
from decimal import Decimal

import kubernetes_validate
import pytest
from kubernetes_asyncio import client

from control.orchestrator.base import HealthCheck, ServiceSpec
from control.orchestrator.kubernetes import names, objects
from control.orchestrator.kubernetes.driver import KubernetesOrchestrator

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SAVA = "sava/sava/sava:1.0.0"


def sava(**changes) -> ServiceSpec:
    fields = dict(id=SAVA, image="docker://magneticio/sava:1.0.0", ports={"webport": "http"},
                  port_numbers={"webport": 8080}, environment={"SAVA_DEBUG": "1"}, instances=2,
                  health_check=HealthCheck(path="/health", port="webport", initial_delay=0.5, interval=2.5,
                                           timeout=0.2, failures=4))
    fields.update(changes)
    return ServiceSpec(**fields)


def valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


# -- names --------------------------------------------------------------------------------------------------
def test_object_names_are_dns_labels_of_the_three_parts():
    assert names.object_name(SAVA) == "sava-sava-sava-1-0-0"
    assert names.object_name("Shop/Front_End/web.server:2") == "shop-front-end-web-server-2"
    assert names.object_name("a/b/--x--") == "a-b-x"
    assert names.container_name(SAVA) == "sava-1-0-0"


def test_a_name_starting_with_a_digit_starts_with_vamp():
    name = names.object_name("2024/release/web")
    assert name == "vamp-2024-release-web"
    assert DNS_LABEL.fullmatch(name)


def test_long_names_are_cut_and_end_with_a_hash_of_the_whole_id():
    first = "d" * 40 + "/" + "c" * 30 + "/service-one"
    second = "d" * 40 + "/" + "c" * 30 + "/service-two"
    cut = names.object_name(first)
    assert len(cut) <= 63 and DNS_LABEL.fullmatch(cut)
    assert cut.endswith("-" + names.short_hash(first))
    assert cut.startswith("d" * 40 + "-")
    assert names.object_name(second) != cut               # the same start, different ids: different names
    assert names.object_name(first) == cut                # and the same id always gives the same one


def test_an_id_without_three_parts_is_refused():
    with pytest.raises(ValueError, match="deployment/cluster/service"):
        names.object_name("sava/sava")


def test_labels_are_valid_label_values_and_annotations_hold_the_exact_names():
    service_id = "My Shop/front:end/" + "x" * 80 + ":1.0.0"
    labels = names.labels(service_id)
    assert labels[names.MANAGED_BY] == "vamp"
    assert labels["vamp.io/deployment"] == "My-Shop"
    assert labels["vamp.io/cluster"] == "front-end"
    service = labels["vamp.io/service"]
    assert len(service) <= 63 and service.endswith("-" + names.short_hash("x" * 80 + ":1.0.0"))
    assert all(LABEL_VALUE.fullmatch(value) for value in labels.values())
    notes = names.id_annotations(service_id)
    assert notes == {"vamp.io/deployment": "My Shop", "vamp.io/cluster": "front:end",
                     "vamp.io/service": "x" * 80 + ":1.0.0"}
    assert names.service_id_of({"annotations": notes}) == service_id
    assert names.service_id_of({"annotations": {"vamp.io/deployment": "a"}}) is None
    assert names.labels(SAVA)["vamp.io/service"] == "sava-1.0.0"


@pytest.mark.parametrize("breed, kubernetes", [("webport", "webport"), ("Web_Port", "web-port"),
                                               ("8080", "p-8080"), ("metrics-and-admin-port", None)])
def test_port_names_are_iana_service_names(breed, kubernetes):
    name = names.port_name(breed)
    assert len(name) <= 15 and PORT_NAME.fullmatch(name) and re.search("[a-z]", name) and "--" not in name
    if kubernetes is not None:
        assert name == kubernetes
    else:
        assert name.endswith("-" + names.short_hash(breed, 4))


# -- the objects --------------------------------------------------------------------------------------------
def test_the_deployment_runs_the_image_with_ports_env_probes_and_a_safe_rollout():
    deployment = objects.deployment(sava(arguments={"privileged": "true", "log-level": "debug"}, cpu=0.2,
                                         memory=128 * 2 ** 20))
    valid(deployment)
    assert deployment["metadata"]["name"] == "sava-sava-sava-1-0-0"
    assert deployment["metadata"]["labels"] == names.labels(SAVA)
    assert deployment["metadata"]["annotations"] == names.id_annotations(SAVA)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": names.labels(SAVA)}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    template = spec["template"]
    assert template["metadata"]["labels"] == names.labels(SAVA)
    assert names.SPEC_HASH_KEY in template["metadata"]["annotations"]
    [container] = template["spec"]["containers"]
    probe = {"httpGet": {"path": "/health", "port": "webport"}, "initialDelaySeconds": 1, "periodSeconds": 3,
             "timeoutSeconds": 1, "failureThreshold": 4}
    assert container == {
        "name": "sava-1-0-0", "image": "magneticio/sava:1.0.0",
        "ports": [{"name": "webport", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "SAVA_DEBUG", "value": "1"}],
        "args": ["--log-level=debug"],
        "securityContext": {"privileged": True},
        "readinessProbe": probe, "livenessProbe": probe,
        "resources": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        # a pod going away keeps serving while its endpoint terminates and the gateway stops routing to it
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}


def test_a_plain_image_a_tcp_check_and_odd_memory():
    spec = sava(image="nginx:1.27", health_check=HealthCheck(protocol="tcp", interval=0.1), environment={},
                memory=1000, cpu=1.5, ports={"web": "http", "admin": "tcp"},
                port_numbers={"web": 80, "admin": 9000})
    deployment = objects.deployment(spec)
    valid(deployment)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:1.27"
    assert "env" not in container and "args" not in container and "securityContext" not in container
    assert container["readinessProbe"] == {"tcpSocket": {"port": "web"}, "initialDelaySeconds": 0,
                                           "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 3}
    assert container["resources"]["limits"] == {"cpu": "1500m", "memory": "1000"}


def test_the_pod_template_hash_changes_with_the_spec_not_with_the_instances():
    def spec_hash(spec: ServiceSpec) -> str:
        return objects.deployment(spec)["spec"]["template"]["metadata"]["annotations"][names.SPEC_HASH_KEY]
    assert spec_hash(sava()) == spec_hash(sava(instances=5))
    assert spec_hash(sava()) != spec_hash(sava(image="docker://magneticio/sava:1.1.0"))
    assert spec_hash(sava()) != spec_hash(sava(environment={"SAVA_DEBUG": "0"}))


def test_the_service_selects_the_pods_and_names_its_ports_after_the_breeds():
    spec = sava(ports={"webport": "http", "Metrics_Port": "tcp"}, port_numbers={"webport": 8080, "Metrics_Port": 9090})
    service = objects.service(spec)
    valid(service)
    assert service["metadata"]["name"] == "sava-sava-sava-1-0-0"
    assert service["spec"] == {
        "type": "ClusterIP", "selector": names.labels(SAVA),
        "ports": [{"name": "webport", "port": 8080, "targetPort": "webport", "protocol": "TCP"},
                  {"name": "metrics-port", "port": 9090, "targetPort": "metrics-port", "protocol": "TCP"}]}
    [container] = objects.deployment(spec)["spec"]["template"]["spec"]["containers"]
    assert [port["name"] for port in container["ports"]] == ["webport", "metrics-port"]


def test_a_breed_without_ports_gets_a_headless_service():
    service = objects.service(sava(ports={}, port_numbers={}, health_check=None))
    valid(service)
    assert service["spec"] == {"selector": names.labels(SAVA), "clusterIP": "None"}


# -- what the driver refuses ----------------------------------------------------------------------------
@pytest.fixture
async def driver():
    """A driver whose API is nowhere (port 9 on loopback): checks need no API."""
    orchestrator = KubernetesOrchestrator(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")),
                                          "default")
    yield orchestrator
    await orchestrator.close()


def refusal(driver: KubernetesOrchestrator, spec: ServiceSpec) -> str:
    with pytest.raises(ValueError) as caught:
        driver.check(spec)
    return str(caught.value)


async def test_a_command_cannot_run_on_kubernetes(driver):
    message = refusal(driver, sava(image=None, command=("python", "-m", "control.demo.sava")))
    assert message == ("a cmd deployable cannot run on Kubernetes: give the breed a docker image "
                       "(deployable: docker://IMAGE)")
    with pytest.raises(ValueError, match="a cmd deployable cannot run on Kubernetes"):
        await driver.deploy(sava(image=None, command=("python", "-m", "control.demo.sava")))
    assert driver.instances() == []


@pytest.mark.parametrize("changes, words", [
    (dict(port_numbers={}), "port 'webport' needs a number"),
    (dict(port_numbers={"webport": 70000}), "port 'webport' needs a number from 1 to 65535"),
    (dict(ports={"web": "http", "WEB": "http"}, port_numbers={"web": 80, "WEB": 81}, health_check=None),
     "ports 'web' and 'WEB' would both be named 'web'"),
    (dict(ports={"a": "http", "b": "http"}, port_numbers={"a": 80, "b": 80}, health_check=None),
     "ports 'a' and 'b' both have number 80"),
    (dict(ports={"--": "http"}, port_numbers={"--": 80}, health_check=None), "port '--' has no letter or digit"),
    (dict(health_check=HealthCheck(port="admin")), "health check port 'admin'"),
    (dict(restart=False), "runs to completion"),
    (dict(instances=-1), "instances must be a whole number"),
])
async def test_specs_that_cannot_become_objects_are_refused(driver, changes, words):
    assert words in refusal(driver, sava(**changes))


async def test_two_services_with_one_kubernetes_name_are_refused(driver):
    await driver.deploy(sava())
    driver.check(sava())                                   # the same service again is fine
    assert "would both be named 'sava-sava-sava-1-0-0'" in refusal(driver, sava(id="sava/sava/sava-1.0.0"))
    assert driver.service_host(SAVA) == "sava-sava-sava-1-0-0.default.svc"
    # known before it is deployed: a dependency may be on a cluster deployed after the one that needs it
    assert driver.service_host("shop/db/postgres:16") == "shop-db-postgres-16.default.svc"


# -- comparing with what the API holds ----------------------------------------------------------------------
def read_back(obj: dict) -> dict:
    """The object as an API server returns it: defaults added, quantities normalised, status."""
    actual = copy.deepcopy(obj)
    actual["metadata"].update(resourceVersion="42", uid="u-1", creationTimestamp="2024-05-01T12:00:00Z")
    actual["metadata"]["labels"]["extra"] = "theirs"
    container = actual["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    container["resources"] = {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
    container["readinessProbe"]["successThreshold"] = 1
    actual["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    actual["spec"]["revisionHistoryLimit"] = 10
    actual["status"] = {"replicas": 2}
    return actual


def test_what_the_api_adds_is_no_drift():
    wanted = objects.deployment(sava(cpu=1.0, memory=128 * 2 ** 20))
    assert wanted["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1000m"
    assert objects.drift(wanted, read_back(wanted)) is None


def test_a_changed_field_or_a_removed_one_is_drift_replicas_only_when_compared():
    wanted = objects.deployment(sava(cpu=1.0, memory=128 * 2 ** 20))
    actual = read_back(wanted)
    actual["spec"]["template"]["spec"]["containers"][0]["image"] = "magneticio/sava:0.9"
    assert objects.drift(wanted, actual) == "spec.template.spec.containers[0].image"
    actual = read_back(wanted)
    actual["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "MORE", "value": "x"})
    assert objects.drift(wanted, actual) == "spec.template.spec.containers[0].env"
    actual = read_back(wanted)
    actual["spec"]["replicas"] = 5
    assert objects.drift(wanted, actual) == "spec.replicas"
    assert objects.drift(wanted, actual, skip=frozenset({"spec.replicas"})) is None
    actual = read_back(wanted)
    del actual["metadata"]["annotations"]["vamp.io/service"]
    assert objects.drift(wanted, actual) == "metadata.annotations.vamp.io/service"


def test_the_replacement_keeps_what_the_api_owns_and_sets_vamps_part_whole():
    old = read_back(objects.deployment(sava()))
    old["spec"]["replicas"] = 3
    wanted = objects.deployment(sava(image="docker://magneticio/sava:1.1.0", instances=1))
    body = objects.replacement(old, wanted, keep=("replicas",))
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["metadata"]["labels"]["extra"] == "theirs"
    assert body["spec"]["replicas"] == 3 and body["spec"]["revisionHistoryLimit"] == 10
    assert body["spec"]["template"] == wanted["spec"]["template"]
    assert "status" not in body
    assert objects.drift(wanted, body, skip=frozenset({"spec.replicas"})) is None


@pytest.mark.parametrize("text, value", [("200m", "0.2"), ("1", "1"), ("128Mi", "134217728"), ("1k", "1000"),
                                         ("1e3", "1000"), ("1.5Gi", "1610612736")])
def test_quantities(text, value):
    assert objects.quantity(text) == Decimal(value)
    assert objects.quantity("lots") is None
