"""The admin API contract (issue 3), row by row, against a real `vamp gateway` process: list, get, create,
create-or-replace, merge patch and delete; JSON and YAML both ways; names with `/`; `?validate_only=true`;
400 with a pointer to the field at fault; 401/404/405/409/415; the bearer token; and a write changing where
traffic goes."""
from __future__ import annotations

import re

import pytest

from gateway.config import from_dict, gateway_to_dict
from tests.support import HttpClient, config, free_port, gateway, port_accepts, route, shop_config
from tests.support.admin import GATEWAYS, JSON, YAML, AdminApi, AdminResponse, eventually, gateway_path

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


def test_a_condition_error_says_where(api):
    message = assert_error(api.patch("shop", {"routes": {"canary": {"condition": "browser = = Chrome"}}}),
                           400, "/routes/canary/condition")
    assert re.search(r"position \d+", message), message


def test_invalid_post_is_400_pointing_at_the_field_and_creates_nothing(api, shop, echo):
    before = observable_state(shop[0], api)
    document = {"name": "broken", **new_gateway(echo), "routes": {"r": {"targets": ["nowhere"]}}}
    assert_error(api.create(document), 400, "/routes/r/targets/0")
    assert_error(api.create({**document, "routes": {}, "stikcy": "route"}), 400, "/stikcy")
    assert observable_state(shop[0], api) == before


# -- the bearer token ----------------------------------------------------------------------------------
@pytest.fixture
def guarded(procs, echo):
    """A gateway process with `--admin-token s3cret` (and debug logging, so that any leak would show)."""
    port = free_port()
    gw = procs.gateway(shop_config(port, echo), extra_args=("--admin-token", TOKEN, "--log-level", "debug"))
    return gw, port


def _all_writes(api: AdminApi, echo, **options) -> list[AdminResponse]:
    swapped = {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}}
    return [
        api.create({"name": "more", **new_gateway(echo)}, **options),
        api.put("more", new_gateway(echo), **options),
        api.patch("shop", swapped, **options),
        api.put("shop", {**api.document("shop"), "sticky": "route"}, **options),
        api.patch("shop", swapped, validate_only=True, **options),
        api.delete("shop", **options),
    ]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN])
def test_writes_without_the_right_token_are_401_and_change_nothing(guarded, echo, authorization):
    gw, port = guarded
    api = AdminApi(gw.admin_url(""), token=None)
    before = observable_state(gw, api)
    headers = {"Authorization": authorization} if authorization else {}
    for response in _all_writes(api, echo, headers=headers):
        assert_error(response, 401)
    assert observable_state(gw, api) == before
    assert versions(port, 4) == ["v1"] * 4


def test_reads_need_no_token_and_writes_with_it_work(guarded, echo):
    gw, port = guarded
    anonymous = AdminApi(gw.admin_url(""))
    assert anonymous.list().status == 200
    assert anonymous.get("shop").status == 200
    assert anonymous.request("GET", "/api/v1/openapi.json").status == 200
    assert anonymous.request("GET", "/metrics").status == 200

    api = AdminApi(gw.admin_url(""), token=TOKEN)
    patched = api.patch("shop", {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}})
    assert patched.status == 200, patched.body
    assert versions(port, 4) == ["v2"] * 4


def test_the_token_never_appears_in_the_log(guarded, echo):
    gw, _ = guarded
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    for wrong in (None, "wrong"):
        _all_writes(AdminApi(gw.admin_url(""), token=wrong), echo)
    assert api.patch("shop", {"routes": {"canary": {"weight": "50%"}}}).status == 400
    for response in _all_writes(api, echo):
        assert response.status < 300, response.body
    gw.stop()
    assert gw.stderr_text(), "the gateway logged nothing at debug level"
    assert TOKEN not in gw.stderr_text()
