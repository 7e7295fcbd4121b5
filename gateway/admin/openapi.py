"""The admin API described as an OpenAPI 3.0 document, served at `/api/v1/openapi.json`."""
from __future__ import annotations

from typing import Any

_PERCENT = {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,2})?%$", "example": "97.5%"}
_DURATION = {"type": "string", "example": "30s"}
_NAME_PARAM = {"name": "name", "in": "path", "required": True,
               "description": "gateway name; may contain '/' (e.g. sava/9050)",
               "schema": {"type": "string", "minLength": 1}}
_VALIDATE_ONLY = {"name": "validate_only", "in": "query", "required": False,
                  "description": "check the write and change nothing", "schema": {"type": "boolean"}}

_TARGET = {
    "oneOf": [
        {"type": "string", "description": "host:port, or https://host:port (reached over TLS)",
         "example": "127.0.0.1:8081"},
        {"type": "object", "additionalProperties": False, "required": ["address"],
         "properties": {"address": {"type": "string"}, "weight": {"type": "integer", "minimum": 0, "maximum": 1000},
                        "drain": {"type": "boolean"}}},
    ],
}
_HEALTH_CHECK = {
    "type": "object", "additionalProperties": False, "nullable": True,
    "description": "an active health check of the targets (docs/health-checks.md); a tcp gateway's is a TCP connect "
                   "and takes no path, host or expect",
    "properties": {"path": {"type": "string", "pattern": "^/", "example": "/healthz"},
                   "interval": _DURATION, "timeout": _DURATION,
                   "healthy": {"type": "integer", "minimum": 1, "maximum": 100},
                   "unhealthy": {"type": "integer", "minimum": 1, "maximum": 100},
                   "host": {"type": "string", "example": "shop.example.com"},
                   "expect": {"oneOf": [{"type": "string", "example": "200-399"}, {"type": "integer"}]}},
}
_HEADER_VALUES = {"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}
_HEADER_RULES = {   # docs/rewrites.md
    "type": "object", "additionalProperties": False, "nullable": True,
    "properties": {"set": _HEADER_VALUES, "add": _HEADER_VALUES,
                   "remove": {"type": "array", "items": {"type": "string"}}},
}
_ROUTE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "weight": _PERCENT,
        "targets": {"type": "array", "items": _TARGET},
        "condition": {"type": "string", "example": "browser = Chrome and country = GB"},
        "condition_strength": _PERCENT,
        "drain": {"type": "boolean"},
        "health_check": {"oneOf": [_HEALTH_CHECK, {"type": "boolean", "enum": [False],
                                                   "description": "no health check, whatever the gateway's"}]},
        "strip_prefix": {"type": "string", "nullable": True, "example": "/api"},
        "rewrite": {"type": "object", "additionalProperties": False, "nullable": True, "required": ["path"],
                    "properties": {"path": {"type": "object", "additionalProperties": False,
                                            "required": ["regex", "replace"],
                                            "properties": {"regex": {"type": "string", "example": "^/api/(.*)"},
                                                           "replace": {"type": "string", "example": "/\\1"}}}}},
        "request_headers": _HEADER_RULES,
        "response_headers": _HEADER_RULES,
    },
}
_GATEWAY_FIELDS = {
    "name": {"type": "string"},
    "port": {"oneOf": [{"type": "string", "example": "9050/http"}, {"type": "integer"}]},
    "bind": {"type": "string", "example": "127.0.0.1"},
    "sticky": {"type": "string", "enum": ["none", "route", "instance"], "nullable": True},
    "sticky_ttl": _DURATION,
    "sticky_cookie": {"type": "object", "additionalProperties": False,
                      "properties": {"same_site": {"type": "string", "enum": ["lax", "strict", "none"]},
                                     "secure": {"type": "boolean"}}},
    "drain_timeout": _DURATION,
    "virtual_hosts": {"type": "array", "items": {"type": "string"}},
    "timeouts": {"type": "object", "additionalProperties": False,
                 "properties": {"connect": _DURATION, "response": _DURATION, "idle": _DURATION,
                                "request_head": _DURATION}},
    "routes": {"type": "object", "additionalProperties": _ROUTE},
    "health_check": _HEALTH_CHECK,
    "tls": {"type": "object", "additionalProperties": False, "required": ["certificates"],
            "description": "an https gateway's certificates (docs/tls.md)",
            "properties": {"certificates": {"type": "array", "minItems": 1, "items": {
                               "type": "object", "additionalProperties": False, "required": ["cert", "key"],
                               "properties": {"cert": {"type": "string"}, "key": {"type": "string"}}}},
                           "client_ca": {"type": "string", "nullable": True},
                           "client_certificate": {"type": "string", "enum": ["required", "optional"],
                                                  "nullable": True},
                           "handshake_timeout": _DURATION}},
    "redirect_https": {"oneOf": [{"type": "boolean"}, {
        "type": "object", "additionalProperties": False,
        "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}}]},
    "upstream_tls": {"type": "object", "additionalProperties": False,
                     "properties": {"ca": {"type": "string", "nullable": True}, "verify": {"type": "boolean"},
                                    "server_name": {"type": "string", "nullable": True}}},
    "access_log": {"type": "object", "additionalProperties": False, "nullable": True,
                   "properties": {"format": {"type": "string", "enum": ["json", "combined"]},
                                  "path": {"type": "string", "example": "/var/log/vamp/access.log"},
                                  "sample": _PERCENT}},
    "request_id": {"type": "boolean"},
}
_TARGET_STATUS = {
    "type": "object", "required": ["state", "in_flight", "requests", "drain_ends_at"],
    "properties": {"state": {"type": "string", "enum": ["active", "draining", "drained", "down"]},
                   "in_flight": {"type": "integer", "minimum": 0},
                   "requests": {"type": "integer", "minimum": 0},
                   "drain_ends_at": {"type": "string", "format": "date-time", "nullable": True},
                   "health": {"type": "string", "enum": ["unchecked", "unknown", "healthy", "unhealthy"],
                              "description": "the active health check's verdict (the worst of the workers'); "
                                             "unknown: no verdict yet, counts as up"},
                   "checked_at": {"type": "string", "format": "date-time", "nullable": True,
                                  "description": "when the last health check ended"},
                   "check_result": {"type": "string", "nullable": True, "example": "status 200",
                                    "description": "what the last health check saw: status N, connected, timeout, "
                                                   "refused, ..."}},
}
_STATUS = {
    "type": "object", "required": ["state"],
    "properties": {
        "state": {"type": "string", "enum": ["active", "draining", "removed"]},
        "drain_ends_at": {"type": "string", "format": "date-time", "nullable": True},
        "revision": {"type": "integer", "nullable": True,
                     "description": "in a fleet (--config-store): the etcd mod revision of the gateway's key as "
                                    "this replica serves it; null for a standalone gateway"},
        "routes": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["state", "targets"],
            "properties": {"state": {"type": "string", "enum": ["active", "draining", "drained"]},
                           "drain_ends_at": {"type": "string", "format": "date-time", "nullable": True},
                           "targets": {"type": "object", "additionalProperties": _TARGET_STATUS}}}},
    },
}

_JSON_AND_YAML = ("application/json", "application/x-yaml")


def _content(schema_ref: str, *types: str) -> dict[str, Any]:
    return {kind: {"schema": {"$ref": schema_ref}} for kind in types or _JSON_AND_YAML}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _content("#/components/schemas/Error")}


