"""VAMP's DSL forms the readers take as VAMP does (docs/dsl.md, "Compatibility with VAMP's DSL"): health checks
with relative paths, port numbers and https; dotted variable names and service aliases; ports given by a
dependency's constant; megabytes as bare numbers; stored routes, empty conditions, SLA references with their own
escalations; fields read and kept (selector, balance, rewrites, service, metadata, network, status); and what
VAMP refuses when a document is written (cycles, references to undeclared dependencies or missing traits,
dependencies no cluster runs, cluster variables no breed declares, `~` at the top scope, a non-boolean
privileged). The gateway API takes VAMP's conditions and keeps what it does not apply."""
from __future__ import annotations

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from control.api import create_app
from control.dsl import (DslError, effective_environment, effective_health_checks, read, read_text,
                         resolve_references, to_dict, validate_complete)
from control.dsl.model import Breed, GatewayRoute, Reference, Scale, Sla
from control.dsl.selectors import check_selector
from gateway.common.yamltext import single_document
from tests.support import free_port
from tests.control.test_engine_quickstart import platform  # noqa: F401 - the fixture


def blueprint(text: str):
    return read("blueprint", yaml.safe_load(text))


def refused(kind: str, text: str) -> DslError:
    with pytest.raises(DslError) as caught:
        read(kind, yaml.safe_load(text))
    return caught.value


def round_trips(artifact) -> None:
    assert read(to_dict(artifact)["kind"], to_dict(artifact)) == artifact


# -- health checks -------------------------------------------------------------------------------------
def test_health_checks_take_vamps_relative_paths_port_numbers_and_https():
    sava = blueprint("""
name: sava
clusters:
  sava:
    services:
      breed: {name: sava:1.0.0, deployable: magneticio/sava:1.0.0, ports: {webport: 8080/http}}
      health_checks: {path: path/to/check, port: 8080, protocol: HTTPS}
""")
    cluster = sava.cluster("sava")
    [check] = effective_health_checks(cluster, cluster.services[0])
    assert (check.path, check.port, check.protocol) == ("/path/to/check", "webport", "https")
    round_trips(sava)
    error = refused("breed", "{name: b, deployable: x, ports: {web: 8080}, health_checks: {port: 9090}}")
    assert error.path == "health_checks.port" and "no port 9090" in str(error)


def test_a_cluster_check_on_a_port_only_some_services_have_checks_those_services():
    sava = blueprint("""
name: sava
clusters:
  sava:
    health_checks: [{port: webport}, {port: webport2}]
    services:
    - breed: {name: a:1, deployable: a, ports: {webport: 8080/http}}
    - breed: {name: b:1, deployable: b, ports: {webport2: 8081/http}}
""")
    cluster = sava.cluster("sava")
    assert [check.port for check in effective_health_checks(cluster, cluster.services[0])] == ["webport"]
    assert [check.port for check in effective_health_checks(cluster, cluster.services[1])] == ["webport2"]
    validate_complete(sava)
    error = refused("blueprint", """
name: sava
clusters:
  sava:
    health_checks: {port: admin}
    services: [{breed: {name: a:1, deployable: a, ports: {webport: 8080/http}}}]
""")
    assert error.path == "clusters.sava.health_checks.port" and "webport" in str(error)


# -- names, values -------------------------------------------------------------------------------------
def test_variable_names_may_have_dots_and_a_service_may_alias_a_variable():
    sava = blueprint("""
name: sava
clusters:
  sava:
    services:
    - breed: {name: s:1, deployable: s, env: {"a.b.c": x, HEAP: 1024MB}}
      env: {"HEAP[JAVA_HEAP]": 2GB}
""")
    cluster = sava.cluster("sava")
    variables = {v.name: v for v in effective_environment(cluster, cluster.services[0])}
    assert variables["a.b.c"].value.text == "x"
    assert (variables["HEAP"].variable, variables["HEAP"].value.text) == ("JAVA_HEAP", "2GB")
    round_trips(sava)


