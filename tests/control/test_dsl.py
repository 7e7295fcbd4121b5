"""Vamp's DSL (control.dsl): what a user writes, in every shorthand Vamp allows, reads to one model; VAMP's own
examples and the quickstart blueprints parse; bad documents give one-line errors naming the document, the path
to the field and what was expected; the long form written back reads to the same model."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from control.dsl import (DslError, HostReference, LocalReference, Template, TraitReference,
                         effective_environment, effective_health_checks, parse_template, read, read_text,
                         references, referenced_cluster, render, resolve_references, to_dict, validate_complete)
from control.dsl.model import (FULL, PLACEHOLDER, Blueprint, Breed, Condition, Deployable, Deployment,
                               EnvironmentVariable, Escalation, Gateway, GatewayRoute, HealthCheck, Port,
                               Reference, Scale, Schedule, Sla, Workflow)
from control.dsl.units import format_memory, parse_cpu, parse_memory

REPO = Path(__file__).resolve().parents[2]

SAVA_BREED = {"name": "sava:1.0.0", "deployable": "magneticio/sava:1.0.0", "ports": {"webport": "8080/http"}}


def blueprint(**clusters) -> dict:
    return {"name": "bp", "clusters": clusters}


def error_of(kind: str, data) -> DslError:
    with pytest.raises(DslError) as caught:
        read(kind, data)
    assert len(str(caught.value).splitlines()) == 1
    return caught.value


# -- VAMP's own examples (docs/dsl.md) ------------------------------------------------------------------
VAMP_BREED = """\
kind: breeds
name: my_breed:0.1
deployable: company/my_frontend_service:0.1
ports:
  web: 8080/http
  admin: 8081/http
  redis: 9023/tcp
"""

VAMP_SAVA_1_0 = """\
kind: blueprints
name: sava:1.0
gateways:
  9050: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava:1.0.0
        deployable: magneticio/sava:1.0.0
        ports:
          webport: 8080/http
      scale:
        cpu: 0.2
        memory: 64MB
        instances: 1
      health_checks:
        initial_delay: 10s
        port: webport
        timeout: 5s
        interval: 10s
        failures: 10
"""

NOTORIOUS = """\
kind: blueprints
name: nomadic-frostbite
gateways:
  8080:
    routes:
      notorious/port1:
        weight: 90%
      notorious/port2:
        weight: 10%
        condition_strength: 10%
        condition: user-agent = firefox
clusters:
  notorious:
    breed:
      name: nocturnal-viper
      deployable: anaconda
      ports:
        port1: 8081/http
        port2: 8082/http
"""

VAMP_SAVA_1_1 = """\
kind: blueprints
name: sava:1.1
clusters:
  sava:
    services:
      breed:
        name: sava:1.1.0
        deployable: magneticio/sava:1.1.0
        ports:
          webport: 8080/http
      scale:
        cpu: 0.2
        memory: 64MB
        instances: 1
"""

SAVA_1_2 = """\
kind: blueprints
name: sava:1.2
gateways:
  9050: sava/webport
clusters:
  sava:
    services:
      breed:
        name: sava-frontend:1.2.0
        deployable: magneticio/sava-frontend:1.2.0
        ports:
          webport: 8080/http
        environment_variables:
          BACKEND_1: http://$backend1.host:$backend1.ports.webport/api/message
          BACKEND_2: http://${backend2.host}:${backend2.ports.webport}/api/message
      scale: {cpu: 0.2, memory: 64MB, instances: 1}
  backend1:
    services:
      breed:
        name: sava-backend1:1.2.0
        deployable: magneticio/sava-backend1:1.2.0
        ports:
          webport: 8080/http
      scale: {cpu: 0.2, memory: 64MB, instances: 1}
  backend2:
    services:
      breed:
        name: sava-backend2:1.2.0
        deployable: magneticio/sava-backend2:1.2.0
        ports:
          webport: 8080/http
      scale: {cpu: 0.2, memory: 64MB, instances: 1}
