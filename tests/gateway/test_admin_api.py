"""The admin API contract (issue 3), row by row, against a real `vamp gateway` process: list, get, create,
create-or-replace, merge patch and delete; JSON and YAML both ways; names with `/` and the rule of names;
bodies nested too deeply; `?validate_only=true`; 400 with a pointer to the field at fault;
401/404/405/409/415; the bearer token on every request but the probes (from an option, a file or the
environment); a write changing where traffic goes; and a gateway moving to another bind address."""
from __future__ import annotations

import asyncio
import re
import signal
import socket

import psutil
import pytest
import yaml

from gateway.common.names import RULE as NAME_RULE
from gateway.config.load import from_dict, gateway_to_dict
from gateway.runtime.runtime import Runtime
from tests.support import (LOOPBACK, HttpClient, config, free_port, gateway, port_accepts, route, run_cli,
                           shop_config)
from tests.support.admin import GATEWAYS, JSON, YAML, AdminApi, AdminResponse, gateway_path
from tests.support.waiting import eventually

TOKEN = "s3cret"
YAML_TYPES = ("application/x-yaml", "text/yaml", "application/yaml")


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")



@pytest.fixture
def shop(procs, echo):
    """A gateway process serving `shop`: (process, its listening port)."""
    port = free_port()
    return procs.gateway(shop_config(port, echo)), port


@pytest.fixture
def api(shop) -> AdminApi:
    return AdminApi(shop[0].admin_url(""))


def versions(port: int, count: int, *, fresh_connections: bool = False) -> list[str]:
    """The backend (X-Version) that answered each of `count` GETs through the gateway on `port`."""
    seen = []
    with HttpClient(port) as client:
        for _ in range(count):
            if fresh_connections:
                client.connect()
            response = client.request("GET", "/")
            assert response.status == 200, response.body
            seen.append(response.version)
    return seen


def observable_state(gw, api: AdminApi) -> tuple[bytes, bytes]:
    """What a change would alter: the GET of every gateway and the state file, byte for byte."""
    listing = api.list()
    assert listing.status == 200
    return listing.body, (gw.state_dir / "gateways.json").read_bytes()


def assert_error(response: AdminResponse, status: int, field: str | None = None) -> str:
    """The response is an error of the contract's shape; returns its message."""
    assert response.status == status, response.body
    body = response.document()
    assert set(body) == {"error", "field"}, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    assert body["field"] == field, body
    return body["error"]


def new_gateway(echo, version: str = "v2", **fields) -> dict:
    """A gateway document on a fresh loopback port with one route to the echo backend `version`."""
    return gateway(free_port(), {"only": route(echo.address(version))}, **fields)


# -- reading -------------------------------------------------------------------------------------------
def test_list_is_sorted_by_name_and_each_entry_is_what_get_answers(procs, echo):
    documents = {name: gateway(free_port(), {"r": route(echo.address("v1"))})
                 for name in ("zeta", "alpha/9050", "mid", "alpha")}
    gw = procs.gateway(config(documents))
    api = AdminApi(gw.admin_url(""))
    listing = api.list()
    assert listing.status == 200
    assert listing.content_type == JSON
    entries = listing.json()
    assert [entry["name"] for entry in entries] == ["alpha", "alpha/9050", "mid", "zeta"]
    for entry in entries:
        assert api.get(entry["name"]).json() == entry


def test_a_gateway_document_is_its_config_file_shape_plus_name_and_status(api, shop, echo):
    _, port = shop
    document = api.document("shop")
    expected = gateway_to_dict(from_dict(shop_config(port, echo)).gateway("shop"))
    assert {key: value for key, value in document.items() if key not in ("name", "status")} == expected
    assert document["name"] == "shop"
    assert document["port"] == f"{port}/http"
    assert document["routes"]["stable"]["weight"] == "100%"
    assert document["routes"]["stable"]["targets"] == [echo.address("v1")]
    status = document["status"]
    assert status["state"] == "active"
    assert list(status["routes"]) == ["stable", "canary"]
    stable = status["routes"]["stable"]
    assert stable["state"] == "active" and stable["drain_ends_at"] is None
    target = stable["targets"][echo.address("v1")]
    assert target["state"] == "active"
    assert target["in_flight"] == 0
    assert target["drain_ends_at"] is None
    assert status["revision"] is None           # a fleet's gateways have one (docs/fleet.md)