_GATEWAY_RESPONSE = {"description": "the gateway", "content": _content("#/components/schemas/Gateway")}
_UNAUTHORIZED = _error("missing or wrong bearer token (when a token is set)")
_UNAVAILABLE = _error("in a fleet (--config-store): the configuration store cannot be reached; nothing changed")
_ERRORS = {"400": _error("invalid input; nothing changed"), "401": _UNAUTHORIZED,
           "415": _error("unsupported Content-Type"), "503": _UNAVAILABLE}
_STORE_STATUS = {
    "type": "object", "nullable": True, "required": ["url", "up", "revision", "source", "since", "error"],
    "description": "a fleet's configuration store as this replica sees it; null for a standalone gateway",
    "properties": {
        "url": {"type": "string", "example": "etcd://127.0.0.1:2379/vamp"},
        "up": {"type": "boolean", "description": "whether the store can be reached now"},
        "revision": {"type": "integer", "nullable": True, "description": "the store revision served"},
        "source": {"type": "string", "enum": ["store", "state directory"],
                   "description": "where the configuration served came from"},
        "since": {"type": "string", "format": "date-time", "description": "when `up` last changed"},
        "error": {"type": "string", "nullable": True,
                  "description": "why the store cannot be reached, or why a revision was not applied"},
    },
}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]      # the bearer token when one is set, on every operation

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Vamp gateway admin API", "version": "1",
             "description": "Live configuration of the Vamp gateway. When a token is set, every request (reads "
                            "too; not /health and /ready) needs it as a bearer token. An invalid write is rejected "
                            "whole and changes nothing."},
    "paths": {
        "/api/v1/gateways": {
            "get": {"summary": "every gateway, with its status",
                    "responses": {"200": {"description": "the gateways, sorted by name", "content": {
                        kind: {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Gateway"}}}
                        for kind in _JSON_AND_YAML}}, "401": _UNAUTHORIZED},
                    "security": _SECURITY},
            "post": {"summary": "create a gateway", "parameters": [_VALIDATE_ONLY],
                     "requestBody": {"required": True, "content": _content("#/components/schemas/GatewayInput")},
                     "responses": {"201": _GATEWAY_RESPONSE, "200": _GATEWAY_RESPONSE,
                                   "409": _error("the gateway exists, its port cannot be opened, or (in a fleet) "
                                                 "it changed in the store while this write was made"),
                                   **_ERRORS},
                     "security": _SECURITY},
        },
        "/api/v1/gateways/{name}": {
            "parameters": [_NAME_PARAM],
            "get": {"summary": "one gateway", "responses": {"200": _GATEWAY_RESPONSE, "401": _UNAUTHORIZED,
                                                            "404": _error("no such gateway")},
                    "security": _SECURITY},
            "put": {"summary": "create or replace a gateway", "parameters": [_VALIDATE_ONLY],
                    "requestBody": {"required": True, "content": _content("#/components/schemas/GatewayInput")},
                    "responses": {"200": _GATEWAY_RESPONSE, "201": _GATEWAY_RESPONSE,
                                  "409": _error("a port cannot be opened, or (in a fleet) the gateway changed "
                                                "in the store while this write was made"), **_ERRORS},
                    "security": _SECURITY},
            "patch": {"summary": "change a gateway with a JSON merge patch (RFC 7396)",
                      "parameters": [_VALIDATE_ONLY],
                      "requestBody": {"required": True, "content": {
                          kind: {"schema": {"type": "object"}}
                          for kind in ("application/merge-patch+json", *_JSON_AND_YAML)}},
                      "responses": {"200": _GATEWAY_RESPONSE, "404": _error("no such gateway"),
                                    "409": _error("a port cannot be opened, or (in a fleet) the gateway changed "
                                                  "in the store while this write was made"), **_ERRORS},
                      "security": _SECURITY},
            "delete": {"summary": "drain, then remove a gateway", "parameters": [_VALIDATE_ONLY],
                       "responses": {"202": _GATEWAY_RESPONSE, "200": _GATEWAY_RESPONSE,
                                     "400": _error("invalid parameters"),
                                     "404": _error("no such gateway"), "401": _UNAUTHORIZED,
                                     "409": _error("the change could not be applied"), "503": _UNAVAILABLE},
                       "security": _SECURITY},
        },
        "/api/v1/status": {
            "get": {"summary": "this gateway process: ready, how many gateways it serves, its configuration store",
                    "responses": {"200": {"description": "the status", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Status"}}}}, "401": _UNAUTHORIZED},
                    "security": _SECURITY},
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "GatewayInput": {"type": "object", "additionalProperties": False, "required": ["port"],
                             "properties": {**_GATEWAY_FIELDS, "status": {"type": "object"}}},
            "Gateway": {"type": "object", "required": ["name"],
                        "description": "a gateway; `status` is present except in ?validate_only=true answers",
                        "properties": {**_GATEWAY_FIELDS, "status": _STATUS}},
            "Status": {"type": "object", "required": ["ready", "gateways", "workers", "config_store"],
                       "properties": {"ready": {"type": "boolean"},
                                      "gateways": {"type": "integer", "minimum": 0,
                                                   "description": "gateways served (draining ones included)"},
                                      "workers": {"type": "integer", "minimum": 1},
                                      "config_store": _STORE_STATUS}},
            "Error": {"type": "object", "required": ["error", "field"],
                      "properties": {"error": {"type": "string"},
                                     "field": {"type": "string", "nullable": True}}},
        },
    },
}