def test_a_port_given_by_a_dependencys_constant_is_numbered_when_deployed():
    text = """
name: shop
clusters:
  web:
    breed:
      name: web:1
      deployable: web
      ports: {web: $db.constants.port}
      dependencies: {db: db:1}
  db:
    breed: {name: db:1, deployable: db, constants: {port: 5432/tcp}}
"""
    shop = blueprint(text)
    assert shop.cluster("web").services[0].breed.ports[0].reference == "$db.constants.port"
    round_trips(shop)
    with pytest.raises(DslError, match="resolve it first"):
        validate_complete(shop)
    breeds = {service.name: service.breed for cluster in shop.clusters for service in cluster.services}
    resolved = resolve_references(shop, lambda reference: breeds.get(reference.name))
    [port] = resolved.cluster("web").services[0].breed.ports
    assert (port.number, port.protocol, port.reference) == (5432, "tcp", None)
    validate_complete(resolved)
    error = refused("breed", """
name: web:1
deployable: web
ports: {web: $db.constants.web}
dependencies: {db: {name: db:1, deployable: db, constants: {port: 80}}}
""")
    assert error.path == "ports.web" and "has no constant 'web'" in str(error)


def test_a_bare_number_of_memory_is_megabytes():
    assert read("scale", {"name": "s", "memory": 1024}) == Scale("s", memory=1024 * 10**6)
    sla = read("sla", yaml.safe_load("""
name: red
type: escalation_only
escalations: [{type: scale_memory, minimum: 1024, maximum: 2048.5, scale_by: 512.1}]
"""))
    assert sla.escalations[0].parameters == {"minimum": 1024 * 10**6, "maximum": 20485 * 10**5,
                                             "scale_by": 5121 * 10**5}


def test_a_route_naming_a_stored_route_is_kept_and_cannot_be_deployed():
    sava = blueprint("""
name: sava
clusters:
  sava:
    gateways: {routes: {sava:1.0.0: conservative}}
    services: [{breed: {name: sava:1.0.0, deployable: s, ports: {web: 80}}}]
""")
    assert sava.cluster("sava").gateways[0].routes == (GatewayRoute("sava:1.0.0", reference="conservative"),)
    round_trips(sava)
    with pytest.raises(DslError, match="names a stored route"):
        validate_complete(sava)


def test_an_empty_expanded_condition_is_no_condition():
    sava = blueprint("""
name: sava
clusters:
  sava:
    gateways: {routes: {sava: {condition: {condition: ""}}}}
    breed: sava
""")
    assert sava.cluster("sava").gateways[0].routes == (GatewayRoute("sava"),)


def test_an_sla_reference_may_bring_its_own_escalations():
    sava = blueprint("""
name: sava
clusters:
  sava:
    services: [{breed: sava:1.0.0}]
    sla: {ref: fast, escalations: [{type: scale_instances, minimum: 1, maximum: 3, scale_by: 1}]}
""")
    reference = sava.cluster("sava").sla
    assert isinstance(reference, Reference) and reference.escalations[0].type == "scale_instances"
    round_trips(sava)
    stored = {"fast": Sla("escalation_only", "fast"), "sava:1.0.0": Breed("sava:1.0.0", read(
        "breed", {"name": "sava:1.0.0", "deployable": "x"}).deployable)}
    resolved = resolve_references(sava, lambda ref: stored.get(ref.name))
    assert resolved.cluster("sava").sla.escalations == reference.escalations


# -- fields read and kept ------------------------------------------------------------------------------
def test_vamps_gateway_and_workflow_fields_are_read_and_kept():
    sava = blueprint("""
name: sava
metadata: {labels: {essential: true}}
gateways:
  web:
    port: 8080/http
    metadata: {labels: {essential: false}}
    routes:
      sava/webport: {weight: 100%, balance: least-connections, rewrites: [{path: "/v2 if path_beg /v1"}]}
clusters:
  sava:
    gateways: {webport: {virtual_hosts: internal}}
    services: [{breed: {name: s:1, deployable: s, ports: {webport: 80}}}]
""")
    [gateway] = sava.gateways
    assert gateway.port == 8080 and gateway.metadata == {"labels": {"essential": False}}
    assert (gateway.routes[0].balance, gateway.routes[0].rewrites) == ("least-connections", ("/v2 if path_beg /v1",))
    assert sava.metadata == {"labels": {"essential": True}}
    assert sava.cluster("sava").gateways[0].virtual_hosts == ("internal",)
    round_trips(sava)
    artifact = read("gateway", yaml.safe_load("""
name: sava
port: 8080
selector: label(tier)(web) and not image(^old/.*)
service: {host: 127.0.0.1, port: 31234}
routes: {web: {selector: image(winter)}}
"""))
    assert artifact.selector.startswith("label(tier)(web)") and artifact.service == "127.0.0.1:31234/http"
    assert artifact.routes[0].selector == "image(winter)"
    round_trips(artifact)
    workflow = read("workflow", {"name": "m", "breed": "m", "schedule": "daemon", "network": "managed",
                                 "status": "suspended"})
    assert workflow.network == "managed"
    round_trips(workflow)