def test_the_status_of_a_standalone_gateway_has_no_configuration_store(api, shop):
    response = api.request("GET", "/api/v1/status")
    assert response.status == 200
    assert response.json() == {"ready": True, "gateways": 1, "workers": 1, "config_store": None}
    assert "config_store" not in api.request("GET", "/ready").json()
    assert "vamp_config_store" not in shop[0].metrics().text


def test_get_and_writes_of_an_unknown_gateway_are_404(api):
    assert_error(api.get("nope"), 404)
    assert_error(api.patch("nope", {"sticky": "route"}), 404)
    assert_error(api.delete("nope"), 404)
    assert_error(api.get("shop/extra"), 404)


def test_unsupported_methods_are_405(api, shop):
    before = observable_state(shop[0], api)
    assert_error(api.request("POST", gateway_path("x"), {"port": free_port()}), 405)
    assert_error(api.request("POST", gateway_path("shop"), {"port": free_port()}), 405)
    assert_error(api.request("DELETE", GATEWAYS), 405)
    assert_error(api.request("PUT", GATEWAYS, []), 405)
    assert observable_state(shop[0], api) == before


# -- creating and replacing ----------------------------------------------------------------------------
def test_post_creates_with_201_and_serves_then_a_second_post_is_409(api, echo):
    document = {"name": "new", **new_gateway(echo)}
    created = api.create(document)
    assert created.status == 201, created.body
    assert created.json()["name"] == "new"
    assert created.json()["routes"]["only"]["targets"] == [echo.address("v2")]
    port = document["port"]
    assert versions(port, 3) == ["v2"] * 3

    again = api.create({**document, "routes": {"only": route(echo.address("v1"))}})
    assert_error(again, 409)
    assert api.document("new")["routes"]["only"]["targets"] == [echo.address("v2")]
    assert versions(port, 3) == ["v2"] * 3


def test_post_without_a_name_is_400(api, echo):
    assert_error(api.create(new_gateway(echo)), 400, "/name")


def test_put_creates_with_201_then_replaces_with_200(api, echo):
    document = new_gateway(echo, "v1")
    port = document["port"]
    created = api.put("fresh", document)
    assert created.status == 201, created.body
    assert versions(port, 3) == ["v1"] * 3

    replaced = api.put("fresh", {**document, "routes": {"next": route(echo.address("v2"))}})
    assert replaced.status == 200, replaced.body
    assert list(replaced.json()["routes"]) == ["next"]
    assert versions(port, 3) == ["v2"] * 3
    assert list(api.document("fresh")["routes"]) == ["next"]


def test_get_edit_put_round_trip_ignores_status(api, shop):
    document = api.document("shop")
    document["routes"]["stable"]["weight"] = "40%"
    document["routes"]["canary"]["weight"] = "60%"
    replaced = api.put("shop", document)               # with `name` and the read-only `status`
    assert replaced.status == 200, replaced.body
    after = api.document("shop")
    assert after["routes"]["stable"]["weight"] == "40%"
    assert after["routes"]["canary"]["weight"] == "60%"
    assert after["status"]["state"] == "active"


def test_put_with_another_name_in_the_body_is_400(api, shop):
    before = observable_state(shop[0], api)
    assert_error(api.put("shop", {**api.document("shop"), "name": "other"}), 400, "/name")
    assert observable_state(shop[0], api) == before


# -- merge patch ---------------------------------------------------------------------------------------
def test_patch_merges_weights_and_keeps_everything_else(api, shop, echo):
    patched = api.patch("shop", {"routes": {"canary": {"weight": "10%"}, "stable": {"weight": "90%"}}})
    assert patched.status == 200, patched.body
    routes = api.document("shop")["routes"]
    assert routes["stable"] == {"weight": "90%", "targets": [echo.address("v1")], "drain": False}
    assert routes["canary"] == {"weight": "10%", "targets": [echo.address("v2")], "drain": False}
    assert list(routes) == ["stable", "canary"]
    seen = versions(shop[1], 20)
    assert seen.count("v2") == 2