"""


def test_vamp_breed_example():
    [breed] = read_text(VAMP_BREED)
    assert breed == Breed("my_breed:0.1", Deployable("docker", "company/my_frontend_service:0.1"),
                          ports=(Port("web", 8080, "http"), Port("admin", 8081, "http"), Port("redis", 9023, "tcp")))


def test_vamp_sava_1_0_example():
    [sava] = read_text(VAMP_SAVA_1_0)
    assert isinstance(sava, Blueprint) and sava.name == "sava:1.0"
    [cluster] = sava.clusters
    [service] = cluster.services
    assert service.name == "sava:1.0.0"
    assert service.scale == Scale(cpu=0.2, memory=64_000_000, instances=1)
    assert service.health_checks == (HealthCheck(path="/", port="webport", initial_delay=10, timeout=5,
                                                 interval=10, failures=10),)
    assert sava.gateways == (Gateway(None, 9050, "http", routes=(GatewayRoute("sava/webport"),)),)
    validate_complete(sava)


def test_the_notorious_gateway_with_a_condition():
    [notorious] = read_text(NOTORIOUS)
    [gateway] = notorious.gateways
    assert gateway.port == 8080
    assert gateway.routes == (
        GatewayRoute("notorious/port1", weight=9000),
        GatewayRoute("notorious/port2", weight=1000, condition=Condition('user-agent = "firefox"'),
                     condition_strength=1000))
    validate_complete(notorious)


def test_sava_1_1_has_no_gateway_of_its_own():
    [sava] = read_text(VAMP_SAVA_1_1)
    assert sava.gateways == () and sava.clusters[0].services[0].name == "sava:1.1.0"
    validate_complete(sava)


def test_the_split_monolith_wires_its_backends_by_reference():
    [split] = read_text(SAVA_1_2)
    frontend = split.cluster("sava")
    [service] = frontend.services
    variables = {variable.name: variable.value for variable in effective_environment(frontend, service)}
    assert references(variables["BACKEND_1"]) == (HostReference("backend1"),
                                                   TraitReference("backend1", "ports", "webport"))
    assert references(variables["BACKEND_2"]) == (HostReference("backend2"),
                                                   TraitReference("backend2", "ports", "webport"))
    assert referenced_cluster(split, service, "backend1") is split.cluster("backend1")
    endpoints = {HostReference("backend1"): "127.0.0.1", TraitReference("backend1", "ports", "webport"): "40001"}
    assert render(variables["BACKEND_1"], endpoints.__getitem__) == "http://127.0.0.1:40001/api/message"
    validate_complete(split)


def test_a_reference_to_a_missing_cluster_or_port_is_reported_where_it_is_used():
    broken = yaml.safe_load(SAVA_1_2)
    variables = broken["clusters"]["sava"]["services"]["breed"]["environment_variables"]
    variables["BACKEND_3"] = "http://$backend3.host/"
    with pytest.raises(DslError) as caught:
        validate_complete(read("blueprint", broken))
    assert str(caught.value) == ("blueprint 'sava:1.2', clusters.sava.services[0].breed.environment_variables."
                                 "BACKEND_3: $backend3.host: no cluster (or dependency alias) 'backend3' in this "
                                 "blueprint")
    del variables["BACKEND_3"]
    variables["BACKEND_1"] = "$backend1.ports.admin"
    with pytest.raises(DslError, match="cluster 'backend1' has no port 'admin'"):
        validate_complete(read("blueprint", broken))


# -- the quickstart's blueprints (examples/) ------------------------------------------------------------
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_the_quickstart_examples_parse_and_run_the_demo_as_a_local_process(version):
    [sava] = read_text((REPO / "examples" / f"sava-{version}.yaml").read_text())
    assert sava.name == f"sava:{version}"
    validate_complete(sava)
    [cluster] = sava.clusters
    [service] = cluster.services
    assert cluster.name == "sava" and service.name == f"sava:{version}.0"
    assert service.breed.ports == (Port("webport", 8080, "http"),)
    assert service.breed.deployable.argv() == ("python", "-m", "control.demo.sava", "--version", f"{version}.0")
    assert service.scale.instances == 1
    [check] = effective_health_checks(cluster, service)
    assert check.path == "/" and check.port == "webport"
    expected_gateways = (Gateway(None, 9050, routes=(GatewayRoute("sava/webport"),)),) if version == "1.0" else ()
    assert sava.gateways == expected_gateways


# -- shorthands: each reads to the same model as its long form -------------------------------------------
SHORTHANDS = {
    "ref is reference": (
        "blueprint", blueprint(sava={"services": [{"breed": {"ref": "sava:1.0.0"}}]}),
        blueprint(sava={"services": [{"breed": {"reference": "sava:1.0.0"}}]})),
    "env is environment_variables": (
        "breed", {**SAVA_BREED, "env": {"A": "1"}}, {**SAVA_BREED, "environment_variables": {"A": "1"}}),
    "dialect is dialects": (
        "blueprint", blueprint(sava={"breed": "x", "dialect": {"docker": {"a": 1}}}),
        blueprint(sava={"services": [{"breed": {"reference": "x"}, "dialects": {"docker": {"a": 1}}}]})),
    "a cluster given as a breed name": (
        "blueprint", blueprint(sava="sava:1.0.0"),
        blueprint(sava={"services": [{"breed": {"reference": "sava:1.0.0"}}]})),
    "a cluster given as a list of services": (
        "blueprint", blueprint(sava=["a", "b"]),
        blueprint(sava={"services": [{"breed": {"ref": "a"}}, {"breed": {"ref": "b"}}]})),
    "services as one map": (
        "blueprint", blueprint(sava={"services": {"breed": SAVA_BREED, "scale": {"instances": 2}}}),
        blueprint(sava={"services": [{"breed": SAVA_BREED, "scale": {"instances": 2}}]})),
    "services as one string": (
        "blueprint", blueprint(sava={"services": "sava:1.0.0"}),
        blueprint(sava={"services": [{"breed": {"ref": "sava:1.0.0"}}]})),
    "a cluster without services: is the service": (
        "blueprint", blueprint(sava={"breed": SAVA_BREED, "scale": {"instances": 2}, "env": {"A": "1"},
                                     "gateways": {"webport": {"sticky": "route"}}, "sla": "strict"}),
        blueprint(sava={"services": [{"breed": SAVA_BREED, "scale": {"instances": 2},
                                      "environment_variables": {"A": "1"}}],
                        "gateways": {"webport": {"sticky": "route"}}, "sla": {"ref": "strict"}})),
    "a service given as a breed name": (
        "blueprint", blueprint(sava={"services": ["sava:1.0.0"]}),
        blueprint(sava={"services": [{"breed": {"ref": "sava:1.0.0"}}]})),
    "a service given as an inline breed": (
        "blueprint", blueprint(sava={"services": [SAVA_BREED]}),
        blueprint(sava={"services": [{"breed": SAVA_BREED}]})),
    "a cluster given as an inline breed": (
        "blueprint", blueprint(sava=SAVA_BREED), blueprint(sava={"services": [{"breed": SAVA_BREED}]})),
    "a bare port number is http": (
        "breed", {**SAVA_BREED, "ports": {"webport": 8080}}, {**SAVA_BREED, "ports": {"webport": "8080/http"}}),
    "a scale as a number of instances": (
        "blueprint", blueprint(sava={"breed": "x", "scale": 3}),
        blueprint(sava={"breed": "x", "scale": {"cpu": 1, "memory": "1GB", "instances": 3}})),
    "a scale by name": (
        "blueprint", blueprint(sava={"breed": "x", "scale": "large"}),
        blueprint(sava={"breed": "x", "scale": {"ref": "large"}})),
    "no scale is Vamp's default": (
        "blueprint", blueprint(sava={"breed": "x"}),
        blueprint(sava={"breed": "x", "scale": {"cpu": "1000m", "memory": "1000MB", "instances": 1}})),
    "memory in binary units": (
        "scale", {"name": "s", "memory": "1Gi"}, {"name": "s", "memory": "1024Mi"}),
    "memory in decimal units, any case": (
        "scale", {"name": "s", "memory": "2gb"}, {"name": "s", "memory": "2000 MB"}),
    "cpu in millicores": ("scale", {"name": "s", "cpu": "200m"}, {"name": "s", "cpu": 0.2}),
    "percentages with or without %": (
        "gateway", {"name": "g", "port": 9050, "routes": {"a": {"weight": "97.5%"}, "b": {"weight": 2.5}}},
        {"name": "g", "port": "9050/http", "routes": {"a": {"weight": "97.50%"}, "b": {"weight": "2.5%"}}}),
    "times in seconds, minutes, hours": (
        "breed", {**SAVA_BREED, "health_checks": {"initial_delay": "1 minute", "interval": "2min",
                                                  "timeout": "30 sec"}},
        {**SAVA_BREED, "health_checks": [{"initial_delay": "60s", "interval": "120 seconds", "timeout": 30}]}),
    "hours": ("sla", {"name": "s", "type": "response_time_sliding_window", "threshold": {"upper": 9, "lower": 1},
                      "window": {"interval": "1h", "cooldown": "2 hrs"}},
              {"name": "s", "type": "response_time_sliding_window", "threshold": {"upper": 9, "lower": 1},
               "window": {"interval": "60m", "cooldown": "7200s"}}),
    "error rate thresholds in per cent": (
        "sla", {"name": "s", "type": "error_rate", "threshold": {"upper": "5%", "lower": 0.5},
                "window": {"interval": "1m", "cooldown": 0}},
        {"name": "s", "type": "error_rate", "threshold": {"upper": 5, "lower": "0.50%"},
         "window": {"interval": 60, "cooldown": "0s"}}),
    "a health check alone is a list of one": (
        "breed", {**SAVA_BREED, "health_checks": {"port": "webport"}},
        {**SAVA_BREED, "health_checks": [{"path": "/", "port": "webport", "protocol": "HTTP"}]}),
    "deployable: cmd on the breed": (
        "breed", {"name": "b", "cmd": "python -m control.demo.sava --version 1.0.0"},
        {"name": "b", "deployable": {"type": "cmd", "definition": "python -m control.demo.sava --version 1.0.0"}}),
    "deployable: cmd:// URL": (
        "breed", {"name": "b", "deployable": "cmd://python -m demo.sava"},
        {"name": "b", "deployable": {"type": "command", "definition": "python -m demo.sava"}}),
    "deployable: python module": (
        "breed", {"name": "b", "python": "control.demo.sava --version 1.0.0"},
        {"name": "b", "deployable": {"type": "python", "definition": "control.demo.sava --version 1.0.0"}}),
    "deployable: python:// URL": (
        "breed", {"name": "b", "deployable": "python://control.demo.sava"},
        {"name": "b", "deployable": {"type": "python", "definition": "control.demo.sava"}}),
    "deployable: a docker image": (
        "breed", {"name": "b", "deployable": "magneticio/sava:1.0.0"},
        {"name": "b", "deployable": {"type": "docker", "definition": "magneticio/sava:1.0.0"}}),
    "deployable: a type-less deployable is docker": (
        "breed", {"name": "b", "deployable": {"definition": "magneticio/sava:1.0.0"}},
        {"name": "b", "deployable": "docker://magneticio/sava:1.0.0"}),
    "dependencies by name": (
        "breed", {**SAVA_BREED, "dependencies": {"cache": "redis:1.*"}},
        {**SAVA_BREED, "dependencies": {"cache": {"breed": {"reference": "redis:1.*"}}}}),
    "arguments as a map": (
        "breed", {**SAVA_BREED, "arguments": {"privileged": True}},
        {**SAVA_BREED, "arguments": [{"privileged": "true"}]}),
    "blueprint gateway as a route path": (
        "blueprint", {**blueprint(sava=SAVA_BREED), "gateways": {9050: "sava/webport"}},
        {**blueprint(sava=SAVA_BREED), "gateways": {"9050/http": {"routes": {"sava/webport": None}}}}),
    "routes as a list": (
        "gateway", {"name": "g", "port": 80, "routes": ["a/b", {"c/d": {"weight": "100%"}}]},
        {"name": "g", "port": 80, "routes": {"a/b": {}, "c/d": {"weight": "100%"}}}),
    "a condition as text": (
        "gateway", {"name": "g", "port": 80, "routes": {"a": {"condition": "User-Agent = Chrome"}}},
        {"name": "g", "port": 80, "routes": {"a": {"condition": {"condition": "user-agent = 'Chrome'"},
                                                   "condition_strength": "100%"}}}),
    "one virtual host": (
        "gateway", {"name": "g", "port": 80, "virtual_hosts": "sava.local"},
        {"name": "g", "port": 80, "virtual_hosts": ["SAVA.local"]}),
    "a cluster gateway for the only port": (
        "blueprint", blueprint(sava={"services": [SAVA_BREED], "gateways": {"routes": {"sava:1.0.0": {}}}}),
        blueprint(sava={"services": [SAVA_BREED], "gateways": {"webport": {"routes": {"sava:1.0.0": None}}}})),
    "to_all escalation": (
        "escalation", {"name": "e", "to_all": ["a", {"type": "scale_instances", "minimum": 1, "maximum": 3,
                                                      "scale_by": 1}]},
        {"name": "e", "type": "to_all", "escalations": [{"ref": "a"}, {"type": "scale_instances", "minimum": 1,
                                                                       "maximum": 3, "scale_by": 1}]}),
    "one escalation of an SLA": (
        "sla", {"name": "s", "type": "escalation_only", "escalations": "red-flag"},
        {"name": "s", "type": "escalation_only", "escalations": [{"reference": "red-flag"}]}),
    "event schedule by one tag": (
        "workflow", {"name": "w", "breed": "health", "schedule": {"event": "deployments"}},
        {"name": "w", "breed": {"ref": "health"}, "schedule": {"event": {"tags": ["deployments"]}}}),
    "time schedule by period": (
        "workflow", {"name": "w", "breed": "health", "schedule": {"time": "pt1m"}},
        {"name": "w", "breed": "health", "schedule": {"time": {"period": "PT1M", "start": "now"}}}),
    "kind plural or singular": ("breeds", SAVA_BREED, {**SAVA_BREED, "kind": "breed"}),
    "a deployment that only names a blueprint": ("deployment", {"name": "sava:1.1"}, {"ref": "sava:1.1"}),
    "whole-number keys from a plain YAML loader": (
        "blueprint", yaml.safe_load("name: bp\nclusters: {sava: x}\ngateways: {9050: sava/webport}"),
        {"name": "bp", "clusters": {"sava": "x"}, "gateways": {"9050": "sava/webport"}}),
}


@pytest.mark.parametrize("kind, short, long", SHORTHANDS.values(), ids=SHORTHANDS.keys())
def test_a_shorthand_reads_as_its_long_form(kind, short, long):
    assert read(kind, short) == read(kind, long)


def test_expanded_models_never_show_a_shorthand():
    sava = read("blueprint", blueprint(sava="sava:1.0.0"))
    assert sava.clusters[0].services[0].breed == Reference("breed", "sava:1.0.0")
    assert sava.clusters[0].services[0].scale == Scale(cpu=1.0, memory=1_000_000_000, instances=1)
    assert read("breed", {"name": "b", "cmd": "run it"}).deployable == Deployable("cmd", "run it")
    assert read("deployment", {"name": "sava:1.1"}) == Reference("blueprint", "sava:1.1")
    assert isinstance(read("deployment", yaml.safe_load(VAMP_SAVA_1_0)), Deployment)


def test_trait_aliases_and_placeholders():
    breed = read("breed", {**SAVA_BREED, "environment_variables": {"debug[SAVA_DEBUG]": True, "PASSWORD": None,
                                                                  "PORT": 8080}})
    assert breed.environment_variables == (
        EnvironmentVariable("debug", Template(("true",)), alias="SAVA_DEBUG"),
        EnvironmentVariable("PASSWORD", PLACEHOLDER),
        EnvironmentVariable("PORT", Template(("8080",))))
    assert [variable.variable for variable in breed.environment_variables] == ["SAVA_DEBUG", "PASSWORD", "PORT"]


# -- scopes: environment and health checks ---------------------------------------------------------------
def scoped_blueprint(service_extra: dict | None = None, cluster_variables: dict | None = None,
                     cluster_checks=None, breed_checks=None) -> Blueprint:
    breed = {**SAVA_BREED, "environment_variables": {"debug[SAVA_DEBUG]": "false", "HEAP": "1200",
                                                     "PASSWORD": None}}
    if breed_checks is not None:
        breed["health_checks"] = breed_checks
    cluster = {"services": [{"breed": breed, **(service_extra or {})}]}
    if cluster_checks is not None:
        cluster["health_checks"] = cluster_checks
    return read("blueprint", {"name": "bp", "clusters": {"sava": cluster},
                              "environment_variables": cluster_variables or {}})


def test_environment_scopes_breed_then_cluster_then_service():
    sava = scoped_blueprint(service_extra={"env": {"HEAP": "1800"}},
                            cluster_variables={"sava.HEAP": "2400", "sava.PASSWORD": "secret", "sava.debug": "true"})
    cluster = sava.cluster("sava")
    values = {v.variable: v.value.text for v in effective_environment(cluster, cluster.services[0])}
    assert values == {"SAVA_DEBUG": "true", "HEAP": "1800", "PASSWORD": "secret"}
    validate_complete(sava)


def test_an_unfilled_placeholder_is_an_error_only_when_completeness_is_asked_for():
    sava = scoped_blueprint()
    with pytest.raises(DslError) as caught:
        validate_complete(sava)
    assert caught.value.document == "blueprint 'bp'"
    assert caught.value.path == "clusters.sava.services[0].environment_variables.PASSWORD"
    assert "placeholder (~)" in caught.value.expected
    breed = read("breed", {**SAVA_BREED, "env": {"PASSWORD": None}})
    with pytest.raises(DslError, match=r"breed 'sava:1\.0\.0', environment_variables\.PASSWORD: "):
        validate_complete(breed)


def test_health_checks_service_overrides_cluster_overrides_breed():
    breed_level = [{"path": "/breed"}]
    cluster_level = [{"path": "/cluster", "port": "webport", "failures": 5}]
    only_breed = scoped_blueprint(breed_checks=breed_level).cluster("sava")
    assert effective_health_checks(only_breed, only_breed.services[0]) == (HealthCheck("/breed", "webport"),)
    with_cluster = scoped_blueprint(breed_checks=breed_level, cluster_checks=cluster_level).cluster("sava")
    assert effective_health_checks(with_cluster, with_cluster.services[0]) == \
        (HealthCheck("/cluster", "webport", failures=5),)
    with_service = scoped_blueprint(service_extra={"health_checks": {"path": "/service", "protocol": "tcp"}},
                                    breed_checks=breed_level, cluster_checks=cluster_level).cluster("sava")
    assert effective_health_checks(with_service, with_service.services[0]) == \
        (HealthCheck("/service", "webport", "tcp"),)
    turned_off = scoped_blueprint(service_extra={"health_checks": []}, breed_checks=breed_level).cluster("sava")
    assert effective_health_checks(turned_off, turned_off.services[0]) == ()
    nowhere = scoped_blueprint().cluster("sava")
    assert effective_health_checks(nowhere, nowhere.services[0]) == ()


# -- references to stored artifacts --------------------------------------------------------------------
def test_resolving_references_through_the_callers_lookup():
    stored = {
        Reference("breed", "sava:1.0.0"): read("breed", SAVA_BREED),
        Reference("scale", "small"): read("scale", {"name": "small", "cpu": 0.5, "memory": "256MB"}),
        Reference("condition", "chrome"): read("condition", {"name": "chrome", "condition": "browser = Chrome"}),
        Reference("sla", "strict"): read("sla", {"name": "strict", "type": "escalation_only",
                                                 "escalations": ["more"]}),
        Reference("escalation", "more"): read("escalation", {"name": "more", "type": "scale_instances",
                                                             "minimum": 1, "maximum": 3, "scale_by": 1}),
    }
    written = read("blueprint", blueprint(sava={
        "services": {"breed": "sava:1.0.0", "scale": "small"}, "sla": "strict",
        "gateways": {"routes": {"sava:1.0.0": {"condition": {"ref": "chrome"}}}}}))
    assert written.clusters[0].gateways[0].port is None        # not known until the breed is
    with pytest.raises(DslError, match="has not been resolved"):
        validate_complete(written)
    resolved = resolve_references(written, stored.get)
    cluster = resolved.cluster("sava")
    assert cluster.services[0].breed == stored[Reference("breed", "sava:1.0.0")]
    assert cluster.services[0].scale.memory == 256_000_000
    assert cluster.sla.escalations == (Escalation("scale_instances", None, {"minimum": 1, "maximum": 3,
                                                                           "scale_by": 1}),)
    assert cluster.gateways[0].port == "webport"
    assert cluster.gateways[0].routes[0].condition == Condition('browser = "Chrome"')
    validate_complete(resolved)
    assert read("blueprint", to_dict(resolved)) == resolved
    with pytest.raises(DslError) as caught:
        resolve_references(written, {}.get)
    assert str(caught.value) == \
        "blueprint 'bp', clusters.sava.services[0].breed: no breed named 'sava:1.0.0' is stored"


# -- templates ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, parts", [
    ("plain", ("plain",)),
    ("", ()),
    ("cost: $$5", ("cost: $5",)),
    ("$HOME/x", (LocalReference("HOME"), "/x")),
    ("${ backend.host }s", (HostReference("backend"), "s")),
    ("$db.constants.SCHEMA/$db.environment_variables.ENC-1:",
     (TraitReference("db", "constants", "SCHEMA"), "/", TraitReference("db", "environment_variables", "ENC-1"),
      ":")),
    ("$$$a.host$$", ("$", HostReference("a"), "$")),
])
def test_templates(text, parts):
    template = parse_template(text)
    assert template == Template(parts)
    assert parse_template(template.text) == template


@pytest.mark.parametrize("text, message", [
    ("$", "expected a reference like $cluster.host after '$' at position 0"),
    ("a $a.b", "unknown reference '$a.b' at position 2"),
    ("$a.groups.x", "unknown reference '$a.groups.x'"),
    ("${a.host", "'${' without a closing '}' at position 0"),
    ("${a b}", "expected a reference like $cluster.host or ${cluster.ports.NAME} at position 0"),
])
def test_malformed_references_are_errors_not_literals(text, message):
    with pytest.raises(ValueError) as caught:
        parse_template(text)
    assert message in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="$.{} ab/:-_", max_size=20))
def test_a_template_written_back_reads_the_same(text):
    try:
        template = parse_template(text)
    except ValueError:
        return
    assert parse_template(template.text) == template
    assert render(template, lambda reference: "<" + reference.text + ">").count("<") == \
        sum(1 for part in template.parts if not isinstance(part, str))


# -- units -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [("64MB", 64 * 10**6), ("512Mi", 512 * 2**20), ("0.5GB", 5 * 10**8),
                                        ("1.5Ki", 1536), ("100KB", 10**5), ("2 gi", 2 * 2**30), ("1500B", 1500)])
def test_memory_sizes(text, size):
    assert parse_memory(text) == size
    assert parse_memory(format_memory(size)) == size


@pytest.mark.parametrize("value, size", [(1024, 1024 * 10**6), ("64", 64 * 10**6), (2048.5, 20485 * 10**5),
                                         (512.1, 5121 * 10**5)])
def test_a_bare_number_of_memory_is_megabytes_as_vamp_reads_it(value, size):
    assert parse_memory(value) == size


@pytest.mark.parametrize("value", ["1.5B", "-1MB", "1TB", "MB", None, True, -1, float("inf"), "1e3"])
def test_bad_memory_sizes(value):
    with pytest.raises(ValueError):
        parse_memory(value)


def test_cpu():
    assert parse_cpu("250m") == 0.25 and parse_cpu(2) == 2.0 and parse_cpu("0.5") == 0.5
    for bad in (0, "0m", -1, "x", True, float("nan")):
        with pytest.raises(ValueError):
            parse_cpu(bad)


def test_deployables_as_local_commands():
    assert Deployable("cmd", "python -m x --name 'a b'").argv() == ("python", "-m", "x", "--name", "a b")
    assert Deployable("python", "control.demo.sava --version 1").argv() == \
        ("python", "-m", "control.demo.sava", "--version", "1")
    with pytest.raises(ValueError, match="cannot run as a local process"):
        Deployable("docker", "magneticio/sava:1.0.0").argv()


# -- errors -------------------------------------------------------------------------------------------------
def sava_with(**service) -> dict:
    return {"name": "sava:1.0", "clusters": {"sava": {"services": [{"breed": SAVA_BREED, **service}]}}}


BAD_DOCUMENTS = {
    "instances not a number": (
        "blueprint", sava_with(scale={"instances": "x"}),
        "blueprint 'sava:1.0', clusters.sava.services[0].scale.instances: expected a whole number >= 0, got 'x'"),
    "negative instances": (
        "blueprint", sava_with(scale={"instances": -1}),
        "blueprint 'sava:1.0', clusters.sava.services[0].scale.instances: expected a whole number from 0 to 1000, "
        "got '-1'"),
    "an unknown field, with a hint": (
        "blueprint", sava_with(scael=3),
        "blueprint 'sava:1.0', clusters.sava.services[0].scael: unknown field (did you mean 'scale'?); a service "
        "has: breed, scale, environment_variables, env, arguments, health_checks, network, dialects, dialect"),
    "a bad port in an inline breed": (
        "blueprint", sava_with(breed={**SAVA_BREED, "ports": {"webport": "8080/udp"}}),
        "blueprint 'sava:1.0', clusters.sava.services[0].breed.ports.webport: expected a port 1-65535 with optional "
        "/http or /tcp, got '8080/udp'"),
    "a name with a slash": (
        "breed", {**SAVA_BREED, "name": "sava/1.0"},
        "breed 'sava/1.0', name: expected a breed name without whitespace, '/', '[' or ']', got 'sava/1.0'"),
    "a name that is missing": ("scale", {"cpu": 1}, "scale, name: required field missing: the scale's name"),
    "no deployable": (
        "breed", {"name": "b"},
        "breed 'b', deployable: required field missing: what to run, as deployable (a docker image or {type, "
        "definition}), cmd (a command line) or python (a module)"),
    "two deployables": (
        "breed", {"name": "b", "deployable": "x", "cmd": "y"},
        "breed 'b', cmd: give only one of deployable, cmd and python (this breed has deployable and cmd)"),
    "env twice": (
        "breed", {**SAVA_BREED, "env": {}, "environment_variables": {}},
        "breed 'sava:1.0.0', env: give environment_variables or env, not both (they are the same)"),
    "a malformed value reference": (
        "blueprint", sava_with(env={"URL": "http://$backend.address/"}),
        "blueprint 'sava:1.0', clusters.sava.services[0].env.URL: unknown reference '$backend.address' at "
        "position 7: expected $NAME, $CLUSTER.host or $CLUSTER.{ports|environment_variables|constants}.NAME "
        "(write $$ for a literal $)"),
    "a condition that does not parse": (
        "gateway", {"name": "sava/9050", "port": 9050, "routes": {"a": {"condition": "browser = "}}},
        "gateway 'sava/9050', routes.a.condition: expected a value after '=', found the end at position 10"),
    "a regular expression RE2 cannot run": (
        "gateway", {"name": "g", "port": 9050, "routes": {"a": {"condition": "user-agent ~ /^(?!bot)/"}}},
        "gateway 'g', routes.a.condition: invalid regular expression: lookaround '(?!' is not supported "
        "(conditions use RE2, which runs in linear time) at position 15"),
    "weights over 100%": (
        "gateway", {"name": "g", "port": 9050, "routes": {"a": {"weight": "60%"}, "b": {"weight": "50%"}}},
        "gateway 'g', routes: route weights add up to 110%, more than 100%"),
    "a sticky tcp gateway": (
        "gateway", {"name": "g", "port": "9050/tcp", "sticky": "route"},
        "gateway 'g', sticky: a tcp gateway cannot be sticky (it sees no HTTP cookies)"),
    "a gateway to a missing cluster": (
        "blueprint", {**sava_with(), "gateways": {9050: "savva/webport"}},
        "blueprint 'sava:1.0', gateways.9050: no cluster 'savva' in this blueprint; it has: sava"),
    "a gateway to a missing port": (
        "blueprint", {**sava_with(), "gateways": {9050: {"routes": {"sava/web": {"weight": "100%"}}}}},
        "blueprint 'sava:1.0', gateways.9050.routes.sava/web: cluster 'sava' has no port 'web'; its ports: "
        "webport"),
    "a cluster route to a missing service": (
        "blueprint", blueprint(sava={"services": [SAVA_BREED], "gateways": {"webport": {"routes": ["sava:2"]}}}),
        "blueprint 'bp', clusters.sava.gateways.webport.routes[0]: no service 'sava:2' in cluster 'sava'; its "
        "services: sava:1.0.0"),
    "a health check on a missing port": (
        "breed", {**SAVA_BREED, "health_checks": [{"port": "admin"}]},
        "breed 'sava:1.0.0', health_checks[0].port: no port named 'admin'; the breed has: webport"),
    "an environment variable for a missing cluster": (
        "blueprint", {**sava_with(), "environment_variables": {"other.X": 1}},
        "blueprint 'sava:1.0', environment_variables.other.X: no cluster 'other' in this blueprint"),
    "a breed twice": (
        "blueprint", blueprint(a="sava:1.0.0", b="sava:1.0.0"),
        "blueprint 'bp', clusters.b.services[0]: breed 'sava:1.0.0' is already a service of cluster 'a'; a breed "
        "can be deployed once per blueprint"),
    "no clusters": ("blueprint", {"name": "bp"},
                    "blueprint 'bp', clusters: a blueprint needs at least one cluster, like {sava: {breed: ..., "
                    "scale: ...}}"),
    "a reference with extra fields": (
        "blueprint", sava_with(scale={"ref": "large", "instances": 2}),
        "blueprint 'sava:1.0', clusters.sava.services[0].scale.instances: a reference to a stored scale has no "
        "other fields (ref: NAME only)"),
    "a kind that disagrees": ("breed", {**SAVA_BREED, "kind": "blueprints"},
                              "breed 'sava:1.0.0', kind: this document is read as breeds, but says kind "
                              "'blueprints'"),
    "an SLA with lower above upper": (
        "sla", {"name": "s", "type": "response_time_sliding_window", "threshold": {"upper": 100, "lower": 200},
                "window": {"interval": 60, "cooldown": 60}},
        "sla 's', threshold.lower: expected a whole number from 0 to 100, got '200'"),
    "an error rate SLA with lower above upper": (
        "sla", {"name": "s", "type": "error_rate", "threshold": {"upper": "1%", "lower": "2%"},
                "window": {"interval": 60, "cooldown": 60}},
        "sla 's', threshold.lower: expected at most the upper threshold (1%), got '2%'"),
    "an error rate above 100%": (
        "sla", {"name": "s", "type": "error_rate", "threshold": {"upper": "120%", "lower": "2%"},
                "window": {"interval": 60, "cooldown": 60}},
        "sla 's', threshold.upper: expected a percentage from 0% to 100%, got '120%'"),
    "a workflow without a schedule": (
        "workflow", {"name": "w", "breed": "health"},
        "workflow 'w', schedule: expected daemon, {event: [tags]} or {time: {period: P1D, start: now, repeat: 10}}"
        ", got null"),
    "not a mapping": ("blueprint", ["a"], "blueprint: expected a mapping of blueprint fields (name, gateways, "
                                          "clusters, environment_variables, dialects), got a list"),
}


@pytest.mark.parametrize("kind, data, message", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_bad_documents_give_one_line_errors_with_the_path(kind, data, message):
    assert str(error_of(kind, data)) == message


def test_error_attributes():
    error = error_of("blueprint", sava_with(scale={"instances": "x"}))
    assert error.document == "blueprint 'sava:1.0'"
    assert error.path == "clusters.sava.services[0].scale.instances"
    assert error.location == ("clusters", "sava", "services", 0, "scale", "instances")
    assert error.expected == "expected a whole number >= 0, got 'x'"


def test_errors_in_shorthands_name_the_path_as_written():
    error = error_of("blueprint", {"name": "bp", "clusters": {"sava": {"breed": SAVA_BREED, "scale": {"cpu": 0}}}})
    assert error.path == "clusters.sava.scale.cpu"


@pytest.mark.parametrize("text, message", [
    ("kind: breeds\nname: b\ndeployable: x\n---\nname: c\n",
     "document 2: every document needs a 'kind:' (breeds, blueprints, deployments, gateways, scales, conditions, "
     "slas, escalations or workflows) (line 5)"),
    ("kind: blueprints\nname: sava:1.0\nclusters:\n  sava:\n    breed: x\n    scale:\n      instances: many\n",
     "blueprint 'sava:1.0', clusters.sava.scale.instances: expected a whole number >= 0, got 'many' (line 7)"),
    ("kind: breeds\nname: b\nname: c\n", "document 1: duplicate key 'name' (first on line 2) (line 3)"),
    ("kind: cats\nname: tom\n", "document 1, kind: expected a kind, one of breeds, blueprints, deployments, "
                                "gateways, scales, conditions, slas, escalations, workflows (or singular), got 'cats' "
                                "(line 1)"),
    ("kind: breeds\nname: [b\n", "document 1: YAML syntax error: while parsing a flow sequence, expected ',' or ']', "
                                 "but got '<stream end>' (line 3)"),
])
def test_errors_in_yaml_text_carry_the_document_and_line(text, message):
    with pytest.raises(DslError) as caught:
        read_text(text)
    assert str(caught.value) == message


def test_read_text_reads_every_document_in_order():
    artifacts = read_text(VAMP_BREED + "---\n" + VAMP_SAVA_1_0 + "---\n" + NOTORIOUS + "---\n")
    assert [type(artifact) for artifact in artifacts] == [Breed, Blueprint, Blueprint]


# -- other kinds ------------------------------------------------------------------------------------------
def test_gateway_artifact_maps_onto_the_gateways_shapes():
    gateway = read("gateway", {"name": "sava/9050", "port": "9050/http", "sticky": "Route",
                               "virtual_hosts": ["sava.local"],
                               "routes": {"sava/sava/sava:1.0.0/webport": {"weight": "97.5%"},
                                          "sava/sava/sava:1.1.0/webport": {"weight": "2.5%",
                                                                          "condition": "browser = Chrome"},
                                          "[127.0.0.1:8081]": {"targets": ["127.0.0.1:8081"]}}})
    assert gateway == Gateway("sava/9050", 9050, "http", "route", ("sava.local",), (
        GatewayRoute("sava/sava/sava:1.0.0/webport", 9750),
        GatewayRoute("sava/sava/sava:1.1.0/webport", 250, Condition('browser = "Chrome"'), FULL),
        GatewayRoute("[127.0.0.1:8081]", targets=("127.0.0.1:8081",))))


def test_sla_escalation_workflow_and_condition_kinds():
    sla = read("sla", {"name": "s", "type": "response_time_sliding_window",
                       "threshold": {"upper": 1000, "lower": 100}, "window": {"interval": 600, "cooldown": "10m"},
                       "escalations": [{"type": "scale_instances", "target": "monarch", "minimum": 1, "maximum": 3,
                                        "scale_by": 1}]})
    assert sla == Sla("response_time_sliding_window", "s",
                      {"threshold": {"upper": 1000, "lower": 100}, "window": {"interval": 600.0, "cooldown": 600.0}},
                      (Escalation("scale_instances", None, {"minimum": 1, "maximum": 3, "scale_by": 1,
                                                            "target": "monarch"}),))
    errors = read("sla", {"name": "e", "type": "error_rate", "threshold": {"upper": "5%", "lower": "0.5%"},
                          "window": {"interval": "1m", "cooldown": "2m"}, "escalations": {"type": "scale_instances",
                                                                                "minimum": 1, "maximum": 2,
                                                                                "scale_by": 1}})
    assert errors == Sla("error_rate", "e", {"threshold": {"upper": 500, "lower": 50},
                                             "window": {"interval": 60.0, "cooldown": 120.0}},
                         (Escalation("scale_instances", None, {"minimum": 1, "maximum": 2, "scale_by": 1}),))
    assert to_dict(errors)["threshold"] == {"upper": "5%", "lower": "0.5%"}
    custom = read("escalation", {"name": "page", "type": "pager", "who": ["ops"]})
    assert custom == Escalation("pager", "page", {"who": ["ops"]})
    workflow = read("workflow", {"name": "health", "breed": "health", "schedule": {
        "time": {"period": "P1Y2M3DT4H5M6S", "start": "2024-01-31T12:00:00Z", "repeat": 10}},
        "env": {"VAMP_WORKFLOW_EXECUTION_PERIOD": 60}})
    assert workflow == Workflow("health", Reference("breed", "health"),
                                Schedule("time", period="P1Y2M3DT4H5M6S", start="2024-01-31T12:00:00+00:00",
                                         repeat=10),
                                environment_variables=(EnvironmentVariable("VAMP_WORKFLOW_EXECUTION_PERIOD",
                                                                           Template(("60",))),))
    assert read("workflows", {"name": "d", "breed": "x", "schedule": "daemon"}).schedule == Schedule("daemon")
    assert read("conditions", {"name": "c", "condition": "user-agent == Firefox"}) == \
        Condition('user-agent = "Firefox"', "c")


# -- round trips ---------------------------------------------------------------------------------------------
ROUND_TRIP_DOCUMENTS = [VAMP_BREED, VAMP_SAVA_1_0, NOTORIOUS, VAMP_SAVA_1_1, SAVA_1_2,
                        (REPO / "examples" / "sava-1.0.yaml").read_text()]


@pytest.mark.parametrize("kind, data", [(kind, data) for kind, short, long in SHORTHANDS.values()
                                        for data in (short, long)])
def test_every_shorthand_written_back_reads_the_same(kind, data):
    artifact = read(kind, data)
    assert read(kind, to_dict(artifact)) == artifact


@pytest.mark.parametrize("index", range(len(ROUND_TRIP_DOCUMENTS)))
def test_documents_written_back_as_yaml_read_the_same(index):
    artifacts = read_text(ROUND_TRIP_DOCUMENTS[index])
    text = "---\n".join(yaml.safe_dump(to_dict(artifact), sort_keys=False) for artifact in artifacts)
    assert read_text(text) == artifacts


def test_a_rich_document_round_trips():
    sava = scoped_blueprint(service_extra={"env": {"HEAP": "$$1800"}, "dialects": {"docker": {"a": [1, None]}},
                                           "network": "bridge", "arguments": [{"privileged": True}]},
                            cluster_variables={"sava.PASSWORD": "${sava.host}x"},
                            cluster_checks=[{"path": "/c", "initial_delay": "1500ms"}])
    sla = read("sla", {"name": "s", "type": "response_time_sliding_window", "threshold": {"upper": 9, "lower": 1},
                       "window": {"interval": 1, "cooldown": 0},
                       "escalations": [{"to_one": {"escalations": ["a", {"type": "scale_memory", "minimum": "1Gi",
                                                                         "maximum": "2Gi", "scale_by": "512Mi"}]}}]})
    for artifact in (sava, sla):
        assert read(type(artifact).__name__.lower(), to_dict(artifact)) == artifact


# -- read never fails any other way ---------------------------------------------------------------------------
JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["sava/webport", "8080/http", "50%", "64MB", "~", "$a.host", "sava:1.0.0", "10s"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "breed", "services", "scale", "ports", "routes", "weight",
                                       "condition", "gateways", "clusters", "deployable", "env", "ref", "type",
                                       "health_checks", "instances", "sava", "9050", "escalations", "schedule"])
                      | st.text(max_size=6), children, max_size=5),
    max_leaves=25)

KINDS_UNDER_TEST = st.sampled_from(["breed", "blueprint", "deployment", "gateway", "scale", "condition", "sla",
                                    "escalation", "workflow"])


@settings(max_examples=400, deadline=None)
@given(KINDS_UNDER_TEST, JSON_LIKE)
def test_read_raises_nothing_but_dsl_errors_on_random_data(kind, data):
    try:
        artifact = read(kind, data)
    except DslError as error:
        assert len(str(error).splitlines()) == 1
        return
    assert read(kind, to_dict(artifact)) == artifact


def leaf_paths(data, path=()):
    """Every path to a value inside nested dicts and lists."""
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaf_paths(value, path + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaf_paths(value, path + (index,))


VALID_DOCUMENTS = [("breed", yaml.safe_load(VAMP_BREED)), ("blueprint", yaml.safe_load(VAMP_SAVA_1_0)),
                   ("blueprint", yaml.safe_load(NOTORIOUS)), ("blueprint", yaml.safe_load(SAVA_1_2)),
                   ("gateway", SHORTHANDS["percentages with or without %"][1]),
                   ("sla", SHORTHANDS["hours"][1]), ("escalation", SHORTHANDS["to_all escalation"][1])]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID_DOCUMENTS), st.data())
def test_read_raises_nothing_but_dsl_errors_on_damaged_documents(document, data):
    kind, original = document
    damaged = copy.deepcopy(original)
    path = data.draw(st.sampled_from(list(leaf_paths(damaged))[1:]))
    parent = damaged
    for part in path[:-1]:
        parent = parent[part]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_LIKE)
    try:
        artifact = read(kind, damaged)
    except DslError as error:
        assert len(str(error).splitlines()) == 1
        return
    assert read(kind, to_dict(artifact)) == artifact