@pytest.mark.parametrize("document, field", [
    ({"name": "g", "port": 80, "selector": "cold(winter)"}, "selector"),
    ({"name": "g", "port": 80, "selector": "image([)"}, "selector"),
    ({"name": "g", "port": 80, "routes": {"web/port": {"selector": "image(x)"}}}, "routes.web/port.selector"),
    ({"name": "g", "port": 80, "routes": {"[127.0.0.1:80]": {"selector": "image(x)"}}},
     "routes.[127.0.0.1:80].selector"),
    ({"name": "g", "port": 80, "routes": {"web": {"rewrites": [{"path": "no condition"}]}}},
     "routes.web.rewrites[0].path"),
    ({"name": "g", "port": 80, "service": {"host": "h", "port": "x"}}, "service.port"),
])
def test_bad_kept_fields_are_refused_naming_the_field(document, field):
    with pytest.raises(DslError) as caught:
        read("gateway", document)
    assert caught.value.path == field


def test_selectors():
    assert check_selector(" label(a)(b) && (id(x) || !name(y)) ") == "label(a)(b) && (id(x) || !name(y))"
    for bad in ("", "label(a)", "image(x) and", "image(x) image(y)", "(image(x)", "kind(a(b)"):
        with pytest.raises(ValueError):
            check_selector(bad)


def test_a_workflow_status_must_be_one_of_vamps():
    error = refused("workflow", "{name: m, breed: m, schedule: daemon, status: active}")
    assert error.path == "status" and "suspended" in str(error)


# -- refused when written ------------------------------------------------------------------------------
def test_a_breed_that_depends_on_itself_is_refused_naming_the_cycle():
    error = refused("breed", """
name: monarch1
deployable: m1
dependencies:
  db: {name: monarch2, deployable: m2, dependencies: {es: {reference: monarch1}}}
""")
    assert "recursive dependency: monarch1 -> monarch2 -> monarch1" in str(error)
    assert error.path == "dependencies.db.breed.dependencies.es"
    error = refused("blueprint", "{name: b, clusters: {c: {breed: {name: m, deployable: m, dependencies: {db: "
                                 "{ref: m}}}}}}")
    assert "recursive dependency: m -> m" in str(error)


def test_a_cycle_through_stored_breeds_is_refused_when_deployed():
    stored = {"a:1": read("breed", {"name": "a:1", "deployable": "a", "dependencies": {"b": "b:1"}}),
              "b:1": read("breed", {"name": "b:1", "deployable": "b", "dependencies": {"a": "a:1"}})}
    shop = blueprint("{name: shop, clusters: {a: a:1, b: b:1}}")
    resolved = resolve_references(shop, lambda reference: stored.get(reference.name))
    with pytest.raises(DslError, match="recursive dependency: a:1 -> b:1 -> a:1"):
        validate_complete(resolved)


@pytest.mark.parametrize("text, path, message", [
    ("{name: m, deployable: m, env: {port: $es.ports.port}, dependencies: {db: mysql}}",
     "environment_variables.port", "'es' is not a dependency of breed 'm'"),
    ("{name: m, deployable: m, env: {port: $db.ports.web}, dependencies: {db: {name: mysql, deployable: d}}}",
     "environment_variables.port", "dependency 'db' (breed 'mysql') has no port 'web'"),
    ("{name: m, deployable: m, arguments: [{privileged: 1}]}", "arguments[0].privileged", "expected true or false"),
])
def test_what_a_breed_names_must_exist(text, path, message):
    error = refused("breed", text)
    assert error.path == path and message in str(error)