def test_patch_adds_a_route_and_null_removes_one(api, shop, echo):
    added = api.patch("shop", {"routes": {"extra": {"weight": "0%", "targets": [echo.address("v2")]}}})
    assert added.status == 200, added.body
    assert list(api.document("shop")["routes"]) == ["stable", "canary", "extra"]

    removed = api.patch("shop", {"routes": {"canary": None}})
    assert removed.status == 200, removed.body
    assert list(removed.json()["routes"]) == ["stable", "extra"]
    # nothing in flight and no sticky clients: the removed route's drain is over at once
    eventually(lambda: "canary" not in api.document("shop")["status"]["routes"], 2.0,
               "the removed route gone from status")


def test_patch_null_removes_a_condition_and_its_strength(procs, echo):
    port = free_port()
    gw = procs.gateway(config({"shop": gateway(port, {
        "stable": route(echo.address("v1"), weight="50%"),
        "canary": route(echo.address("v2"), weight="50%", condition="has cookie beta", strength="100%"),
    })}))
    api = AdminApi(gw.admin_url(""))
    beta = [("Cookie", "beta=1")]
    with HttpClient(port) as client:
        assert {client.request("GET", "/", beta).version for _ in range(6)} == {"v2"}

        removed = api.patch("shop", {"routes": {"canary": {"condition": None}}})
        assert removed.status == 200, removed.body
        canary = api.document("shop")["routes"]["canary"]
        assert "condition" not in canary and "condition_strength" not in canary
        # by weight only now: the cookie no longer decides, the 50/50 split does
        assert sorted(client.request("GET", "/", beta).version for _ in range(6)) == ["v1"] * 3 + ["v2"] * 3


@pytest.mark.parametrize("patch, field", [
    ({"routes": {"canary": {"condition": None, "condition_strength": "50%"}}}, "/routes/canary/condition_strength"),
    ({"routes": {"stable": {"condition_strength": "50%"}}}, "/routes/stable/condition_strength"),
])
def test_a_strength_without_a_condition_is_still_an_error(api, shop, patch, field):
    before = observable_state(shop[0], api)
    assert "condition_strength needs a condition" in assert_error(api.patch("shop", patch), 400, field)
    assert observable_state(shop[0], api) == before


def test_patch_sets_the_sticky_cookie_attributes_live(api, shop):
    _, port = shop
    patched = api.patch("shop", {"sticky": "route", "sticky_cookie": {"same_site": "none", "secure": True}})
    assert patched.status == 200, patched.body
    assert patched.json()["sticky_cookie"] == {"same_site": "none", "secure": True}
    with HttpClient(port) as client:
        [set_cookie] = client.request("GET", "/").header_values("set-cookie")
    assert set_cookie.endswith("; HttpOnly; Secure; SameSite=None")


@pytest.mark.parametrize("sticky_cookie, field, mentions", [
    ({"same_site": "none"}, "/sticky_cookie/same_site", "same_site none needs secure: true"),
    ({"same_site": "none", "secure": False}, "/sticky_cookie/same_site", "same_site none needs secure: true"),
    ({"same_site": "sometimes"}, "/sticky_cookie/same_site", "expected one of lax, strict, none"),
    ({"secure": "on"}, "/sticky_cookie/secure", "expected true or false"),
])
def test_invalid_sticky_cookie_attributes_are_400_naming_the_field(api, shop, sticky_cookie, field, mentions):
    before = observable_state(shop[0], api)
    message = assert_error(api.patch("shop", {"sticky": "route", "sticky_cookie": sticky_cookie}), 400, field)
    assert mentions in message
    assert observable_state(shop[0], api) == before


def test_patch_merges_nested_timeouts(api):
    patched = api.patch("shop", {"timeouts": {"response": "5s"}})
    assert patched.status == 200, patched.body
    assert api.document("shop")["timeouts"] == {"connect": "2s", "response": "5s", "idle": "1m",
                                                    "request_head": "30s"}
    api.patch("shop", {"timeouts": {"idle": None}})           # null: back to the default
    assert api.document("shop")["timeouts"] == {"connect": "2s", "response": "5s", "idle": "1m",
                                                    "request_head": "30s"}


def test_patch_that_changes_weights_changes_traffic_at_once(api, shop):
    _, port = shop
    with HttpClient(port) as client:
        assert {client.request("GET", "/").version for _ in range(10)} == {"v1"}
        patched = api.patch("shop", {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}})
        assert patched.status == 200, patched.body
        on_the_same_connection = [client.request("GET", "/").version for _ in range(20)]
    assert on_the_same_connection == ["v2"] * 20
    assert versions(port, 5, fresh_connections=True) == ["v2"] * 5


# -- deleting ------------------------------------------------------------------------------------------
def test_delete_answers_202_then_the_idle_gateway_disappears(api, shop):
    _, port = shop
    assert versions(port, 2) == ["v1", "v1"]
    deleted = api.delete("shop")
    assert deleted.status == 202, deleted.body
    eventually(lambda: api.get("shop").status == 404, 1.5, "gone after DELETE")
    assert api.list().json() == []
    eventually(lambda: not port_accepts(port), 2.0, "the deleted gateway's port closed")


# -- media types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("media_type", YAML_TYPES)
def test_yaml_in_and_yaml_out(api, echo, media_type):
    document = new_gateway(echo, "v1")
    text = f"""\
port: {document['port']}
bind: 127.0.0.1
sticky: route
routes:
  main:
    weight: 100%
    targets: [{echo.address('v1')}]
"""
    created = api.put("from-yaml", text, content_type=media_type, accept=media_type)
    assert created.status == 201, created.body
    assert "yaml" in created.content_type
    assert created.yaml() == api.document("from-yaml")
    assert created.yaml()["sticky"] == "route"

    fetched = api.get("from-yaml", accept=media_type)
    assert "yaml" in fetched.content_type
    assert fetched.yaml() == api.document("from-yaml")

    patched = api.patch("from-yaml", "sticky: instance\n", content_type=media_type, accept=media_type)
    assert patched.status == 200, patched.body
    assert patched.yaml()["sticky"] == "instance"


def test_errors_come_back_as_yaml_when_asked(api):
    error = api.get("nope", accept=YAML)
    assert "yaml" in error.content_type
    assert_error(error, 404)


def test_malformed_yaml_and_json_are_400_and_change_nothing(api, shop):
    before = observable_state(shop[0], api)
    message = assert_error(api.patch("shop", "routes: {stable: [\n", content_type=YAML), 400)
    assert "line" in message
    assert_error(api.patch("shop", '{"routes": ', content_type=JSON), 400)
    assert observable_state(shop[0], api) == before


@pytest.mark.parametrize("content_type", [JSON, YAML])
def test_a_body_that_is_not_utf8_is_400_and_changes_nothing(api, shop, content_type):
    before = observable_state(shop[0], api)
    assert_error(api.patch("shop", b'{"sticky": "\xda\xff"}', content_type=content_type), 400)
    assert observable_state(shop[0], api) == before


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_text_plain_bodies_are_415_and_change_nothing(api, shop, method):
    before = observable_state(shop[0], api)
    path = GATEWAYS if method == "POST" else gateway_path("shop")
    assert_error(api.request(method, path, '{"name": "shop", "port": 1}', content_type="text/plain"), 415)
    assert observable_state(shop[0], api) == before


# -- names with '/' ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sava/9050", "a/b/c", "deployment/cluster/port/web"])
def test_names_with_slashes_work_in_every_row(api, echo, name):
    document = new_gateway(echo, "v1")
    port = document["port"]
    assert api.put(name, document).status == 201
    assert api.document(name)["name"] == name
    assert name in [entry["name"] for entry in api.list().json()]
    assert api.get(name.rsplit("/", 1)[0]).status == 404
    patched = api.patch(name, {"routes": {"only": {"targets": [echo.address("v2")]}}})
    assert patched.status == 200, patched.body
    assert versions(port, 2) == ["v2", "v2"]
    assert api.delete(name).status == 202
    eventually(lambda: api.get(name).status == 404, 1.5, f"{name} gone after DELETE")


def test_a_name_of_five_parts_is_400(api, echo):
    assert api.put("a/b/c/d/e", new_gateway(echo)).status == 400
    assert api.get("a/b/c/d/e").status == 404