@pytest.mark.parametrize("text, path, message", [
    ("""{name: b, clusters: {s: {breed: {name: s, deployable: s, dependencies: {es: elastic}}}, n: other}}""",
     "clusters.s.services[0].breed.dependencies.es", "depends on 'elastic', which no cluster of this blueprint runs"),
    ("""{name: b, clusters: {f: {breed: {name: f, deployable: f, env: {U: $b.ports.ABC}, dependencies: {b: b}}},
        b: {breed: {name: b, deployable: b, ports: {web: 80}}}}}""",
     "clusters.f.services[0].breed.environment_variables.U", "cluster 'b' has no port 'ABC'"),
    ("""{name: b, environment_variables: {s.port: 8080}, clusters: {s: {breed: {name: s, deployable: s,
        ports: {port: 80}}}}}""", "environment_variables.s.port", "declares no environment variable 'port'"),
    ("""{name: b, clusters: {s: {services: [{breed: {name: s, deployable: s, env: {HEAP: 1GB}}, env: {HEAP: ~}}]}}}""",
     "clusters.s.services[0].environment_variables.HEAP", "needs a value here"),
])
def test_what_a_blueprint_names_must_exist(text, path, message):
    error = refused("blueprint", text)
    assert error.path == path and message in str(error)


def test_what_is_not_known_when_written_is_left_for_the_deployment():
    # stored breeds (by name) that are not stored yet: their variables, ports and dependencies are unknown
    sava = blueprint("""
name: sava
environment_variables: {sava.GREETING: hi}
clusters:
  sava: {services: [{breed: sava:1.0.0, env: {EXTRA: "1"}}], gateways: {webport: {routes: {sava:1.0.0: {}}}}}
  db: {breed: {name: db:1, deployable: d, env: {URL: $sava.ports.webport}, dependencies: {s: sava:1.*}}}
""")
    assert [cluster.name for cluster in sava.clusters] == ["sava", "db"]
    workflow = read("workflow", yaml.safe_load("{name: w, breed: {name: w, deployable: w, env: {HEAP: ~}}, "
                                               "schedule: daemon, env: {HEAP: 1GB}}"))
    assert workflow.environment_variables[0].value.text == "1GB"
    with pytest.raises(DslError, match="needs a value here"):
        read("workflow", yaml.safe_load("{name: w, breed: {name: w, deployable: w, env: {HEAP: ~}}, "
                                        "schedule: daemon, env: {HEAP: ~}}"))


# -- YAML keys and the gateway API -----------------------------------------------------------------------
def test_an_unquoted_external_route_key_is_its_text():
    _, data = single_document("routes:\n  [external/1/2]:\n    weight: 100%\n")
    assert data == {"routes": {"[external/1/2]": {"weight": "100%"}}}
    [gateway] = read_text("kind: gateways\nname: g\nport: 8080\nroutes:\n  [127.0.0.1:9000]: {weight: 100%}\n")
    assert gateway.routes[0].path == "[127.0.0.1:9000]"


async def test_the_gateway_api_reads_vamps_conditions_and_keeps_what_it_does_not_apply(platform):  # noqa: F811
    client = TestClient(TestServer(create_app(platform.store, platform)))
    await client.start_server()
    try:
        assert (await client.put("/api/v1/conditions/firefox",
                                 json={"condition": "user-agent = Firefox"})).status == 201
        port = free_port()
        body = {"port": port, "bind": "127.0.0.1", "selector": "label(tier)(web)",
                "routes": {"a": {"weight": "50%", "condition": {"reference": "firefox"}, "balance": "least-connections",
                                 "targets": ["127.0.0.1:9"]},
                           "b": {"weight": "50%", "condition": {"condition": "path = /b"}, "targets": ["127.0.0.1:9"]},
                           "c": {"condition": {"condition": ""}, "targets": ["127.0.0.1:9"]}}}
        response = await client.put("/api/v1/gateways/vamp-forms", json=body)
        assert response.status == 202, await response.text()
        shown = await (await client.get("/api/v1/gateways/vamp-forms")).json()
        assert shown["selector"] == "label(tier)(web)" and shown["routes"]["a"]["balance"] == "least-connections"
        assert "firefox" in shown["routes"]["a"]["condition"].lower() and "condition" not in shown["routes"]["c"]
        nowhere = {"condition": {"reference": "nowhere"}, "targets": ["127.0.0.1:9"]}
        missing = await client.put("/api/v1/gateways/vamp-forms",
                                   json={"port": port, "bind": "127.0.0.1", "routes": {"a": nowhere}})
        assert missing.status == 400
        error = await missing.json()
        assert "no condition named 'nowhere'" in error["error"] and error["field"] == "/routes/a/condition/reference"
        bad = await client.put("/api/v1/gateways/vamp-forms", json={"port": port, "selector": "cold(x)"})
        assert bad.status == 400 and (await bad.json())["field"] == "/selector"
    finally:
        await client.close()