@pytest.mark.parametrize("name", ["..", ".", "sava/..", "a/./b", "../sava", "a" * 254, "a" * 5000])
def test_names_breaking_the_rule_are_400_naming_it_and_start_nothing(api, shop, echo, name):
    before = observable_state(shop[0], api)
    document = new_gateway(echo)
    for response in (api.create({"name": name, **document}), api.put(name, document),
                     api.create({"name": name, **document}, validate_only=True)):
        message = assert_error(response, 400, "/name")
        assert NAME_RULE in message and len(message) < 300
    assert observable_state(shop[0], api) == before
    assert not port_accepts(document["port"])


# -- validate_only -------------------------------------------------------------------------------------
def _writes(echo, port: int) -> dict:
    """name -> (a write as validate_only, what the answer must show) for `test_validate_only...`."""
    created = {"name": "maybe", **new_gateway(echo)}
    swapped = {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}}
    replacement = gateway(port, {"stable": route(echo.address("v2"), weight="100%")})
    return {
        "POST": (lambda api: api.create(created, validate_only=True), {"name": "maybe"}),
        "PUT create": (lambda api: api.put("maybe", created, validate_only=True), {"name": "maybe"}),
        "PUT replace": (lambda api: api.put("shop", replacement, validate_only=True),
                        {"routes": {"stable": {"weight": "100%", "targets": [echo.address("v2")],
                                               "drain": False}}}),
        "PATCH": (lambda api: api.patch("shop", swapped, validate_only=True),
                  {"routes": {"stable": {"weight": "0%", "targets": [echo.address("v1")], "drain": False},
                              "canary": {"weight": "100%", "targets": [echo.address("v2")], "drain": False}}}),
        "DELETE": (lambda api: api.delete("shop", validate_only=True), {"name": "shop"}),
    }


@pytest.mark.parametrize("write", ["POST", "PUT create", "PUT replace", "PATCH", "DELETE"])
def test_validate_only_answers_the_result_and_changes_nothing(api, shop, echo, write):
    gw, port = shop
    before = observable_state(gw, api)
    send, shows = _writes(echo, port)[write]
    response = send(api)
    assert response.status == 200, response.body
    body = response.json()
    for key, value in shows.items():
        assert body[key] == value
    assert observable_state(gw, api) == before
    assert api.get("maybe").status == 404
    assert versions(port, 4) == ["v1"] * 4


def test_validate_only_of_an_invalid_write_is_400(api, shop):
    before = observable_state(shop[0], api)
    response = api.patch("shop", {"routes": {"canary": {"weight": "50%"}}}, validate_only=True)
    assert_error(response, 400, "/routes")
    assert observable_state(shop[0], api) == before


# -- invalid input -------------------------------------------------------------------------------------
INVALID_PATCHES = {
    "unknown gateway field": ({"bogus": 1}, "/bogus", "unknown field"),
    "unknown route field": ({"routes": {"stable": {"wieght": "50%"}}}, "/routes/stable/wieght", "unknown field"),
    "unknown timeout": ({"timeouts": {"read": "1s"}}, "/timeouts/read", "unknown field"),
    "bad weight": ({"routes": {"stable": {"weight": "lots"}}}, "/routes/stable/weight", "percentage"),
    "weights sum to 120%": ({"routes": {"canary": {"weight": "20%"}}}, "/routes", "120%"),
    "weights sum to 90%": ({"routes": {"stable": {"weight": "90%"}}}, "/routes", "90%"),
    "condition does not parse": ({"routes": {"canary": {"condition": "browser = Chrome and (os = Android"}}},
                                 "/routes/canary/condition", "position"),
    "bad port": ({"port": "http"}, "/port", "port"),
}


@pytest.mark.parametrize("case", list(INVALID_PATCHES))
def test_invalid_patch_is_400_pointing_at_the_field_and_changes_nothing(api, shop, case):
    patch, field, mentions = INVALID_PATCHES[case]
    before = observable_state(shop[0], api)
    message = assert_error(api.patch("shop", patch), 400, field)
    assert mentions in message
    assert observable_state(shop[0], api) == before
    assert versions(shop[1], 3) == ["v1"] * 3


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def billion_laughs() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


DEEP_BODIES = {
    "JSON of 100,000 [": (nested(100_000), JSON, "nested too deeply"),
    "JSON of 65 levels": ('{"routes": {"r": {"targets": ' + nested(62) + "}}}", JSON, "nested too deeply"),
    "YAML of 100,000 [": (nested(100_000), YAML, "nested too deeply"),
    "YAML alias bomb": (billion_laughs(), YAML, "aliases"),
    "YAML alias loop": ("routes: &loop [*loop]\n", YAML, "contains it"),
}


@pytest.mark.parametrize("case", list(DEEP_BODIES))
def test_deeply_nested_or_exploding_bodies_are_400_and_change_nothing(api, shop, echo, case):
    body, content_type, mentions = DEEP_BODIES[case]
    before = observable_state(shop[0], api)
    for response in (api.create(body, content_type=content_type), api.put("shop", body, content_type=content_type),
                     api.patch("shop", body, content_type=content_type)):
        assert mentions in assert_error(response, 400)
    assert observable_state(shop[0], api) == before
    assert versions(shop[1], 2) == ["v1", "v1"]


def test_a_body_64_levels_deep_is_read(api):
    message = assert_error(api.patch("shop", '{"routes": {"r": {"targets": ' + nested(61) + "}}}"), 400,
                           "/routes/r/targets/0")
    assert "nested" not in message


def test_a_condition_error_says_where(api):
    message = assert_error(api.patch("shop", {"routes": {"canary": {"condition": "browser = = Chrome"}}}),
                           400, "/routes/canary/condition")
    assert re.search(r"position \d+", message), message


@pytest.mark.parametrize("condition, construct, position", [
    ("user-agent ~ /(?=Chrome)Chrome/", "lookaround '(?='", 14),
    ("header x-id ~ /^(a)\\1$/", "backreference '\\1'", 19),
])
def test_a_regex_re2_cannot_run_is_400_with_the_field_and_position(api, shop, condition, construct, position):
    before = observable_state(shop[0], api)
    message = assert_error(api.patch("shop", {"routes": {"canary": {"condition": condition}}}), 400,
                           "/routes/canary/condition")
    assert f"{construct} is not supported" in message
    assert message.endswith(f"at position {position}")
    assert observable_state(shop[0], api) == before


def test_invalid_post_is_400_pointing_at_the_field_and_creates_nothing(api, shop, echo):
    before = observable_state(shop[0], api)
    document = {"name": "broken", **new_gateway(echo), "routes": {"r": {"targets": ["nowhere"]}}}
    assert_error(api.create(document), 400, "/routes/r/targets/0")
    assert_error(api.create({**document, "routes": {}, "stikcy": "route"}), 400, "/stikcy")
    assert observable_state(shop[0], api) == before


# -- the bearer token ----------------------------------------------------------------------------------
READS = ["/api/v1/gateways", "/api/v1/gateways/shop", "/api/v1/openapi.json", "/metrics", "/api/v1/nothing"]
PROBES = ["/health", "/ready"]
WRONG_AUTHORIZATIONS = [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN]


@pytest.fixture
def guarded(procs, echo):
    """A gateway process with `--admin-token s3cret` (and debug logging, so that any leak would show)."""
    port = free_port()
    gw = procs.gateway(shop_config(port, echo), extra_args=("--admin-token", TOKEN, "--log-level", "debug"),
                       token=TOKEN)
    return gw, port


def _all_writes(api: AdminApi, echo, shop: dict, **options) -> list[AdminResponse]:
    swapped = {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}}
    return [
        api.create({"name": "more", **new_gateway(echo)}, **options),
        api.put("more", new_gateway(echo), **options),
        api.patch("shop", swapped, **options),
        api.put("shop", {**shop, "sticky": "route"}, **options),
        api.patch("shop", swapped, validate_only=True, **options),
        api.delete("shop", **options),
    ]


def assert_refused(response: AdminResponse) -> None:
    assert_error(response, 401)
    assert response.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize("authorization", WRONG_AUTHORIZATIONS)
def test_writes_without_the_right_token_are_401_and_change_nothing(guarded, echo, authorization):
    gw, port = guarded
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    before = observable_state(gw, api)
    headers = {"Authorization": authorization} if authorization else {}
    for response in _all_writes(AdminApi(gw.admin_url(""), token=None), echo, api.document("shop"),
                                headers=headers):
        assert_refused(response)
    assert observable_state(gw, api) == before
    assert versions(port, 4) == ["v1"] * 4


def test_with_a_token_every_read_needs_it_but_the_probes(guarded):
    gw, _ = guarded
    anonymous = AdminApi(gw.admin_url(""), token=None)
    for path in READS:
        for authorization in WRONG_AUTHORIZATIONS:
            assert_refused(anonymous.request("GET", path, headers={"Authorization": authorization}
                                             if authorization else {}))
        assert anonymous.request("GET", path, token=TOKEN).status == (404 if "nothing" in path else 200)
    for path in PROBES:
        assert anonymous.request("GET", path).status == 200


def test_writes_with_the_token_work(guarded):
    gw, port = guarded
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    patched = api.patch("shop", {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}})
    assert patched.status == 200, patched.body
    assert versions(port, 4) == ["v2"] * 4


def test_public_metrics_opens_metrics_alone(procs, echo):
    gw = procs.gateway(shop_config(free_port(), echo), extra_args=("--token", TOKEN, "--public-metrics"))
    anonymous = AdminApi(gw.admin_url(""), token=None)
    assert anonymous.request("GET", "/metrics").status == 200
    assert b"vamp_route_weight_ratio" in anonymous.request("GET", "/metrics").body
    for path in READS:
        if path != "/metrics":
            assert_refused(anonymous.request("GET", path))
    assert_refused(anonymous.patch("shop", {"sticky": "route"}))


def test_the_token_can_come_from_a_file(procs, echo, tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")              # as `echo s3cret > token` writes it
    gw = procs.gateway(shop_config(free_port(), echo), extra_args=("--token-file", str(secret)), token=TOKEN)
    assert_refused(AdminApi(gw.admin_url(""), token=None).list())
    assert_refused(AdminApi(gw.admin_url(""), token="wrong").list())
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    assert api.list().status == 200
    assert api.patch("shop", {"sticky": "route"}).status == 200
    assert TOKEN not in gw.stderr_text()


TOKEN_FILES = {
    "missing": (None, "cannot read the token file"),
    "empty": ("", "is empty"),
    "a newline only": ("\n", "is empty"),
    "two lines": ("s3cret\nmore\n", "alone on one line"),
    "a directory": ("directory", "cannot read the token file"),
}


@pytest.mark.parametrize("case", list(TOKEN_FILES))
def test_an_unusable_token_file_exits_2_with_one_line(tmp_path, case):
    content, mentions = TOKEN_FILES[case]
    path = tmp_path / "token"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    config_path = tmp_path / "gateways.yaml"
    config_path.write_text("gateways: {}\n")
    result = run_cli(["gateway", "--config", str(config_path), "--admin", f"127.0.0.1:{free_port()}",
                      "--state-dir", str(tmp_path / "state"), "--token-file", str(path)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vamp: ")
    assert mentions in result.stderr and str(path) in result.stderr
    assert "s3cret" not in result.stderr


def test_token_and_token_file_together_are_bad_input(tmp_path):
    result = run_cli(["gateway", "--token", TOKEN, "--token-file", str(tmp_path / "token")])
    assert result.returncode == 2 and "not allowed with" in result.stderr


@pytest.mark.parametrize("environment, expected", [
    ({"VAMP_TOKEN": "new", "VAMP_ADMIN_TOKEN": "old"}, "new"),
    ({"VAMP_TOKEN": "", "VAMP_ADMIN_TOKEN": "old"}, "old"),
    ({}, None),
])
def test_the_token_from_the_environment(monkeypatch, environment, expected):
    from gateway.cli import build_parser
    from gateway.common.cli import token_from
    for name in ("VAMP_TOKEN", "VAMP_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert token_from(build_parser().parse_args(["gateway"])) == expected
    assert token_from(build_parser().parse_args(["gateway", "--token", "given"])) == "given"
    assert token_from(build_parser().parse_args(["gateway", "--admin-token", "given"])) == "given"


def test_the_token_never_appears_in_the_log(guarded, echo):
    gw, _ = guarded
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    shop = api.document("shop")
    for wrong in (None, "wrong"):
        _all_writes(AdminApi(gw.admin_url(""), token=wrong), echo, shop)
        AdminApi(gw.admin_url(""), token=wrong).list()
    assert api.patch("shop", {"routes": {"canary": {"weight": "50%"}}}).status == 400
    for response in _all_writes(api, echo, shop):
        assert response.status < 300, response.body
    gw.stop()
    assert gw.stderr_text(), "the gateway logged nothing at debug level"
    assert TOKEN not in gw.stderr_text()


# -- moving a gateway to another bind address ---------------------------------------------------------------
def listening(gw, port: int) -> set[str]:
    """The addresses the gateway process listens on with `port`."""
    return {c.laddr.ip for c in psutil.Process(gw.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_bind_moves_between_the_wildcard_and_loopback_on_the_same_port(procs, echo):
    # The wildcard is what conflicts with 127.0.0.1 on one port; the listener on 0.0.0.0 lives for this test
    # only, on a free port, and is only ever connected to through loopback.
    port = free_port()
    gw = procs.gateway(config({"edge": gateway(port, {"r": route(echo.address("v1"))}, bind="0.0.0.0")}))
    api = AdminApi(gw.admin_url(""))
    assert listening(gw, port) == {"0.0.0.0"}
    for bind in ("127.0.0.1", "0.0.0.0", "127.0.0.1"):
        with HttpClient(port) as kept:                  # a connection from before the move
            assert kept.request("GET", "/").version == "v1"
            moved = api.patch("edge", {"bind": bind})
            assert moved.status == 200, moved.body
            assert moved.json()["bind"] == bind
            assert kept.request("GET", "/").version == "v1"
        assert listening(gw, port) == {bind}
        assert versions(port, 3, fresh_connections=True) == ["v1"] * 3
        assert api.document("edge")["bind"] == bind


def test_a_bind_move_that_fails_keeps_the_old_listener(procs, echo):
    """Gateway `edge` moves from 0.0.0.0 to 127.0.0.1 (its listener is closed for it) in the same change as
    gateway `other` asks for a port that is taken: the change fails whole and `edge` listens as before."""
    port, taken = free_port(), socket.socket()
    taken.bind((LOOPBACK, 0))
    taken.listen()
    with taken:
        gw = procs.gateway(config({"edge": gateway(port, {"r": route(echo.address("v1"))}, bind="0.0.0.0")}))
        moved = config({"edge": gateway(port, {"r": route(echo.address("v1"))}),
                        "other": gateway(taken.getsockname()[1], {"r": route(echo.address("v2"))})})
        gw.config_path.write_text(yaml.safe_dump(moved, sort_keys=False))
        gw.process.send_signal(signal.SIGHUP)
        gw.wait_until(lambda: "not applied" in gw.stderr_text(), 10.0, "refusing the change")
        assert listening(gw, port) == {"0.0.0.0"}
        assert versions(port, 3, fresh_connections=True) == ["v1"] * 3
        assert AdminApi(gw.admin_url("")).document("edge")["bind"] == "0.0.0.0"


async def test_a_failed_change_reopens_the_listener_a_bind_move_closed():
    """The runtime alone: a change that closed `edge`'s 0.0.0.0 listener to bind 127.0.0.1, and then failed
    on another port, leaves the listeners exactly as they were."""
    runtime = Runtime(asyncio.get_running_loop())
    port = free_port()

    def edge(bind: str, **others: dict):
        return from_dict(config({"edge": gateway(port, {"r": route(f"{LOOPBACK}:9")}, bind=bind), **others}))

    await runtime.apply(edge("0.0.0.0"))
    try:
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            other = gateway(taken.getsockname()[1], {"r": route(f"{LOOPBACK}:9")})
            with pytest.raises(OSError, match="address already in use"):
                await runtime.apply(edge("127.0.0.1", other=other))
        assert list(runtime.listeners) == [("0.0.0.0", port)]
        assert port_accepts(port)
        await runtime.apply(edge("127.0.0.1"))
        assert list(runtime.listeners) == [("127.0.0.1", port)]
        assert port_accepts(port)
    finally:
        await runtime.close()
